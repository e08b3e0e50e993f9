"""What the monitor asks about: the instance records of every solution that
have a target state, each with the controller that serves it. Read in bulk
(three key-filter reads per solution), never one round trip per instance,
and kept between polls until the solution's records change."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from orchestration.store.kvstore import Position
from orchestration.store.repository import InstanceRecord, Repository
from orchestration.v1 import model_pb2 as pb
from orchestration_sdk.runtime.concurrency import gather_bounded
from orchestration_sdk.status_errors import NotFound

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


class Inventory:
    """Every solution's view, kept between polls: a solution is read again
    only when one of its records was written or deleted since the last poll
    (the solutions bucket's stream says which, in one request when nothing
    was), so a poll of a quiet system reads no instance record at all. A
    solution that is skipped (its task runs) or gone is forgotten; after more
    than REREAD_ABOVE writes, everything is read again."""

    # Writes since the last poll above which their keys are not read one by
    # one: after a large deploy, reading every record again costs less.
    REREAD_ABOVE = 2000

    def __init__(self, repo: Repository) -> None:
        self.repo = repo
        self._views: dict[tuple[str, str], SolutionView] = {}
        self._position = Position()  # in the solutions bucket's stream, read up to
        self.read_count = 0  # views the last read() read from the store (the others were kept)

    async def read(self, skip: Callable[[str, str], bool] = lambda domain, solution: False) -> list[SolutionView]:
        """Every solution of every domain, except those `skip` names (by domain
        and solution name); a domain removed meanwhile is skipped."""
        changed, self._position = await self.repo.solutions.changed_since(self._position, self.REREAD_ABOVE)
        if changed is None:
            self._views.clear()
        else:
            for key in changed:
                self._views.pop(key, None)
        headers: list[tuple[str, pb.Solution]] = []
        for domain in await self.repo.model.list_domains():
            try:
                found = await self.repo.solutions.list_solutions(domain)
            except NotFound:
                continue
            headers.extend((domain, h) for h in found if not skip(domain, h.name))
        kept = {(d, h.name): self._views.get((d, h.name)) for d, h in headers}
        stale = [(d, h) for d, h in headers if (v := kept[(d, h.name)]) is None or v.header != h]
        fresh = await gather_bounded((_read_solution(self.repo, d, h) for d, h in stale), _READ_CONCURRENCY)
        self.read_count = len(fresh)
        kept.update({(v.domain, v.name): v for v in fresh})
        self._views = {k: v for k, v in kept.items() if v is not None}
        return list(self._views.values())


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
