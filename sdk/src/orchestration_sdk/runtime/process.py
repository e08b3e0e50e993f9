"""What every service process does around its main loop: structured logs,
tracing (exported only when configured), a Prometheus endpoint."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import click

from orchestration_sdk.runtime import logs, metrics, telemetry

METRICS_HELP = "host:port of the Prometheus /metrics endpoint (empty: none)."


def read_secret(path: str, option: str) -> str:
    """The secret held in a file; a missing, unreadable or empty one stops the
    service (fail closed: no secret must never mean no check)."""
    try:
        secret = Path(path).read_text().strip()
    except OSError as err:
        raise click.BadParameter(f"{path}: {err.strerror}", param_hint=option) from None
    if not secret:
        raise click.BadParameter(f"{path} is empty: refusing to run without a secret", param_hint=option)
    return secret


def metrics_option(func):  # type: ignore[no-untyped-def]
    """The --metrics-addr option of every service."""
    return click.option("--metrics-addr", envvar="ORCH_METRICS_ADDR", default="", help=METRICS_HELP)(func)


@contextmanager
def service_process(name: str, metrics_addr: str = "") -> Iterator[None]:
    """Set up logging, tracing and metrics for a service; flush traces at exit."""
    logs.configure(name)
    memory_report(name)
    telemetry.setup(name)
    port = metrics.serve(metrics_addr)
    if port:
        logging.getLogger(name).info("metrics on port %d", port)
    try:
        yield
    finally:
        telemetry.shutdown()


def memory_report(name: str) -> None:
    """With ORCH_TRACEMALLOC=<directory>: trace allocations (from the start
    where PYTHONTRACEMALLOC is set too) and, on SIGUSR2 and at exit, write
    the largest live allocations by line to <directory>/<name>-<pid>.txt."""
    directory = os.environ.get("ORCH_TRACEMALLOC")
    if not directory:
        return
    import atexit
    import tracemalloc

    if not tracemalloc.is_tracing():
        tracemalloc.start()

    def report(*_: object) -> None:
        snapshot = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])
        current, peak = tracemalloc.get_traced_memory()
        lines = [f"traced {current / 2**20:.1f} MiB, peak {peak / 2**20:.1f} MiB"]
        lines += [str(stat) for stat in snapshot.statistics("lineno")[:60]]
        Path(directory, f"{name}-{os.getpid()}.txt").write_text("\n".join(lines) + "\n")

    signal.signal(signal.SIGUSR2, report)
    atexit.register(report)


# Thresholds of the cyclic garbage collector. Reference counting frees almost
# everything a service allocates; with the default (700, 10, 10) the collector
# still walked a run's live state (tens of thousands of objects) thousands of
# times: 16 % of the dispatcher's CPU at 10,000 instances, 1 % with these.
GC_THRESHOLDS = (50_000, 10, 10)

# A service still stopping after this long says what it waits on (a supervisor
# kills it after 10 s: the log then shows why).
STOP_REPORT_SECONDS = 5.0


def run(main: Coroutine[Any, Any, None]) -> None:
    """Run a service's main coroutine, on uvloop where it is installed (faster I/O)."""
    gc.freeze()  # what start-up made (modules, generated code) lives as long as the process
    gc.set_threshold(*GC_THRESHOLDS)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        asyncio.run(main)
        return
    uvloop.run(main)


def stop_on_signals() -> asyncio.Event:
    """An event that SIGTERM or SIGINT sets: how every service learns to stop."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


class Startable(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...


async def serve_until_signalled(service: Startable, name: str) -> None:
    """Start a service, run until SIGTERM or SIGINT, then stop it. A signal
    while it is still starting (NATS not there yet, or refusing its
    credentials: the connection keeps trying) ends the start instead of
    waiting for it."""
    stop = stop_on_signals()
    starting = asyncio.ensure_future(service.start())
    signalled = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({starting, signalled}, return_when=asyncio.FIRST_COMPLETED)
        if not starting.done():
            logging.getLogger(name).info("stopping before it started")
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await starting
        else:
            starting.result()  # a start that failed ends the process with its error
            await signalled
            logging.getLogger(name).info("stopping")
    finally:
        signalled.cancel()
    stopping = asyncio.ensure_future(service.stop())
    done, _ = await asyncio.wait({stopping}, timeout=STOP_REPORT_SECONDS)
    if not done:
        # Whoever kills it next (a supervisor after its own time-out) leaves this in the log.
        logging.getLogger(name).warning("still stopping after %.0fs; waiting on: %s", STOP_REPORT_SECONDS,
                                        "; ".join(waiting_tasks()) or "nothing")
    await stopping


def waiting_tasks(limit: int = 20) -> list[str]:
    """Each other running task as `name at file:line (function)`, where it waits now."""
    described = []
    for task in asyncio.all_tasks():
        if task is asyncio.current_task():
            continue
        stack = task.get_stack()
        where = f"{stack[-1].f_code.co_filename}:{stack[-1].f_lineno} ({stack[-1].f_code.co_name})" if stack else "?"
        described.append(f"{task.get_name()} at {where}")
    return sorted(described)[:limit]
