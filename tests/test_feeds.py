"""The gateway's event feed against a real nats-server: a watcher that falls
behind loses nothing (the feed re-reads from the stream), a watch of one
task replays that task's earlier events and reads no other task's, and a
domain watch follows the bus."""

from __future__ import annotations

import asyncio

from nats.aio.client import Client as NatsClient

from gateway.api.feeds import Feeds
from orchestration.store.events import EventRecorder, new_event
from orchestration.store.repository import Repository
from orchestration.store.subjects import Subjects
from orchestration.v1 import model_pb2 as pb


async def _setup(nc: NatsClient, subjects: Subjects) -> tuple[Repository, EventRecorder]:
    repo = Repository(nc.jetstream(), subjects)
    await repo.open()
    await repo.model.create_domain("d")
    return repo, EventRecorder(nc.jetstream(), subjects)


async def _record(recorder: EventRecorder, task: pb.Task, count: int, start: int = 0) -> list[str]:
    """Record events of `task` as the engine does (stored and published); their comments."""
    comments = []
    for n in range(start, start + count):
        event = new_event(task, pb.EVENT_TYPE_EXECUTION, comment=f"{task.uuid} {n:03}")
        event.time = n  # in order, whatever the clock
        await recorder.record(event, task)
        comments.append(event.comment)
    return comments


async def test_a_watcher_that_falls_behind_gets_every_event(nc: NatsClient, subjects: Subjects) -> None:
    repo, recorder = await _setup(nc, subjects)
    task = pb.Task(uuid="t1", domain="d", type=pb.TASK_TYPE_INSTANCE, status=pb.TASK_STATUS_EXECUTING)
    await repo.tasks.put_task(task, None)
    sent = await _record(recorder, task, 3)
    feed = Feeds(nc, subjects, backlog=5).events("d", "t1")
    seen = [(await asyncio.wait_for(feed.__anext__(), 10)) for _ in range(3)]
    assert [r.event.comment for r in seen] == sent
    assert seen[0].task.status == pb.TASK_STATUS_EXECUTING  # the task record comes with its events
    # Fifty more while the watcher reads nothing: ten times what the feed buffers.
    sent += await _record(recorder, task, 50, start=3)
    while len(seen) < 53:
        seen.append(await asyncio.wait_for(feed.__anext__(), 10))
    assert sorted(r.event.comment for r in seen) == sent and len({r.event.uuid for r in seen}) == 53
    await feed.aclose()


async def test_a_task_watch_replays_that_tasks_events_only(nc: NatsClient, subjects: Subjects) -> None:
    repo, recorder = await _setup(nc, subjects)
    mine = pb.Task(uuid="mine", domain="d", type=pb.TASK_TYPE_SOLUTION)
    other = pb.Task(uuid="mine2", domain="d", type=pb.TASK_TYPE_SOLUTION)  # a uuid that mine is a prefix of
    await _record(recorder, other, 3)
    sent = await _record(recorder, mine, 3)
    feed = Feeds(nc, subjects, backlog=2).events("d", "mine")
    seen = [(await asyncio.wait_for(feed.__anext__(), 10)).event.comment for _ in range(3)]
    assert sorted(seen) == sent
    later = await _record(recorder, mine, 1, start=3)
    assert (await asyncio.wait_for(feed.__anext__(), 10)).event.comment == later[0]
    await feed.aclose()


async def test_a_domain_watch_follows_the_bus_from_now_on(nc: NatsClient, subjects: Subjects) -> None:
    repo, recorder = await _setup(nc, subjects)
    task = pb.Task(uuid="t", domain="d", type=pb.TASK_TYPE_SOLUTION)
    await _record(recorder, task, 2)  # before the watch: not replayed
    feed = Feeds(nc, subjects).events("d", "")
    waiting = asyncio.ensure_future(feed.__anext__())
    for n in range(2, 100):  # until the watch is up, each event may come before it
        await _record(recorder, task, 1, start=n)
        done, _ = await asyncio.wait({waiting}, timeout=0.05)
        if done:
            break
    response = waiting.result()
    assert response.event.comment >= "t 002" and response.task.uuid == "t"
    await feed.aclose()
