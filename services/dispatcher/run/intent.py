"""Turning a request into the solution's stored intent (idempotent: applying
the same request twice stores the same records, which crash recovery needs)."""

from __future__ import annotations

import asyncio
import contextlib

from dispatcher.run.snapshot import Intent, load_records, write_intent
from orchestration.model import planner
from orchestration.store.repository import Repository
from orchestration.v1 import model_pb2 as pb
from orchestration.v1 import records_pb2 as rpb
from orchestration_sdk.status_errors import FailedPrecondition, NotFound

R = rpb.RequestKind


Design = tuple[pb.Architecture, dict[tuple[str, str], pb.Component]]


def read_design(repo: Repository, request: rpb.Request) -> asyncio.Future[Design] | None:
    """The reads of the architecture a deploy asks for and of the components
    it uses, started now (None for other requests). Reads of the model only:
    the dispatcher starts them before it owns the solution, so that they are
    done by the time it does."""
    if request.kind != R.REQUEST_KIND_DEPLOY:
        return None
    reads = asyncio.ensure_future(_design(repo, request))
    # A failure is reported by apply_request; one nobody awaits (the run did
    # not start) is not an error.
    reads.add_done_callback(lambda done: done.cancelled() or done.exception())
    return reads


async def apply_request(repo: Repository, request: rpb.Request, design: asyncio.Future[Design] | None = None) -> Intent:
    """Store what the request asks for in the solution's records (instance
    records are left to the run, see Intent). The one place a request is
    planned: the cluster records written here carry everything a run needs.
    `design`: read_design's reads, when started already."""
    later = planner.Additions()
    if request.kind == R.REQUEST_KIND_DEPLOY:
        if design is None:
            design = read_design(repo, request)
        assert design is not None
        # Independent reads, at once: a request's first operation waits for them.
        records, (architecture, catalog) = await asyncio.gather(load_records(repo, request.domain, request.solution), design)
    else:
        records = await load_records(repo, request.domain, request.solution)
    current = records.tree()
    if request.kind == R.REQUEST_KIND_DEPLOY:
        desired = planner.with_sizes(planner.desired_solution(request.domain, request.solution, architecture, catalog),
                                     request.sizes)
        wanted = planner.merge(current, desired, later=later)
    else:
        if current is None:
            raise NotFound(f"solution '{request.domain}/{request.solution}' not found")
        if request.kind == R.REQUEST_KIND_SET_CLUSTER:
            size = request.size if request.HasField("size") else None
            wanted = planner.set_cluster(current, request.element, request.cluster, size, request.state, later=later)
        elif request.kind == R.REQUEST_KIND_SET_SOLUTION:
            wanted = planner.set_solution(current, request.state)
        elif request.kind == R.REQUEST_KIND_SET_INSTANCE:
            wanted = planner.set_instance(current, request.element, request.cluster, request.instance, request.state)
        elif request.kind == R.REQUEST_KIND_REMOVE:
            wanted = planner.teardown(current)
        elif request.kind in (R.REQUEST_KIND_RECONCILE, R.REQUEST_KIND_RESUME):
            wanted = current
        else:
            raise FailedPrecondition(f"unknown request kind {request.kind}")
    if request.kind != R.REQUEST_KIND_RECONCILE:
        _end_hold(wanted)
    if planner.missing_design(wanted):
        wanted = await _backfill(repo, request.domain, wanted, current)
    # The cluster that grows first is written first; the run writes the rest
    # after its first operation has left.
    first = next(iter(later.counts), None)
    intent = await write_intent(repo, request.domain, records, wanted, first)
    intent.additions = later.counts
    return intent


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
    architecture = await repo.model.get_architecture(request.domain, request.architecture, request.version)
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
