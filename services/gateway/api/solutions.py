"""SolutionService: the read side of solutions (the write side arrives with
the task engine and answers UNIMPLEMENTED until then)."""

from __future__ import annotations

import grpc

from orchestration.errors import NotFound
from orchestration.names import check_name
from orchestration.repository import Repository
from orchestration.v1 import gateway_pb2 as gw
from orchestration.v1 import gateway_pb2_grpc as gw_grpc
from orchestration.v1 import model_pb2 as pb


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


class SolutionServicer(gw_grpc.SolutionServiceServicer):
    def __init__(self, repo: Repository) -> None:
        self.repo = repo

    async def _solution(self, domain: str, name: str) -> pb.Solution:
        check_name(domain, "domain")
        check_name(name, "solution")
        return await self.repo.get_solution(domain, name)

    async def ListSolutions(self, request: gw.ListSolutionsRequest, context: grpc.aio.ServicerContext) -> gw.ListSolutionsResponse:
        check_name(request.domain, "domain")
        await self.repo.require_domain(request.domain)
        return gw.ListSolutionsResponse(solutions=await self.repo.list_solutions(request.domain))

    async def RetrieveSolution(
        self, request: gw.RetrieveSolutionRequest, context: grpc.aio.ServicerContext
    ) -> gw.RetrieveSolutionResponse:
        return gw.RetrieveSolutionResponse(solution=await self._solution(request.domain, request.solution))

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
