"""The files `orch up` leaves under $ORCH_HOME so that every other `orch`
command (and every service) finds the suite without flags."""

from __future__ import annotations

import json
import os
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path

DEFAULT_HOME = ".orch"
CONNECTION_FILE = "connection.json"


def orch_home(explicit: str | None = None) -> Path:
    """$ORCH_HOME (or the given path), default ./.orch."""
    return Path(explicit or os.environ.get("ORCH_HOME") or DEFAULT_HOME).absolute()


@dataclass(frozen=True)
class Connection:
    """Where the running suite listens, and how to authenticate to it."""

    gateway: str
    nats_url: str
    subject_prefix: str
    token: str
    dispatcher: str = ""
    # URL of the web console ("" when there is none).
    console: str = ""
    # NATS URL with the credentials of external bus clients (requests, events, status only).
    bus_url: str = ""
    # The named bus clients' NATS URLs (ORCH_BUS_CLIENTS), by name.
    bus_clients: dict[str, str] = field(default_factory=dict)
    # CA that signed the gateway's certificate, when the suite runs with TLS.
    tls_ca: str = ""
    # Addresses of the sim controller replicas (SimulatorService), for `orch sim`.
    sims: list[str] = field(default_factory=list)
    # host:port of each service's Prometheus /metrics endpoint, by service name.
    metrics: dict[str, str] = field(default_factory=dict)


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read (it holds secrets)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    tmp.replace(path)


def save_connection(home: Path, connection: Connection) -> None:
    write_private(home / CONNECTION_FILE, json.dumps(asdict(connection), indent=2) + "\n")


def load_connection(home: Path) -> Connection | None:
    """The connection `orch up` saved, or None when there is none."""
    path = home / CONNECTION_FILE
    if not path.exists():
        return None
    data = json.loads(path.read_text())
    # A field missing from an older file gets its default (required ones: empty).
    values = {}
    for f in fields(Connection):
        if f.name in data:
            values[f.name] = data[f.name]
        elif f.default_factory is not MISSING:
            values[f.name] = f.default_factory()
        else:
            values[f.name] = "" if f.default is MISSING else f.default
    return Connection(**values)


def load_or_create_secret(path: Path) -> str:
    """A secret kept in a file: generated on first use, then read back."""
    if path.exists():
        return path.read_text().strip()
    import secrets  # here: only `orch up` makes secrets, and its import costs every command 8 ms

    secret = secrets.token_urlsafe(32)
    write_private(path, secret + "\n")
    return secret


def load_or_create_token(home: Path) -> str:
    """The API token of the gateway."""
    return load_or_create_secret(home / "token")
