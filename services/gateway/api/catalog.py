"""CatalogService and ArchitectureService: immutable, versioned templates."""

from __future__ import annotations

import grpc

from gateway.api.administration import apply_model
from orchestration.model.names import check_name
from orchestration.store.repository import Repository
from orchestration.v1 import gateway_pb2 as gw
from orchestration.v1 import gateway_pb2_grpc as gw_grpc
from orchestration.v1 import model_pb2 as pb


class CatalogServicer(gw_grpc.CatalogServiceServicer):
    def __init__(self, repo: Repository) -> None:
        self.repo = repo

    async def ListComponents(self, request: gw.ListComponentsRequest, context: grpc.aio.ServicerContext) -> gw.ListComponentsResponse:
        check_name(request.domain, "domain")
        await self.repo.model.require_domain(request.domain)
        return gw.ListComponentsResponse(components=await self.repo.model.list_components(request.domain))

    async def ListComponentVersions(
        self, request: gw.ListComponentVersionsRequest, context: grpc.aio.ServicerContext
    ) -> gw.ListComponentVersionsResponse:
        check_name(request.domain, "domain")
        check_name(request.component, "component")
        await self.repo.model.require_domain(request.domain)
        versions = [c.version for c in await self.repo.model.list_components(request.domain) if c.name == request.component]
        return gw.ListComponentVersionsResponse(versions=versions)

    async def StoreComponent(self, request: gw.StoreComponentRequest, context: grpc.aio.ServicerContext) -> gw.StoreComponentResponse:
        check_name(request.domain, "domain")
        model = pb.Model(domains=[pb.Domain(name=request.domain, components=[request.component])])
        await apply_model(self.repo, model, "component")
        return gw.StoreComponentResponse()

    async def RetrieveComponent(
        self, request: gw.RetrieveComponentRequest, context: grpc.aio.ServicerContext
    ) -> gw.RetrieveComponentResponse:
        check_name(request.domain, "domain")
        check_name(request.component, "component")
        check_name(request.version, "version")
        component = await self.repo.model.get_component(request.domain, request.component, request.version)
        return gw.RetrieveComponentResponse(component=component)

    async def RemoveComponent(self, request: gw.RemoveComponentRequest, context: grpc.aio.ServicerContext) -> gw.RemoveComponentResponse:
        check_name(request.domain, "domain")
        check_name(request.component, "component")
        check_name(request.version, "version")
        await self.repo.model.remove_component(request.domain, request.component, request.version)
        return gw.RemoveComponentResponse()


class ArchitectureServicer(gw_grpc.ArchitectureServiceServicer):
    def __init__(self, repo: Repository) -> None:
        self.repo = repo

    async def ListArchitectures(
        self, request: gw.ListArchitecturesRequest, context: grpc.aio.ServicerContext
    ) -> gw.ListArchitecturesResponse:
        check_name(request.domain, "domain")
        await self.repo.model.require_domain(request.domain)
        return gw.ListArchitecturesResponse(architectures=await self.repo.model.list_architectures(request.domain))

    async def ListArchitectureVersions(
        self, request: gw.ListArchitectureVersionsRequest, context: grpc.aio.ServicerContext
    ) -> gw.ListArchitectureVersionsResponse:
        check_name(request.domain, "domain")
        check_name(request.architecture, "architecture")
        await self.repo.model.require_domain(request.domain)
        architectures = await self.repo.model.list_architectures(request.domain)
        return gw.ListArchitectureVersionsResponse(versions=[a.version for a in architectures if a.name == request.architecture])

    async def StoreArchitecture(
        self, request: gw.StoreArchitectureRequest, context: grpc.aio.ServicerContext
    ) -> gw.StoreArchitectureResponse:
        check_name(request.domain, "domain")
        model = pb.Model(domains=[pb.Domain(name=request.domain, architectures=[request.architecture])])
        await apply_model(self.repo, model, "architecture")
        return gw.StoreArchitectureResponse()

    async def RetrieveArchitecture(
        self, request: gw.RetrieveArchitectureRequest, context: grpc.aio.ServicerContext
    ) -> gw.RetrieveArchitectureResponse:
        check_name(request.domain, "domain")
        check_name(request.architecture, "architecture")
        check_name(request.version, "version")
        architecture = await self.repo.model.get_architecture(request.domain, request.architecture, request.version)
        return gw.RetrieveArchitectureResponse(architecture=architecture)

    async def RemoveArchitecture(
        self, request: gw.RemoveArchitectureRequest, context: grpc.aio.ServicerContext
    ) -> gw.RemoveArchitectureResponse:
        check_name(request.domain, "domain")
        check_name(request.architecture, "architecture")
        check_name(request.version, "version")
        await self.repo.model.remove_architecture(request.domain, request.architecture, request.version)
        return gw.RemoveArchitectureResponse()
