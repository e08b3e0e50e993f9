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

import logging
from orchestration.model import revisions
from orchestration.store.leases import Leases
from orchestration.store.repository import Repository
from orchestration.store.requests import new_request
from orchestration.v1 import model_pb2 as pb
from orchestration.v1 import records_pb2 as rpb

log = logging.getLogger("dispatcher")

# Who asks for a rollback the failure policy makes (its actor and source).
FAILURE_POLICY = "failure-policy"

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
        await _terminated(repo, leases, request, revision)
        return None
    target = None
    if revision.desired.on_failure == pb.FAILURE_POLICY_ROLLBACK and revision.change not in ("rollback", "remove"):
        target = revisions.last_succeeded(listed, number)
    ended = await repo.revisions.end(domain, solution, number, pb.REVISION_OUTCOME_FAILED, error, bad=target is not None)
    current = ended or revision
    if target is None or not current.bad or current.outcome != pb.REVISION_OUTCOME_FAILED:
        return None
    rollback = new_request(rpb.Request.Rollback(to=target.number, failed=number), domain, solution, FAILURE_POLICY,
                           request.traceparent, f"rollback-of-revision-{number}", FAILURE_POLICY,
                           f"revision {number} failed: {current.error or error}")
    log.info("revision %d of %s/%s failed; rolling back to revision %d", number, domain, solution, target.number,
             extra={"task_id": rollback.task, "solution": solution})
    return rollback


async def _terminated(repo: Repository, leases: Leases, request: rpb.Request, revision: pb.Revision) -> None:
    """A change stopped by a terminate of its root task (superseded, when a
    rollback asked for it); a terminate by an operator is a revision of its own."""
    asked = [t for t in await leases.terminations(request.domain, request.task) if t.task == request.task]
    termination = asked[0] if asked else rpb.Termination(actor="operator")
    why = f": {termination.reason}" if termination.reason else ""
    if termination.superseded:
        await repo.revisions.end(request.domain, request.solution, revision.number, pb.REVISION_OUTCOME_SUPERSEDED,
                                 f"superseded by a rollback asked by {termination.actor}{why}")
        return
    await repo.revisions.end(request.domain, request.solution, revision.number, pb.REVISION_OUTCOME_TERMINATED,
                             f"terminated by {termination.actor}{why}")
    stop = pb.Revision(
        domain=request.domain, solution=request.solution, change="terminate",
        summary=f"terminate revision {revision.number} (task {request.task})", actor=termination.actor,
        reason=termination.reason, created_unix_ms=termination.requested // 1_000_000,
        request=f"terminate-{request.task}", desired=revision.desired, instance_targets=revision.instance_targets,
        outcome=pb.REVISION_OUTCOME_SUCCEEDED, ended_unix_ms=termination.requested // 1_000_000,
    )
    await repo.revisions.record(stop)
