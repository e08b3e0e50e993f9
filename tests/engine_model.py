"""Small model documents for engine tests, built in Python instead of copied
YAML: each test states only what matters to it (sizes, sim parameters,
dependencies) and gets a valid domain document (DESIGN.md section 2 form)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from orchestration.yamlsafe import dump_yaml


@dataclass(frozen=True)
class Dependency:
    """A named dependency of a component on another component version."""

    name: str
    type: str  # "context" or "service"
    component: str
    version: str


@dataclass(frozen=True)
class Component:
    """One catalog entry; `controller` is the name a controller registers."""

    name: str
    version: str = "V1"
    controller: str = "sim"
    dependencies: Sequence[Dependency] = ()


@dataclass(frozen=True)
class Relationship:
    """Binds a dependency of the cluster's component to an element's cluster."""

    dependency: Dependency
    element: str
    version: str


@dataclass(frozen=True)
class Cluster:
    """One cluster of an element; `params` becomes its Configuration map."""

    version: str
    size: int
    min: int = 1
    max: int = 0  # 0: the same as size
    state: str = "active"
    params: Mapping[str, Any] = field(default_factory=dict)
    relationships: Sequence[Relationship] = ()


@dataclass(frozen=True)
class Element:
    name: str
    component: str
    clusters: Sequence[Cluster]


def _component(c: Component) -> dict[str, Any]:
    return {
        "Component": c.name,
        "Version": c.version,
        "Controller": c.controller,
        "Configuration": f"component {c.name} {c.version} of '{{{{solution}}}}'\n",
        "Dependencies": {
            d.name: {"Dependency": d.name, "Type": d.type, "Component": d.component, "Version": d.version,
                     "Configuration": ""}
            for d in c.dependencies
        },
    }


def _cluster(c: Cluster) -> dict[str, Any]:
    return {
        "Version": c.version,
        "State": c.state,
        "Min": c.min,
        "Max": c.max or c.size,
        "Size": c.size,
        # The sim reads sim_* (and the engine orch_*) parameters from this map.
        "Configuration": dump_yaml(dict(c.params)) if c.params else "",
        "Relationships": {
            r.dependency.name: {"Relationship": r.dependency.name, "Dependency": r.dependency.name,
                                "Type": r.dependency.type, "Element": r.element, "Version": r.version,
                                "Configuration": ""}
            for r in c.relationships
        },
    }


def architecture(name: str, version: str, elements: Sequence[Element]) -> dict[str, Any]:
    """One architecture entry of a domain document."""
    return {
        "Architecture": name,
        "Version": version,
        "Configuration": "",
        "Elements": {
            e.name: {"Element": e.name, "Component": e.component, "Configuration": "",
                     "Clusters": {c.version: _cluster(c) for c in e.clusters}}
            for e in elements
        },
    }


def domain(name: str, components: Sequence[Component], architectures: Sequence[dict[str, Any]]) -> str:
    """A domain document: its catalog and architectures (apply it with Suite.apply)."""
    return dump_yaml({
        "Name": name,
        "Components": {f"{c.name} - {c.version}": _component(c) for c in components},
        "Architectures": {f"{a['Architecture']} - {a['Version']}": a for a in architectures},
    })


def single(domain_name: str, arch: str, size: int, *, min: int = 1, max: int = 0, version: str = "V1",
           controller: str = "sim", params: Mapping[str, Any] | None = None) -> str:
    """A domain with one component and one architecture `arch` V1 of one element `web` (the common case)."""
    component = Component("web", version, controller)
    cluster = Cluster(version, size, min=min, max=max, params=params or {})
    return domain(domain_name, [component], [architecture(arch, "V1", [Element("web", "web", [cluster])])])
