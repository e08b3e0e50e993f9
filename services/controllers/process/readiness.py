"""Readiness probes: is a started process serving yet? One check is quick
and bounded (a status call may run one per instance), so a hung service
reads as "not ready", never as a hung controller."""

from __future__ import annotations

import asyncio
import contextlib
import shlex
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from controllers.process.confine import Identity

ProbeKind = Literal["tcp", "http", "command", "alive"]

# Without a probe, a process that stayed up this long counts as ready: long
# enough to catch a command that exits at once, short enough not to matter.
ALIVE_SETTLE = 1.0
CHECK_TIMEOUT = 2.0
COMMAND_TIMEOUT = 5.0


@dataclass(frozen=True)
class Probe:
    """A rendered readiness probe: `target` is host:port, a URL or a command line."""

    kind: ProbeKind = "alive"
    target: str = ""

    def describe(self) -> str:
        return "staying up" if self.kind == "alive" else f"{self.kind} {self.target}"


async def check(probe: Probe, cwd: Path, running_for: float, env: Mapping[str, str], user: Identity) -> bool:
    """One readiness check of a live process (it has run for `running_for`
    seconds). A probe command runs like the instance: as `user`, in its work
    dir `cwd`, with exactly `env`."""
    if probe.kind == "tcp":
        return await _tcp(probe.target)
    if probe.kind == "http":
        return await asyncio.to_thread(_http, probe.target)
    if probe.kind == "command":
        return await _command(probe.target, cwd, env, user)
    return running_for >= ALIVE_SETTLE


async def _tcp(target: str) -> bool:
    host, _, port = target.rpartition(":")
    if not port.isdigit():
        return False
    try:
        async with asyncio.timeout(CHECK_TIMEOUT):
            _, writer = await asyncio.open_connection(host.strip("[]") or "127.0.0.1", int(port))
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is an answer (3xx: ready), never followed: the probe reaches
    the instance's own port only (spec._own_loopback), not where it points."""

    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


def _http(url: str) -> bool:
    # A proxy configured for the controller must not answer for a local service.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect())
    try:
        with opener.open(url, timeout=CHECK_TIMEOUT) as response:
            return 200 <= int(response.status) < 400
    except urllib.error.HTTPError as err:
        return 300 <= err.code < 400  # a redirect not followed
    except (urllib.error.URLError, OSError, ValueError):
        return False


async def _command(line: str, cwd: Path, env: Mapping[str, str], user: Identity) -> bool:
    try:
        proc = await asyncio.create_subprocess_exec(
            *shlex.split(line), cwd=cwd, env=dict(env), stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL, **user.popen_kwargs(),
        )
    except (OSError, ValueError):
        return False
    try:
        async with asyncio.timeout(COMMAND_TIMEOUT):
            return await proc.wait() == 0
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        return False
