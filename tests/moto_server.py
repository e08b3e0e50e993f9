"""A real moto server (moto[server], the `ec2` extra) on a free port, and a
boto3 client of it, for the ec2 controller's tests. Credentials are dummies:
moto accepts any."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3

from cli.embedded_nats import free_port, wait_for_port
from suite import BIN

REGION = "eu-west-1"
# What the controller and the tests use; the secret is looked for in every output by test_ec2_suite.
DUMMY_KEY_ID = "AKIAORCHTESTDUMMY0001"
DUMMY_SECRET = "orch-test-secret-5f1c0d7e9a2b4c6d8e0f1a3b5c7d9e1f"


def aws_env(secret: str = DUMMY_SECRET) -> dict[str, str]:
    """The environment a controller gets: dummy credentials and the region."""
    return {"AWS_ACCESS_KEY_ID": DUMMY_KEY_ID, "AWS_SECRET_ACCESS_KEY": secret, "AWS_DEFAULT_REGION": REGION}


@contextmanager
def running_moto(log: Path) -> Iterator[str]:
    """`moto_server` on 127.0.0.1 and a free port; its URL. Always stopped."""
    port = free_port()
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)], stdout=out,
                                stderr=subprocess.STDOUT)
    try:
        wait_for_port("127.0.0.1", port, timeout=30, proc=proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def ec2_client(url: str) -> Any:
    """A boto3 EC2 client of the moto server, as the tests' own hands."""
    return boto3.client("ec2", endpoint_url=url, region_name=REGION, aws_access_key_id=DUMMY_KEY_ID,
                        aws_secret_access_key="the-tests-own-dummy")


def tagged(client: Any, key: str, value: str, states: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """The instances that carry a tag (in any state unless states are given)."""
    filters = [{"Name": f"tag:{key}", "Values": [value]}]
    if states:
        filters.append({"Name": "instance-state-name", "Values": list(states)})
    reservations = client.describe_instances(Filters=filters)["Reservations"]
    return [i for r in reservations for i in r["Instances"]]


def tags_of(resource: dict[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in resource.get("Tags") or []}
