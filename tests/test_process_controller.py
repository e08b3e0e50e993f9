"""The process controller with real processes: the nats-cluster example
deployed, scaled 3 -> 4 -> 3, restarted under, a node killed by hand, torn
down; commands that exit at once or never become ready. Plus the template
language and settings, which need no process."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest

from controllers.process import ProcessController
from controllers.process.settings import ProcessSettings
from controllers.process.template import TemplateError, endpoint_fields, render
from controllers.sdk import UNKNOWN, OperationContext, Permanent
from orchestration.runtime.grpcserver import bearer_metadata
from orchestration.v1 import controller_pb2 as cpb
from orchestration.v1 import controller_pb2_grpc as cpb_grpc
from orchestration.v1 import model_pb2 as pb
from suite import Suite, alive, children_of, cmdline, monitor_figure, running_suite, wait_until

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "nats-cluster" / "nats-cluster.yaml"
DOMAIN, SOLUTION = "examples", "nats-cluster"

T = TypeVar("T")

BROKEN = """
Name: broken
Components:
  job - V1.0.0:
    Component: job
    Version: V1.0.0
    Controller: "process:V1.0.0"
    Configuration: ""
    Dependencies: {}
Architectures:
  exits - V1.0.0:
    Architecture: exits
    Version: V1.0.0
    Configuration: ""
    Elements:
      job:
        Element: job
        Component: job
        Configuration: |
          command: python
          # JSON, not a YAML list: the engine joins YAML lists with commas.
          args: >-
            ["-c", "import sys; print('cannot open settings.ini: no such file', file=sys.stderr); sys.exit(3)"]
        Clusters:
          V1.0.0: {Version: V1.0.0, State: active, Min: 1, Max: 1, Size: 1, Configuration: "", Relationships: {}}
  hangs - V1.0.0:
    Architecture: hangs
    Version: V1.0.0
    Configuration: ""
    Elements:
      job:
        Element: job
        Component: job
        Configuration: |
          command: python
          args: >-
            ["-c", "import time; print('warming up the cache', flush=True); time.sleep(120)"]
          port: auto
          ready_tcp: "{{host}}:{{port}}"
          ready_timeout: 1.5
        Clusters:
          V1.0.0: {Version: V1.0.0, State: active, Min: 1, Max: 1, Size: 1, Configuration: "", Relationships: {}}
"""


# ---- helpers -------------------------------------------------------------------------


def wait_for(probe: Callable[[], T], timeout: float = 15.0, what: str = "condition",
             explain: Callable[[], object] | None = None) -> T:
    """Poll until `probe` returns something truthy; return it."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            detail = explain() if explain is not None else value
            raise AssertionError(f"{what} not reached within {timeout}s: {detail!r}")
        time.sleep(0.1)


def work_root(suite: Suite) -> Path:
    return suite.home / "process"


def processes_in(root: Path) -> dict[int, str]:
    """pid -> command line of every live process whose working directory is under `root`."""
    found = {}
    prefix = str(root.resolve())
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cwd = os.readlink(entry / "cwd")
            except OSError:
                continue
            pid = int(entry.name)
            if (cwd == prefix or cwd.startswith(prefix + "/")) and alive(pid):
                found[pid] = cmdline(pid)
    return found


def nats_servers(suite: Suite) -> dict[int, str]:
    return {pid: line for pid, line in processes_in(work_root(suite)).items() if "nats-server" in line}


def instances(suite: Suite, element: str, domain: str = DOMAIN, solution: str = SOLUTION) -> list[pb.Instance]:
    found = suite.solution(domain, solution)
    return [i for e in found.elements if e.name == element for c in e.clusters for i in c.instances]


def get_json(url: str) -> tuple[int, dict[str, Any]]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def fields(instance: pb.Instance) -> dict[str, str]:
    return endpoint_fields(instance.endpoint)


def routes_seen(instance: pb.Instance) -> set[str]:
    """Names of the servers a NATS node has routes to (its monitoring /routez)."""
    _, routez = get_json(f"http://127.0.0.1:{fields(instance)['monitor']}/routez")
    return {route["remote_name"] for route in routez.get("routes") or []}


def one_cluster(suite: Suite) -> bool:
    """Every active NATS node has a route to every other one, and to no one else."""
    nodes = instances(suite, "nats")
    names = {f"nats-{n.uuid}" for n in nodes}
    return all(n.state == pb.STATE_ACTIVE for n in nodes) and all(
        routes_seen(n) == names - {f"nats-{n.uuid}"} for n in nodes
    )


def rendered_routes(suite: Suite, instance: pb.Instance) -> set[str]:
    conf = (work_root(suite) / instance.uuid / "nats.conf").read_text()
    return set(re.findall(r"nats-route://127\.0\.0\.1:(\d+)", conf))


def controller_pid(suite: Suite) -> int | None:
    for pid in children_of(suite.proc.pid):
        if "-m controllers.process" in cmdline(pid) and alive(pid):
            return pid
    return None


def controller_stub(suite: Suite) -> cpb_grpc.ControllerServiceStub:
    """A stub for the process controller's latest incarnation (its port is in the log)."""
    ports = re.findall(r"controller process V1\.0\.0 listening on port (\d+)", (suite.home / "up.log").read_text())
    return cpb_grpc.ControllerServiceStub(grpc.insecure_channel(f"127.0.0.1:{ports[-1]}"))


def delete(suite: Suite, domain: str, solution: str) -> None:
    """Delete a solution, waiting out a task the monitor may be running on it."""
    deadline = time.monotonic() + 30
    while True:
        result = suite.orch("solution", "delete", domain, solution, "--wait")
        if result.returncode == 0:
            return
        assert "busy" in result.stderr and time.monotonic() < deadline, result.stderr
        time.sleep(0.3)


# ---- the suite -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Suite]:
    home = tmp_path_factory.mktemp("process-controller")
    previous = os.getcwd()
    # The example runs {{base_dir}}/examples/...: base_dir is orch up's working directory.
    os.chdir(REPO)
    try:
        with running_suite(home, "--monitor-interval", "1") as running:
            os.chdir(previous)
            running.ok("apply", "-f", str(EXAMPLE))
            running.apply(BROKEN)
            yield running
    finally:
        os.chdir(previous)
        # Whatever a failed test left behind must not outlive the suite.
        for pid in processes_in(home / "process"):
            os.kill(pid, signal.SIGKILL)


def test_deploy_example_forms_one_nats_cluster_and_the_service_can_publish(suite: Suite) -> None:
    suite.ok("solution", "deploy", DOMAIN, "nats-cluster", "V1.0.0", "--wait")
    nats, web = instances(suite, "nats"), instances(suite, "web")
    assert len(nats) == 3 and len(web) == 2
    assert all(i.state == pb.STATE_ACTIVE for i in nats + web)
    assert len(nats_servers(suite)) == 3
    wait_for(lambda: one_cluster(suite), what="one NATS cluster of three")
    for instance in web:
        code, report = get_json(instance.endpoint + "/")
        assert code == 200 and report["can_publish"] is True, report
        # Subscribed on one node, published on another: the message crossed a route.
        assert report["crossed_nodes"] is True and len(report["servers"]) == 3


def test_restarting_the_controller_adopts_its_processes(suite: Suite) -> None:
    before = processes_in(work_root(suite))
    old = controller_pid(suite)
    assert old is not None and len(before) == 5
    os.kill(old, signal.SIGKILL)
    wait_for(lambda: (pid := controller_pid(suite)) is not None and pid != old, what="a new controller")
    wait_for(lambda: "5 running processes adopted" in (suite.home / "up.log").read_text(), what="adoption")
    every = instances(suite, "nats") + instances(suite, "web")
    refs = [cpb.InstanceReference(domain=DOMAIN, solution=SOLUTION, uuid=i.uuid) for i in every]
    metadata = bearer_metadata((suite.home / "controller-credential").read_text().strip())
    answer = wait_for(lambda: _status(suite, refs, metadata), what="Status of the new controller")
    assert answer is not None
    assert {s.uuid: (s.state, s.endpoint) for s in answer.statuses} == {i.uuid: (pb.STATE_ACTIVE, i.endpoint) for i in every}
    # Two monitor polls later: nothing drifted, nothing restarted, nothing started twice.
    polls, drifts = monitor_figure(suite, "orch_monitor_poll_seconds_count"), monitor_figure(suite, "orch_monitor_drift_total")
    wait_until(lambda: monitor_figure(suite, "orch_monitor_poll_seconds_count") >= polls + 2, timeout=15,
               what="two monitor polls")
    assert monitor_figure(suite, "orch_monitor_drift_total") == drifts
    assert processes_in(work_root(suite)) == before
    assert all(i.state == pb.STATE_ACTIVE for i in instances(suite, "nats") + instances(suite, "web"))


def _status(suite: Suite, refs: list[cpb.InstanceReference], metadata: Any) -> cpb.StatusResponse | None:
    try:
        answer: cpb.StatusResponse = controller_stub(suite).Status(
            cpb.StatusRequest(instances=refs), metadata=metadata, timeout=5
        )
        return answer
    except grpc.RpcError:
        return None


def test_a_nats_server_killed_by_hand_runs_again(suite: Suite) -> None:
    victim = instances(suite, "nats")[0]
    pid_file = work_root(suite) / victim.uuid / "pid.json"
    old = json.loads(pid_file.read_text())["pid"]
    os.kill(old, signal.SIGKILL)

    def restarted() -> bool:
        try:
            pid = json.loads(pid_file.read_text())["pid"]
        except (OSError, ValueError):
            return False
        return pid != old and alive(pid) and "nats-server" in cmdline(pid)

    wait_for(restarted, timeout=20, what="the killed nats-server running again")
    assert len(nats_servers(suite)) == 3
    wait_for(lambda: one_cluster(suite), what="one NATS cluster again")


def stale_routes(suite: Suite) -> dict[str, tuple[set[str], set[str]]]:
    """NATS nodes whose nats.conf does not route to exactly their siblings: (rendered, expected)."""
    nodes = instances(suite, "nats")
    found = {}
    for node in nodes:
        expected = {fields(s)["cluster"] for s in nodes if s.uuid != node.uuid}
        if rendered_routes(suite, node) != expected:
            found[node.uuid] = (rendered_routes(suite, node), expected)
    return found


def test_scaling_nats_3_4_3_reconfigures_the_siblings_and_leaves_a_healthy_cluster(suite: Suite) -> None:
    suite.ok("cluster", "set", DOMAIN, SOLUTION, "nats", "V1.0.0", "--size", "4", "--wait")
    grown = instances(suite, "nats")
    assert len(grown) == 4 and len(nats_servers(suite)) == 4
    # Rendered from the siblings' endpoints: the three old nodes were reconfigured.
    assert stale_routes(suite) == {}
    wait_for(lambda: one_cluster(suite), what="one NATS cluster of four")

    suite.ok("cluster", "set", DOMAIN, SOLUTION, "nats", "V1.0.0", "--size", "3", "--wait")
    shrunk = instances(suite, "nats")
    gone = {i.uuid for i in grown} - {i.uuid for i in shrunk}
    assert len(shrunk) == 3 and len(gone) == 1 and len(nats_servers(suite)) == 3
    assert not (work_root(suite) / gone.pop()).exists()
    wait_for(lambda: one_cluster(suite), what="one NATS cluster of three again")
    code, report = get_json(instances(suite, "web")[0].endpoint + "/")
    assert code == 200 and report["can_publish"] is True, report


def test_scaling_down_rerenders_the_remaining_siblings_routes(suite: Suite) -> None:
    assert stale_routes(suite) == {}


@pytest.mark.parametrize(("architecture", "expected"), [
    ("exits", ["exited with code 3", "cannot open settings.ini: no such file"]),
    ("hangs", ["was not ready within 1.5s", "tcp 127.0.0.1:", "warming up the cache"]),
])
def test_a_failing_command_fails_the_task_with_its_last_output(suite: Suite, architecture: str, expected: list[str]) -> None:
    out = suite.orch("solution", "deploy", "broken", architecture, "V1.0.0", "-o", "json")
    assert out.returncode == 0, out.stderr
    task = suite.wait_task("broken", json.loads(out.stdout)["task"], timeout=30)
    assert task.status == pb.TASK_STATUS_FAILED
    assert task.error.startswith("start failed: process: ")
    for text in expected:
        assert text in task.error, task.error
    delete(suite, "broken", architecture)
    assert not any("settings.ini" in line or "warming up" in line for line in processes_in(work_root(suite)).values())


def test_teardown_leaves_no_process_and_no_work_dir(suite: Suite) -> None:
    delete(suite, DOMAIN, SOLUTION)
    assert json.loads(suite.ok("solution", "list", DOMAIN, "-o", "json")) == []
    assert processes_in(work_root(suite)) == {}
    assert list(work_root(suite).iterdir()) == []


# ---- the template language and settings (no processes) ---------------------------------

NODES = ["nats://127.0.0.1:4222?cluster=6222&monitor=8222", "nats://127.0.0.1:4223?cluster=6223&monitor=8223"]


def test_template_renders_values_lists_and_endpoint_fields() -> None:
    values: dict[str, str | list[str]] = {"uuid": "u1", "ports.client": "4224", "siblings": NODES, "providers.db": []}
    routes = "{{siblings | format '\"nats-route://{host}:{cluster}\"' | join ', '}}"
    assert render(routes, values) == '"nats-route://127.0.0.1:6222", "nats-route://127.0.0.1:6223"'
    assert render("{{ siblings | format '{url}' }}", values) == "nats://127.0.0.1:4222,nats://127.0.0.1:4223"
    assert render("{{siblings|format '{address}'|first}} {{siblings|count}}", values) == "127.0.0.1:4222 2"
    assert render("{{providers.db | default 'none'}} {{ports.client}} {{'{{'}}", values) == "none 4224 {{"
    assert render("{{siblings | json}}", values) == json.dumps(NODES)


@pytest.mark.parametrize(("template", "message"), [
    ("{{nope}}", "unknown name 'nope'"),
    ("{{uuid | upper}}", "unknown filter 'upper'"),
    ("{{siblings | format '{colour}'}}", "has no field 'colour'"),
    ("{{uuid", "never closed"),
    ("{{siblings | join}}", "takes 1 quoted argument"),
])
def test_template_errors_name_the_problem(template: str, message: str) -> None:
    with pytest.raises(TemplateError, match=re.escape(message)):
        render(template, {"uuid": "u1", "siblings": NODES}, "files.x")


def test_settings_parse_and_reject_with_the_key() -> None:
    settings = ProcessSettings.parse({
        "command": "nats-server -c nats.conf", "ports": "client,cluster", "args": '["-D", "a b"]',
        "env": '{"A": "1"}', "files": '{"conf/x.conf": "{{port}}"}', "reconfigure": "signal:HUP", "ready_timeout": "2.5",
    })
    assert settings.args == ("-D", "a b") and settings.env == {"A": "1"} and settings.ready_timeout == 2.5
    assert settings.reconfigure.signal == signal.SIGHUP and settings.endpoint == "{{host}}:{{ports.client}}"
    for parameters, message in [
        ({}, "'command' is required"),
        ({"command": "x", "port": "many"}, "port='many'"),
        ({"command": "x", "files": '{"../escape": ""}'}, "inside the work dir"),
        ({"command": "x", "files": '{"pid.json": ""}'}, "kept by the controller"),
        ({"command": "x", "reconfigure": "signal:NOPE"}, "names no signal"),
        ({"command": "x", "stop_grace": "soon"}, "stop_grace='soon'"),
    ]:
        with pytest.raises(Permanent, match=re.escape(message)):
            ProcessSettings.parse(parameters)


# ---- operations in process (real processes, no engine) ----------------------------------


def context(transition: str, parameters: dict[str, str] | None = None, siblings: tuple[str, ...] = (),
            uuid: str = "u-1") -> OperationContext:
    return OperationContext(
        domain="d", solution="s", element="e", cluster="V1", uuid=uuid, component="c", component_version="V1",
        operation_id=f"{uuid}-{transition}", transition=transition, attempt=1, deadline=time.time() + 10,
        configuration="", parameters=parameters or {}, providers=(), siblings=siblings,
        logger=logging.LoggerAdapter(logging.getLogger("test.process"), {}),
    )


def pid_of(controller: ProcessController, uuid: str = "u-1") -> int:
    record = controller.dirs.read_process(uuid)
    assert record is not None
    return record.pid


async def test_operations_are_idempotent_and_stop_escalates_to_sigkill(tmp_path: Path) -> None:
    controller = ProcessController(tmp_path / "work", tmp_path)
    await controller.open()
    stubborn = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); time.sleep(60)"
    params = {"command": "python", "args": json.dumps(["-c", stubborn]), "port": "auto", "stop_grace": "0.3",
              "files": json.dumps({"peers.txt": "{{siblings | join ' '}}"}), "reconfigure": "none"}
    created = await controller.create(context("create", params))
    assert (await controller.create(context("create", params))).endpoint == created.endpoint
    await controller.configure(context("configure", params))
    await controller.start(context("start", params))
    pid = pid_of(controller)
    await controller.start(context("start", params))
    assert pid_of(controller) == pid
    ref = context("status").instance
    assert (await controller.status(ref)).state == "active"

    # A sibling joins: with reconfigure=none the file changes and the process stays.
    await controller.reconfigure(context("reconfigure", params, ("127.0.0.1:7001",)))
    assert (tmp_path / "work" / "u-1" / "peers.txt").read_text() == "127.0.0.1:7001"
    assert pid_of(controller) == pid
    # With reconfigure=restart the same change restarts it.
    await controller.reconfigure(context("reconfigure", {**params, "reconfigure": "restart"}, ("127.0.0.1:7002",)))
    assert pid_of(controller) != pid and not alive(pid)

    pid = pid_of(controller)
    started = time.monotonic()
    await controller.stop(context("stop", params))
    assert time.monotonic() - started >= 0.3 and not alive(pid)  # SIGTERM ignored: SIGKILL after stop_grace
    await controller.stop(context("stop", params))
    assert (await controller.status(ref)).state == "inactive"
    await controller.destroy(context("destroy", params))
    await controller.destroy(context("destroy", params))
    assert await controller.status(ref) == UNKNOWN and list((tmp_path / "work").iterdir()) == []


async def test_reset_kills_the_whole_process_group(tmp_path: Path) -> None:
    controller = ProcessController(tmp_path / "work", tmp_path)
    await controller.open()
    params = {"command": "sh -c 'sleep 30 & exec sleep 31'"}
    await controller.create(context("create", params))
    await controller.start(context("start", params))
    assert len(processes_in(tmp_path / "work")) == 2  # the shell's background child and itself
    await controller.reset(context("reset", params))
    wait_for(lambda: not processes_in(tmp_path / "work"), timeout=5, what="no process left")
    assert not (tmp_path / "work" / "u-1").exists()
