"""Live feeds from NATS for streaming RPCs: task events (replayable, from the
events stream) and status messages (published by the monitor)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api

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
        """Task events as they happen, each with its task as it was then;
        with a task, its earlier events first.

        Both are read from the events stream: a task's filtered by the server
        on its own subjects (a watch of one task never reads its domain's
        other events). Nothing is dropped: see _follow."""
        s = self.subjects
        if task:
            subject, first = s.task_events_filter(domain, task), api.DeliverPolicy.ALL
        else:
            subject, first = s.events_filter(domain), api.DeliverPolicy.NEW
        async for msg in self._follow(s.events_stream, subject, first):
            event, at = parse_bus_payload(msg.data)
            yield gw.WatchEventsResponse(event=event, task=at)

    async def replay(self, domain: str, task: str, after: int, limit: int) -> tuple[list[dict[str, object]], int, bool]:
        """The domain's (or one task's) events stored after stream sequence
        `after`, at most `limit` of them, as the JSON objects the bus
        published: (events, the sequence to pass next time, whether more are
        stored). Bus clients replay the stream through this, not through
        JetStream consumers of their own (which could deliver anywhere)."""
        s = self.subjects
        subject = s.task_events_filter(domain, task) if task else s.events_filter(domain)
        async with self._reading(subject, after + 1 if after else 0) as subscription:
            pending = (await subscription.consumer_info()).num_pending or 0
            messages = await subscription.fetch(min(pending, limit), timeout=5) if pending and limit else []
        last = messages[-1].metadata.sequence.stream if messages else after
        return [json.loads(m.data) for m in messages], last, pending > len(messages)

    async def latest(self, domain: str, window: int) -> list[pb.Event]:
        """The domain's events among the last `window` messages of the events stream, oldest first."""
        s = self.subjects
        info = await self.js.stream_info(s.events_stream)
        last = info.state.last_seq
        if not last or not info.state.messages:
            return []
        start = max(info.state.first_seq, last - window + 1)
        found: list[pb.Event] = []
        async with self._reading(s.events_filter(domain), start) as subscription:
            while True:
                pending = (await subscription.consumer_info()).num_pending
                if not pending:
                    break
                for msg in await subscription.fetch(min(pending, 1000), timeout=5):
                    if msg.metadata.sequence.stream > last:
                        return found
                    found.append(parse_bus_payload(msg.data)[0])
        return found

    @contextlib.asynccontextmanager
    async def _reading(self, subject: str, start: int) -> AsyncIterator[JetStreamContext.PullSubscription]:
        """A short-lived pull consumer of the events stream on `subject`, from
        stream sequence `start` (0: from the first), removed afterwards."""
        s = self.subjects
        where = {"deliver_policy": api.DeliverPolicy.BY_START_SEQUENCE, "opt_start_seq": start} if start else {}
        subscription = await self.js.pull_subscribe(subject, stream=s.events_stream, config=api.ConsumerConfig(
            ack_policy=api.AckPolicy.NONE, inactive_threshold=30.0, mem_storage=True, **where))  # type: ignore[arg-type]
        try:
            yield subscription
        finally:
            with contextlib.suppress(Exception):
                name = (await subscription.consumer_info()).name
                await subscription.unsubscribe()
                await self.js.delete_consumer(s.events_stream, name)

    async def _follow(self, stream: str, subject: str, first: api.DeliverPolicy) -> AsyncIterator[Msg]:
        """The stream's messages on `subject`, from `first` on. When the
        watcher falls more than `backlog` messages behind, buffering stops,
        what was buffered is handed out, and reading goes on from the stream
        after the last message handed out: nothing is dropped."""
        after = 0  # stream sequence of the last message handed out
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
                config = api.ConsumerConfig(deliver_policy=first)
            subscription = await self.js.subscribe(subject, cb=deliver, ordered_consumer=True, config=config, stream=stream)
            try:
                while (msg := await queue.get()) is not None:
                    after = msg.metadata.sequence.stream
                    yield msg
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
