"""Compensation: a RECONCILE request for a solution whose instances are not
where their targets say, with back-off per solution so that a component that
keeps failing does not cause a storm of tasks, and an end: a solution that
N compensations did not converge, or whose failure a controller called
permanent, is marked degraded and left alone until an operator's request."""

from __future__ import annotations

import logging
import time
import uuid as uuidlib
from dataclasses import dataclass, field

from nats.js import JetStreamContext
from opentelemetry.trace import SpanKind

from orchestration.model import revisions
from orchestration.store.events import EventRecorder, new_event
from orchestration.store.leases import Leases
from orchestration.store.repository import Repository
from orchestration.store.requests import new_request, policy_rollback, submit
from orchestration.store.subjects import Subjects
from orchestration.v1 import model_pb2 as pb
from orchestration.v1 import records_pb2 as rpb
from orchestration_sdk.runtime import telemetry
from orchestration_sdk.runtime.backoff import Backoff
from orchestration_sdk.status_errors import Aborted, FailedPrecondition

log = logging.getLogger("monitor.compensation")
_tracer = telemetry.tracer("monitor")

SOURCE = "monitor"
SolutionKey = tuple[str, str]


@dataclass
class Pacing:
    """After n consecutive compensations of a solution the next waits
    interval * 2^n seconds (capped: the one Backoff rule, starting at twice
    the interval); a converged solution starts over. Times are passed in
    (monotonic seconds), so tests need no clock."""

    interval: float
    cap: float = 300.0
    _streak: dict[SolutionKey, int] = field(default_factory=dict)
    _not_before: dict[SolutionKey, float] = field(default_factory=dict)

    def allowed(self, key: SolutionKey, now: float) -> bool:
        return now >= self._not_before.get(key, 0.0)

    def streak(self, key: SolutionKey) -> int:
        """Compensations of the solution since it last converged."""
        return self._streak.get(key, 0)

    def compensated(self, key: SolutionKey, now: float) -> float:
        """Note a compensation; the seconds until the next one is allowed."""
        streak = self._streak.get(key, 0) + 1
        self._streak[key] = streak
        wait = Backoff(first=2 * self.interval, maximum=self.cap).delay(streak)
        self._not_before[key] = now + wait
        return wait

    def converged(self, key: SolutionKey) -> None:
        self._streak.pop(key, None)
        self._not_before.pop(key, None)

    def forget_except(self, keys: set[SolutionKey]) -> None:
        """Drop the state of solutions that no longer exist."""
        for key in [k for k in self._streak if k not in keys]:
            self.converged(key)


# How long after a change succeeded an instance failing its status check
# rolls the change back (with the `rollback` failure policy); later, a
# failure is repaired as any other, not blamed on the change.
ROLLBACK_WINDOW = 600.0


def rollback_for(listed: list[pb.Revision], now_ms: int) -> tuple[pb.Revision, pb.Revision] | None:
    """(the change to roll back, the revision to roll back to) when the
    newest revision is a change that succeeded within ROLLBACK_WINDOW under
    the `rollback` policy and an earlier one succeeded; else None."""
    if not listed:
        return None
    newest = max(listed, key=lambda r: r.number)
    if (newest.desired.on_failure != pb.FAILURE_POLICY_ROLLBACK or newest.outcome != pb.REVISION_OUTCOME_SUCCEEDED
            or newest.change in ("rollback", "remove", "terminate", "policy")
            or now_ms - newest.ended_unix_ms > ROLLBACK_WINDOW * 1000):
        return None
    target = revisions.last_succeeded(listed, newest.number)
    return (newest, target) if target is not None else None


class Compensator:
    """Submits RECONCILE requests through the internal channel, and the
    rollbacks of the `rollback` failure policy."""

    def __init__(self, repo: Repository, leases: Leases, js: JetStreamContext, subjects: Subjects) -> None:
        self._repo, self._leases, self._js, self._subjects = repo, leases, js, subjects

    async def submit(self, domain: str, solution: str, reason: str) -> str | None:
        """The root task id, or None when the solution turned out to be busy."""
        with _tracer.start_as_current_span(f"compensate {solution}", kind=SpanKind.PRODUCER) as span:
            span.set_attribute("orch.domain", domain)
            span.set_attribute("orch.solution", solution)
            request = new_request(rpb.Request.Reconcile(), domain, solution, SOURCE, telemetry.traceparent(span))
            return await self._submit(request, reason)

    async def roll_back(self, domain: str, solution: str, failed: pb.Revision, target: pb.Revision, reason: str) -> str | None:
        """Roll a change back whose instances failed their status check after
        it (the same request as the dispatcher's for a failed change: one of
        them is accepted)."""
        with _tracer.start_as_current_span(f"roll back {solution}", kind=SpanKind.PRODUCER) as span:
            request = policy_rollback(domain, solution, failed.number, target.number,
                                      f"revision {failed.number} failed its status check after it: {reason}",
                                      telemetry.traceparent(span))
            return await self._submit(request, f"rolling back revision {failed.number} to {target.number}: {reason}")

    async def _submit(self, request: rpb.Request, reason: str) -> str | None:
        domain, solution = request.domain, request.solution
        try:
            task = await submit(self._repo, self._leases, self._js, self._subjects, request)
        except FailedPrecondition:
            return None  # a task started meanwhile: it converges the solution, or we try later
        log.info("compensating %s/%s with task %s: %s", domain, solution, task, reason, extra={"task_id": task, "solution": solution})
        return task


async def mark_degraded(repo: Repository, leases: Leases, recorder: EventRecorder, domain: str, solution: str,
                        reason: str) -> pb.SolutionHold | None:
    """Hold the solution as degraded and record a DEGRADED event; None when
    it was not written (a request came in meanwhile: it decides now)."""
    header = await repo.solutions.get_solution_header(domain, solution)
    if header.value.hold.kind or await leases.get(domain, solution) is not None:
        return None
    hold = pb.SolutionHold(kind=pb.HOLD_KIND_DEGRADED, reason=reason, actor=SOURCE,
                           since_unix_ms=int(time.time() * 1000))
    header.value.hold.CopyFrom(hold)
    try:
        # Compare-and-set: a request that rewrote the header since wins.
        await repo.solutions.put_solution_header(domain, header.value, header.revision)
    except Aborted:
        return None
    log.warning("%s/%s degraded: %s; compensation stops until a request for it (orch solution resume)",
                domain, solution, reason, extra={"solution": solution})
    task = pb.Task(type=pb.TASK_TYPE_SOLUTION, domain=domain, solution=solution, uuid=str(uuidlib.uuid4()),
                   state=header.value.state)
    await recorder.record(new_event(task, pb.EVENT_TYPE_DEGRADED, f"solution {solution} degraded: {reason}"), task,
                          state=header.value.state)
    return hold
