"""Semantic validation of a parsed model (DESIGN.md section 2). Pure: no I/O.

Everything a document refers to must exist: components and versions in the
domain's catalog, elements and cluster versions in the same architecture,
dependencies of the element's component. An architecture's elements must not
depend on each other in a cycle. Errors are InvalidArgument naming the entity
path and field, e.g. ``Architectures/app - V1/Elements/db/Clusters/V1/Size``.
Paths are relative to the domain; validate_model prefixes ``Domains/<name>/``.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, field

from orchestration.model.lifecycle import ACTIVE, INACTIVE, INITIAL, STATE_NAMES
from orchestration.model.names import check_name
from orchestration.model.rendering import parse_parameters
from orchestration.model.rollouts import strategy
from orchestration.v1 import model_pb2 as pb
from orchestration_sdk.status_errors import InvalidArgument

MAX_CLUSTER_SIZE = 100_000

Catalog = Mapping[tuple[str, str], pb.Component]

_DEPENDENCY_TYPES = {pb.DEPENDENCY_TYPE_CONTEXT: "context", pb.DEPENDENCY_TYPE_SERVICE: "service"}
_DESIGN_STATES = (INITIAL, INACTIVE, ACTIVE)


def catalog_of(domain: pb.Domain) -> dict[tuple[str, str], pb.Component]:
    """The components of a domain keyed by (name, version)."""
    return {(c.name, c.version): c for c in domain.components}


def validate_model(model: pb.Model, catalogs: Mapping[str, Catalog]) -> None:
    """Validate every domain of model; a domain missing from catalogs uses its own components."""
    _unique(((d.name,) for d in model.domains), "Domains", "domain")
    for domain in model.domains:
        catalog = catalogs.get(domain.name)
        _validate_domain(domain, catalog_of(domain) if catalog is None else catalog, f"Domains/{domain.name}/")


def validate_domain(domain: pb.Domain, catalog: Catalog) -> None:
    """Validate a domain against the complete component catalog of that domain."""
    _validate_domain(domain, catalog, "")


def _validate_domain(domain: pb.Domain, catalog: Catalog, prefix: str) -> None:
    check_name(domain.name, f"{prefix}Name")
    _unique(((c.name, c.version) for c in domain.components), f"{prefix}Components", "component")
    _unique(((a.name, a.version) for a in domain.architectures), f"{prefix}Architectures", "architecture")
    _unique(((s.name,) for s in domain.solutions), f"{prefix}Solutions", "solution")
    _unique(((t.uuid,) for t in domain.tasks), f"{prefix}Tasks", "task")
    _unique(((e.uuid,) for e in domain.events), f"{prefix}Events", "event")
    _unique(((c.name, c.version) for c in domain.controllers), f"{prefix}Controllers", "controller")
    for component in domain.components:
        _component(component, catalog, f"{prefix}Components/{component.name} - {component.version}")
    names = {name for name, _ in catalog}
    for architecture in domain.architectures:
        _architecture(architecture, catalog, names, f"{prefix}Architectures/{architecture.name} - {architecture.version}")
    for solution in domain.solutions:
        _solution(solution, f"{prefix}Solutions/{solution.name}")
    tasks = {t.uuid for t in domain.tasks}
    for task in domain.tasks:
        _task(task, domain.name, f"{prefix}Tasks/{task.uuid}")
    for event in domain.events:
        _event(event, domain.name, tasks, f"{prefix}Events/{event.uuid}")
    for controller in domain.controllers:
        key = f"{controller.name}:{controller.version}" if controller.version else controller.name
        _controller(controller, f"{prefix}Controllers/{key}")


def _unique(keys: Iterable[tuple[str, ...]], path: str, what: str) -> None:
    seen: set[Hashable] = set()
    for key in keys:
        if key in seen:
            raise InvalidArgument(f"{path}: duplicate {what} {' - '.join(key)!r}")
        seen.add(key)


# ---- catalog and architectures ----------------------------------------------


def _component(component: pb.Component, catalog: Catalog, path: str) -> None:
    check_name(component.name, f"{path}/Component")
    check_name(component.version, f"{path}/Version")
    if not component.controller:
        raise InvalidArgument(f"{path}/Controller: a controller is required")
    check_name(component.controller, f"{path}/Controller")
    _unique(((d.name,) for d in component.dependencies), f"{path}/Dependencies", "dependency")
    for dependency in component.dependencies:
        where = f"{path}/Dependencies/{dependency.name}"
        check_name(dependency.name, f"{where}/Dependency")
        if dependency.type not in _DEPENDENCY_TYPES:
            raise InvalidArgument(f"{where}/Type: must be context or service")
        check_name(dependency.component, f"{where}/Component")
        check_name(dependency.version, f"{where}/Version")
        if (dependency.component, dependency.version) not in catalog:
            raise InvalidArgument(
                f"{where}: unknown component {dependency.component!r} version {dependency.version!r} in the catalog"
            )


@dataclass
class _Lookups:
    """One architecture's indexes: every check is a lookup, never a scan (a
    document of a few MiB can hold 100,000 elements, dependencies or relationships)."""

    elements: dict[str, pb.ElementConfiguration]
    versions: dict[str, set[str]]
    dependencies: dict[tuple[str, str], dict[str, pb.Dependency]] = field(default_factory=dict)

    def dependency(self, component: pb.Component, name: str) -> pb.Dependency | None:
        found = self.dependencies.get((component.name, component.version))
        if found is None:
            found = self.dependencies[(component.name, component.version)] = {}
            for dependency in component.dependencies:
                found.setdefault(dependency.name, dependency)
        return found.get(name)


def _architecture(architecture: pb.Architecture, catalog: Catalog, names: set[str], path: str) -> None:
    check_name(architecture.name, f"{path}/Architecture")
    check_name(architecture.version, f"{path}/Version")
    _unique(((e.name,) for e in architecture.elements), f"{path}/Elements", "element")
    lookups = _Lookups(
        elements={e.name: e for e in architecture.elements},
        versions={e.name: {c.version for c in e.clusters} for e in architecture.elements},
    )
    _parameters(architecture.configuration, f"{path}/Configuration")
    # Every element's own names first: a relationship's complaint about its target would hide them.
    for element in architecture.elements:
        _element_names(element, names, f"{path}/Elements/{element.name}")
    for element in architecture.elements:
        _element(element, lookups, catalog, f"{path}/Elements/{element.name}")
    _no_cycle(architecture, f"{path}/Elements")


def _element_names(element: pb.ElementConfiguration, names: set[str], path: str) -> None:
    """An element's names, its component and its cluster versions, before any relationship."""
    check_name(element.name, f"{path}/Element")
    check_name(element.component, f"{path}/Component")
    if element.component not in names:
        raise InvalidArgument(f"{path}/Component: unknown component {element.component!r} in the catalog")
    _unique(((c.version,) for c in element.clusters), f"{path}/Clusters", "cluster")
    for cluster in element.clusters:
        check_name(cluster.version, f"{path}/Clusters/{cluster.version}/Version")


def _parameters(text: str, path: str) -> None:
    """A configuration map must be YAML the safe loader accepts (checked at
    apply, so that planning a stored model never meets it)."""
    try:
        parse_parameters(text)
    except InvalidArgument as exc:
        raise InvalidArgument(f"{path}: {exc}") from None


def _element(element: pb.ElementConfiguration, lookups: _Lookups, catalog: Catalog, path: str) -> None:
    _parameters(element.configuration, f"{path}/Configuration")
    if element.HasField("rollout"):
        for cluster in element.clusters:
            strategy(element.rollout, cluster.size, f"{path}/Rollout")
    for cluster in element.clusters:
        where = f"{path}/Clusters/{cluster.version}"
        _parameters(cluster.configuration, f"{where}/Configuration")
        component = catalog.get((element.component, cluster.version))
        if component is None:
            raise InvalidArgument(
                f"{where}/Version: component {element.component!r} has no version {cluster.version!r} in the catalog"
            )
        _cluster_sizes(cluster, where)
        _unique(((r.name,) for r in cluster.relationships), f"{where}/Relationships", "relationship")
        for relationship in cluster.relationships:
            _relationship(relationship, component, lookups, f"{where}/Relationships/{relationship.name}")


def _cluster_sizes(cluster: pb.ClusterConfiguration, path: str) -> None:
    if cluster.state not in _DESIGN_STATES:
        shown = STATE_NAMES.get(cluster.state, "")
        raise InvalidArgument(f"{path}/State: must be initial, inactive or active, got {shown!r}")
    if cluster.min < 0:
        raise InvalidArgument(f"{path}/Min: {cluster.min} is negative")
    if cluster.size < cluster.min:
        raise InvalidArgument(f"{path}/Size: {cluster.size} is less than Min {cluster.min}")
    if cluster.max < cluster.size:
        raise InvalidArgument(f"{path}/Max: {cluster.max} is less than Size {cluster.size}")
    if cluster.max > MAX_CLUSTER_SIZE:
        raise InvalidArgument(f"{path}/Max: {cluster.max} is more than the limit of {MAX_CLUSTER_SIZE}")


def _relationship(
    relationship: pb.RelationshipConfiguration,
    component: pb.Component,
    lookups: _Lookups,
    path: str,
) -> None:
    check_name(relationship.name, f"{path}/Relationship")
    check_name(relationship.dependency, f"{path}/Dependency")
    dependency = lookups.dependency(component, relationship.dependency)
    if dependency is None:
        raise InvalidArgument(
            f"{path}/Dependency: component {component.name!r} version {component.version!r} "
            f"has no dependency {relationship.dependency!r}"
        )
    if relationship.type != dependency.type:
        expected = _DEPENDENCY_TYPES.get(dependency.type, "")
        got = _DEPENDENCY_TYPES.get(relationship.type, "")
        raise InvalidArgument(f"{path}/Type: {got!r} differs from the type {expected!r} of dependency {dependency.name!r}")
    check_name(relationship.element, f"{path}/Element")
    target = lookups.elements.get(relationship.element)
    if target is None:
        raise InvalidArgument(f"{path}/Element: unknown element {relationship.element!r} in this architecture")
    check_name(relationship.version, f"{path}/Version")
    if relationship.version not in lookups.versions[target.name]:
        raise InvalidArgument(f"{path}/Version: element {target.name!r} has no cluster of version {relationship.version!r}")
    if target.component != dependency.component:
        raise InvalidArgument(
            f"{path}/Element: element {target.name!r} is a {target.component!r}, "
            f"dependency {dependency.name!r} needs a {dependency.component!r}"
        )


def _no_cycle(architecture: pb.Architecture, path: str) -> None:
    """Reject elements that depend on each other in a circle, naming the circle."""
    needs: dict[str, dict[str, None]] = {}  # element -> the elements it needs, in order, each once
    for element in architecture.elements:
        targets = needs.setdefault(element.name, {})
        for cluster in element.clusters:
            for relationship in cluster.relationships:
                targets.setdefault(relationship.element, None)
    done: set[str] = set()
    # Iterative depth-first search: an architecture may hold many elements.
    for start in needs:
        if start in done:
            continue
        trail = [start]
        on_trail = {start}
        pending = [iter(needs[start])]
        while pending:
            following = next(pending[-1], None)
            if following is None:
                pending.pop()
                done.add(trail[-1])
                on_trail.discard(trail.pop())
            elif following in on_trail:
                cycle = trail[trail.index(following):] + [following]
                raise InvalidArgument(f"{path}: dependency cycle {' -> '.join(cycle)}")
            elif following not in done and following in needs:
                trail.append(following)
                on_trail.add(following)
                pending.append(iter(needs[following]))


# ---- run-time records ---------------------------------------------------------


def _state(value: int, path: str) -> None:
    # Records may be mid-deployment: unspecified ("") is allowed, unknown numbers are not.
    if value != 0 and value not in STATE_NAMES:
        raise InvalidArgument(f"{path}: unknown state {value}")


def _solution(solution: pb.Solution, path: str) -> None:
    check_name(solution.name, f"{path}/Solution")
    if solution.version:
        check_name(solution.version, f"{path}/Version")
    if solution.architecture:
        check_name(solution.architecture, f"{path}/Architecture")
    _state(solution.target, f"{path}/Target")
    _state(solution.state, f"{path}/State")
    _unique(((e.name,) for e in solution.elements), f"{path}/Elements", "element")
    for element in solution.elements:
        where = f"{path}/Elements/{element.name}"
        check_name(element.name, f"{where}/Element")
        check_name(element.component, f"{where}/Component")
        _state(element.target, f"{where}/Target")
        _state(element.state, f"{where}/State")
        _unique(((c.version,) for c in element.clusters), f"{where}/Clusters", "cluster")
        for cluster in element.clusters:
            _run_time_cluster(cluster, f"{where}/Clusters/{cluster.version}")


def _run_time_cluster(cluster: pb.Cluster, path: str) -> None:
    check_name(cluster.version, f"{path}/Version")
    _state(cluster.target, f"{path}/Target")
    _state(cluster.state, f"{path}/State")
    if not 0 <= cluster.min <= cluster.size <= cluster.max <= MAX_CLUSTER_SIZE:
        raise InvalidArgument(
            f"{path}: need 0 <= Min <= Size <= Max <= {MAX_CLUSTER_SIZE}, "
            f"got Min {cluster.min}, Size {cluster.size}, Max {cluster.max}"
        )
    _unique(((r.name,) for r in cluster.relationships), f"{path}/Relationships", "relationship")
    for relationship in cluster.relationships:
        where = f"{path}/Relationships/{relationship.name}"
        check_name(relationship.name, f"{where}/Relationship")
        check_name(relationship.dependency, f"{where}/Dependency")
        check_name(relationship.element, f"{where}/Element")
        check_name(relationship.version, f"{where}/Version")
        _state(relationship.target, f"{where}/Target")
        _state(relationship.state, f"{where}/State")
    _unique(((i.uuid,) for i in cluster.instances), f"{path}/Instances", "instance")
    for instance in cluster.instances:
        where = f"{path}/Instances/{instance.uuid}"
        check_name(instance.uuid, f"{where}/UUID")
        _state(instance.target, f"{where}/Target")
        _state(instance.state, f"{where}/State")


def _task(task: pb.Task, domain: str, path: str) -> None:
    check_name(task.uuid, f"{path}/UUID")
    if task.domain and task.domain != domain:
        raise InvalidArgument(f"{path}/Domain: {task.domain!r} is not this domain {domain!r}")
    if task.type not in pb.TaskType.values() or task.type == pb.TASK_TYPE_UNSPECIFIED:
        raise InvalidArgument(f"{path}/Type: a task type is required")
    if task.status not in pb.TaskStatus.values() or task.status == pb.TASK_STATUS_UNSPECIFIED:
        raise InvalidArgument(f"{path}/Status: a task status is required")
    _state(task.state, f"{path}/State")
    if task.parent:
        check_name(task.parent, f"{path}/Parent")
    for index, subtask in enumerate(task.subtasks):
        check_name(subtask, f"{path}/Subtasks[{index}]")
    for index, event in enumerate(task.events):
        check_name(event, f"{path}/Events[{index}]")


def _event(event: pb.Event, domain: str, tasks: set[str], path: str) -> None:
    check_name(event.uuid, f"{path}/UUID")
    if event.domain and event.domain != domain:
        raise InvalidArgument(f"{path}/Domain: {event.domain!r} is not this domain {domain!r}")
    if event.type not in pb.EventType.values() or event.type == pb.EVENT_TYPE_UNSPECIFIED:
        raise InvalidArgument(f"{path}/Type: an event type is required")
    if event.task not in tasks:
        raise InvalidArgument(f"{path}/Task: unknown task {event.task!r} in this document")


def _controller(controller: pb.Controller, path: str) -> None:
    check_name(controller.name, f"{path}/Controller")
    if controller.version:
        check_name(controller.version, f"{path}/Version")
    _state(controller.status, f"{path}/Status")
