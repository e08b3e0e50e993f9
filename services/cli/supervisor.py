"""The process runtime of `orch up`: starts child services in order, restarts
one that exits unexpectedly (with back-off, and says so), and stops them all
in reverse order on request. No child outlives the supervisor: each gets
SIGTERM from the kernel if the supervisor dies (PR_SET_PDEATHSIG)."""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from orchestration_sdk.runtime.backoff import Backoff

log = logging.getLogger("orch.up")

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:  # not Linux: the supervisor's own shutdown still stops children
        pass


@dataclass
class ServiceSpec:
    """How to run one child service."""

    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    # Variables of this process's environment the service must not inherit.
    unset: frozenset[str] = frozenset()
    # Blocks until the service is ready; raises if it is not.
    wait_ready: Callable[[subprocess.Popen], None] | None = None
    stop_timeout: float = 10.0


@dataclass
class _Child:
    spec: ServiceSpec
    proc: subprocess.Popen
    started: float
    restarts: int = 0
    next_start: float = 0.0


RESTART_BACKOFF = Backoff(first=1.0, maximum=30.0)
# A child that ran this long is healthy again: its back-off starts over.
STABLE_AFTER = 60.0


class Supervisor:
    """Runs services as child processes; see the module docstring."""

    def __init__(self) -> None:
        self.children: list[_Child] = []
        self._stopping = False

    def _spawn(self, spec: ServiceSpec) -> subprocess.Popen:
        env = {k: v for k, v in {**os.environ, **spec.env}.items() if k not in spec.unset}
        return subprocess.Popen(spec.argv, env=env, preexec_fn=_die_with_parent)

    def start(self, spec: ServiceSpec) -> None:
        """Start a service and wait until it is ready."""
        proc = self._spawn(spec)
        self.children.append(_Child(spec, proc, time.monotonic()))
        if spec.wait_ready:
            spec.wait_ready(proc)
        log.info("started %s (pid %d)", spec.name, proc.pid)

    def request_stop(self, *_: object) -> None:
        self._stopping = True

    def run(self) -> None:
        """Supervise until request_stop (SIGINT/SIGTERM), then stop everything."""
        try:
            while not self._stopping:
                self._check_children()
                time.sleep(0.2)
        finally:
            self.stop_all()

    def _check_children(self) -> None:
        now = time.monotonic()
        for child in self.children:
            code = child.proc.poll()
            if code is None:
                if child.restarts and now - child.started > STABLE_AFTER:
                    child.restarts = 0
                continue
            if child.next_start == 0.0:
                delay = RESTART_BACKOFF.delay(child.restarts + 1)
                child.next_start = now + delay
                log.warning("%s exited unexpectedly with code %s; restarting in %.0fs", child.spec.name, code, delay)
            elif now >= child.next_start:
                child.proc = self._spawn(child.spec)
                child.started = now
                child.restarts += 1
                child.next_start = 0.0
                log.warning("restarted %s (pid %d, restart %d)", child.spec.name, child.proc.pid, child.restarts)

    def stop_all(self) -> None:
        """SIGTERM every child in reverse start order; SIGKILL the ones that linger."""
        for child in reversed(self.children):
            proc = child.proc
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=child.spec.stop_timeout)
                except subprocess.TimeoutExpired:
                    log.warning("%s did not stop in %.0fs; killing it", child.spec.name, child.spec.stop_timeout)
                    proc.kill()
                    proc.wait()
            log.info("stopped %s", child.spec.name)
        self.children.clear()
