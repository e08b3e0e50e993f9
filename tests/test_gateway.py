"""The gateway API on real gRPC (127.0.0.1) over a real nats-server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from gateway.server import Gateway, GatewaySettings
from orchestration.store.subjects import Subjects
from orchestration.v1 import gateway_pb2 as gw
from orchestration.v1 import gateway_pb2_grpc as gw_grpc
from orchestration.v1 import model_pb2 as pb
from orchestration_sdk.runtime.wire import bearer_metadata

DATA = Path(__file__).parent / "data"
TOKEN = "test-token"
AUTH = bearer_metadata(TOKEN)

COMPONENT = """
Component: widget
Version: V1.0.0
Controller: sim
Configuration: "size: {{size}}"
Dependencies: {}
"""


class Client:
    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.channel = channel
        self.admin = gw_grpc.AdministrationServiceStub(channel)
        self.catalog = gw_grpc.CatalogServiceStub(channel)
        self.architectures = gw_grpc.ArchitectureServiceStub(channel)
        self.solutions = gw_grpc.SolutionServiceStub(channel)
        self.automation = gw_grpc.AutomationServiceStub(channel)

    async def apply(self, text: str, domain: str = "") -> gw.ApplyResponse:
        return await self.admin.Apply(gw.ApplyRequest(document=text, domain=domain), metadata=AUTH)


@pytest.fixture
async def client(nats_server, subjects: Subjects) -> AsyncIterator[Client]:
    gateway = Gateway(GatewaySettings(address="127.0.0.1:0", nats_url=nats_server.url, prefix=subjects.prefix, token=TOKEN))
    await gateway.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}")
    try:
        yield Client(channel)
    finally:
        await channel.close()
        await gateway.stop()


async def code_of(call) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return info.value.code(), info.value.details()


async def test_apply_demo2_lists_architecture_and_components(client: Client) -> None:
    reply = await client.apply((DATA / "demo2.yaml").read_text())
    assert reply.kind == gw.DOCUMENT_KIND_MODEL
    archs = await client.architectures.ListArchitectures(gw.ListArchitecturesRequest(domain="demo"), metadata=AUTH)
    assert [(a.name, a.version) for a in archs.architectures] == [("app", "V0.0.0")]
    comps = await client.catalog.ListComponents(gw.ListComponentsRequest(domain="demo"), metadata=AUTH)
    assert sorted(c.name for c in comps.components) == ["application", "network", "server", "tenant"]
    # Applying identical content again succeeds and stores nothing.
    again = await client.apply((DATA / "demo2.yaml").read_text())
    assert list(again.stored) == []
    assert len(again.unchanged) >= 5


async def test_redefining_component_is_already_exists_and_changes_nothing(client: Client) -> None:
    await client.apply((DATA / "demo2.yaml").read_text())
    before = await client.catalog.RetrieveComponent(
        gw.RetrieveComponentRequest(domain="demo", component="tenant", version="V1.0.0"), metadata=AUTH
    )
    changed = pb.Component()
    changed.CopyFrom(before.component)
    changed.configuration = "something else"
    code, message = await code_of(client.catalog.StoreComponent(gw.StoreComponentRequest(domain="demo", component=changed), metadata=AUTH))
    assert code == grpc.StatusCode.ALREADY_EXISTS
    assert "tenant" in message
    after = await client.catalog.RetrieveComponent(
        gw.RetrieveComponentRequest(domain="demo", component="tenant", version="V1.0.0"), metadata=AUTH
    )
    assert after.component == before.component


def _arch(relationship_element: str = "db", component: str = "widget", db_relationship: str = "") -> str:
    return f"""
Architecture: shop
Version: V1
Configuration: ""
Elements:
  web:
    Element: web
    Component: {component}
    Configuration: ""
    Clusters:
      V1.0.0:
        Version: V1.0.0
        State: active
        Min: 1
        Max: 2
        Size: 1
        Configuration: ""
        Relationships:
          db:
            Relationship: db
            Dependency: db
            Type: service
            Element: {relationship_element}
            Version: V1.0.0
            Configuration: ""
  db:
    Element: db
    Component: store
    Configuration: ""
    Clusters:
      V1.0.0:
        Version: V1.0.0
        State: active
        Min: 1
        Max: 1
        Size: 1
        Configuration: ""
        Relationships: {db_relationship or "{}"}
"""


CATALOG = """
Name: shopping
Components:
  store - V1.0.0:
    Component: store
    Version: V1.0.0
    Controller: sim
    Configuration: ""
    Dependencies:
      db:
        Dependency: db
        Type: service
        Component: store
        Version: V1.0.0
        Configuration: ""
  widget - V1.0.0:
    Component: widget
    Version: V1.0.0
    Controller: sim
    Configuration: ""
    Dependencies:
      db:
        Dependency: db
        Type: service
        Component: store
        Version: V1.0.0
        Configuration: ""
"""


async def test_architecture_good_and_bad_references(client: Client) -> None:
    await client.apply(CATALOG)
    await client.apply(_arch(), domain="shopping")
    listed = await client.architectures.ListArchitectureVersions(
        gw.ListArchitectureVersionsRequest(domain="shopping", architecture="shop"), metadata=AUTH
    )
    assert list(listed.versions) == ["V1"]

    code, message = await code_of(client.apply(_arch(component="gadget").replace("Version: V1\n", "Version: V2\n", 1), domain="shopping"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "gadget" in message

    code, message = await code_of(client.apply(_arch(relationship_element="cache").replace("Version: V1\n", "Version: V3\n", 1), domain="shopping"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "cache" in message

    cycle = """
Architecture: shop
Version: V4
Configuration: ""
Elements:
""" + "".join(f"""  {name}:
    Element: {name}
    Component: store
    Configuration: ""
    Clusters:
      V1.0.0:
        Version: V1.0.0
        State: active
        Min: 1
        Max: 1
        Size: 1
        Configuration: ""
        Relationships:
          db:
            Relationship: db
            Dependency: db
            Type: service
            Element: {other}
            Version: V1.0.0
            Configuration: ""
""" for name, other in (("a", "b"), ("b", "a")))
    code, message = await code_of(client.apply(cycle, domain="shopping"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "cycle" in message
    # Nothing of the rejected documents was stored.
    listed = await client.architectures.ListArchitectureVersions(
        gw.ListArchitectureVersionsRequest(domain="shopping", architecture="shop"), metadata=AUTH
    )
    assert list(listed.versions) == ["V1"]


async def test_malformed_yaml_names_the_line(client: Client) -> None:
    code, message = await code_of(client.apply("Name: x\nComponents:\n  a: [unclosed\n  b: 1\n"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "line" in message


async def test_component_into_unknown_domain_is_rejected(client: Client) -> None:
    code, message = await code_of(client.apply(COMPONENT, domain="nowhere"))
    assert code in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT)
    assert "nowhere" in message


async def test_calls_need_the_token(client: Client, nats_server) -> None:
    code, message = await code_of(client.admin.ListDomains(gw.ListDomainsRequest()))
    assert code == grpc.StatusCode.UNAUTHENTICATED
    assert "token" in message
    code, _ = await code_of(client.admin.ListDomains(gw.ListDomainsRequest(), metadata=bearer_metadata("wrong")))
    assert code == grpc.StatusCode.UNAUTHENTICATED


async def test_not_found_and_invalid_names(client: Client) -> None:
    code, message = await code_of(
        client.catalog.RetrieveComponent(gw.RetrieveComponentRequest(domain="demo", component="x", version="V1"), metadata=AUTH)
    )
    assert code == grpc.StatusCode.NOT_FOUND
    code, message = await code_of(client.catalog.ListComponents(gw.ListComponentsRequest(domain="a.*>"), metadata=AUTH))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "domain" in message


async def test_demo3_loads_solution_tasks_and_events(client: Client) -> None:
    await client.apply((DATA / "demo3.yaml").read_text())
    solutions = await client.solutions.ListSolutions(gw.ListSolutionsRequest(domain="demo"), metadata=AUTH)
    assert [s.name for s in solutions.solutions] == ["app"]
    full = await client.solutions.RetrieveSolution(gw.RetrieveSolutionRequest(domain="demo", solution="app"), metadata=AUTH)
    assert sum(len(c.instances) for e in full.solution.elements for c in e.clusters) == 23
    tasks = await client.automation.ListTasks(gw.ListTasksRequest(domain="demo"), metadata=AUTH)
    assert len(tasks.tasks) == 38
    root = next(t for t in tasks.tasks if not t.parent)
    tree = await client.automation.RetrieveTask(gw.RetrieveTaskRequest(task=root.uuid, tree=True), metadata=AUTH)
    assert tree.task.uuid == root.uuid and len(tree.subtasks) == 37
    events = await client.automation.ListEvents(gw.ListEventsRequest(domain="demo", task=root.uuid), metadata=AUTH)
    assert len(events.events) == len(set(root.events))


async def test_health_needs_no_token_and_reports_serving(client: Client) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    stub = health_pb2_grpc.HealthStub(client.channel)
    reply = await stub.Check(health_pb2.HealthCheckRequest(service="orchestration.v1.CatalogService"))
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_a_domain_with_solutions_cannot_be_removed(client: Client) -> None:
    await client.apply((DATA / "demo3.yaml").read_text())
    code, message = await code_of(client.admin.RemoveDomain(gw.RemoveDomainRequest(domain="demo"), metadata=AUTH))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "app" in message
    domains = await client.admin.ListDomains(gw.ListDomainsRequest(), metadata=AUTH)
    assert "demo" in domains.domains


async def test_a_model_whose_solutions_run_instances_is_reset_only_with_force(client: Client) -> None:
    await client.apply((DATA / "demo3.yaml").read_text())
    code, message = await code_of(client.admin.ResetModel(gw.ResetModelRequest(), metadata=AUTH))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert "demo/app" in message and "orch solution delete" in message
    assert "demo" in (await client.admin.ListDomains(gw.ListDomainsRequest(), metadata=AUTH)).domains
    await client.admin.ResetModel(gw.ResetModelRequest(force=True), metadata=AUTH)
    assert list((await client.admin.ListDomains(gw.ListDomainsRequest(), metadata=AUTH)).domains) == []


async def test_a_domain_with_solutions_is_removed_with_force(client: Client) -> None:
    await client.apply((DATA / "demo3.yaml").read_text())
    await client.admin.RemoveDomain(gw.RemoveDomainRequest(domain="demo", force=True), metadata=AUTH)
    assert "demo" not in (await client.admin.ListDomains(gw.ListDomainsRequest(), metadata=AUTH)).domains


async def test_a_solution_accepted_but_not_planned_yet_is_not_found_with_that_said(client: Client) -> None:
    # No dispatcher here: the deploy is accepted and stays queued, as it does
    # for the few milliseconds before a dispatcher has planned it.
    await client.apply((DATA / "demo2.yaml").read_text())
    never = client.solutions.RetrieveSolution(gw.RetrieveSolutionRequest(domain="demo", solution="app"), metadata=AUTH)
    code, details = await code_of(never)
    assert code == grpc.StatusCode.NOT_FOUND and "not planned yet" not in details
    deployed = await client.solutions.DeploySolution(
        gw.DeploySolutionRequest(domain="demo", architecture="app", version="V0.0.0"), metadata=AUTH)
    queued = client.solutions.RetrieveSolution(gw.RetrieveSolutionRequest(domain="demo", solution="app"), metadata=AUTH)
    code, details = await code_of(queued)
    assert code == grpc.StatusCode.NOT_FOUND
    assert "not planned yet" in details and deployed.task in details
    listed = client.solutions.ListInstances(gw.ListInstancesRequest(domain="demo", solution="app"), metadata=AUTH)
    assert "not planned yet" in (await code_of(listed))[1]
