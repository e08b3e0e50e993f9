"""Turning a request into the solution's stored intent (idempotent: applying
the same request twice stores the same records, which crash recovery needs)."""

from __future__ import annotations

import asyncio

from orchestration import planner
from orchestration.errors import FailedPrecondition, NotFound
from orchestration.repository import Repository
from orchestration.v1 import model_pb2 as pb
from orchestration.v1 import records_pb2 as rpb

from dispatcher.records import Intent, load_records, write_intent

R = rpb.RequestKind


async def apply_request(repo: Repository, request: rpb.Request) -> Intent:
    """Store what the request asks for in the solution's records (instance
    records are left to the run, see Intent)."""
    if request.kind == R.REQUEST_KIND_DEPLOY:
        # Independent reads, at once: a request's first operation waits for them.
        records, (architecture, catalog) = await asyncio.gather(
            load_records(repo, request.domain, request.solution), _design(repo, request))
    else:
        records = await load_records(repo, request.domain, request.solution)
    current = records.tree()
    if request.kind == R.REQUEST_KIND_DEPLOY:
        desired = planner.desired_solution(request.domain, request.solution, architecture, catalog)
        wanted = planner.merge(current, desired)
    else:
        if current is None:
            raise NotFound(f"solution '{request.domain}/{request.solution}' not found")
        if request.kind == R.REQUEST_KIND_SET_CLUSTER:
            size = request.size if request.HasField("size") else None
            wanted = planner.set_cluster(current, request.element, request.cluster, size, request.state)
        elif request.kind == R.REQUEST_KIND_SET_SOLUTION:
            wanted = planner.set_solution(current, request.state)
        elif request.kind == R.REQUEST_KIND_SET_INSTANCE:
            wanted = planner.set_instance(current, request.element, request.cluster, request.instance, request.state)
        elif request.kind == R.REQUEST_KIND_REMOVE:
            wanted = planner.teardown(current)
        elif request.kind == R.REQUEST_KIND_RECONCILE:
            wanted = current
        else:
            raise FailedPrecondition(f"unknown request kind {request.kind}")
    intent = await write_intent(repo, request.domain, records, wanted)
    if request.kind == R.REQUEST_KIND_DEPLOY:
        # The run needs them too, with the components of elements the new architecture dropped.
        dropped = {(e.component, c.version) for e in wanted.elements for c in e.clusters} - catalog.keys()
        if dropped:
            catalog.update(await _components(repo, request.domain, dropped))
        intent.catalog, intent.architecture = catalog, architecture
    return intent


async def _design(repo: Repository, request: rpb.Request) -> tuple[pb.Architecture, dict[tuple[str, str], pb.Component]]:
    """The architecture to deploy and the components it uses."""
    architecture = await repo.get_architecture(request.domain, request.architecture, request.version)
    used = {(element.component, cluster.version) for element in architecture.elements for cluster in element.clusters}
    return architecture, await _components(repo, request.domain, used)


async def _components(repo: Repository, domain: str, keys: set[tuple[str, str]]) -> dict[tuple[str, str], pb.Component]:
    """The components named by keys (name, version), read one by one at once:
    fewer round trips than listing the domain's catalog. One missing from
    the catalog is left out (the planner names it)."""

    async def component(name: str, version: str) -> pb.Component | None:
        try:
            return await repo.get_component(domain, name, version)
        except NotFound:
            return None

    ordered = sorted(keys)
    found = await asyncio.gather(*(component(name, version) for name, version in ordered))
    return {key: c for key, c in zip(ordered, found) if c is not None}
