"""How a change ended, written into its revision, and what the solution's
failure policy does then: a failed change of a solution whose policy is
`rollback` is marked bad and rolled back to the last revision that
succeeded, by a request queued over the ended run's lease.

Idempotent, so that a dispatcher that takes over a run that ended but was
not concluded (its owner died in between) concludes it the same way: the
outcome is written once, the terminate revision and the rollback request
have ids derived from what they follow (a second submission is the same
request)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from orchestration.model import revisions
from orchestration.model.lifecycle import TASK_ENDED
from orchestration.store.leases import Leases
from orchestration.store.pauses import APPROVAL
from orchestration.store.repository import Repository
from orchestration.store.requests import policy_rollback
from orchestration.v1 import model_pb2 as pb
from orchestration.v1 import records_pb2 as rpb
from orchestration_sdk.status_errors import NotFound

log = logging.getLogger("dispatcher")

async def conclude(repo: Repository, leases: Leases, request: rpb.Request, status: int, error: str) -> rpb.Request | None:
    """Write the outcome of the request's revision (from its root task's final
    `status`); the rollback the failure policy asks for, to be submitted
    (None when there is none)."""
    if request.HasField("reconcile"):
        return None
    listed = [v.value for v in await repo.revisions.all(request.domain, request.solution)]
    revision = next((r for r in listed if r.request == request.uuid), None)
    if revision is None:
        return None  # the request was never planned: it changed nothing
    domain, solution, number = request.domain, request.solution, revision.number
    if status == pb.TASK_STATUS_COMPLETED:
        await repo.revisions.end(domain, solution, number, pb.REVISION_OUTCOME_SUCCEEDED)
        return None
    if status == pb.TASK_STATUS_TERMINATED:
        if revision.outcome in revisions.ENDED:
            return None  # rejected, or concluded already: no terminate revision of it
        await _terminated(repo, leases, request, revision)
        return None
    target = None
    if revision.desired.on_failure == pb.FAILURE_POLICY_ROLLBACK and revision.change not in ("rollback", "remove"):
        target = revisions.last_succeeded(listed, number)
    ended = await repo.revisions.end(domain, solution, number, pb.REVISION_OUTCOME_FAILED, error, bad=target is not None)
    current = ended or revision
    if target is None or not current.bad or current.outcome != pb.REVISION_OUTCOME_FAILED:
        return None
    rollback = policy_rollback(domain, solution, number, target.number, f"revision {number} failed: {current.error or error}",
                               request.traceparent)
    log.info("revision %d of %s/%s failed; rolling back to revision %d", number, domain, solution, target.number,
             extra={"task_id": rollback.task, "solution": solution})
    return rollback


# Who rejects a change nobody decided on in time.
APPROVAL_TIMEOUT = "approval-timeout"
# Seconds between two looks at the approvers' decision.
APPROVAL_POLL = 0.25


class Rejected(Exception):
    """An approver rejected the change: nothing of it runs."""


class AwaitingApproval(Exception):
    """The change awaits an approver: the run waits for the decision on its own (see Dispatcher)."""

    def __init__(self, revision: pb.Revision) -> None:
        super().__init__(f"revision {revision.number} awaits approval")
        self.revision = revision


class LeaseGone(Exception):
    """The run lost its lease while it waited: the next owner waits on."""


async def await_approval(repo: Repository, request: rpb.Request, revision: pb.Revision, stopped: Callable[[], bool],
                         lost: Callable[[], bool]) -> None:
    """Hold the change until an approver decides: the solution is paused (by
    "approval", saying what awaits whom) and the decision read until it comes.
    Returns when approved; Rejected when rejected (the revision says so) or
    when the change was terminated meanwhile; LeaseGone when the run lost its
    lease (nothing written: the next owner waits on). The approval pause ends
    with the wait, whatever ends it (but a lost lease)."""
    domain, solution, number = request.domain, request.solution, revision.number
    if revision.outcome == pb.REVISION_OUTCOME_REJECTED:
        raise Rejected(revision.error or f"revision {number} was rejected")
    await repo.pauses.pause(domain, solution, APPROVAL,
                            f"revision {number} ({revision.summary}, by {revision.actor}) awaits approval: "
                            f"`orch solution approve {domain} {solution} --revision {number}` or `reject`")
    log.info("revision %d of %s/%s awaits approval", number, domain, solution, extra={"task_id": request.task})
    try:
        decision = await _decision(repo, domain, solution, number, revision.created_unix_ms, stopped, lost)
    finally:
        if not lost():
            paused = await repo.pauses.get(domain, solution)
            if paused is not None and paused.value.actor == APPROVAL:
                await repo.pauses.resume(domain, solution)
    if decision.approved:
        return
    why = f": {decision.reason}" if decision.reason else ""
    message = f"rejected by {decision.actor}{why}"
    await repo.revisions.end(domain, solution, number, pb.REVISION_OUTCOME_REJECTED, message,
                             replace=frozenset({pb.REVISION_OUTCOME_AWAITING_APPROVAL}))
    raise Rejected(message)


async def _decision(repo: Repository, domain: str, solution: str, number: int, created_ms: int,
                    stopped: Callable[[], bool], lost: Callable[[], bool]) -> rpb.ApprovalDecision:
    """The approvers' decision on revision `number`, once there is one (or the time-out's)."""
    header = (await repo.solutions.get_solution_header(domain, solution)).value
    timeout = header.approval_timeout_seconds
    deadline = created_ms / 1000 + timeout if timeout else None
    while True:
        decision = await repo.decisions.get(domain, solution)
        if decision is not None and decision.revision == number:
            return decision
        if lost():
            raise LeaseGone()
        if stopped():
            await repo.revisions.end(domain, solution, number, pb.REVISION_OUTCOME_TERMINATED,
                                     "terminated while it awaited approval",
                                     replace=frozenset({pb.REVISION_OUTCOME_AWAITING_APPROVAL}))
            raise Rejected(f"revision {number} was terminated while it awaited approval")
        if deadline is not None and time.time() >= deadline:
            return rpb.ApprovalDecision(revision=number, approved=False, actor=APPROVAL_TIMEOUT,
                                        reason=f"nobody decided within {timeout} s")
        await asyncio.sleep(APPROVAL_POLL)


async def close_previous(repo: Repository, leases: Leases, request: rpb.Request) -> None:
    """Conclude the change before `request` if its owner could not: a lease
    passes to the next request once the root task has ended, and the next
    owner's fence may then stop the previous owner's conclusion (a change
    superseded by a rollback while its last operations finished)."""
    listed = await repo.revisions.all(request.domain, request.solution)
    running = [v.value for v in listed if v.value.outcome == pb.REVISION_OUTCOME_RUNNING and v.value.request != request.uuid]
    for revision in running:
        if not revision.task:
            continue
        try:
            root = (await repo.tasks.get_task(request.domain, revision.task)).value
        except NotFound:
            continue
        if root.status not in TASK_ENDED:
            continue
        termination = await root_termination(leases, request.domain, root.uuid)
        outcome, error = revisions.outcome_of(root.status, root.error, termination)
        await repo.revisions.end(request.domain, request.solution, revision.number, outcome, error)


async def _terminated(repo: Repository, leases: Leases, request: rpb.Request, revision: pb.Revision) -> None:
    """A change stopped by a terminate of its root task (superseded, when a
    rollback asked for it); a terminate by an operator is a revision of its own."""
    termination = await root_termination(leases, request.domain, request.task)
    outcome, error = revisions.outcome_of(pb.TASK_STATUS_TERMINATED, "", termination)
    await repo.revisions.end(request.domain, request.solution, revision.number, outcome, error)
    if outcome == pb.REVISION_OUTCOME_SUPERSEDED:
        return
    asked = termination or rpb.Termination(actor="operator")
    stop = pb.Revision(
        domain=request.domain, solution=request.solution, change="terminate",
        summary=f"terminate revision {revision.number} (task {request.task})", actor=asked.actor,
        reason=asked.reason, created_unix_ms=asked.requested // 1_000_000, request=f"terminate-{request.task}",
        desired=revision.desired, instance_targets=revision.instance_targets,
        outcome=pb.REVISION_OUTCOME_SUCCEEDED, ended_unix_ms=asked.requested // 1_000_000,
    )
    await repo.revisions.record(stop)


async def root_termination(leases: Leases, domain: str, root: str) -> rpb.Termination | None:
    """The termination asked for a root task itself (None when none is, or no longer, on record)."""
    asked = [t for t in await leases.terminations(domain, root) if t.task == root]
    return asked[0] if asked else None
