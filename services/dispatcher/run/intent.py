"""Turning a request into the solution's stored intent (idempotent: applying
the same request twice stores the same records, which crash recovery needs)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Awaitable, Callable

from dispatcher.run.snapshot import Intent, load_records, write_intent
from orchestration.model import planner, revisions
from orchestration.store.repository import Repository
from orchestration.v1 import model_pb2 as pb
from orchestration.v1 import records_pb2 as rpb
from orchestration_sdk.status_errors import FailedPrecondition, NotFound

Design = tuple[pb.Architecture, dict[tuple[str, str], pb.Component]]


def read_design(repo: Repository, request: rpb.Request) -> asyncio.Future[Design] | None:
    """The reads of the architecture a deploy asks for and of the components
    it uses, started now (None for other requests). Reads of the model only:
    the dispatcher starts them before it owns the solution, so that they are
    done by the time it does."""
    if not request.HasField("deploy"):
        return None
    reads = asyncio.ensure_future(_design(repo, request))
    # A failure is reported by apply_request; one nobody awaits (the run did
    # not start) is not an error.
    reads.add_done_callback(lambda done: done.cancelled() or done.exception())
    return reads


# Waits until an approver approves the revision (or raises when it is rejected).
Approve = Callable[[pb.Revision], Awaitable[None]]


async def apply_request(repo: Repository, request: rpb.Request, design: asyncio.Future[Design] | None = None,
                        approve: Approve | None = None) -> Intent:
    """Store what the request asks for in the solution's records (instance
    records are left to the run, see Intent). The one place a request is
    planned: the cluster records written here carry everything a run needs.
    `design`: read_design's reads, when started already. A change of a
    solution that requires approval is recorded (awaiting approval) and
    waits for `approve` before anything of it is written."""
    later = planner.Additions()
    kind = request.WhichOneof("change")
    if kind == "deploy":
        if design is None:
            design = read_design(repo, request)
        assert design is not None
        # Independent reads, at once: a request's first operation waits for them.
        records, (architecture, catalog) = await asyncio.gather(load_records(repo, request.domain, request.solution), design)
    else:
        records = await load_records(repo, request.domain, request.solution)
    current = records.tree()
    if kind == "deploy":
        desired = planner.with_sizes(planner.desired_solution(request.domain, request.solution, architecture, catalog),
                                     request.deploy.sizes)
        desired.on_failure = request.deploy.on_failure or (current.on_failure if current else pb.FAILURE_POLICY_HOLD)
        desired.approval_required = (request.deploy.approval == pb.APPROVAL_REQUIRED if request.deploy.approval
                                     else bool(current and current.approval_required))
        desired.approval_timeout_seconds = _timeout(request.deploy.approval_timeout_seconds, current)
        wanted = planner.merge(current, desired, later=later)
    else:
        if current is None:
            raise NotFound(f"solution '{request.domain}/{request.solution}' not found")
        if kind == "set_cluster":
            change = request.set_cluster
            size = change.size if change.HasField("size") else None
            wanted = planner.set_cluster(current, change.element, change.cluster, size, change.state, later=later)
        elif kind == "set_solution":
            wanted = planner.set_solution(current, request.set_solution.state)
        elif kind == "set_instance":
            one = request.set_instance
            wanted = planner.set_instance(current, one.element, one.cluster, one.instance, one.state)
        elif kind == "remove":
            wanted = planner.teardown(current)
        elif kind in ("reconcile", "resume"):
            wanted = current
        elif kind == "rollback":
            wanted = await _rollback(repo, request, current, later)
        elif kind == "set_policy":
            wanted = pb.Solution()
            wanted.CopyFrom(current)
            wanted.on_failure = request.set_policy.on_failure or current.on_failure
            if request.set_policy.approval:
                wanted.approval_required = request.set_policy.approval == pb.APPROVAL_REQUIRED
            wanted.approval_timeout_seconds = _timeout(request.set_policy.approval_timeout_seconds, current)
        else:
            raise FailedPrecondition(f"request {request.uuid} asks for no change this dispatcher knows")
    if kind != "reconcile":
        _end_hold(wanted)
    if planner.missing_design(wanted):
        wanted = await _backfill(repo, request.domain, wanted, current)
    if approve is not None and revisions.needs_approval(request, current):
        awaiting = await _record_revision(repo, request, wanted, pb.REVISION_OUTCOME_AWAITING_APPROVAL)
        if awaiting is not None and awaiting.outcome != pb.REVISION_OUTCOME_RUNNING:
            await approve(awaiting)
            await repo.revisions.approved(request.domain, request.solution, awaiting.number)
    # The cluster that grows first is written first; the run writes the rest
    # after its first operation has left.
    first = next(iter(later.counts), None)
    # The revision as planned now; the run records it once its first
    # operation has left (its scan, write and announcement are round trips
    # the operation need not wait for), and before it ends (its conclusion
    # writes into it). A resumed run finds it recorded, or records it.
    revision = _revision(request, wanted)
    intent = await write_intent(repo, request.domain, records, wanted, first)
    intent.additions = later.counts
    intent.revision = None if revision is None else functools.partial(_store_revision, repo, request, revision)
    return intent


async def _record_revision(repo: Repository, request: rpb.Request, wanted: pb.Solution,
                           outcome: pb.RevisionOutcome = pb.REVISION_OUTCOME_RUNNING) -> pb.Revision | None:
    """Record the request's revision (None for a compensation, which changes
    nothing that was asked); the one stored."""
    record = _revision(request, wanted, outcome)
    return None if record is None else await _store_revision(repo, request, record)


def _revision(request: rpb.Request, wanted: pb.Solution,
              outcome: pb.RevisionOutcome = pb.REVISION_OUTCOME_RUNNING) -> pb.Revision | None:
    """The request's revision, not stored yet (None for a compensation)."""
    if request.HasField("reconcile"):
        return None
    change, summary = revisions.describe(request)
    desired, apart = revisions.desired_of(wanted)
    return pb.Revision(
        domain=request.domain, solution=request.solution, change=change, summary=summary, actor=request.actor,
        reason=request.reason, created_unix_ms=request.accepted // 1_000_000, request=request.uuid,
        client_request_id=request.client_request_id, task=request.task, desired=desired, instance_targets=apart,
        restores=request.rollback.to, outcome=outcome,
    )


async def _store_revision(repo: Repository, request: rpb.Request, record: pb.Revision) -> pb.Revision:
    """Store a revision (see RevisionStore.record); the one stored."""
    stored = await repo.revisions.record(record)
    if request.rollback.failed:
        # The failed change is rolled back from now on (it stays bad).
        await repo.revisions.end(request.domain, request.solution, request.rollback.failed,
                                 pb.REVISION_OUTCOME_ROLLED_BACK, request.reason, bad=True,
                                 replace=frozenset({pb.REVISION_OUTCOME_FAILED, pb.REVISION_OUTCOME_SUCCEEDED}))
    return stored


async def _rollback(repo: Repository, request: rpb.Request, current: pb.Solution, later: planner.Additions) -> pb.Solution:
    """The solution with an earlier revision's desired state put back."""
    target = (await repo.revisions.get(request.domain, request.solution, request.rollback.to)).value
    if target.outcome not in revisions.RESTORABLE:
        raise FailedPrecondition(f"revision {target.number} of solution '{request.domain}/{request.solution}' "
                                 "never ran: nothing of it can be put back")
    if not target.desired.elements:
        raise FailedPrecondition(f"revision {target.number} of solution '{request.domain}/{request.solution}' "
                                 f"asks for nothing to run ({target.summary}); roll back to another revision")
    return revisions.restore(current, target, later)


def _timeout(asked: int, current: pb.Solution | None) -> int:
    """The approval time-out a request leaves: as asked (-1: none), or (0) as it was."""
    if asked:
        return max(0, asked)
    return current.approval_timeout_seconds if current is not None else 0


def _end_hold(solution: pb.Solution) -> None:
    """An operator's request ends a hold, and with it the verdict that a
    failure was permanent (the monitor never compensates a held solution)."""
    solution.ClearField("hold")
    for element in solution.elements:
        for cluster in element.clusters:
            for instance in cluster.instances:
                instance.permanent = False


async def _design(repo: Repository, request: rpb.Request) -> Design:
    """The architecture to deploy and the components it uses."""
    architecture = await repo.model.get_architecture(request.domain, request.deploy.architecture, request.deploy.version)
    used = {(element.component, cluster.version) for element in architecture.elements for cluster in element.clusters}
    return architecture, await _components(repo, request.domain, used)


async def _backfill(repo: Repository, domain: str, wanted: pb.Solution, current: pb.Solution | None) -> pb.Solution:
    """Cluster records stored before records carried their controller and
    parameters get them once: from the architecture the solution was
    deployed from, else (a cluster that left it) the controller from the
    catalog. What cannot be found stays empty; its operations then fail with
    "no controller", as they would have before."""
    source = current if current is not None else wanted
    design = pb.Solution()
    with contextlib.suppress(NotFound):
        architecture = await repo.model.get_architecture(domain, source.architecture or source.name, source.version)
        used = {(e.component, c.version) for e in architecture.elements for c in e.clusters}
        design = planner.desired_solution(domain, wanted.name, architecture, await _components(repo, domain, used))
    filled = planner.fill_design(wanted, design)
    rest = {(e.component, c.version) for e in filled.elements for c in e.clusters if not c.controller}
    if rest:
        found = await _components(repo, domain, rest)
        for element in filled.elements:
            for cluster in element.clusters:
                component = found.get((element.component, cluster.version))
                if not cluster.controller and component is not None:
                    cluster.controller = component.controller
    return filled


async def _components(repo: Repository, domain: str, keys: set[tuple[str, str]]) -> dict[tuple[str, str], pb.Component]:
    """The components named by keys (name, version), read one by one at once:
    fewer round trips than listing the domain's catalog. One missing from
    the catalog is left out (the planner names it)."""

    async def component(name: str, version: str) -> pb.Component | None:
        try:
            return await repo.model.get_component(domain, name, version)
        except NotFound:
            return None

    ordered = sorted(keys)
    found = await asyncio.gather(*(component(name, version) for name, version in ordered))
    return {key: c for key, c in zip(ordered, found) if c is not None}
