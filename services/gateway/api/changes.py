"""The requests that change a solution (deploy, resize, state changes,
removal, resume, rollback, failure policy), checked here so that a mistake
is answered at once, then sent to the dispatchers through the internal
channel (planned once, by the dispatcher that accepts them); and the
solution's history of revisions."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import grpc

from gateway.api import previews
from gateway.api.access import caller
from gateway.api.channel import Channel
from orchestration.model import planner, revisions
from orchestration.model.access import check
from orchestration.model.lifecycle import ACTIVE, INACTIVE, INITIAL, TASK_ENDED, outcome_name
from orchestration.model.names import check_name, check_reason
from orchestration.store.access import DomainPolicies
from orchestration.store.pauses import APPROVAL, ROLLOUT
from orchestration.store.repository import Repository
from orchestration.v1 import gateway_pb2 as gw
from orchestration.v1 import model_pb2 as pb
from orchestration.v1 import records_pb2 as rpb
from orchestration_sdk.status_errors import DeadlineExceeded, FailedPrecondition, InvalidArgument, NotFound, PermissionDenied

# How long a rollback waits for the change it supersedes to stop (its
# running operations finish; none of its others start).
SUPERSEDE_WAIT = 60.0


def find_element(solution: pb.Solution, domain: str, name: str) -> pb.Element:
    """The named element of a solution, or NotFound."""
    check_name(name, "element")
    for element in solution.elements:
        if element.name == name:
            return element
    raise NotFound(f"element '{name}' not found in solution '{domain}/{solution.name}'")


def find_cluster(element: pb.Element, path: str, version: str) -> pb.Cluster:
    """The cluster of an element for one component version, or NotFound."""
    check_name(version, "cluster")
    for cluster in element.clusters:
        if cluster.version == version:
            return cluster
    raise NotFound(f"cluster '{version}' not found in element '{path}/{element.name}'")


def find_instance(cluster: pb.Cluster, path: str, uuid: str) -> pb.Instance:
    """The instance of a cluster with this uuid, or NotFound."""
    check_name(uuid, "instance")
    for instance in cluster.instances:
        if instance.uuid == uuid:
            return instance
    raise NotFound(f"instance '{uuid}' not found in cluster '{path}/{cluster.version}'")


TARGET_STATES = (INITIAL, INACTIVE, ACTIVE)


def check_target_state(state: int, what: str) -> None:
    """A target state must be initial, inactive or active."""
    if state not in TARGET_STATES:
        raise InvalidArgument(f"{what}: {pb.State.Name(state) if state in pb.State.values() else state} is not a target state "
                              "(STATE_INITIAL, STATE_INACTIVE or STATE_ACTIVE)")


def check_policy(policy: int) -> None:
    """A failure policy must be one the engine knows (unspecified keeps the solution's)."""
    if policy not in pb.FailurePolicy.values():
        raise InvalidArgument(f"on_failure: {policy} is not a failure policy (FAILURE_POLICY_HOLD or FAILURE_POLICY_ROLLBACK)")


def check_timeout(seconds: int) -> None:
    """An approval time-out is a number of seconds, -1 (wait for ever) or 0 (unchanged)."""
    if seconds < -1:
        raise InvalidArgument(f"approval_timeout_seconds: {seconds}; give seconds, -1 (wait for ever) or 0 (unchanged)")


def planned(solution: pb.Solution) -> list[gw.PlannedTransition]:
    """The transitions a run of `solution` (as planned) would make."""
    return [gw.PlannedTransition(element=p.element, cluster=p.cluster, instance=p.instance, transition=p.transition,
                                 waits_for=p.waits_for)
            for p in planner.plan(solution)]


def _numbered() -> Callable[[], str]:
    """Names for instances a plan would make: "new-1", "new-2", ..."""
    counter = iter(range(1, 1_000_000))
    return lambda: f"new-{next(counter)}"


class SolutionChanges:
    """The changing calls of SolutionService (a part of SolutionServicer)."""

    repo: Repository
    channel: Channel
    policies: DomainPolicies

    async def _solution(self, domain: str, name: str) -> pb.Solution:
        raise NotImplementedError

    async def _header(self, domain: str, name: str) -> pb.Solution:
        raise NotImplementedError

    async def _design(self, domain: str, architecture: str, version: str, solution: str) -> tuple[str, pb.Architecture, planner.Catalog]:
        """The solution's name, the architecture and the domain's catalog;
        NotFound when the architecture or one of its components is missing."""
        check_name(domain, "domain")
        check_name(architecture, "architecture")
        check_name(version, "version")
        name = check_name(solution or architecture, "solution")
        await self.repo.model.require_domain(domain)
        found = await self.repo.model.get_architecture(domain, architecture, version)
        catalog = {(c.name, c.version): c for c in await self.repo.model.list_components(domain)}
        planner.resolve_components(found, catalog)
        return name, found, catalog

    async def DeploySolution(self, request: gw.DeploySolutionRequest, context: grpc.aio.ServicerContext) -> gw.DeploySolutionResponse:
        if task := await self.channel.earlier(request.domain, request.solution or request.architecture, request.request_id):
            return gw.DeploySolutionResponse(task=task)
        name, architecture, catalog = await self._design(request.domain, request.architecture, request.version, request.solution)
        desired = planner.with_sizes(planner.desired_solution(request.domain, name, architecture, catalog), request.sizes)
        check_policy(request.on_failure)
        if not request.force:
            await self._refuse_bad(request.domain, name, desired)
        if request.approval not in pb.Approval.values():
            raise InvalidArgument(f"approval: {request.approval} is not APPROVAL_NONE or APPROVAL_REQUIRED")
        check_timeout(request.approval_timeout_seconds)
        change = rpb.Request.Deploy(architecture=request.architecture, version=request.version, sizes=request.sizes,
                                    on_failure=request.on_failure, force=request.force, approval=request.approval,
                                    approval_timeout_seconds=request.approval_timeout_seconds, adopt=request.adopt)
        task = await self.channel.submit(change, request.domain, name, request.request_id, request.reason)
        return gw.DeploySolutionResponse(task=task)

    async def PlanSolution(self, request: gw.PlanSolutionRequest, context: grpc.aio.ServicerContext) -> gw.PlanSolutionResponse:
        name, architecture, catalog = await self._design(request.domain, request.architecture, request.version, request.solution)
        desired = planner.with_sizes(planner.desired_solution(request.domain, name, architecture, catalog), request.sizes)
        try:
            current: pb.Solution | None = await self.repo.solutions.get_solution(request.domain, name)
        except NotFound:
            current = None
        merged = planner.merge(current, desired, new_uuid=_numbered())
        transitions = planned(merged)
        if request.preview:
            # A dry run reaches the real systems (a playbook in check mode logs in to its hosts): who may deploy may preview.
            check(caller(), "DeploySolution", request.domain)
            transitions = await previews.previewed(self.channel.nc, self.channel.subjects, request.domain, merged, transitions)
        return gw.PlanSolutionResponse(transitions=transitions)

    async def RemoveSolution(self, request: gw.RemoveSolutionRequest, context: grpc.aio.ServicerContext) -> gw.RemoveSolutionResponse:
        if task := await self.channel.earlier(request.domain, request.solution, request.request_id):
            return gw.RemoveSolutionResponse(task=task)
        await self._header(request.domain, request.solution)
        task = await self.channel.submit(rpb.Request.Remove(), request.domain, request.solution, request.request_id, request.reason)
        return gw.RemoveSolutionResponse(task=task)

    async def UpdateSolution(self, request: gw.UpdateSolutionRequest, context: grpc.aio.ServicerContext) -> gw.UpdateSolutionResponse:
        if task := await self.channel.earlier(request.domain, request.solution, request.request_id):
            return gw.UpdateSolutionResponse(task=task)
        await self._header(request.domain, request.solution)
        check_target_state(request.state, "state")
        task = await self.channel.submit(rpb.Request.SetSolution(state=request.state), request.domain, request.solution,
                                        request.request_id, request.reason)
        return gw.UpdateSolutionResponse(task=task)

    async def ResumeSolution(self, request: gw.ResumeSolutionRequest, context: grpc.aio.ServicerContext) -> gw.ResumeSolutionResponse:
        if task := await self.channel.earlier(request.domain, request.solution, request.request_id):
            return gw.ResumeSolutionResponse(task=task)
        await self._header(request.domain, request.solution)
        reason = check_reason(request.reason)
        waiting = await self.repo.pauses.get(request.domain, request.solution)
        if waiting is not None and waiting.value.actor == APPROVAL and await self._awaiting(request.domain, request.solution):
            raise FailedPrecondition(f"{waiting.value.reason}; resume does not approve")
        ended = await self.repo.pauses.resume(request.domain, request.solution)
        if ended is not None and (running := await self._running(request.domain, request.solution)):
            # The paused change goes on where it stopped.
            return gw.ResumeSolutionResponse(task=running, ended_pause=ended)
        task = await self.channel.submit(rpb.Request.Resume(), request.domain, request.solution, request.request_id, reason)
        return gw.ResumeSolutionResponse(task=task, ended_pause=ended)

    async def ApproveSolution(self, request: gw.ApproveSolutionRequest,
                              context: grpc.aio.ServicerContext) -> gw.ApproveSolutionResponse:
        return gw.ApproveSolutionResponse(task=await self._decide(request, True))

    async def RejectSolution(self, request: gw.RejectSolutionRequest,
                             context: grpc.aio.ServicerContext) -> gw.RejectSolutionResponse:
        return gw.RejectSolutionResponse(task=await self._decide(request, False))

    async def _decide(self, request: gw.ApproveSolutionRequest | gw.RejectSolutionRequest, approved: bool) -> str:
        """An approver's decision on the revision that awaits approval; its root task."""
        domain, name = await self._named(request.domain, request.solution)
        reason = check_reason(request.reason)
        revision = (await self.repo.revisions.get(domain, name, request.revision)).value
        if revision.outcome != pb.REVISION_OUTCOME_AWAITING_APPROVAL:
            raise FailedPrecondition(f"revision {revision.number} of solution '{domain}/{name}' does not await approval "
                                     f"(it is {outcome_name(revision.outcome)})")
        who = caller().name
        if who == revision.actor and not (await self.policies.get(domain)).self_approval:
            raise PermissionDenied(f"revision {revision.number} was asked for by {who}: another approver decides on it "
                                   f"(unless the domain's policy allows self-approval: orch domain policy {domain} "
                                   "--self-approval allowed)")
        await self.repo.decisions.decide(domain, name, rpb.ApprovalDecision(
            revision=revision.number, approved=approved, actor=who, reason=reason, decided_unix_ms=int(time.time() * 1000)))
        paused = await self.repo.pauses.get(domain, name)
        if paused is not None and paused.value.actor == APPROVAL:
            await self.repo.pauses.resume(domain, name)
        return revision.task

    async def PauseSolution(self, request: gw.PauseSolutionRequest, context: grpc.aio.ServicerContext) -> gw.PauseSolutionResponse:
        await self._header(request.domain, request.solution)
        pause = await self.repo.pauses.pause(request.domain, request.solution, caller().name, check_reason(request.reason))
        return gw.PauseSolutionResponse(pause=pause)

    async def UpdateCluster(self, request: gw.UpdateClusterRequest, context: grpc.aio.ServicerContext) -> gw.UpdateClusterResponse:
        if task := await self.channel.earlier(request.domain, request.solution, request.request_id):
            return gw.UpdateClusterResponse(task=task)
        solution = await self._solution(request.domain, request.solution)
        cluster = planner.find_cluster(solution, check_name(request.element, "element"), check_name(request.cluster, "cluster"))
        if not request.HasField("size") and not request.state:
            raise InvalidArgument("nothing to change: give a size, a state, or both")
        if request.HasField("size") and not cluster.min <= request.size <= cluster.max:
            raise InvalidArgument(f"size: {request.size} is outside min {cluster.min} .. max {cluster.max} of cluster "
                                  f"'{request.element}/{request.cluster}'")
        if request.state:
            check_target_state(request.state, "state")
        change = rpb.Request.SetCluster(element=request.element, cluster=request.cluster, state=request.state)
        if request.HasField("size"):
            change.size = request.size
        task = await self.channel.submit(change, request.domain, request.solution, request.request_id, request.reason)
        return gw.UpdateClusterResponse(task=task)

    async def UpdateInstance(self, request: gw.UpdateInstanceRequest, context: grpc.aio.ServicerContext) -> gw.UpdateInstanceResponse:
        if task := await self.channel.earlier(request.domain, request.solution, request.request_id):
            return gw.UpdateInstanceResponse(task=task)
        solution = await self._solution(request.domain, request.solution)
        element = find_element(solution, request.domain, request.element)
        path = f"{request.domain}/{request.solution}"
        cluster = find_cluster(element, path, request.cluster)
        find_instance(cluster, f"{path}/{element.name}", request.instance)
        check_target_state(request.state, "state")
        change = rpb.Request.SetInstance(element=request.element, cluster=request.cluster, instance=request.instance,
                                         state=request.state)
        task = await self.channel.submit(change, request.domain, request.solution, request.request_id, request.reason)
        return gw.UpdateInstanceResponse(task=task)

    # ---- history: revisions, rollback, failure policy ---------------------------

    async def ListRevisions(self, request: gw.ListRevisionsRequest, context: grpc.aio.ServicerContext) -> gw.ListRevisionsResponse:
        domain, name = await self._named(request.domain, request.solution)
        found = await self.repo.revisions.all(domain, name)
        if not found:
            await self._header(domain, name)  # says why there is nothing (no such solution)
        return gw.ListRevisionsResponse(revisions=[v.value for v in found])

    async def DiffRevisions(self, request: gw.DiffRevisionsRequest, context: grpc.aio.ServicerContext) -> gw.DiffRevisionsResponse:
        domain, name = await self._named(request.domain, request.solution)
        older, newer = await asyncio.gather(self.repo.revisions.get(domain, name, getattr(request, "from")),
                                            self.repo.revisions.get(domain, name, request.to))
        return gw.DiffRevisionsResponse(changes=revisions.diff(older.value, newer.value))

    async def RollbackSolution(self, request: gw.RollbackSolutionRequest,
                               context: grpc.aio.ServicerContext) -> gw.RollbackSolutionResponse:
        domain, name = await self._named(request.domain, request.solution)
        reason = check_reason(request.reason)
        if not request.plan and (task := await self.channel.earlier(domain, name, request.request_id)):
            return gw.RollbackSolutionResponse(task=task)
        if request.to < 0:
            raise InvalidArgument(f"to: {request.to} is not a revision number (`orch solution history {domain} {name}`)")
        target = await self._rollback_target(domain, name, request.to)
        if target.outcome not in revisions.RESTORABLE:
            raise FailedPrecondition(f"revision {target.number} of solution '{domain}/{name}' never ran "
                                     f"({outcome_name(target.outcome)}): nothing of it can be put back")
        if not target.desired.elements:
            raise FailedPrecondition(f"revision {target.number} of solution '{domain}/{name}' asks for nothing to run "
                                     f"({target.summary}); roll back to another revision")
        if target.bad and not request.force and not request.plan:
            raise FailedPrecondition(f"revision {target.number} of solution '{domain}/{name}' failed and was rolled back "
                                     f"({target.error or 'failed'}); roll back to it with force (`--force`) if that is meant")
        if request.plan:
            try:
                current: pb.Solution | None = await self.repo.solutions.get_solution(domain, name)
            except NotFound:
                current = None
            return gw.RollbackSolutionResponse(transitions=planned(revisions.restore(current, target, new_uuid=_numbered())))
        change = rpb.Request.Rollback(to=target.number)
        superseded = ""
        # The caller's deadline, over gRPC (the bus and the console call without one).
        remaining = getattr(context, "time_remaining", lambda: None)()
        deadline = time.monotonic() + min(SUPERSEDE_WAIT, remaining or SUPERSEDE_WAIT)
        while True:
            running = await self._running(domain, name)
            if running is None:
                paused = await self.repo.pauses.get(domain, name)
                if paused is not None and paused.value.actor == ROLLOUT:
                    # The rollout stopped: its wait ends, the rollback (its rejection) runs.
                    await self.repo.pauses.resume(domain, name)
                try:
                    task = await self.channel.submit(change, domain, name, request.request_id, reason)
                    return gw.RollbackSolutionResponse(task=task, superseded_task=superseded)
                except FailedPrecondition:
                    continue  # another request took the solution first: this rollback supersedes it
            if running != superseded:
                # Its running operations finish; none of its others start.
                await self.repo.leases.request_termination(domain, running, running, caller().name, reason, superseded=True)
                superseded = running
            if time.monotonic() > deadline:
                raise DeadlineExceeded(f"task {running} of solution '{domain}/{name}' is still stopping (its running "
                                       "operations finish first); ask for the rollback again in a moment")
            await asyncio.sleep(0.05)

    async def SetFailurePolicy(self, request: gw.SetFailurePolicyRequest,
                               context: grpc.aio.ServicerContext) -> gw.SetFailurePolicyResponse:
        if task := await self.channel.earlier(request.domain, request.solution, request.request_id):
            return gw.SetFailurePolicyResponse(task=task)
        await self._header(request.domain, request.solution)
        if not request.on_failure and not request.approval and not request.approval_timeout_seconds:
            raise InvalidArgument("nothing to change: give on_failure (FAILURE_POLICY_HOLD or FAILURE_POLICY_ROLLBACK), "
                                  "approval (APPROVAL_NONE or APPROVAL_REQUIRED), approval_timeout_seconds, or some of them")
        check_timeout(request.approval_timeout_seconds)
        check_policy(request.on_failure)
        if request.approval not in pb.Approval.values():
            raise InvalidArgument(f"approval: {request.approval} is not APPROVAL_NONE or APPROVAL_REQUIRED")
        change = rpb.Request.SetPolicy(on_failure=request.on_failure, approval=request.approval,
                                       approval_timeout_seconds=request.approval_timeout_seconds)
        task = await self.channel.submit(change, request.domain, request.solution, request.request_id,
                                        check_reason(request.reason))
        return gw.SetFailurePolicyResponse(task=task)

    async def _rollback_target(self, domain: str, name: str, number: int) -> pb.Revision:
        """Revision `number`, or (0) the last that succeeded before the newest."""
        if number:
            return (await self.repo.revisions.get(domain, name, number)).value
        listed = [v.value for v in await self.repo.revisions.all(domain, name)]
        found = revisions.last_succeeded(listed, listed[0].number) if listed else None
        if found is None:
            raise FailedPrecondition(f"solution '{domain}/{name}' has no revision that succeeded before its newest; "
                                     f"name one (`orch solution history {domain} {name}`)")
        return found

    async def _named(self, domain: str, solution: str) -> tuple[str, str]:
        check_name(domain, "domain")
        check_name(solution, "solution")
        await self.repo.model.require_domain(domain)
        return domain, solution

    async def _awaiting(self, domain: str, name: str) -> bool:
        """Whether a revision of the solution awaits approval."""
        return any(v.value.outcome == pb.REVISION_OUTCOME_AWAITING_APPROVAL
                   for v in await self.repo.revisions.all(domain, name))

    async def _running(self, domain: str, name: str) -> str | None:
        """The root task the solution is busy with (None when it is free)."""
        lease = await self.repo.leases.get(domain, name)
        if lease is None or not lease.record.task:
            return None
        try:
            status = (await self.repo.tasks.get_task(domain, lease.record.task)).value.status
        except NotFound:
            return lease.record.task  # queued: its root task is being stored
        return None if status in TASK_ENDED else lease.record.task

    async def _refuse_bad(self, domain: str, name: str, desired: pb.Solution) -> None:
        """FailedPrecondition when `desired` is what a revision marked bad asked for."""
        asked = pb.Revision(desired=revisions.desired_of(desired)[0])
        for stored in await self.repo.revisions.all(domain, name):
            if stored.value.bad and revisions.same_desired(stored.value, asked):
                bad = stored.value
                raise FailedPrecondition(
                    f"revision {bad.number} of solution '{domain}/{name}' asked for this and failed ({bad.error or 'failed'});"
                    f" it was rolled back and marked bad. Deploy it again with force (`--force`) if it is fixed")
