"""The planning rules (DESIGN.md sections 3 and 5) as pure unit tests: the
lifecycle table, the path between two states, roll-up, the desired solution
of an architecture, merge (scaling, rolling replacement, removal), the edits
of a solution, the work of an instance and the gates of a plan. No NATS, no
processes, no sleeps."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable

import pytest

from orchestration.model import lifecycle, planner
from orchestration.model.lifecycle import ACTIVE, FAILURE, INACTIVE, INITIAL, next_state, plan_transitions
from orchestration.v1 import model_pb2 as pb
from orchestration.v1.model_pb2 import Transition
from orchestration_sdk.status_errors import FailedPrecondition, InvalidArgument, NotFound

UNSPECIFIED = pb.STATE_UNSPECIFIED
CONTEXT = pb.DEPENDENCY_TYPE_CONTEXT
SERVICE = pb.DEPENDENCY_TYPE_SERVICE

CREATE = Transition.TRANSITION_CREATE
CONFIGURE = Transition.TRANSITION_CONFIGURE
START = Transition.TRANSITION_START
RECONFIGURE = Transition.TRANSITION_RECONFIGURE
STOP = Transition.TRANSITION_STOP
DESTROY = Transition.TRANSITION_DESTROY
RESET = Transition.TRANSITION_RESET

ALL_TRANSITIONS = (CREATE, CONFIGURE, START, RECONFIGURE, STOP, DESTROY, RESET)
LIFECYCLE_STATES = (INITIAL, INACTIVE, ACTIVE, FAILURE)
TARGET_STATES = (INITIAL, INACTIVE, ACTIVE)

DOMAIN = "dom"
SOLUTION = "shop"


# --------------------------------------------------------------------------
# builders


def uuids(prefix: str = "u") -> Callable[[], str]:
    """A deterministic new_uuid: u01, u02, ..."""
    counter = itertools.count(1)
    return lambda: f"{prefix}{next(counter):02d}"


def no_uuid() -> str:
    raise AssertionError("no new instance expected")


def catalog(*components: pb.Component) -> dict[tuple[str, str], pb.Component]:
    return {(c.name, c.version): c for c in components}


NETWORK = pb.Component(name="network", version="V1", controller="netctl", configuration="cidr: {{cidr}}")
DATABASE = pb.Component(
    name="database", version="V1", controller="dbctl:2", configuration="db: {{element}}",
    dependencies=[pb.Dependency(name="net", type=CONTEXT, component="network", version="V1",
                                configuration="attach: {{relationship}}-{{cluster}}")],
)


def application(version: str) -> pb.Component:
    return pb.Component(
        name="application", version=version, controller="appctl",
        configuration="name: {{element}}-{{cluster}}\nlevel: {{level}}\nunknown: {{nope}}",
        dependencies=[
            pb.Dependency(name="net", type=CONTEXT, component="network", version="V1", configuration="net: {{relationship}}"),
            pb.Dependency(name="database", type=SERVICE, component="database", version="V1",
                          configuration="url: {{relationship}}@{{element}}"),
        ],
    )


CATALOG = catalog(NETWORK, DATABASE, application("V1"), application("V2"))


def app_cluster(version: str = "V1", size: int = 2, state: pb.State = UNSPECIFIED, configuration: str = "") -> pb.ClusterConfiguration:
    return pb.ClusterConfiguration(
        version=version, state=state, min=1, max=4, size=size, configuration=configuration,
        relationships=[
            pb.RelationshipConfiguration(name="net", dependency="net", type=CONTEXT, element="net", version="V1"),
            pb.RelationshipConfiguration(name="db", dependency="database", type=SERVICE, element="db", version="V1",
                                         configuration="pool: 5"),
        ],
    )


def architecture(*app_clusters: pb.ClusterConfiguration, with_db: bool = True, app_size: int = 2) -> pb.Architecture:
    """net (network) <-context- db (database) <-service- app (application),
    and app -context-> net."""
    elements = [
        pb.ElementConfiguration(name="net", component="network", configuration="cidr: 10.0.0.0/24",
                                clusters=[pb.ClusterConfiguration(version="V1", min=1, max=1, size=1)]),
    ]
    if with_db:
        elements.append(pb.ElementConfiguration(
            name="db", component="database",
            clusters=[pb.ClusterConfiguration(
                version="V1", min=1, max=3, size=1,
                relationships=[pb.RelationshipConfiguration(name="net", dependency="net", type=CONTEXT,
                                                            element="net", version="V1")])],
        ))
    elements.append(pb.ElementConfiguration(
        name="app", component="application", configuration="level: element",
        clusters=list(app_clusters) or [app_cluster(size=app_size)],
    ))
    return pb.Architecture(name="shop-arch", version="1.0", configuration="level: arch", elements=elements)


def desired(arch: pb.Architecture | None = None) -> pb.Solution:
    return planner.desired_solution(DOMAIN, SOLUTION, arch or architecture(), CATALOG)


def cluster_of(solution: pb.Solution, element: str, version: str = "V1") -> pb.Cluster:
    return planner.find_cluster(solution, element, version)


def element_of(solution: pb.Solution, name: str) -> pb.Element:
    (found,) = [e for e in solution.elements if e.name == name]
    return found


def settle(solution: pb.Solution, state: pb.State = ACTIVE) -> pb.Solution:
    """Every live instance in `state` with its cluster's configuration applied (a converged run)."""
    result = pb.Solution()
    result.CopyFrom(solution)
    for element in result.elements:
        element.state = state
        for cluster in element.clusters:
            cluster.state = state
            applied = planner.cluster_digest(cluster)
            for instance in cluster.instances:
                instance.state = state
                instance.applied = applied
    result.state = state
    return result


def deployed(arch: pb.Architecture | None = None) -> pb.Solution:
    """A solution deployed from `arch` and converged to active."""
    return settle(planner.merge(None, desired(arch), uuids()))


def instance_states(cluster: pb.Cluster) -> dict[str, tuple[pb.State, pb.State, bool]]:
    return {i.uuid: (i.state, i.target, i.remove) for i in cluster.instances}


def cluster_with(*instances: tuple[str, pb.State], size: int, target: pb.State = ACTIVE) -> pb.Cluster:
    return pb.Cluster(version="V1", target=target, min=0, max=10, size=size,
                      instances=[pb.Instance(uuid=u, state=s, target=ACTIVE) for u, s in instances])


def one_cluster_solution(cluster: pb.Cluster, name: str = "app") -> pb.Solution:
    return pb.Solution(name=SOLUTION, target=ACTIVE,
                       elements=[pb.Element(name=name, component="application", target=ACTIVE, clusters=[cluster])])


# --------------------------------------------------------------------------
# section 3: the lifecycle table


def test_lifecycle_table_is_the_design_table() -> None:
    table = {lifecycle.TRANSITION_NAMES[t]: (lifecycle.state_name(a), lifecycle.state_name(b))
             for t, (a, b) in lifecycle.EDGES.items()}
    assert table == {
        "create": ("initial", "inactive"),
        "configure": ("inactive", "inactive"),
        "start": ("inactive", "active"),
        "reconfigure": ("active", "active"),
        "stop": ("active", "inactive"),
        "destroy": ("inactive", "initial"),
        "reset": ("failure", "initial"),
    }


def test_lifecycle_names_round_trip() -> None:
    assert {n: lifecycle.TRANSITIONS_BY_NAME[n] for n in lifecycle.TRANSITION_NAMES.values()} == {
        "create": CREATE, "configure": CONFIGURE, "start": START, "reconfigure": RECONFIGURE,
        "stop": STOP, "destroy": DESTROY, "reset": RESET,
    }
    assert {lifecycle.STATES_BY_NAME[lifecycle.state_name(s)] for s in LIFECYCLE_STATES} == set(LIFECYCLE_STATES)
    assert lifecycle.state_name(UNSPECIFIED) == ""


@pytest.mark.parametrize(("transition", "source", "target"), [
    (CREATE, INITIAL, INACTIVE),
    (CONFIGURE, INACTIVE, INACTIVE),
    (START, INACTIVE, ACTIVE),
    (RECONFIGURE, ACTIVE, ACTIVE),
    (STOP, ACTIVE, INACTIVE),
    (DESTROY, INACTIVE, INITIAL),
    (RESET, FAILURE, INITIAL),
], ids=["create", "configure", "start", "reconfigure", "stop", "destroy", "reset"])
def test_next_state_of_every_transition(transition: Transition, source: pb.State, target: pb.State) -> None:
    assert next_state(source, transition) == target


@pytest.mark.parametrize(("transition", "state"), [
    (t, s) for t in ALL_TRANSITIONS for s in (UNSPECIFIED, *LIFECYCLE_STATES) if s != lifecycle.EDGES[t][0]
])
def test_next_state_refuses_a_transition_from_another_state(transition: Transition, state: pb.State) -> None:
    with pytest.raises(ValueError, match=f"{lifecycle.TRANSITION_NAMES[transition]} is not allowed in state"):
        next_state(state, transition)


PATHS = {
    (INITIAL, INITIAL): [],
    (INITIAL, INACTIVE): [CREATE, CONFIGURE],
    (INITIAL, ACTIVE): [CREATE, CONFIGURE, START],
    (INACTIVE, INITIAL): [DESTROY],
    (INACTIVE, INACTIVE): [],
    (INACTIVE, ACTIVE): [START],
    (ACTIVE, INITIAL): [STOP, DESTROY],
    (ACTIVE, INACTIVE): [STOP],
    (ACTIVE, ACTIVE): [],
    (FAILURE, INITIAL): [RESET],
    (FAILURE, INACTIVE): [RESET, CREATE, CONFIGURE],
    (FAILURE, ACTIVE): [RESET, CREATE, CONFIGURE, START],
    (FAILURE, FAILURE): [],  # already there: nothing to do (checked before the target)
}


@pytest.mark.parametrize(("current", "target"), list(PATHS),
                         ids=[f"{lifecycle.state_name(a)}-to-{lifecycle.state_name(b)}" for a, b in PATHS])
def test_plan_transitions_every_path_of_the_lifecycle_table(current: pb.State, target: pb.State) -> None:
    assert plan_transitions(current, target) == PATHS[(current, target)]


@pytest.mark.parametrize("current", [INITIAL, INACTIVE, ACTIVE])
def test_plan_transitions_failure_is_not_a_target_state(current: pb.State) -> None:
    with pytest.raises(ValueError, match="failure is not a target state"):
        plan_transitions(current, FAILURE)


@pytest.mark.parametrize("target", TARGET_STATES)
def test_plan_transitions_unspecified_current_means_initial(target: pb.State) -> None:
    assert plan_transitions(UNSPECIFIED, target) == PATHS[(INITIAL, target)]


def test_plan_transitions_unspecified_target_has_no_path() -> None:
    with pytest.raises(ValueError, match="no path from active to"):
        plan_transitions(ACTIVE, UNSPECIFIED)


@pytest.mark.parametrize(("current", "target"), [(a, b) for a in LIFECYCLE_STATES for b in TARGET_STATES])
def test_plan_transitions_path_walks_the_table_to_the_target(current: pb.State, target: pb.State) -> None:
    state = current
    for transition in plan_transitions(current, target):
        state = next_state(state, transition)
    assert state == target


def test_plan_transitions_a_created_instance_is_configured_before_it_starts() -> None:
    for current, target in PATHS:
        path = PATHS[(current, target)]
        if CREATE in path:
            assert path[path.index(CREATE) + 1] == CONFIGURE


def test_plan_transitions_returns_a_fresh_list() -> None:
    path = plan_transitions(INITIAL, ACTIVE)
    path.clear()
    assert plan_transitions(INITIAL, ACTIVE) == [CREATE, CONFIGURE, START]


# --------------------------------------------------------------------------
# desired_solution


def test_sizes_asked_at_deploy_replace_the_architectures_within_min_max() -> None:
    sized = planner.with_sizes(desired(), {"app/V1": 4})
    assert cluster_of(sized, "app").size == 4 and cluster_of(sized, "db").size == cluster_of(desired(), "db").size
    assert planner.with_sizes(desired(), {}) == desired()
    with pytest.raises(InvalidArgument, match=r"no cluster 'app/V9' in the architecture \(one of app/V1, db/V1, net/V1\)"):
        planner.with_sizes(desired(), {"app/V9": 2})
    with pytest.raises(InvalidArgument, match=r"5 for cluster 'app/V1' is outside min 1 \.\. max 4"):
        planner.with_sizes(desired(), {"app/V1": 5})


def test_desired_solution_header_and_shape() -> None:
    solution = desired()
    assert (solution.name, solution.architecture, solution.version, solution.configuration) == (
        SOLUTION, "shop-arch", "1.0", "level: arch")
    assert solution.target == ACTIVE
    assert [(e.name, e.component, [c.version for c in e.clusters]) for e in solution.elements] == [
        ("net", "network", ["V1"]), ("db", "database", ["V1"]), ("app", "application", ["V1"])]
    app = cluster_of(solution, "app")
    assert (app.min, app.max, app.size, app.target, app.state) == (1, 4, 2, ACTIVE, INITIAL)
    assert list(app.instances) == []  # instances come from merge
    assert element_of(solution, "app").configuration == "level: element"


def test_desired_solution_cluster_carries_rendered_configuration() -> None:
    app = cluster_of(desired(), "app")
    # {{level}} from the element map (wins over the architecture's), unknown placeholders stay.
    assert app.configuration == "name: app-V1\nlevel: element\nunknown: {{nope}}"
    assert cluster_of(desired(), "net").configuration == "cidr: 10.0.0.0/24"
    assert cluster_of(desired(), "db").configuration == "db: db"


def test_desired_solution_cluster_carries_the_component_controller() -> None:
    solution = desired()
    assert {(e.name, c.version): c.controller for e in solution.elements for c in e.clusters} == {
        ("net", "V1"): "netctl", ("db", "V1"): "dbctl:2", ("app", "V1"): "appctl"}


def test_desired_solution_parameters_builtins() -> None:
    assert dict(cluster_of(desired(), "db").parameters) == {
        "domain": DOMAIN, "solution": SOLUTION, "element": "db", "cluster": "V1", "component": "database",
        "version": "1.0", "architecture": "shop-arch", "level": "arch",
    }


def test_desired_solution_parameters_later_configuration_maps_win() -> None:
    arch = architecture(app_cluster(configuration="shared: cluster\nsize_hint: [1, 2]"))
    arch.configuration = "shared: arch\nfrom_arch: a\nlevel: arch"
    arch.elements[-1].configuration = "shared: element\nfrom_element: e\nlevel: element"
    params = dict(cluster_of(desired(arch), "app").parameters)
    assert params["shared"] == "cluster"
    assert params["level"] == "element"
    assert params["from_arch"] == "a"
    assert params["from_element"] == "e"
    assert params["size_hint"] == "1,2"


def test_desired_solution_parameters_identity_cannot_be_overridden() -> None:
    arch = architecture(app_cluster(configuration="cluster: evil\nsolution: evil\nelement: evil"))
    arch.configuration = "domain: evil\nsolution: evil"
    arch.elements[-1].configuration = "element: evil\ncluster: evil"
    params = cluster_of(desired(arch), "app").parameters
    assert (params["domain"], params["solution"], params["element"], params["cluster"]) == (
        DOMAIN, SOLUTION, "app", "V1")


def test_desired_solution_parameters_component_version_architecture_can_be_overridden() -> None:
    # Current behaviour: only domain/solution/element/cluster are re-imposed;
    # the other built-ins are defaults a configuration map may replace.
    arch = architecture(app_cluster(configuration="component: other"))
    arch.configuration = "version: '9.9'\narchitecture: renamed"
    params = cluster_of(desired(arch), "app").parameters
    assert (params["component"], params["version"], params["architecture"]) == ("other", "9.9", "renamed")


def test_desired_solution_relationships_resolved_to_element_and_version() -> None:
    app = cluster_of(desired(), "app")
    got = [(r.name, r.dependency, r.type, r.domain, r.solution, r.element, r.version, r.target, r.state)
           for r in app.relationships]
    assert got == [
        ("net", "net", CONTEXT, DOMAIN, SOLUTION, "net", "V1", ACTIVE, INITIAL),
        ("db", "database", SERVICE, DOMAIN, SOLUTION, "db", "V1", ACTIVE, INITIAL),
    ]


def test_desired_solution_relationship_configuration_rendered_then_own_appended() -> None:
    app = cluster_of(desired(), "app")
    assert [r.configuration for r in app.relationships] == ["net: net", "url: db@app\npool: 5"]
    assert [r.configuration for r in cluster_of(desired(), "db").relationships] == ["attach: net-V1"]


def test_desired_solution_relationship_of_unknown_dependency_has_only_its_own_configuration() -> None:
    cluster = app_cluster()
    cluster.relationships[1].dependency = "nosuch"
    app = cluster_of(desired(architecture(cluster)), "app")
    # No template: just a newline and the relationship's own text.
    assert app.relationships[1].configuration == "\npool: 5"


def test_desired_solution_targets_cluster_state_else_active_element_and_solution_highest() -> None:
    arch = architecture(app_cluster("V1", state=INITIAL), app_cluster("V2", state=INACTIVE))
    for element in arch.elements[:-1]:
        element.clusters[0].state = INACTIVE
    solution = desired(arch)
    assert [c.target for c in element_of(solution, "app").clusters] == [INITIAL, INACTIVE]
    assert element_of(solution, "app").target == INACTIVE
    assert solution.target == INACTIVE
    assert desired().target == ACTIVE
    assert cluster_of(desired(), "net").target == ACTIVE  # unspecified state: active


def test_desired_solution_relationship_target_follows_its_cluster() -> None:
    app = cluster_of(desired(architecture(app_cluster(state=INACTIVE))), "app")
    assert [r.target for r in app.relationships] == [INACTIVE, INACTIVE]


def test_resolve_components_keys_by_element_and_version() -> None:
    found = planner.resolve_components(architecture(app_cluster("V1"), app_cluster("V2")), CATALOG)
    assert {k: (v.name, v.version) for k, v in found.items()} == {
        ("net", "V1"): ("network", "V1"), ("db", "V1"): ("database", "V1"),
        ("app", "V1"): ("application", "V1"), ("app", "V2"): ("application", "V2"),
    }


def test_resolve_components_missing_component_raises_not_found_naming_it() -> None:
    arch = architecture(app_cluster("V3"))
    with pytest.raises(NotFound) as info:
        planner.resolve_components(arch, CATALOG)
    assert info.value.message == "component 'application' version 'V3' of element 'app' is not in the catalog"
    assert info.value.code == "NOT_FOUND"
    with pytest.raises(NotFound, match="component 'application' version 'V3' of element 'app'"):
        planner.desired_solution(DOMAIN, SOLUTION, arch, CATALOG)


def test_resolve_components_names_the_first_missing() -> None:
    partial = catalog(application("V1"))
    with pytest.raises(NotFound, match="component 'network' version 'V1' of element 'net'"):
        planner.resolve_components(architecture(), partial)


# --------------------------------------------------------------------------
# merge: keep, grow, shrink, replace, remove


def test_merge_first_deploy_creates_size_instances_with_new_uuids() -> None:
    merged = planner.merge(None, desired(), uuids())
    assert {(e.name, c.version): [(i.uuid, i.state, i.target, i.remove) for i in c.instances]
            for e in merged.elements for c in e.clusters} == {
        ("net", "V1"): [("u01", INITIAL, ACTIVE, False)],
        ("db", "V1"): [("u02", INITIAL, ACTIVE, False)],
        ("app", "V1"): [("u03", INITIAL, ACTIVE, False), ("u04", INITIAL, ACTIVE, False)],
    }


def test_merge_new_instances_take_the_cluster_target() -> None:
    merged = planner.merge(None, desired(architecture(app_cluster(state=INACTIVE))), uuids())
    assert [i.target for i in cluster_of(merged, "app").instances] == [INACTIVE, INACTIVE]


def test_merge_keeps_existing_instances_and_their_state() -> None:
    current = deployed()
    app = cluster_of(current, "app")
    app.instances[0].state = FAILURE
    app.instances[0].error = "boom"
    app.instances[1].endpoint = "10.0.0.7:80"
    app.instances[1].sequence = 5
    app.endpoint = "10.0.0.7:80"
    element_of(current, "app").endpoint = "app.example"
    changed = architecture(app_cluster(configuration="level: new"))
    merged = planner.merge(current, desired(changed), no_uuid)
    got = cluster_of(merged, "app")
    assert [(i.uuid, i.state, i.error, i.endpoint, i.sequence, i.applied) for i in got.instances] == [
        (i.uuid, i.state, i.error, i.endpoint, i.sequence, i.applied) for i in app.instances]
    assert [i.uuid for i in got.instances] == ["u03", "u04"]
    assert (got.state, got.endpoint) == (ACTIVE, "10.0.0.7:80")
    assert (element_of(merged, "app").state, element_of(merged, "app").endpoint) == (ACTIVE, "app.example")
    assert merged.state == ACTIVE
    # the configuration is the new desired one
    assert got.configuration == "name: app-V1\nlevel: new\nunknown: {{nope}}"


def test_merge_resets_live_instance_targets_to_the_cluster_target() -> None:
    current = deployed()
    cluster_of(current, "app").instances[0].target = INACTIVE  # e.g. set_instance earlier
    merged = planner.merge(current, desired(), no_uuid)
    assert [i.target for i in cluster_of(merged, "app").instances] == [ACTIVE, ACTIVE]


def test_merge_scale_up_grows_to_size_with_new_uuids() -> None:
    current = deployed()
    merged = planner.merge(current, desired(architecture(app_size=4)), uuids("n"))
    assert instance_states(cluster_of(merged, "app")) == {
        "u03": (ACTIVE, ACTIVE, False), "u04": (ACTIVE, ACTIVE, False),
        "n01": (INITIAL, ACTIVE, False), "n02": (INITIAL, ACTIVE, False),
    }


def test_merge_can_count_new_instances_for_the_run_to_make_instead_of_making_them() -> None:
    # A big deploy's first operation need not wait for every instance to be made.
    later = planner.Additions()
    merged = planner.merge(deployed(), desired(architecture(app_size=5)), no_uuid, later=later)
    assert [i.uuid for i in cluster_of(merged, "app").instances] == ["u03", "u04"]
    assert cluster_of(merged, "app").size == 5
    assert later.counts == {("app", "V1"): 3}
    first = planner.Additions()
    planner.merge(None, desired(), no_uuid, later=first)
    assert first.counts == {("net", "V1"): 1, ("db", "V1"): 1, ("app", "V1"): 2}


def test_new_instances_that_stay_initial_are_made_at_once_even_when_they_could_be_counted() -> None:
    later = planner.Additions()
    merged = planner.merge(None, desired(architecture(app_cluster(state=INITIAL))), uuids(), later=later)
    assert ("app", "V1") not in later.counts
    assert [(i.state, i.target) for i in cluster_of(merged, "app").instances] == [(INITIAL, INITIAL)] * 2


def test_a_scale_up_can_count_its_new_instances_and_a_counted_instance_is_made_like_a_made_one() -> None:
    later = planner.Additions()
    result = planner.set_cluster(deployed(), "app", "V1", 4, UNSPECIFIED, no_uuid, later=later)
    assert later.counts == {("app", "V1"): 2} and len(cluster_of(result, "app").instances) == 2
    made = planner.merge(deployed(), desired(architecture(app_size=3)), uuids("n"))
    assert cluster_of(made, "app").instances[2] == planner.new_instance(cluster_of(made, "app"), "n01")


# six instances, listed out of uuid order; removal order: failure (b), initial
# and unspecified by uuid (c, f), inactive (d), active by uuid (a, e).
SCALE_DOWN_INSTANCES = (("e", ACTIVE), ("d", INACTIVE), ("f", UNSPECIFIED), ("a", ACTIVE), ("c", INITIAL), ("b", FAILURE))
REMOVAL_ORDER = ["b", "c", "f", "d", "a", "e"]


@pytest.mark.parametrize("size", range(7))
def test_merge_scale_down_removes_failure_initial_inactive_active_ties_by_uuid(size: int) -> None:
    current = one_cluster_solution(cluster_with(*SCALE_DOWN_INSTANCES, size=6))
    wanted = one_cluster_solution(pb.Cluster(version="V1", target=ACTIVE, min=0, max=10, size=size))
    merged = planner.merge(current, wanted, no_uuid)
    cluster = cluster_of(merged, "app")
    removed = {i.uuid for i in cluster.instances if i.remove}
    assert removed == set(REMOVAL_ORDER[: 6 - size])
    assert [i.uuid for i in cluster.instances] == [u for u, _ in SCALE_DOWN_INSTANCES]  # none deleted yet
    for instance in cluster.instances:
        assert instance.target == (INITIAL if instance.remove else ACTIVE)
        assert instance.state == dict(SCALE_DOWN_INSTANCES)[instance.uuid]


def test_merge_instances_already_removed_do_not_count_towards_size() -> None:
    cluster = cluster_with(("a", ACTIVE), ("b", ACTIVE), ("c", INACTIVE), size=2)
    cluster.instances[2].remove = True
    cluster.instances[2].target = INITIAL
    current = one_cluster_solution(cluster)
    merged = planner.merge(current, one_cluster_solution(pb.Cluster(version="V1", target=ACTIVE, size=2)), no_uuid)
    assert instance_states(cluster_of(merged, "app")) == {
        "a": (ACTIVE, ACTIVE, False), "b": (ACTIVE, ACTIVE, False), "c": (INACTIVE, INITIAL, True)}
    merged = planner.merge(current, one_cluster_solution(pb.Cluster(version="V1", target=ACTIVE, size=3)), uuids())
    assert instance_states(cluster_of(merged, "app"))["u01"] == (INITIAL, ACTIVE, False)
    assert instance_states(cluster_of(merged, "app"))["c"] == (INACTIVE, INITIAL, True)


def test_merge_rolling_replacement_retires_old_version_and_adds_new() -> None:
    current = deployed()
    merged = planner.merge(current, desired(architecture(app_cluster("V2"))), uuids("n"))
    app = element_of(merged, "app")
    assert [(c.version, c.remove, c.target) for c in app.clusters] == [("V2", False, ACTIVE), ("V1", True, INITIAL)]
    assert instance_states(cluster_of(merged, "app", "V2")) == {
        "n01": (INITIAL, ACTIVE, False), "n02": (INITIAL, ACTIVE, False)}
    assert instance_states(cluster_of(merged, "app", "V1")) == {
        "u03": (ACTIVE, INITIAL, True), "u04": (ACTIVE, INITIAL, True)}
    old = cluster_of(merged, "app", "V1")
    # the retired cluster keeps its record (configuration, controller) for its teardown
    assert old.configuration == cluster_of(current, "app").configuration
    assert old.controller == "appctl"
    assert not app.remove and app.target == ACTIVE


def test_merge_element_that_left_is_removed() -> None:
    current = deployed()
    merged = planner.merge(current, desired(architecture(with_db=False)), no_uuid)
    assert [(e.name, e.remove, e.target) for e in merged.elements] == [
        ("net", False, ACTIVE), ("app", False, ACTIVE), ("db", True, INITIAL)]
    db = element_of(merged, "db")
    assert [(c.version, c.remove, c.target) for c in db.clusters] == [("V1", True, INITIAL)]
    assert instance_states(db.clusters[0]) == {"u02": (ACTIVE, INITIAL, True)}
    assert db.state == ACTIVE  # state is the truth until it is torn down


def test_merge_version_that_comes_back_gets_new_instances() -> None:
    # Current behaviour: the retired instances stay marked for removal and the
    # revived cluster is filled with new ones.
    current = deployed()
    rolled = planner.merge(current, desired(architecture(app_cluster("V2"))), uuids("n"))
    back = planner.merge(rolled, desired(), uuids("r"))
    v1 = cluster_of(back, "app", "V1")
    assert not v1.remove and v1.target == ACTIVE
    assert instance_states(v1) == {
        "u03": (ACTIVE, INITIAL, True), "u04": (ACTIVE, INITIAL, True),
        "r01": (INITIAL, ACTIVE, False), "r02": (INITIAL, ACTIVE, False)}
    assert cluster_of(back, "app", "V2").remove


@pytest.mark.parametrize("change", ["same", "scale_up", "scale_down", "rolling", "element_left"])
def test_merge_is_idempotent(change: str) -> None:
    current = deployed()
    arch = {
        "same": architecture(),
        "scale_up": architecture(app_size=4),
        "scale_down": architecture(app_size=1),
        "rolling": architecture(app_cluster("V2")),
        "element_left": architecture(with_db=False),
    }[change]
    wanted = desired(arch)
    once = planner.merge(current, wanted, uuids("n"))
    twice = planner.merge(once, wanted, no_uuid)
    assert twice == once
    assert planner.merge(None, wanted, uuids()) == planner.merge(None, wanted, uuids())


def test_merge_does_not_change_its_inputs() -> None:
    current = deployed()
    wanted = desired(architecture(app_cluster("V2")))
    before = (current.SerializeToString(deterministic=True), wanted.SerializeToString(deterministic=True))
    planner.merge(current, wanted, uuids("n"))
    assert (current.SerializeToString(deterministic=True), wanted.SerializeToString(deterministic=True)) == before


# --------------------------------------------------------------------------
# teardown and the edits of a solution


def test_teardown_marks_everything_for_removal_to_initial() -> None:
    current = deployed()
    torn = planner.teardown(current)
    assert torn.target == INITIAL
    for element in torn.elements:
        assert (element.remove, element.target) == (True, INITIAL)
        for cluster in element.clusters:
            assert (cluster.remove, cluster.target) == (True, INITIAL)
            assert all(i.remove and i.target == INITIAL and i.state == ACTIVE for i in cluster.instances)
    assert sum(len(c.instances) for e in torn.elements for c in e.clusters) == 4
    assert current.target == ACTIVE and not current.elements[0].remove  # input untouched


def test_set_cluster_resize_up_adds_new_instances() -> None:
    current = deployed()
    result = planner.set_cluster(current, "app", "V1", 4, UNSPECIFIED, uuids("s"))
    app = cluster_of(result, "app")
    assert app.size == 4
    assert [(i.uuid, i.state, i.target) for i in app.instances] == [
        ("u03", ACTIVE, ACTIVE), ("u04", ACTIVE, ACTIVE), ("s01", INITIAL, ACTIVE), ("s02", INITIAL, ACTIVE)]
    assert cluster_of(current, "app").size == 2  # input untouched


def test_set_cluster_resize_down_uses_the_removal_order() -> None:
    current = one_cluster_solution(cluster_with(*SCALE_DOWN_INSTANCES, size=6))
    result = planner.set_cluster(current, "app", "V1", 3, UNSPECIFIED, no_uuid)
    assert {i.uuid for i in cluster_of(result, "app").instances if i.remove} == {"b", "c", "f"}


@pytest.mark.parametrize("size", [0, 5, -1])
def test_set_cluster_size_outside_min_max_is_invalid_argument(size: int) -> None:
    with pytest.raises(InvalidArgument) as info:
        planner.set_cluster(deployed(), "app", "V1", size, UNSPECIFIED, no_uuid)
    assert info.value.message == f"size {size} of cluster 'app/V1' is outside min 1 .. max 4"


@pytest.mark.parametrize("size", [1, 4])
def test_set_cluster_size_at_min_and_max_is_accepted(size: int) -> None:
    result = planner.set_cluster(deployed(), "app", "V1", size, UNSPECIFIED, uuids("s"))
    app = cluster_of(result, "app")
    assert app.size == size
    assert sum(not i.remove for i in app.instances) == size


def test_set_cluster_removed_cluster_is_failed_precondition() -> None:
    rolled = planner.merge(deployed(), desired(architecture(app_cluster("V2"))), uuids("n"))
    with pytest.raises(FailedPrecondition) as info:
        planner.set_cluster(rolled, "app", "V1", 2, UNSPECIFIED, no_uuid)
    assert info.value.message == f"cluster 'app/V1' is being removed from solution '{SOLUTION}'"
    with pytest.raises(FailedPrecondition):
        planner.set_cluster(rolled, "app", "V1", None, INACTIVE, no_uuid)


def test_set_cluster_state_sets_cluster_and_live_instance_targets() -> None:
    cluster = cluster_with(("a", ACTIVE), ("b", ACTIVE), ("c", ACTIVE), size=2)
    cluster.instances[2].remove = True
    cluster.instances[2].target = INITIAL
    result = planner.set_cluster(one_cluster_solution(cluster), "app", "V1", None, INACTIVE, no_uuid)
    got = cluster_of(result, "app")
    assert got.target == INACTIVE and got.size == 2
    assert instance_states(got) == {"a": (ACTIVE, INACTIVE, False), "b": (ACTIVE, INACTIVE, False),
                                    "c": (ACTIVE, INITIAL, True)}


def test_set_cluster_failure_is_not_a_target_state() -> None:
    with pytest.raises(InvalidArgument, match="state 'failure' is not a target state"):
        planner.set_cluster(deployed(), "app", "V1", None, FAILURE, no_uuid)


def test_set_cluster_unknown_cluster_is_not_found() -> None:
    with pytest.raises(NotFound, match="cluster 'V9' not found in element 'app'"):
        planner.set_cluster(deployed(), "app", "V9", 2, UNSPECIFIED, no_uuid)


def test_set_solution_sends_every_remaining_cluster_to_the_state() -> None:
    rolled = planner.merge(deployed(), desired(architecture(app_cluster("V2"), with_db=False)), uuids("n"))
    result = planner.set_solution(rolled, INACTIVE)
    assert result.target == INACTIVE
    assert {e.name: e.target for e in result.elements} == {"net": INACTIVE, "app": INACTIVE, "db": INITIAL}
    assert {(e.name, c.version): c.target for e in result.elements for c in e.clusters} == {
        ("net", "V1"): INACTIVE, ("app", "V2"): INACTIVE, ("app", "V1"): INITIAL, ("db", "V1"): INITIAL}
    for element in result.elements:
        for cluster in element.clusters:
            for instance in cluster.instances:
                assert instance.target == (INITIAL if instance.remove else INACTIVE)
    assert rolled.target == ACTIVE  # input untouched


def test_set_solution_leaves_scaled_down_instances_going_away() -> None:
    shrunk = planner.set_cluster(deployed(), "app", "V1", 1, UNSPECIFIED, no_uuid)
    result = planner.set_solution(shrunk, INACTIVE)
    assert instance_states(cluster_of(result, "app")) == {"u03": (ACTIVE, INITIAL, True), "u04": (ACTIVE, INACTIVE, False)}
    assert cluster_of(result, "app").target == INACTIVE


@pytest.mark.parametrize("state", [FAILURE, UNSPECIFIED])
def test_set_solution_only_target_states(state: pb.State) -> None:
    with pytest.raises(InvalidArgument, match="is not a target state"):
        planner.set_solution(deployed(), state)


def test_set_instance_sets_one_instance_target() -> None:
    result = planner.set_instance(deployed(), "app", "V1", "u04", INACTIVE)
    assert [(i.uuid, i.target) for i in cluster_of(result, "app").instances] == [("u03", ACTIVE), ("u04", INACTIVE)]
    assert cluster_of(result, "app").target == ACTIVE


def test_set_instance_unknown_instance_is_not_found() -> None:
    with pytest.raises(NotFound) as info:
        planner.set_instance(deployed(), "app", "V1", "nosuch", INACTIVE)
    assert info.value.message == f"instance 'nosuch' not found in cluster 'app/V1' of solution '{SOLUTION}'"


def test_set_instance_removed_instance_is_not_found() -> None:
    shrunk = planner.set_cluster(deployed(), "app", "V1", 1, UNSPECIFIED, no_uuid)
    (gone,) = [i.uuid for i in cluster_of(shrunk, "app").instances if i.remove]
    with pytest.raises(NotFound, match=f"instance '{gone}' not found"):
        planner.set_instance(shrunk, "app", "V1", gone, ACTIVE)


@pytest.mark.parametrize("state", [FAILURE, UNSPECIFIED])
def test_set_instance_only_target_states(state: pb.State) -> None:
    with pytest.raises(InvalidArgument, match="is not a target state"):
        planner.set_instance(deployed(), "app", "V1", "u03", state)


def test_find_cluster_returns_the_cluster_of_the_solution() -> None:
    solution = deployed()
    found = planner.find_cluster(solution, "db", "V1")
    assert (found.version, found.controller) == ("V1", "dbctl:2")
    found.size = 3  # the cluster itself, not a copy (set_cluster edits through it)
    assert solution.elements[1].clusters[0].size == 3


def test_find_cluster_missing_element_or_version_is_not_found() -> None:
    solution = deployed()
    with pytest.raises(NotFound) as info:
        planner.find_cluster(solution, "nosuch", "V1")
    assert info.value.message == f"element 'nosuch' not found in solution '{SOLUTION}'"
    with pytest.raises(NotFound) as info:
        planner.find_cluster(solution, "app", "V9")
    assert info.value.message == f"cluster 'V9' not found in element 'app' of solution '{SOLUTION}'"


# --------------------------------------------------------------------------
# instance_work: the path plus configure / reconfigure of a stale configuration

APPLIED = "fresh"
STALE = "stale"


@pytest.mark.parametrize(("state", "target", "applied", "expected"), [
    (ACTIVE, ACTIVE, APPLIED, []),
    (ACTIVE, ACTIVE, STALE, [RECONFIGURE]),  # changed configuration of an active instance
    (INACTIVE, INACTIVE, APPLIED, []),
    (INACTIVE, INACTIVE, STALE, [CONFIGURE]),  # ... of an inactive one
    (INACTIVE, ACTIVE, APPLIED, [START]),
    (INACTIVE, ACTIVE, STALE, [CONFIGURE, START]),
    (INITIAL, ACTIVE, STALE, [CREATE, CONFIGURE, START]),  # already configures once
    (UNSPECIFIED, ACTIVE, "", [CREATE, CONFIGURE, START]),
    (FAILURE, ACTIVE, STALE, [RESET, CREATE, CONFIGURE, START]),
    (ACTIVE, INITIAL, STALE, [STOP, DESTROY]),  # going away: no configure
    (INACTIVE, INITIAL, STALE, [DESTROY]),
    (ACTIVE, INACTIVE, STALE, [STOP]),  # current behaviour: stays stale after the stop
    (ACTIVE, UNSPECIFIED, APPLIED, [STOP, DESTROY]),  # unspecified target means initial
], ids=lambda v: v if isinstance(v, str) else None)
def test_instance_work_configure_or_reconfigure_when_applied_digest_differs(
        state: pb.State, target: pb.State, applied: str, expected: list[Transition]) -> None:
    instance = pb.Instance(uuid="i", state=state, target=target, applied=applied)
    assert planner.instance_work(instance, pb.Cluster(), APPLIED) == expected


def test_instance_work_computes_the_cluster_digest_when_not_given() -> None:
    cluster = cluster_of(desired(), "app")
    fresh = pb.Instance(uuid="i", state=ACTIVE, target=ACTIVE, applied=planner.cluster_digest(cluster))
    assert planner.instance_work(fresh, cluster) == []
    stale = pb.Instance(uuid="i", state=ACTIVE, target=ACTIVE, applied="something else")
    assert planner.instance_work(stale, cluster) == [RECONFIGURE]


def test_cluster_digest_covers_configuration_and_relationships_only() -> None:
    base = cluster_of(desired(), "app")
    reference = planner.cluster_digest(base)
    assert len(reference) == 16 and int(reference, 16) >= 0
    changes: list[Callable[[pb.Cluster], object]] = [
        lambda c: setattr(c, "configuration", c.configuration + " "),
        lambda c: setattr(c.relationships[0], "configuration", "x"),
        lambda c: setattr(c.relationships[0], "element", "other"),
        lambda c: setattr(c.relationships[0], "version", "V9"),
        lambda c: setattr(c.relationships[0], "name", "renamed"),
    ]
    for change in changes:
        copy = pb.Cluster()
        copy.CopyFrom(base)
        change(copy)
        assert planner.cluster_digest(copy) != reference
    ignored: list[Callable[[pb.Cluster], object]] = [
        lambda c: setattr(c, "endpoint", "10.0.0.1"),
        lambda c: setattr(c, "state", ACTIVE),
        lambda c: setattr(c, "size", 3),
        lambda c: setattr(c.relationships[0], "endpoint", "10.0.0.2"),
        lambda c: c.instances.add(uuid="x"),
    ]
    for change in ignored:
        copy = pb.Cluster()
        copy.CopyFrom(base)
        change(copy)
        assert planner.cluster_digest(copy) == reference


# --------------------------------------------------------------------------
# plan(): the gates between clusters


def planned(solution: pb.Solution) -> list[tuple[str, str, str, str, tuple[str, ...]]]:
    return [(p.element, p.cluster, p.instance, lifecycle.TRANSITION_NAMES[p.transition], p.waits_for)
            for p in planner.plan(solution)]


def waits(solution: pb.Solution, element: str, transition: str, version: str = "V1") -> set[tuple[str, ...]]:
    return {w for e, v, _, t, w in planned(solution) if (e, v, t) == (element, version, transition)}


def test_plan_deploy_in_instance_order_with_gates() -> None:
    merged = planner.merge(None, desired(), uuids())
    net_active, db_active = ("cluster net/V1 active",), ("cluster db/V1 active",)
    assert planned(merged) == [
        ("net", "V1", "u01", "create", ()),
        ("net", "V1", "u01", "configure", ()),
        ("net", "V1", "u01", "start", ()),
        ("db", "V1", "u02", "create", net_active),
        ("db", "V1", "u02", "configure", ()),
        ("db", "V1", "u02", "start", ()),
        ("app", "V1", "u03", "create", net_active),
        ("app", "V1", "u03", "configure", ()),
        ("app", "V1", "u03", "start", db_active),
        ("app", "V1", "u04", "create", net_active),
        ("app", "V1", "u04", "configure", ()),
        ("app", "V1", "u04", "start", db_active),
    ]


def test_plan_create_waits_for_context_providers_active() -> None:
    merged = planner.merge(None, desired(), uuids())
    assert waits(merged, "db", "create") == {("cluster net/V1 active",)}
    assert waits(merged, "app", "create") == {("cluster net/V1 active",)}  # not the service provider db


def test_plan_start_waits_for_service_providers_active() -> None:
    merged = planner.merge(None, desired(), uuids())
    assert waits(merged, "app", "start") == {("cluster db/V1 active",)}  # not the context provider net
    assert waits(merged, "db", "start") == {()}


def test_plan_converged_solution_has_no_work() -> None:
    assert planner.plan(deployed()) == []


def test_plan_configuration_change_reconfigures_without_gates() -> None:
    current = deployed()
    merged = planner.merge(current, desired(architecture(app_cluster(configuration="level: new"))), no_uuid)
    assert planned(merged) == [("app", "V1", "u03", "reconfigure", ()), ("app", "V1", "u04", "reconfigure", ())]


def test_plan_stop_waits_for_service_dependants_stopped() -> None:
    torn = planner.teardown(deployed())
    assert waits(torn, "db", "stop") == {("service dependants app/V1 stopped",)}
    assert waits(torn, "net", "stop") == {()}  # net has only context dependants
    assert waits(torn, "app", "stop") == {()}


def test_plan_destroy_waits_for_context_dependants_destroyed_reverse_teardown_order() -> None:
    torn = planner.teardown(deployed())
    assert waits(torn, "net", "destroy") == {("context dependants db/V1 destroyed", "context dependants app/V1 destroyed")}
    assert waits(torn, "db", "destroy") == {()}  # app is a service dependant only
    assert waits(torn, "app", "destroy") == {()}
    assert [(e, t) for e, _, _, t, _ in planned(torn)] == [
        ("net", "stop"), ("net", "destroy"), ("db", "stop"), ("db", "destroy"),
        ("app", "stop"), ("app", "destroy"), ("app", "stop"), ("app", "destroy")]


def test_plan_retired_cluster_stop_waits_for_its_replacement_active() -> None:
    rolled = planner.merge(deployed(), desired(architecture(app_cluster("V2"))), uuids("n"))
    assert waits(rolled, "app", "stop", "V1") == {("cluster app/V2 active",)}
    assert waits(rolled, "app", "destroy", "V1") == {()}
    assert waits(rolled, "app", "create", "V2") == {("cluster net/V1 active",)}
    assert [(v, i, t) for e, v, i, t, _ in planned(rolled)] == [
        ("V2", "n01", "create"), ("V2", "n01", "configure"), ("V2", "n01", "start"),
        ("V2", "n02", "create"), ("V2", "n02", "configure"), ("V2", "n02", "start"),
        ("V1", "u03", "stop"), ("V1", "u03", "destroy"), ("V1", "u04", "stop"), ("V1", "u04", "destroy")]


def test_plan_retired_cluster_does_not_wait_for_a_replacement_that_is_not_going_active() -> None:
    rolled = planner.merge(deployed(), desired(architecture(app_cluster("V2", state=INACTIVE))), uuids("n"))
    assert waits(rolled, "app", "stop", "V1") == {()}


def test_plan_stop_of_retired_service_provider_waits_for_dependants_and_replacement() -> None:
    # db V1 retired while db V2 replaces it: app's relationship still points at db/V1.
    current = deployed()
    current_db = element_of(current, "db")
    arch = architecture()
    arch.elements[1].clusters[0].version = "V2"
    cat = dict(CATALOG)
    db2 = pb.Component()
    db2.CopyFrom(DATABASE)
    db2.version = "V2"
    cat[("database", "V2")] = db2
    rolled = planner.merge(current, planner.desired_solution(DOMAIN, SOLUTION, arch, cat), uuids("n"))
    assert [(c.version, c.remove) for c in element_of(rolled, "db").clusters] == [("V2", False), ("V1", True)]
    assert waits(rolled, "db", "stop", "V1") == {("service dependants app/V1 stopped", "cluster db/V2 active")}
    assert current_db.clusters[0].version == "V1"


def test_plan_scale_down_stops_and_destroys_the_removed_instance() -> None:
    shrunk = planner.set_cluster(deployed(), "app", "V1", 1, UNSPECIFIED, no_uuid)
    assert planned(shrunk) == [("app", "V1", "u03", "stop", ()), ("app", "V1", "u03", "destroy", ())]


def test_plan_failed_instance_is_reset_and_rebuilt() -> None:
    current = deployed()
    cluster_of(current, "db").instances[0].state = FAILURE
    assert planned(current) == [
        ("db", "V1", "u02", "reset", ()),
        ("db", "V1", "u02", "create", ("cluster net/V1 active",)),
        ("db", "V1", "u02", "configure", ()),
        ("db", "V1", "u02", "start", ()),
    ]


# --------------------------------------------------------------------------
# missing_design / fill_design


def strip_design(solution: pb.Solution, keys: Iterable[tuple[str, str]]) -> pb.Solution:
    result = pb.Solution()
    result.CopyFrom(solution)
    for element in result.elements:
        for cluster in element.clusters:
            if (element.name, cluster.version) in keys:
                cluster.controller = ""
                cluster.parameters.clear()
    return result


def test_missing_design_is_a_cluster_without_controller() -> None:
    solution = deployed()
    assert planner.missing_design(solution) is False
    assert planner.missing_design(strip_design(solution, {("db", "V1")})) is True
    assert planner.missing_design(pb.Solution()) is False


def test_fill_design_gives_old_records_controller_and_parameters() -> None:
    design = desired()
    old = strip_design(deployed(), {("db", "V1"), ("app", "V1")})
    filled = planner.fill_design(old, design)
    for element, version in [("db", "V1"), ("app", "V1")]:
        got, want = cluster_of(filled, element, version), cluster_of(design, element, version)
        assert got.controller == want.controller
        assert dict(got.parameters) == dict(want.parameters)
    assert planner.missing_design(filled) is False
    assert cluster_of(old, "db").controller == ""  # input untouched
    # nothing else changes (instances, states)
    assert [i.uuid for i in cluster_of(filled, "app").instances] == ["u03", "u04"]


def test_fill_design_keeps_existing_controller_and_parameters() -> None:
    design = desired()
    current = deployed()
    cluster_of(current, "app").controller = "custom"
    cluster_of(current, "app").parameters["extra"] = "kept"
    # controller missing but parameters present: the parameters are kept
    db = cluster_of(current, "db")
    db.controller = ""
    db.parameters.clear()
    db.parameters["mine"] = "1"
    filled = planner.fill_design(current, design)
    assert cluster_of(filled, "app").controller == "custom"
    assert cluster_of(filled, "app").parameters["extra"] == "kept"
    assert cluster_of(filled, "db").controller == "dbctl:2"
    assert dict(cluster_of(filled, "db").parameters) == {"mine": "1"}


def test_fill_design_cluster_not_in_design_stays_without() -> None:
    rolled = planner.merge(deployed(), desired(architecture(app_cluster("V2"))), uuids("n"))
    old = strip_design(rolled, {("app", "V1")})
    filled = planner.fill_design(old, desired(architecture(app_cluster("V2"))))
    assert cluster_of(filled, "app", "V1").controller == ""
    assert dict(cluster_of(filled, "app", "V1").parameters) == {}
    assert planner.missing_design(filled) is True
