"""The ec2 controller's reading of a cluster's parameters (pure: no EC2):
values as the engine sends them (YAML lists comma-joined, maps as JSON)."""

from __future__ import annotations

import pytest

from controllers.ec2.__main__ import OPTIONS, settings_of
from controllers.ec2.server import client_token
from controllers.ec2.settings import Rule, kind_of, network_spec, server_spec
from orchestration_sdk import Permanent

pytestmark = pytest.mark.unit


def test_a_network_reads_its_blocks_and_rules_as_the_engine_sends_them() -> None:
    spec = network_spec({"kind": "network", "cidr": "172.16.0.0/20", "ingress": "tcp:22:10.0.0.0/8,udp:53-54:0.0.0.0/0,all:0:10.1.0.0/16"})
    assert (spec.cidr, spec.subnet_cidr) == ("172.16.0.0/20", "172.16.0.0/24")
    assert spec.ingress == (Rule("tcp", 22, 22, "10.0.0.0/8"), Rule("udp", 53, 54, "0.0.0.0/0"), Rule("-1", 0, 0, "10.1.0.0/16"))
    assert network_spec({"ingress": '["tcp:443:0.0.0.0/0"]'}).ingress == (Rule("tcp", 443, 443, "0.0.0.0/0"),)
    assert network_spec({"ingress": "tcp:22:10.0.0.0/8, tcp:22:10.1.2.3/8,all:1:10.1.0.0/16,-1:0:10.1.0.0/16"}).ingress == \
        (Rule("tcp", 22, 22, "10.0.0.0/8"), Rule("-1", 0, 0, "10.1.0.0/16")), "each rule once, blocks as EC2 keeps them"
    with pytest.raises(Permanent, match="ports must be 0-65535"):
        network_spec({"ingress": "tcp:90-80:0.0.0.0/0"})


def test_a_server_reads_its_image_type_tags_and_adopt_selector() -> None:
    spec = server_spec({"image_id": "ami-0abc", "security_group_ids": "sg-1,sg-2", "tags": '{"team": "shop"}',
                        "adopt": '{"tag": {"env": "prod"}, "name": "legacy-web", '
                                 '"filters": [{"Name": "instance-type", "Values": ["t3.micro"]}]}',
                        "first_boot": "2.5"})
    assert (spec.image_id, spec.instance_type, spec.security_group_ids, spec.first_boot) == ("ami-0abc", "", ("sg-1", "sg-2"), 2.5)
    assert spec.adopt.ec2_filters() == [{"Name": "tag:env", "Values": ["prod"]}, {"Name": "tag:Name", "Values": ["legacy-web"]},
                                        {"Name": "instance-type", "Values": ["t3.micro"]}]
    assert not server_spec({"image_id": "ami-1"}).adopt, "no adopt key: nothing may be taken over"
    for bad, says in ((" ", "image_id is required"), ("ami-1\nx", "is not an AMI id")):
        with pytest.raises(Permanent, match=says):
            server_spec({"image_id": bad})
    with pytest.raises(Permanent, match="first_boot='-1' must be 0 to 3600"):
        server_spec({"image_id": "ami-1", "first_boot": "-1"})
    with pytest.raises(Permanent, match=r"adopt.filters must be \{Name"):
        server_spec({"image_id": "ami-1", "adopt": '{"filters": ["x"]}'})
    assert kind_of({"kind": " Server "}) == "server"
    with pytest.raises(Permanent, match="aws_secret_access_key in the model: AWS credentials are never part of a model") as refused:
        kind_of({"kind": "server", "aws_secret_access_key": "s3cr3t"})
    assert "s3cr3t" not in refused.value.message
    for nested in ({"tags": '{"team": "shop", "AWS_Secret_Access_Key": "s3cr3t"}'},
                   {"adopt": '{"filters": [{"Name": "x", "Values": ["y"], "password": "s3cr3t"}]}'}):
        with pytest.raises(Permanent, match=r"(tags\.AWS_Secret_Access_Key|adopt\.filters\.password) in the model") as refused:
            kind_of({"kind": "server", **nested})
        assert "s3cr3t" not in refused.value.message


def test_one_create_has_one_client_token_and_settings_come_from_options() -> None:
    assert client_token("op-1") == client_token("op-1") != client_token("op-2")
    assert len(client_token("x" * 500)) == 64
    names = {o.name: o for o in OPTIONS}
    assert {o.envvar for o in OPTIONS} >= {"ORCH_EC2_CONCURRENCY", "ORCH_EC2_CALL_TIMEOUT", "ORCH_EC2_CREDENTIALS_FILE"}
    defaults = {name: option.default for name, option in names.items()}
    settings = settings_of({**defaults, "region": "eu-north-1", "call_timeout": 2.0})
    assert (settings.region, settings.call_timeout, settings.concurrency, settings.credentials_file) == ("eu-north-1", 2.0, 8, "")
