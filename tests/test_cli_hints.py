"""Every hint an error gives is right, and every command it suggests runs:
an unknown domain is called a domain, an unknown version lists the versions
that exist, a refused ORCH_TOKEN is named as the cause, a busy solution
names the task to wait for, and no hint names an option that does not
exist. Each suggested `orch ...` command is executed."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from collections.abc import Iterator

import pytest

import models
from suite import BIN, DATA, Suite, running_suite

SUGGESTED = re.compile(r"`(orch [^`]+)`")


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Suite]:
    with running_suite(tmp_path_factory.mktemp("hints")) as running:
        running.ok("apply", "-f", str(DATA / "demo2.yaml"))
        running.apply(models.flat("slow", 2, parameters={"sim_latency_ms": 1500}))
        yield running


def refused(suite: Suite, *args: str, env: dict[str, str] | None = None) -> str:
    """The error line of a command that must fail."""
    environment = {**os.environ, "ORCH_HOME": str(suite.home), **(env or {})}
    if env is None:
        environment.pop("ORCH_TOKEN", None)
    result = subprocess.run([str(BIN / "orch"), *args], env=environment, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0, f"orch {' '.join(args)} should fail: {result.stdout}"
    return result.stderr.strip()


def run_suggestions(suite: Suite, message: str) -> list[str]:
    """Run every command the message suggests; each must exit 0."""
    commands = SUGGESTED.findall(message)
    for command in commands:
        words = shlex.split(command)
        assert words[0] == "orch"
        suite.ok(*words[1:])
    return commands


def test_an_unknown_domain_is_reported_as_a_domain(suite: Suite) -> None:
    for args in (("solution", "get", "nodomain", "x"), ("solution", "status", "nodomain", "x"),
                 ("solution", "deploy", "nodomain", "app", "V1"), ("architecture", "get", "nodomain", "app", "V1")):
        message = refused(suite, *args)
        assert "NOT_FOUND: domain 'nodomain' not found" in message, message
        assert run_suggestions(suite, message) == ["orch domain list"]


def test_an_unknown_solution_names_the_command_that_lists_them(suite: Suite) -> None:
    message = refused(suite, "solution", "get", "demo", "nosuch")
    assert "solution 'nosuch' not found in domain 'demo'" in message
    assert run_suggestions(suite, message) == ["orch solution list demo"]


def test_an_unknown_version_lists_the_versions_that_exist(suite: Suite) -> None:
    for args in (("solution", "deploy", "demo", "app", "V9.9.9"), ("solution", "plan", "demo", "app", "V9.9.9"),
                 ("architecture", "get", "demo", "app", "V9.9.9")):
        message = refused(suite, *args)
        assert "architecture 'app' version 'V9.9.9' not found in domain 'demo'; its versions: V0.0.0" in message, message
        assert run_suggestions(suite, message) == ["orch architecture list demo"]
    message = refused(suite, "solution", "deploy", "demo", "nothing", "V1")
    assert "there is no architecture 'nothing' in any version" in message


def test_a_refused_orch_token_is_named_as_the_cause(suite: Suite) -> None:
    message = refused(suite, "domain", "list", env={"ORCH_TOKEN": "not-a-token"})
    assert "UNAUTHENTICATED" in message and "ORCH_TOKEN" in message and "unset ORCH_TOKEN" in message, message
    assert run_suggestions(suite, message) == ["orch token list"]  # once ORCH_TOKEN is unset, as the hint says


def test_a_scoped_token_watching_every_domain_is_told_to_name_one_and_no_missing_option(suite: Suite) -> None:
    token = json.loads(suite.ok("token", "create", "watcher", "--role", "viewer", "--domain", "demo", "-o", "json"))["token"]
    message = refused(suite, "event", "watch", env={"ORCH_TOKEN": token})
    assert "PERMISSION_DENIED" in message and "name one of the token's domains" in message and "--domain" not in message
    result = subprocess.run([str(BIN / "orch"), "event", "watch", "--help"], capture_output=True, text=True, timeout=60)
    assert "[DOMAIN]" in result.stdout


def test_a_busy_solution_names_the_task_and_both_commands_run(suite: Suite) -> None:
    task = json.loads(suite.ok("solution", "deploy", "slow", "app", "V1", "-o", "json"))["task"]
    message = refused(suite, "solution", "deploy", "slow", "app", "V1")
    assert f"busy with task {task}" in message, message
    commands = SUGGESTED.findall(message)
    assert commands == [f"orch task get {task} --domain slow", f"orch task terminate {task} --domain slow"]
    run_suggestions(suite, message)  # the second one ends the task
    assert suite.wait_task("slow", task).status != 0


def test_solution_status_prints_json_and_yaml_and_a_size_out_of_range_is_refused(suite: Suite) -> None:
    suite.ok("solution", "deploy", "demo", "app", "V0.0.0", "--wait")
    document = json.loads(suite.ok("solution", "status", "demo", "app", "-o", "json"))
    assert document["total"]["instances"] == 23 and document["total"]["label"] == "active"
    assert {c["label"] for c in document["clusters"]} == {"active"}
    assert "label: active" in suite.ok("solution", "status", "demo", "app", "-o", "yaml")
    message = refused(suite, "solution", "plan", "demo", "app", "V0.0.0", "--size", "app/V1.0.0=99999999999")
    assert "--size" in message and "Traceback" not in message


def test_passwords_are_masked_in_every_form_of_url() -> None:
    from cli.runtime_commands import mask_password

    assert mask_password("nats://a:p1@h1:1,nats://b:p2@h2:2") == "nats://a:***@h1:1,nats://b:***@h2:2"
    assert mask_password("nats://TOKEN@h:4222") == "nats://***@h:4222"
    assert mask_password("nats://h:4222") == "nats://h:4222"
