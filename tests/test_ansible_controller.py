"""The ansible controller on its own, with real ansible-playbook runs on
localhost and no engine: the preview (--check --diff over the controller's
gRPC Preview) changes nothing; a re-delivered operation that succeeded is
answered from the record; an unreachable host and a run cut short by the
time-out are retryable, a missing playbook permanent; a status playbook
tells the real state; Ansible writes nothing outside the state directory."""

from __future__ import annotations

import asyncio
import logging
import shutil
import socket
import time
from pathlib import Path

import pytest

from controllers.ansible import AnsibleController
from controllers.ansible.playbook import RunnerSettings
from orchestration_sdk import UNKNOWN, InstanceState, OperationContext, Permanent, Retryable
from orchestration_sdk.testing import serve_in_process
from orchestration_sdk.v1 import controller_pb2 as cpb
from orchestration_sdk.v1.model_pb2 import Transition

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "ansible"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def configuration(web_root: Path, port: int, inventory: str = "") -> str:
    """The example component V1.0.0's configuration, rendered as the engine would."""
    text = (EXAMPLE / "web.yaml").read_text().split("Configuration: |\n", 1)[1].split("    Dependencies")[0]
    text = "\n".join(line[6:] for line in text.splitlines())
    text = text.replace("{{web_root}}", str(web_root)).replace("{{port}}", str(port)).replace("{{solution}}", "s")
    return text + (f"\ninventory: {inventory}\n" if inventory else "")


def context(config: str, transition: str, operation_id: str, **params: str) -> OperationContext:
    return OperationContext("d", "s", "web", "V1.0.0", "u-1", "web", "V1.0.0", operation_id, transition, 1,
                            time.time() + 60, config, params, (), (), logging.LoggerAdapter(logging.getLogger("t")))


@pytest.fixture
def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[AnsibleController, Path, Path, Path]:
    playbooks = tmp_path / "playbooks"
    shutil.copytree(EXAMPLE / "playbooks", playbooks)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))  # ansible-playbook inherits it: it must write nothing there
    settings = RunnerSettings(playbooks, tmp_path / "state", timeout=60.0)
    return AnsibleController(settings, concurrency=2), playbooks, home, tmp_path / "web"


def test_preview_shows_the_diff_and_changes_nothing_then_the_operations_run(setup, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    controller, playbooks, home, web_root = setup
    port = free_port()
    config = configuration(web_root, port)
    before = sorted(p.relative_to(playbooks) for p in playbooks.rglob("*"))

    async def scenario() -> None:
        async with serve_in_process(controller, "secret-credential") as served:
            operation = cpb.Operation(
                operation_id="p-1", transition=Transition.TRANSITION_CREATE, configuration=config,
                instance=cpb.InstanceReference(domain="d", solution="s", element="web", cluster="V1.0.0", uuid="new-1",
                                               component="web", component_version="V1.0.0"),
                parameters={"port": str(port)}, deadline_unix_ms=int((time.time() + 60) * 1000))
            reply = await served.stub.Preview(cpb.PreviewRequest(operation=operation), metadata=served.metadata)
            assert reply.text.startswith("ansible-playbook install.yml --check --diff\n")
            assert "+hello from s (version 1, instance new-1)" in reply.text and "changed: [localhost]" in reply.text
            assert not web_root.exists()  # a dry run
            operation.transition = Transition.TRANSITION_CONFIGURE
            reply = await served.stub.Preview(cpb.PreviewRequest(operation=operation), metadata=served.metadata)
            assert reply.text == "configure: no playbook, nothing to do"

        created = await controller.create(context(config, "create", "op-create"))
        assert "changed: write the page on localhost" in created.message
        web = web_root / "s-web-V1.0.0"
        shutil.rmtree(web)
        # The same operation delivered again (the engine never heard the answer): answered from the record.
        again = await controller.create(context(config, "create", "op-create"))
        assert again == created and not web.exists()
        web.mkdir(parents=True)
        (web / "server.py").write_text("")
        # The status playbook finds it installed, not running.
        assert await controller.status(context(config, "create", "x").instance) == InstanceState("inactive", "")
        await controller.destroy(context(config, "destroy", "op-destroy"))
        assert not web.exists() and await controller.status(context(config, "create", "x").instance) == UNKNOWN

    asyncio.run(scenario())
    assert sorted(p.relative_to(playbooks) for p in playbooks.rglob("*")) == before
    assert list(home.iterdir()) == []


def test_a_run_past_its_time_out_is_retryable_and_a_missing_playbook_permanent(setup) -> None:  # type: ignore[no-untyped-def]
    _, playbooks, _, web_root = setup
    config = configuration(web_root, free_port())
    controller = AnsibleController(RunnerSettings(playbooks, web_root.parent / "state", timeout=4.0))

    async def scenario() -> None:
        await controller.open()
        await controller.create(context(config, "create", "c"))
        started = time.monotonic()
        with pytest.raises(Retryable, match="start.yml: timeout"):
            await controller.start(context(config, "start", "s", start_delay="30"))
        assert time.monotonic() - started < 10
        missing = config.replace("stop: stop.yml", "stop: gone.yml")
        with pytest.raises(Permanent, match="playbook gone.yml not found in the controller's playbook directory"):
            await controller.stop(context(missing, "stop", "st"))
        await controller.destroy(context(config, "destroy", "d"))

    asyncio.run(scenario())


@pytest.mark.skipif(shutil.which("ssh") is None, reason="the ssh client makes a host unreachable here")
def test_an_unreachable_host_is_retryable(setup) -> None:  # type: ignore[no-untyped-def]
    controller, _, _, web_root = setup
    closed = free_port()
    config = configuration(web_root, free_port(), inventory="{all: {hosts: {ghost: {ansible_host: 127.0.0.1, "
                                                           f"ansible_port: {closed}, ansible_connection: ssh}}}}}}}}")

    async def scenario() -> None:
        await controller.open()
        with pytest.raises(Retryable, match="install.yml: host.s. ghost unreachable"):
            await controller.create(context(config, "create", "c"))

    asyncio.run(scenario())
