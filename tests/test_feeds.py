"""The gateway's event feed against a real nats-server: a watcher that falls
behind loses nothing (the feed re-reads from the events stream), and a watch
of one task replays its earlier events first."""

from __future__ import annotations

import asyncio

from nats.aio.client import Client as NatsClient

from gateway.api.feeds import Feeds
from orchestration.model.codec_fields import EVENT_TYPE, TASK_TYPE
from orchestration.store.events import bus_payload, new_event
from orchestration.store.repository import Repository
from orchestration.store.subjects import Subjects
from orchestration.v1 import model_pb2 as pb


async def _publish(nc: NatsClient, subjects: Subjects, task: pb.Task, count: int) -> list[str]:
    js = nc.jetstream()
    sent = []
    for n in range(count):
        event = new_event(task, pb.EVENT_TYPE_EXECUTION, comment=f"event {n}")
        subject = subjects.event(task.domain, TASK_TYPE.names[task.type], EVENT_TYPE.names[event.type])
        await js.publish(subject, bus_payload(event, task))
        sent.append(event.comment)
    return sent


async def test_a_watcher_that_falls_behind_gets_every_event_in_order(nc: NatsClient, subjects: Subjects) -> None:
    await Repository(nc.jetstream(), subjects).open()  # the events stream
    task = pb.Task(uuid="t1", domain="d", type=pb.TASK_TYPE_INSTANCE)
    feed = Feeds(nc, subjects, backlog=5).events("d", "t1")
    first = asyncio.ensure_future(feed.__anext__())
    await _publish(nc, subjects, task, 1)
    seen = [(await asyncio.wait_for(first, 10)).event.comment]
    # Fifty more while the watcher reads nothing: ten times what the feed buffers.
    sent = await _publish(nc, subjects, task, 50)
    while len(seen) < 51:
        seen.append((await asyncio.wait_for(feed.__anext__(), 10)).event.comment)
    assert seen == ["event 0", *sent]
    await feed.aclose()


async def test_a_task_watch_replays_that_tasks_earlier_events_only(nc: NatsClient, subjects: Subjects) -> None:
    await Repository(nc.jetstream(), subjects).open()
    mine = pb.Task(uuid="mine", domain="d", type=pb.TASK_TYPE_SOLUTION)
    other = pb.Task(uuid="other", domain="d", type=pb.TASK_TYPE_SOLUTION)
    await _publish(nc, subjects, other, 3)
    sent = await _publish(nc, subjects, mine, 3)
    feed = Feeds(nc, subjects, backlog=2).events("d", "mine")
    seen = [(await asyncio.wait_for(feed.__anext__(), 10)).event.comment for _ in range(3)]
    assert seen == sent
    await feed.aclose()
