"""Task trees of a run: deterministic task ids (so a resumed run finds the
tree it persisted before), status changes, and the event each one emits."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import time
import uuid as uuidlib
from collections.abc import Awaitable, Callable

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span

from orchestration.model.lifecycle import TASK_ENDED, TRANSITION_NAMES, task_status_name, task_type_name
from orchestration.runtime.metrics import TASKS
from orchestration.store.events import EventRecorder, new_event
from orchestration.store.kvstore import persist
from orchestration.store.repository import Repository
from orchestration.v1 import model_pb2 as pb
from orchestration_sdk.runtime import telemetry
from orchestration_sdk.runtime.concurrency import gather_bounded
from orchestration_sdk.runtime.metrics import labelled
from orchestration_sdk.status_errors import Aborted

S = pb.TaskStatus
_tracer = telemetry.tracer("dispatcher")
_INITIAL = S.TASK_STATUS_INITIAL
EVENT_OF_STATUS = {
    S.TASK_STATUS_EXECUTING: pb.EVENT_TYPE_EXECUTION,
    S.TASK_STATUS_COMPLETED: pb.EVENT_TYPE_COMPLETION,
    S.TASK_STATUS_FAILED: pb.EVENT_TYPE_FAILURE,
    S.TASK_STATUS_TIMEOUT: pb.EVENT_TYPE_TIMEOUT,
    S.TASK_STATUS_TERMINATED: pb.EVENT_TYPE_TERMINATION,
}


# Conflicting writes of one task merged before giving up (a run may write a
# cluster task from its listing, its status and a reconfigure at once).
_MERGES = 4


def child_id(root: str, *names: str) -> str:
    """The id of a subtask: the same for the same root and names, every time
    (uuid5 of the names in the root's namespace, computed without building
    UUID objects: a big tree makes thousands of them)."""
    digest = bytearray(hashlib.sha1(_namespace(root) + "/".join(names).encode()).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


@functools.lru_cache(maxsize=64)
def _namespace(root: str) -> bytes:
    return uuidlib.UUID(root).bytes


class TaskBook:
    """The tasks of one tree, their revisions, and their events.

    The dispatcher that holds the solution's lease is the only writer of its
    tree, so revisions are tracked here; a lost compare-and-set (someone else
    wrote) re-reads and applies the change again.
    """

    def __init__(self, repo: Repository, recorder: EventRecorder, root: pb.Task) -> None:
        self.repo = repo
        self.recorder = recorder
        self.tasks: dict[str, pb.Task] = {root.uuid: root}
        # The tasks the tree makes live in one protobuf arena (a message that
        # holds tasks, used for nothing else): one message each of its own
        # would cost 40 % more memory (1.2 KB a task, 12 MB at 10,000).
        self._arena = pb.Domain()
        self.revisions: dict[str, int | None] = {}
        self.root = root.uuid
        self._new: dict[str, None] = {}  # in order, each once
        # Status changes being stored, per task (see set_status).
        self._writing: dict[str, asyncio.Future[None]] = {}
        # Tasks whose status waits for a persist (see set_status): lazy ones
        # their parent does not list in the store yet, and, while the tree
        # is held (hold_tree), its new and grown tasks; those the next
        # persist covers; and the end of the next persist.
        self._held: set[str] = set()
        self._taking: list[str] = []
        self._persisted: asyncio.Future[None] | None = None
        # True once the run no longer owns the tree: stop waiting for NATS.
        self.give_up: Callable[[], bool] = lambda: False
        # One span per task, open while the task runs; the root's parent is the request's span.
        self.root_context: otel_context.Context | None = None
        self.spans: dict[str, Span] = {}

    async def load(self) -> None:
        """Read the tree as stored (a resumed run continues it). An instance
        task that began but has not ended has no record: it is taken from its
        events (see TaskStore.versioned_tree), unstored (its end is its first
        write). A subtask its parent lists that has neither is a lazy task
        (see ensure) the run before listed and never started, its instance's
        record maybe not stored either: it is left out of the list. This run
        makes it again (the same id) if its instance still has work;
        otherwise its parent would wait for a task that no run knows."""
        if not self.root_task.subtasks:
            return  # a new request: nothing below the root yet
        for task, revision in await self.repo.tasks.versioned_tree(self.root_task.domain, self.root):
            self.tasks[task.uuid] = task
            self.revisions[task.uuid] = revision
        for task in list(self.tasks.values()):
            if any(uuid not in self.tasks for uuid in task.subtasks):
                kept = [uuid for uuid in task.subtasks if uuid in self.tasks]
                task.ClearField("subtasks")
                task.subtasks.extend(kept)

    @property
    def root_task(self) -> pb.Task:
        return self.tasks[self.root]

    def ensure(self, parent: str, kind: pb.TaskType, *names: str, lazy: bool = False, **fields: object) -> pb.Task:
        """The subtask of parent for names, made (not yet stored) if it is new.

        A lazy task is not stored by persist() but by its first status change,
        which waits until a persist has stored the parent listing it (its id
        is deterministic, so a resumed run finds the same one), and a tree
        read skips a subtask with neither record nor event. Instance tasks
        are lazy, which saves a write each; their start is their execution
        event alone, their record written when they end (see _change)."""
        uuid = child_id(self.root, *names)
        found = self.tasks.get(uuid)
        if found is not None:
            return found
        parent_task = self.tasks[parent]
        now = time.time_ns()
        task = self._arena.tasks.add(
            uuid=uuid, type=kind, parent=parent, status=_INITIAL, domain=parent_task.domain,
            solution=parent_task.solution, version=parent_task.version, request=parent_task.request,
            trace=parent_task.trace, actor=parent_task.actor, created=now, updated=now, **fields,  # type: ignore[arg-type]
        )
        self.tasks[uuid] = task
        self.revisions[uuid] = None
        parent_task.subtasks.append(uuid)
        if lazy:
            self._held.add(uuid)
            self._taking.append(uuid)
        else:
            self._new[uuid] = None
        self._new.setdefault(parent)
        return task

    async def persist(self) -> None:
        """Store every new or grown task; the tasks held for it may then be written."""
        dirty, self._new = list(self._new), {}
        taking, self._taking = self._taking, []
        try:
            await gather_bounded([self._write(self.tasks[u]) for u in dirty])
        except BaseException:
            # Not stored: the next persist tries again, and what it covers stays held until then.
            for uuid in dirty:
                self._new.setdefault(uuid)
            self._taking.extend(taking)
            raise
        else:
            self._held.difference_update(taking)
        finally:
            ended, self._persisted = self._persisted, None
            if ended is not None and not ended.done():
                ended.set_result(None)

    def hold_tree(self) -> None:
        """Hold the status changes of the tree's new and grown tasks until
        the next persist has stored them (the run stores its tree once its
        first operation has left, see dispatcher.run.opening): no task is then
        written ahead of the tree above it, nor in a race with its store."""
        self._held.update(self._new)
        self._taking.extend(self._new)

    def release_tree(self) -> None:
        """The run stops without storing its tree: nothing waits for it any more."""
        self._held.clear()
        if self._persisted is not None and not self._persisted.done():
            self._persisted.set_result(None)

    async def note(self, uuid: str, comment: str) -> None:
        """Record a progress event on a task (a controller's account of an
        operation it finished); the task itself is not changed."""
        task = self.tasks.get(uuid)
        if task is None or self.give_up():
            return
        await self._record(new_event(task, pb.EVENT_TYPE_PROGRESS, comment=comment), task)

    async def _write(self, task: pb.Task) -> None:
        await persist(lambda: self._write_once(task), self.give_up)

    async def _record(self, event: pb.Event, task: pb.Task) -> None:
        await persist(lambda: self.recorder.record(event, task), self.give_up)

    async def _write_once(self, task: pb.Task) -> None:
        task.updated = time.time_ns()
        revision = self.revisions.get(task.uuid)
        for attempt in range(1, _MERGES + 1):
            try:
                self.revisions[task.uuid] = await self.repo.tasks.put_task(task, revision)
                return
            except Aborted:
                # Written meanwhile (by another write of this run, or
                # someone else): merged with what is stored, and again.
                if attempt == _MERGES:
                    raise
            stored = await self.repo.tasks.get_task(task.domain, task.uuid)
            merged = stored.value
            if merged.status in TASK_ENDED and task.status not in TASK_ENDED:
                # Terminated by someone else meanwhile: theirs stands.
                self.tasks[task.uuid] = merged
                self.revisions[task.uuid] = stored.revision
                return
            known = set(merged.subtasks)
            merged_subtasks = list(merged.subtasks) + [s for s in task.subtasks if s not in known]
            task.ClearField("subtasks")
            task.subtasks.extend(merged_subtasks)
            revision = stored.revision

    def span_of(self, uuid: str) -> Span:
        """The span of a task (started on first use, as a child of its parent's)."""
        span = self.spans.get(uuid)
        if span is not None:
            return span
        task = self.tasks[uuid]
        parent: otel_context.Context | None
        if task.parent and task.parent in self.tasks:
            parent = trace.set_span_in_context(self.span_of(task.parent))
        else:
            parent = self.root_context
        kind = task_type_name(task.type)
        label = {"solution": task.solution, "element": task.element, "cluster": f"{task.element}/{task.cluster}",
                 "instance": task.instance}.get(kind, task.uuid)
        span = telemetry.child_span(_tracer, f"{kind} {label}", parent, {
            "orch.task_id": task.uuid, "orch.domain": task.domain, "orch.solution": task.solution,
            "orch.element": task.element, "orch.cluster": task.cluster, "orch.instance": task.instance,
        })
        self.spans[uuid] = span
        return span

    def _close_span(self, uuid: str, status: int, error: str) -> None:
        span = self.span_of(uuid)
        if status != S.TASK_STATUS_COMPLETED:
            telemetry.fail(span, error or task_status_name(status))
        span.end()
        del self.spans[uuid]

    def end_spans(self) -> None:
        """End the spans still open (the run stopped without finishing them)."""
        for span in self.spans.values():
            span.end()
        self.spans.clear()

    def finished(self, uuid: str) -> bool:
        return self.tasks[uuid].status in TASK_ENDED

    async def set_status(self, uuid: str, status: pb.TaskStatus, error: str = "", comment: str = "") -> None:
        """Change a task's status, store it and record its event. A task that
        has the status (or has ended) already is not changed; its write still
        in flight is awaited, so that a caller that goes on (completing the
        parent, say) never writes ahead of it."""
        while uuid in self._held:
            # Made after the last persist started: the tree above it is not stored yet.
            if self._persisted is None:
                self._persisted = asyncio.get_running_loop().create_future()
            await asyncio.wait([self._persisted])
        if self.give_up():
            return  # the run stopped while this waited: it writes nothing more
        task = self.tasks[uuid]
        if task.status == status or task.status in TASK_ENDED:
            pending = self._writing.get(uuid)
            if pending is not None:
                await asyncio.wait([pending])
            return
        done = asyncio.get_running_loop().create_future()
        self._writing[uuid] = done
        try:
            await self._change(uuid, task, status, error, comment)
        finally:
            if self._writing.get(uuid) is done:
                del self._writing[uuid]
            done.set_result(None)

    async def _change(self, uuid: str, task: pb.Task, status: pb.TaskStatus, error: str, comment: str) -> None:
        task.status = status
        if status == S.TASK_STATUS_EXECUTING and not task.started:
            task.started = time.time_ns()
        if error:
            task.error = error
        labelled(TASKS, task_type_name(task.type), task_status_name(status)).inc()
        if status in TASK_ENDED:
            self._close_span(uuid, status, error)
        else:
            self.span_of(uuid)
        event = new_event(task, EVENT_OF_STATUS[status], comment=comment or error)
        if task.type == pb.TASK_TYPE_INSTANCE and status not in TASK_ENDED:
            # Its event is the one store of an instance task's start: the
            # record is written once, when it ends (readers take a task
            # with no record from its events, see TaskStore.versioned_tree).
            await self._record(event, task)
            return
        recording = asyncio.ensure_future(self._record(event, task))
        try:
            await self._write(task)
        finally:
            await recording

    def progress(self, uuid: str, transition: pb.Transition, phase: int, state: pb.State) -> Awaitable[None] | None:
        """A task starts its next transition. The first one makes it (and the
        cluster and element tasks above it) executing, with an event each: the
        writes to await (None when there are none). Later ones are kept in the
        record and reach the store with the next status change (one write per
        transition is the instance's own)."""
        task = self.tasks[uuid]
        task.transition = transition
        task.phase = phase
        task.state = state
        if task.status != S.TASK_STATUS_INITIAL:
            return None
        return self._start(uuid, TRANSITION_NAMES.get(transition, ""))

    async def _start(self, uuid: str, comment: str) -> None:
        await self.set_status(uuid, S.TASK_STATUS_EXECUTING, comment=comment)
        parent = self.tasks[uuid].parent
        while parent and self.tasks[parent].status == S.TASK_STATUS_INITIAL:
            await self.set_status(parent, S.TASK_STATUS_EXECUTING)
            parent = self.tasks[parent].parent
