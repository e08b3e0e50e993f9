"""Confinement of instances: the user their processes run as, and file
operations on their work dirs that an instance cannot turn against the
controller.

When the controller runs as root, every instance process (its command and
its `ready_command`) runs as an unprivileged user with no supplementary
groups: by default each domain's own uid (and gid of the same number), taken
from a range (`--uids`, env ORCH_PROCESS_UIDS, default 1900000000-1900065535)
when the domain's first instance is created and kept in the work dir's
ledger, so that an instance of one domain can neither signal the processes
of another nor read its files. `--run-as USER` (env ORCH_PROCESS_RUN_AS)
runs every domain as that one user instead; empty: the controller's own.
An instance's work dir is owned by its user, so it can write there; it
starts with a minimal environment (see `spec.environment`), not the
controller's. Files readable by that user, and nothing else, are within its
reach: not $ORCH_HOME (mode 0700, files 0600), which is why work dirs live
beside it and not in it.

When the controller does not run as root, instances run as the controller's
own user, and less holds: the work dir is still outside $ORCH_HOME and the
environment is still scrubbed (the controller's variables, NATS URL and
credentials included, are not passed on), but every file that user can
read - $ORCH_HOME's secrets, the controller's credential file - stays
readable by the instance, and so does the controller's /proc/<pid>/environ.
Run the controller as root (with the default `nobody`) or as a user that
holds no secrets to contain instances.

An instance owns its work dir, so it can replace any name in it by a
symlink, a FIFO or a hard link. The controller, which may be root,
therefore never follows a name in a work dir: it opens the last component
with O_NOFOLLOW and takes only regular files with a single link, walks
subdirectories by descriptor, writes by creating a fresh file and renaming
it over the name, and trusts its records (pid.json, instance.json) only when
it owns them. The files it creates for the instance (logs, rendered files
and their directories) belong to the instance's user, so the only files the
controller owns in a work dir are its records.
"""

from __future__ import annotations

import errno
import fcntl
import grp
import os
import pwd
import re
import secrets
import stat
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestration_sdk import Permanent

PER_DOMAIN = "per-domain"
DEFAULT_RUN_AS = PER_DOMAIN
RUN_AS_ENV = "ORCH_PROCESS_RUN_AS"
UIDS_ENV = "ORCH_PROCESS_UIDS"
DEFAULT_UIDS = "1900000000-1900065535"

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_APPEND = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True)
class Identity:
    """The user instance processes run as; `switch`: the controller (root)
    switches to it when it starts one, and hands it what it creates for them."""

    name: str
    uid: int
    gid: int
    switch: bool = False

    def popen_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of subprocess.Popen that start a process as this user."""
        return {"user": self.uid, "group": self.gid, "extra_groups": []} if self.switch else {}

    def give(self, fd: int) -> None:
        """Hand a file or directory the controller created to this user."""
        if self.switch:
            os.fchown(fd, self.uid, self.gid)


class Users:
    """Who each domain's instances run as. `ledger` keeps the uid handed to
    each domain (see `workdir.Ledger`): a mapping that outlives the
    controller, written before the uid is first used."""

    def __init__(self, run_as: str, uids: range, ledger: Any) -> None:
        self.per_domain = os.geteuid() == 0 and run_as.strip() == PER_DOMAIN
        self.shared = None if self.per_domain else identity("" if run_as.strip() == PER_DOMAIN else run_as)
        self.uids = uids
        self.ledger = ledger

    def describe(self) -> str:
        if self.shared is not None:
            return f"{self.shared.name} (uid {self.shared.uid}, gid {self.shared.gid})"
        return f"a uid of their domain's own, from {self.uids.start}-{self.uids.stop - 1}"

    def of(self, domain: str) -> Identity:
        """The user `domain`'s instances run as. Permanent when the range is used up."""
        if self.shared is not None:
            return self.shared
        uid = self.ledger.uid(domain, self.uids, _unused)
        if uid is None:
            raise Permanent(f"process: no uid left for domain {domain!r}: every uid of {self.uids.start}-"
                            f"{self.uids.stop - 1} ({UIDS_ENV}) belongs to another domain or to a user of this host")
        return Identity(str(uid), uid, uid, switch=True)


def uid_range(text: str) -> range:
    """FIRST-LAST, unprivileged uids; ValueError says what is wrong."""
    found = re.fullmatch(r"\s*(\d+)\s*-\s*(\d+)\s*", text)
    if found is None:
        raise ValueError(f"uid range {text!r} is not FIRST-LAST (for example {DEFAULT_UIDS})")
    first, last = int(found[1]), int(found[2])
    if first < 1000 or last < first or last > 2**31 - 2:
        raise ValueError(f"uid range {text!r}: need 1000 <= FIRST <= LAST < 2147483647")
    return range(first, last + 1)


def _unused(uid: int) -> bool:
    """Neither a user nor a group of this host has the number."""
    try:
        pwd.getpwuid(uid)
        return False
    except KeyError:
        pass
    try:
        grp.getgrgid(uid)
        return False
    except KeyError:
        return True


def identity(run_as: str) -> Identity:
    """Who instances run as: `run_as` (a user name or uid) when the
    controller's effective uid is 0 and `run_as` is not empty, else the
    controller's own user. ValueError names a user that does not exist."""
    euid = os.geteuid()
    if euid != 0 or not run_as.strip():
        return Identity(_user_name(euid), euid, os.getegid())
    text = run_as.strip()
    try:
        entry = pwd.getpwuid(int(text)) if text.isdigit() else pwd.getpwnam(text)
    except KeyError:
        raise ValueError(f"run-as user {text!r} does not exist (set --run-as, or ORCH_PROCESS_RUN_AS, "
                         "to an existing user, or to '' for the controller's own user)") from None
    return Identity(entry.pw_name, entry.pw_uid, entry.pw_gid, switch=entry.pw_uid != 0)


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def reachable(path: Path, who: Identity) -> bool:
    """Whether `who` (with no supplementary groups) may search every directory
    from / down to `path`, by the mode bits (ACLs aside)."""
    for directory in [path, *path.parents]:
        info = _stat_or_none(directory)
        if info is None:
            return False
        if who.uid != 0 and not info.st_mode & _exec_bit(info, who):
            return False
    return True


def runnable(program: str, who: Identity) -> None:
    """Raise Permanent, saying why, unless `who` can run `program` (an
    absolute path): every directory down to it searchable, the file itself
    executable. A Python of the controller's own (`command: python`) often
    lives under a home directory the instance's user cannot enter."""
    if not who.switch:
        return  # instances run as the controller's own user
    real = Path(os.path.realpath(program))
    blocked = next((d for d in reversed([real.parent, *real.parent.parents]) if not reachable(d, who)), None)
    info = None if blocked else _stat_or_none(real)
    if blocked is None and info is not None and info.st_mode & _exec_bit(info, who):
        return
    why = f"{blocked} is not searchable by it" if blocked else ("it does not exist" if info is None else "it is not executable by it")
    raise Permanent(f"process: {program} ({real}) cannot be run by user {who.name}: {why}. Use a program every user "
                    f"can run (for Python, a system interpreter such as /usr/bin/python3), or run instances as another "
                    f"user ({RUN_AS_ENV})")


def _stat_or_none(path: Path) -> os.stat_result | None:
    try:
        return os.stat(path)
    except OSError:
        return None


def _exec_bit(info: os.stat_result, who: Identity) -> int:
    if info.st_uid == who.uid:
        return stat.S_IXUSR
    return stat.S_IXGRP if info.st_gid == who.gid else stat.S_IXOTH


@contextmanager
def opened_dir(path: Path | str, dir_fd: int | None = None) -> Iterator[int]:
    """A descriptor of the directory `path` (not a symlink to one)."""
    fd = os.open(path, _DIR, dir_fd=dir_fd)
    try:
        yield fd
    finally:
        os.close(fd)


def read_regular(path: Path | str, limit: int, *, dir_fd: int | None = None, owners: Collection[int] | None = None,
                 tail: bool = False) -> bytes | None:
    """The first (or, with `tail`, the last) `limit` bytes of a regular file
    with one link, owned by one of `owners` if given; None for anything else
    (missing, a symlink, a FIFO, a device, a hard link)."""
    try:
        fd = os.open(path, _READ, dir_fd=dir_fd)
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1 or (owners is not None and info.st_uid not in owners):
            return None
        if tail and info.st_size > limit:
            os.lseek(fd, info.st_size - limit, os.SEEK_SET)
        chunks, size = [], 0
        while size < limit and (chunk := os.read(fd, limit - size)):
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks)
    except OSError:
        return None
    finally:
        os.close(fd)


def write_file(dir_fd: int, name: str, data: bytes, owner: Identity | None = None, mode: int = 0o644) -> None:
    """Replace `name` in the directory atomically: a new file (given to `owner`), renamed over it."""
    tmp = f".{name}.{secrets.token_hex(6)}.tmp"
    fd = os.open(tmp, _CREATE, mode, dir_fd=dir_fd)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            if owner is not None:
                owner.give(fd)
        finally:
            os.close(fd)
        os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        _unlink(dir_fd, tmp)
        raise


def open_append(dir_fd: int, name: str, owner: Identity) -> int:
    """A descriptor appending to the regular file `name` (created for `owner`
    if missing); whatever else holds the name is removed first."""
    for _ in range(3):
        try:
            fd = os.open(name, _APPEND, 0o644, dir_fd=dir_fd)
        except OSError as err:
            if err.errno not in (errno.ELOOP, errno.ENXIO, errno.EISDIR, errno.EEXIST, errno.EACCES):
                raise
        else:
            info = os.fstat(fd)
            if stat.S_ISREG(info.st_mode) and info.st_nlink == 1:
                if info.st_uid != owner.uid:
                    owner.give(fd)
                fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
                return fd
            os.close(fd)
        _unlink(dir_fd, name)
    raise OSError(errno.EEXIST, f"cannot open {name} as a regular file of its own")


def open_subdirs(dir_fd: int, parts: Sequence[str], owner: Identity) -> int:
    """A descriptor of the directory `parts` below `dir_fd`, walked without
    following symlinks; missing ones are created for `owner`, and a name
    that holds something else (a symlink, a file) is replaced by one."""
    fd = os.dup(dir_fd)
    try:
        for part in parts:
            for _ in range(3):
                created = False
                try:
                    os.mkdir(part, 0o755, dir_fd=fd)
                    created = True
                except FileExistsError:
                    pass
                try:
                    child = os.open(part, _DIR, dir_fd=fd)
                except OSError as err:
                    if err.errno not in (errno.ELOOP, errno.ENOTDIR):
                        raise
                    _unlink(fd, part)
                    continue
                if created:
                    owner.give(child)
                os.close(fd)
                fd = child
                break
            else:
                raise OSError(errno.ENOTDIR, f"cannot make {part} a directory")
    except BaseException:
        os.close(fd)
        raise
    return fd


def _unlink(dir_fd: int, name: str) -> None:
    try:
        os.unlink(name, dir_fd=dir_fd)
    except FileNotFoundError:
        pass
