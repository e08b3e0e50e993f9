"""The ansible controller's pure rules: reading a component's configuration,
the extra variables of a run, and a run's events summed up as per-task lines
and a failure message. No Ansible runs here (see test_ansible_controller.py)."""

from __future__ import annotations

import logging
import time

import pytest

from controllers.ansible.config import ConfigError, default_inventory, host_count, parse_config
from controllers.ansible.events import failure_text, summarize, unreachable_text
from controllers.ansible.state import Done, InstanceRecord, StateStore, digest
from controllers.ansible.variables import extra_vars, status_vars
from orchestration_sdk import OperationContext
from orchestration_sdk.context import Provider

pytestmark = pytest.mark.unit


def test_a_configuration_names_playbooks_vars_and_an_inventory() -> None:
    config = parse_config("""
playbooks: {create: install.yml, start: sub/start.yml, adopt: adopt.yml}
vars: {port: "8080", web_dir: /tmp/x}
inventory: {web: {hosts: {a: {ansible_host: 10.0.0.5}, b: {}}, children: {db: {hosts: {c: {}}}}}}
endpoint: http://a:8080/
""")
    assert config.playbook("create") == "install.yml" and config.playbook("start") == "sub/start.yml"
    assert config.playbook("configure") == ""  # an operation without a playbook does nothing
    assert config.vars == {"port": "8080", "web_dir": "/tmp/x"}
    assert host_count(config.inventory) == 3 and config.endpoint == "http://a:8080/"


def test_the_default_inventory_is_localhost_over_the_local_connection() -> None:
    config = parse_config("playbooks: {start: start.yml}")
    assert config.inventory == default_inventory()
    assert config.inventory["all"]["hosts"]["localhost"]["ansible_connection"] == "local"


@pytest.mark.parametrize(("text", "says"), [
    ("", "Configuration is empty"),
    ("just text", "must be a YAML mapping"),
    ("playbooks: [a.yml]", "'playbooks' must map operations"),
    ("playbooks: {deploy: a.yml}", "'deploy', which is not one of create"),
    ("playbooks: {create: /etc/site.yml}", "relative to the controller's playbook directory"),
    ("playbooks: {create: ../../site.yml}", "without '..'"),
    ("playbook: {create: a.yml}", "unknown configuration key(s) playbook"),
    ("vars: [1, 2]", "'vars' must be a mapping"),
    ("inventory: {}", "'inventory' must be a YAML inventory"),
    ("inventory: {all: {vars: {x: 1}}}", "names no host"),
    ("inventory: {all: {hosts: {a: {ansible_become_password: hunter2}}}}", "secrets never go in the model"),
    ("vars: {db: {ansible_password: x}}", "vars sets ansible_password"),
    ("playbooks: {create: a.yml\n", "not YAML"),
])
def test_a_bad_configuration_says_what_to_fix(text: str, says: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(text)
    assert says in str(caught.value)


def _ctx(**changes: object) -> OperationContext:
    fields: dict[str, object] = dict(
        domain="d", solution="s", element="web", cluster="V1.0.0", uuid="u-1", component="web",
        component_version="V1.0.0", operation_id="op-1", transition="start", attempt=2, deadline=time.time() + 60,
        configuration="", parameters={"port": "8080"},
        providers=(Provider("db", "service", "db", "V1", ("pg://a:5432", "pg://b:5432"), ""),),
        siblings=("http://other:8080/",), logger=logging.LoggerAdapter(logging.getLogger("t")), adopt=False)
    fields.update(changes)
    return OperationContext(**fields)  # type: ignore[arg-type]


def test_extra_vars_carry_the_instance_its_parameters_endpoint_and_providers() -> None:
    variables = extra_vars(_ctx(), {"web_dir": "/tmp/w", "orch_endpoint": "mine"}, "http://me/", "start")
    assert variables["web_dir"] == "/tmp/w"
    assert variables["orch_instance"] == {
        "uuid": "u-1", "domain": "d", "solution": "s", "element": "web", "cluster": "V1.0.0", "component": "web",
        "component_version": "V1.0.0", "operation": "start", "operation_id": "op-1", "attempt": 2, "adopt": False}
    assert variables["orch_parameters"] == {"port": "8080"}
    assert variables["orch_endpoint"] == "http://me/"  # the engine's names win over vars of the same name
    assert variables["orch_providers"] == {"db": {"type": "service", "element": "db", "cluster": "V1",
                                                  "endpoints": ["pg://a:5432", "pg://b:5432"]}}
    assert variables["orch_siblings"] == ["http://other:8080/"]
    # A status run has what the record kept, under the same names.
    status = status_vars("u-1", {"domain": "d", "element": "web"}, {"port": "8080"}, "http://me/", {"orch_endpoint": "x"})
    assert status == {"orch_instance": {"uuid": "u-1", "domain": "d", "element": "web", "operation": "status"},
                      "orch_parameters": {"port": "8080"}, "orch_endpoint": "http://me/", "orch_providers": {},
                      "orch_siblings": []}


def _event(kind: str, task: str = "", host: str = "localhost", **data: object) -> dict[str, object]:
    return {"event": kind, "event_data": {"task": task, "host": host, **data}}


def test_events_become_one_line_per_task_and_the_reported_stats() -> None:
    summary = summarize([
        {"event": "playbook_on_start", "event_data": {}},
        _event("runner_on_start", "install"),
        _event("runner_on_ok", "install", res={"changed": True}),
        _event("runner_on_ok", "check", res={"changed": False}),
        _event("runner_on_skipped", "optional"),
        _event("runner_on_failed", "probe", res={"msg": "no"}, ignore_errors=True),
        {"event": "playbook_on_stats", "event_data": {"artifact_data": {"orch_endpoint": "http://x/"}}},
    ])
    assert summary.text() == ("changed: install on localhost\nok: check on localhost\nok: probe on localhost")
    assert summary.stats == {"orch_endpoint": "http://x/"} and summary.changed and not summary.failed


def test_a_failed_task_is_named_with_its_host_and_message() -> None:
    summary = summarize([
        _event("runner_on_ok", "install", res={"changed": True}),
        _event("runner_on_failed", "check the port", "web1", res={"msg": "port  99999\n is not a TCP port"}),
        _event("runner_on_failed", "other", "web2", res={"stderr": "boom"}),
    ])
    assert [line.status for line in summary.lines] == ["changed", "failed", "failed"]
    assert failure_text(summary, "install.yml") == (
        "install.yml: task 'check the port' failed on web1: port 99999 is not a TCP port (and 1 more failed task(s))")


def test_an_unreachable_host_is_named() -> None:
    summary = summarize([_event("runner_on_unreachable", "Gathering Facts", "web1",
                                res={"msg": "Failed to connect to the host via ssh"})])
    assert summary.unreachable and not summary.failed
    assert unreachable_text(summary, "site.yml") == "site.yml: host(s) web1 unreachable: Failed to connect to the host via ssh"


def test_a_long_failure_message_is_cut() -> None:
    summary = summarize([_event("runner_on_failed", "t", res={"msg": "x" * 5000})])
    assert len(summary.failed[0].msg) < 600


def test_the_record_keeps_the_last_operations_by_id(tmp_path) -> None:  # type: ignore[no-untyped-def]
    store = StateStore(tmp_path)
    store.prepare()
    record = InstanceRecord("u-1", state="active", endpoint="http://x/")
    asked = digest("start", "playbooks: {start: start.yml}", {"port": "80"}, False)
    for n in range(30):
        record.record(Done(f"op-{n}", "start", "start.yml", "ok" if n % 2 else "failed", asked=asked))
    record.record(Done("op-old", "start", "start.yml", "ok"))  # written by an older version: no digest
    store.save(record)
    again = store.load("u-1")
    assert again is not None and len(again.done) == 20 and again.state == "active"
    assert again.finished("op-29", asked) is not None and again.finished("op-28", asked) is None  # failed: runs again
    # The same id asking something else (parameters, configuration, transition, adopt) runs again.
    for other in (digest("start", "playbooks: {start: start.yml}", {"port": "81"}, False),
                  digest("start", "playbooks: {start: other.yml}", {"port": "80"}, False),
                  digest("stop", "playbooks: {start: start.yml}", {"port": "80"}, False),
                  digest("start", "playbooks: {start: start.yml}", {"port": "80"}, True)):
        assert again.finished("op-29", other) is None
    assert again.finished("op-old", "") is None and again.finished("op-old", asked) is None
    assert store.load("u-2") is None
    with pytest.raises(ValueError):
        store.path("../escape")


def test_the_settings_come_from_options_or_their_environment_variables(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import click

    from controllers.ansible.__main__ import OPTIONS, build

    password = tmp_path / "vault-password"
    password.write_text("x\n")
    monkeypatch.setenv("ORCH_ANSIBLE_CONCURRENCY", "7")
    monkeypatch.setenv("ORCH_ANSIBLE_VAULT_PASSWORD_FILE", str(password))
    command = click.Command("ansible", params=OPTIONS, callback=lambda **options: options)
    options = command.main(["--playbook-dir", str(tmp_path), "--state-dir", str(tmp_path / "state"), "--timeout", "12"],
                           standalone_mode=False)
    controller = build(options)
    settings = controller.runner.settings
    assert settings.timeout == 12.0 and settings.vault_password_file == str(password)
    assert settings.state_dir == tmp_path / "state" and not settings.become_password_file
    assert controller.runner._slots._value == 7  # at most 7 playbook runs at once
    env = controller.runner.environment()
    assert env["ANSIBLE_VAULT_PASSWORD_FILE"] == str(password) and env["ANSIBLE_HOME"].startswith(str(tmp_path))
    with pytest.raises(click.BadParameter):
        command.main(["--playbook-dir", str(tmp_path), "--concurrency", "0"], standalone_mode=False)
