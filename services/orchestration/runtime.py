"""What every service process does around its main loop: structured logs,
tracing (exported only when configured), a Prometheus endpoint."""

from __future__ import annotations

import logging
import asyncio
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from typing import Any

import click

from orchestration import logs, metrics, telemetry

METRICS_HELP = "host:port of the Prometheus /metrics endpoint (empty: none)."


def metrics_option(func):  # type: ignore[no-untyped-def]
    """The --metrics-addr option of every service."""
    return click.option("--metrics-addr", envvar="ORCH_METRICS_ADDR", default="", help=METRICS_HELP)(func)


@contextmanager
def service_process(name: str, metrics_addr: str = "") -> Iterator[None]:
    """Set up logging, tracing and metrics for a service; flush traces at exit."""
    logs.configure(name)
    telemetry.setup(name)
    port = metrics.serve(metrics_addr)
    if port:
        logging.getLogger(name).info("metrics on port %d", port)
    try:
        yield
    finally:
        telemetry.shutdown()


def run(main: Coroutine[Any, Any, None]) -> None:
    """Run a service's main coroutine, on uvloop where it is installed (faster I/O)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        asyncio.run(main)
        return
    uvloop.run(main)
