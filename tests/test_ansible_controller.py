"""The ansible controller on its own, with real ansible-playbook runs on
localhost and no engine: a re-delivered operation that succeeded is
answered from the record, unless it asks something else; two deliveries of
one operation at once run it once; a status playbook tells the real state;
a run cut short by the operation's deadline is retryable, and so is an
operation that finds no free playbook slot before its deadline; the status
of an instance an operation runs on is the record's; a cancelled operation
leaves no ansible-playbook behind; a missing playbook is
permanent, an unreachable host retryable; Ansible writes nothing outside the
state directory. (The preview runs in test_ansible_e2e.py, through
`orch solution plan --preview`.)"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from pathlib import Path

import pytest

from controllers.ansible import AnsibleController
from controllers.ansible.playbook import RunnerSettings, leftover_runs
from orchestration_sdk import UNKNOWN, InstanceState, OperationContext, Permanent, Retryable
from suite import eventually, free_port

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "ansible"
# A playbook of the tests: one line in web_root/runs per run.
COUNT = """- hosts: all
  gather_facts: false
  tasks:
    - name: count the run
      ansible.builtin.shell: echo "{{ orch_instance.operation_id }}" >> "{{ web_dir }}/../runs"
"""


def configuration(web_root: Path, port: int, inventory: str = "") -> str:
    """The example component V1.0.0's configuration, rendered as the engine would."""
    text = (EXAMPLE / "web.yaml").read_text().split("Configuration: |\n", 1)[1].split("    Dependencies")[0]
    text = "\n".join(line[6:] for line in text.splitlines())
    text = text.replace("{{web_root}}", str(web_root)).replace("{{port}}", str(port)).replace("{{solution}}", "s")
    return text + (f"\ninventory: {inventory}\n" if inventory else "")


def context(config: str, transition: str, operation_id: str, uuid: str = "u-1", seconds: float = 60,
            **params: str) -> OperationContext:
    return OperationContext("d", "s", "web", "V1.0.0", uuid, "web", "V1.0.0", operation_id, transition, 1,
                            time.time() + seconds, config, params, (), (), logging.LoggerAdapter(logging.getLogger("t")))


@pytest.fixture
def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path, Path]:
    playbooks = tmp_path / "playbooks"
    shutil.copytree(EXAMPLE / "playbooks", playbooks)
    (playbooks / "count.yml").write_text(COUNT)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))  # ansible-playbook inherits it: it must write nothing there
    return playbooks, home, tmp_path / "web"


def test_a_redelivered_operation_runs_once_unless_it_asks_something_else(setup, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    playbooks, home, web_root = setup
    controller = AnsibleController(RunnerSettings(playbooks, tmp_path / "state", timeout=60.0), concurrency=2)
    config = configuration(web_root, free_port()).replace("create: install.yml", "create: count.yml")
    before = sorted(p.relative_to(playbooks) for p in playbooks.rglob("*"))
    web, runs = web_root / "s-web-V1.0.0", web_root / "runs"
    web.mkdir(parents=True)

    async def scenario() -> None:
        await controller.open()
        # Delivered twice at once (a time-out, then a second replica): the second waits, then is answered.
        first, second = await asyncio.gather(controller.create(context(config, "create", "op-create")),
                                             controller.create(context(config, "create", "op-create")))
        assert first == second and "changed: count the run on localhost" in first.message
        assert runs.read_text().split() == ["op-create"]
        # Delivered again later (the engine never heard the answer): answered from the record.
        assert await controller.create(context(config, "create", "op-create")) == first
        # The same id asking something else (other parameters) is not answered from the record: it runs.
        await controller.create(context(config, "create", "op-create", other="1"))
        assert runs.read_text().split() == ["op-create", "op-create"]
        # The status playbook finds it installed, not running; an instance never created is unknown.
        (web / "server.py").write_text("")
        assert await controller.status(context(config, "create", "x").instance) == InstanceState("inactive", "")
        assert await controller.status(context(config, "create", "x", uuid="u-9").instance) == UNKNOWN

    asyncio.run(scenario())
    assert sorted(p.relative_to(playbooks) for p in playbooks.rglob("*")) == before
    assert list(home.iterdir()) == []
    assert list((tmp_path / "state" / "runs").iterdir()) == []  # each run's private directory removed


def test_deadlines_slots_and_a_cancel_stop_runs_and_leave_nothing_running(setup, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    playbooks, _, web_root = setup
    state = tmp_path / "state"
    controller = AnsibleController(RunnerSettings(playbooks, state, timeout=60.0), concurrency=1)
    config = configuration(web_root, free_port())
    (web_root / "s-web-V1.0.0" / "site").mkdir(parents=True)
    (web_root / "s-web-V1.0.0" / "server.py").write_text("")  # start.yml starts it (it ends at once), then holds

    async def scenario() -> None:
        await controller.open()
        # start.yml holds (start_hold) past the operation's deadline: the run is cut short, retryable.
        started = time.monotonic()
        with pytest.raises(Retryable, match="start.yml: timeout"):
            await controller.start(context(config, "start", "s", seconds=4.5, start_hold="60"))
        assert time.monotonic() - started < 8 and not leftover_runs(state / "runs")
        # One slot (--concurrency 1), taken by a start that holds: another instance's operation gives up
        # before its deadline, retryable, instead of running past it.
        holding = asyncio.ensure_future(controller.start(context(config, "start", "s2", start_hold="60")))
        await eventually(lambda: leftover_runs(state / "runs"), 30, "the holding start's ansible-playbook")
        with pytest.raises(Retryable, match="no free playbook slot"):
            await asyncio.wait_for(controller.stop(context(config, "stop", "st", uuid="u-2", seconds=3)), 10)
        # While an operation runs on an instance, its status is the record's (no status playbook racing it).
        record = controller.store.load("u-1")
        assert record is not None
        record.state = "inactive"
        controller.store.save(record)
        ref = context(config, "start", "x").instance
        assert await asyncio.wait_for(controller.status(ref), 5) == InstanceState("inactive", "")
        # Cancelled (the SDK does at the deadline, or at shutdown): ansible-playbook has ended when it returns.
        holding.cancel()
        with pytest.raises(asyncio.CancelledError):
            await holding
        assert leftover_runs(state / "runs") == []
        missing = config.replace("stop: stop.yml", "stop: gone.yml")
        with pytest.raises(Permanent, match="playbook gone.yml not found in the controller's playbook directory"):
            await controller.stop(context(missing, "stop", "st"))

    asyncio.run(scenario())


@pytest.mark.skipif(shutil.which("ssh") is None, reason="the ssh client makes a host unreachable here")
def test_an_unreachable_host_is_retryable(setup, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    playbooks, _, web_root = setup
    controller = AnsibleController(RunnerSettings(playbooks, tmp_path / "state", timeout=60.0))
    closed = free_port()
    config = configuration(web_root, free_port(), inventory="{all: {hosts: {ghost: {ansible_host: 127.0.0.1, "
                                                           f"ansible_port: {closed}, ansible_connection: ssh}}}}}}}}")

    async def scenario() -> None:
        await controller.open()
        with pytest.raises(Retryable, match="install.yml: host.s. ghost unreachable"):
            await controller.create(context(config, "create", "c"))

    asyncio.run(scenario())
