"""The task engine through real processes (DESIGN.md sections 3 and 5):
scale up and down, rolling upgrade, permanent failure and its repair, and
one instance sent to another state. Every assertion is on an outcome: the
stored solution, the task tree, or the sim controller's op log."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator, Mapping
from typing import Any

import nats
import pytest

import models
from orchestration.store import keys as rk
from orchestration.store.subjects import Subjects
from orchestration.v1 import model_pb2 as pb
from suite import Suite, running_suite, wait_until

ACTIVE, INACTIVE, FAILURE = pb.STATE_ACTIVE, pb.STATE_INACTIVE, pb.STATE_FAILURE


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Suite]:
    # The monitor polls once at start and then stays out of the way: it would
    # otherwise reset the deliberately failed instance on its own (by design)
    # and make the op log of these tests depend on its timing.
    with running_suite(tmp_path_factory.mktemp("engine-lifecycle"), "--monitor-interval", "3600") as running:
        yield running


def web(domain: str, architecture: str, version: str, size: int, maximum: int | None = None,
        parameters: Mapping[str, object] | None = None) -> str:
    """A domain document: `architecture` `version` with one element web (component web V1)."""
    element = models.element("web", "web", size, maximum=maximum, parameters=parameters)
    return models.domain(domain, [models.component("web")], architecture, version, [element])


def deploy(suite: Suite, domain: str, architecture: str, version: str, *, succeed: bool = True) -> str:
    """Deploy and wait; the root task id. `succeed` says how the CLI must exit."""
    result = suite.orch("solution", "deploy", domain, architecture, version, "--wait", "-o", "json")
    assert (result.returncode == 0) == succeed, f"deploy exited {result.returncode}: {result.stderr}"
    return json.loads(result.stdout)["task"]


def instances(suite: Suite, domain: str, solution: str) -> dict[tuple[str, str], list[pb.Instance]]:
    """Stored instances by (element, cluster)."""
    found = suite.solution(domain, solution)
    return {(e.name, c.version): list(c.instances) for e in found.elements for c in e.clusters}


def ops_of(suite: Suite, solution: str, after: float = 0.0) -> list[dict[str, Any]]:
    """Op log lines of a solution whose operation started at or after `after`."""
    return [op for op in suite.ops(solution) if op["started"] >= after]


def test_the_tree_lists_every_instance_a_run_makes_while_it_runs_and_after(suite: Suite) -> None:
    # The run makes the instances a request adds as it sets them going (the
    # first operation leaves at once); their tasks are in the tree from then
    # on, not only once their cluster completes.
    suite.apply(web("made", "made", "V1", 2000, maximum=2030, parameters={"sim_latency_ms": 400, "orch_siblings": "ignore"}))
    deployed = json.loads(suite.ok("solution", "deploy", "made", "made", "V1", "-o", "json"))["task"]

    def listed_while_running() -> bool:
        response = suite.task("made", deployed, tree=True)
        assert response.task.status in (pb.TASK_STATUS_INITIAL, pb.TASK_STATUS_EXECUTING), "the run ended first"
        return sum(t.type == pb.TASK_TYPE_INSTANCE for t in response.subtasks) == 2000

    wait_until(listed_while_running, timeout=30, what="the running deploy's tree listing its 2,000 instance tasks")
    assert suite.wait_task("made", deployed).status == pb.TASK_STATUS_COMPLETED
    first = {i.uuid for i in instances(suite, "made", "made")[("web", "V1")]}
    grown = suite.ok("cluster", "set", "made", "made", "web", "V1", "--size", "2030", "--wait").splitlines()[0]
    every = {i.uuid for i in instances(suite, "made", "made")[("web", "V1")]}
    assert len(first) == 2000 and len(every) == 2030 and first < every
    tree = suite.task("made", grown, tree=True).subtasks
    listed = {t.instance: t.status for t in tree if t.type == pb.TASK_TYPE_INSTANCE}
    assert every - first <= set(listed) and {listed[u] for u in every - first} == {pb.TASK_STATUS_COMPLETED}


def test_scale_up_then_down_creates_then_removes_instances(suite: Suite) -> None:
    suite.apply(web("scale", "scale", "V1", 3, maximum=5, parameters={"sim_latency_ms": 10}))
    deploy(suite, "scale", "scale", "V1")
    first = {i.uuid for i in instances(suite, "scale", "scale")[("web", "V1")]}
    assert len(first) == 3

    suite.ok("cluster", "set", "scale", "scale", "web", "V1", "--size", "5", "--wait")
    grown = instances(suite, "scale", "scale")[("web", "V1")]
    assert len(grown) == 5 and all(i.state == ACTIVE for i in grown)
    added = {i.uuid for i in grown} - first
    assert len(added) == 2
    ops = suite.ops("scale")
    for uuid in added:
        # An instance that started before its sibling is reconfigured once more.
        done = [op["operation"] for op in ops if op["instance"] == uuid]
        assert done[:3] == ["create", "configure", "start"] and set(done[3:]) <= {"reconfigure"}, done
    grow_ops = ops_of(suite, "scale", after=min(op["started"] for op in ops if op["instance"] in added))
    # The running members learn of the new ones.
    assert {op["instance"] for op in grow_ops if op["operation"] == "reconfigure"} >= first

    before_shrink = max(op["finished"] for op in ops)
    suite.ok("cluster", "set", "scale", "scale", "web", "V1", "--size", "2", "--wait")
    left = instances(suite, "scale", "scale")[("web", "V1")]
    # Records of removed instances are deleted, not kept as "initial".
    assert len(left) == 2 and all(i.state == ACTIVE and not i.remove for i in left)
    kept = {i.uuid for i in left}
    removed = {i.uuid for i in grown} - kept
    assert len(removed) == 3
    shrink_ops = ops_of(suite, "scale", after=before_shrink)
    for uuid in removed:
        assert [(op["operation"], op["outcome"]) for op in shrink_ops if op["instance"] == uuid] == [
            ("stop", "ok"), ("destroy", "ok")
        ]
    # The survivors keep running; membership changed, so each got a
    # reconfigure after the last removed instance had stopped.
    last_stop = max(op["finished"] for op in shrink_ops if op["operation"] == "stop")
    for uuid in kept:
        mine = [op for op in shrink_ops if op["instance"] == uuid]
        assert {op["operation"] for op in mine} == {"reconfigure"}, mine
        assert any(op["started"] >= last_stop for op in mine)


def test_rolling_upgrade_keeps_min_active_and_removes_the_old_cluster(suite: Suite) -> None:
    # Latency makes the operations of both clusters overlap in time, so that
    # a wrong order would show in the sweep below.
    params = {"sim_latency_ms": 20}
    components = [models.component("web", "V1"), models.component("web", "V2")]

    def roll(version: str) -> str:
        # Architecture roll `version` puts element web on component web `version`.
        return models.domain("roll", components, "roll", version,
                             [models.element("web", "web", 3, version=version, minimum=2, parameters=params)])

    suite.apply(roll("V1"))
    suite.apply(models.architecture_only(roll("V2")))
    deploy(suite, "roll", "roll", "V1")
    old = {i.uuid for i in instances(suite, "roll", "roll")[("web", "V1")]}
    assert len(old) == 3
    upgrade_from = max(op["finished"] for op in suite.ops("roll"))

    deploy(suite, "roll", "roll", "V2")
    after = instances(suite, "roll", "roll")
    assert list(after) == [("web", "V2")], "the old cluster's records must be gone"
    assert len(after[("web", "V2")]) == 3 and all(i.state == ACTIVE for i in after[("web", "V2")])

    ops = ops_of(suite, "roll", after=upgrade_from)
    new_starts = [op for op in ops if op["cluster"] == "V2" and op["operation"] == "start"]
    old_stops = [op for op in ops if op["cluster"] == "V1" and op["operation"] == "stop"]
    assert len(new_starts) == 3 and {op["instance"] for op in old_stops} == old
    assert max(op["finished"] for op in new_starts) <= min(op["started"] for op in old_stops)
    assert {op["instance"] for op in ops if op["operation"] == "destroy"} == old

    # Sweep: an instance counts as active from the end of its start to the
    # beginning of its stop. On equal times the stop is counted first (the
    # pessimistic order).
    changes = [(op["finished"], 1, +1) for op in new_starts] + [(op["started"], 0, -1) for op in old_stops]
    active = len(old)
    for _, _, delta in sorted(changes):
        active += delta
        assert active >= 2, "element web had fewer than min (2) active instances"
    assert active == 3


def task_tree(suite: Suite, domain: str, root: str) -> dict[str, dict[str, Any]]:
    """The task tree as `orch task get ROOT --tree -o json` prints it, by uuid."""
    tree = json.loads(suite.ok("task", "get", root, "--domain", domain, "--tree", "-o", "json"))
    return {task["UUID"]: task for task in tree}


def test_permanent_failure_fails_every_parent_and_a_fixed_deploy_repairs_the_instance(suite: Suite) -> None:
    suite.apply(web("fail", "svc", "V1", 1, parameters={"sim_fail": "start"}))
    # The fix: the same element and cluster, without the failure.
    suite.apply(models.architecture_only(web("fail", "svc", "V2", 1)))

    root = deploy(suite, "fail", "svc", "V1", succeed=False)
    [instance] = instances(suite, "fail", "svc")[("web", "V1")]
    assert instance.state == FAILURE and "fails permanently" in instance.error
    tasks = task_tree(suite, "fail", root)
    assert tasks[root]["Status"] == "failed" and "fails permanently" in tasks[root]["Error"]
    [leaf] = [t for t in tasks.values() if t.get("Instance") == instance.uuid]
    chain = []
    task: dict[str, Any] | None = leaf
    while task is not None:
        chain.append(task)
        task = tasks.get(task.get("Parent", ""))
    assert [t["Type"] for t in chain] == ["Instance", "Cluster", "Element", "Solution"]
    for t in chain:
        assert t["Status"] == "failed", t
        assert "start failed: sim: start fails permanently" in t["Error"], t

    deploy(suite, "fail", "svc", "V2")
    [repaired] = instances(suite, "fail", "svc")[("web", "V1")]
    assert repaired.uuid == instance.uuid and repaired.state == ACTIVE and not repaired.error
    history = [(op["operation"], op["outcome"]) for op in suite.ops("svc") if op["instance"] == instance.uuid]
    assert history == [
        ("create", "ok"), ("configure", "ok"), ("start", "permanent"),
        ("reset", "ok"), ("create", "ok"), ("configure", "ok"), ("start", "ok"),
    ]


def test_a_cluster_that_ignores_its_siblings_is_never_reconfigured(suite: Suite) -> None:
    suite.apply(web("alone", "alone", "V1", 3, maximum=5, parameters={"sim_latency_ms": 10, "orch_siblings": "ignore"}))
    deploy(suite, "alone", "alone", "V1")
    first = instances(suite, "alone", "alone")[("web", "V1")]
    assert len(first) == 3 and all(i.state == ACTIVE for i in first)
    before_growth = max(op["finished"] for op in suite.ops("alone"))

    suite.ok("cluster", "set", "alone", "alone", "web", "V1", "--size", "5", "--wait")
    grown = instances(suite, "alone", "alone")[("web", "V1")]
    assert len(grown) == 5 and all(i.state == ACTIVE for i in grown)
    ops = suite.ops("alone")
    # Each instance went create, configure, start and nothing else, before
    # and after the cluster grew; none was told of members.
    for instance in grown:
        assert [op["operation"] for op in ops if op["instance"] == instance.uuid] == ["create", "configure", "start"]
        assert instance.members == ""
    assert not [op for op in ops_of(suite, "alone", after=before_growth) if op["instance"] in {i.uuid for i in first}]


def test_instance_set_inactive_stops_exactly_that_instance(suite: Suite) -> None:
    suite.apply(web("inst", "inst", "V1", 3))
    deploy(suite, "inst", "inst", "V1")
    members = instances(suite, "inst", "inst")[("web", "V1")]
    target = sorted(i.uuid for i in members)[1]
    since = max(op["finished"] for op in suite.ops("inst"))

    suite.ok("instance", "set", "inst", "inst", "web", "V1", target, "--state", "inactive", "--wait")
    states = {i.uuid: i.state for i in instances(suite, "inst", "inst")[("web", "V1")]}
    assert states == {i.uuid: (INACTIVE if i.uuid == target else ACTIVE) for i in members}
    ops = ops_of(suite, "inst", after=since)
    assert [(op["instance"], op["operation"]) for op in ops if op["operation"] != "reconfigure"] == [(target, "stop")]
    # The others stay up and learn that a member left.
    assert {op["instance"] for op in ops if op["operation"] == "reconfigure"} == {i.uuid for i in members} - {target}


def _erase_design(suite: Suite, domain: str, architecture: str, version: str, component: str) -> None:
    """Delete an architecture and a component from the model bucket behind the
    API's back (the API refuses while a solution uses them): the catalog edit
    a running solution must not notice."""
    connection = json.loads((suite.home / "connection.json").read_text())

    async def erase() -> None:
        nc = await nats.connect(connection["nats_url"])
        try:
            bucket = await nc.jetstream().key_value(Subjects(connection["subject_prefix"]).model_bucket)
            await bucket.delete(rk.architecture_key(domain, architecture, version))
            await bucket.delete(rk.component_key(domain, component, version))
        finally:
            await nc.close()

    asyncio.run(erase())


def test_a_running_solution_runs_from_its_records_whatever_happens_to_the_catalog(suite: Suite) -> None:
    suite.apply(web("records", "records", "V1", 1, maximum=3, parameters={"sim_latency_ms": 5, "tier": "gold"}))
    deploy(suite, "records", "records", "V1")
    [cluster] = [c for e in suite.solution("records", "records").elements for c in e.clusters]
    # The cluster record carries what a run needs: controller, parameters, rendered configuration.
    assert cluster.controller == "sim"
    assert cluster.parameters["tier"] == "gold" and cluster.parameters["element"] == "web"
    assert cluster.configuration == "web web V1"
    _erase_design(suite, "records", "records", "V1", "web")
    assert suite.orch("component", "get", "records", "web", "V1").returncode != 0

    # Scaling up and stopping still reach the same controller with the same configuration and parameters.
    started = max(op["finished"] for op in suite.ops("records"))
    suite.ok("cluster", "set", "records", "records", "web", "V1", "--size", "2", "--wait")
    suite.ok("solution", "set", "records", "records", "--state", "inactive", "--wait")
    after = suite.solution("records", "records")
    assert [i.state for e in after.elements for c in e.clusters for i in c.instances] == [INACTIVE, INACTIVE]
    ops = ops_of(suite, "records", after=started)
    assert {op["operation"] for op in ops} >= {"create", "configure", "start", "stop"}
    assert all(op["outcome"] == "ok" for op in ops), ops
