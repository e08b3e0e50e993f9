"""Making buckets and streams, idempotently (processes that start together
all succeed), waiting for a NATS cluster that cannot place their replicas
yet; and the limits of history (retention) and replicas they get."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import nats.js.errors
from nats.js import JetStreamContext, api

from orchestration.store.kvstore import STORE_BACKOFF, Bucket, apply_cap
from orchestration.store.subjects import kv_stream
from orchestration.store.wire import NO_PEERS, STREAM_NAME_IN_USE
from orchestration_sdk.status_errors import FailedPrecondition, Unavailable

T = TypeVar("T")

# Seconds creating a bucket or stream waits for a cluster to be able to place it.
PLACEMENT_WAIT = 60.0


# The size cap of each bucket and stream a Repository opens: its setting
# (megabytes) and default. A KV bucket or the requests stream refuses a write
# beyond its cap (ResourceExhausted, nothing lost or half written); the events
# stream drops its oldest events instead. The monitor keeps the tasks bucket
# below its cap by deleting finished task trees, those of removed solutions
# first (see monitor.pruning).
CAPS: dict[str, tuple[str, int]] = {
    "model": ("ORCH_MODEL_MAX_MB", 32),
    "solutions": ("ORCH_SOLUTIONS_MAX_MB", 256),
    "tasks": ("ORCH_TASKS_MAX_MB", 256),
    "controllers": ("ORCH_CONTROLLERS_MAX_MB", 8),
    "leases": ("ORCH_LEASES_MAX_MB", 16),
    "requests": ("ORCH_REQUESTS_MAX_MB", 32),
    "events": ("ORCH_EVENTS_MAX_MB", 256),
}


@dataclass(frozen=True)
class Retention:
    """How long history is kept and how much of everything: task records and
    the events stream (which holds the events) age out after
    `history_seconds` (since their last write), and every bucket and stream
    holds at most its cap in `caps` (bytes, by the names of CAPS). Running
    work is never affected by age: its records are rewritten as it goes."""

    history_seconds: float = 30 * 86400.0
    events_bytes: int = 256 * 2**20
    caps: tuple[tuple[str, int], ...] = tuple((name, mb * 2**20) for name, (_, mb) in CAPS.items() if name != "events")
    # Revisions kept per solution (the oldest go first).
    revisions_kept: int = 50

    def cap(self, name: str) -> int:
        """The cap in bytes of a bucket or stream (by its name in CAPS)."""
        return self.events_bytes if name == "events" else dict(self.caps)[name]

    @classmethod
    def from_environment(cls) -> Retention:
        """ORCH_HISTORY_DAYS (default 30), ORCH_REVISIONS_KEPT (default 50) and
        the size caps of CAPS (ORCH_*_MAX_MB)."""
        days = os.environ.get("ORCH_HISTORY_DAYS", "30")
        try:
            history = float(days)
        except ValueError:
            history = 0.0
        if not history > 0:
            raise ValueError(f"ORCH_HISTORY_DAYS={days!r}: expected a positive number")
        caps = {}
        for name, (setting, default) in CAPS.items():
            value = os.environ.get(setting, str(default))
            if not value.isdigit() or int(value) <= 0:
                raise ValueError(f"{setting}={value!r}: expected a positive number of megabytes")
            caps[name] = int(value) * 2**20
        events = caps.pop("events")
        kept = os.environ.get("ORCH_REVISIONS_KEPT", "50")
        if not kept.isdigit() or int(kept) <= 0:
            raise ValueError(f"ORCH_REVISIONS_KEPT={kept!r}: expected a positive number of revisions")
        return cls(history * 86400.0, events, tuple(caps.items()), int(kept))


def replicas_from_environment() -> int:
    """JetStream replicas of new buckets and streams: ORCH_JS_REPLICAS (default 1;
    3 on a NATS cluster, so that losing a node loses nothing)."""
    value = os.environ.get("ORCH_JS_REPLICAS", "1")
    if not value.isdigit() or not 1 <= int(value) <= 5:
        raise ValueError(f"ORCH_JS_REPLICAS={value!r}: expected 1 to 5")
    return int(value)


async def placed(create: Callable[[], Awaitable[T]], what: str, replicas: int) -> T:
    """Create a bucket or stream, waiting while the NATS cluster cannot place
    its replicas yet: servers starting together elect a leader before every
    route is up, and services may start in any order. Gives up (Unavailable)
    after PLACEMENT_WAIT seconds, when too few servers have JetStream."""
    deadline = time.monotonic() + PLACEMENT_WAIT
    failures = 0
    while True:
        try:
            return await create()
        except nats.js.errors.APIError as err:
            if err.err_code != NO_PEERS:
                raise
            if time.monotonic() > deadline:
                raise Unavailable(f"JetStream cannot place {what} on {replicas} server(s) after {PLACEMENT_WAIT:.0f} s: "
                                  "fewer are up with JetStream (ORCH_JS_REPLICAS sets the replicas)") from err
        failures += 1
        await asyncio.sleep(STORE_BACKOFF.delay(failures))


async def open_bucket(js: JetStreamContext, name: str, replicas: int = 1, max_bytes: int = -1, cap: str = "") -> Bucket:
    """Create the bucket (history 1, file storage, at most `max_bytes`) or bind
    to the one that exists, giving it that cap. `cap` names the setting of
    the cap, for the error of a write that would go beyond it.

    Creating with an identical configuration is idempotent on the server, so
    processes that open concurrently all succeed; a bucket created by someone
    else with other settings is used as it is, with this cap.
    """
    try:
        kv = await placed(lambda: js.create_key_value(bucket=name, history=1, storage=api.StorageType.FILE, replicas=replicas,
                                                      max_bytes=max_bytes),
                          f"bucket {name!r}", replicas)
    except nats.js.errors.BadRequestError as err:
        if err.err_code != STREAM_NAME_IN_USE:
            raise
        kv = await js.key_value(name)
        if max_bytes > 0:
            await apply_cap(js, kv_stream(name), max_bytes)
    return Bucket(js, kv, name, replicas, cap)


async def ensure_stream(js: JetStreamContext, config: api.StreamConfig) -> None:
    """Create the stream, or accept the existing one if its retention matches."""
    try:
        await placed(lambda: js.add_stream(config), f"stream {config.name!r}", config.num_replicas or 1)
        return
    except nats.js.errors.BadRequestError as err:
        if err.err_code != STREAM_NAME_IN_USE:
            raise
    existing = await js.stream_info(config.name or "")
    # Retention cannot change on a live stream, and the dispatchers rely on it.
    if existing.config.retention != config.retention:
        raise FailedPrecondition(
            f"stream {config.name!r} exists with retention {existing.config.retention}, "
            f"expected {config.retention}; delete it or use another subject prefix"
        )
