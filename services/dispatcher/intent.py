"""Turning a request into the solution's stored intent (idempotent: applying
the same request twice stores the same records, which crash recovery needs)."""

from __future__ import annotations

from orchestration import planner
from orchestration.errors import FailedPrecondition, NotFound
from orchestration.repository import Repository
from orchestration.v1 import records_pb2 as rpb

from dispatcher.records import Intent, load_records, write_intent

R = rpb.RequestKind


async def apply_request(repo: Repository, request: rpb.Request) -> Intent:
    """Store what the request asks for in the solution's records (instance
    records are left to the run, see Intent)."""
    records = await load_records(repo, request.domain, request.solution)
    current = records.tree()
    if request.kind == R.REQUEST_KIND_DEPLOY:
        architecture = await repo.get_architecture(request.domain, request.architecture, request.version)
        catalog = {(c.name, c.version): c for c in await repo.list_components(request.domain)}
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
        intent.catalog, intent.architecture = catalog, architecture  # the run needs them too
    return intent
