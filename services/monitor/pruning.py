"""Pruning of finished task trees (orchestration.model.retention): every
`prune_every` seconds the monitor prunes each finished tree older than the
tree retention to its root and a summary."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from orchestration.model.lifecycle import TASK_ENDED
from orchestration.model.retention import HIGH_WATER, LOW_WATER, due_for_pruning, relief_order
from orchestration.store.repository import Repository
from orchestration.v1 import model_pb2 as pb
from orchestration_sdk.status_errors import Aborted, NotFound

log = logging.getLogger("monitor.pruning")
# Trees pruned in one pass at most.
PER_PASS = 20
# Relief deletes a pruned root only once it is this old (a retried request id finds it meanwhile).
KEEP_ROOT_SECONDS = 600.0
# A finished task whose parent is missing is taken for an orphan only once this old.
ORPHAN_SECONDS = 60.0


class Pruner:
    def __init__(self, repo: Repository, tree_days: float, every_seconds: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.repo = repo
        self.tree_days = tree_days
        self.every = every_seconds
        self.clock = clock
        self._last: float | None = None

    async def maybe_prune(self) -> int:
        """Prune when `every` seconds have passed since the last pass (the first pass runs at once)."""
        now = self.clock()
        if self._last is not None and now - self._last < self.every:
            return 0
        self._last = now
        count = await self.prune()
        if count >= PER_PASS:
            self._last = None  # a backlog: the next pass comes at the next poll
        return count

    async def relieve(self) -> int:
        """Keep the tasks bucket below its cap: above HIGH_WATER of it, free
        finished trees in retention.relief_order (removed solutions' first)
        until it holds less than LOW_WATER. A tree is pruned to its root, which
        stays (a client retrying a request with its request id finds it); a
        root left alone is deleted once finished for KEEP_ROOT_SECONDS. The
        number of trees freed."""
        used, cap = await self.repo.tasks.usage()
        if not cap or used < HIGH_WATER * cap:
            return 0
        now_ns = time.time_ns()
        roots: list[pb.Task] = []
        live: set[tuple[str, str]] = set()
        for domain in await self.repo.model.list_domains():
            found = await self.repo.tasks.all_tasks(domain)
            stored = {t.uuid for t in found}
            # A finished task whose parent is gone (a purge the server undid) counts as a
            # root, once old enough not to be a child stored before its parent.
            roots += [t for t in found if not t.parent or (
                t.parent not in stored and t.status in TASK_ENDED and now_ns - t.updated > ORPHAN_SECONDS * 10**9)]
            live |= {(domain, h.name) for h in await self.repo.solutions.headers(domain)}
        freed = tasks = 0
        for root in relief_order(roots, live):
            try:
                if root.subtasks and not root.parent:
                    tasks += (await self.repo.tasks.prune_tree(root.domain, root)).tasks
                elif root.parent or now_ns - root.updated > KEEP_ROOT_SECONDS * 10**9:
                    tasks += await self.repo.tasks.remove_tree(root.domain, root)
                else:
                    continue
            except (Aborted, NotFound):
                continue
            freed += 1
            if freed % PER_PASS == 0 and (await self.repo.tasks.usage())[0] < LOW_WATER * cap:
                break
        if freed:
            used, _ = await self.repo.tasks.usage()
            log.warning("the tasks bucket neared its cap (ORCH_TASKS_MAX_MB): freed %d finished task trees (%d tasks), "
                        "now %.0f%% of %.0f MB", freed, tasks, 100 * used / cap, cap / 2**20)
        return freed

    async def prune(self) -> int:
        """One pass over every domain, of at most PER_PASS trees (a backlog
        takes several passes, so that polls go on meanwhile); the number pruned."""
        pruned = 0
        now_ns = time.time_ns()
        for domain in await self.repo.model.list_domains():
            for task in await self.repo.tasks.all_tasks(domain):
                if pruned >= PER_PASS:
                    return pruned
                if not due_for_pruning(task, now_ns, self.tree_days):
                    continue
                try:
                    summary = await self.repo.tasks.prune_tree(domain, task)
                except (Aborted, NotFound):
                    continue  # changed or removed meanwhile: the next pass looks again
                pruned += 1
                log.info("pruned task tree %s of %s/%s to its root: %d subtasks (%d completed, %d failed, %d stopped)",
                         task.uuid, domain, task.solution, summary.tasks, summary.completed, summary.failed,
                         summary.stopped)
        return pruned
