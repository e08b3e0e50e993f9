"""A dispatcher's settings: those it is started with, and the engine's
defaults for every run, overridable per cluster through its configuration
parameters (``orch_operation_timeout``, ``orch_max_attempts``)."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field

from orchestration_sdk.runtime.tls import TlsConfig


@dataclass(frozen=True)
class EngineSettings:
    """Limits and timings of task execution."""

    # Operations in flight at once, per solution run.
    concurrency: int = 1000
    # Operations in flight at once, per domain (over all its runs on one
    # dispatcher; a run's own limit is the lower of the two): one domain's
    # storm keeps the dispatcher's event loop and its queue to the store short
    # enough that another domain's request starts within about 0.1 s (0: no limit).
    domain_concurrency: int = 200
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


@dataclass(frozen=True)
class DispatcherSettings:
    """What a dispatcher replica is started with."""

    address: str
    nats_url: str
    prefix: str
    # Presented to controllers (they hold its SHA-256).
    credential: str
    # Issued the controllers' credentials; checks each registration's names.
    registration_key: str
    tls: TlsConfig = field(default_factory=TlsConfig)
    replica: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    engine: EngineSettings = field(default_factory=EngineSettings)
