"""Tenure: the leases of the solutions this replica runs, renewed while it
runs them; what a dead replica left, taken over; terminations and pauses
passed on to the runs; ended runs released and freed."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from dataclasses import dataclass

from dispatcher.run.executor import Run
from dispatcher.settings import DispatcherSettings
from orchestration.store.leases import LEASE_SECONDS, Lease, Leases, now_ms
from orchestration.store.repository import Repository
from orchestration.v1 import model_pb2 as pb
from orchestration_sdk.status_errors import Aborted, NotFound

log = logging.getLogger("dispatcher")

# Seconds between two reads of the terminations and pauses of the runs.
TERMINATION_POLL = 0.25

# A queued request whose message never arrived is picked up from its lease after this.
QUEUED_GRACE_MS = 5000
# The run stops sending operations this long before its lease would expire
# unless renewed (seconds of this process's monotonic clock): a process that
# stalled past it wakes up knowing it may have been deposed.
LEASE_MARGIN = LEASE_SECONDS / 3
# Seconds between two full garbage collections after runs end (see _collect_garbage).
GC_SECONDS = 2.0


@dataclass
class ActiveRun:
    run: Run
    lease: Lease
    task: asyncio.Task[None] | None = None
    # Monotonic time until which the lease surely holds (set when it was written).
    valid_until: float = 0.0

    def renewed(self, lease: Lease, sent: float) -> None:
        """The lease was written (claimed or renewed) by a request sent at monotonic `sent`."""
        self.lease = lease
        self.valid_until = sent + LEASE_SECONDS - LEASE_MARGIN

    def holds_lease(self) -> bool:
        return time.monotonic() < self.valid_until


class Tenure:
    """The replica's part that holds leases (a part of Dispatcher)."""

    settings: DispatcherSettings
    leases: Leases
    repo: Repository
    runs: dict[str, ActiveRun]
    _collected: float

    async def _try_start(self, lease: Lease) -> bool:
        raise NotImplementedError

    async def _recover_loop(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            try:
                for lease in await self.leases.all():
                    if lease.key in self.runs:
                        continue
                    if lease.claimable_by(self.settings.replica, now_ms(), QUEUED_GRACE_MS):
                        log.info("taking over solution %s (task %s)", lease.key, lease.record.task)
                        await self._try_start(lease)
            except Exception:  # noqa: BLE001 - NATS may be away; try again
                log.debug("recovery scan failed", exc_info=True)

    async def _end(self, active: ActiveRun) -> None:
        request = active.lease.record.request
        with contextlib.suppress(Aborted, NotFound):
            await self.leases.release(active.lease)
        with contextlib.suppress(Exception):
            await self.leases.clear_terminations(request.domain, request.task)
        if self.runs.get(active.lease.key) is active:  # (a rollback queued over it may run already)
            del self.runs[active.lease.key]
        self._collect_garbage()

    def _collect_garbage(self) -> None:
        """Free an ended run at once. Its objects form reference cycles (run,
        scheduler, settler, task book), which only a full collection frees,
        and most of their memory is protobuf's, outside what Python counts
        towards its next collection: left alone, ended runs pile up (a soak
        of 100 deploys grew the dispatcher by a third). At most one full
        collection every GC_SECONDS."""
        now = time.monotonic()
        if now - self._collected >= GC_SECONDS:
            self._collected = now
            gc.collect()

    async def _follow_pauses(self, paused: dict[tuple[str, str], pb.SolutionPause]) -> None:
        """Pause the runs of paused solutions (and say so), go on with the others."""
        for active in list(self.runs.values()):
            request = active.lease.record.request
            scheduler = active.run.scheduler
            if (request.domain, request.solution) in paused:
                if not scheduler.paused:
                    scheduler.pause()
                    log.info("paused %s/%s (task %s)", request.domain, request.solution, request.task,
                             extra={"task_id": request.task, "solution": request.solution})
                    await active.run.store_progress()  # a paused solution's records say where it stopped
                await self.repo.pauses.acknowledge(request.domain, request.solution, request.task)
            elif scheduler.paused and not active.run.pausing:
                scheduler.unpause()
                log.info("resumed %s/%s (task %s)", request.domain, request.solution, request.task,
                         extra={"task_id": request.task, "solution": request.solution})

    async def _renew_loop(self) -> None:
        while True:
            await asyncio.sleep(LEASE_SECONDS / 3)
            # All at once: one slow renewal must not make the others late.
            await asyncio.gather(*(self._renew(key, active) for key, active in list(self.runs.items())))

    async def _renew(self, key: str, active: ActiveRun) -> None:
        sent = time.monotonic()
        try:
            active.renewed(await self.leases.claim(active.lease, self.settings.replica), sent)
        except Aborted:
            log.warning("lost the lease of %s; another dispatcher continues", key)
            active.run.lose_lease()
        except Exception:  # noqa: BLE001 - NATS away: retry next round, unless the lease ran out
            log.debug("renewing %s failed", key, exc_info=True)
            if not active.holds_lease():
                log.warning("the lease of %s ran out while NATS was away; the run stops and resumes", key)
                active.run.lose_lease()

    async def _termination_loop(self) -> None:
        # Every TERMINATION_POLL s: a terminate or pause takes effect within
        # about that (plus one read) even under another domain's storm.
        while True:
            await asyncio.sleep(TERMINATION_POLL)
            if self.runs:
                try:
                    await self._follow_pauses(await self.repo.pauses.all())
                except Exception:  # noqa: BLE001
                    log.debug("reading pauses failed", exc_info=True)
            for active in list(self.runs.values()):
                request = active.lease.record.request
                try:
                    for termination in await self.leases.terminations(request.domain, request.task):
                        await active.run.terminate(termination.task, termination.actor)
                except Exception:  # noqa: BLE001
                    log.debug("reading terminations failed", exc_info=True)
