"""Prometheus metrics that every process of the suite may have (gRPC calls
served, controller operations), defined once here, and how a process serves
its metrics on a port of its own (``--metrics-addr``). The engine's own
metrics (tasks, the monitor's polls) are in ``orchestration.runtime.metrics``."""

from __future__ import annotations

import functools
from typing import TypeVar

from prometheus_client import Counter, Histogram, start_http_server
from prometheus_client.metrics import MetricWrapperBase

M = TypeVar("M", bound=MetricWrapperBase)

GRPC_CALLS = Counter("orch_grpc_calls_total", "gRPC calls served, by method and status code", ["method", "code"])
OPERATIONS = Counter("orch_controller_operations_total", "Controller operations, by transition and outcome",
                     ["transition", "outcome"])
OPERATION_SECONDS = Histogram(
    "orch_controller_operation_seconds", "Time from sending an operation to its result", ["transition"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)


@functools.cache
def labelled(metric: M, *values: str) -> M:
    """The child of a metric for label values (``labels()`` is looked up once,
    not at every operation of a hot path)."""
    return metric.labels(*values)


def serve(address: str) -> int:
    """Serve /metrics on host:port (port 0: any free port); returns the port. Empty address: off."""
    if not address:
        return 0
    host, _, port = address.rpartition(":")
    server, _thread = start_http_server(int(port), addr=host or "127.0.0.1")
    return int(server.server_port)
