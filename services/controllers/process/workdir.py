"""The process controller's on-disk state: one directory per instance under
the controller's work dir, holding what it needs to survive its own restart.

    <work-dir>/<uuid>/instance.json   identity, host and allocated ports (written by create)
    <work-dir>/<uuid>/pid.json        the running process: pid, kernel start time, digests, probe
    <work-dir>/<uuid>/stdout.log      the process's output (appended across restarts)
    <work-dir>/<uuid>/stderr.log
    <work-dir>/<uuid>/...             the rendered `files`, and the process's working directory
    <work-dir>/domains.json           the ledger: the uid handed to each domain (see `confine.Users`)

The directory existing means the instance exists; pid.json existing means the
controller started a process and did not stop it yet (whether it still runs is
for `procs` to tell). Writes are atomic (temporary file, then rename), so a
kill in mid-write never leaves a torn record.

The work dir (mode 0755, so that the instances' users can reach their own
directories) belongs to the controller; each instance's directory (mode 0700)
belongs to the user its processes run as (`confine`), who may change
anything in it. So every access below goes through `confine`'s operations,
which follow no symlink the instance may have planted, and the records are
trusted only when the controller owns them.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import stat
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath

from controllers.process.confine import Identity, open_append, open_subdirs, opened_dir, read_regular, write_file
from controllers.process.readiness import Probe

INSTANCE_FILE = "instance.json"
PID_FILE = "pid.json"
LEDGER_FILE = "domains.json"
STDOUT_FILE = "stdout.log"
STDERR_FILE = "stderr.log"
# A record larger than this is not one of ours.
RECORD_LIMIT = 1024 * 1024

# Instance uuids come from the engine; anything else must not become a path.
_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


@dataclass(frozen=True)
class InstanceRecord:
    """What create decided for an instance (kept until destroy)."""

    uuid: str
    domain: str
    solution: str
    element: str
    cluster: str
    host: str
    ports: Mapping[str, int] = field(default_factory=dict)
    endpoint: str = ""


@dataclass(frozen=True)
class ProcessRecord:
    """The process an instance runs (the pid file).

    `starttime` is the kernel's start time of the pid (clock ticks since
    boot) and `boot` the kernel's boot id: together with the pid they name
    one process for good, so a pid reused by someone else (after the process
    ended, or after a reboot) is never adopted or signalled. The command line
    is not compared: a process may rewrite it (setproctitle), and a process
    wrongly taken for gone would be started twice.
    `launch` and `files` are digests of what the process was started with,
    so that a repeated start or reconfigure changes nothing when nothing changed.
    """

    pid: int
    starttime: int
    argv: tuple[str, ...]
    started: float
    launch: str
    files: str
    probe: Probe
    boot: str = ""


class WorkDir:
    """The instance directories under one root. The user an instance runs as
    (`owner`) is the caller's to say: it depends on the instance's domain."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def create(self) -> None:
        """The root, mode 0755 when it is created here."""
        if not self.root.is_dir():
            self.root.mkdir(parents=True, exist_ok=True)
            os.chmod(self.root, 0o755)

    def path(self, uuid: str) -> Path:
        if not _SAFE.match(uuid):
            raise ValueError(f"instance uuid {uuid!r} cannot name a directory")
        return self.root / uuid

    def uuids(self) -> list[str]:
        """Every instance that has a directory."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and _SAFE.match(p.name))

    def exists(self, uuid: str) -> bool:
        return self.path(uuid).is_dir()

    def prepare(self, uuid: str, owner: Identity) -> Path:
        """The instance's directory, created (mode 0700) and owned by `owner`;
        one another user owned (before the users changed) is handed over whole."""
        directory = self.path(uuid)
        with contextlib.suppress(FileExistsError):
            os.mkdir(directory, 0o700)
        info = os.lstat(directory)
        if not stat.S_ISDIR(info.st_mode):
            raise OSError(f"{directory} is not a directory")
        if owner.switch and (info.st_uid, info.st_gid) != (owner.uid, owner.gid):
            _hand_over(directory, owner, {info.st_uid} - {os.geteuid()})
        return directory

    def read_instance(self, uuid: str) -> InstanceRecord | None:
        data = _read_json(self.path(uuid) / INSTANCE_FILE)
        if data is None:
            return None
        try:
            return InstanceRecord(**{**data, "ports": {str(k): int(v) for k, v in data.get("ports", {}).items()}})
        except (TypeError, ValueError, AttributeError):
            return None

    def write_instance(self, record: InstanceRecord, owner: Identity) -> None:
        directory = self.prepare(record.uuid, owner)
        _write_json(directory / INSTANCE_FILE, {**asdict(record), "ports": dict(record.ports)})

    def read_process(self, uuid: str) -> ProcessRecord | None:
        data = _read_json(self.path(uuid) / PID_FILE)
        if data is None:
            return None
        try:
            return ProcessRecord(
                pid=int(data["pid"]), starttime=int(data["starttime"]), argv=tuple(data["argv"]),
                started=float(data["started"]), launch=str(data["launch"]), files=str(data["files"]),
                probe=Probe(**data["probe"]), boot=str(data.get("boot", "")),
            )
        except (KeyError, TypeError, ValueError):
            return None

    def write_process(self, uuid: str, record: ProcessRecord) -> None:
        data = asdict(record)
        data["argv"] = list(record.argv)
        _write_json(self.path(uuid) / PID_FILE, data)

    def clear_process(self, uuid: str) -> None:
        (self.path(uuid) / PID_FILE).unlink(missing_ok=True)

    def write_files(self, uuid: str, files: Mapping[str, str], owner: Identity) -> None:
        """Write rendered files whose content differs (an unchanged file keeps its mtime)."""
        owners = {owner.uid, os.geteuid()}
        with opened_dir(self.path(uuid)) as top:
            for name, content in files.items():
                *parents, leaf = PurePosixPath(name).parts
                data = content.encode()
                parent = open_subdirs(top, parents, owner)
                try:
                    if read_regular(leaf, len(data) + 1, dir_fd=parent, owners=owners) != data:
                        write_file(parent, leaf, data, owner)
                finally:
                    os.close(parent)

    def log_paths(self, uuid: str) -> tuple[Path, Path]:
        directory = self.path(uuid)
        return directory / STDOUT_FILE, directory / STDERR_FILE

    def open_logs(self, uuid: str, owner: Identity) -> tuple[int, int]:
        """Descriptors appending to the instance's stdout.log and stderr.log (the caller closes them)."""
        with opened_dir(self.prepare(uuid, owner)) as directory:
            out = open_append(directory, STDOUT_FILE, owner)
            try:
                return out, open_append(directory, STDERR_FILE, owner)
            except BaseException:
                os.close(out)
                raise

    def taken_ports(self) -> set[int]:
        """Every port some instance holds."""
        return {port for uuid in self.uuids() if (r := self.read_instance(uuid)) for port in r.ports.values()}

    def remove(self, uuid: str) -> None:
        shutil.rmtree(self.path(uuid), ignore_errors=True)


class Ledger:
    """The uid handed to each domain, kept in the work dir (`domains.json`,
    the controller's own file, mode 0600): a domain keeps its uid across
    restarts and for good, so a later domain never inherits what an earlier
    one left. Without the file (a new work dir, or one restored without it)
    it is rebuilt from the instance directories: each belongs to its
    domain's uid. A file that is there but is not the controller's, or
    cannot be read, stops the controller (ValueError): handing out uids
    again from scratch could give one domain another's."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.path = root / LEDGER_FILE
        self._uids: dict[str, int] | None = None

    def load(self, uids: range) -> dict[str, int]:
        if self._uids is None:
            if os.path.lexists(self.path):
                data = _read_json(self.path)
                if data is None or not all(isinstance(v, int) for v in data.values()):
                    raise ValueError(f"{self.path} is not a ledger of uids this controller wrote (not its own, or "
                                     "unreadable): move it away to have it rebuilt from the instance directories")
                self._uids = {str(k): int(v) for k, v in data.items()}
            else:
                self._uids = self._rebuilt(uids)
                if self.root.is_dir():
                    _write_json(self.path, self._uids, mode=0o600)
        return self._uids

    def _rebuilt(self, uids: range) -> dict[str, int]:
        """Domain -> uid as the instance directories say (their owner, when within the range)."""
        found: dict[str, int] = {}
        if not self.root.is_dir():
            return found
        for entry in self.root.iterdir():
            data = _read_json(entry / INSTANCE_FILE) if entry.is_dir() and _SAFE.match(entry.name) else None
            owner = entry.lstat().st_uid if data else -1
            if data and isinstance(data.get("domain"), str) and owner in uids:
                found.setdefault(data["domain"], owner)
        return found

    def uid(self, domain: str, uids: range, usable: Callable[[int], bool]) -> int | None:
        """`domain`'s uid: the recorded one, else the lowest of `uids` no
        domain holds and `usable` accepts, recorded before it is returned;
        None when there is none left."""
        known = self.load(uids)
        if domain in known:
            return known[domain]
        held = set(known.values())
        uid = next((u for u in uids if u not in held and usable(u)), None)
        if uid is not None:
            _write_json(self.path, {**known, domain: uid}, mode=0o600)
            known[domain] = uid
        return uid


def _hand_over(directory: Path, owner: Identity, previous: set[int]) -> None:
    """Give `directory`, and whatever in it belongs to a previous owner, to
    `owner`. The previous owner may still be running and swapping names, and
    may have hard-linked in files of others: the walk goes by descriptor and
    follows no symlink, each entry is opened without following one and
    changes hands through that descriptor, and a file with more than one
    link is left as it is (it may be someone else's)."""
    os.chown(directory, owner.uid, owner.gid, follow_symlinks=False)
    if not previous:
        return  # a directory of the controller's: nothing in it is anyone else's
    for _, dirs, files, fd in os.fwalk(directory, follow_symlinks=False):
        for name in [*dirs, *files]:
            with contextlib.suppress(OSError):
                _give(fd, name, owner, previous)


def _give(dir_fd: int, name: str, owner: Identity, previous: set[int]) -> None:
    seen = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    if seen.st_uid not in previous:
        return
    if stat.S_ISLNK(seen.st_mode):
        os.chown(name, owner.uid, owner.gid, dir_fd=dir_fd, follow_symlinks=False)  # the link itself
        return
    if not (stat.S_ISDIR(seen.st_mode) or stat.S_ISREG(seen.st_mode)):
        return  # a FIFO or a socket: nothing to hand over worth opening
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        info = os.fstat(fd)
        same = (info.st_dev, info.st_ino) == (seen.st_dev, seen.st_ino)
        if same and info.st_uid in previous and (stat.S_ISDIR(info.st_mode) or info.st_nlink == 1):
            os.fchown(fd, owner.uid, owner.gid)
    finally:
        os.close(fd)


def allocate_ports(host: str, names: Iterable[str], taken: set[int]) -> dict[str, int]:
    """A free port for each name, none of them in `taken` (ports other instances hold).

    The kernel picks the port (bind to 0); the socket closes at once, so the
    process can bind it later. Ports the controller handed out already are
    skipped, since their processes may be stopped right now.
    """
    ports: dict[str, int] = {}
    for name in names:
        for _ in range(100):
            with socket.socket() as sock:
                sock.bind((host, 0))
                port = int(sock.getsockname()[1])
            if port not in taken:
                break
        taken.add(port)
        ports[name] = port
    return ports


def _read_json(path: Path) -> dict | None:  # type: ignore[type-arg]
    """A record of the controller's: a file it owns (the instance may have replaced it)."""
    raw = read_regular(path, RECORD_LIMIT, owners={os.geteuid()})
    try:
        data = json.loads(raw.decode("utf-8")) if raw is not None else None
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _write_json(path: Path, data: object, mode: int = 0o644) -> None:
    with opened_dir(path.parent) as directory:
        write_file(directory, path.name, json.dumps(data, indent=1, sort_keys=True).encode(), mode=mode)
