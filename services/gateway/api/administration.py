"""AdministrationService: the model and its domains."""

from __future__ import annotations

import asyncio

import grpc

from gateway.api.access import caller
from orchestration.model import codec, validation
from orchestration.model.access import require_global_admin
from orchestration.model.names import check_name
from orchestration.store.repository import ApplyResult, Repository
from orchestration.v1 import gateway_pb2 as gw
from orchestration.v1 import gateway_pb2_grpc as gw_grpc
from orchestration.v1 import model_pb2 as pb
from orchestration_sdk.status_errors import FailedPrecondition, InvalidArgument

KINDS = {
    "model": gw.DOCUMENT_KIND_MODEL,
    "domain": gw.DOCUMENT_KIND_DOMAIN,
    "component": gw.DOCUMENT_KIND_COMPONENT,
    "architecture": gw.DOCUMENT_KIND_ARCHITECTURE,
}


async def apply_model(repo: Repository, model: pb.Model, kind: str) -> ApplyResult:
    """Validate everything in model against the stored catalog, then store it
    all (the one write path of the model: Apply and every Store call)."""
    catalogs: dict[str, dict[tuple[str, str], pb.Component]] = {}
    # Read once: a model may name many domains (or one domain many times), and
    # each read is a round trip to NATS.
    existing = set(await repo.model.list_domains())
    for domain in model.domains:
        check_name(domain.name, "Domains: domain name")
        if domain.name in catalogs:
            continue  # named twice: validate_model rejects it
        if kind in ("component", "architecture") and domain.name not in existing:
            await repo.model.require_domain(domain.name)
        stored = await repo.model.list_components(domain.name) if domain.name in existing else []
        catalog = {(c.name, c.version): c for c in stored}
        catalog.update({(c.name, c.version): c for c in domain.components})
        catalogs[domain.name] = catalog
    # Validating a large model takes a while: off the event loop, which keeps serving.
    await asyncio.to_thread(validation.validate_model, model, catalogs)
    return await repo.apply_model(model)


class AdministrationServicer(gw_grpc.AdministrationServiceServicer):
    def __init__(self, repo: Repository) -> None:
        self.repo = repo

    async def Apply(self, request: gw.ApplyRequest, context: grpc.aio.ServicerContext) -> gw.ApplyResponse:
        if not request.document.strip():
            raise InvalidArgument("document: empty; pass the YAML text of a model, domain, component or architecture")
        # Parsing YAML in pure Python takes seconds for a document of a few MiB: off
        # the event loop, so that the gateway answers other calls (and health checks) meanwhile.
        document = await asyncio.to_thread(codec.parse_document, request.document, request.domain)
        if document.kind in ("model", "domain"):
            require_global_admin(caller(), f"Apply of a {document.kind} document")
        result = await apply_model(self.repo, document.model, document.kind)
        return gw.ApplyResponse(kind=KINDS[document.kind], stored=result.stored, unchanged=result.unchanged)

    async def ResetModel(self, request: gw.ResetModelRequest, context: grpc.aio.ServicerContext) -> gw.ResetModelResponse:
        if not request.force:
            running = [f"{d}/{s}" for d in await self.repo.model.list_domains() for s in await self._running(d)]
            if running:
                shown = ", ".join(running[:5]) + (f" and {len(running) - 5} more" if len(running) > 5 else "")
                # Deleting the records would leave their real resources without an owner.
                first_domain, first_solution = running[0].split("/", 1)
                raise FailedPrecondition(
                    f"{len(running)} solution(s) still have instances ({shown}); tear them down first, one by one "
                    f"(`orch solution delete {first_domain} {first_solution} --wait`), or reset with force to abandon them"
                )
        await self.repo.reset_model()
        return gw.ResetModelResponse()

    async def StoreModel(self, request: gw.StoreModelRequest, context: grpc.aio.ServicerContext) -> gw.StoreModelResponse:
        await apply_model(self.repo, request.model, "model")
        return gw.StoreModelResponse()

    async def RetrieveModel(self, request: gw.RetrieveModelRequest, context: grpc.aio.ServicerContext) -> gw.RetrieveModelResponse:
        return gw.RetrieveModelResponse(model=await self.repo.retrieve_model())

    async def ListDomains(self, request: gw.ListDomainsRequest, context: grpc.aio.ServicerContext) -> gw.ListDomainsResponse:
        principal = caller()
        return gw.ListDomainsResponse(domains=[d for d in await self.repo.model.list_domains() if principal.sees(d)])

    async def StoreDomain(self, request: gw.StoreDomainRequest, context: grpc.aio.ServicerContext) -> gw.StoreDomainResponse:
        await apply_model(self.repo, pb.Model(domains=[request.domain]), "domain")
        return gw.StoreDomainResponse()

    async def RetrieveDomain(self, request: gw.RetrieveDomainRequest, context: grpc.aio.ServicerContext) -> gw.RetrieveDomainResponse:
        check_name(request.domain, "domain")
        return gw.RetrieveDomainResponse(domain=await self.repo.get_domain(request.domain))

    async def RemoveDomain(self, request: gw.RemoveDomainRequest, context: grpc.aio.ServicerContext) -> gw.RemoveDomainResponse:
        check_name(request.domain, "domain")
        solutions = await self.repo.solutions.list_solutions(request.domain)
        if solutions and not request.force:
            names = ", ".join(s.name for s in solutions[:5]) + (" ..." if len(solutions) > 5 else "")
            # Removing the records would leave the running instances without an owner.
            raise FailedPrecondition(
                f"domain '{request.domain}' still has solutions ({names}); tear them down first "
                f"(`orch solution delete {request.domain} {solutions[0].name} --wait`, and so on), "
                "or remove it with --force to abandon them"
            )
        await self.repo.remove_domain(request.domain, caller().name)
        return gw.RemoveDomainResponse()

    async def _running(self, domain: str) -> list[str]:
        """Solutions of the domain with instances that are not initial (real resources exist)."""
        running = []
        for header in await self.repo.solutions.list_solutions(domain):
            instances = await self.repo.solutions.list_instances(domain, header.name)
            if any((r.instance.state or pb.STATE_INITIAL) != pb.STATE_INITIAL for r in instances):
                running.append(header.name)
        return running
