"""The CLI loads only what a command needs (README "Performance", CLI
figures): `--help` and `orch info` import neither gRPC nor protobuf, and no
command imports NATS, YAML, OpenTelemetry or the HTTP stack of the console."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cli.home import Connection, save_connection

HEAVY = ("grpc", "google.protobuf", "nats", "yaml", "opentelemetry", "aiohttp")
PROBE = """
import json, sys
from cli.main import cli
try:
    cli(sys.argv[1:], standalone_mode=False)
except BaseException:
    pass
print("MODULES " + json.dumps(sorted({m.split('.')[0] if not m.startswith('google.protobuf') else 'google.protobuf'
                                      for m in sys.modules})))
"""


def imported(home: Path, *args: str) -> set[str]:
    done = subprocess.run([sys.executable, "-c", PROBE, "--home", str(home), *args], capture_output=True, text=True,
                          timeout=60, check=False)
    line = next(x for x in done.stdout.splitlines() if x.startswith("MODULES "))
    return {m for m in json.loads(line[len("MODULES "):]) if m in HEAVY}


@pytest.fixture
def home(tmp_path: Path) -> Path:
    save_connection(tmp_path, Connection(gateway="127.0.0.1:1", nats_url="nats://127.0.0.1:1", subject_prefix="orch",
                                         token="t"))
    return tmp_path


@pytest.mark.parametrize("args", [["--help"], ["info"], ["info", "-o", "json"], ["solution", "--help"]])
def test_help_and_info_import_no_grpc_nor_protobuf(home: Path, args: list[str]) -> None:
    assert imported(home, *args) == (set() if args[0] != "solution" else {"grpc", "google.protobuf"})


@pytest.mark.parametrize("args", [["domain", "list"], ["solution", "get", "demo", "app"], ["token", "list"]])
def test_a_gateway_command_imports_grpc_and_protobuf_only(home: Path, args: list[str]) -> None:
    assert imported(home, *args) == {"grpc", "google.protobuf"}


def test_the_modules_of_a_command_are_compiled_ahead() -> None:
    """`make setup` compiles the project's modules: an editable install gets
    no bytecode from pip, and with PYTHONDONTWRITEBYTECODE every `orch`
    command would otherwise compile its sources again (60 ms of a read)."""
    import importlib.util

    import cli.engine_commands
    import orchestration.v1.gateway_pb2_grpc

    for module in (cli.engine_commands, orchestration.v1.gateway_pb2_grpc):
        assert module.__file__ is not None
        assert Path(importlib.util.cache_from_source(module.__file__)).exists(), f"{module.__name__} has no bytecode"


def test_every_command_resolves_to_one_with_its_subcommands() -> None:
    """Each command loads only its own modules (cli.main._MODULES): every one
    listed in `orch --help` is found, and solution and task carry the
    engine's subcommands, event the watch."""
    import click

    from cli.main import COMMANDS, _command

    for name in COMMANDS:
        assert _command(name) is not None, name
    for group, subcommand in (("solution", "deploy"), ("task", "terminate"), ("event", "watch"), ("events", "watch")):
        command = _command(group)
        assert isinstance(command, click.Group) and subcommand in command.commands, (group, subcommand)
