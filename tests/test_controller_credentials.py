"""Controllers bound to their names, and the engine's own credential:
issued credentials verified without NATS, then against a real suite's
dispatcher and controllers."""

from __future__ import annotations

import json
from collections.abc import Iterator

import grpc
import pytest

from cli.embedded_nats import wait_for_port
from cli.runtime_commands import BUILT_IN_NAMES
from controllers import process, sim
from orchestration_sdk.status_errors import PermissionDenied
from orchestration.runtime.credentials import (
    RegistrationGate,
    controller_names_of,
    engine_credential_for,
    issue_controller_credential,
)
from orchestration.v1 import controller_pb2 as cpb
from orchestration.v1 import controller_pb2_grpc as cpb_grpc
from orchestration.v1 import dispatcher_pb2 as dpb
from orchestration.v1 import dispatcher_pb2_grpc as dpb_grpc
from orchestration_sdk.runtime.credentials import secret_sha256
from orchestration_sdk.runtime.wire import bearer_metadata
from suite import Suite, cmdline, environment_of, running_suite


def test_orch_up_issues_the_built_in_controllers_credentials_for_their_own_names() -> None:
    assert BUILT_IN_NAMES == {"sim": [sim.NAME, *sim.ALIASES], "process": [process.NAME, *process.ALIASES]}


def test_a_credential_covers_the_names_it_was_issued_for_and_nothing_else() -> None:
    credential = issue_controller_credential("key", ["Internal", "sim"])
    assert controller_names_of("key", credential) == {"Internal", "sim"}
    assert controller_names_of("other key", credential) is None
    names, mac = credential.split("/")
    assert controller_names_of("key", f"Internal,sim,process/{mac}") is None
    assert controller_names_of("key", f"process/{mac}") is None
    assert controller_names_of("key", "no-slash") is None


async def test_the_registration_gate_admits_only_the_credentials_names() -> None:
    gate = RegistrationGate("key")
    names = await gate.identify(issue_controller_credential("key", ["process"]))
    assert names == {"process"}
    await gate.admit(names, "RegisterController", dpb.RegisterControllerRequest(name="process", replica="p-2"))
    with pytest.raises(PermissionDenied, match="issued for process, not for 'Internal'"):
        await gate.admit(names, "RegisterController", dpb.RegisterControllerRequest(name="Internal"))
    with pytest.raises(PermissionDenied, match="not for 'sim'"):
        await gate.admit(names, "RegisterController", dpb.RegisterControllerRequest(name="process", aliases=["sim"]))
    assert await gate.identify("process/" + "0" * 64) is None


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Suite]:
    with running_suite(tmp_path_factory.mktemp("credentials")) as running:
        yield running


def register(suite: Suite, credential: str, name: str, *aliases: str) -> grpc.StatusCode:
    connection = json.loads((suite.home / "connection.json").read_text())
    with grpc.insecure_channel(connection["dispatcher"]) as channel:
        request = dpb.RegisterControllerRequest(name=name, aliases=list(aliases), version="V1.0.0", replica="intruder-1",
                                                address="127.0.0.1:1")
        try:
            dpb_grpc.DispatcherServiceStub(channel).RegisterController(request, metadata=bearer_metadata(credential), timeout=10)
        except grpc.RpcError as err:
            return err.code()  # type: ignore[no-any-return]
        dpb_grpc.DispatcherServiceStub(channel).UnregisterController(
            dpb.UnregisterControllerRequest(name=name, replica="intruder-1"), metadata=bearer_metadata(credential), timeout=10)
        return grpc.StatusCode.OK


def test_a_process_credential_cannot_register_internal(suite: Suite) -> None:
    process = (suite.home / "controllers" / "process.credential").read_text().strip()
    assert register(suite, process, "Internal") == grpc.StatusCode.PERMISSION_DENIED
    assert register(suite, process, "process", "sim") == grpc.StatusCode.PERMISSION_DENIED
    # Another replica of the same controller is fine.
    assert register(suite, process, "process") == grpc.StatusCode.OK
    # Neither the engine credential nor the API token registers anything.
    for other in ("engine-credential", "token"):
        assert register(suite, (suite.home / other).read_text().strip(), "process") == grpc.StatusCode.UNAUTHENTICATED


def test_controllers_accept_only_the_engine_credential(suite: Suite) -> None:
    address = json.loads((suite.home / "connection.json").read_text())["sims"][0]
    engine = (suite.home / "engine-credential").read_text().strip()
    sim = (suite.home / "controllers" / "Internal.credential").read_text().strip()
    host, port = address.rsplit(":", 1)
    wait_for_port(host, int(port))
    for_sim = engine_credential_for(engine, "Internal")
    with grpc.insecure_channel(address) as channel:
        stub = cpb_grpc.ControllerServiceStub(channel)
        stub.Status(cpb.StatusRequest(), metadata=bearer_metadata(for_sim), timeout=10)
        # Neither the engine key itself, nor what the engine presents to another controller,
        # nor the sim's own registration credential is accepted.
        for other in (engine, engine_credential_for(engine, "process"), sim):
            with pytest.raises(grpc.RpcError) as refused:
                stub.Status(cpb.StatusRequest(), metadata=bearer_metadata(other), timeout=10)
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    # A controller is told only the hash of what the engine presents to it, and no NATS URL.
    for replica, name in (("sim-1", "Internal"), ("process", "process")):
        pid = suite.services()[replica]
        env = environment_of(pid)
        assert env["ORCH_ENGINE_CREDENTIAL_SHA256"] == secret_sha256(engine_credential_for(engine, name))
        assert "ORCH_NATS_URL" not in env
        seen = " ".join(f"{k}={v}" for k, v in env.items()) + cmdline(pid)
        assert engine not in seen and engine_credential_for(engine, name) not in seen


def test_orch_controller_credential_issues_one_that_registers_its_names_only(suite: Suite) -> None:
    out = suite.home / "mine.credential"
    found = json.loads(suite.ok("controller", "credential", "mine", "my-alias", "--out", str(out), "-o", "json"))
    credential = out.read_text().strip()
    assert out.stat().st_mode & 0o777 == 0o600
    key = (suite.home / "registration-key").read_text().strip()
    assert controller_names_of(key, credential) == {"mine", "my-alias"}
    engine = (suite.home / "engine-credential").read_text().strip()
    assert found["engine_credential_sha256"] == secret_sha256(engine_credential_for(engine, "mine"))
    assert found["dispatcher"] == json.loads((suite.home / "connection.json").read_text())["dispatcher"]
    assert register(suite, credential, "mine", "my-alias") == grpc.StatusCode.OK
    assert register(suite, credential, "process") == grpc.StatusCode.PERMISSION_DENIED
    flags = suite.ok("controller", "credential", "mine", "--out", str(out), "-o", "flags").split()
    assert flags[flags.index("--engine-credential-sha256") + 1] == found["engine_credential_sha256"]
    refused = suite.orch("controller", "credential", "bad/name", "--out", str(suite.home / "x"))
    assert refused.returncode == 2 and "not valid" in refused.stderr and not (suite.home / "x").exists()
