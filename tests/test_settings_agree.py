"""Each service's command line is the one definition of its settings; the
two launchers (`orch up` and the Helm chart) pass only what it defines.
`orch up`'s command lines and environments are parsed by the services' own
commands (values and files included); the chart's options and ORCH_*
variables must all be ones the service reads. A setting renamed in a
service and not in a launcher fails here, not at start-up."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import click
import pytest
from click.testing import CliRunner

import cli.runtime_commands as runtime
from cli.main import cli
from cli.supervisor import ServiceSpec
from controllers.process import __main__ as process_main
from controllers.sim import __main__ as sim_main
from orchestration_sdk import controller_command
from dispatcher.__main__ import main as dispatcher_main
from gateway.__main__ import main as gateway_main
from monitor.__main__ import main as monitor_main
from test_helm import containers, render

COMMANDS: dict[str, click.Command] = {
    "gateway": gateway_main,
    "dispatcher": dispatcher_main,
    "monitor": monitor_main,
    "controllers.sim": controller_command(sim_main.build, name="sim", version="V1", options=sim_main.OPTIONS),
    "controllers.process": controller_command(process_main.build, name="process", version="V1",
                                              options=process_main.OPTIONS),
}
# Read by every service's runtime rather than by an option: traces, gRPC, Python.
GENERIC_ENV = {"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_SERVICE_NAME", "ORCH_LOG_LEVEL", "ORCH_LOG_FORMAT", "PYTHONUNBUFFERED",
               "GRPC_ENABLE_FORK_SUPPORT", "ORCH_PROCESS_RUN_AS", "ORCH_BUS_CLIENTS"}


def options_of(command: click.Command) -> tuple[set[str], set[str]]:
    """The flags and the environment variables a command reads."""
    flags: set[str] = set()
    env: set[str] = set()
    for param in command.params:
        if isinstance(param, click.Option):
            flags.update(param.opts + param.secondary_opts)
            names = [param.envvar] if isinstance(param.envvar, str) else list(param.envvar or [])
            env.update(names)
    return flags, env


def module_of(argv: list[str]) -> tuple[str, list[str]]:
    """The module a `python -m MODULE ARGS` command line runs, and its ARGS."""
    at = argv.index("-m")
    return argv[at + 1], argv[at + 2:]


@pytest.fixture(scope="module")
def launched(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[ServiceSpec]]:
    """The services `orch up` would start (recorded, not started)."""
    specs: list[ServiceSpec] = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(runtime.Supervisor, "start", lambda self, spec: specs.append(spec))
        patch.setattr(runtime.Supervisor, "run", lambda self: None)
        patch.setattr(runtime, "save_connection", lambda *args, **kwargs: None)
        home = tmp_path_factory.mktemp("launch") / "orch"
        done = CliRunner().invoke(cli, ["--home", str(home), "up", "--nats-url", "nats://u:p@127.0.0.1:1",
                                        "--concurrency", "7", "--otlp-endpoint", "http://127.0.0.1:4317"],
                                  catch_exceptions=False)
        assert done.exit_code == 0, done.output
    yield specs


def test_orch_up_starts_every_service_with_settings_it_parses(launched: list[ServiceSpec]) -> None:
    started = {module_of(spec.argv)[0] for spec in launched}
    assert started == set(COMMANDS), started
    for spec in launched:
        module, args = module_of(spec.argv)
        command = COMMANDS[module]
        _, env_names = options_of(command)
        unknown = {k for k in spec.env if k.startswith(("ORCH_", "OTEL_")) and k not in env_names | GENERIC_ENV}
        assert not unknown, f"{spec.name}: orch up sets {sorted(unknown)}, which it does not read"
        with pytest.MonkeyPatch.context() as patch:
            for key in list(os.environ):
                if key.startswith("ORCH_"):
                    patch.delenv(key)
            for key, value in spec.env.items():
                patch.setenv(key, value)
            # Parses, converts and checks every value (files exist, numbers are numbers, required ones given).
            context: Any = command.make_context(module, list(args))
        assert context.params, spec.name


# The values.yaml's own example of passing engine settings through.
EXTRA_ARGS = {"dispatcher": {"extraArgs": ["--concurrency", "500", "--operation-timeout", "60"]}}


def chart_services() -> Iterator[tuple[str, str, list[str], set[str]]]:
    """(workload, module, args, ORCH_* environment names) of every service container the chart renders."""
    for manifest in render(EXTRA_ARGS):
        if manifest["kind"] not in ("Deployment", "StatefulSet"):
            continue
        for container in containers(manifest, init=False):
            argv = [*container.get("command", []), *container.get("args", [])]
            if "-m" not in argv:
                continue
            module, args = module_of(argv)
            names = {e["name"] for e in container.get("env", []) if e["name"].startswith("ORCH_")}
            yield manifest["metadata"]["name"], module, args, names


def test_the_chart_passes_only_options_and_variables_the_services_define() -> None:
    seen = set()
    for workload, module, args, env in chart_services():
        assert module in COMMANDS, f"{workload} runs {module}, which is not a service of ours"
        seen.add(module)
        flags, env_names = options_of(COMMANDS[module])
        given = {a.split("=", 1)[0] for a in args if a.startswith("--")}
        assert given <= flags, f"{workload}: the chart passes {sorted(given - flags)}, which {module} does not define"
        assert env <= env_names | GENERIC_ENV, f"{workload}: the chart sets {sorted(env - env_names - GENERIC_ENV)}"
    assert {"gateway", "dispatcher", "monitor", "controllers.sim"} <= seen, seen
