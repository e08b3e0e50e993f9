"""Operating-system processes of instances: spawn each in its own session
(so it outlives a controller restart and its whole group can be signalled)
as the instances' user (`confine`), tell whether a recorded process still
runs, stop a group with SIGTERM then SIGKILL, and read the tail of its
output. Linux (/proc) is assumed."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from controllers.process.confine import Identity, read_regular
from controllers.process.readiness import Probe
from controllers.process.workdir import ProcessRecord

POLL = 0.05
# Written to both output files before each start, so that the tail of a
# failed start shows this run's output only.
BANNER = "=== process controller: starting "
_NO_PROBE = Probe()


def boot_id() -> str:
    """The kernel's id of this boot ("" where there is none)."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


BOOT_ID = boot_id()


def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (state first)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name may hold spaces and parentheses: split after the last ")".
    return stat.rsplit(")", 1)[1].split()


def starttime(pid: int) -> int | None:
    """The kernel start time of a live (non-zombie) process, or None."""
    fields = _stat(pid)
    if fields is None or fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def group_members(pgid: int) -> list[int]:
    """Live processes of a process group."""
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat(int(entry.name))
            if fields is not None and fields[0] not in ("Z", "X") and int(fields[2]) == pgid:
                members.append(int(entry.name))
    return members


class Processes:
    """The processes this controller spawned or adopted.

    Children spawned by this controller are kept as Popen objects so that
    their exit is reaped (no zombies) and their exit code known; processes
    adopted after a restart are no longer our children and are checked
    through /proc alone.
    """

    def __init__(self) -> None:
        self._children: dict[int, subprocess.Popen[bytes]] = {}

    def spawn(self, argv: Sequence[str], env: Mapping[str, str], cwd: Path, stdout: int, stderr: int,
              user: Identity) -> ProcessRecord:
        """Start argv in a new session as `user`, with exactly `env`, its output
        appended to the descriptors `stdout` and `stderr`; returns a record
        without digests or probe."""
        banner = f"{BANNER}{' '.join(argv)} at {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode()
        os.write(stdout, banner)
        os.write(stderr, banner)
        # start_new_session: the process leads its own group (pgid == pid), is
        # not killed with the controller's group, and `stop` reaches its children.
        # The user switch (setgroups, setgid, setuid) comes after the chdir, before the exec.
        proc = subprocess.Popen(
            list(argv), cwd=cwd, env=dict(env), stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr,
            start_new_session=True, close_fds=True, **user.popen_kwargs(),
        )
        self._children[proc.pid] = proc
        started = starttime(proc.pid)
        return ProcessRecord(proc.pid, started if started is not None else -1, tuple(argv), time.time(), "", "",
                             _NO_PROBE, BOOT_ID)

    def running(self, record: ProcessRecord) -> bool:
        """True while the recorded process runs (the same process, not a reused pid)."""
        child = self._children.get(record.pid)
        if child is not None and child.poll() is not None:
            return False  # kept until `forget`, for its exit code
        if record.boot != BOOT_ID:
            return False  # recorded before a reboot: that process is gone
        current = starttime(record.pid)
        if current is None:
            return False
        # -1: the process exited before its start time could be read; it is gone.
        return record.starttime >= 0 and current == record.starttime

    def exit_code(self, record: ProcessRecord) -> int | None:
        """The exit code of a child of ours that ended (None when unknown)."""
        child = self._children.get(record.pid)
        return None if child is None else child.poll()

    async def stop(self, record: ProcessRecord, grace: float) -> None:
        """SIGTERM the process group, SIGKILL it after `grace` seconds; returns once the leader is gone.

        Members of the group that outlive their leader are killed too. A
        group id cannot be handed out again while any member lives, so once
        the leader is gone, what is left in its group is ours.
        """
        if self.running(record):
            _signal_group(record.pid, signal.SIGTERM)
            deadline = time.monotonic() + grace
            while self.running(record) and time.monotonic() < deadline:
                await asyncio.sleep(POLL)
            _signal_group(record.pid, signal.SIGKILL)
            while self.running(record):
                await asyncio.sleep(POLL)
        elif record.boot == BOOT_ID and starttime(record.pid) is None and group_members(record.pid):
            _signal_group(record.pid, signal.SIGKILL)
        self.forget(record)

    def signal(self, record: ProcessRecord, signum: int) -> bool:
        """Send a signal to the leader (a reload, say); False when it does not run."""
        if not self.running(record):
            return False
        try:
            os.kill(record.pid, signum)
        except ProcessLookupError:
            return False
        return True

    def reap(self) -> None:
        """Collect children that ended (so that none lingers as a zombie)."""
        for pid, child in list(self._children.items()):
            if child.poll() is not None:
                del self._children[pid]

    def forget(self, record: ProcessRecord) -> None:
        child = self._children.pop(record.pid, None)
        if child is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=0.1)


def kill_strays(directory: Path) -> list[int]:
    """SIGKILL every process whose working directory is `directory` or below.

    The safety net of destroy and reset: a process whose pid file was lost
    (a crash between spawn and writing it) still runs in its instance's
    directory, and must not outlive the instance.
    """
    killed = []
    prefix = str(directory.resolve())
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if cwd == prefix or cwd.startswith(prefix + "/"):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(entry.name), signal.SIGKILL)
                killed.append(int(entry.name))
    return killed


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def tail(paths: Sequence[Path], lines: int = 15, limit: int = 2000) -> str:
    """The last lines of each output file (those with anything since the last start banner)."""
    parts = []
    for path in paths:
        # The instance may have replaced its log by a symlink to a file only the controller can read.
        raw = read_regular(path, 16 * 1024, tail=True)
        if raw is None:
            continue
        text = raw.decode("utf-8", "replace")
        if BANNER in text:
            text = text.rsplit(BANNER, 1)[1].partition("\n")[2]
        kept = [line for line in text.splitlines() if line.strip()][-lines:]
        if kept:
            parts.append(f"[{path.name}] " + "\n".join(kept))
    joined = "\n".join(parts) or "(no output)"
    return joined[-limit:]
