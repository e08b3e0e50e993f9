"""Semantic validation: the demo files pass; every broken reference, size,
state, name, duplicate and dependency cycle is rejected naming entity and field."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import pytest

from orchestration.model import codec, validation
from orchestration.v1 import model_pb2 as pb
from orchestration_sdk.status_errors import InvalidArgument

DATA = Path(__file__).parent / "data"
ARCH = "Architectures/app - V0.0.0"
APP = f"{ARCH}/Elements/app/Clusters/V1.0.0"


@functools.cache
def _parsed(n: int) -> pb.Domain:
    text = (DATA / f"demo{n}.yaml").read_text(encoding="utf-8")
    return codec.parse_document(text).model.domains[0]


def demo_domain(n: int) -> pb.Domain:
    """A fresh copy of the demo's domain, free to mutate (parsing demo3 takes a while)."""
    domain = pb.Domain()
    domain.CopyFrom(_parsed(n))
    return domain


def rejected(domain: pb.Domain, catalog: validation.Catalog | None = None) -> str:
    with pytest.raises(InvalidArgument) as info:
        validation.validate_domain(domain, validation.catalog_of(domain) if catalog is None else catalog)
    return info.value.message


def element(domain: pb.Domain, name: str) -> pb.ElementConfiguration:
    return next(e for e in domain.architectures[0].elements if e.name == name)


def relationship(domain: pb.Domain, element_name: str, name: str) -> pb.RelationshipConfiguration:
    return next(r for r in element(domain, element_name).clusters[0].relationships if r.name == name)


# ---- good paths -------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 3])
def test_demo_files_validate(n: int) -> None:
    text = (DATA / f"demo{n}.yaml").read_text(encoding="utf-8")
    model = codec.parse_document(text).model
    validation.validate_model(model, {"demo": validation.catalog_of(model.domains[0])})
    validation.validate_model(model, {})  # a domain without a given catalog uses its own components
    validation.validate_domain(model.domains[0], validation.catalog_of(model.domains[0]))


def test_architecture_is_checked_against_the_given_catalog() -> None:
    domain = demo_domain(2)
    stored = validation.catalog_of(domain)
    only_architecture = pb.Domain(name="demo", architectures=domain.architectures)
    validation.validate_domain(only_architecture, stored)
    assert rejected(only_architecture, {}) == f"{ARCH}/Elements/app/Component: unknown component 'application' in the catalog"


def test_component_may_depend_on_its_own_type() -> None:
    domain = demo_domain(2)
    service = domain.components[0].dependencies[1]
    assert (domain.components[0].name, service.component) == ("application", "application")
    # app (an application) uses db (an application) as its service: no cycle.
    assert relationship(domain, "app", "db").element == "db"
    validation.validate_domain(domain, validation.catalog_of(domain))


def test_validate_model_prefixes_the_domain() -> None:
    domain = demo_domain(2)
    element(domain, "app").clusters[0].size = 4
    with pytest.raises(InvalidArgument) as info:
        validation.validate_model(pb.Model(domains=[domain]), {})
    assert info.value.message == f"Domains/demo/{APP}/Max: 3 is less than Size 4"


def test_duplicate_domains_are_rejected() -> None:
    domain = demo_domain(1)
    with pytest.raises(InvalidArgument) as info:
        validation.validate_model(pb.Model(domains=[domain, domain]), {})
    assert info.value.message == "Domains: duplicate domain 'demo'"


# ---- rejections: catalog and architecture ---------------------------------------


def _set(path: Callable[[pb.Domain], object], attr: str, value: object) -> Callable[[pb.Domain], None]:
    return lambda d: setattr(path(d), attr, value)


def _append(path: Callable[[pb.Domain], object], attr: str, index: int = 0) -> Callable[[pb.Domain], None]:
    def mutate(d: pb.Domain) -> None:
        items = getattr(path(d), attr)
        items.add().CopyFrom(items[index])

    return mutate


def _app_cluster(d: pb.Domain) -> pb.ClusterConfiguration:
    return element(d, "app").clusters[0]


def _add_relationship(source: str, target: str, dependency: str = "service") -> Callable[[pb.Domain], None]:
    def mutate(d: pb.Domain) -> None:
        kind = pb.DEPENDENCY_TYPE_SERVICE if dependency == "service" else pb.DEPENDENCY_TYPE_CONTEXT
        element(d, source).clusters[0].relationships.add(name="loop", dependency=dependency, type=kind, element=target, version="V1.0.0")

    return mutate


CASES: list[tuple[str, Callable[[pb.Domain], None], str]] = [
    ("domain name", _set(lambda d: d, "name", "bad name"), "Name: 'bad name' is not a valid name"),
    ("component name", _set(lambda d: d.components[0], "name", "-app"), "Components/-app - V1.0.0/Component: '-app' is not a valid name"),
    ("component version", _set(lambda d: d.components[0], "version", "V1..0"), "Components/application - V1..0/Version: 'V1..0' is not a valid name"),
    ("controller missing", _set(lambda d: d.components[0], "controller", ""), "Components/application - V1.0.0/Controller: a controller is required"),
    ("controller name", _set(lambda d: d.components[0], "controller", "In ternal"), "Components/application - V1.0.0/Controller: 'In ternal' is not a valid name"),
    ("dependency name", _set(lambda d: d.components[0].dependencies[0], "name", "se/rver"), "Components/application - V1.0.0/Dependencies/se/rver/Dependency: 'se/rver' is not a valid name"),
    ("dependency type", _set(lambda d: d.components[0].dependencies[0], "type", 0), "Components/application - V1.0.0/Dependencies/server/Type: must be context or service"),
    ("dependency target", _set(lambda d: d.components[0].dependencies[0], "version", "V9"), "Components/application - V1.0.0/Dependencies/server: unknown component 'server' version 'V9' in the catalog"),
    ("duplicate component", _append(lambda d: d, "components"), "Components: duplicate component 'application - V1.0.0'"),
    ("duplicate dependency", _append(lambda d: d.components[0], "dependencies"), "Components/application - V1.0.0/Dependencies: duplicate dependency 'server'"),
    ("architecture name", _set(lambda d: d.architectures[0], "name", ""), "Architectures/ - V0.0.0/Architecture: a name is required"),
    ("architecture version", _set(lambda d: d.architectures[0], "version", "V 0"), "Architectures/app - V 0/Version: 'V 0' is not a valid name"),
    ("duplicate architecture", _append(lambda d: d, "architectures"), "Architectures: duplicate architecture 'app - V0.0.0'"),
    ("element name", _set(lambda d: element(d, "app"), "name", "a pp"), f"{ARCH}/Elements/a pp/Element: 'a pp' is not a valid name"),
    ("duplicate element", _append(lambda d: d.architectures[0], "elements"), f"{ARCH}/Elements: duplicate element 'app'"),
    ("element component", _set(lambda d: element(d, "app"), "component", "database"), f"{ARCH}/Elements/app/Component: unknown component 'database' in the catalog"),
    ("cluster version", _set(_app_cluster, "version", "V2.0.0"), f"{ARCH}/Elements/app/Clusters/V2.0.0/Version: component 'application' has no version 'V2.0.0' in the catalog"),
    ("duplicate cluster", _append(lambda d: element(d, "app"), "clusters"), f"{ARCH}/Elements/app/Clusters: duplicate cluster 'V1.0.0'"),
    ("cluster state failure", _set(_app_cluster, "state", pb.STATE_FAILURE), f"{APP}/State: must be initial, inactive or active, got 'failure'"),
    ("cluster state unspecified", _set(_app_cluster, "state", pb.STATE_UNSPECIFIED), f"{APP}/State: must be initial, inactive or active, got ''"),
    ("negative min", _set(_app_cluster, "min", -1), f"{APP}/Min: -1 is negative"),
    ("size below min", _set(_app_cluster, "size", 2), f"{APP}/Size: 2 is less than Min 3"),
    ("size above max", _set(_app_cluster, "max", 2), f"{APP}/Max: 2 is less than Size 3"),
    ("max above limit", _set(_app_cluster, "max", validation.MAX_CLUSTER_SIZE + 1), f"{APP}/Max: 100001 is more than the limit of 100000"),
    ("relationship name", _set(lambda d: relationship(d, "app", "db"), "name", "d b"), f"{APP}/Relationships/d b/Relationship: 'd b' is not a valid name"),
    ("duplicate relationship", _append(_app_cluster, "relationships"), f"{APP}/Relationships: duplicate relationship 'db'"),
    ("relationship dependency", _set(lambda d: relationship(d, "app", "db"), "dependency", "storage"), f"{APP}/Relationships/db/Dependency: component 'application' version 'V1.0.0' has no dependency 'storage'"),
    ("relationship type", _set(lambda d: relationship(d, "app", "db"), "type", pb.DEPENDENCY_TYPE_CONTEXT), f"{APP}/Relationships/db/Type: 'context' differs from the type 'service' of dependency 'service'"),
    ("relationship element", _set(lambda d: relationship(d, "app", "db"), "element", "cache"), f"{APP}/Relationships/db/Element: unknown element 'cache' in this architecture"),
    ("relationship version", _set(lambda d: relationship(d, "app", "db"), "version", "V0.9"), f"{APP}/Relationships/db/Version: element 'db' has no cluster of version 'V0.9'"),
    ("relationship target component", _set(lambda d: relationship(d, "app", "server"), "element", "db"), f"{APP}/Relationships/server/Element: element 'db' is a 'application', dependency 'server' needs a 'server'"),
    ("cycle of two", _add_relationship("db", "app"), f"{ARCH}/Elements: dependency cycle app -> db -> app"),
    ("cycle of one", _add_relationship("app", "app"), f"{ARCH}/Elements: dependency cycle app -> app"),
]


@pytest.mark.parametrize(("case", "mutate", "expected"), CASES, ids=[c[0] for c in CASES])
def test_catalog_and_architecture_rejections(case: str, mutate: Callable[[pb.Domain], None], expected: str) -> None:
    domain = demo_domain(2)
    mutate(domain)
    # Name errors go on to quote the name rule.
    assert rejected(domain).startswith(expected)


def test_cycle_through_context_and_service_relationships() -> None:
    # tenant needs nothing; make the tenant component depend on the application and
    # bind tenant -> fw (an application): fw -> fw-server -> tenant -> fw.
    domain = demo_domain(2)
    tenant = next(c for c in domain.components if c.name == "tenant")
    tenant.dependencies.add(name="app", type=pb.DEPENDENCY_TYPE_CONTEXT, component="application", version="V1.0.0")
    element(domain, "tenant").clusters[0].relationships.add(
        name="app", dependency="app", type=pb.DEPENDENCY_TYPE_CONTEXT, element="fw", version="V1.0.0"
    )
    message = rejected(domain)
    assert message.startswith(f"{ARCH}/Elements: dependency cycle ")
    cycle = message.rsplit("cycle ", 1)[1].split(" -> ")
    assert cycle[0] == cycle[-1] and {"tenant", "fw"} <= set(cycle)
    # Every hop of the reported cycle is a real relationship.
    for source, target in zip(cycle, cycle[1:]):
        assert any(r.element == target for c in element(domain, source).clusters for r in c.relationships)


# ---- rejections: run-time records (demo3) -----------------------------------------

SOL = "Solutions/app"
TASK = "0f7bec76-3252-41b0-a7c9-82b75abba9de"
EVENT = "02ed6397-c8fc-4334-983f-f40dd87475cf"


def _task(d: pb.Domain) -> pb.Task:
    return next(t for t in d.tasks if t.uuid == TASK)


def _event(d: pb.Domain) -> pb.Event:
    return next(e for e in d.events if e.uuid == EVENT)


def _instance(d: pb.Domain) -> pb.Instance:
    return d.solutions[0].elements[0].clusters[0].instances[0]


RECORD_CASES: list[tuple[str, Callable[[pb.Domain], None], str]] = [
    ("solution name", _set(lambda d: d.solutions[0], "name", "a pp"), "Solutions/a pp/Solution: 'a pp' is not a valid name"),
    ("solution state", _set(lambda d: d.solutions[0], "state", 9), f"{SOL}/State: unknown state 9"),
    ("solution architecture", _set(lambda d: d.solutions[0], "architecture", "a..b"), f"{SOL}/Architecture: 'a..b' is not a valid name"),
    ("duplicate solution", _append(lambda d: d, "solutions"), "Solutions: duplicate solution 'app'"),
    ("element target", _set(lambda d: d.solutions[0].elements[0], "target", 7), f"{SOL}/Elements/app/Target: unknown state 7"),
    ("duplicate run-time element", _append(lambda d: d.solutions[0], "elements"), f"{SOL}/Elements: duplicate element 'app'"),
    ("run-time cluster sizes", _set(lambda d: d.solutions[0].elements[0].clusters[0], "size", 4), f"{SOL}/Elements/app/Clusters/V1.0.0: need 0 <= Min <= Size <= Max <= 100000, got Min 3, Size 4, Max 3"),
    ("run-time relationship", _set(lambda d: d.solutions[0].elements[0].clusters[0].relationships[0], "element", ""), f"{SOL}/Elements/app/Clusters/V1.0.0/Relationships/db/Element: a name is required"),
    ("instance uuid", _set(_instance, "uuid", ""), f"{SOL}/Elements/app/Clusters/V1.0.0/Instances//UUID: a name is required"),
    ("duplicate instance", _append(lambda d: d.solutions[0].elements[0].clusters[0], "instances"), f"{SOL}/Elements/app/Clusters/V1.0.0/Instances: duplicate instance '20957de0-194e-4f25-ba32-142e9e050280'"),
    ("instance state", _set(_instance, "state", 5), f"{SOL}/Elements/app/Clusters/V1.0.0/Instances/20957de0-194e-4f25-ba32-142e9e050280/State: unknown state 5"),
    ("task uuid", _set(_task, "uuid", ""), "Tasks//UUID: a name is required"),
    ("duplicate task", _append(lambda d: d, "tasks"), f"Tasks: duplicate task '{'0f7bec76-3252-41b0-a7c9-82b75abba9de'}'"),
    ("task type", _set(_task, "type", pb.TASK_TYPE_UNSPECIFIED), f"Tasks/{TASK}/Type: a task type is required"),
    ("task status", _set(_task, "status", 42), f"Tasks/{TASK}/Status: a task status is required"),
    ("task state", _set(_task, "state", 8), f"Tasks/{TASK}/State: unknown state 8"),
    ("task domain", _set(_task, "domain", "other"), f"Tasks/{TASK}/Domain: 'other' is not this domain 'demo'"),
    ("task subtask", lambda d: _task(d).subtasks.append(""), f"Tasks/{TASK}/Subtasks[4]: a name is required"),
    ("event uuid", _set(_event, "uuid", "a b"), "Events/a b/UUID: 'a b' is not a valid name"),
    ("duplicate event", _append(lambda d: d, "events"), "Events: duplicate event '02ed6397-c8fc-4334-983f-f40dd87475cf'"),
    ("event type", _set(_event, "type", pb.EVENT_TYPE_UNSPECIFIED), f"Events/{EVENT}/Type: an event type is required"),
    ("event task", _set(_event, "task", "0000"), f"Events/{EVENT}/Task: unknown task '0000' in this document"),
    ("event domain", _set(_event, "domain", "lab"), f"Events/{EVENT}/Domain: 'lab' is not this domain 'demo'"),
    ("controller name", _set(lambda d: d.controllers[0], "name", "In ternal"), "Controllers/In ternal:V1.0.0/Controller: 'In ternal' is not a valid name"),
    ("duplicate controller", _append(lambda d: d, "controllers"), "Controllers: duplicate controller 'Internal - V1.0.0'"),
]


@pytest.mark.parametrize(("case", "mutate", "expected"), RECORD_CASES, ids=[c[0] for c in RECORD_CASES])
def test_record_rejections(case: str, mutate: Callable[[pb.Domain], None], expected: str) -> None:
    domain = demo_domain(3)
    mutate(domain)
    # Name errors go on to quote the name rule.
    assert rejected(domain).startswith(expected)


def test_tasks_may_list_an_event_twice() -> None:
    # demo3 does (SolAr recorded some events twice); that is history, not an error.
    task = _task(demo_domain(3))
    assert len(task.events) > len(set(task.events))
    validation.validate_domain(demo_domain(3), validation.catalog_of(demo_domain(3)))
