"""Crashes lose nothing: real processes killed with SIGKILL mid-deploy."""

from __future__ import annotations

import json
import os
import random
import signal
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest

from models import chain
from orchestration.v1 import model_pb2 as pb
from suite import Suite, alive, running_suite, sim_instances, wait_until

pytestmark = pytest.mark.faults


@pytest.fixture
def suite(tmp_path: Path) -> Iterator[Suite]:
    with running_suite(tmp_path, "--operation-timeout", "5") as running:
        yield running


def wait_for_pid(suite: Suite, name: str, timeout: float = 30, other_than: int = 0) -> int:
    """pid of the child service `name` (one other than `other_than`: a restarted one)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid = suite.services().get(name)
        if pid and pid != other_than:
            return pid
        time.sleep(0.05)
    raise AssertionError(f"{name} did not come back within {timeout}s")


def kill(pid: int) -> None:
    """SIGKILL a child service and wait until it is really gone."""
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not alive(pid), timeout=10, what=f"pid {pid} dying")


def work_started(suite: Suite, solution: str) -> None:
    """Wait until the sim controller has run an operation of the deploy: it is under way."""
    wait_until(lambda: suite.ops(solution), timeout=30, what=f"the deploy of {solution} starting")


def assert_nothing_lost_or_duplicated(suite: Suite, domain: str, solution: str) -> None:
    found = suite.solution(domain, solution)
    instances = {i.uuid: i for e in found.elements for c in e.clusters for i in c.instances}
    assert len(instances) == sum(c.size for e in found.elements for c in e.clusters), "as many instances as the sizes say"
    assert all(i.state == pb.STATE_ACTIVE for i in instances.values())
    creates: dict[str, set[str]] = defaultdict(set)
    for op in suite.ops(solution):
        if op["operation"] == "create" and op["outcome"] == "ok":
            creates[op["instance"]].add(op["operation_id"])
    duplicated = {uuid: ids for uuid, ids in creates.items() if len(ids) > 1}
    assert not duplicated, f"instances created under several operation ids: {duplicated}"
    assert set(creates) == set(instances), "every instance was created, and nothing else"
    held = {uuid for uuid, state in sim_instances(suite).items()}
    assert held <= set(instances), f"the sim holds instances the solution does not know: {held - set(instances)}"


def test_dispatcher_killed_repeatedly_during_a_deploy(suite: Suite) -> None:
    # Five tiers at 150 ms per operation: at least 2.5 s of staged work, whatever the engine's speed.
    suite.apply(chain("crash", [20, 60, 80, 80, 60], parameters={"sim_latency_ms": 150}))
    task = json.loads(suite.ok("solution", "deploy", "crash", "app", "V1", "-o", "json"))["task"]
    rng = random.Random(7)
    kills = 0
    while kills < 4 and suite.task("crash", task).task.status in (pb.TASK_STATUS_INITIAL, pb.TASK_STATUS_EXECUTING):
        # On purpose: fault injection at random moments of the deploy (seeded).
        time.sleep(rng.uniform(0.3, 1.2))
        kill(wait_for_pid(suite, "dispatcher"))
        kills += 1
    assert kills >= 2, "the deploy ended before the dispatcher could be killed twice; make it longer"
    root = suite.wait_task("crash", task, timeout=120)
    assert root.status == pb.TASK_STATUS_COMPLETED, root.error
    # Every element and cluster record is there (a run writes most of them after its first operation).
    assert [(e.name, len(e.clusters)) for e in suite.solution("crash", "app").elements] == [(f"e{i}", 1) for i in range(5)]
    assert_nothing_lost_or_duplicated(suite, "crash", "app")
    # Every instance has one task in the tree, completed: a kill while it ran
    # (its start stored in its execution event alone, its record written
    # when it ends) left it to the next owner, which went on with it.
    instance_tasks = [t for t in suite.task("crash", task, tree=True).subtasks if t.type == pb.TASK_TYPE_INSTANCE]
    assert sorted(t.instance for t in instance_tasks) == sorted(
        i.uuid for e in suite.solution("crash", "app").elements for c in e.clusters for i in c.instances)
    assert {t.status for t in instance_tasks} == {pb.TASK_STATUS_COMPLETED}


def test_gateway_killed_running_tasks_are_unaffected(suite: Suite) -> None:
    suite.apply(chain("gw", [10, 40], parameters={"sim_latency_ms": 20}))
    task = json.loads(suite.ok("solution", "deploy", "gw", "app", "V1", "-o", "json"))["task"]
    work_started(suite, "app")
    victim = wait_for_pid(suite, "gateway")
    kill(victim)
    wait_for_pid(suite, "gateway", other_than=victim)  # orch up restarts it after a second
    deadline = time.monotonic() + 30
    while True:
        try:
            root = suite.wait_task("gw", task, timeout=60)
            break
        except Exception:  # noqa: BLE001 - the gateway may still be coming back
            assert time.monotonic() < deadline
            time.sleep(0.5)
    assert root.status == pb.TASK_STATUS_COMPLETED, root.error
    assert_nothing_lost_or_duplicated(suite, "gw", "app")
    # orch up supervises its children, and says so.
    output = (suite.home / "up.log").read_text()
    assert "gateway exited unexpectedly" in output and "restarted gateway" in output


def test_nats_killed_and_restarted_mid_deploy(suite: Suite) -> None:
    suite.apply(chain("nats", [10, 60, 60], parameters={"sim_latency_ms": 10}))
    task = json.loads(suite.ok("solution", "deploy", "nats", "app", "V1", "-o", "json"))["task"]
    work_started(suite, "app")
    victim = wait_for_pid(suite, "nats-server")
    kill(victim)
    wait_for_pid(suite, "nats-server", other_than=victim)
    deadline = time.monotonic() + 90
    root = None
    while time.monotonic() < deadline:
        try:
            root = suite.wait_task("nats", task, timeout=5)
            break
        except Exception:  # noqa: BLE001 - NATS and the gateway come back
            time.sleep(0.5)
    assert root is not None and root.status == pb.TASK_STATUS_COMPLETED, root
    assert_nothing_lost_or_duplicated(suite, "nats", "app")


def test_monitor_killed_only_monitoring_pauses(tmp_path: Path) -> None:
    with running_suite(tmp_path, "--monitor-interval", "1") as suite:
        suite.apply(chain("mon", [3, 6]))
        os.kill(wait_for_pid(suite, "monitor"), signal.SIGKILL)
        # While the monitor is down, deploys run as usual.
        task = json.loads(suite.ok("solution", "deploy", "mon", "app", "V1", "--wait", "-o", "json"))["task"]
        assert suite.task("mon", task).task.status == pb.TASK_STATUS_COMPLETED
        # orch up brings it back, and it polls again.
        wait_for_pid(suite, "monitor")
        info = json.loads(suite.ok("info", "-o", "json", "--show-secrets"))
        import asyncio

        import nats

        async def figures() -> dict:
            nc = await nats.connect(info["nats_url"])
            try:
                for _ in range(40):
                    try:
                        reply = await nc.request("orch.monitor.figures", b"", timeout=1)
                        found = json.loads(reply.data)
                        if found.get("instances") == 9:
                            return found
                    except Exception:  # noqa: BLE001 - not back yet
                        pass
                    await asyncio.sleep(0.5)
                return {}
            finally:
                await nc.close()

        assert asyncio.run(figures()).get("instances") == 9
        assert "monitor exited unexpectedly" in (tmp_path / "up.log").read_text()
