"""Engine settings: defaults for every run, overridable per cluster through
its configuration parameters (``orch_operation_timeout``, ``orch_max_attempts``)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EngineSettings:
    """Limits and timings of task execution."""

    # Operations in flight at once, per solution run.
    concurrency: int = 1000
    # Deadline of one controller operation (seconds).
    operation_timeout: float = 30.0
    # Attempts of one operation before the instance fails.
    max_attempts: int = 5
    # Retry back-off: base * 2^(attempt-1), capped, with full jitter.
    backoff_base: float = 0.2
    backoff_max: float = 10.0
    # How long an operation waits for a controller of its component to register.
    controller_wait: float = 30.0
    # Deadline of a whole task tree (seconds).
    task_timeout: float = 3600.0
