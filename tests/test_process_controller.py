"""The process controller with real processes: the nats-cluster example
deployed, scaled 3 -> 4 -> 3, restarted under, a node killed by hand, torn
down; commands that exit at once or never become ready; instances contained
(run as a uid of their domain's own when the controller is root, a minimal environment, a work
dir they cannot turn against the controller). Plus the template language
and its bounds, and settings, which need no process."""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest

from controllers.process import ProcessController
from controllers.process.confine import RUN_AS_ENV, identity
from controllers.process.procs import BOOT_ID, starttime
from controllers.process.settings import ProcessSettings
from controllers.process.template import MAX_FORMAT_WIDTH, MAX_RENDERED, TemplateError, endpoint_fields, render
from orchestration.runtime.credentials import engine_credential_for
from orchestration.v1 import controller_pb2 as cpb
from orchestration.v1 import controller_pb2_grpc as cpb_grpc
from orchestration.v1 import model_pb2 as pb
from orchestration_sdk import UNKNOWN, OperationContext, Permanent
from orchestration_sdk.runtime.wire import bearer_metadata
from suite import Suite, alive, children_of, cmdline, environment_of, monitor_figure, running_suite, wait_until

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

CONTAINED = """
Name: contained
Components:
  probe - V1.0.0:
    Component: probe
    Version: V1.0.0
    Controller: "process:V1.0.0"
    Configuration: ""
    Dependencies: {}
Architectures:
  env - V1.0.0:
    Architecture: env
    Version: V1.0.0
    Configuration: ""
    Elements:
      probe:
        Element: probe
        Component: probe
        Configuration: |
          command: sh
          args: >-
            ["-c", "id -u > uid.txt; exec sleep 120"]
          ready_command: test -s uid.txt
          env:
            GREETING: "hello {{uuid}}"
        Clusters:
          V1.0.0: {Version: V1.0.0, State: active, Min: 1, Max: 1, Size: 1, Configuration: "", Relationships: {}}
"""

# Set in the controllers' environment (orch up's, or this test process's): no instance may see it.
CANARY = ("SECRET_CANARY", "xyz-canary-4711")
SECRET = "s3cret-token-0600"
# What an instance's environment may hold: spec.environment, plus the settings' `env`.
INSTANCE_ENV = {"PATH", "HOME", "TMPDIR", "USER", "LOGNAME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "PYTHONUNBUFFERED",
                "ORCH_INSTANCE", "ORCH_WORK_DIR"}
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="instances switch to an unprivileged user only when the "
                                f"controller runs as root (these tests run as uid {os.geteuid()})")


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
    """Beside $ORCH_HOME, not in it (orch up's --work-dir)."""
    return suite.home.parent / f"{suite.home.name}-process"


@functools.cache
def python_runs_as_nobody() -> bool:
    """Whether the user nobody can run this interpreter (not when it lives under a mode 0700 /root)."""
    try:
        return subprocess.run([sys.executable, "-c", "pass"], cwd="/", capture_output=True, timeout=60,
                              **identity("nobody").popen_kwargs()).returncode == 0
    except OSError:
        return False


def suite_runs_as_root() -> bool:
    """Whether the suite's instances run as root ('', via ORCH_PROCESS_RUN_AS): when the controller
    is root and the example's `python` (this interpreter) is out of an unprivileged user's reach."""
    return os.geteuid() == 0 and not python_runs_as_nobody()


def instance_uid(suite: Suite, domain: str) -> int:
    """The uid the suite's instances of `domain` run as: the domain's own (the default) when the
    controller is root, from the work dir's ledger."""
    if os.geteuid() != 0 or suite_runs_as_root():
        return os.geteuid()
    return int(json.loads((work_root(suite) / "domains.json").read_text())[domain])


def mentions(env: dict[str, str], directory: Path) -> list[str]:
    """Variables naming `directory` or a path in it."""
    return [key for key, value in env.items()
            if any(part == str(directory) or part.startswith(f"{directory}/") for part in value.split(os.pathsep))]


def uids(pid: int) -> tuple[list[int], list[int], str]:
    """Real, effective, saved and fs uids and gids, and the supplementary groups, of a process."""
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return ([int(x) for x in status["Uid"].split()], [int(x) for x in status["Gid"].split()], status["Groups"].strip())


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
    env = dict([CANARY])
    if suite_runs_as_root():
        env[RUN_AS_ENV] = ""
    try:
        with running_suite(home, "--monitor-interval", "1", env=env) as running:
            os.chdir(previous)
            running.ok("apply", "-f", str(EXAMPLE))
            running.apply(BROKEN)
            yield running
    finally:
        os.chdir(previous)
        # Whatever a failed test left behind must not outlive the suite.
        for pid in processes_in(home.parent / f"{home.name}-process"):
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
    metadata = bearer_metadata(engine_credential_for((suite.home / "engine-credential").read_text().strip(), "process"))
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


def test_instances_see_neither_the_controllers_environment_nor_its_home(suite: Suite) -> None:
    suite.apply(CONTAINED)
    suite.ok("solution", "deploy", "contained", "env", "V1.0.0", "--wait")
    [instance] = instances(suite, "probe", "contained", "env")
    directory = work_root(suite) / instance.uuid
    pid = json.loads((directory / "pid.json").read_text())["pid"]
    try:
        env = environment_of(pid)
        # sh itself adds PWD to what it passes on.
        assert set(env) <= INSTANCE_ENV | {"GREETING", "PWD"}, set(env) - INSTANCE_ENV
        assert env["GREETING"] == f"hello {instance.uuid}" and env["HOME"] == str(directory)
        assert CANARY[1] not in json.dumps(env) and not mentions(env, suite.home)
        # The canary did reach the controller, whose environment holds no NATS URL either.
        controller = environment_of(wait_for(lambda: controller_pid(suite), what="the process controller"))
        assert controller[CANARY[0]] == CANARY[1] and "ORCH_NATS_URL" not in controller
        uid = instance_uid(suite, "contained")
        assert uids(pid)[0] == [uid] * 4 and (directory / "uid.txt").read_text().strip() == str(uid)
        # The work dir lies beside $ORCH_HOME, searchable by all; each instance's dir is its user's own.
        assert not work_root(suite).resolve().is_relative_to(suite.home.resolve())
        assert work_root(suite).stat().st_mode & 0o777 == 0o755
        assert (directory.stat().st_uid, directory.stat().st_mode & 0o777) == (uid, 0o700)
    finally:
        delete(suite, "contained", "env")
    assert not directory.exists() and not alive(pid)


def test_teardown_leaves_no_process_and_no_work_dir(suite: Suite) -> None:
    delete(suite, DOMAIN, SOLUTION)
    assert json.loads(suite.ok("solution", "list", DOMAIN, "-o", "json")) == []
    assert processes_in(work_root(suite)) == {}
    assert [p.name for p in work_root(suite).iterdir() if p.name != "domains.json"] == []  # the ledger of uids stays


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


@pytest.mark.parametrize(("pattern", "number"), [
    ("{host:>999999999}", "999999999"),
    ("{host:.5000}", "5000"),
    ("{port:01001}", "01001"),
    ("{host:" + "9" * 5000 + "}", "9" * 20 + "..."),
    ("{host:{port}}", "4222"),  # a nested field: the width is the port's value
    ("{host:>{cluster}}", "6222"),
])
def test_template_format_widths_and_precisions_are_bounded(pattern: str, number: str) -> None:
    started = time.monotonic()
    with pytest.raises(TemplateError, match=re.escape(f"width or precision {number} ")) as caught:
        render(f"{{{{siblings | format '{pattern}'}}}}", {"siblings": NODES}, "files.x")
    assert f"exceeds the limit of {MAX_FORMAT_WIDTH} (MAX_FORMAT_WIDTH)" in str(caught.value)
    assert str(caught.value).startswith("files.x: ") and time.monotonic() - started < 1


def test_template_fields_are_plain_names_and_widths_up_to_the_bound_render() -> None:
    values: dict[str, str | list[str]] = {"siblings": NODES}
    assert render(f"{{{{siblings | format '{{host:>{MAX_FORMAT_WIDTH}}}' | first}}}}", values) == "127.0.0.1".rjust(1000)
    assert render("{{siblings | format '{address:_^{monitor}.3}' | first}}", {"siblings": ["h:1?monitor=9"]}) == "___h:1___"
    for pattern in ("{host.__class__}", "{host[0]}"):
        with pytest.raises(TemplateError, match="must be a plain name"):
            render(f"{{{{siblings | format '{pattern}'}}}}", values)


@pytest.mark.parametrize(("template", "values"), [
    # 20 000 endpoints of 1000 characters each would be 20 MB.
    ("{{siblings | format '{host:>1000}' | join ' '}}", {"siblings": [f"h{i}:1" for i in range(20_000)]}),
    # One endpoint, one pattern of 2000 fields: 2 MB.
    ("{{siblings | format '" + "{host:>1000}" * 2000 + "' | first}}", {"siblings": NODES}),
    # A long separator over many items, a plain list, a value repeated by the template itself.
    ("{{siblings | join '" + "-" * 1000 + "'}}", {"siblings": ["a"] * 2000}),
    ("{{siblings}}", {"siblings": ["x" * 1000] * 2000}),
    ("{{siblings | json}}", {"siblings": ["x" * 1000] * 1100}),
    ("{{big}}{{big}}{{big}}", {"big": "x" * 400_000}),
])
def test_template_output_is_bounded_in_size(template: str, values: dict[str, str | list[str]]) -> None:
    started = time.monotonic()
    with pytest.raises(TemplateError, match=re.escape(f"exceed the limit of {MAX_RENDERED} characters")):
        render(template, values, "files.big")
    assert time.monotonic() - started < 2


def test_template_output_up_to_the_size_bound_renders() -> None:
    joined = render("{{siblings | format '{host:>1000}' | join ''}}", {"siblings": [f"h{i}:1" for i in range(1048)]})
    assert len(joined) == 1_048_000 <= MAX_RENDERED


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
    # A shell, not python: run as an unprivileged user (the controller is root), it must be within its reach.
    stubborn = "trap '' TERM; echo up; exec sleep 60"
    params = {"command": "sh", "args": json.dumps(["-c", stubborn]), "port": "auto", "stop_grace": "0.3",
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
    assert await controller.status(ref) == UNKNOWN and controller.dirs.uuids() == []


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


# ---- containment (real processes, no engine) -----------------------------------------------


@pytest.fixture
def layout() -> Iterator[tuple[Path, Path]]:
    """$ORCH_HOME (mode 0700, holding `token` of mode 0600) and the work dir
    beside it, laid out as orch up does, in a directory every user may search."""
    base = Path(tempfile.mkdtemp(prefix="orch-confine-"))
    try:
        base.chmod(0o755)
        home = base / "orch"
        home.mkdir(mode=0o700)
        (home / "token").write_text(SECRET)
        (home / "token").chmod(0o600)
        yield home, base / f"{home.name}-process"
    finally:
        for pid in processes_in(base):
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(base, ignore_errors=True)


def files_holding(root: Path, text: str) -> list[Path]:
    return [path for path in root.rglob("*") if path.is_file() and not path.is_symlink()
            and text in path.read_text(errors="replace")]


@needs_root
async def test_an_instance_runs_as_its_domains_user_and_cannot_read_the_secrets(layout: tuple[Path, Path],
                                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    home, work = layout
    monkeypatch.setenv(*CANARY)
    loose = home.parent / "loose-secret"  # mode 0600, in a directory anyone may search
    loose.write_text(SECRET)
    loose.chmod(0o600)
    controller = ProcessController(work, home.parent)  # the default: a uid of the domain's own
    await controller.open()
    user = controller.users.of("d")
    assert user.switch and user.uid >= 1900000000 and user.gid == user.uid
    script = (f"id -u > uid.txt; cat {home / 'token'} {loose} /proc/{os.getpid()}/environ > stolen.txt 2> denied.txt; "
              "echo $? > done.txt; exec sleep 60")
    params = {"command": "sh", "args": json.dumps(["-c", script]), "ready_command": "test -s done.txt"}
    await controller.create(context("create", params))
    await controller.start(context("start", params))
    directory = work / "u-1"
    assert (directory / "uid.txt").read_text().strip() == str(user.uid)
    assert uids(pid_of(controller)) == ([user.uid] * 4, [user.gid] * 4, "")
    # Three reads refused: the token ($ORCH_HOME is 0700), the loose 0600 file, the controller's environment.
    assert (directory / "done.txt").read_text().strip() != "0"
    assert (directory / "denied.txt").read_text().count("Permission denied") == 3
    assert (directory / "stolen.txt").read_text() == ""
    assert files_holding(work, SECRET) == [] and files_holding(work, CANARY[1]) == []
    # The work dir (root's, 0755) lies outside $ORCH_HOME; the instance's dir and logs are its user's.
    assert (work.stat().st_uid, work.stat().st_mode & 0o777) == (0, 0o755)
    assert (directory.stat().st_uid, directory.stat().st_mode & 0o777) == (user.uid, 0o700)
    assert (directory / "stdout.log").stat().st_uid == user.uid
    await controller.destroy(context("destroy", params))
    assert not directory.exists() and processes_in(work) == {}


async def test_an_instance_gets_a_minimal_environment_not_the_controllers(layout: tuple[Path, Path],
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    home, work = layout
    monkeypatch.setenv(*CANARY)
    monkeypatch.setenv("ORCH_NATS_URL", f"nats://engine:{SECRET}@127.0.0.1:4222")
    monkeypatch.setenv("ORCH_HOME", str(home))
    controller = ProcessController(work, home.parent)
    await controller.open()
    params = {"command": "sh", "args": json.dumps(["-c", "exec sleep 60"]), "env": json.dumps({"GREETING": "hi {{uuid}}"}),
              # The probe runs like the instance: it leaves its own environment and uid behind.
              "ready_command": "sh -c 'env > probe-env.txt; id -u > probe-uid.txt'"}
    await controller.create(context("create", params))
    await controller.start(context("start", params))
    directory = work / "u-1"
    env = environment_of(pid_of(controller))
    probe = dict(line.split("=", 1) for line in (directory / "probe-env.txt").read_text().splitlines() if "=" in line)
    # sh itself adds PWD (and OLDPWD) to what it passes on.
    assert set(env) <= INSTANCE_ENV | {"GREETING", "PWD"} and set(probe) <= INSTANCE_ENV | {"PWD", "OLDPWD"}, (env, probe)
    for seen in (env, probe):
        text = json.dumps(seen)
        assert CANARY[1] not in text and SECRET not in text and not mentions(seen, home)
        assert seen["HOME"] == seen["TMPDIR"] == str(directory) and seen["USER"] == controller.users.of("d").name
    assert env["GREETING"] == "hi u-1" and env["ORCH_INSTANCE"] == "u-1"
    assert (directory / "probe-uid.txt").read_text().strip() == str(controller.users.of("d").uid)
    await controller.destroy(context("destroy", params))


@needs_root
async def test_a_work_dir_turned_against_the_controller_leaks_and_overwrites_nothing(layout: tuple[Path, Path]) -> None:
    home, work = layout
    token = home / "token"
    outside = home.parent / "outside"  # root's: the instance cannot write there, the controller could
    outside.mkdir(mode=0o755)
    # Root's, leading its own process group like an instance, and no business of the controller's.
    sleeper = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        forged = {"pid": sleeper.pid, "starttime": starttime(sleeper.pid), "argv": ["sleep"], "started": time.time(),
                  "launch": "", "files": "", "probe": {"kind": "alive", "target": ""}, "boot": BOOT_ID}
        # Once: plant symlinks where the controller writes its log and a rendered file.
        plant = (f"test -e planted || {{ ln -s {token} link && mv -f link stderr.log; rm -rf conf; ln -s {outside} conf; "
                 "touch planted; }; exec sleep 60")
        params = {"command": "sh", "args": json.dumps(["-c", plant]), "ready_command": "test -e planted",
                  "files": json.dumps({"conf/app.conf": "v1"})}
        controller = ProcessController(work, home.parent)
        await controller.open()
        await controller.create(context("create", params))
        await controller.start(context("start", params))
        directory = work / "u-1"
        assert (directory / "conf").is_symlink() and (directory / "stderr.log").is_symlink()
        # A changed file: rendered again (not through the symlink), and the restart reopens the logs.
        await controller.reconfigure(context("reconfigure", {**params, "files": json.dumps({"conf/app.conf": "v2"})}))
        assert list(outside.iterdir()) == [] and token.read_text() == SECRET
        assert (directory / "conf" / "app.conf").read_text() == "v2" and not (directory / "conf").is_symlink()
        assert (directory / "conf" / "app.conf").stat().st_uid == controller.users.of("d").uid
        assert not (directory / "stderr.log").is_symlink() and SECRET not in (directory / "stderr.log").read_text()

        # A failed start reports the tail of stderr.log: not through a symlink to the token.
        leak = {"command": "sh", "args": json.dumps(["-c", f"ln -s {token} link && mv -f link stderr.log; exit 3"])}
        await controller.create(context("create", leak, uuid="u-2"))
        with pytest.raises(Permanent, match="exited with code 3") as caught:
            await controller.start(context("start", leak, uuid="u-2"))
        assert SECRET not in str(caught.value)

        # A pid file the instance forged (naming a process of root's) is not the controller's: nothing is signalled.
        forge = {"command": "sh", "ready_command": "test -e forged", "files": json.dumps({"pid.new": json.dumps(forged)}),
                 "args": json.dumps(["-c", "until test -e pid.json; do sleep 0.05; done; mv -f pid.new pid.json; "
                                           "touch forged; exec sleep 60"])}
        await controller.create(context("create", forge, uuid="u-3"))
        await controller.start(context("start", forge, uuid="u-3"))
        assert json.loads((work / "u-3" / "pid.json").read_text())["pid"] == sleeper.pid
        await controller.stop(context("stop", forge, uuid="u-3"))
        for uuid in ("u-1", "u-2", "u-3"):
            await controller.destroy(context("destroy", params, uuid=uuid))
        assert alive(sleeper.pid) and processes_in(work) == {} and controller.dirs.uuids() == []
    finally:
        sleeper.kill()
        sleeper.wait()
