"""The settler's rule for an instance's task on its own: it completes as soon
as the instance's work in the run is done, unless a reconfigure may still
come its way (a member of a cluster that uses its member list completes when
the cluster settles). No NATS, no processes."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from types import SimpleNamespace

import pytest
from test_scheduler import Harness

from dispatcher.run.settling import Settler
from dispatcher.run.tasks import TaskBook
from orchestration.model.lifecycle import ACTIVE, INITIAL
from orchestration.v1 import model_pb2 as pb


class RecordingBook:
    """The part of the task book the rule uses: which tasks it completed."""

    def __init__(self) -> None:
        self.completed: list[str] = []
        self.tasks: defaultdict[str, pb.Task] = defaultdict(pb.Task)  # what the run knows of each task

    def finished(self, uuid: str) -> bool:
        return uuid in self.completed

    async def set_status(self, uuid: str, status: int, error: str = "", comment: str = "") -> None:
        assert status == pb.TASK_STATUS_COMPLETED
        self.completed.append(uuid)


def settled() -> tuple[Harness, Settler, RecordingBook]:
    """Two clusters run to the end: `quiet` ignores its member list, `chatty` uses it."""
    h = Harness()
    h.cluster("quiet", parameters={"orch_siblings": "ignore"})
    h.cluster("chatty")
    for element, uuid in (("quiet", "q1"), ("quiet", "q2"), ("chatty", "c1"), ("chatty", "c2")):
        h.instance(element, uuid).task = f"task-{uuid}"
    h.instance("chatty", "gone", state=ACTIVE, target=INITIAL, remove=True).task = "task-gone"
    h.start_all()
    h.run_to_end()
    book = RecordingBook()
    settler = Settler(None, book, h.state, h.scheduler, "d", "s")  # type: ignore[arg-type]  # the rule reads nothing
    return h, settler, book


def done(h: Harness, settler: Settler, uuid: str) -> None:
    slot = h.state.instances[uuid]
    asyncio.run(settler.instance_done(slot, h.state.clusters[slot.key]))


def test_an_instance_of_a_cluster_that_ignores_its_members_completes_with_its_last_step() -> None:
    h, settler, book = settled()
    done(h, settler, "q1")
    assert book.completed == ["task-q1"]


def test_a_member_that_uses_its_member_list_is_left_to_its_cluster_settling() -> None:
    # A sibling that joins later makes its view stale: the reconfigure that
    # follows runs under its task, which must still be open then.
    h, settler, book = settled()
    done(h, settler, "c1")
    c1 = h.state.instances["c1"]
    c1.record.members = h.state.membership(h.state.clusters[c1.key])
    done(h, settler, "c1")
    assert book.completed == [], "a sibling-aware member completed before its cluster settled"


def test_an_instance_that_is_no_active_member_completes_at_once() -> None:
    h, settler, book = settled()
    gone = h.state.instances["gone"]
    assert gone.record.state == INITIAL and gone.record.remove
    done(h, settler, "gone")
    assert book.completed == ["task-gone"]


def test_nothing_completes_once_the_run_stops_or_in_a_terminated_subtree() -> None:
    h, settler, book = settled()
    h.scheduler.exclude(["task-q1"])
    done(h, settler, "q1")
    h.scheduler.stop("stopped: a failure", pb.TASK_STATUS_FAILED)
    done(h, settler, "q2")
    assert book.completed == []


class SlowTasks:
    """Task records whose writes wait until released."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.written: list[tuple[str, int]] = []

    async def put_task(self, task: pb.Task, revision: int | None) -> int:
        await self.release.wait()
        self.written.append((task.uuid, task.status))
        return len(self.written)


class NoRecorder:
    async def record(self, event: pb.Event, task: pb.Task) -> None:
        return None


class WrittenEvents:
    """Events recorded into the same list as the task writes (an instance
    task's start is its event alone)."""

    def __init__(self, tasks: SlowTasks) -> None:
        self.tasks = tasks

    async def record(self, event: pb.Event, task: pb.Task) -> None:
        self.tasks.written.append((task.uuid, task.status))


async def test_a_task_seen_ended_is_stored_before_whoever_saw_it_goes_on() -> None:
    # The cluster settling finds an instance completed in memory while its
    # write is still under way: completing the cluster must wait for it.
    tasks = SlowTasks()
    root = pb.Task(uuid="6f1c3a52-98a5-4c4e-8a53-6a0d2b0f4b11", type=pb.TASK_TYPE_SOLUTION, domain="d", solution="s")
    book = TaskBook(SimpleNamespace(tasks=tasks), NoRecorder(), root)  # type: ignore[arg-type]
    instance = book.ensure(root.uuid, pb.TASK_TYPE_INSTANCE, "instance", "i1", lazy=True)
    tasks.release.set()
    await book.persist()  # the tree listing it is stored first (see the next test)
    tasks.release.clear()
    tasks.written.clear()
    first = asyncio.create_task(book.set_status(instance.uuid, pb.TASK_STATUS_COMPLETED))
    await asyncio.sleep(0)
    again = asyncio.create_task(book.set_status(instance.uuid, pb.TASK_STATUS_COMPLETED))
    await asyncio.sleep(0.01)
    assert book.finished(instance.uuid) and not again.done(), "went on before the completion was stored"
    tasks.release.set()
    await asyncio.wait_for(asyncio.gather(first, again), 5)
    assert tasks.written == [(instance.uuid, pb.TASK_STATUS_COMPLETED)]


async def test_a_lazy_task_is_written_only_once_a_persist_has_stored_its_parent_listing_it() -> None:
    # An instance task made while the run goes on (the run makes new
    # instances as it sets them going): written before its parent lists it,
    # a crash would leave it out of reach of the tree.
    tasks = SlowTasks()
    tasks.release.set()
    root = pb.Task(uuid="6f1c3a52-98a5-4c4e-8a53-6a0d2b0f4b11", type=pb.TASK_TYPE_SOLUTION, domain="d", solution="s")
    book = TaskBook(SimpleNamespace(tasks=tasks), WrittenEvents(tasks), root)  # type: ignore[arg-type]
    await book.persist()
    instance = book.ensure(root.uuid, pb.TASK_TYPE_INSTANCE, "instance", "i1", lazy=True)
    writing = asyncio.create_task(book.set_status(instance.uuid, pb.TASK_STATUS_EXECUTING))
    await asyncio.sleep(0.01)
    assert not writing.done() and tasks.written == [], "written before its parent listed it"
    await book.persist()
    await asyncio.wait_for(writing, 5)
    assert [uuid for uuid, _ in tasks.written] == [root.uuid, instance.uuid]
    assert tasks.written[-1] == (instance.uuid, pb.TASK_STATUS_EXECUTING)


class FlakyTasks(SlowTasks):
    """Task records whose first write fails."""

    def __init__(self) -> None:
        super().__init__()
        self.release.set()
        self.failed = False

    async def put_task(self, task: pb.Task, revision: int | None) -> int:
        if not self.failed:
            self.failed = True
            raise RuntimeError("store away")
        return await super().put_task(task, revision)


async def test_a_persist_that_failed_lists_nothing_and_the_next_one_stores_it_again() -> None:
    tasks = FlakyTasks()
    root = pb.Task(uuid="6f1c3a52-98a5-4c4e-8a53-6a0d2b0f4b11", type=pb.TASK_TYPE_SOLUTION, domain="d", solution="s")
    book = TaskBook(SimpleNamespace(tasks=tasks), WrittenEvents(tasks), root)  # type: ignore[arg-type]
    instance = book.ensure(root.uuid, pb.TASK_TYPE_INSTANCE, "instance", "i1", lazy=True)
    writing = asyncio.create_task(book.set_status(instance.uuid, pb.TASK_STATUS_EXECUTING))
    with pytest.raises(RuntimeError):
        await book.persist()
    await asyncio.sleep(0.01)
    assert not writing.done() and tasks.written == [], "written though its parent's listing was not stored"
    await book.persist()
    await asyncio.wait_for(writing, 5)
    assert [uuid for uuid, _ in tasks.written] == [root.uuid, instance.uuid]


async def test_a_held_tree_is_stored_before_any_status_of_its_new_tasks() -> None:
    # The run stores its tree after its first operation has left: the root's
    # status (or a cluster's) must not be written ahead of it, nor race it.
    tasks = SlowTasks()
    tasks.release.set()
    root = pb.Task(uuid="6f1c3a52-98a5-4c4e-8a53-6a0d2b0f4b11", type=pb.TASK_TYPE_SOLUTION, domain="d", solution="s")
    book = TaskBook(SimpleNamespace(tasks=tasks), NoRecorder(), root)  # type: ignore[arg-type]
    element = book.ensure(root.uuid, pb.TASK_TYPE_ELEMENT, "element", "e")
    book.hold_tree()
    starting = asyncio.create_task(book.set_status(root.uuid, pb.TASK_STATUS_EXECUTING))
    await asyncio.sleep(0.01)
    assert not starting.done() and tasks.written == [], "the root's status went ahead of its tree"
    await book.persist()
    await asyncio.wait_for(starting, 5)
    assert sorted(uuid for uuid, _ in tasks.written[:2]) == sorted([root.uuid, element.uuid])
    assert tasks.written[-1] == (root.uuid, pb.TASK_STATUS_EXECUTING)


class StoredTasks:
    """A task store: what is written is read back, and a tree read takes a
    subtask the store does not hold from its events, or leaves it out when it
    has none (as TaskStore.versioned_tree does)."""

    def __init__(self) -> None:
        self.stored: dict[str, pb.Task] = {}
        self.started: dict[str, pb.Task] = {}  # what the events of tasks with no record say

    async def put_task(self, task: pb.Task, revision: int | None) -> int:
        self.stored[task.uuid] = pb.Task.FromString(task.SerializeToString())
        return len(self.stored)

    async def get_task(self, domain: str, uuid: str) -> SimpleNamespace:
        return SimpleNamespace(value=pb.Task.FromString(self.stored[uuid].SerializeToString()), revision=1)

    async def versioned_tree(self, domain: str, uuid: str) -> list[tuple[pb.Task, int | None]]:
        tree: list[tuple[pb.Task, int | None]] = [(self.stored[uuid], 1)]
        level = [self.stored[uuid]]
        while level:
            wanted = [s for t in level for s in t.subtasks]
            level = [self.stored[s] for s in wanted if s in self.stored]
            tree += [(t, 1) for t in level]
            tree += [(pb.Task.FromString(self.started[s].SerializeToString()), None)
                     for s in wanted if s not in self.stored and s in self.started]
        return tree


class EventTasks:
    """Events recorded, and the task as each one carries it (as the events stream keeps them)."""

    def __init__(self, tasks: StoredTasks | None = None) -> None:
        self.recorded: list[tuple[str, int]] = []
        self.tasks = tasks

    async def record(self, event: pb.Event, task: pb.Task) -> None:
        self.recorded.append((task.uuid, event.type))
        if self.tasks is not None:
            self.tasks.started[task.uuid] = pb.Task.FromString(task.SerializeToString())


async def _book_of_one_instance_task(tasks: StoredTasks, events: EventTasks) -> tuple[TaskBook, pb.Task, pb.Task]:
    """A run's task book of a cluster task with one (lazy) instance task, its tree stored."""
    root = pb.Task(uuid="6f1c3a52-98a5-4c4e-8a53-6a0d2b0f4b11", type=pb.TASK_TYPE_SOLUTION, domain="d", solution="s")
    book = TaskBook(SimpleNamespace(tasks=tasks), events, root)  # type: ignore[arg-type]
    cluster = book.ensure(root.uuid, pb.TASK_TYPE_CLUSTER, "cluster", "e", "V1")
    instance = book.ensure(cluster.uuid, pb.TASK_TYPE_INSTANCE, "instance", "i1", lazy=True)
    await book.persist()
    return book, cluster, instance


async def test_an_instance_task_is_written_once_when_it_ends_its_start_is_its_event() -> None:
    # One write per fact: the execution event carries the instance task's
    # start (readers take a task with no record from its events); the
    # record is written when it ends, with the completion event beside it.
    tasks = StoredTasks()
    events = EventTasks(tasks)
    book, cluster, instance = await _book_of_one_instance_task(tasks, events)
    written = set(tasks.stored)
    starting = book.progress(instance.uuid, pb.TRANSITION_CREATE, 1, pb.STATE_INITIAL)
    assert starting is not None
    await starting
    assert instance.uuid not in tasks.stored, "an instance task's start was written to its record"
    assert (instance.uuid, pb.EVENT_TYPE_EXECUTION) in events.recorded
    assert set(tasks.stored) == written | {cluster.uuid}  # its cluster's task goes executing as before
    await book.set_status(instance.uuid, pb.TASK_STATUS_COMPLETED)
    assert tasks.stored[instance.uuid].status == pb.TASK_STATUS_COMPLETED
    assert events.recorded[-1] == (instance.uuid, pb.EVENT_TYPE_COMPLETION)


async def test_a_resumed_run_takes_a_started_instance_task_from_its_events_and_writes_it_once_it_ends() -> None:
    # The dispatcher died while an instance task ran (its execution event
    # stored, its record not): the next owner finds it executing, sends no
    # second execution event, and creates its record when it ends.
    tasks = StoredTasks()
    events = EventTasks(tasks)
    before, cluster, instance = await _book_of_one_instance_task(tasks, events)
    root = before.root_task
    starting = before.progress(instance.uuid, pb.TRANSITION_CREATE, 1, pb.STATE_INITIAL)
    assert starting is not None
    await starting

    events.recorded.clear()
    resumed = TaskBook(SimpleNamespace(tasks=tasks), events, tasks.stored[root.uuid])  # type: ignore[arg-type]
    await resumed.load()
    assert list(resumed.tasks[cluster.uuid].subtasks) == [instance.uuid]
    assert resumed.tasks[instance.uuid].status == pb.TASK_STATUS_EXECUTING and resumed.revisions[instance.uuid] is None
    assert resumed.progress(instance.uuid, pb.TRANSITION_CONFIGURE, 2, pb.STATE_INACTIVE) is None
    await resumed.set_status(instance.uuid, pb.TASK_STATUS_COMPLETED)
    assert tasks.stored[instance.uuid].status == pb.TASK_STATUS_COMPLETED
    assert events.recorded == [(instance.uuid, pb.EVENT_TYPE_COMPLETION)]


async def test_a_resumed_run_leaves_out_the_subtasks_the_run_before_listed_and_never_stored() -> None:
    # The run before listed two instance tasks under their cluster's and
    # stopped before storing either (they are stored with their first
    # status): one instance still has work, the other was never made (its
    # record was not stored either). Listed but unknown, the second made the
    # resumed run fail as its cluster settled (KeyError), at every resumption.
    tasks = StoredTasks()
    root = pb.Task(uuid="6f1c3a52-98a5-4c4e-8a53-6a0d2b0f4b11", type=pb.TASK_TYPE_SOLUTION, domain="d", solution="s")
    before = TaskBook(SimpleNamespace(tasks=tasks), NoRecorder(), root)  # type: ignore[arg-type]
    element = before.ensure(root.uuid, pb.TASK_TYPE_ELEMENT, "element", "e")
    cluster = before.ensure(element.uuid, pb.TASK_TYPE_CLUSTER, "cluster", "e", "V1")
    kept = before.ensure(cluster.uuid, pb.TASK_TYPE_INSTANCE, "instance", "i1", lazy=True)
    never = before.ensure(cluster.uuid, pb.TASK_TYPE_INSTANCE, "instance", "i2", lazy=True)
    await before.persist()
    assert list(tasks.stored[cluster.uuid].subtasks) == [kept.uuid, never.uuid] and kept.uuid not in tasks.stored

    resumed = TaskBook(SimpleNamespace(tasks=tasks), NoRecorder(), tasks.stored[root.uuid])  # type: ignore[arg-type]
    await resumed.load()
    assert list(resumed.tasks[cluster.uuid].subtasks) == []
    # The instance with work left gets its task again, the same one, listed once.
    again = resumed.ensure(cluster.uuid, pb.TASK_TYPE_INSTANCE, "instance", "i1", lazy=True)
    assert again.uuid == kept.uuid and list(resumed.tasks[cluster.uuid].subtasks) == [kept.uuid]
    assert all(s in resumed.tasks for t in list(resumed.tasks.values()) for s in t.subtasks)
