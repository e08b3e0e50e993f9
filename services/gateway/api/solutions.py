"""SolutionService: reading solutions, and the requests that change them
(deploy, resize, state changes, removal), which go to the dispatchers
through the internal channel."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any

import grpc

from gateway.api.changes import SolutionChanges, find_cluster, find_element, find_instance
from gateway.api.channel import Channel
from gateway.api.feeds import Feeds
from orchestration.model.lifecycle import TASK_ENDED
from orchestration.model.names import check_name
from orchestration.model.rollup import Tally
from orchestration.store.access import DomainPolicies
from orchestration.store.repository import ClusterRecord, InstanceRecord, Repository, Versioned
from orchestration.v1 import gateway_pb2 as gw
from orchestration.v1 import gateway_pb2_grpc as gw_grpc
from orchestration.v1 import model_pb2 as pb
from orchestration_sdk.status_errors import InvalidArgument, NotFound


# Instances per message of ReadSolution (far below the 8 MiB message limit).
READ_CHUNK = 5000


class SolutionServicer(SolutionChanges, gw_grpc.SolutionServiceServicer):
    def __init__(self, repo: Repository, channel: Channel, feeds: Feeds, policies: DomainPolicies) -> None:
        self.repo = repo
        self.channel = channel
        self.feeds = feeds
        self.policies = policies

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
        if lease is None or not lease.record.request.HasField("deploy"):
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
        # A cluster leaving (a version change) is counted as it goes: its
        # instances serve until they stop.
        leaving = {(c.element, c.cluster.version) for c in clusters if c.cluster.remove}
        for record in instances:
            if not record.instance.remove or (record.element, record.cluster) in leaving:
                tallies[(record.element, record.cluster)].add(record.instance.state, record.instance.target)
        summary = gw.SummarizeSolutionResponse(solution=header)
        total = Tally()
        for cluster in sorted(clusters, key=lambda c: (c.element, c.cluster.version)):
            found = tallies[(cluster.element, cluster.cluster.version)]
            total.merge(found)
            summary.clusters.add(element=cluster.element, cluster=cluster.cluster.version, target=cluster.cluster.target,
                                 size=cluster.cluster.size, **_summary_fields(found))
        summary.total.CopyFrom(gw.ClusterSummary(target=header.target, **_summary_fields(total)))
        lease, paused = await asyncio.gather(self.repo.leases.get(request.domain, request.solution),
                                             self.repo.pauses.get(request.domain, request.solution))
        if paused is not None:
            summary.pause.CopyFrom(paused.value)
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
