"""`orch up` as a real process tree, driven by the `orch` CLI in other processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from suite import BIN, DATA, Suite, alive, running_suite


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Suite]:
    with running_suite(tmp_path_factory.mktemp("orch-home")) as running:
        yield running


def test_apply_and_list_demo2(suite: Suite) -> None:
    result = suite.orch("apply", "-f", str(DATA / "demo2.yaml"))
    assert result.returncode == 0, result.stderr
    assert "applied model" in result.stdout

    result = suite.orch("architecture", "list", "demo", "-o", "json")
    assert result.returncode == 0, result.stderr
    architectures = json.loads(result.stdout)
    assert [(a["Architecture"], a["Version"]) for a in architectures] == [("app", "V0.0.0")]

    result = suite.orch("component", "list", "demo")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[0].split()[:2] == ["COMPONENT", "VERSION"]
    assert sorted(line.split()[0] for line in lines[1:]) == ["application", "network", "server", "tenant"]

    result = suite.orch("component", "get", "demo", "server", "V1.0.0", "-o", "yaml")
    assert result.returncode == 0 and "Component: server" in result.stdout

    # Applying the same file again changes nothing and succeeds.
    result = suite.orch("apply", "-f", str(DATA / "demo2.yaml"))
    assert result.returncode == 0 and "0 stored" in result.stdout


def test_errors_are_one_line_and_non_zero(suite: Suite, tmp_path: Path) -> None:
    result = suite.orch("component", "get", "demo", "nothing", "V9")
    assert result.returncode == 1
    assert result.stderr.startswith("error: NOT_FOUND:") and len(result.stderr.strip().splitlines()) == 1

    bad = tmp_path / "bad.yaml"
    bad.write_text("Name: demo\nComponents: [\n")
    result = suite.orch("apply", "-f", str(bad))
    assert result.returncode == 1 and "INVALID_ARGUMENT" in result.stderr and "line" in result.stderr

    env_token = {**os.environ, "ORCH_HOME": str(suite.home), "ORCH_TOKEN": "wrong"}
    result = subprocess.run([str(BIN / "orch"), "domain", "list"], env=env_token, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "UNAUTHENTICATED" in result.stderr


def test_info_json(suite: Suite) -> None:
    result = suite.orch("info", "-o", "json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["gateway"] == suite.gateway
    assert info["nats_url"].startswith("nats://") and info["subject_prefix"] == "orch"


def test_info_masks_every_secret_unless_asked_to_show_them(suite: Suite) -> None:
    shown = json.loads(suite.ok("info", "-o", "json", "--show-secrets"))
    passwords = [url.split("://", 1)[1].split("@", 1)[0].split(":", 1)[1] for url in (shown["nats_url"], shown["bus_url"])]
    assert all(len(p) >= 16 for p in passwords)
    for output in (suite.ok("info"), suite.ok("info", "-o", "json")):
        assert not any(p in output for p in passwords), output
        assert "nats://orch:***@127.0.0.1:" in output and "nats://bus:***@127.0.0.1:" in output


def test_grpcurl_lists_services_through_reflection(suite: Suite) -> None:
    result = subprocess.run([str(BIN / "grpcurl"), "-plaintext", suite.gateway, "list"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    services = result.stdout.split()
    assert "orchestration.v1.CatalogService" in services and "grpc.health.v1.Health" in services
    token = (suite.home / "token").read_text().strip()
    result = subprocess.run(
        [str(BIN / "grpcurl"), "-plaintext", "-H", f"authorization: Bearer {token}", suite.gateway,
         "orchestration.v1.AdministrationService/ListDomains"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "demo" in result.stdout or "{" in result.stdout


def test_services_run_as_named_children_and_ctrl_c_stops_all(suite: Suite) -> None:
    services = suite.services()
    assert {"nats-server", "gateway", "dispatcher", "monitor", "sim-1"} <= set(services), services
    suite.proc.send_signal(signal.SIGINT)
    assert suite.proc.wait(timeout=30) == 0
    for name, pid in services.items():
        assert not alive(pid), f"{name} (pid {pid}) outlived orch up"
