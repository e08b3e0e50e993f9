"""Live updates for the console: server-sent events that tell a browser its
view changed, fed from the task events and the monitor's status subjects,
coalesced to at most a few a second whatever the rate of transitions."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from orchestration.store.subjects import Subjects

# A browser hears of changes at most this often (seconds between two messages).
COALESCE_SECONDS = 0.25
# A comment line this often keeps proxies from closing an idle stream.
KEEPALIVE_SECONDS = 15.0


class Connectivity:
    """Whether the gateway's NATS connection is up; watchers wake on changes."""

    def __init__(self) -> None:
        self.up = True
        self._changed = asyncio.Event()

    def set(self, up: bool) -> None:
        self.up = up
        self._changed.set()
        self._changed = asyncio.Event()

    async def changed(self) -> None:
        await self._changed.wait()


def subjects_for(subjects: Subjects, domains: list[str], solution: str) -> list[str]:
    """What a view listens to: events and status of its domains (of one solution, when named)."""
    found = []
    for domain in domains:
        found.append(subjects.events_filter(domain))
        found.append(subjects.status_filter(domain, solution))
    return found


async def changes(nc: NatsClient, subjects: list[str], connectivity: Connectivity) -> AsyncIterator[str]:
    """SSE messages: `change` (with how many updates it stands for) at most
    every COALESCE_SECONDS, `status` when NATS goes away and comes back, and
    keep-alive comments. Ends when the consumer stops iterating."""
    pending = 0
    wake = asyncio.Event()

    async def on_message(msg: Msg) -> None:
        nonlocal pending
        pending += 1
        wake.set()

    subscriptions = [await nc.subscribe(subject, cb=on_message) for subject in subjects]
    status = "live" if connectivity.up else "reconnecting"
    try:
        yield _message("status", {"status": status})
        loop = asyncio.get_running_loop()
        last_sent = 0.0
        while True:
            waiter = asyncio.ensure_future(wake.wait())
            link = asyncio.ensure_future(connectivity.changed())
            done, _ = await asyncio.wait({waiter, link}, timeout=KEEPALIVE_SECONDS, return_when=asyncio.FIRST_COMPLETED)
            for future in (waiter, link):
                if not future.done():
                    future.cancel()
            now_status = "live" if connectivity.up else "reconnecting"
            if now_status != status:
                status = now_status
                yield _message("status", {"status": status})
                if status == "live":
                    pending += 1  # whatever happened meanwhile: refetch
            if not done:
                yield ": keep-alive\n\n"
                continue
            if pending:
                delay = last_sent + COALESCE_SECONDS - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                count, pending = pending, 0
                wake.clear()
                last_sent = loop.time()
                yield _message("change", {"updates": count})
            else:
                wake.clear()
    finally:
        for subscription in subscriptions:
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()


def _message(event: str, data: dict[str, object]) -> str:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n"
