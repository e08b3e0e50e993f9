"""The process controller's per-cluster settings, read from the cluster's
parameters (the architecture, element and cluster Configuration maps, values
as strings: YAML lists arrive comma-joined, maps as JSON). Pure: no I/O.

| key | default | meaning |
|---|---|---|
| `command` | (required) | program and leading arguments, split like a shell would (no shell runs) |
| `args` | none | more arguments: a JSON list (`'["-c", "a b"]'`) or a YAML list without commas in items |
| `env` | none | extra environment, a map of name -> template |
| `files` | none | files to render into the work dir, a map of relative path -> template |
| `host` | 127.0.0.1 | the address the process listens on and reports (`{{host}}`) |
| `port` | none | `auto` (a free port, kept for the instance's life) or a fixed number (`{{port}}`) |
| `ports` | none | more named ports, each allocated like `port: auto` (`{{ports.NAME}}`) |
| `endpoint` | `{{host}}:{{port}}` | the endpoint reported to the engine (else the first of `ports`, else `process://{{host}}/{{uuid}}`) |
| `ready_tcp` | none | ready when host:port accepts a connection |
| `ready_http` | none | ready when a GET of the URL answers 2xx or 3xx |
| `ready_command` | none | ready when the command exits 0 (run in the work dir, 5 s limit) |
| `ready_timeout` | 30 | seconds from spawn until the process must be ready |
| `stop_grace` | 5 | seconds between SIGTERM and SIGKILL |
| `reconfigure` | restart | `restart`, `signal:NAME` (e.g. `signal:HUP`) or `none`: how a changed file reaches a running process |

`command`, `args`, `env`, `files`, `endpoint` and the `ready_*` probes are
templates (`template.py`); the other values are taken as they are.
Without a readiness key the process is ready once it has stayed up for one
second, which still catches a command that exits at once.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from orchestration_sdk import Permanent

# Files the controller keeps in every instance's work dir; `files` may not overwrite them.
RESERVED_FILES = frozenset({"instance.json", "pid.json", "stdout.log", "stderr.log"})

@dataclass(frozen=True)
class Reconfigure:
    """How a running process takes changed files: restart, a signal, or nothing."""

    mode: str = "restart"  # "restart" | "signal" | "none"
    signal: int = 0


@dataclass(frozen=True)
class ProcessSettings:
    """What to run for one cluster's instances (templates still unrendered)."""

    command: str
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    files: Mapping[str, str] = field(default_factory=dict)
    host: str = "127.0.0.1"
    port: str = ""  # "" (none), "auto", or a number
    ports: tuple[str, ...] = ()
    endpoint: str = ""
    ready_tcp: str = ""
    ready_http: str = ""
    ready_command: str = ""
    ready_timeout: float = 30.0
    stop_grace: float = 5.0
    reconfigure: Reconfigure = Reconfigure()

    @classmethod
    def parse(cls, parameters: Mapping[str, str]) -> ProcessSettings:
        """Settings from cluster parameters; anything malformed fails permanently, naming the key."""
        command = parameters.get("command", "").strip()
        if not command:
            raise Permanent("process: parameter 'command' is required (the program to run), in the architecture's, "
                            "element's or cluster's Configuration, which must be a YAML map")
        port = parameters.get("port", "").strip().lower()
        if port not in ("", "auto") and not _is_port(port):
            raise Permanent(f"process: parameter port={port!r} must be 'auto' or a port number")
        ports = tuple(p.strip() for p in parameters.get("ports", "").split(",") if p.strip())
        for name in ports:
            if not name.replace("_", "").replace("-", "").isalnum():
                raise Permanent(f"process: port name {name!r} in 'ports' may hold only letters, digits, _ and -")
        return cls(
            command=command,
            args=_args(parameters.get("args", "")),
            env=_string_map(parameters, "env"),
            files=_files(parameters),
            host=parameters.get("host", "").strip() or "127.0.0.1",
            port=port,
            ports=ports,
            endpoint=parameters.get("endpoint", "").strip() or _default_endpoint(port, ports),
            ready_tcp=parameters.get("ready_tcp", "").strip(),
            ready_http=parameters.get("ready_http", "").strip(),
            ready_command=parameters.get("ready_command", "").strip(),
            ready_timeout=_seconds(parameters, "ready_timeout", 30.0),
            stop_grace=_seconds(parameters, "stop_grace", 5.0),
            reconfigure=_reconfigure(parameters.get("reconfigure", "")),
        )


def _is_port(text: str) -> bool:
    return text.isdigit() and 0 < int(text) < 65536


def _default_endpoint(port: str, ports: tuple[str, ...]) -> str:
    if port:
        return "{{host}}:{{port}}"
    if ports:
        return "{{host}}:{{ports." + ports[0] + "}}"
    return "process://{{host}}/{{uuid}}"


def _args(raw: str) -> tuple[str, ...]:
    raw = raw.strip()
    if not raw:
        return ()
    if raw.startswith("["):
        try:
            value = json.loads(raw)
        except ValueError as err:
            raise Permanent("process: parameter 'args' is not a JSON list") from err
        if not isinstance(value, list) or not all(isinstance(v, (str, int, float)) for v in value):
            raise Permanent("process: parameter 'args' must be a JSON list of strings")
        return tuple(str(v) for v in value)
    # A YAML list reaches us comma-joined.
    return tuple(part.strip() for part in raw.split(","))


def _string_map(parameters: Mapping[str, str], key: str) -> dict[str, str]:
    raw = parameters.get(key, "").strip()
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except ValueError as err:
        raise Permanent(f"process: parameter '{key}' must be a map (YAML) or a JSON object") from err
    if not isinstance(value, dict):
        raise Permanent(f"process: parameter '{key}' must be a map, not {type(value).__name__}")
    return {str(k): "" if v is None else str(v) for k, v in value.items()}


def _files(parameters: Mapping[str, str]) -> dict[str, str]:
    files = _string_map(parameters, "files")
    for name in files:
        path = PurePosixPath(name)
        if path.is_absolute() or ".." in path.parts or not path.parts:
            raise Permanent(f"process: file {name!r} in 'files' must be a relative path inside the work dir")
        if str(path) in RESERVED_FILES:
            raise Permanent(f"process: file {name!r} in 'files' is kept by the controller ({', '.join(sorted(RESERVED_FILES))})")
    return files


def _seconds(parameters: Mapping[str, str], key: str, default: float) -> float:
    raw = parameters.get(key, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError as err:
        raise Permanent(f"process: parameter {key}={raw!r} is not a number of seconds") from err
    if value < 0:
        raise Permanent(f"process: parameter {key}={raw!r} must not be negative")
    return value


def _reconfigure(raw: str) -> Reconfigure:
    text = raw.strip()
    if text.lower() in ("", "restart"):
        return Reconfigure("restart")
    if text.lower() == "none":
        return Reconfigure("none")
    if text.lower().startswith("signal:"):
        name = text.split(":", 1)[1].strip().upper()
        name = name if name.startswith("SIG") else f"SIG{name}"
        number = signal.Signals.__members__.get(name)
        if number is None:
            raise Permanent(f"process: reconfigure={raw!r} names no signal (e.g. signal:HUP)")
        return Reconfigure("signal", int(number))
    raise Permanent(f"process: reconfigure={raw!r} must be restart, signal:NAME or none")
