"""Failure semantics of the task engine through real processes (DESIGN.md
section 5): operation deadlines and retries, termination, a missing
controller, and two sim controller replicas of which one is killed.

One suite serves every test here: two sim replicas (the replica test needs
them; the others must work with them), a short controller wait (the missing
controller test), and a monitor that stays out of the way (it would
compensate failed instances on its own and change the op logs asserted on)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from collections.abc import Iterator

import pytest

import models
from controllers.sim.table import InstanceTable
from orchestration.v1 import model_pb2 as pb
from suite import Suite, running_suite, wait_until

# The dispatcher reads termination requests every 0.5 s; an operation that
# starts later than this after `orch task terminate` returned was sent after
# the termination was processed.
TERMINATION_SLACK = 0.6


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Suite]:
    flags = ("--controller-wait", "2", "--sim-replicas", "2", "--monitor-interval", "3600")
    with running_suite(tmp_path_factory.mktemp("engine-faults"), *flags) as running:
        yield running


def start_deploy(suite: Suite, domain: str, architecture: str) -> str:
    """Deploy version V1 without waiting; the root task id."""
    return json.loads(suite.ok("solution", "deploy", domain, architecture, "V1", "-o", "json"))["task"]


def all_instances(suite: Suite, domain: str, solution: str) -> list[pb.Instance]:
    """Every stored instance of a solution."""
    found = suite.solution(domain, solution)
    return [i for e in found.elements for c in e.clusters for i in c.instances]


def test_operation_slower_than_its_deadline_is_retried_then_fails(suite: Suite) -> None:
    params = {"sim_latency_ms": 1500, "orch_operation_timeout": 0.3, "orch_max_attempts": 3}
    suite.apply(models.flat("slow", 1, parameters=params, architecture="slow"))
    root = suite.wait_task("slow", start_deploy(suite, "slow", "slow"), timeout=30)
    assert root.status == pb.TASK_STATUS_FAILED
    assert "3 attempts" in root.error and "deadline exceeded" in root.error, root.error
    [instance] = all_instances(suite, "slow", "slow")
    assert instance.state == pb.STATE_FAILURE

    attempts = suite.ops("slow")
    # The sim logs an operation cut short by its deadline as "retryable"; all
    # three attempts are the same step, so they share one operation id.
    assert [(op["operation"], op["outcome"]) for op in attempts] == [("create", "retryable")] * 3
    assert len({op["operation_id"] for op in attempts}) == 1
    for op in attempts:
        assert op["finished"] - op["started"] < 1.0, "the deadline (0.3 s) did not cut the 1.5 s operation short"
    # Attempts follow each other (back-off), they do not overlap.
    for earlier, later in zip(attempts, attempts[1:]):
        assert later["started"] >= earlier["finished"]


def test_retryable_failure_succeeds_on_the_third_attempt_with_the_same_operation_id(suite: Suite) -> None:
    suite.apply(models.flat("flaky", 1, parameters={"sim_fail_retryable": "create", "sim_fail_times": 2},
                            architecture="flaky"))
    root = suite.wait_task("flaky", start_deploy(suite, "flaky", "flaky"), timeout=30)
    assert root.status == pb.TASK_STATUS_COMPLETED, root.error
    [instance] = all_instances(suite, "flaky", "flaky")
    assert instance.state == pb.STATE_ACTIVE
    creates = [op for op in suite.ops("flaky") if op["operation"] == "create"]
    assert [op["outcome"] for op in creates] == ["retryable", "retryable", "ok"]
    assert len({op["operation_id"] for op in creates}) == 1


def test_terminate_stops_the_run_and_no_operation_starts_afterwards(suite: Suite) -> None:
    # Two tiers of 15 (the second needs the first active before it is
    # created) at 300 ms per operation: about 2 s of staged work.
    suite.apply(models.chain("stop", [15, 15], parameters={"sim_latency_ms": 300}, architecture="stop"))
    task = start_deploy(suite, "stop", "stop")
    deadline = time.monotonic() + 30
    while not suite.ops("stop"):  # work has begun
        assert time.monotonic() < deadline, "the deploy did not start"
        time.sleep(0.02)
    suite.ok("task", "terminate", task, "--domain", "stop")
    requested = time.time()

    root = suite.wait_task("stop", task, timeout=30)
    assert root.status == pb.TASK_STATUS_TERMINATED, (root.status, root.error)
    ops = suite.ops("stop")
    late = [op for op in ops if op["started"] > requested + TERMINATION_SLACK]
    assert late == [], f"operations started after the termination: {late}"
    # It really was stopped mid-way: the second tier did not come up.
    assert not all(i.state == pb.STATE_ACTIVE for i in all_instances(suite, "stop", "stop"))
    tree = suite.task("stop", task, tree=True)
    unfinished = [t.uuid for t in tree.subtasks if t.status in (pb.TASK_STATUS_INITIAL, pb.TASK_STATUS_EXECUTING)]
    assert unfinished == [], "every subtask ends (terminated or done)"
    assert any(t.status == pb.TASK_STATUS_TERMINATED for t in tree.subtasks)


def test_a_running_instance_task_is_terminated_from_its_execution_event_and_waited_for(suite: Suite) -> None:
    # An instance task has no record until it ends: the terminate finds it
    # (and its root) from its execution event, the run ends it, and --wait
    # sees the end.
    suite.apply(models.flat("part", 2, parameters={"sim_latency_ms": 1000}, architecture="part"))
    task = start_deploy(suite, "part", "part")

    def running() -> list[pb.Task]:
        return [t for t in suite.task("part", task, tree=True).subtasks
                if t.type == pb.TASK_TYPE_INSTANCE and t.status == pb.TASK_STATUS_EXECUTING]

    target = wait_until(running, what="an instance task executing")[0]
    out = suite.ok("task", "terminate", target.uuid, "--wait")
    assert f"task {target.uuid} terminated" in out, out
    assert suite.task("part", target.uuid).task.status == pb.TASK_STATUS_TERMINATED
    root = suite.wait_task("part", task, timeout=30)
    assert root.status == pb.TASK_STATUS_TERMINATED, (root.status, root.error)
    ended = {t.uuid: t.status for t in suite.task("part", task, tree=True).subtasks if t.type == pb.TASK_TYPE_INSTANCE}
    assert ended[target.uuid] == pb.TASK_STATUS_TERMINATED and len(ended) == 2


def test_missing_controller_fails_the_deploy_naming_the_controller(suite: Suite) -> None:
    suite.apply(models.flat("lost", 1, architecture="lost").replace("Controller: sim", "Controller: nowhere"))
    result = suite.orch("solution", "deploy", "lost", "lost", "V1", "--wait", "-o", "json")
    assert result.returncode != 0
    assert "no controller 'nowhere'" in result.stderr, result.stderr
    root = suite.task("lost", json.loads(result.stdout)["task"]).task
    assert root.status == pb.TASK_STATUS_FAILED and "'nowhere'" in root.error
    assert suite.ops("lost") == []


def sim_table(suite: Suite, replica: str) -> set[str]:
    """uuids the replica's instance table holds (read from a copy of its journal)."""
    copy = suite.home / f"{replica}-copy.jsonl"
    shutil.copy(suite.home / f"{replica}-state.jsonl", copy)
    table = InstanceTable(copy)
    table.open()
    try:
        return {r.uuid for r in table.records()}
    finally:
        table.close()


def wait_for_pid(suite: Suite, name: str, other_than: int, timeout: float = 30) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid = suite.services().get(name)
        if pid and pid != other_than:
            return pid
        time.sleep(0.05)
    raise AssertionError(f"{name} did not come back within {timeout}s")


def test_two_replicas_share_the_work_and_a_sigkilled_one_loses_nothing(suite: Suite) -> None:
    suite.apply(models.chain("twin", [20, 20], parameters={"sim_latency_ms": 100}, architecture="twin"))
    task = start_deploy(suite, "twin", "twin")
    deadline = time.monotonic() + 30
    while not suite.ops("twin"):
        assert time.monotonic() < deadline, "the deploy did not start"
        time.sleep(0.02)
    victim = suite.services()["sim-2"]
    os.kill(victim, signal.SIGKILL)

    root = suite.wait_task("twin", task, timeout=60)
    assert root.status == pb.TASK_STATUS_COMPLETED, root.error
    instances = all_instances(suite, "twin", "twin")
    assert len(instances) == 40 and all(i.state == pb.STATE_ACTIVE for i in instances)
    wait_for_pid(suite, "sim-2", other_than=victim)  # orch up restarted it
    # The op log does not say which replica ran an operation; the replicas'
    # own instance tables do. Both served instances, and no instance exists
    # twice (each one lives where it was created).
    tables = {replica: sim_table(suite, replica) & {i.uuid for i in instances} for replica in ("sim-1", "sim-2")}
    assert tables["sim-1"] and tables["sim-2"], {k: len(v) for k, v in tables.items()}
    assert tables["sim-1"].isdisjoint(tables["sim-2"])
    assert tables["sim-1"] | tables["sim-2"] == {i.uuid for i in instances}
