"""The ansible controller against a whole suite, with real ansible-playbook
runs on localhost: the example web service (examples/ansible) previewed
(`orch solution plan --preview`), deployed, upgraded and deleted; per-task lines in the task's events; a failing task
fails the instance permanently, naming the task; the controller SIGKILLed
half-way through a start and started again ends the run its killed self
left and converges without a second server; a service that already runs is adopted, not replaced; the vault
password and the secret it opens appear in no output; each playbook run is
a span in the request's trace."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from controllers.ansible.playbook import end_runs, leftover_runs
from orchestration.v1 import model_pb2 as pb
from suite import ExtraController, Suite, alive, cmdline, extra_controller, free_port, running_suite, wait_until
from otlp import Receiver, receiving

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "ansible"
DOMAIN = "examples"
OTEL = {"OTEL_BSP_SCHEDULE_DELAY": "100"}


def get(port: int) -> str:
    """The page the web service serves, or "" when nothing answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as answer:
            return str(answer.read().decode())
    except (urllib.error.URLError, OSError):
        return ""


@dataclass
class World:
    suite: Suite
    controller: ExtraController
    receiver: Receiver
    web_root: Path
    state_dir: Path
    ports: dict[str, int]
    password: str
    token: str

    def web_dir(self, solution: str, cluster: str = "V1.0.0") -> Path:
        return self.web_root / f"{solution}-web-{cluster}"

    def instance(self, solution: str) -> pb.Instance:
        return self.instances(solution)[0][1]

    def instances(self, solution: str) -> list[tuple[str, pb.Instance]]:
        """(cluster, instance) of each instance of the solution."""
        return [(c.version, i) for e in self.suite.solution(DOMAIN, solution).elements for c in e.clusters
                for i in c.instances]

    def events(self) -> str:
        return self.suite.ok("event", "list", DOMAIN, "-o", "json")


def model(web_root: Path, ports: dict[str, int]) -> str:
    """The example's model, on this test's directory and ports, plus architectures of its own."""
    text = (EXAMPLE / "web.yaml").read_text().replace("/tmp/orch-ansible-web", str(web_root))
    text = text.replace('"port: 8481"', f'"port: {ports["v1"]}"').replace('"port: 8482"', f'"port: {ports["v2"]}"')
    extra = f"""
  broken - V1.0.0:
    Architecture: broken
    Version: V1.0.0
    Configuration: "web_root: {web_root}"
    Elements:
      web:
        Element: web
        Component: web
        Configuration: ""
        Clusters:
          V1.0.0: {{Version: V1.0.0, State: active, Min: 1, Max: 1, Size: 1, Configuration: "port: 99999", Relationships: {{}}}}
  slow - V1.0.0:
    Architecture: slow
    Version: V1.0.0
    Configuration: "web_root: {web_root}"
    Elements:
      web:
        Element: web
        Component: web
        Configuration: ""
        Clusters:
          V1.0.0: {{Version: V1.0.0, State: active, Min: 1, Max: 1, Size: 1, Configuration: "{{port: {ports['slow']}, start_hold: 60}}", Relationships: {{}}}}
  adopted - V1.0.0:
    Architecture: adopted
    Version: V1.0.0
    Configuration: "web_root: {web_root}"
    Elements:
      web:
        Element: web
        Component: web
        Configuration: ""
        Clusters:
          V1.0.0: {{Version: V1.0.0, State: active, Min: 1, Max: 1, Size: 1, Configuration: "port: {ports['adopted']}", Relationships: {{}}}}
"""
    return text + extra


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    base = tmp_path_factory.mktemp("ansible")
    playbooks, state_dir, web_root = base / "playbooks", base / "state", base / "web"
    shutil.copytree(EXAMPLE / "playbooks", playbooks)
    password, token = f"vault-{secrets.token_hex(12)}", f"token-{secrets.token_hex(12)}"
    password_file = base / "vault-password"
    password_file.write_text(password + "\n")
    password_file.chmod(0o600)
    (playbooks / "secrets.yml").write_text(f"web_admin_token: {token}\n")
    subprocess.run([str(Path(sys.executable).parent / "ansible-vault"), "encrypt", "--vault-password-file",
                    str(password_file), str(playbooks / "secrets.yml")], check=True, capture_output=True,
                   env={**os.environ, "ANSIBLE_HOME": str(base / "vault-home"), "ANSIBLE_LOCAL_TEMP": str(base / "tmp")})
    assert token not in (playbooks / "secrets.yml").read_text()
    ports = {name: free_port() for name in ("v1", "v2", "slow", "adopted")}
    try:
        (base / "home").mkdir()
        with receiving() as receiver:
            otel = {**OTEL, **receiver.environment}
            with running_suite(base / "home", env=otel) as suite, \
                    extra_controller(suite, "controllers.ansible", ["ansible"], "--playbook-dir", str(playbooks),
                                     "--state-dir", str(state_dir), "--vault-password-file", str(password_file),
                                     "--timeout", "60", env=otel) as controller:
                suite.apply(model(web_root, ports))
                yield World(suite, controller, receiver, web_root, state_dir, ports, password, token)
    finally:
        end_runs(state_dir / "runs")  # a run a failed test left holding
        for pid_file in web_root.glob("*/pid"):  # whatever a failed test left running
            try:
                os.kill(int(pid_file.read_text()), signal.SIGTERM)
            except (OSError, ValueError):
                pass


def test_preview_deploy_upgrade_and_delete_the_web_service(world: World) -> None:
    suite, v1, v2 = world.suite, world.ports["v1"], world.ports["v2"]
    # The plan with each operation's dry run: install.yml --check --diff shows the page it would write.
    plan = suite.ok("solution", "plan", DOMAIN, "web", "V1.0.0", "--preview")
    assert "ansible-playbook install.yml --check --diff" in plan and "configure: no playbook, nothing to do" in plan
    assert "+hello from web (version 1, instance " in plan and "changed: [localhost]" in plan
    assert not world.web_dir("web").exists() and not list((world.state_dir / "instances").iterdir())  # changed nothing
    suite.ok("solution", "deploy", DOMAIN, "web", "V1.0.0", "--wait")
    instance = world.instance("web")
    assert instance.state == pb.STATE_ACTIVE and instance.endpoint == f"http://127.0.0.1:{v1}/"
    assert get(v1) == f"hello from web (version 1, instance {instance.uuid})\n"
    # The vault file was opened with the password the controller was given, and the token written.
    assert (world.web_dir("web") / "admin-token").read_text().strip() == world.token
    events = world.events()
    assert "create: ok: check the port on localhost\\nchanged: make the service directory on localhost" in events
    assert "start: changed: start the server unless it runs on localhost" in events

    suite.ok("solution", "deploy", DOMAIN, "web", "V2.0.0", "--wait")
    [(cluster, upgraded)] = world.instances("web")
    assert cluster == "V2.0.0" and upgraded.state == pb.STATE_ACTIVE
    assert get(v2) == f"hello again from web (version 2, instance {upgraded.uuid})\n"
    assert get(v1) == "" and not world.web_dir("web").exists()  # the old version stopped and removed

    # Every playbook run is a span, a child of the operation's span in the controller.
    spans = wait_until(lambda: [s for s in world.receiver.spans if s.name.startswith("ansible-playbook ")]
                       if len({s.name for s in world.receiver.spans if s.name.startswith("ansible-playbook ")}) >= 4
                       else None, 15, "playbook spans")
    by_id = {s.span_id: s for s in world.receiver.spans}
    start = next(s for s in spans if s.name == "ansible-playbook start.yml" and s.attributes["ansible.check"] == "false")
    assert any(s.attributes["ansible.check"] == "true" for s in spans)  # the preview's --check runs
    assert start.attributes["ansible.operation"] == "start" and start.attributes["ansible.hosts"] == "1"
    parent = by_id[start.parent_id]
    assert parent.name.startswith("start ") and parent.attributes["orch.transition"] == "start"

    suite.ok("solution", "delete", DOMAIN, "web", "--wait")
    assert get(v2) == "" and not world.web_dir("web", "V2.0.0").exists()
    assert not list((world.state_dir / "instances").glob("*.json"))


def test_a_failing_task_fails_the_instance_permanently_naming_the_task(world: World) -> None:
    done = world.suite.orch("solution", "deploy", DOMAIN, "broken", "V1.0.0", "--wait")
    assert done.returncode == 1, done.stdout + done.stderr
    instance = world.instance("broken")
    assert instance.state == pb.STATE_FAILURE
    assert "install.yml: task 'check the port' failed on localhost: port 99999 is not a TCP port number" in instance.error
    record = json.loads((world.state_dir / "instances" / f"{instance.uuid}.json").read_text())
    assert [(d["transition"], d["outcome"]) for d in record["done"]] == [("create", "failed")]


def _servers(web_dir: Path) -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir()
            if p.name.isdigit() and "server.py" in cmdline(int(p.name)) and _cwd(int(p.name)) == web_dir]


def _cwd(pid: int) -> Path | None:
    try:
        return Path(os.readlink(f"/proc/{pid}/cwd"))
    except OSError:
        return None


@pytest.mark.faults
def test_a_controller_killed_half_way_through_a_start_converges_without_a_second_server(world: World) -> None:
    web_dir, port = world.web_dir("slow"), world.ports["slow"]
    world.suite.ok("solution", "deploy", DOMAIN, "slow", "V1.0.0")
    # The server is up and start.yml holds (start_hold) until released: kill the controller now.
    wait_until(lambda: get(port), 30, "the slow instance's server to answer")
    record = world.state_dir / "instances" / f"{world.instance('slow').uuid}.json"
    assert json.loads(record.read_text())["running"]["transition"] == "start"
    first = int((web_dir / "pid").read_text())
    # ansible-playbook and the worker that holds (a process of its own session, as ansible-core starts them).
    orphans = wait_until(lambda: runs if len(runs := leftover_runs(world.state_dir / "runs")) >= 2 else None, 30,
                         "start.yml's worker to hold")
    world.controller.kill()
    assert alive(first) and any(alive(pid) for pid in orphans)  # the worker holding runs on, orphaned
    world.controller.start()
    # The controller ends what its killed self left running before it takes operations again.
    wait_until(lambda: not any(alive(pid) for pid in orphans), 30, "the killed controller's ansible-playbook to end")
    (web_dir / "release").touch()
    wait_until(lambda: world.instance("slow").state == pb.STATE_ACTIVE, 40, "the slow instance to become active")
    assert int((web_dir / "pid").read_text()) == first and alive(first)  # started once, not twice
    assert _servers(web_dir) == [first]
    recorded = json.loads(record.read_text())
    assert recorded["running"] is None and recorded["state"] == "active"
    assert [(d["transition"], d["outcome"]) for d in recorded["done"]] == [("create", "ok"), ("configure", "ok"), ("start", "ok")]
    assert list((world.state_dir / "runs").iterdir()) == []  # no private directory (a copy of the environment) left


def test_adopt_claims_a_web_service_that_already_runs(world: World) -> None:
    web_dir, port = world.web_dir("adopted"), world.ports["adopted"]
    (web_dir / "site").mkdir(parents=True)
    (web_dir / "site" / "index.html").write_text("installed by hand\n")
    with open(web_dir / "server.log", "wb") as log:  # a web service someone started by hand, in its own session
        server = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
                                   "--directory", "site"], cwd=web_dir, stdout=log, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    (web_dir / "pid").write_text(f"{server.pid}\n")
    wait_until(lambda: get(port), 15, "the hand-started server to answer")

    world.suite.ok("solution", "adopt", DOMAIN, "adopted", "V1.0.0", "--wait")
    instance = world.instance("adopted")
    assert instance.state == pb.STATE_ACTIVE and instance.endpoint == f"http://127.0.0.1:{port}/"
    assert get(port) == "installed by hand\n"  # not installed again
    assert server.poll() is None and int((web_dir / "pid").read_text()) == server.pid  # the same process, claimed
    events = world.events()
    assert "adopted what already runs" in events and "ok: start the server unless it runs on localhost" in events
    server.terminate()
    server.wait(timeout=10)


def test_secrets_appear_in_no_output(world: World) -> None:
    """Events, the model (the whole store, as NATS keeps it), every log, the
    controller's state and every span: neither the vault password nor the
    token it opens."""
    outputs = [world.events(), world.controller.log(),
               world.suite.ok("solution", "list", DOMAIN, "-o", "json"),
               repr(world.receiver.spans)]
    for root in (world.suite.home, world.state_dir):
        for path in root.rglob("*"):
            if path.is_file():
                outputs.append(path.read_bytes().decode(errors="replace"))
    assert len(outputs) > 10
    # The grep reaches what it must: the model as stored, the per-task events, the playbook spans.
    assert any("web_greeting" in text for text in outputs[4:]) and "changed: write the page" in outputs[0]
    assert "ansible-playbook install.yml" in outputs[3]
    for secret in (world.password, world.token):
        leaks = [text[:80] for text in outputs if secret in text]
        assert leaks == [], f"a secret leaked into {leaks}"
