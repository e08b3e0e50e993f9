"""Tasks in their bucket (versioned tasks for the task engine, task
trees) and the events of tasks (kept in the events stream, see
``events``), listed by task.

One of the typed stores ``Repository`` is composed of. An event belongs to
the task that received it (``Event.task``); ``Event.source`` is the task
that caused it, which in a task tree is the receiver itself, its parent or
one of its subtasks.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from orchestration.model.retention import summarize
from orchestration.store import keys as rk
from orchestration.store.events import EventLog
from orchestration.store.kvstore import Bucket, Versioned
from orchestration.v1.model_pb2 import Event, Task, TreeSummary
from orchestration_sdk.runtime.concurrency import gather_bounded
from orchestration_sdk.status_errors import Aborted, NotFound


class TaskStore:
    """Tasks in their bucket, and their events."""

    def __init__(self, tasks: Bucket, events: EventLog, require_domain: Callable[[str], Awaitable[None]]) -> None:
        self._task_bucket = tasks
        self._events = events
        # Raises NotFound unless the domain exists (the model records know).
        self.require_domain = require_domain

    # ---- tasks -----------------------------------------------------------------

    async def put_task(self, task: Task, revision: int | None) -> int:
        """Create (revision None) or compare-and-set a task; the new revision."""
        what = rk.in_domain(f"task {task.uuid!r}", task.domain)
        return await self._task_bucket.write(rk.task_key(task.domain, task.uuid), task.SerializeToString(), revision, what)

    async def get_task(self, domain: str, uuid: str) -> Versioned[Task]:
        """A task and its revision (NotFound); one of a removed domain is not found."""
        entry, grave = await asyncio.gather(self._task_bucket.get(rk.task_key(domain, uuid)),
                                            self._task_bucket.get(rk.grave_key(domain)))
        if entry is None or (grave is not None and entry.revision < grave.revision):
            raise NotFound(rk.not_found(f"task {uuid!r}", domain))
        return Versioned(Task.FromString(entry.value), entry.revision)

    async def list_tasks(self, domain: str, solution: str = "", request: str = "", roots_only: bool = False) -> list[Task]:
        """Tasks of the domain, optionally of one solution and/or request, or
        their roots only, oldest first."""
        await self.require_domain(domain)
        return [
            t
            for t in await self.all_tasks(domain, derive=not roots_only)
            if (not solution or t.solution == solution) and (not request or t.request == request)
            and not (roots_only and t.parent)
        ]

    async def find_task(self, domain: str, uuid: str) -> Task:
        """A task as a reader sees it: its record, or, for a task that has
        none yet (an instance task is written once, when it ends), what its
        events say (NotFound when neither is there)."""
        try:
            return (await self.get_task(domain, uuid)).value
        except NotFound:
            return await self._from_events(domain, uuid)

    async def _from_events(self, domain: str, uuid: str) -> Task:
        """A task with no record, as its events say (NotFound without any)."""
        derived = await self._derived(domain, [uuid])
        if not derived:
            raise NotFound(rk.not_found(f"task {uuid!r}", domain))
        parent = derived[0].parent
        if parent:
            with contextlib.suppress(NotFound):
                _inherit(derived, (await self.get_task(domain, parent)).value)
        return derived[0]

    async def get_task_tree(self, domain: str, uuid: str) -> list[Task]:
        """The task and all its descendants, parents before children (a
        listed subtask with no record: what its events say, see find_task)."""
        return [task for task, _ in await self.versioned_tree(domain, uuid)]

    async def versioned_tree(self, domain: str, uuid: str) -> list[tuple[Task, int | None]]:
        """The task and all its descendants, parents before children, each
        with its revision: None for a subtask its parent lists that has no
        record, taken from its events (an instance task is written once,
        when it ends: while it runs, its execution event is all there is).
        A listed subtask with neither is left out (a lazy task not started)."""
        try:
            stored_root = await self.get_task(domain, uuid)
            root, revision = stored_root.value, stored_root.revision
        except NotFound:
            root, revision = await self._from_events(domain, uuid), None
        tree: list[tuple[Task, int | None]] = [(root, revision)]
        seen = {uuid}
        level = [root]
        # One round of concurrent reads per level: a tree is shallow but can be wide.
        while level:
            wanted = list(dict.fromkeys(s for t in level for s in t.subtasks if s not in seen))
            seen.update(wanted)
            found = await gather_bounded(self._task_bucket.get(rk.task_key(domain, s)) for s in wanted)
            missing = [s for s, e in zip(wanted, found) if e is None]
            derived = {t.uuid: t for t in _inherit(await self._derived(domain, missing), *level)} if missing else {}
            # In the order their parents list them, whether stored or derived.
            read = [(Task.FromString(e.value), e.revision) if e is not None else (derived.get(s), None) for s, e in zip(wanted, found)]
            tree.extend((t, revision) for t, revision in read if t is not None)
            level = [t for t, revision in read if t is not None and revision is not None]
        return tree

    async def _derived(self, domain: str, uuids: list[str]) -> list[Task]:
        """Tasks with no record, as their events tell them (the last event's
        task, begun at its execution event); those without events are left out."""
        return await self._events.tasks_of(domain, uuids)

    async def all_tasks(self, domain: str, derive: bool = False) -> list[Task]:
        """Every task of the domain, oldest first (no domain check). With
        `derive`, also the subtasks their parents list that have no record
        but events (see versioned_tree)."""
        # With the domain's grave: a task of the domain as it was before a removal is not its task.
        entries, grave = await asyncio.gather(self._task_bucket.scan(rk.domain_filters(domain)[1]),
                                              self._task_bucket.get(rk.grave_key(domain)))
        buried = grave.revision if grave is not None else 0
        tasks = [Task.FromString(e.value) for e in entries if e.revision > buried]
        if derive:
            stored = {t.uuid for t in tasks}
            missing = list(dict.fromkeys(s for t in tasks for s in t.subtasks if s not in stored))
            if missing:
                tasks.extend(_inherit(await self._derived(domain, missing), *tasks))
        return sorted(tasks, key=lambda t: (t.created, t.uuid))

    async def prune_tree(self, domain: str, root: Task) -> TreeSummary:
        """Prune a finished tree to its root: the root gets a summary of its
        subtasks (written first, compare-and-set), then the subtasks and every
        event of the tree are deleted, deepest first (a prune cut short leaves
        no task out of reach of its root, and the next one finishes it), and
        the root forgets its subtasks and events.

        Finished history is purged, not deleted with markers (which would
        pile up in the bucket): should nats-server bring a purged task back
        after an unclean stop, it is a finished task nothing acts on, and the
        next pass deletes it again (see Pruner.relieve: orphans go first)."""
        current = await self.get_task(domain, root.uuid)
        versioned = await self.versioned_tree(domain, root.uuid)
        tree = [task for task, _ in versioned]
        if list(tree[0].subtasks) != list(current.value.subtasks):
            raise Aborted(f"task {root.uuid!r} changed while its tree was read; pruned on the next pass")
        subtasks = tree[1:]
        marked = Task()
        marked.CopyFrom(current.value)
        marked.summary.CopyFrom(summarize(subtasks, current.value.summary))
        revision = await self.put_task(marked, current.revision)
        await self._events.remove_tasks(domain, (t.uuid for t in tree))
        await self._purge_deepest_first(domain, versioned, keep_root=True)
        del marked.subtasks[:]
        del marked.events[:]
        await self.put_task(marked, revision)
        return marked.summary

    async def remove_tree(self, domain: str, root: Task) -> int:
        """Delete a finished tree whole: its events, its subtasks (deepest
        first) and its root, with purges and no write, so that it works on a
        bucket at its size cap and leaves nothing behind (delete markers would
        fill the bucket in their turn). The number of tasks deleted."""
        versioned = await self.versioned_tree(domain, root.uuid)
        await self._events.remove_tasks(domain, (t.uuid for t, _ in versioned))
        await self._purge_deepest_first(domain, versioned, keep_root=False)
        return len(versioned)

    async def _purge_deepest_first(self, domain: str, tree: list[tuple[Task, int | None]], keep_root: bool) -> None:
        """Purge a tree's tasks (read by versioned_tree: parents before their
        children) level by level from the deepest, so that one cut short leaves
        no task out of reach of its root; the root too unless `keep_root`.
        A task with no record (revision None) has nothing to purge."""
        depth = {tree[0][0].uuid: 0}
        for task, _ in tree[1:]:
            depth[task.uuid] = depth.get(task.parent, 0) + 1
        for level in range(max(depth.values()), 0 if keep_root else -1, -1):
            await gather_bounded(self._task_bucket.purge(rk.task_key(domain, t.uuid))
                                 for t, revision in tree if depth[t.uuid] == level and revision is not None)

    async def usage(self) -> tuple[int, int]:
        """Bytes the tasks bucket holds, and its cap (0: none)."""
        return await self._task_bucket.usage()

    # ---- events ----------------------------------------------------------------

    async def list_events(self, domain: str, task: str = "") -> list[Event]:
        """Events of the domain, or those a task received or caused; oldest first."""
        await self.require_domain(domain)
        if not task:
            return await self.all_events(domain)
        return [e for e in await self._events_near(domain, task) if task in (e.task, e.source)]

    async def all_events(self, domain: str) -> list[Event]:
        """Every event of the domain, by time (no domain check)."""
        return await self._events.of_domain(domain)

    async def get_event(self, domain: str, uuid: str, task: str = "") -> Event:
        """One event, optionally only if the task received or caused it (NotFound).
        With the receiving task, only its events are read; without, the domain's."""
        found = await (self._events.of_tasks(domain, [task]) if task else self._events.of_domain(domain))
        for event in found:
            if event.uuid == uuid:
                return event
        if task:
            # The task may have caused it (then its parent or a subtask received it).
            for event in await self._events_near(domain, task, itself=False):
                if event.uuid == uuid and task in (event.task, event.source):
                    return event
        raise NotFound(rk.not_found(f"event {uuid!r}", domain))

    async def _events_near(self, domain: str, task: str, itself: bool = True) -> list[Event]:
        """Events received by the task (unless not `itself`), its parent or
        its subtasks (where what it caused lands)."""
        try:
            record = await self.find_task(domain, task)
        except NotFound:
            # No tree to follow: what it caused may be anywhere in the domain.
            return await self.all_events(domain)
        near = [r for r in (task if itself else "", record.parent, *record.subtasks) if r]
        return await self._events.of_tasks(domain, near) if near else []


def _inherit(derived: list[Task], *parents: Task) -> list[Task]:
    """What a derived task has from its parent (the tree's version and trace, as TaskBook.ensure gives it)."""
    by_uuid = {p.uuid: p for p in parents}
    for task in derived:
        parent = by_uuid.get(task.parent)
        if parent is not None:
            task.version, task.trace = parent.version, parent.trace
    return derived
