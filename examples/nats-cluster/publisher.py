"""The HTTP service of the nats-cluster example: GET / answers, in JSON,
whether it can publish through the NATS cluster it depends on; GET /healthz
answers "ok" (its readiness probe).

It subscribes through the first reachable NATS server it was given and
publishes through the last one, so with more than one node the message has
to cross the cluster's routes. Settings come from the environment the process
controller renders: LISTEN (host:port) and NATS_URLS (comma-separated).
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import nats
from nats.aio.client import Client

SERVERS = [url for url in os.environ.get("NATS_URLS", "").split(",") if url]
TIMEOUT = 3.0


async def _quiet(error: Exception) -> None:
    """nats-py logs every failed attempt; the report says what matters."""


async def connect(url: str) -> Client:
    # nats-py retries a refused first connection forever: bound it.
    return await asyncio.wait_for(
        nats.connect(url, connect_timeout=1, allow_reconnect=False, error_cb=_quiet), timeout=2.0
    )


async def check() -> dict[str, object]:
    """Publish one message through the cluster and see it arrive.

    Subscribes through the first reachable server and publishes through the
    last one: with two or more nodes, the message crosses a route.
    """
    report: dict[str, object] = {"can_publish": False, "servers": SERVERS, "unreachable": []}
    clients: list[tuple[str, Client]] = []
    try:
        for url in SERVERS:
            try:
                clients.append((url, await connect(url)))
            except (TimeoutError, OSError, nats.errors.Error):
                report["unreachable"].append(url)  # type: ignore[attr-defined]
        if not clients:
            report["error"] = "no NATS server reachable" if SERVERS else "no NATS server given (NATS_URLS is empty)"
            return report
        (subscribe_via, receiver), (publish_via, sender) = clients[0], clients[-1]
        report.update(subscribed_via=subscribe_via, published_via=publish_via, crossed_nodes=subscribe_via != publish_via)
        subject = f"example.check.{uuid.uuid4().hex}"
        subscription = await receiver.subscribe(subject)
        await receiver.flush()
        # Interest crosses the routes asynchronously: publish until a message arrives.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + TIMEOUT
        while True:
            await sender.publish(subject, b"hello")
            await sender.flush()
            try:
                message = await subscription.next_msg(timeout=0.1)
            except nats.errors.TimeoutError:
                if loop.time() > deadline:
                    raise
                continue
            report["can_publish"] = message.data == b"hello"
            return report
    except Exception as err:  # noqa: BLE001 - the answer is the report, whatever went wrong
        report["error"] = f"{type(err).__name__}: {err}"
        return report
    finally:
        for _, client in clients:
            await client.close()


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - the http.server API
        if self.path == "/healthz":
            self._answer(200, {"status": "ok"})
        elif self.path == "/":
            report = asyncio.run(check())
            self._answer(200 if report["can_publish"] else 503, report)
        else:
            self._answer(404, {"error": f"no such path {self.path}"})

    def _answer(self, code: int, body: dict[str, object]) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def main() -> None:
    host, _, port = os.environ.get("LISTEN", "127.0.0.1:8080").rpartition(":")
    server = ThreadingHTTPServer((host, int(port)), Handler)
    print(f"publisher listening on {host}:{port}, NATS servers {SERVERS}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
