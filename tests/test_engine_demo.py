"""The task engine on SolAr demo2, through real processes: deploy, order, plan, teardown."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from orchestration.v1 import model_pb2 as pb
from suite import DATA, Suite, running_suite


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Suite]:
    with running_suite(tmp_path_factory.mktemp("engine-demo"), "--controller-wait", "3") as running:
        running.ok("apply", "-f", str(DATA / "demo2.yaml"))
        yield running


def clusters_of(solution: pb.Solution) -> dict[tuple[str, str], pb.Cluster]:
    return {(e.name, c.version): c for e in solution.elements for c in e.clusters}


def test_plan_of_empty_solution_lists_every_transition_and_runs_nothing(suite: Suite) -> None:
    plan = json.loads(suite.ok("solution", "plan", "demo", "app", "V0.0.0", "-o", "json"))
    assert len(plan) == 69
    by_transition: dict[str, int] = {}
    for step in plan:
        by_transition[step["Transition"]] = by_transition.get(step["Transition"], 0) + 1
    assert by_transition == {"create": 23, "configure": 23, "start": 23}
    creates = [s for s in plan if s["Element"] == "app-server" and s["Transition"] == "create"]
    assert all("cluster tenant/V1.0.0 active" in s["WaitsFor"] for s in creates)
    assert suite.ops("app") == []


def test_plan_with_preview_shows_each_controllers_dry_run_of_the_first_50_and_runs_nothing(suite: Suite) -> None:
    plan = json.loads(suite.ok("solution", "plan", "demo", "app", "V0.0.0", "--preview", "-o", "json"))
    assert len(plan) == 69 and [("Preview" in step) for step in plan] == [True] * 50 + [False] * 19
    first = plan[0]
    assert first["Preview"].startswith(f"sim: {first['Transition']} {first['Instance']}, now initial (not there)")
    text = suite.ok("solution", "plan", "demo", "app", "V0.0.0", "--preview")
    assert f"--- {first['Element']}/{first['Cluster']} {first['Instance']} {first['Transition']}\nsim: " in text
    assert "(previewed: the first 50 of 69 operations)" in text
    assert suite.ops("app") == [] and suite.planned("demo", "app") == pb.Solution()
    # A dry run reaches the real systems: who may read a plan may not preview it, who may deploy may.
    viewer = json.loads(suite.ok("token", "create", "viewer-preview", "--role", "viewer", "--domain", "demo", "-o", "json"))["token"]
    plain = suite.orch("solution", "plan", "demo", "app", "V0.0.0", token=viewer)
    refused = suite.orch("solution", "plan", "demo", "app", "V0.0.0", "--preview", token=viewer)
    assert plain.returncode == 0 and refused.returncode == 1 and "needs the operator role" in refused.stderr


def test_deploy_demo2_respects_context_and_service_order(suite: Suite) -> None:
    output = suite.ok("solution", "deploy", "demo", "app", "V0.0.0", "--wait", "-o", "json")
    task = json.loads(output)["task"]
    root = suite.task("demo", task).task
    assert root.status == pb.TASK_STATUS_COMPLETED
    solution = suite.solution("demo", "app")
    instances = [i for e in solution.elements for c in e.clusters for i in c.instances]
    assert len(instances) == 23 and all(i.state == pb.STATE_ACTIVE for i in instances)

    ops = suite.ops("app")
    clusters = clusters_of(solution)
    members = {key: {i.uuid for i in cluster.instances} for key, cluster in clusters.items()}
    became_active = {op["instance"]: op["finished"] for op in ops if op["operation"] == "start"}
    for key, cluster in clusters.items():
        for rel in cluster.relationships:
            provider_ready = max(became_active[u] for u in members[(rel.element, rel.version)])
            waiting = "create" if rel.type == pb.DEPENDENCY_TYPE_CONTEXT else "start"
            for op in ops:
                if op["instance"] in members[key] and op["operation"] == waiting:
                    assert op["started"] >= provider_ready, f"{waiting} of {key} before {rel.element} was active"
    # Every instance was created exactly once.
    creates = [op["instance"] for op in ops if op["operation"] == "create"]
    assert sorted(creates) == sorted(i.uuid for i in instances)


def test_plan_after_deploy_is_empty(suite: Suite) -> None:
    assert json.loads(suite.ok("solution", "plan", "demo", "app", "V0.0.0", "-o", "json")) == []


def test_inactive_then_initial_goes_in_reverse_order_and_delete_leaves_nothing(suite: Suite) -> None:
    suite.ok("solution", "set", "demo", "app", "--state", "inactive", "--wait")
    solution = suite.solution("demo", "app")
    clusters = clusters_of(solution)
    members = {key: {i.uuid for i in cluster.instances} for key, cluster in clusters.items()}
    assert all(i.state == pb.STATE_INACTIVE for c in clusters.values() for i in c.instances)
    suite.ok("solution", "set", "demo", "app", "--state", "initial", "--wait")
    ops = suite.ops("app")
    first = {}
    last = {}
    for op in ops:
        for kind in ("stop", "destroy"):
            if op["operation"] == kind:
                first.setdefault((kind, op["instance"]), op["started"])
                last[(kind, op["instance"])] = op["finished"]
    for key, cluster in clusters.items():
        for rel in cluster.relationships:
            kind = "stop" if rel.type == pb.DEPENDENCY_TYPE_SERVICE else "destroy"
            dependants_done = max(last[(kind, u)] for u in members[key])
            for provider in members[(rel.element, rel.version)]:
                assert first[(kind, provider)] >= dependants_done, f"{kind} of {rel.element} before its dependant {key}"
    suite.ok("solution", "delete", "demo", "app", "--wait")
    assert json.loads(suite.ok("solution", "list", "demo", "-o", "json")) == []
    # The sim controller holds nothing of the solution any more: every create
    # was followed by a successful destroy.
    alive: set[str] = set()
    for op in suite.ops("app"):
        if op["outcome"] != "ok":
            continue
        if op["operation"] == "create":
            alive.add(op["instance"])
        elif op["operation"] in ("destroy", "reset"):
            alive.discard(op["instance"])
    assert alive == set()
