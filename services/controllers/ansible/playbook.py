"""One playbook run with ansible-runner: in a thread (it blocks), within a
time-out, bounded in number, as a span of the operation's trace. A run cut short
(time-out, cancel) is stopped: ansible-runner kills ansible-playbook's process
group, and this module the workers, which ansible-core starts each in a
session of its own (they would run their task on, orphaned); a cancelled run
is waited for before the caller hears of it, so nothing of it outlives the
operation. Ansible writes only under the controller's state directory; each
run's private data directory (inventory, extra variables, artifacts: the
runner copies the whole environment into them) is removed when the run ends,
and, with any ansible-playbook a killed controller left behind, when the
controller starts."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ansible_runner

from controllers.ansible.config import ConfigError, host_count
from controllers.ansible.events import Summary, summarize
from orchestration_sdk import Retryable
from orchestration_sdk.runtime import telemetry

_tracer = telemetry.tracer("controllers.ansible")
# ansible-playbook's exit codes for what no retry fixes: error, parser error, bad options.
PERMANENT_EXIT_CODES = frozenset({1, 4, 5})
MAX_OUTPUT = 64 * 1024
# Seconds a cancelled run may take to end (ansible-runner looks at the cancel flag every half second).
STOP_SECONDS = 10.0


@dataclass(frozen=True)
class RunnerSettings:
    """Where playbooks are, where Ansible may write, and the secret files it reads itself."""

    playbook_dir: Path
    state_dir: Path
    timeout: float = 300.0
    vault_password_file: str = ""
    become_password_file: str = ""


@dataclass(frozen=True)
class PlaybookRun:
    """How a run ended: ansible-runner's `status` (successful, failed,
    timeout, canceled, error), the exit code, the tasks, and Ansible's output."""

    playbook: str
    status: str
    rc: int
    summary: Summary
    output: str

    @property
    def ok(self) -> bool:
        return self.status == "successful"

    def last_error(self) -> str:
        """The last line of the output that says ERROR (or the last line), for a run without failed tasks."""
        lines = [line.strip() for line in self.output.splitlines() if line.strip()]
        errors = [line for line in lines if "ERROR" in line]
        chosen = (errors or lines or [f"exit code {self.rc}"])[-1]
        return chosen[:500]


class PlaybookRunner:
    """Runs playbooks of one playbook directory, at most `concurrency` at once."""

    def __init__(self, settings: RunnerSettings, concurrency: int) -> None:
        self.settings = settings
        self.concurrency = max(1, concurrency)
        self._slots = asyncio.Semaphore(self.concurrency)

    def prepare(self) -> list[int]:
        """Make the directories Ansible writes into (all under the state directory); end the
        ansible-playbook runs a killed controller left (they would race the operations' next
        delivery) and remove their private directories. The pids ended."""
        for sub in ("runs", "tmp", "home", "cp"):
            (self.settings.state_dir / sub).mkdir(parents=True, exist_ok=True, mode=0o700)
        runs = self.settings.state_dir / "runs"
        ended = end_runs(runs)
        for private in runs.iterdir():
            shutil.rmtree(private, ignore_errors=True)
        return ended

    def path_of(self, playbook: str) -> Path:
        """The playbook's file, which must exist inside the playbook directory."""
        base = self.settings.playbook_dir.resolve()
        path = (base / playbook).resolve()
        if not path.is_relative_to(base):
            raise ConfigError(f"playbook {playbook} leads out of the playbook directory")
        if not path.is_file():
            raise ConfigError(f"playbook {playbook} not found in the controller's playbook directory {base}")
        return path

    def environment(self) -> dict[str, str]:
        """Ansible's settings for a run: nothing written outside the state directory, no colours."""
        state = self.settings.state_dir
        env = {
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
            "ANSIBLE_HOME": str(state / "home"),
            "ANSIBLE_LOCAL_TEMP": str(state / "tmp"),
            "ANSIBLE_REMOTE_TEMP": str(state / "tmp" / "remote"),
            "ANSIBLE_ASYNC_DIR": str(state / "tmp" / "async"),
            "ANSIBLE_SSH_CONTROL_PATH_DIR": str(state / "cp"),
            "ANSIBLE_PERSISTENT_CONTROL_PATH_DIR": str(state / "cp"),
            "ANSIBLE_RETRY_FILES_ENABLED": "False",
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_FORCE_COLOR": "0",
            "ANSIBLE_DEPRECATION_WARNINGS": "False",
            "ANSIBLE_LOCALHOST_WARNING": "False",
        }
        # ansible-core refuses to run under a locale that is not UTF-8 (a bare C locale, as in some CI).
        locale = os.environ.get("LC_ALL") or os.environ.get("LC_CTYPE") or os.environ.get("LANG") or ""
        if "UTF-8" not in locale.upper().replace("UTF8", "UTF-8"):
            env["LC_ALL"] = "C.UTF-8"
        # Paths only: Ansible reads the secrets itself, they never pass through this process's data.
        if self.settings.vault_password_file:
            env["ANSIBLE_VAULT_PASSWORD_FILE"] = self.settings.vault_password_file
        if self.settings.become_password_file:
            env["ANSIBLE_BECOME_PASSWORD_FILE"] = self.settings.become_password_file
        return env

    async def run(self, playbook: str, operation: str, inventory: Mapping[str, Any], extravars: Mapping[str, Any], *,
                  check: bool = False, deadline: float | None = None) -> PlaybookRun:
        """Run `playbook` (--check --diff when `check`) and report how it went, ending by `deadline`
        (time.time(); the run's own time-out is the rest of it, at most --timeout). Raises ConfigError
        for a playbook that is not there, Retryable when no slot frees, or too little time is left,
        before the deadline. Cancelling the caller stops the run and waits until it ended."""
        self.path_of(playbook)
        attributes = {"ansible.playbook": playbook, "ansible.operation": operation,
                      "ansible.hosts": str(host_count(inventory)), "ansible.check": str(check).lower()}
        if not await acquire_before(self._slots, deadline):
            raise Retryable(f"{playbook}: no free playbook slot (all {self.concurrency} busy) before the operation's "
                            "deadline", after=1.0)
        try:
            limit = self.settings.timeout if deadline is None else min(self.settings.timeout, deadline - time.time())
            if limit < 1.0:
                raise Retryable(f"{playbook}: not run, {max(limit, 0):.1f} s left before the operation's deadline")
            with _tracer.start_as_current_span(f"ansible-playbook {playbook}", attributes=attributes) as span:
                cancel = threading.Event()
                work = asyncio.ensure_future(
                    asyncio.to_thread(self._run, playbook, inventory, extravars, check, limit, cancel))
                try:
                    done = await asyncio.shield(work)
                except asyncio.CancelledError:
                    cancel.set()  # ansible-runner kills ansible-playbook's process group
                    await asyncio.wait({work}, timeout=STOP_SECONDS)  # the slot stays taken until it ended
                    raise
                span.set_attribute("ansible.status", done.status)
                span.set_attribute("ansible.tasks", str(len(done.summary.lines)))
                if not done.ok:
                    telemetry.fail(span, f"{playbook}: {done.status}")
                return done
        finally:
            self._slots.release()

    def _run(self, playbook: str, inventory: Mapping[str, Any], extravars: Mapping[str, Any], check: bool,
             timeout: float, cancel: threading.Event) -> PlaybookRun:
        events: list[dict[str, Any]] = []
        output: list[str] = []
        size = 0

        def on_event(event: dict[str, Any]) -> bool:
            nonlocal size
            events.append(event)
            text = event.get("stdout") or ""
            if text and size < MAX_OUTPUT:
                output.append(text)
                size += len(text)
            return False  # nothing kept on disk: the run's directory goes anyway

        private = tempfile.mkdtemp(prefix="run-", dir=self.settings.state_dir / "runs")
        try:
            result = ansible_runner.run(
                private_data_dir=private, project_dir=str(self.settings.playbook_dir.resolve()), playbook=playbook,
                inventory=dict(inventory), extravars=dict(extravars), envvars=self.environment(),
                cmdline="--check --diff" if check else None, timeout=int(max(1, timeout)), quiet=True,
                event_handler=on_event, cancel_callback=cancel.is_set,
                # pexpect_timeout: how often (s) the runner looks at the time-out and the cancel flag.
                settings={"suppress_ansible_output": True, "pexpect_timeout": 0.5},
            )
            status, rc = str(result.status), int(result.rc if result.rc is not None else -1)
        finally:
            end_runs(Path(private))  # workers left by a run cut short
            shutil.rmtree(private, ignore_errors=True)
        return PlaybookRun(playbook, status, rc, summarize(events), "\n".join(output))


async def acquire_before(resource: asyncio.Lock | asyncio.Semaphore, deadline: float | None) -> bool:
    """Take `resource`, waiting until `deadline` (time.time()) at most; False when it did not free in time."""
    if deadline is None:
        await resource.acquire()
        return True
    try:
        async with asyncio.timeout(max(0.0, deadline - time.time())):
            await resource.acquire()
    except TimeoutError:
        return False
    return True


def end_runs(directory: Path) -> list[int]:
    """SIGKILL the ansible-playbook processes (and their process groups) running on a private
    directory in `directory`, and wait (2 s at most) until they are gone. The pids ended."""
    ended = [pid for pid in leftover_runs(directory) if _kill_group(pid)]
    until = time.monotonic() + 2.0
    while ended and leftover_runs(directory) and time.monotonic() < until:
        time.sleep(0.02)
    return ended


def leftover_runs(directory: Path) -> list[int]:
    """The ansible-playbook processes (main and workers) whose command line names a file in
    `directory` (a run's private directory, or the directory of all runs); Linux: /proc."""
    marker = str(directory) + os.sep
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            line = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "ansible-playbook" in line and marker in line:
            found.append(int(entry.name))
    return found


def _kill_group(pid: int) -> bool:
    """SIGKILL the process group a run leads (ansible-runner starts each in a session of its own)."""
    try:
        group = os.getpgid(pid)
        if group == os.getpgrp():
            return False  # never this controller's own group
        os.killpg(group, signal.SIGKILL)
    except OSError:
        return False
    return True
