"""The gateway's side of the internal channel: accepts requests for the
dispatchers (one solution runs one request at a time)."""

from __future__ import annotations

from nats.aio.client import Client
from opentelemetry.trace import SpanKind

from gateway.api.access import caller
from orchestration.model.names import check_name, check_reason
from orchestration.store.repository import Repository
from orchestration.store.requests import Change, accepted_before, new_request, submit
from orchestration.store.subjects import Subjects
from orchestration_sdk.runtime import telemetry


class Channel:
    """Submits requests: queue on the solution, store the root task, publish."""

    def __init__(self, repo: Repository, nc: Client, subjects: Subjects, source: str = "gateway") -> None:
        self.repo = repo
        self.nc = nc
        self.js = nc.jetstream()
        self.subjects = subjects
        self.leases = repo.leases
        self.source = source
        self.tracer = telemetry.tracer("gateway.channel")

    async def submit(self, change: Change, domain: str, solution: str, request_id: str = "", reason: str = "") -> str:
        """Accept one request; returns its root task id (FailedPrecondition when the solution is busy).
        With the client's `request_id`, a retry returns the task of the first.

        The request carries the trace context of a producer span (the NATS hop),
        a child of the caller's span, so the dispatcher's work joins the trace."""
        with self.tracer.start_as_current_span("publish request", kind=SpanKind.PRODUCER) as span:
            request = new_request(change, domain, solution, self.source, telemetry.traceparent(span), request_id,
                                  caller().name, check_reason(reason))
            span.set_attribute("orch.domain", domain)
            span.set_attribute("orch.solution", solution)
            span.set_attribute("orch.task_id", request.task)
            return await submit(self.repo, self.leases, self.js, self.subjects, request)

    async def earlier(self, domain: str, solution: str, request_id: str) -> str | None:
        """The root task of a request the client named `request_id` and sent
        before, if it was accepted (a retry gets the same answer even once
        the solution has changed, or is gone)."""
        if not request_id:
            return None
        check_name(request_id, "request_id")
        return await accepted_before(self.repo, self.leases, domain, solution, request_id)
