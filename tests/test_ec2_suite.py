"""The ec2 controller in a whole suite, against a real moto server: the
example README's commands; the example (a network and two servers)
deployed, its API calls as spans of the deploy's trace, its progress in the
task's events; a server stopped behind the engine's back started again by
the monitor; a controller killed between RunInstances and its result does
not launch a second server; `orch solution adopt` takes over a running
instance; the AWS secret in no output. One suite and one moto server for
the module (each test cleans up what it deployed)."""

from __future__ import annotations

import ast
import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cli.home import load_connection
from moto_server import DUMMY_SECRET, REGION, aws_env, ec2_client, running_moto, tagged, tags_of
from orchestration.v1 import model_pb2 as pb
from suite import (BIN, ExtraController, Suite, alive, cmdline, environment_of, extra_controller, monitor_figure,
                   running_suite, wait_until)
from otlp import Receiver, receiving
from test_sdk_alone import sh_blocks

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "ec2" / "ec2.yaml"
LIVE = ("pending", "running", "stopping", "stopped")

# The crash test's own model: a server whose first boot lasts 20 s (create
# waits on the real instance that long before it stops it; less than the
# suite's 30 s operation time-out), so that the controller is killed after
# RunInstances and well before its result, even on a loaded machine.
# (moto has no state manager for EC2 instances: they run at once.)
CRASH = """
Name: ec2crash
Components:
  network - V1.0.0: {Component: network, Version: V1.0.0, Controller: "ec2:V1.0.0", Configuration: "", Dependencies: {}}
  server - V1.0.0:
    Component: server
    Version: V1.0.0
    Controller: "ec2:V1.0.0"
    Configuration: ""
    Dependencies:
      network: {Dependency: network, Type: context, Component: network, Version: V1.0.0, Configuration: ""}
Architectures:
  crash - V1.0.0:
    Architecture: crash
    Version: V1.0.0
    Configuration: ""
    Elements:
      net:
        Element: net
        Component: network
        Configuration: "kind: network"
        Clusters:
          V1.0.0: {Version: V1.0.0, State: active, Min: 1, Max: 1, Size: 1, Configuration: "", Relationships: {}}
      app:
        Element: app
        Component: server
        Configuration: |
          kind: server
          image_id: ami-12345678
          first_boot: 20
        Clusters:
          V1.0.0:
            Version: V1.0.0
            State: active
            Min: 1
            Max: 1
            Size: 1
            Configuration: ""
            Relationships:
              network: {Relationship: network, Dependency: network, Type: context, Element: net, Version: V1.0.0, Configuration: ""}
"""


class Ec2Suite:
    """A suite, moto, the ec2 controller and the spans they export."""

    def __init__(self, suite: Suite, moto: str, controller: ExtraController, receiver: Receiver) -> None:
        self.suite, self.moto, self.controller, self.receiver = suite, moto, controller, receiver
        self.ec2 = ec2_client(moto)


@pytest.fixture(scope="module")
def ec2(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ec2Suite]:
    home = tmp_path_factory.mktemp("ec2")
    with receiving() as receiver, running_moto(home / "moto.log") as moto, \
            running_suite(home, "--monitor-interval", "1", env=receiver.environment) as suite, \
            extra_controller(suite, "controllers.ec2", ["ec2", "aws-ec2"], "--endpoint-url", moto,
                             "--poll-max", "0.5", "--call-timeout", "5", env={**aws_env(), **receiver.environment}) as controller:
        yield Ec2Suite(suite, moto, controller, receiver)


# The secret test's own model: a network alone (its calls carry the controller's credentials).
SECRET = """
Name: ec2secret
Components:
  network - V1.0.0: {Component: network, Version: V1.0.0, Controller: "ec2:V1.0.0", Configuration: "", Dependencies: {}}
Architectures:
  secret - V1.0.0:
    Architecture: secret
    Version: V1.0.0
    Configuration: ""
    Elements:
      net:
        Element: net
        Component: network
        Configuration: "kind: network"
        Clusters:
          V1.0.0: {Version: V1.0.0, State: active, Min: 1, Max: 1, Size: 1, Configuration: "", Relationships: {}}
"""


def instances_of(solution: Any, element: str) -> list[Any]:
    return [i for e in solution.elements if e.name == element for c in e.clusters for i in c.instances]


def _background(*marks: str) -> list[int]:
    """pids of the processes whose command line holds every mark."""
    return [int(p) for p in os.listdir("/proc") if p.isdigit() and all(m in cmdline(int(p)) for m in marks)]


def test_the_readme_commands_work_as_shown(ec2: Ec2Suite, tmp_path: Path) -> None:
    """examples/ec2/README.md, every block in one shell as a person types
    them, against the module's suite and moto server (the README's own moto
    is not started: its address is the module's). Its controller is a second
    replica beside the module's, on the same moto: either may serve a call.
    First in the module: it expects no other `ec2-web` or `legacy-web` instance."""
    root, moto = tmp_path / "scratch", ec2.moto.removeprefix("http://")
    root.mkdir()
    suite = ec2.suite
    connection = load_connection(suite.home)
    assert connection is not None
    replacements = {".venv/bin/moto_server -H 127.0.0.1 -p 5000 > /tmp/moto.log 2>&1 &": ": the module runs moto",
                    "/tmp/": f"{root}/", ".venv/bin/": f"{BIN}/", "127.0.0.1:50052": connection.dispatcher,
                    "127.0.0.1:5000": moto, "--replica ec2-1": "--replica ec2-readme"}
    script = ""
    for number, block in enumerate(sh_blocks(REPO / "examples" / "ec2" / "README.md")):
        for shown, actual in replacements.items():
            block = block.replace(shown, actual)
        script += f"echo '=== {number}'\n{block}\n"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_") and k != "ORCH_TOKEN"}
    try:
        done = subprocess.run(["bash", "-c", "set -euo pipefail\n" + script], cwd=REPO, capture_output=True, text=True,
                              timeout=240, env={**env, "ORCH_HOME": str(suite.home)})
        log = (root / "ec2-controller.log").read_text() if (root / "ec2-controller.log").exists() else ""
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:] + log[-3000:]
        out = dict(part.split("\n", 1) for part in done.stdout.split("=== ")[1:])
        servers = out["2"].splitlines()[-3:-1]
        assert [(e, state) for e, _, state in map(ast.literal_eval, servers)] == [("web", "running")] * 2, out["2"]
        assert int(out["2"].splitlines()[-1]) >= 2, "the events say RunInstances"
        legacy = out["3"].splitlines()[0]
        assert out["3"].splitlines()[-1] == f"('{legacy}', 'running', 'legacy')", out["3"]
        for name in ("ec2-web", "legacy"):
            assert {i["State"]["Name"] for i in tagged(ec2.ec2, "orch:solution", name)} == {"terminated"}
    finally:
        for pid in _background("controllers.ec2", str(root)):
            os.kill(pid, signal.SIGTERM)
            wait_until(lambda: not alive(pid), 15, f"{pid} to stop")


def test_the_example_deploys_one_trace_of_api_calls_and_is_torn_down(ec2: Ec2Suite) -> None:
    suite = ec2.suite
    suite.ok("apply", "-f", str(EXAMPLE))
    task = json.loads(suite.ok("solution", "deploy", "examples", "ec2-web", "V1.0.0", "--wait", "-o", "json",
                               timeout=90))["task"]
    solution = suite.solution("examples", "ec2-web")
    [net] = instances_of(solution, "net")
    webs = instances_of(solution, "web")
    assert len(webs) == 2
    vpc, subnet, group = net.endpoint.removeprefix("aws://").split("/")
    for web in webs:
        [instance] = tagged(ec2.ec2, "orch:instance", web.uuid)
        assert instance["State"]["Name"] == "running" and instance["SubnetId"] == subnet
        assert web.endpoint == f"aws://{instance['InstanceId']}?ip={instance['PrivateIpAddress']}"
        assert {"orch:domain": "examples", "orch:solution": "ec2-web", "orch:element": "web", "team": "shop"}.items() \
            <= tags_of(instance).items()
        assert [g["GroupId"] for g in instance["SecurityGroups"]] == [group]
    assert ec2.ec2.describe_vpcs(VpcIds=[vpc])["Vpcs"][0]["CidrBlock"] == "10.20.0.0/16"

    events = suite.ok("event", "list", "examples", "-o", "json")
    assert "RunInstances ami-0abcdef1234567890 t3.micro" in events and "CreateVpc 10.20.0.0/16" in events, \
        "each result's message is a progress event of the task"

    trace_id = suite.ok("task", "trace", task).strip()

    def launched(spans: list[Any]) -> list[Any]:
        return [s for s in spans if s.name == "EC2.RunInstances" and s.service == "ec2"]

    calls = wait_until(lambda: len(launched(ec2.receiver.of_trace(trace_id))) == 2 and ec2.receiver.of_trace(trace_id),
                       15, "two RunInstances spans in the deploy's trace")
    by_id = {s.span_id: s for s in calls}
    for call in launched(calls):
        parent = by_id[call.parent_id]
        assert parent.service == "ec2" and parent.name == f"create {call.attributes['orch.instance']}"
        assert call.attributes["rpc.method"] == "RunInstances" and call.attributes["aws.region"] == REGION

    # A server stopped behind the engine's back: the monitor's poll sees it inactive and starts it again.
    victim = tagged(ec2.ec2, "orch:instance", webs[0].uuid)[0]["InstanceId"]
    drifts = monitor_figure(suite, "orch_monitor_drift_total")
    ec2.ec2.stop_instances(InstanceIds=[victim])
    wait_until(lambda: monitor_figure(suite, "orch_monitor_drift_total") > drifts, 15, "the monitor seeing the drift")
    wait_until(lambda: ec2.ec2.describe_instances(InstanceIds=[victim])["Reservations"][0]["Instances"][0]["State"]["Name"]
               == "running", 30, "the stopped server running again")
    wait_until(lambda: all(i.state == i.target for i in instances_of(suite.solution("examples", "ec2-web"), "web")),
               30, "the solution's servers active again")
    assert len(tagged(ec2.ec2, "orch:solution", "ec2-web", LIVE)) == 2, "repaired, not replaced"

    suite.ok("solution", "delete", "examples", "ec2-web", "--wait", timeout=90)
    assert {i["State"]["Name"] for i in tagged(ec2.ec2, "orch:solution", "ec2-web")} == {"terminated"}
    assert ec2.ec2.describe_vpcs(Filters=[{"Name": "tag:orch:solution", "Values": ["ec2-web"]}])["Vpcs"] == []


@pytest.mark.faults
def test_a_controller_killed_after_run_instances_launches_no_second_server(ec2: Ec2Suite) -> None:
    suite = ec2.suite
    suite.apply(CRASH)
    task = json.loads(suite.ok("solution", "deploy", "ec2crash", "crash", "V1.0.0", "-o", "json"))["task"]
    [instance] = wait_until(lambda: tagged(ec2.ec2, "orch:solution", "crash"), 30, "the server launched in moto",
                            interval=0.02)
    ec2.controller.kill()  # SIGKILL, in the server's first boot: create has not answered
    uuid = tags_of(instance)["orch:instance"]
    [app] = instances_of(suite.solution("ec2crash", "crash"), "app")
    assert app.uuid == uuid and app.state != app.target, "the create's result never reached the engine"
    # Its first boot ended by hand (stopped, as create would leave it): the retry has no 20 s to wait out.
    ec2.ec2.stop_instances(InstanceIds=[instance["InstanceId"]])
    ec2.controller.start()
    assert suite.wait_task("ec2crash", task, timeout=90).status == pb.TASK_STATUS_COMPLETED, suite.ok("task", "get", task)
    found = tagged(ec2.ec2, "orch:instance", uuid)
    assert [(i["InstanceId"], i["State"]["Name"]) for i in found] == [(instance["InstanceId"], "running")], \
        "exactly one instance carries the uuid: the restarted controller found it"
    assert "found " + instance["InstanceId"] in json.dumps(json.loads(suite.ok("event", "list", "ec2crash", "-o", "json")))


def test_adopt_takes_over_a_running_instance_instead_of_launching_one(ec2: Ec2Suite) -> None:
    suite = ec2.suite
    suite.ok("apply", "-f", str(EXAMPLE))
    legacy = ec2.ec2.run_instances(ImageId="ami-0abcdef1234567890", MinCount=1, MaxCount=1, TagSpecifications=[
        {"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": "legacy-web"}]}])["Instances"][0]["InstanceId"]
    before = len(tagged(ec2.ec2, "Name", "legacy-web", LIVE))
    suite.ok("solution", "adopt", "examples", "ec2-web", "V1.0.0", "--solution", "adopted", "--size", "web/V1.0.0=1",
             "--wait", timeout=90)
    [web] = instances_of(suite.solution("examples", "adopted"), "web")
    assert web.endpoint.startswith(f"aws://{legacy}?")
    claimed = ec2.ec2.describe_instances(InstanceIds=[legacy])["Reservations"][0]["Instances"][0]
    assert tags_of(claimed)["orch:instance"] == web.uuid and claimed["State"]["Name"] == "running"
    assert len(tagged(ec2.ec2, "orch:solution", "adopted")) == 1, "nothing launched for the web element"
    assert len(tagged(ec2.ec2, "Name", "legacy-web", LIVE)) == before == 1
    suite.ok("solution", "delete", "examples", "adopted", "--wait", timeout=90)


def test_the_aws_secret_is_in_no_output(ec2: Ec2Suite) -> None:
    """Events, logs, traces and the stored model (every file of the suite's home) never hold the secret."""
    suite = ec2.suite
    secret = DUMMY_SECRET.encode()
    suite.apply(SECRET)
    task = json.loads(suite.ok("solution", "deploy", "ec2secret", "secret", "V1.0.0", "--wait", "-o", "json",
                               timeout=90))["task"]
    trace_id = suite.ok("task", "trace", task).strip()
    wait_until(lambda: any(s.name == "EC2.CreateVpc" for s in ec2.receiver.of_trace(trace_id)), 15,
               "the deploy's CreateVpc span")
    suite.ok("solution", "delete", "ec2secret", "secret", "--wait", timeout=90)
    outputs = {
        "events": "".join(suite.ok("event", "list", domain, "-o", "json") for domain in ("examples", "ec2crash", "ec2secret")),
        "controller log": ec2.controller.log(),
        "spans": json.dumps([[s.name, s.attributes] for s in ec2.receiver.all()]),
        "export requests": repr(ec2.receiver.raw),
    }
    assert ec2.controller.log() and "EC2.CreateVpc" in outputs["spans"]
    for what, text in outputs.items():
        assert DUMMY_SECRET not in text, f"the secret is in the {what}"
    holding = [str(p) for p in suite.home.rglob("*") if p.is_file() and secret in p.read_bytes()]
    assert holding == [], "files of the suite's home (logs, the store) hold the secret"
    assert ec2.controller.proc is not None
    assert environment_of(ec2.controller.proc.pid)["AWS_SECRET_ACCESS_KEY"] == DUMMY_SECRET, "the controller had it"
