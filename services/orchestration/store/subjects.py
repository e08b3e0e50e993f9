"""Every NATS subject, stream, consumer and KV bucket name of the suite.

All names derive from one prefix (default ``orch``), so several
orchestrators can share a NATS installation. User-supplied names enter keys
and subjects only through ``names.encode_token``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from orchestration.model.names import encode_token

DEFAULT_PREFIX = "orch"
# Token of an event that belongs to no task (for example drift). "_" is not a
# valid name, so no task uuid collides with it.
NO_TASK = "_"
_PREFIX = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,31}$")


def check_prefix(prefix: str) -> str:
    """Return prefix if it is one safe subject token, else raise ValueError."""
    if not _PREFIX.fullmatch(prefix):
        raise ValueError(f"subject prefix {prefix!r} must match {_PREFIX.pattern}")
    return prefix


def _task_token(task: str) -> str:
    return encode_token(task) if task else NO_TASK


def kv_stream(bucket: str) -> str:
    """The stream that holds a KV bucket (named by the NATS KV specification, ADR-8)."""
    return f"KV_{bucket}"


@dataclass(frozen=True)
class Subjects:
    """Names for one prefix."""

    prefix: str = DEFAULT_PREFIX

    def __post_init__(self) -> None:
        check_prefix(self.prefix)

    # KV buckets (JetStream key/value stores).
    @property
    def model_bucket(self) -> str:
        """Domains, components, architectures, domain controllers."""
        return f"{self.prefix}_model"

    @property
    def solutions_bucket(self) -> str:
        """Solution records: one key per solution, element, cluster and instance."""
        return f"{self.prefix}_solutions"

    @property
    def tasks_bucket(self) -> str:
        return f"{self.prefix}_tasks"

    @property
    def controllers_bucket(self) -> str:
        """Controller replica registrations (dispatcher)."""
        return f"{self.prefix}_controllers"

    @property
    def leases_bucket(self) -> str:
        return f"{self.prefix}_leases"

    @property
    def access_bucket(self) -> str:
        """Tokens (hashed) and when each was last used."""
        return f"{self.prefix}_access"

    @property
    def audit_bucket(self) -> str:
        """The audit trail: one key per change made (or refused)."""
        return f"{self.prefix}_audit"

    @property
    def repository_buckets(self) -> tuple[str, str, str, str, str]:
        """The buckets a Repository opens, in its order (access and audit are the gateway's)."""
        return (self.model_bucket, self.solutions_bucket, self.tasks_bucket, self.controllers_bucket, self.leases_bucket)

    @property
    def repository_streams(self) -> list[str]:
        """Every stream a Repository opens: its buckets' and the requests and events streams."""
        return [kv_stream(bucket) for bucket in self.repository_buckets] + [self.requests_stream, self.events_stream]

    # Streams.
    @property
    def requests_stream(self) -> str:
        """Internal channel: work-queue stream of requests for the dispatchers."""
        return f"{self.prefix.upper()}_REQUESTS"

    @property
    def events_stream(self) -> str:
        """External bus TOPIC1: task events, replayable."""
        return f"{self.prefix.upper()}_EVENTS"

    def internal_request(self, domain: str, solution: str) -> str:
        return f"{self.prefix}.internal.requests.{encode_token(domain)}.{encode_token(solution)}"

    @property
    def internal_requests_all(self) -> str:
        return f"{self.prefix}.internal.requests.>"

    def bus_request(self, operation: str) -> str:
        """External bus: requests in (``<prefix>.requests.<operation>``)."""
        return f"{self.prefix}.requests.{operation}"

    def event(self, domain: str, task_type: str, event_type: str, task: str) -> str:
        """External bus TOPIC1 subject of one event of a task (the one that received it)."""
        return f"{self.prefix}.events.{encode_token(domain)}.{task_type}.{event_type}.{_task_token(task)}"

    def task_events_filter(self, domain: str, task: str, event_type: str = "*") -> str:
        """Events one task received, of any type or of one."""
        return f"{self.prefix}.events.{encode_token(domain)}.*.{event_type}.{_task_token(task)}"

    @property
    def events_all(self) -> str:
        return f"{self.prefix}.events.>"

    def events_filter(self, domain: str = "") -> str:
        """Events of one domain (or of all)."""
        return f"{self.prefix}.events.{encode_token(domain)}.>" if domain else self.events_all

    @property
    def preview(self) -> str:
        """Where the gateway asks a dispatcher for controllers' dry runs (core NATS request-reply)."""
        return f"{self.prefix}.internal.preview"

    @property
    def bus_requests_all(self) -> str:
        return f"{self.prefix}.requests.*"

    def status_filter(self, domain: str = "", solution: str = "") -> str:
        """Status messages of one solution, one domain, or all."""
        if not domain:
            return f"{self.prefix}.status.>"
        return f"{self.prefix}.status.{encode_token(domain)}.{encode_token(solution) if solution else '*'}"

    def status(self, domain: str, solution: str) -> str:
        """External bus TOPIC2 subject of status messages."""
        return f"{self.prefix}.status.{encode_token(domain)}.{encode_token(solution)}"

    def revision(self, domain: str, solution: str) -> str:
        """External bus: a solution's revisions, each when it is recorded and when its outcome is known."""
        return f"{self.prefix}.revisions.{encode_token(domain)}.{encode_token(solution)}"

    @property
    def revisions_all(self) -> str:
        return f"{self.prefix}.revisions.>"

    @property
    def monitor_figures(self) -> str:
        """Request-reply: the monitor answers with its last poll's figures (JSON)."""
        return f"{self.prefix}.monitor.figures"


def model_key(kind: str, *names: str) -> str:
    """Key in the model bucket: ``<kind>.<token>...`` (kind is a constant)."""
    return ".".join([kind, *(encode_token(n) for n in names)])


def record_key(*names: str) -> str:
    """Key built from user-supplied names only (solutions and tasks buckets)."""
    return ".".join(encode_token(n) for n in names)
