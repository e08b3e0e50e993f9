"""Live feeds from NATS for streaming RPCs: task events (replayable, from the
events stream) and status messages (published by the monitor)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import api

from orchestration.store.events import parse_bus_payload
from orchestration.store.subjects import Subjects
from orchestration.v1 import gateway_pb2 as gw
from orchestration.v1 import model_pb2 as pb

# Messages a slow watcher may lag behind before the oldest are dropped.
BACKLOG = 10000


class Feeds:
    """Subscriptions on behalf of watching clients."""

    def __init__(self, nc: NatsClient, subjects: Subjects) -> None:
        self.nc = nc
        self.js = nc.jetstream()
        self.subjects = subjects

    async def events(self, domain: str, task: str) -> AsyncIterator[gw.WatchEventsResponse]:
        """Task events as they happen; with a task, its earlier events first."""
        queue: asyncio.Queue[Msg] = asyncio.Queue(BACKLOG)

        async def deliver(msg: Msg) -> None:
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(msg)

        policy = api.DeliverPolicy.ALL if task else api.DeliverPolicy.NEW
        subscription = await self.js.subscribe(
            self.subjects.events_filter(domain), cb=deliver, ordered_consumer=True, deliver_policy=policy,
            stream=self.subjects.events_stream,
        )
        try:
            while True:
                msg = await queue.get()
                event, at = parse_bus_payload(msg.data)
                if task and at.uuid != task:
                    continue
                yield gw.WatchEventsResponse(event=event, task=at)
        finally:
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()

    async def status(self, domain: str, solution: str) -> AsyncIterator[gw.WatchStatusResponse]:
        """Status messages as the monitor publishes them."""
        queue: asyncio.Queue[Msg] = asyncio.Queue(BACKLOG)

        async def deliver(msg: Msg) -> None:
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(msg)

        subscription = await self.nc.subscribe(self.subjects.status_filter(domain, solution), cb=deliver)
        try:
            while True:
                msg = await queue.get()
                yield status_response(json.loads(msg.data))
        finally:
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()


def _state(name: str) -> pb.State:
    return pb.State.Value("STATE_" + name.upper()) if name else pb.STATE_UNSPECIFIED


def status_response(fields: dict[str, object]) -> gw.WatchStatusResponse:
    """A status message of the bus as a gRPC response."""
    return gw.WatchStatusResponse(
        time=int(str(fields.get("time", 0))), kind=str(fields.get("kind", "")), domain=str(fields.get("domain", "")),
        solution=str(fields.get("solution", "")), element=str(fields.get("element", "")),
        cluster=str(fields.get("cluster", "")), instance=str(fields.get("instance", "")),
        state=_state(str(fields.get("state", ""))), target=_state(str(fields.get("target", ""))),
    )
