"""Settings of a monitor process."""

from __future__ import annotations

from dataclasses import dataclass, field

from orchestration_sdk.runtime.tls import TlsConfig


@dataclass(frozen=True)
class MonitorSettings:
    """Where the monitor connects and how often it polls."""

    nats_url: str
    prefix: str
    # Controller credential: the monitor calls the controllers' Status with it.
    credential: str
    # Seconds between the starts of two polls.
    interval: float = 5.0
    # Deadline of one Status call (seconds).
    status_timeout: float = 10.0
    # TLS towards the controllers (empty: plaintext).
    tls: TlsConfig = field(default_factory=TlsConfig)
    # Instances per Status call: with 4 calls at once, what the monitor and
    # a controller hold of a poll at a time is 4,000 references and answers,
    # not every instance's (10,000 are ten calls, a few ms more than two).
    batch_size: int = 1000
    # Longest wait between two compensations of one solution (seconds).
    backoff_max: float = 300.0
    # Compensations of one solution that may fail to converge it before the
    # monitor gives up and marks it degraded (until an operator's request).
    max_compensations: int = 3
    # Finished task trees older than this many days are pruned to their root
    # (ORCH_TREE_DAYS), looked for every `prune_every` seconds (ORCH_PRUNE_SECONDS).
    tree_days: float = 7.0
    prune_every: float = 3600.0
