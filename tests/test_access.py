"""Tokens with roles, per domain, against a real suite: for every role the
allowed calls succeed and the forbidden ones are PERMISSION_DENIED over
gRPC, the bus and the CLI; a token of one domain sees nothing of another;
a revoked token stops working within a second; the audit trail has one
entry per change, refused ones included, with the right actor."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import nats
import pytest

from cli.embedded_nats import free_port, wait_for_port
from orchestration.v1 import gateway_pb2 as gw
from orchestration.v1 import gateway_pb2_grpc as gw_grpc
from orchestration.v1 import model_pb2 as pb
from orchestration_sdk.runtime.wire import bearer_metadata
from suite import DATA, Suite, running_suite, wait_until

DENIED = grpc.StatusCode.PERMISSION_DENIED


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Suite]:
    with running_suite(tmp_path_factory.mktemp("access")) as running:
        running.ok("apply", "-f", str(DATA / "demo2.yaml"))
        running.admin.StoreDomain(gw.StoreDomainRequest(domain=pb.Domain(name="other")), metadata=running.metadata, timeout=30)
        yield running


def create(suite: Suite, name: str, role: str, *domains: str) -> str:
    args = ["token", "create", name, "--role", role, *(f"--domain={d}" for d in domains), "-o", "json"]
    created = json.loads(suite.ok(*args))
    assert created["name"] == name and created["token"].startswith(f"{name}.")
    return str(created["token"])


def code_of(call: Any, request: Any, token: str) -> grpc.StatusCode:
    try:
        call(request, metadata=bearer_metadata(token), timeout=30)
    except grpc.RpcError as err:
        return err.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


def details_of(call: Any, request: Any, token: str) -> str:
    try:
        call(request, metadata=bearer_metadata(token), timeout=30)
    except grpc.RpcError as err:
        return err.details()  # type: ignore[no-any-return]
    raise AssertionError("the call succeeded")


def orch_as(suite: Suite, token: str, *args: str) -> subprocess.CompletedProcess:
    return suite.orch(*args, token=token)


async def bus(suite: Suite, operation: str, payload: dict[str, Any], token: str = "") -> dict[str, Any]:
    url = json.loads(suite.ok("info", "-o", "json", "--show-secrets"))["nats_url"]
    nc = await nats.connect(url)
    try:
        headers = {"Authorization": f"Bearer {token}"} if token else None
        reply = await nc.request(f"orch.requests.{operation}", json.dumps(payload).encode(), timeout=10, headers=headers)
        return json.loads(reply.data)  # type: ignore[no-any-return]
    finally:
        await nc.close()


DEPLOY = gw.DeploySolutionRequest(domain="demo", architecture="app", version="V0.0.0", solution="by-operator")
COMPONENT = gw.RetrieveComponentRequest(domain="demo", component="server", version="V1.0.0")


def test_each_role_may_do_its_calls_and_is_refused_the_others(suite: Suite) -> None:
    viewer, operator, admin = (create(suite, f"{role}-demo", role, "demo") for role in ("viewer", "operator", "admin"))
    s, a, c = suite.solutions, suite.admin, gw_grpc.CatalogServiceStub(suite.channel)
    component = c.RetrieveComponent(COMPONENT, metadata=suite.metadata, timeout=30).component

    # A viewer reads, and changes nothing.
    assert code_of(s.ListSolutions, gw.ListSolutionsRequest(domain="demo"), viewer) == grpc.StatusCode.OK
    assert code_of(c.RetrieveComponent, COMPONENT, viewer) == grpc.StatusCode.OK
    assert code_of(s.PlanSolution, gw.PlanSolutionRequest(domain="demo", architecture="app", version="V0.0.0"), viewer) == grpc.StatusCode.OK
    message = details_of(s.DeploySolution, DEPLOY, viewer)
    assert message == "DeploySolution needs the operator role in domain 'demo'; token 'viewer-demo' is a viewer in demo"

    # An operator deploys and terminates, but does not touch the catalog.
    task = s.DeploySolution(DEPLOY, metadata=bearer_metadata(operator), timeout=30).task
    assert suite.task("demo", task).task.actor == "operator-demo"  # tasks carry who asked
    store = gw.StoreComponentRequest(domain="demo", component=component)
    assert "needs the admin role in domain 'demo'" in details_of(c.StoreComponent, store, operator)

    # A domain admin changes its catalog, but neither domains nor tokens.
    assert code_of(c.StoreComponent, store, admin) == grpc.StatusCode.OK
    assert "needs the admin role globally" in details_of(a.RemoveDomain, gw.RemoveDomainRequest(domain="demo"), admin)
    assert code_of(gw_grpc.AccessServiceStub(suite.channel).ListTokens, gw.ListTokensRequest(), admin) == DENIED
    model = "Schema: BT V1.0.0\nName: Model\nDomains: {}\n"
    assert "Apply of a model document needs the admin role globally" in details_of(a.Apply, gw.ApplyRequest(document=model, domain="demo"), admin)

    # The same rights over the CLI and the bus.
    refused = orch_as(suite, viewer, "solution", "deploy", "demo", "app", "V0.0.0", "--solution", "by-viewer")
    assert refused.returncode == 1 and "PERMISSION_DENIED: DeploySolution needs the operator role" in refused.stderr
    assert orch_as(suite, viewer, "solution", "list", "demo").returncode == 0
    reply = asyncio.run(bus(suite, "deploy", {"domain": "demo", "architecture": "app", "version": "V0.0.0"}, viewer))
    assert reply["error"]["code"] == "PERMISSION_DENIED"
    reply = asyncio.run(bus(suite, "task", {"domain": "demo", "task": "x", "token": viewer}))
    assert reply["error"]["code"] == "NOT_FOUND"  # admitted; the task does not exist
    for token in ("", "wrong", viewer + "x"):
        reply = asyncio.run(bus(suite, "deploy", {"domain": "demo", "architecture": "app", "version": "V0.0.0"}, token))
        assert reply["error"]["code"] == "UNAUTHENTICATED", reply


def test_a_token_of_one_domain_sees_nothing_of_another(suite: Suite) -> None:
    token = create(suite, "other-admin", "admin", "other")
    listed = suite.admin.ListDomains(gw.ListDomainsRequest(), metadata=bearer_metadata(token), timeout=30).domains
    assert list(listed) == ["other"]
    assert code_of(suite.admin.RetrieveDomain, gw.RetrieveDomainRequest(domain="demo"), token) == DENIED
    # A domain that does not exist is refused alike: a token learns nothing of other domains.
    assert code_of(suite.admin.RetrieveDomain, gw.RetrieveDomainRequest(domain="nowhere"), token) == DENIED
    assert code_of(suite.solutions.ListSolutions, gw.ListSolutionsRequest(domain="demo"), token) == DENIED
    assert code_of(suite.automation.ListTasks, gw.ListTasksRequest(domain="demo"), token) == DENIED
    assert code_of(suite.solutions.ListSolutions, gw.ListSolutionsRequest(domain="other"), token) == grpc.StatusCode.OK
    events = suite.automation.WatchEvents(gw.WatchEventsRequest(domain="demo"), metadata=bearer_metadata(token), timeout=10)
    with pytest.raises(grpc.RpcError) as refused:
        next(iter(events))
    assert refused.value.code() == DENIED


def test_a_revoked_token_fails_within_a_second_and_no_secret_is_stored(suite: Suite) -> None:
    token = create(suite, "short-lived", "viewer")
    request = gw.ListDomainsRequest()
    assert code_of(suite.admin.ListDomains, request, token) == grpc.StatusCode.OK
    listed = json.loads(suite.ok("token", "list", "-o", "json"))
    assert {t["Name"]: t["Role"] for t in listed}["short-lived"] == "viewer"
    assert token.split(".", 1)[1] not in json.dumps(listed)
    async def stored() -> bytes:
        nc = await nats.connect(json.loads(suite.ok("info", "-o", "json", "--show-secrets"))["nats_url"])
        try:
            js = nc.jetstream()
            info = await js.stream_info("KV_orch_access")
            data = b""
            for seq in range(1, info.state.last_seq + 1):
                try:
                    data += (await js.get_msg("KV_orch_access", seq)).data or b""
                except Exception:  # noqa: BLE001 - deleted messages
                    pass
            return data
        finally:
            await nc.close()
    everything = asyncio.run(stored())
    assert b"short-lived" in everything and token.split(".", 1)[1].encode() not in everything
    revoked_at = time.monotonic()
    suite.ok("token", "revoke", "short-lived")
    wait_until(lambda: code_of(suite.admin.ListDomains, request, token) == grpc.StatusCode.UNAUTHENTICATED,
               timeout=5, what="the revoked token is refused", interval=0.02)
    assert time.monotonic() - revoked_at < 1.0



def test_the_audit_trail_names_who_changed_what_including_refusals(suite: Suite) -> None:
    viewer = create(suite, "auditee", "operator", "demo")
    request = gw.UpdateSolutionRequest(domain="demo", solution="nothing-here", state=pb.STATE_ACTIVE, request_id="rid-1")
    assert code_of(suite.solutions.UpdateSolution, request, viewer) == grpc.StatusCode.NOT_FOUND
    assert code_of(suite.solutions.RemoveSolution, gw.RemoveSolutionRequest(domain="other", solution="x"), viewer) == DENIED
    assert code_of(suite.solutions.ListSolutions, gw.ListSolutionsRequest(domain="demo"), viewer) == grpc.StatusCode.OK
    entries = json.loads(suite.ok("audit", "list", "--actor", "auditee", "-o", "json"))
    assert [(e["Method"], e["Target"], e["Outcome"]) for e in entries] == [
        ("UpdateSolution", "demo/nothing-here", "NOT_FOUND"),
        ("RemoveSolution", "other/x", "PERMISSION_DENIED"),
    ]  # the read (ListSolutions) is not audited
    assert entries[0]["RequestId"] == "rid-1" and entries[0]["Channel"] == "grpc"
    # A domain admin reads its domain's trail, not another's.
    admin = create(suite, "other-auditor", "admin", "other")
    mine = json.loads(orch_as(suite, admin, "audit", "list", "--domain", "other", "-o", "json").stdout)
    assert [e["Method"] for e in mine if e["Actor"] == "auditee"] == ["RemoveSolution"]
    refused = orch_as(suite, admin, "audit", "list", "--domain", "demo")
    assert refused.returncode == 1 and "ListAudit needs the admin role in domain 'demo'" in refused.stderr
    # Token management is audited with the bootstrap token's name.
    created = json.loads(suite.ok("audit", "list", "--since", "1h", "-o", "json"))
    assert ("bootstrap", "CreateToken", "auditee", "OK") in {(e["Actor"], e["Method"], e["Target"], e["Outcome"]) for e in created}


def test_a_revocation_reaches_every_gateway_within_a_second(suite: Suite, tmp_path: Path) -> None:
    """A second gateway on the same NATS (its own NATS user, like the first): a token
    revoked through one is refused by the other within a second."""
    passwords = json.loads((suite.home / "nats-credentials").read_text())
    nats_port = json.loads(suite.ok("info", "-o", "json", "--show-secrets"))["nats_url"].rsplit(":", 1)[1]
    address = f"127.0.0.1:{free_port()}"
    env = {**os.environ, "ORCH_NATS_URL": f"nats://gateway:{passwords['gateway']}@127.0.0.1:{nats_port}"}
    with (tmp_path / "gateway.log").open("wb") as log:
        second = subprocess.Popen([sys.executable, "-m", "gateway", "--addr", address, "--token-file",
                                   str(suite.home / "token")], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_port("127.0.0.1", int(address.rsplit(":", 1)[1]))
        token = create(suite, "two-gateways", "viewer")
        with grpc.insecure_channel(address) as channel:
            other = gw_grpc.AdministrationServiceStub(channel)
            wait_until(lambda: code_of(other.ListDomains, gw.ListDomainsRequest(), token) == grpc.StatusCode.OK,
                       what="the second gateway serving")
            revoked_at = time.monotonic()
            suite.ok("token", "revoke", "two-gateways")
            wait_until(lambda: code_of(other.ListDomains, gw.ListDomainsRequest(), token) == grpc.StatusCode.UNAUTHENTICATED,
                       timeout=5, interval=0.02, what="the other gateway refusing the revoked token")
            assert time.monotonic() - revoked_at < 1.0
    finally:
        second.terminate()
        second.wait(timeout=30)
