"""The engine's own Prometheus metrics (tasks, the internal channel, the
monitor's polls), defined once here. Those every process may have, and how a
process serves them, are the SDK's (``orchestration_sdk.runtime.metrics``)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

TASKS = Counter("orch_tasks_total", "Task status changes, by task type and status", ["type", "status"])
REQUESTS_WAITING = Gauge("orch_requests_waiting", "Requests waiting in the internal channel")
POLL_SECONDS = Histogram("orch_monitor_poll_seconds", "Duration of one monitor poll",
                         buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
POLLED = Gauge("orch_monitor_instances_polled", "Instances asked about in the last poll")
DRIFTS = Counter("orch_monitor_drift_total", "Instances whose real state differed from the stored one")
COMPENSATIONS = Counter("orch_monitor_compensations_total", "Compensating requests submitted by the monitor")
