"""Concurrent requests: one task per solution at a time (others are refused
with FAILED_PRECONDITION), the last accepted intent wins, and two dispatcher
replicas never run the same solution at the same time."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc

from cli.embedded_nats import free_port
from models import architecture_only, flat
from orchestration.v1 import gateway_pb2 as gw
from orchestration.v1 import model_pb2 as pb
from suite import running_suite, wait_until


def test_requests_on_a_busy_solution_are_refused_and_the_last_accepted_intent_wins(tmp_path: Path) -> None:
    with running_suite(tmp_path) as suite:
        suite.apply(flat("busy", 6, parameters={"sim_latency_ms": 30}, maximum=10))
        suite.apply(architecture_only(flat("busy", 3, parameters={"sim_latency_ms": 30}, maximum=10, version="V2")))

        def deploy(version: str) -> tuple[str, str]:
            try:
                reply = suite.solutions.DeploySolution(
                    gw.DeploySolutionRequest(domain="busy", architecture="app", version=version), metadata=suite.metadata, timeout=10)
                return "ok", reply.task
            except grpc.RpcError as err:
                return err.code().name, err.details()

        def resize(size: int) -> tuple[str, str]:
            request = gw.UpdateClusterRequest(domain="busy", solution="app", element="e0", cluster="V1", size=size)
            try:
                return "ok", suite.solutions.UpdateCluster(request, metadata=suite.metadata, timeout=10).task
            except grpc.RpcError as err:
                return err.code().name, err.details()

        first = deploy("V1")
        assert first[0] == "ok"
        with ThreadPoolExecutor(8) as pool:
            outcomes = list(pool.map(lambda i: deploy("V2") if i % 2 else resize(4 + i % 5), range(16)))
        refused = [o for o in outcomes if o[0] == "FAILED_PRECONDITION"]
        assert refused, "requests during a running task are refused"
        assert all("busy with task" in detail for _, detail in refused)
        accepted = [first[1], *(task for code, task in outcomes if code == "ok")]
        # Whatever was accepted ran alone and to the end, in order.
        for task in accepted:
            assert suite.wait_task("busy", task, timeout=60).status == pb.TASK_STATUS_COMPLETED
        # Now a sequence of accepted intents: the final state is the last one.
        suite.ok("cluster", "set", "busy", "app", "e0", "V1", "--size", "8", "--wait")
        suite.ok("cluster", "set", "busy", "app", "e0", "V1", "--size", "5", "--wait")
        solution = suite.solution("busy", "app")
        cluster = next(c for e in solution.elements for c in e.clusters)
        assert cluster.size == 5 and len(cluster.instances) == 5
        assert all(i.state == pb.STATE_ACTIVE for i in cluster.instances)


RUN = re.compile(r"^(\d\d:\d\d:\d\d\.\d+) .*running task (\S+) of (\S+)")
END = re.compile(r"^(\d\d:\d\d:\d\d\.\d+) .*task (\S+) of (\S+) ended")


def intervals(log: str) -> dict[str, list[tuple[str, str, str]]]:
    """solution key -> [(start, end, task)] from a dispatcher's log."""
    starts: dict[str, tuple[str, str]] = {}
    found: dict[str, list[tuple[str, str, str]]] = {}
    for line in log.splitlines():
        if m := RUN.match(line):
            starts[m.group(2)] = (m.group(1), m.group(3))
        elif m := END.match(line):
            begun = starts.pop(m.group(2), None)
            if begun:
                found.setdefault(m.group(3), []).append((begun[0], m.group(1), m.group(2)))
    return found


def test_two_dispatchers_share_work_but_never_a_solution_at_once(tmp_path: Path) -> None:
    with running_suite(tmp_path) as suite:
        info = json.loads(suite.ok("info", "-o", "json", "--show-secrets"))
        log_path = tmp_path / "dispatcher-2.log"
        with open(log_path, "wb") as log:
            second = subprocess.Popen(
                [sys.executable, "-m", "dispatcher", "--addr", f"127.0.0.1:{free_port()}", "--credential-file",
                 str(tmp_path / "engine-credential"), "--registration-key-file",
                 str(tmp_path / "registration-key"), "--replica", "dispatcher-2"],
                env={**os.environ, "ORCH_NATS_URL": info["nats_url"]}, stdout=log, stderr=subprocess.STDOUT,
            )
            try:
                def second_ready() -> bool:
                    assert second.poll() is None, log_path.read_text()
                    return "replica dispatcher-2 on port" in log_path.read_text()

                # It logs this once it serves and its request consumer is started.
                wait_until(second_ready, timeout=30, what="the second dispatcher starting")
                names = [f"s{i}" for i in range(12)]
                suite.apply(flat("pair", 4, parameters={"sim_latency_ms": 20}))
                tasks = []
                for round_ in range(2):
                    for name in names:
                        version = "V1"
                        reply = suite.solutions.DeploySolution(
                            gw.DeploySolutionRequest(domain="pair", architecture="app", version=version, solution=name),
                            metadata=suite.metadata, timeout=10)
                        tasks.append(reply.task)
                    for task in tasks[-len(names):]:
                        assert suite.wait_task("pair", task, timeout=60).status == pb.TASK_STATUS_COMPLETED
                    if round_ == 0:
                        for name in names:
                            suite.ok("cluster", "set", "pair", name, "e0", "V1", "--state", "inactive", "--wait")
            finally:
                second.terminate()
                second.wait(timeout=30)
        one = intervals((tmp_path / "up.log").read_text())
        two = intervals(log_path.read_text())
        assert one and two, "both dispatchers ran tasks"
        for key in set(one) & set(two):
            for start_a, end_a, _ in one[key]:
                for start_b, end_b, _ in two[key]:
                    assert end_a <= start_b or end_b <= start_a, f"{key} ran on both dispatchers at once"


def test_orch_up_with_two_dispatchers_runs_two_solutions_changes_on_both(tmp_path: Path) -> None:
    """`orch up --dispatchers 2` (its default on two cores): each controller
    registers once and serves both; changes of two solutions asked for at
    once run on different dispatchers, each solution on one."""
    with running_suite(tmp_path, "--dispatchers", "2") as suite:
        connection = json.loads((tmp_path / "connection.json").read_text())
        assert len(connection["dispatcher"].split(",")) == 2
        assert {"dispatcher", "dispatcher-2"} <= set(connection["metrics"])
        for domain in ("pa", "pb"):
            suite.apply(flat(domain, 100, parameters={"orch_siblings": "ignore", "sim_latency_ms": 20}, elements=5))
        suite.ok("solution", "deploy", "pa", "app", "V1", "--wait")  # both dispatchers up and reading
        pairs = []
        for i in range(3):
            pairs.append((suite.ok("solution", "deploy", "pa", "app", "V1", "--solution", f"a{i}").strip(),
                          suite.ok("solution", "deploy", "pb", "app", "V1", "--solution", f"b{i}").strip()))
            a, b = pairs[-1]
            assert suite.wait_task("pa", a).status == pb.TASK_STATUS_COMPLETED
            assert suite.wait_task("pb", b).status == pb.TASK_STATUS_COMPLETED
        ran = {task: replica for task, replica in re.findall(r"running task (\S+) of \S+ on (dispatcher-\d)",
                                                              (tmp_path / "up.log").read_text())}
        apart = sum(ran[a] != ran[b] for a, b in pairs)
        assert apart >= 2, f"pairs asked for at once ran apart {apart} times of 3: {ran}"
