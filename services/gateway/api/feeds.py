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

# Events a slow watcher may lag behind before the feed re-reads the rest from the stream.
BACKLOG = 10000


class Feeds:
    """Subscriptions on behalf of watching clients."""

    def __init__(self, nc: NatsClient, subjects: Subjects, backlog: int = BACKLOG) -> None:
        self.nc = nc
        self.js = nc.jetstream()
        self.subjects = subjects
        self.backlog = backlog

    async def events(self, domain: str, task: str) -> AsyncIterator[gw.WatchEventsResponse]:
        """Task events as they happen; with a task, its earlier events first.

        Nothing is dropped: when the watcher falls more than `backlog` events
        behind, the feed stops buffering, hands out what it has, and then
        reads on from the events stream after the last event it handed out."""
        after = 0  # stream sequence of the last event handed out
        while True:
            queue: asyncio.Queue[Msg | None] = asyncio.Queue()
            behind = False

            async def deliver(msg: Msg) -> None:
                nonlocal behind
                if behind:
                    return
                if queue.qsize() >= self.backlog:
                    behind = True
                    queue.put_nowait(None)  # the end of what was buffered: read on from the stream
                    return
                queue.put_nowait(msg)

            if after:
                config = api.ConsumerConfig(deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=after + 1)
            else:
                config = api.ConsumerConfig(deliver_policy=api.DeliverPolicy.ALL if task else api.DeliverPolicy.NEW)
            subscription = await self.js.subscribe(
                self.subjects.events_filter(domain), cb=deliver, ordered_consumer=True, config=config,
                stream=self.subjects.events_stream,
            )
            try:
                while (msg := await queue.get()) is not None:
                    after = msg.metadata.sequence.stream
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
