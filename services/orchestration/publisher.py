"""Publishing to JetStream and awaiting the acknowledgement, many publishes
in flight on one connection.

nats-py's ``JetStreamContext.publish`` is a request per message (a fresh
inbox token, a timeout task, a parsed acknowledgement object): at thousands
of writes a second it is most of the dispatcher's time. Here every publish
shares one wildcard reply subscription, a future keyed by a counter, and a
check of the acknowledgement that parses JSON only for errors. Errors are
raised as nats-py raises them, so callers handle both paths alike.
"""

from __future__ import annotations

import asyncio
import itertools
import json

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext

# How long a publish waits for its acknowledgement (nats-py's default).
ACK_TIMEOUT = 5.0
_NO_RESPONDERS = "503"
_SEQ = b'"seq":'


class Publisher:
    """Acknowledged JetStream publishes over one connection: start(), then publish()."""

    def __init__(self, nc: Client) -> None:
        self._nc = nc
        self._prefix = ""
        self._pending: dict[str, asyncio.Future[Msg]] = {}
        self._counter = itertools.count(1)
        self._subscription: Subscription | None = None
        self._lock = asyncio.Lock()

    async def _start(self) -> None:
        async with self._lock:
            if self._subscription is None:
                self._prefix = self._nc.new_inbox() + "."
                # No limit on pending replies: every one of them has a waiting publish.
                self._subscription = await self._nc.subscribe(self._prefix + "*", cb=self._on_reply, pending_msgs_limit=0,
                                                              pending_bytes_limit=0)

    async def _on_reply(self, msg: Msg) -> None:
        future = self._pending.pop(msg.subject[len(self._prefix):], None)
        if future is not None and not future.done():
            future.set_result(msg)

    async def publish(self, subject: str, payload: bytes, headers: dict[str, str] | None = None,
                      timeout: float = ACK_TIMEOUT) -> int:
        """Publish and wait for the stream to store it; the stream sequence.

        Raises nats.errors.TimeoutError without an acknowledgement in time,
        nats.js.errors.NoStreamResponseError when no stream takes the subject,
        and the nats.js.errors.APIError subclass of a refusal (for example
        KeyWrongLastSequenceError when an expected sequence header failed)."""
        if self._subscription is None:
            await self._start()
        token = str(next(self._counter))
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Msg] = loop.create_future()
        self._pending[token] = future
        expire = loop.call_later(timeout, _expire, future)
        try:
            await self._nc.publish(subject, payload, reply=self._prefix + token, headers=headers)
            reply = await future
        finally:
            expire.cancel()
            self._pending.pop(token, None)
        data = reply.data
        start = data.find(_SEQ)
        if start > 0 and b'"error"' not in data:
            end = start + len(_SEQ)
            while end < len(data) and data[end] in b"0123456789 ":
                end += 1
            return int(data[start + len(_SEQ):end])
        if not data and reply.headers and reply.headers.get("Status") == _NO_RESPONDERS:
            raise nats.js.errors.NoStreamResponseError
        response = json.loads(data)
        if "error" in response:
            nats.js.errors.APIError.from_error(response["error"])  # raises the matching error
        raise nats.js.errors.APIError(description=f"unexpected acknowledgement {data[:200]!r}")


def publisher_for(js: JetStreamContext) -> Publisher:
    """The publisher of a JetStream context's connection (one per connection,
    kept on the connection so that it lives and goes with it)."""
    # nats-py keeps the connection of a context private.
    nc: Client = js._nc  # noqa: SLF001
    publisher = getattr(nc, "_orch_publisher", None)
    if publisher is None:
        publisher = Publisher(nc)
        nc._orch_publisher = publisher  # type: ignore[attr-defined]
    return publisher


def _expire(future: asyncio.Future[Msg]) -> None:
    if not future.done():
        future.set_exception(nats.errors.TimeoutError())
