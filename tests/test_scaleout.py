"""Scale-out on one machine: a three-node NATS cluster with JetStream
replication 3, two dispatchers, two sim controller replicas, a gateway and a
monitor, as real processes on loopback. One NATS node and one dispatcher are
killed with SIGKILL mid-deploy; nothing is lost or duplicated and the work
was spread over both dispatchers."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import grpc
import nats
import pytest

from cli.embedded_nats import MAX_FILE_STORE, find_nats_server, free_port, wait_for_port
from models import flat
from orchestration.runtime.credentials import engine_credential_for, issue_controller_credential
from orchestration.v1 import gateway_pb2 as gw
from orchestration.v1 import gateway_pb2_grpc as gw_grpc
from orchestration.v1 import model_pb2 as pb
from orchestration_sdk.runtime.credentials import secret_sha256
from orchestration_sdk.runtime.wire import bearer_metadata
from suite import wait_until

pytestmark = pytest.mark.faults

USER, PASSWORD, TOKEN, CREDENTIAL = "orch", "cluster-secret", "api-token", "engine-secret"
REGISTRATION_KEY = "registration-key"


@dataclass
class Cluster:
    home: Path
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    logs: list = field(default_factory=list)

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
        log = open(self.home / f"{name}.log", "ab")
        self.logs.append(log)
        proc = subprocess.Popen(argv, env={**os.environ, **(env or {})}, stdout=log, stderr=subprocess.STDOUT)
        self.procs[name] = proc
        return proc

    def kill(self, name: str) -> None:
        self.procs[name].send_signal(signal.SIGKILL)
        self.procs[name].wait()

    def stop(self) -> None:
        """Stop in reverse start order, each before the next, as orch up does:
        a service still reaches NATS and the dispatchers while it stops. (All
        at once, a dispatcher could wait out its NATS timeouts until killed.)"""
        for proc in reversed(list(self.procs.values())):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        for log in self.logs:
            log.close()


T = TypeVar("T")


def nats_node(cluster: Cluster, index: int, ports: list[int], routes: list[int]) -> None:
    data = cluster.home / f"nats-{index}"
    data.mkdir()
    conf = data / "nats.conf"
    route_urls = ", ".join(f"nats-route://127.0.0.1:{p}" for i, p in enumerate(routes) if i != index)
    conf.write_text(
        f"listen: 127.0.0.1:{ports[index]}\nserver_name: n{index}\n"
        f'jetstream {{ store_dir: "{data}", max_file_store: {MAX_FILE_STORE} }}\n'
        f'authorization {{ user: "{USER}", password: "{PASSWORD}" }}\n'
        f"cluster {{ name: orch, listen: 127.0.0.1:{routes[index]}, routes: [{route_urls}] }}\n"
    )
    cluster.start(f"nats-{index}", [find_nats_server(), "-c", str(conf)])


def jetstream_answers(port: int) -> bool:
    """True once JetStream answers through this node: the cluster has elected its meta leader."""
    async def ask() -> bool:
        nc = await nats.connect(f"nats://{USER}:{PASSWORD}@127.0.0.1:{port}", allow_reconnect=False, connect_timeout=2)
        try:
            await nc.jetstream(timeout=1).account_info()
            return True
        except Exception:  # noqa: BLE001 - no meta leader yet (or no route to it)
            return False
        finally:
            await nc.close()

    return asyncio.run(ask())


def logged(cluster: Cluster, name: str, *texts: str) -> bool:
    """True when the log of process `name` contains every one of `texts`."""
    log = (cluster.home / f"{name}.log").read_text()
    return all(text in log for text in texts)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[Cluster, str]]:
    found = Cluster(tmp_path)
    ports, routes = [free_port() for _ in range(3)], [free_port() for _ in range(3)]
    try:
        for index in range(3):
            nats_node(found, index, ports, routes)
        for port in ports:
            wait_for_port("127.0.0.1", port)
        wait_until(lambda: all(jetstream_answers(port) for port in ports), timeout=30,
                   what="a JetStream meta leader for the cluster")
        (tmp_path / "token").write_text(TOKEN)
        (tmp_path / "credential").write_text(CREDENTIAL)
        (tmp_path / "registration-key").write_text(REGISTRATION_KEY)
        (tmp_path / "sim-credential").write_text(issue_controller_credential(REGISTRATION_KEY, ["Internal", "sim"]))
        env = {
            "ORCH_NATS_URL": ",".join(f"nats://{USER}:{PASSWORD}@127.0.0.1:{p}" for p in ports),
            "ORCH_JS_REPLICAS": "3",
        }
        gateway = f"127.0.0.1:{free_port()}"
        dispatchers = [f"127.0.0.1:{free_port()}" for _ in range(2)]
        py = sys.executable
        found.start("gateway", [py, "-m", "gateway", "--addr", gateway, "--token-file", str(tmp_path / "token")], env)
        wait_for_port(*gateway.split(":"), timeout=30)  # type: ignore[arg-type]
        for i, address in enumerate(dispatchers, 1):
            found.start(f"dispatcher-{i}", [py, "-m", "dispatcher", "--addr", address, "--credential-file",
                                            str(tmp_path / "credential"), "--registration-key-file",
                                            str(tmp_path / "registration-key"), "--replica", f"dispatcher-{i}"], env)
            wait_for_port(*address.split(":"), timeout=30)  # type: ignore[arg-type]
        for i in (1, 2):
            found.start(f"sim-{i}", [py, "-m", "controllers.sim", "--dispatcher", ",".join(dispatchers),
                                     "--credential-file", str(tmp_path / "sim-credential"),
                                     "--engine-credential-sha256", secret_sha256(engine_credential_for(CREDENTIAL, "Internal")),
                                     "--replica", f"sim-{i}",
                                     "--state-file", str(tmp_path / f"sim-{i}.jsonl"), "--op-log", str(tmp_path / "ops.jsonl")])
        found.start("monitor", [py, "-m", "monitor", "--credential-file", str(tmp_path / "credential"), "--interval", "2"], env)
        yield found, gateway
    finally:
        found.stop()


def retried(call: Callable[[], T], seconds: float = 90) -> T:
    """A read as a careful client makes it: UNAVAILABLE means "try again in a
    moment" (right after a node dies, NATS may not have moved its consumers yet)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return call()
        except grpc.RpcError as err:
            if err.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() > deadline:
                raise
            time.sleep(1.0)


def ops(path: Path) -> list[dict]:
    import json

    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def test_deploy_survives_a_nats_node_and_a_dispatcher_killed(cluster: tuple[Cluster, str]) -> None:
    found, address = cluster
    channel = grpc.insecure_channel(address)
    metadata = bearer_metadata(TOKEN)
    admin = gw_grpc.AdministrationServiceStub(channel)
    solutions = gw_grpc.SolutionServiceStub(channel)
    automation = gw_grpc.AutomationServiceStub(channel)
    admin.Apply(gw.ApplyRequest(document=flat("scale", 50, parameters={"sim_latency_ms": 20})), metadata=metadata, timeout=30)
    dispatchers = ("dispatcher-1", "dispatcher-2")
    wait_until(lambda: all(logged(found, d, "replica sim-1 at ", "replica sim-2 at ") for d in dispatchers),
               timeout=30, what="both dispatchers knowing both sims")
    names = [f"s{i}" for i in range(6)]
    tasks = {}
    for name in names:
        reply = solutions.DeploySolution(gw.DeploySolutionRequest(domain="scale", architecture="app", version="V1", solution=name),
                                         metadata=metadata, timeout=30)
        tasks[name] = reply.task
    # Mid-deploy: the dispatcher about to be killed is running some of it.
    wait_until(lambda: logged(found, "dispatcher-1", "running task"), timeout=30, what="dispatcher-1 running a task")
    found.kill("nats-1")
    found.kill("dispatcher-1")

    deadline = time.monotonic() + 150
    pending = dict(tasks)
    while pending and time.monotonic() < deadline:
        for name, task in list(pending.items()):
            try:
                root = automation.RetrieveTask(gw.RetrieveTaskRequest(domain="scale", task=task), metadata=metadata, timeout=10).task
            except grpc.RpcError:
                continue
            if root.status in (pb.TASK_STATUS_COMPLETED, pb.TASK_STATUS_FAILED, pb.TASK_STATUS_TERMINATED, pb.TASK_STATUS_TIMEOUT):
                assert root.status == pb.TASK_STATUS_COMPLETED, f"{name}: {root.error}"
                del pending[name]
        time.sleep(0.5)
    assert not pending, f"not finished: {sorted(pending)}"

    creates: dict[str, set[str]] = defaultdict(set)
    for op in ops(found.home / "ops.jsonl"):
        if op["operation"] == "create" and op["outcome"] == "ok":
            creates[op["instance"]].add(op["operation_id"])
    uuids = set()
    for name in names:
        solution = retried(lambda: solutions.RetrieveSolution(gw.RetrieveSolutionRequest(domain="scale", solution=name),
                                                              metadata=metadata, timeout=30)).solution
        instances = [i for e in solution.elements for c in e.clusters for i in c.instances]
        assert len(instances) == 50 and all(i.state == pb.STATE_ACTIVE for i in instances)
        uuids |= {i.uuid for i in instances}
    assert set(creates) == uuids, "every instance created, nothing else"
    assert all(len(ids) == 1 for ids in creates.values()), "no instance created twice"
    ran = {name: len(re.findall(r"running task", (found.home / f"{name}.log").read_text())) for name in ("dispatcher-1", "dispatcher-2")}
    assert ran["dispatcher-1"] > 0 and ran["dispatcher-2"] > 0, f"work was spread over both dispatchers: {ran}"
    channel.close()
