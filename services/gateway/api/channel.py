"""The gateway's side of the internal channel: accepts requests for the
dispatchers (one solution runs one request at a time)."""

from __future__ import annotations

import grpc
from nats.js import JetStreamContext

from orchestration.leases import Leases
from orchestration.repository import Repository
from orchestration.requests import new_request, submit
from orchestration.subjects import Subjects


def traceparent_of(context: grpc.aio.ServicerContext | None) -> str:
    """The caller's W3C trace context, if it sent one."""
    if context is None:
        return ""
    for key, value in context.invocation_metadata() or ():
        if key == "traceparent" and isinstance(value, str):
            return value
    return ""


class Channel:
    """Submits requests: queue on the solution, store the root task, publish."""

    def __init__(self, repo: Repository, js: JetStreamContext, subjects: Subjects, source: str = "gateway") -> None:
        self.repo = repo
        self.js = js
        self.subjects = subjects
        self.leases = Leases(repo.leases_bucket)
        self.source = source

    async def submit(self, kind: int, domain: str, solution: str, context: grpc.aio.ServicerContext | None = None,
                     **fields: object) -> str:
        """Accept one request; returns its root task id (FailedPrecondition when the solution is busy)."""
        request = new_request(kind, domain, solution, self.source, traceparent_of(context), **fields)
        return await submit(self.repo, self.leases, self.js, self.subjects, request)
