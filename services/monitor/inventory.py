"""What the monitor asks about: the instance records of every solution that
have a target state, each with the controller that serves it. Read in bulk
(three key-filter reads per solution), never one round trip per instance."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from orchestration.model.errors import NotFound
from orchestration.runtime.concurrency import gather_bounded
from orchestration.store.repository import InstanceRecord, Repository
from orchestration.v1 import model_pb2 as pb

log = logging.getLogger("monitor.inventory")

# Solutions read at once.
_READ_CONCURRENCY = 32


@dataclass(frozen=True)
class Watched:
    """One instance to ask about, with what its Status request needs."""

    domain: str
    solution: str
    record: InstanceRecord
    component: str
    # Name of the controller, from the cluster record; "" when the record
    # has none (written by an earlier version and not deployed since).
    controller: str
    # The instance's uuid (a field: a poll looks it up several times per instance).
    uuid: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "uuid", self.record.instance.uuid)


@dataclass
class SolutionView:
    """One solution as stored: header, element and cluster targets, watched instances."""

    domain: str
    header: pb.Solution
    element_targets: dict[str, int] = field(default_factory=dict)
    # (element, cluster version) -> target state.
    cluster_targets: dict[tuple[str, str], int] = field(default_factory=dict)
    instances: list[Watched] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.header.name


async def read_inventory(repo: Repository, skip: Callable[[str, str], bool] = lambda domain, solution: False) -> list[SolutionView]:
    """Every solution of every domain, except those `skip` names (by domain
    and solution name); a domain removed meanwhile is skipped."""
    views: list[SolutionView] = []
    for domain in await repo.model.list_domains():
        try:
            views.extend(await _read_domain(repo, domain, skip))
        except NotFound:
            continue
    return views


async def _read_domain(repo: Repository, domain: str, skip: Callable[[str, str], bool]) -> list[SolutionView]:
    headers = [h for h in await repo.solutions.list_solutions(domain) if not skip(domain, h.name)]
    return await gather_bounded((_read_solution(repo, domain, h) for h in headers), _READ_CONCURRENCY)


async def _read_solution(repo: Repository, domain: str, header: pb.Solution) -> SolutionView:
    elements, clusters, instances = await repo.solutions.parts(domain, header.name)
    view = SolutionView(domain, header)
    components = {e.value.name: e.value.component for e in elements}
    view.element_targets = {e.value.name: e.value.target for e in elements}
    view.cluster_targets = {(c.element, c.cluster.version): c.cluster.target for c in clusters}
    # The controller a cluster was deployed with is in its record: a later
    # catalog edit does not change whom the monitor asks.
    controllers = {(c.element, c.cluster.version): c.cluster.controller for c in clusters}
    for record in instances:
        if record.instance.target == pb.STATE_UNSPECIFIED:
            continue
        component = components.get(record.element, "")
        controller = controllers.get((record.element, record.cluster), "")
        view.instances.append(Watched(domain, header.name, record, component, controller))
    return view
