"""SolutionService: reading solutions, and the requests that change them
(deploy, resize, state changes, removal), which go to the dispatchers
through the internal channel."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any

import grpc

from gateway.api.channel import Channel
from gateway.api.feeds import Feeds
from orchestration.model import planner
from orchestration.model.lifecycle import ACTIVE, INACTIVE, INITIAL, TASK_ENDED
from orchestration.model.names import check_name
from orchestration.model.rollup import Tally
from orchestration.store.repository import ClusterRecord, InstanceRecord, Repository, Versioned
from orchestration.v1 import gateway_pb2 as gw
from orchestration.v1 import gateway_pb2_grpc as gw_grpc
from orchestration.v1 import model_pb2 as pb
from orchestration.v1 import records_pb2 as rpb
from orchestration_sdk.status_errors import InvalidArgument, NotFound


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


# Instances per message of ReadSolution (far below the 8 MiB message limit).
READ_CHUNK = 5000


class SolutionServicer(gw_grpc.SolutionServiceServicer):
    def __init__(self, repo: Repository, channel: Channel, feeds: Feeds) -> None:
        self.repo = repo
        self.channel = channel
        self.feeds = feeds

    async def WatchStatus(self, request: gw.WatchStatusRequest, context: grpc.aio.ServicerContext) -> AsyncIterator[gw.WatchStatusResponse]:
        if request.domain:
            check_name(request.domain, "domain")
            await self.repo.model.require_domain(request.domain)
        if request.solution:
            check_name(request.solution, "solution")
            if not request.domain:
                raise InvalidArgument("solution: give the domain of the solution too")
        async for item in self.feeds.status(request.domain, request.solution):
            yield item

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
        # Checked here so that a mistake is answered at once; planned once, by the dispatcher that accepts it.
        name, architecture, catalog = await self._design(request.domain, request.architecture, request.version, request.solution)
        if request.sizes:
            planner.with_sizes(planner.desired_solution(request.domain, name, architecture, catalog), request.sizes)
        task = await self.channel.submit(
            rpb.REQUEST_KIND_DEPLOY, request.domain, name, request.request_id, architecture=request.architecture,
            version=request.version, sizes=dict(request.sizes),
        )
        return gw.DeploySolutionResponse(task=task)

    async def PlanSolution(self, request: gw.PlanSolutionRequest, context: grpc.aio.ServicerContext) -> gw.PlanSolutionResponse:
        name, architecture, catalog = await self._design(request.domain, request.architecture, request.version, request.solution)
        desired = planner.with_sizes(planner.desired_solution(request.domain, name, architecture, catalog), request.sizes)
        try:
            current: pb.Solution | None = await self.repo.solutions.get_solution(request.domain, name)
        except NotFound:
            current = None
        counter = iter(range(1, 1_000_000))
        merged = planner.merge(current, desired, new_uuid=lambda: f"new-{next(counter)}")
        return gw.PlanSolutionResponse(transitions=[
            gw.PlannedTransition(element=p.element, cluster=p.cluster, instance=p.instance, transition=p.transition,
                                 waits_for=p.waits_for)
            for p in planner.plan(merged)
        ])

    async def RemoveSolution(self, request: gw.RemoveSolutionRequest, context: grpc.aio.ServicerContext) -> gw.RemoveSolutionResponse:
        if task := await self.channel.earlier(request.domain, request.solution, request.request_id):
            return gw.RemoveSolutionResponse(task=task)
        await self._header(request.domain, request.solution)
        task = await self.channel.submit(rpb.REQUEST_KIND_REMOVE, request.domain, request.solution, request.request_id)
        return gw.RemoveSolutionResponse(task=task)

    async def UpdateSolution(self, request: gw.UpdateSolutionRequest, context: grpc.aio.ServicerContext) -> gw.UpdateSolutionResponse:
        if task := await self.channel.earlier(request.domain, request.solution, request.request_id):
            return gw.UpdateSolutionResponse(task=task)
        await self._header(request.domain, request.solution)
        check_target_state(request.state, "state")
        task = await self.channel.submit(rpb.REQUEST_KIND_SET_SOLUTION, request.domain, request.solution, request.request_id,
                                        state=request.state)
        return gw.UpdateSolutionResponse(task=task)

    async def ResumeSolution(self, request: gw.ResumeSolutionRequest, context: grpc.aio.ServicerContext) -> gw.ResumeSolutionResponse:
        if task := await self.channel.earlier(request.domain, request.solution, request.request_id):
            return gw.ResumeSolutionResponse(task=task)
        await self._header(request.domain, request.solution)
        task = await self.channel.submit(rpb.REQUEST_KIND_RESUME, request.domain, request.solution, request.request_id)
        return gw.ResumeSolutionResponse(task=task)

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
        fields: dict[str, object] = {"element": request.element, "cluster": request.cluster, "state": request.state}
        if request.HasField("size"):
            fields["size"] = request.size
        task = await self.channel.submit(rpb.REQUEST_KIND_SET_CLUSTER, request.domain, request.solution, request.request_id,
                                        **fields)
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
        task = await self.channel.submit(
            rpb.REQUEST_KIND_SET_INSTANCE, request.domain, request.solution, request.request_id,
            element=request.element, cluster=request.cluster, instance=request.instance, state=request.state,
        )
        return gw.UpdateInstanceResponse(task=task)

    async def _solution(self, domain: str, name: str) -> pb.Solution:
        check_name(domain, "domain")
        check_name(name, "solution")
        try:
            return await self.repo.solutions.get_solution(domain, name)
        except NotFound as err:
            raise await self._not_planned_yet(domain, name, err) from None

    async def _header(self, domain: str, name: str) -> pb.Solution:
        """The solution's own record (NotFound says why: not planned yet, or removed)."""
        try:
            return (await self.repo.solutions.get_solution_header(check_name(domain, "domain"), check_name(name, "solution"))).value
        except NotFound as err:
            raise await self._not_planned_yet(domain, name, err) from None

    async def _not_planned_yet(self, domain: str, name: str, err: NotFound) -> NotFound:
        """A solution whose first deploy is accepted but not planned yet (for
        a few milliseconds after the answer) is not found with that said; one
        that was removed, with who removed it and when."""
        lease = await self.repo.leases.get(domain, name)
        if lease is None or lease.record.request.kind != rpb.REQUEST_KIND_DEPLOY:
            grave = await self.repo.solutions.removal(domain, name)
            if grave is None:
                await self.repo.model.require_domain(domain)  # an unknown domain is said to be one
                return NotFound(f"{err}; `orch solution list {domain}` lists its solutions")
            when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(grave.removed_unix_ms / 1000))
            by = f" by {grave.actor}" if grave.actor else ""
            task = f" (task {grave.task})" if grave.task else ""
            return NotFound(f"solution '{domain}/{name}' was removed{by} at {when}{task}; deploy it again to bring it back")
        return NotFound(f"solution '{domain}/{name}' is not planned yet: task {lease.record.task} deploys it; "
                        "its records appear in a moment")

    async def ListSolutions(self, request: gw.ListSolutionsRequest, context: grpc.aio.ServicerContext) -> gw.ListSolutionsResponse:
        check_name(request.domain, "domain")
        await self.repo.model.require_domain(request.domain)
        return gw.ListSolutionsResponse(solutions=await self.repo.solutions.list_solutions(request.domain))

    async def RetrieveSolution(
        self, request: gw.RetrieveSolutionRequest, context: grpc.aio.ServicerContext
    ) -> gw.RetrieveSolutionResponse:
        return gw.RetrieveSolutionResponse(solution=await self._solution(request.domain, request.solution))

    async def ReadSolution(self, request: gw.ReadSolutionRequest, context: grpc.aio.ServicerContext) -> AsyncIterator[gw.ReadSolutionResponse]:
        header, elements, clusters, instances = await self._records(request.domain, request.solution)
        skeleton = pb.Solution()
        skeleton.CopyFrom(header)
        by_element: dict[str, pb.Element] = {}
        for element in sorted(elements, key=lambda e: e.value.name):
            by_element[element.value.name] = out = skeleton.elements.add()
            out.CopyFrom(element.value)
        for cluster in sorted(clusters, key=lambda c: (c.element, c.cluster.version)):
            if cluster.element in by_element:
                by_element[cluster.element].clusters.add().CopyFrom(cluster.cluster)
        yield gw.ReadSolutionResponse(solution=skeleton)
        groups: dict[tuple[str, str], list[pb.Instance]] = defaultdict(list)
        for record in instances:
            groups[(record.element, record.cluster)].append(record.instance)
        for (element_name, version), found in sorted(groups.items()):
            found.sort(key=lambda i: i.uuid)
            for start in range(0, len(found), READ_CHUNK):
                yield gw.ReadSolutionResponse(element=element_name, cluster=version, instances=found[start:start + READ_CHUNK])

    async def SummarizeSolution(self, request: gw.SummarizeSolutionRequest,
                                context: grpc.aio.ServicerContext) -> gw.SummarizeSolutionResponse:
        header, _, clusters, instances = await self._records(request.domain, request.solution)
        tallies: dict[tuple[str, str], Tally] = defaultdict(Tally)
        for record in instances:
            if not record.instance.remove:
                tallies[(record.element, record.cluster)].add(record.instance.state, record.instance.target)
        summary = gw.SummarizeSolutionResponse(solution=header)
        total = Tally()
        for cluster in sorted(clusters, key=lambda c: (c.element, c.cluster.version)):
            found = tallies[(cluster.element, cluster.cluster.version)]
            total.merge(found)
            summary.clusters.add(element=cluster.element, cluster=cluster.cluster.version, target=cluster.cluster.target,
                                 size=cluster.cluster.size, **_summary_fields(found))
        summary.total.CopyFrom(gw.ClusterSummary(target=header.target, **_summary_fields(total)))
        lease = await self.repo.leases.get(request.domain, request.solution)
        if lease is not None and lease.record.task:
            try:
                running = (await self.repo.tasks.get_task(request.domain, lease.record.task)).value
            except NotFound:
                running = None  # accepted, its root task not stored yet
            if running is not None and running.status not in TASK_ENDED:
                summary.running.CopyFrom(running)
        return summary

    async def _records(self, domain: str, name: str) -> tuple[pb.Solution, list[Versioned[pb.Element]], list[ClusterRecord],
                                                              list[InstanceRecord]]:
        """A solution's records, read in bulk (three key-filter reads, whatever its size)."""
        check_name(domain, "domain")
        check_name(name, "solution")
        try:
            header = await self.repo.solutions.get_solution_header(domain, name)
        except NotFound as err:
            raise await self._not_planned_yet(domain, name, err) from None
        return (header.value, *await self.repo.solutions.parts(domain, name))

    async def ListElements(self, request: gw.ListElementsRequest, context: grpc.aio.ServicerContext) -> gw.ListElementsResponse:
        solution = await self._solution(request.domain, request.solution)
        return gw.ListElementsResponse(elements=solution.elements)

    async def RetrieveElement(self, request: gw.RetrieveElementRequest, context: grpc.aio.ServicerContext) -> gw.RetrieveElementResponse:
        solution = await self._solution(request.domain, request.solution)
        return gw.RetrieveElementResponse(element=find_element(solution, request.domain, request.element))

    async def ListClusters(self, request: gw.ListClustersRequest, context: grpc.aio.ServicerContext) -> gw.ListClustersResponse:
        solution = await self._solution(request.domain, request.solution)
        return gw.ListClustersResponse(clusters=find_element(solution, request.domain, request.element).clusters)

    async def RetrieveCluster(self, request: gw.RetrieveClusterRequest, context: grpc.aio.ServicerContext) -> gw.RetrieveClusterResponse:
        solution = await self._solution(request.domain, request.solution)
        element = find_element(solution, request.domain, request.element)
        path = f"{request.domain}/{request.solution}"
        return gw.RetrieveClusterResponse(cluster=find_cluster(element, path, request.cluster))

    async def ListInstances(self, request: gw.ListInstancesRequest, context: grpc.aio.ServicerContext) -> gw.ListInstancesResponse:
        solution = await self._solution(request.domain, request.solution)
        element = find_element(solution, request.domain, request.element)
        cluster = find_cluster(element, f"{request.domain}/{request.solution}", request.cluster)
        return gw.ListInstancesResponse(instances=cluster.instances)

    async def RetrieveInstance(
        self, request: gw.RetrieveInstanceRequest, context: grpc.aio.ServicerContext
    ) -> gw.RetrieveInstanceResponse:
        solution = await self._solution(request.domain, request.solution)
        element = find_element(solution, request.domain, request.element)
        path = f"{request.domain}/{request.solution}"
        cluster = find_cluster(element, path, request.cluster)
        instance = find_instance(cluster, f"{path}/{element.name}", request.instance)
        return gw.RetrieveInstanceResponse(instance=instance)


def _summary_fields(found: Tally) -> dict[str, Any]:
    """A ClusterSummary's counts and state, by the roll-up rule."""
    return {"state": found.state, "label": found.label, "instances": found.instances, "at_target": found.at_target,
            "failed": found.failure, "initial": found.initial, "inactive": found.inactive, "active": found.active,
            "in_transition": found.in_transition}
