"""The libvirt controller as a real process against a whole suite, on
libvirt's test driver (whose domains live inside the controller process):
the example's two VMs deployed, stopped, deleted; the driver's own `test`
domain adopted; its libvirt calls as spans under the operations; the
commands of the example's README, as shown; a password for a URI that asks
for one, found in no output; SIGKILL in the middle of a start, and the
start re-delivered to the restarted controller converging.

What libvirt holds is read through the controller's own ControllerService
(Status and Preview, as the monitor and `orch solution plan` call them) and
the engine's records and events: no test-only back door."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from orchestration.runtime.credentials import engine_credential_for
from orchestration.v1 import controller_pb2 as cpb
from orchestration.v1 import controller_pb2_grpc as cpb_grpc
from orchestration.v1 import model_pb2 as pb
from controllers.libvirt.domainxml import domain_xml
from controllers.libvirt.settings import settings_of
from orchestration_sdk import InstanceRef
from orchestration_sdk.runtime.wire import bearer_metadata
from otlp import ReceivedSpan, Receiver, receiving
from suite import BIN, ExtraController, Suite, alive, cmdline, extra_controller, running_suite, wait_until
from test_sdk_alone import sh_blocks

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "libvirt" / "vms.yaml"
DOMAIN = "examples"
NAMES = ["libvirt", "vm"]
PASSWORD = "libvirt-Pw-4f2a91c7e3"

# One VM that takes 30 s to count as booted (its start runs within the 60 s the cluster gives an operation): the
# controller is killed in the middle of that start as soon as the domain runs, however slow a loaded machine is.
SLOW = """
Name: examples
Components:
  slowvm - V1.0.0:
    Component: slowvm
    Version: V1.0.0
    Controller: "libvirt:V1.0.0"
    Configuration: ""
    Dependencies: {}
Architectures:
  slow - V1.0.0:
    Architecture: slow
    Version: V1.0.0
    Configuration: ""
    Elements:
      vm:
        Element: vm
        Component: slowvm
        Configuration: |
          memory_mib: 128
          boot_seconds: 30
          orch_operation_timeout: 60
        Clusters:
          V1.0.0: {Version: V1.0.0, State: active, Min: 1, Max: 1, Size: 1, Configuration: "", Relationships: {}}
"""

# The test driver's own default domain, and a user that must authenticate.
AUTH_NODE = f"""<node>
  <domain type='test'><name>test</name><memory unit='MiB'>128</memory><vcpu>1</vcpu><os><type>hvm</type></os></domain>
  {{domains}}
  <auth><user password='{PASSWORD}'>orch</user></auth>
</node>
"""


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with receiving() as found:
        yield found


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory, receiver: Receiver) -> Iterator[Suite]:
    # Spans are recorded where the request's trace is sampled: the whole suite exports, as in production.
    with running_suite(tmp_path_factory.mktemp("libvirt"), env=receiver.environment) as running:
        running.ok("apply", "-f", str(EXAMPLE))
        running.apply(SLOW)
        yield running


def stub(controller: ExtraController) -> tuple[cpb_grpc.ControllerServiceStub, Any]:
    """The controller's ControllerService (as the monitor and the dispatcher reach it) and the credential it takes."""
    ports = wait_until(lambda: re.findall(r"listening on 127\.0\.0\.1:(\d+)", controller.log()), what="controller listening")
    engine = (controller.suite.home / "engine-credential").read_text().strip()
    channel = grpc.insecure_channel(f"127.0.0.1:{ports[-1]}")
    return cpb_grpc.ControllerServiceStub(channel), bearer_metadata(engine_credential_for(engine, "libvirt"))


def registered(controller: ExtraController, since: int, times: int = 1) -> str:
    """Wait until the controller has registered `times` times since offset `since` of its log
    (one log for every run of a controller of that name); its log since then."""
    wait_until(lambda: controller.log()[since:].count("registered libvirt") >= times, timeout=30, what="registration")
    return controller.log()[since:]


def log_size(suite: Suite) -> int:
    path = suite.home / "controller-libvirt.log"
    return len(path.read_text(errors="replace")) if path.exists() else 0


def instances(suite: Suite, solution: str) -> list[pb.Instance]:
    found = suite.planned(DOMAIN, solution)
    return [i for e in found.elements for c in e.clusters for i in c.instances]


def refs(suite: Suite, solution: str) -> list[cpb.InstanceReference]:
    return [cpb.InstanceReference(domain=DOMAIN, solution=solution, element="vm", cluster="V1.0.0", uuid=i.uuid)
            for i in instances(suite, solution)]


def seen(controller: ExtraController, suite: Suite, solution: str) -> dict[str, tuple[str, str]]:
    """uuid -> (state, endpoint) of each instance, as the controller's Status says (what libvirt has)."""
    service, metadata = stub(controller)
    answer = service.Status(cpb.StatusRequest(instances=refs(suite, solution)), metadata=metadata, timeout=10)
    return {s.uuid: (pb.State.Name(s.state).removeprefix("STATE_").lower() if s.known else "unknown", s.endpoint)
            for s in answer.statuses}


def known(controller: ExtraController, solution: str, vms: list[pb.Instance]) -> list[bool]:
    """Whether the controller still has a domain for each of these instances (of a solution that may be gone)."""
    service, metadata = stub(controller)
    asked = [cpb.InstanceReference(domain=DOMAIN, solution=solution, element="vm", cluster="V1.0.0", uuid=i.uuid) for i in vms]
    return [s.known for s in service.Status(cpb.StatusRequest(instances=asked), metadata=metadata, timeout=10).statuses]


def comments(suite: Suite) -> str:
    """The comments of the domain's events, one a line (a result's message arrives as "TRANSITION: MESSAGE")."""
    return "\n".join(str(e.get("Comment", "")) for e in json.loads(suite.ok("event", "list", DOMAIN, "-o", "json")))


def status_table(suite: Suite, solution: str) -> str:
    return suite.ok("solution", "status", DOMAIN, solution)


def test_two_vms_deployed_stopped_deleted_and_the_test_domain_adopted(suite: Suite, receiver: Receiver) -> None:
    since = log_size(suite)
    with extra_controller(suite, "controllers.libvirt", NAMES, "--uri", "test:///default", "--concurrency", "4",
                          "--call-timeout", "10", env=receiver.environment) as controller:
        assert "libvirt at test:///default: 1 domains, 0 of them orchestrated" in registered(controller, since)

        # `orch solution plan --preview`: the controller's dry run of each planned operation.
        plan = json.loads(suite.ok("solution", "plan", DOMAIN, "vms", "V1.0.0", "--preview", "-o", "json"))
        previews = {(p["Instance"], p["Transition"]): p["Preview"] for p in plan}
        assert previews[("new-1", "create")].startswith("would define orch-new-1:\n<domain ")
        assert "<memory unit=\"MiB\">256</memory>" in previews[("new-1", "create")]
        assert previews[("new-2", "start")] == "would start the domain its create defines"

        suite.ok("solution", "deploy", DOMAIN, "vms", "V1.0.0", "--wait", timeout=60)
        vms = instances(suite, "vms")
        assert len(vms) == 2 and {i.state for i in vms} == {pb.STATE_ACTIVE}
        assert seen(controller, suite, "vms") == {i.uuid: ("active", f"vm://orch-{i.uuid}") for i in vms}
        assert {i.endpoint for i in vms} == {f"vm://orch-{i.uuid}" for i in vms}
        said = comments(suite)
        for vm in vms:
            assert f"create: defined orch-{vm.uuid}: 256 MiB, 1 vCPU" in said, said
            assert f"start: booted orch-{vm.uuid}" in said

        # Each libvirt call is a span, a child of the span of the operation that made it.
        def spans_of_creates() -> list[ReceivedSpan]:
            spans = receiver.all()
            return spans if len([s for s in spans if s.name == "libvirt defineXML"]) >= 2 else []

        spans = wait_until(spans_of_creates, timeout=15, what="libvirt spans exported")
        by_id = {s.span_id: s for s in spans}
        for vm in vms:
            define = next(s for s in spans if s.name == "libvirt defineXML" and s.attributes.get("libvirt.domain") == f"orch-{vm.uuid}")
            parent = by_id[define.parent_id]
            assert parent.name == f"create {vm.uuid}" and parent.attributes["orch.instance"] == vm.uuid
            boot = next(s for s in spans if s.name == "libvirt create" and s.attributes.get("libvirt.domain") == f"orch-{vm.uuid}")
            assert by_id[boot.parent_id].name == f"start {vm.uuid}"

        suite.ok("solution", "set", DOMAIN, "vms", "--state", "inactive", "--wait", timeout=60)
        assert {i.state for i in instances(suite, "vms")} == {pb.STATE_INACTIVE}
        assert set(seen(controller, suite, "vms").values()) == {("inactive", f"vm://orch-{i.uuid}") for i in vms}
        assert all(f"shut down orch-{vm.uuid}" in comments(suite) for vm in vms)

        plan = json.loads(suite.ok("solution", "plan", DOMAIN, "vms", "V1.0.0", "--preview", "-o", "json"))
        assert sorted(p["Preview"] for p in plan) == sorted(f"would boot orch-{vm.uuid} (shut off)" for vm in vms)
        # The same, asked of the controller directly: a create of an instance whose domain is there changes nothing.
        service, metadata = stub(controller)
        operation = cpb.Operation(operation_id="preview-1", transition=pb.TRANSITION_CREATE, instance=refs(suite, "vms")[0],
                                  parameters={"memory_mib": "256"})
        text = service.Preview(cpb.PreviewRequest(operation=operation), metadata=metadata, timeout=10).text
        assert text == f"exists as orch-{operation.instance.uuid} (shut off): nothing to do"

        suite.ok("solution", "delete", DOMAIN, "vms", "--wait", timeout=60)
        assert known(controller, "vms", vms) == [False, False]
        assert all(f"undefined orch-{vm.uuid}; its disks are kept" in comments(suite) for vm in vms)

        # Adopt: one instance claims the driver's `test` domain (running), the other gets a domain of its own.
        suite.ok("solution", "adopt", DOMAIN, "vms", "V1.0.0", "--wait", timeout=60)
        adopted = instances(suite, "vms")
        states = seen(controller, suite, "vms")
        other = next(i.uuid for i in adopted if states[i.uuid][1] != "vm://test")
        assert sorted(states.values()) == sorted([("active", "vm://test"), ("active", f"vm://orch-{other}")]), states
        assert {i.endpoint for i in adopted} == {"vm://test", f"vm://orch-{other}"}
        assert "adopted existing domain test (running)" in comments(suite)
        suite.ok("solution", "delete", DOMAIN, "vms", "--wait", timeout=60)
        said = comments(suite)
        assert "stop: shut down test" in said and "destroy: undefined test; its disks are kept" in said, said


def test_the_readme_commands_work_as_shown(suite: Suite, tmp_path: Path) -> None:
    """examples/libvirt/README.md, every block in one shell as a person types them, against this module's suite."""
    script = "".join(f"echo '=== {number}'\n{block.replace('/tmp/', f'{tmp_path}/').replace('.venv/bin/', f'{BIN}/')}\n"
                     for number, block in enumerate(sh_blocks(REPO / "examples" / "libvirt" / "README.md")))
    env = {k: v for k, v in os.environ.items() if k not in ("ORCH_TOKEN", "VIRTUAL_ENV", "PYTHONHOME")}
    try:
        done = subprocess.run(["bash", "-c", "set -euo pipefail\n" + script], cwd=REPO, capture_output=True, text=True,
                              timeout=180, env={**env, "ORCH_HOME": str(suite.home)})
        log = tmp_path / "libvirt-controller.log"
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:] + (log.read_text() if log.exists() else "")
        out = dict(part.split("\n", 1) for part in done.stdout.split("=== ")[1:])
        assert "would define orch-new-1:" in out["1"] and "would boot orch-" in out["1"], out["1"]
        assert "adopted existing domain test (running)" in out["2"], out["2"]
    finally:
        for pid in [int(p) for p in os.listdir("/proc") if p.isdigit()]:
            if "controllers.libvirt" in cmdline(pid) and str(tmp_path) in cmdline(pid):
                os.kill(pid, signal.SIGTERM)
                wait_until(lambda: not alive(pid), 15, f"{pid} to stop")


@pytest.mark.faults
def test_a_password_reaches_libvirt_alone_and_a_killed_start_converges(suite: Suite, receiver: Receiver,
                                                                      tmp_path: Path) -> None:
    node = tmp_path / "node.xml"  # outside the suite's home: it holds the password, as a real host's SASL database would
    node.write_text(AUTH_NODE.format(domains=""))
    auth = tmp_path / "libvirt-auth"
    auth.write_text(f"username=orch\npassword={PASSWORD}\n")
    auth.chmod(0o600)
    args = ["--uri", f"test://{node}", "--auth-file", str(auth), "--call-timeout", "10"]
    since = log_size(suite)
    with extra_controller(suite, "controllers.libvirt", NAMES, *args, env=receiver.environment) as controller:
        assert f"libvirt at test://{node}: 1 domains, 0 of them orchestrated" in registered(controller, since)
        task = suite.ok("solution", "deploy", DOMAIN, "slow", "V1.0.0").strip().splitlines()[-1]
        # The domain runs, the start waits out its 30 s of boot_seconds: kill the controller there.
        wait_until(lambda: instances(suite, "slow") and set(seen(controller, suite, "slow").values())
                   == {("active", f"vm://orch-{instances(suite, 'slow')[0].uuid}")}, timeout=40, what="domain running")
        controller.kill()
        assert suite.task(DOMAIN, task).task.status not in (pb.TASK_STATUS_COMPLETED, pb.TASK_STATUS_FAILED)
        # A real hypervisor keeps the domain across the controller's restart; the test driver starts afresh from its
        # node file, so the file gets the domain as libvirt had it (running, with the instance's metadata).
        vm = instances(suite, "slow")[0]
        instance = InstanceRef(DOMAIN, "slow", "vm", "V1.0.0", vm.uuid)
        node.write_text(AUTH_NODE.format(domains=domain_xml(instance, settings_of({"memory_mib": "128"}), "test")))
        controller.start()
        assert f"libvirt at test://{node}: 2 domains, 1 of them orchestrated" in registered(controller, since, times=2)
        # The re-delivered start finds it running: a restarted controller does not know when it booted it.
        assert suite.wait_task(DOMAIN, task, timeout=60).status == pb.TASK_STATUS_COMPLETED
        vm = instances(suite, "slow")[0]
        assert vm.state == pb.STATE_ACTIVE
        assert seen(controller, suite, "slow") == {vm.uuid: ("active", f"vm://orch-{vm.uuid}")}
        assert f"start: orch-{vm.uuid} (running) already: nothing to do" in comments(suite)
        suite.ok("solution", "delete", DOMAIN, "slow", "--wait", timeout=60)
        assert known(controller, "slow", [vm]) == [False]
    # The password went to libvirt's authentication callback and nowhere else: no log, record, event, span or output.
    assert receiver.all() and not any(PASSWORD.encode() in raw for raw in list(receiver.raw))
    for path in suite.home.rglob("*"):
        if path.is_file():
            assert PASSWORD.encode() not in path.read_bytes(), f"the password is in {path}"
    assert PASSWORD not in suite.ok("event", "list", DOMAIN, "-o", "json")
    assert PASSWORD not in suite.ok("solution", "list", DOMAIN)
