"""A run's side of its elements' rollouts (a part of Run): a gate for each
element whose version changes under a rollout strategy (see
dispatcher.run.rollout, the rules), the status check of each batch with
the controller, and the pause of the solution when a batch waits for
approval or turns unhealthy."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from dispatcher.run import operations
from dispatcher.run.rollout import RolloutGate
from dispatcher.run.scheduler import Scheduler
from dispatcher.run.state import ClusterSlot, SolutionState
from dispatcher.run.tasks import TaskBook
from orchestration.model.lifecycle import ACTIVE, state_name
from orchestration.model.rollouts import strategy
from orchestration.store.pauses import ROLLOUT
from orchestration.v1 import controller_pb2 as cpb
from orchestration.v1 import model_pb2 as pb

if TYPE_CHECKING:
    from dispatcher.run.executor import RunContext

log = logging.getLogger("dispatcher")
S = pb.TaskStatus


class Rollouts:
    """Rollout gates, health checks and approvals of a run."""

    domain: str
    solution: str
    state: SolutionState
    scheduler: Scheduler
    book: TaskBook
    ctx: RunContext
    rollouts: bool
    on_failure: int
    lost: bool
    # The run paused itself and its pause record is still being written: not to be unpaused meanwhile.
    pausing: bool = False

    async def store_progress(self) -> None:
        raise NotImplementedError  # the run's (see Run.store_progress)

    def _over(self) -> bool:
        """The run stopped (or lost its lease): a late callback does nothing."""
        return self.lost or bool(self.scheduler.stopping)

    def _gate_rollouts(self, elements: dict[str, pb.Element]) -> None:
        """A rollout gate for each element with a rollout strategy whose version
        changes in this run (a cluster leaving, its replacement coming); none
        for a rollback (`rollouts` False), which puts the old version back at once."""
        for name, element in elements.items() if self.rollouts else ():
            if not element.HasField("rollout") or element.remove:
                continue
            clusters = [c for c in self.state.clusters.values() if c.element == name]
            new = [c for c in clusters if not c.record.remove and c.record.target == ACTIVE]
            old = [c for c in clusters if c.record.remove]
            if len(new) != 1 or not old:
                continue
            for cluster in old:
                cluster.rolled_out = True
            self.scheduler.gates[name] = RolloutGate(
                name, strategy(element.rollout, new[0].record.size), new[0], old, self.state,
                on_approval=self._wait_for_approval, verify=functools.partial(self._verify, new[0]),
                on_unhealthy=self._unhealthy)

    def _verify(self, cluster: ClusterSlot, uuids: list[str], verdict: Callable[[bool, str], None]) -> None:
        """Ask the cluster's controller for the real state of a batch's instances;
        verdict(healthy, what is wrong) once it answers."""
        async def ask() -> None:
            ref = operations.template(cluster, self.domain, self.solution).instance
            refs = []
            for uuid in uuids:
                one = cpb.InstanceReference()
                one.CopyFrom(ref)
                one.uuid = uuid
                refs.append(one)
            states: dict[str, int] | None = None
            for attempt in range(3):  # a controller replica restarting is not an unhealthy batch
                try:
                    states = await self.ctx.pool.status(cluster.controller, refs, timeout=self.ctx.settings.operation_timeout)
                    break
                except Exception as err:  # noqa: BLE001 - an unanswered check is no proof of health
                    failure = type(err).__name__
                    await asyncio.sleep(1.0 * (attempt + 1))
            if self._over():
                return
            if states is None:
                verdict(False, f"its controller did not answer the status check ({failure})")
                return
            wrong = [f"{u} is {state_name(states[u]) if u in states else 'unknown to its controller'}"
                     for u in uuids if states.get(u) != ACTIVE]
            verdict(not wrong, ", ".join(wrong[:3]) + (f" and {len(wrong) - 3} more" if len(wrong) > 3 else ""))

        checking = asyncio.ensure_future(ask())
        checking.add_done_callback(lambda done: done.cancelled() or done.exception())

    def _unhealthy(self, reason: str) -> None:
        """A rollout batch failed its status check: the change fails when the
        solution's failure policy rolls back, else the rollout pauses (resume
        checks the batch again)."""
        if self._over():
            return
        log.warning("%s/%s: %s", self.domain, self.solution, reason, extra={"task_id": self.book.root})
        if self.on_failure == pb.FAILURE_POLICY_ROLLBACK:
            self.scheduler.stop(reason, S.TASK_STATUS_FAILED)
            return
        self._wait_for_approval(f"{reason}; resume checks it again, a rollback undoes the change")

    def _wait_for_approval(self, reason: str) -> None:
        """A rollout batch is done and the next needs an operator: the solution
        is paused (the pause is followed like an operator's; resume goes on).
        The run pauses at once and is not unpaused before its pause record is
        written (retried through NATS trouble)."""
        if self._over():
            return
        self.scheduler.pause()
        self.pausing = True

        async def pause_and_say_so() -> None:
            try:
                for attempt in range(1, 60):
                    try:
                        await self.store_progress()  # the records say where the rollout stopped
                        await self.ctx.repo.pauses.pause(self.domain, self.solution, ROLLOUT, reason)
                        await self.ctx.repo.pauses.acknowledge(self.domain, self.solution, self.book.root)
                        return
                    except Exception:  # noqa: BLE001 - NATS away: the run stays paused meanwhile
                        if self._over():
                            return
                        await asyncio.sleep(min(5.0, 0.1 * attempt))
            finally:
                self.pausing = False

        waiting = asyncio.ensure_future(pause_and_say_so())
        waiting.add_done_callback(lambda done: done.cancelled() or done.exception())
