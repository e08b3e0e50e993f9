"""Pruning of finished task trees (orchestration.model.retention): every
`prune_every` seconds the monitor prunes each finished tree older than the
tree retention to its root and a summary."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from orchestration.model.errors import Aborted, NotFound
from orchestration.model.retention import due_for_pruning
from orchestration.store.repository import Repository

log = logging.getLogger("monitor.pruning")
# Trees pruned in one pass at most.
PER_PASS = 20


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
