"""The ec2 controller's operations against a real moto server, called in
process (no suite): networks and servers through their lifecycle, create
repeated finds what it made, adopt, preview, what a bad configuration or
an unreachable EC2 answers, credentials from a file. The whole suite around
it: test_ec2_suite.py."""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid as uuids
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from controllers.ec2 import Ec2Controller
from controllers.ec2.settings import ClientSettings
from moto_server import REGION, aws_env, ec2_client, running_moto, tagged, tags_of
from orchestration_sdk import InstanceRef, OperationContext, Permanent, Provider, Retryable

pytestmark = pytest.mark.integration

NETWORK = {"kind": "network", "cidr": "10.8.0.0/16", "ingress": "tcp:22:10.0.0.0/8,tcp:443:0.0.0.0/0"}
SERVER = {"kind": "server", "image_id": "ami-12345678", "instance_type": "t3.micro", "tags": '{"team": "shop"}'}


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    saved = {k: os.environ.get(k) for k in aws_env()}
    os.environ.update(aws_env())
    with running_moto(tmp_path_factory.mktemp("moto") / "moto.log") as url:
        yield url
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture
async def controller(moto: str) -> AsyncIterator[Ec2Controller]:
    found = Ec2Controller(ClientSettings(region=REGION, endpoint_url=moto, poll_max=0.5))
    await found.open()
    yield found
    await found.close()


Opener = Callable[[ClientSettings], Awaitable[Ec2Controller]]


@pytest.fixture
async def opened() -> AsyncIterator[Opener]:
    """Opens controllers of other settings, each closed when the test ends."""
    made: list[Ec2Controller] = []

    async def open_one(settings: ClientSettings) -> Ec2Controller:
        found = Ec2Controller(settings)
        await found.open()
        made.append(found)
        return found

    yield open_one
    for found in made:
        await found.close()


def context(transition: str, parameters: dict[str, str], uuid: str = "", *, providers: tuple[Provider, ...] = (),
            adopt: bool = False, operation_id: str = "", element: str = "web", deadline: float = 30.0) -> OperationContext:
    uuid = uuid or str(uuids.uuid4())
    return OperationContext(
        domain="shop", solution="ec2test", element=element, cluster="V1.0.0", uuid=uuid, component=element,
        component_version="V1.0.0", operation_id=operation_id or f"op-{uuid}-{transition}", transition=transition,
        attempt=1, deadline=time.time() + deadline, configuration="", parameters=parameters, providers=providers,
        siblings=(), logger=logging.LoggerAdapter(logging.getLogger("test"), {}), adopt=adopt)


def ref(uuid: str) -> InstanceRef:
    return InstanceRef("shop", "ec2test", "web", "V1.0.0", uuid)


def network_of(endpoint: str) -> Provider:
    return Provider("net", "context", "net", "V1.0.0", (endpoint,), "")


async def make_network(controller: Ec2Controller) -> str:
    result = await controller.create(context("create", NETWORK, element="net"))
    return result.endpoint


async def test_a_network_is_a_tagged_vpc_subnet_and_group_through_its_lifecycle(controller: Ec2Controller, moto: str) -> None:
    uuid = str(uuids.uuid4())
    created = await controller.create(context("create", NETWORK, uuid, element="net"))
    vpc, subnet, group = created.endpoint.removeprefix("aws://").split("/")
    assert vpc.startswith("vpc-") and subnet.startswith("subnet-") and group.startswith("sg-")
    assert "CreateVpc 10.8.0.0/16" in created.message and "CreateSubnet 10.8.0.0/24" in created.message
    again = await controller.create(context("create", NETWORK, uuid, element="net"))
    assert again.endpoint == created.endpoint and "Create" not in again.message, "create again finds what it made"

    client = ec2_client(moto)
    vpcs = client.describe_vpcs(Filters=[{"Name": "tag:orch:instance", "Values": [uuid]}])["Vpcs"]
    assert [v["VpcId"] for v in vpcs] == [vpc]
    assert {"orch:domain": "shop", "orch:solution": "ec2test", "orch:element": "net", "orch:instance": uuid}.items() \
        <= tags_of(vpcs[0]).items()
    rules = client.describe_security_groups(GroupIds=[group])["SecurityGroups"][0]["IpPermissions"]
    assert sorted((r["FromPort"], r["IpRanges"][0]["CidrIp"]) for r in rules) == [(22, "10.0.0.0/8"), (443, "0.0.0.0/0")]

    assert (await controller.status(ref(uuid))).state == "inactive"
    await controller.start(context("start", NETWORK, uuid, element="net"))
    assert (await controller.status(ref(uuid))).state == "active"
    await controller.reconfigure(context("reconfigure", {**NETWORK, "ingress": "tcp:22:10.0.0.0/8"}, uuid, element="net"))
    rules = client.describe_security_groups(GroupIds=[group])["SecurityGroups"][0]["IpPermissions"]
    assert [(r["FromPort"], r["IpRanges"][0]["CidrIp"]) for r in rules] == [(22, "10.0.0.0/8")], "a rule no longer asked for is revoked"
    await controller.stop(context("stop", NETWORK, uuid, element="net"))
    assert (await controller.status(ref(uuid))).state == "inactive"

    client.delete_security_group(GroupId=group)  # a part removed by hand: start makes it again
    await controller.start(context("start", NETWORK, uuid, element="net"))
    state = await controller.status(ref(uuid))
    assert state.state == "active" and state.endpoint.startswith(f"aws://{vpc}/{subnet}/sg-") and group not in state.endpoint

    removed = await controller.destroy(context("destroy", NETWORK, uuid, element="net"))
    assert "DeleteVpc" in removed.message
    assert client.describe_vpcs(Filters=[{"Name": "tag:orch:instance", "Values": [uuid]}])["Vpcs"] == []
    assert not (await controller.status(ref(uuid))).known
    assert "nothing" in (await controller.destroy(context("destroy", NETWORK, uuid, element="net"))).message


async def test_a_server_is_launched_once_stopped_started_resized_and_terminated(controller: Ec2Controller, moto: str) -> None:
    network = network_of(await make_network(controller))
    uuid = str(uuids.uuid4())
    create = context("create", SERVER, uuid, providers=(network,))
    created = await controller.create(create)
    assert created.endpoint.startswith("aws://i-") and "?ip=10.8.0." in created.endpoint
    assert "RunInstances" in created.message and "StopInstances" in created.message
    again = await controller.create(create)  # the same operation again, as after a crash
    assert again.endpoint == created.endpoint and "RunInstances" not in again.message

    client = ec2_client(moto)
    [instance] = tagged(client, "orch:instance", uuid)
    assert instance["State"]["Name"] == "stopped" and instance["InstanceType"] == "t3.micro"
    assert instance["SubnetId"] == network.endpoints[0].split("/")[3]
    assert {"orch:solution": "ec2test", "orch:element": "web", "team": "shop"}.items() <= tags_of(instance).items()
    assert (await controller.status(ref(uuid))).state == "inactive"

    resized = await controller.configure(context("configure", {**SERVER, "instance_type": "t3.small"}, uuid, providers=(network,)))
    assert "InstanceType t3.micro -> t3.small" in resized.message
    started = await controller.start(context("start", SERVER, uuid))
    assert "StartInstances" in started.message
    state = await controller.status(ref(uuid))
    assert (state.state, state.endpoint) == ("active", created.endpoint)
    assert tagged(client, "orch:instance", uuid)[0]["InstanceType"] == "t3.small"

    await controller.stop(context("stop", SERVER, uuid))
    assert tagged(client, "orch:instance", uuid)[0]["State"]["Name"] == "stopped"
    await controller.destroy(context("destroy", SERVER, uuid))
    assert [i["State"]["Name"] for i in tagged(client, "orch:instance", uuid)] == ["terminated"]
    assert not (await controller.status(ref(uuid))).known
    assert "nothing" in (await controller.destroy(context("destroy", SERVER, uuid))).message
    assert "nothing" in (await controller.stop(context("stop", SERVER, uuid))).message


async def test_adopt_claims_a_matching_instance_and_launches_only_where_none_is_free(controller: Ec2Controller, moto: str) -> None:
    endpoint = await make_network(controller)
    subnet = endpoint.split("/")[3]
    client = ec2_client(moto)
    name = f"legacy-{uuids.uuid4().hex[:8]}"
    legacy = client.run_instances(ImageId="ami-12345678", MinCount=1, MaxCount=1, SubnetId=subnet, TagSpecifications=[
        {"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": name}]}])["Instances"][0]["InstanceId"]
    parameters = {**SERVER, "instance_type": "", "adopt": f'{{"name": "{name}"}}'}
    first, second = str(uuids.uuid4()), str(uuids.uuid4())

    text = await controller.preview(context("create", parameters, first, providers=(network_of(endpoint),), adopt=True))
    assert text.startswith(f"adopt {legacy} (running, matching Name={name})")
    adopted = await controller.create(context("create", parameters, first, providers=(network_of(endpoint),), adopt=True))
    assert adopted.endpoint.startswith(f"aws://{legacy}") and f"adopted {legacy}" in adopted.message
    [instance] = tagged(client, "Name", name)
    assert tags_of(instance)["orch:instance"] == first and instance["State"]["Name"] == "running", \
        "adopting does not stop what serves"
    assert "nothing to change" in (await controller.configure(context("configure", parameters, first))).message

    launched = await controller.create(context("create", parameters, second, providers=(network_of(endpoint),), adopt=True))
    assert "RunInstances" in launched.message, "nothing free matches: a new one"
    assert len(tagged(client, "Name", name)) == 1 and len(tagged(client, "orch:instance", second)) == 1
    plain = await controller.create(context("create", {**SERVER, "adopt": f'{{"tag": {{"Name": "{name}"}}}}'},
                                            providers=(network_of(endpoint),)))
    assert "RunInstances" in plain.message, "without ctx.adopt, nothing is taken over"


async def test_preview_says_what_would_be_called_and_changes_nothing(controller: Ec2Controller, moto: str) -> None:
    client = ec2_client(moto)
    before = len(client.describe_vpcs()["Vpcs"])
    net = str(uuids.uuid4())
    assert (await controller.preview(context("create", NETWORK, net, element="net"))).splitlines() == [
        "CreateVpc 10.8.0.0/16", "CreateSubnet 10.8.0.0/24", f"CreateSecurityGroup orch-{net} with 2 ingress rule(s)"]
    assert len(client.describe_vpcs()["Vpcs"]) == before

    network = network_of(await make_network(controller))
    subnet = network.endpoints[0].split("/")[3]
    uuid = str(uuids.uuid4())
    text = await controller.preview(context("create", SERVER, uuid, providers=(network,)))
    assert text.startswith(f"RunInstances ImageId=ami-12345678 InstanceType=t3.micro in {subnet}")
    assert tagged(client, "orch:instance", uuid) == []
    without = await controller.preview(context("create", SERVER, uuid))
    assert "once there is one" in without
    await controller.create(context("create", SERVER, uuid, providers=(network,)))
    [instance] = tagged(client, "orch:instance", uuid)
    iid = instance["InstanceId"]
    assert await controller.preview(context("create", SERVER, uuid)) == f"nothing: exists as {iid} (stopped)"
    assert await controller.preview(context("start", SERVER, uuid)) == f"StartInstances {iid} (stopped)"
    assert await controller.preview(context("stop", SERVER, uuid)) == f"nothing: {iid} is stopped"
    assert await controller.preview(context("configure", {**SERVER, "instance_type": "m5.large"}, uuid)) == \
        f"ModifyInstanceAttribute {iid} InstanceType t3.micro -> m5.large"
    assert await controller.preview(context("destroy", SERVER, uuid)) == f"TerminateInstances {iid} (stopped)"
    assert tagged(client, "orch:instance", uuid)[0]["State"]["Name"] == "stopped"


@pytest.mark.parametrize(("parameters", "says"), [
    ({}, "no 'kind' in the Configuration"),
    ({"kind": "database"}, "kind='database'"),
    ({"kind": "server"}, "image_id is required"),
    ({"kind": "server", "image_id": "ubuntu"}, "image_id='ubuntu' is not an AMI id"),
    ({"kind": "network", "cidr": "10.0.0.0/33"}, "cidr='10.0.0.0/33' is not an IPv4 address block"),
    ({"kind": "network", "cidr": "10.0.0.0/16", "subnet_cidr": "10.9.0.0/24"}, "is not inside cidr"),
    ({"kind": "network", "ingress": "ssh"}, "must be PROTOCOL:PORT[-PORT]:CIDR"),
    ({"kind": "server", "image_id": "ami-1", "adopt": '{"label": "x"}'}, "adopt has unknown keys"),
    ({"kind": "server", "image_id": "ami-1", "tags": '{"orch:instance": "x"}'}, "reserved"),
    ({"kind": "server", "image_id": "ami-1"}, "a server needs a network"),
    ({"kind": "server", "image_id": "ami-1", "network": "lan"}, "network='lan' names no relationship"),
    ({"kind": "server", "image_id": "ami-12345678", "subnet_id": "subnet-0000000000"}, "InvalidSubnetID.NotFound"),
])
async def test_a_bad_configuration_fails_permanently_saying_what_to_fix(controller: Ec2Controller, parameters: dict[str, str],
                                                                        says: str) -> None:
    with pytest.raises(Permanent) as failed:
        await controller.create(context("create", parameters))
    assert says in failed.value.message


async def test_an_unreachable_ec2_is_retryable_within_the_call_timeout(moto: str, opened: Opener) -> None:
    from cli.embedded_nats import free_port

    controller = await opened(ClientSettings(region=REGION, endpoint_url=f"http://127.0.0.1:{free_port()}",
                                             connect_timeout=0.5, call_timeout=0.5, max_attempts=1))
    started = time.monotonic()
    with pytest.raises(Retryable) as failed:
        await controller.create(context("create", NETWORK))
    assert "EndpointConnectionError" in failed.value.message and time.monotonic() - started < 5


async def test_credentials_come_from_the_file_the_settings_name(moto: str, tmp_path: Path, opened: Opener,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    bare = await opened(ClientSettings(region=REGION, endpoint_url=moto, max_attempts=1))
    with pytest.raises(Retryable) as failed:
        await bare.create(context("create", NETWORK))
    assert "no AWS credentials" in failed.value.message
    path = tmp_path / "aws-credentials"
    path.write_text("[ops]\naws_access_key_id = AKIAFROMFILE\naws_secret_access_key = from-the-file\n")
    with_file = await opened(ClientSettings(region=REGION, endpoint_url=moto, credentials_file=str(path), profile="ops"))
    assert (await with_file.create(context("create", NETWORK))).endpoint.startswith("aws://vpc-")
    with pytest.raises(ValueError, match=r"no profile \[default\]"):
        Ec2Controller(ClientSettings(region=REGION, credentials_file=str(path))).api.open()


async def test_one_status_call_for_many_servers_and_networks_shares_its_describe_calls(controller: Ec2Controller, moto: str) -> None:
    """The monitor's Status call, over real gRPC: its servers looked up together, not one call each."""
    from orchestration_sdk.testing import serve_in_process
    from orchestration_sdk.v1 import controller_pb2 as cpb
    from orchestration_sdk.v1.model_pb2 import State

    nets = [str(uuids.uuid4()) for _ in range(3)]
    for uuid in nets:
        await controller.create(context("create", NETWORK, uuid, element="net"))
    await controller.start(context("start", NETWORK, nets[0], element="net"))
    network = network_of((await controller.status(ref(nets[0]))).endpoint)
    servers = [str(uuids.uuid4()) for _ in range(5)]
    for uuid in servers:
        await controller.create(context("create", SERVER, uuid, providers=(network,)))
    await controller.start(context("start", SERVER, servers[0]))
    gone = str(uuids.uuid4())
    # A restarted controller: it knows nothing of these instances' kinds.
    fresh = Ec2Controller(ClientSettings(region=REGION, endpoint_url=moto))
    async with serve_in_process(fresh, "engine-credential") as served:
        before = fresh.servers.lookup.calls, fresh.networks.lookup.calls
        asked = [*servers, *nets, gone]
        answer = await served.stub.Status(cpb.StatusRequest(instances=[cpb.InstanceReference(uuid=u) for u in asked]),
                                          metadata=served.metadata)
        assert (fresh.servers.lookup.calls, fresh.networks.lookup.calls) == (before[0] + 1, before[1] + 1), \
            "one DescribeInstances for all, then one round of network Describe calls for those not servers"
    states = {s.uuid: (s.known, s.state) for s in answer.statuses}
    assert states[servers[0]] == (True, State.STATE_ACTIVE)
    assert [states[u] for u in servers[1:]] == [(True, State.STATE_INACTIVE)] * 4
    assert [states[u] for u in nets] == [(True, State.STATE_ACTIVE)] + [(True, State.STATE_INACTIVE)] * 2
    assert states[gone][0] is False


async def test_a_reconfigure_repeated_after_its_server_was_stopped_ends_with_it_running(controller: Ec2Controller,
                                                                                       moto: str) -> None:
    """A reconfigure that changes the type stops the server; the attempt after a crash there finds it stopped."""
    network = network_of(await make_network(controller))
    uuid = str(uuids.uuid4())
    await controller.create(context("create", SERVER, uuid, providers=(network,)))
    await controller.start(context("start", SERVER, uuid))
    client = ec2_client(moto)
    [instance] = tagged(client, "orch:instance", uuid)
    iid = instance["InstanceId"]

    client.stop_instances(InstanceIds=[iid])  # the first attempt stopped it, and died before it changed the type
    assert await controller.preview(context("reconfigure", {**SERVER, "instance_type": "t3.small"}, uuid)) == \
        f"ModifyInstanceAttribute {iid} InstanceType t3.micro -> t3.small\nStartInstances {iid}"
    again = await controller.reconfigure(context("reconfigure", {**SERVER, "instance_type": "t3.small"}, uuid))
    assert "StartInstances" in again.message
    assert [(i["InstanceType"], i["State"]["Name"]) for i in tagged(client, "orch:instance", uuid)] == [("t3.small", "running")]

    client.stop_instances(InstanceIds=[iid])  # ... and died after it changed the type
    client.modify_instance_attribute(InstanceId=iid, InstanceType={"Value": "t3.medium"})
    again = await controller.reconfigure(context("reconfigure", {**SERVER, "instance_type": "t3.medium"}, uuid))
    assert again.message == f"StartInstances {iid}"
    assert [(i["InstanceType"], i["State"]["Name"]) for i in tagged(client, "orch:instance", uuid)] == [("t3.medium", "running")]
    assert "nothing to change" in (await controller.configure(context("configure", {**SERVER, "instance_type": "t3.medium"},
                                                                      uuid))).message
    assert await controller.preview(context("stop", SERVER, uuid)) == f"StopInstances {iid} (running)", \
        "EC2's DryRun of StopInstances on a running instance would succeed"


async def test_a_rule_asked_for_twice_or_already_made_is_no_failure(controller: Ec2Controller, moto: str) -> None:
    uuid = str(uuids.uuid4())
    twice = {**NETWORK, "ingress": "tcp:22:10.0.0.0/8,tcp:22:10.0.0.0/8,tcp:22:10.1.2.3/8,tcp:443:0.0.0.0/0"}
    created = await controller.create(context("create", twice, uuid, element="net"))
    client = ec2_client(moto)
    group = created.endpoint.split("/")[-1]
    rules = client.describe_security_groups(GroupIds=[group])["SecurityGroups"][0]["IpPermissions"]
    assert sorted((r["FromPort"], r["IpRanges"][0]["CidrIp"]) for r in rules) == [(22, "10.0.0.0/8"), (443, "0.0.0.0/0")]

    # An Authorize (or Revoke) repeated after its answer was lost finds its work done: success, one rule at a time.
    from controllers.ec2.settings import Rule
    networks = controller.networks
    ctx = context("reconfigure", twice, uuid, element="net")
    await networks._change_rules(ctx, "AuthorizeSecurityGroupIngress", group,
                                 [Rule("tcp", 22, 22, "10.0.0.0/8"), Rule("tcp", 80, 80, "0.0.0.0/0")],
                                 "InvalidPermission.Duplicate")
    await networks._change_rules(ctx, "RevokeSecurityGroupIngress", group,
                                 [Rule("tcp", 8080, 8080, "0.0.0.0/0"), Rule("tcp", 80, 80, "0.0.0.0/0")],
                                 "InvalidPermission.NotFound")
    rules = client.describe_security_groups(GroupIds=[group])["SecurityGroups"][0]["IpPermissions"]
    assert sorted((r["FromPort"], r["IpRanges"][0]["CidrIp"]) for r in rules) == [(22, "10.0.0.0/8"), (443, "0.0.0.0/0")]
    # A CreateSubnet repeated after its answer was lost: the block is taken, by the subnet it made.
    vpc, subnet = created.endpoint.removeprefix("aws://").split("/")[:2]
    steps: list[str] = []
    found = await networks._make_subnet(ctx, vpc, "10.8.0.0/24", {"orch:instance": uuid}, steps)
    assert found["SubnetId"] == subnet and steps == [f"found {subnet} (10.8.0.0/24) in {vpc}"]
    with pytest.raises(Permanent, match="InvalidSubnet.Conflict"):  # not another instance's
        other = str(uuids.uuid4())
        await networks._make_subnet(context("create", twice, other, element="net"), vpc, "10.8.0.0/24", {"orch:instance": other}, [])


async def test_of_two_vpcs_tagged_for_a_network_the_one_with_its_parts_stays(controller: Ec2Controller, moto: str) -> None:
    client = ec2_client(moto)
    uuid = str(uuids.uuid4())
    owned = [{"ResourceType": "vpc", "Tags": [{"Key": "orch:instance", "Value": uuid}]}]
    made = [client.create_vpc(CidrBlock="10.8.0.0/16", TagSpecifications=owned)["Vpc"]["VpcId"] for _ in range(2)]
    kept = max(made)  # not the lowest id: the one with a subnet counts first
    subnet = client.create_subnet(VpcId=kept, CidrBlock="10.8.0.0/24", TagSpecifications=[
        {"ResourceType": "subnet", "Tags": [{"Key": "orch:instance", "Value": uuid}]}])["Subnet"]["SubnetId"]
    created = await controller.create(context("create", NETWORK, uuid, element="net"))
    assert created.endpoint.startswith(f"aws://{kept}/{subnet}/sg-")
    assert f"DeleteVpc {min(made)} (a second VPC tagged for this instance)" in created.message
    assert [v["VpcId"] for v in client.describe_vpcs(Filters=[{"Name": "tag:orch:instance", "Values": [uuid]}])["Vpcs"]] == [kept]
    await controller.destroy(context("destroy", NETWORK, uuid, element="net"))


class SlowProxy:
    """TCP to moto, each request of one API action held `delay` seconds on its way there (as a slow
    network): what the call does happens only after the attempt that made it may have given up."""

    def __init__(self, upstream: str, action: bytes) -> None:
        self.host, port = upstream.removeprefix("http://").split(":")
        self.upstream_port, self.delay, self.port, self.action = int(port), 0.0, 0, b"Action=" + action + b"&"
        self.server: asyncio.Server | None = None
        self.connections: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> "SlowProxy":
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self.server is not None
        self.server.close()
        for task in self.connections:
            task.cancel()
        await asyncio.gather(*self.connections, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.connections.add(task)
        up_reader, up_writer = await asyncio.open_connection(self.host, self.upstream_port)

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter, slow: bool) -> None:
            while data := await source.read(65536):
                if slow and self.delay and self.action in data:
                    await asyncio.sleep(self.delay)
                sink.write(data)
                await sink.drain()
            sink.close()

        try:
            await asyncio.gather(pipe(reader, up_writer, True), pipe(up_reader, writer, False))
        except (ConnectionError, OSError, asyncio.CancelledError):
            writer.close()
            up_writer.close()


async def test_a_retry_waits_for_the_call_its_first_attempt_left_running(moto: str, opened: Opener) -> None:
    """CreateVpc has no idempotency token: an attempt given up at its deadline while its CreateVpc is still
    on its way must not race the retry into a second VPC."""
    async with SlowProxy(moto, b"CreateVpc") as proxy:
        controller = await opened(ClientSettings(region=REGION, endpoint_url=f"http://127.0.0.1:{proxy.port}",
                                                 poll_max=0.5, max_attempts=1))
        uuid = str(uuids.uuid4())
        await controller.networks.parts(uuid)  # the client's first calls (slower) before the deadline counts
        proxy.delay = 3.0
        started = time.monotonic()
        with pytest.raises(Retryable, match="EC2 CreateVpc: no answer before the operation's deadline"):
            await controller.create(context("create", NETWORK, uuid, element="net", deadline=3.0))
        assert time.monotonic() - started < 3.0, "no call outlives the operation's deadline"
        proxy.delay = 0.0
        created = await controller.create(context("create", NETWORK, uuid, element="net"))
        vpcs = ec2_client(moto).describe_vpcs(Filters=[{"Name": "tag:orch:instance", "Values": [uuid]}])["Vpcs"]
        assert [v["VpcId"] for v in vpcs] == [created.endpoint.removeprefix("aws://").split("/")[0]], \
            "the retry found the VPC of the first attempt's CreateVpc, and made none"
        assert "CreateVpc" not in created.message
        await controller.destroy(context("destroy", NETWORK, uuid, element="net"))


async def test_preview_of_start_or_stop_during_a_change_says_it_waits(controller: Ec2Controller) -> None:
    """EC2 refuses StartInstances on a stopping instance, which start waits out first (moto's instances
    change state at once: the states are given here)."""
    from controllers.ec2.preview import _start_stop

    def of(transition: str) -> OperationContext:
        return context(transition, SERVER)

    assert await _start_stop(controller.servers, of("start"), "i-1", "stopping") == \
        "wait until i-1 is stopped (it is stopping), then StartInstances i-1"
    assert await _start_stop(controller.servers, of("stop"), "i-1", "pending") == \
        "wait until i-1 is running (it is pending), then StopInstances i-1"
    assert await _start_stop(controller.servers, of("start"), "i-1", "pending") == \
        "nothing: i-1 is pending; start waits until it is running"


async def test_open_leaves_the_event_loop_free(moto: str, opened: Opener) -> None:
    """botocore loads its service model when the client is made (about half a second): in a thread."""
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.005)
            ticks += 1

    ticker = asyncio.create_task(tick())
    started = time.monotonic()
    await opened(ClientSettings(region=REGION, endpoint_url=moto))
    took = time.monotonic() - started
    ticker.cancel()
    assert ticks >= int(took / 0.05), f"{ticks} ticks in {took:.2f} s: the loop was blocked"
