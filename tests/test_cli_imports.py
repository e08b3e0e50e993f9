"""The CLI loads only what a command needs (bench/README.md "From the shell and in the browser", CLI
figures): `--help` and `orch info` import neither gRPC nor protobuf, and no
command imports NATS, YAML, OpenTelemetry or the HTTP stack of the console."""

from __future__ import annotations

import json
import os
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


@pytest.mark.skipif(not os.environ.get("PYTHONDONTWRITEBYTECODE"),
                    reason="without PYTHONDONTWRITEBYTECODE, importing writes the bytecode this test looks for")
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


COMMAND_MODULES = ("cli.model_commands", "cli.engine_commands", "cli.watch_commands", "cli.sim_commands",
                   "cli.access_commands")
RESOLVE = """
import json, sys
import click
from cli.main import _command
command = _command(sys.argv[1])
subcommands = sorted(command.commands) if isinstance(command, click.Group) else []
print("FOUND " + json.dumps({"found": command is not None, "subcommands": subcommands,
                             "modules": sorted(m for m in sys.modules if m in %r)}))
""" % (COMMAND_MODULES,)


def resolved(name: str) -> dict[str, object]:
    """What a fresh process finds for a top-level command, and the command modules it loaded for it."""
    done = subprocess.run([sys.executable, "-c", RESOLVE, name], capture_output=True, text=True, timeout=60, check=True)
    found: dict[str, object] = json.loads(next(x for x in done.stdout.splitlines() if x.startswith("FOUND "))[6:])
    return found


@pytest.mark.parametrize("name, modules, subcommand", [
    ("domain", ["cli.model_commands"], "list"),
    ("apply", ["cli.model_commands"], None),
    ("solution", ["cli.engine_commands", "cli.model_commands"], "deploy"),
    ("task", ["cli.engine_commands", "cli.model_commands"], "terminate"),
    ("cluster", ["cli.engine_commands", "cli.model_commands"], None),
    ("event", ["cli.model_commands", "cli.watch_commands"], "watch"),
    ("events", ["cli.model_commands", "cli.watch_commands"], "watch"),
    ("status", ["cli.model_commands", "cli.watch_commands"], "watch"),
    ("sim", ["cli.sim_commands"], None),
    ("token", ["cli.access_commands"], "create"),
])
def test_a_command_loads_only_the_command_modules_it_is_made_from(name: str, modules: list[str],
                                                                   subcommand: str | None) -> None:
    found = resolved(name)
    assert found["found"] and found["modules"] == modules, found
    if subcommand is not None:
        assert subcommand in found["subcommands"], found  # registered by its module, in a process of its own


def test_every_listed_command_is_found() -> None:
    from cli.main import COMMANDS, _command

    for name in COMMANDS:
        assert _command(name) is not None, name
