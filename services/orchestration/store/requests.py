"""Requests on the internal channel: how they are made, published and
accepted (one place for the gateway, the bus interface and the monitor)."""

from __future__ import annotations

import contextlib
import time
import uuid as uuidlib

from nats.js import JetStreamContext

from orchestration.model.errors import FailedPrecondition, NotFound
from orchestration.runtime import telemetry
from orchestration.store.leases import Leases
from orchestration.store.repository import Repository
from orchestration.store.subjects import Subjects
from orchestration.v1 import model_pb2 as pb
from orchestration.v1 import records_pb2 as rpb


def new_request(kind: rpb.RequestKind, domain: str, solution: str, source: str, traceparent: str = "", **fields: object) -> rpb.Request:
    """A request with fresh ids for itself and its root task."""
    return rpb.Request(
        uuid=str(uuidlib.uuid4()), task=str(uuidlib.uuid4()), kind=kind, domain=domain, solution=solution,
        source=source, traceparent=traceparent, accepted=time.time_ns(), **fields,  # type: ignore[arg-type]
    )


def root_task(request: rpb.Request) -> pb.Task:
    """The root task of the tree a request creates."""
    return pb.Task(
        uuid=request.task, type=pb.TASK_TYPE_SOLUTION, domain=request.domain, solution=request.solution,
        version=request.version, request=request.uuid, status=pb.TASK_STATUS_INITIAL,
        created=request.accepted, updated=request.accepted, trace=telemetry.trace_id_of(request.traceparent),
    )


async def submit(repo: Repository, leases: Leases, js: JetStreamContext, subjects: Subjects, request: rpb.Request) -> str:
    """Accept a request: queue it on its solution (FailedPrecondition when
    busy), store its root task, publish it. Returns the root task id.

    Should this process die between the steps, the lease holds the whole
    request and a dispatcher picks it up from there. Should a step fail (NATS
    trouble), the queued request is taken back before the error reaches the
    caller, so that an error means "not accepted" and a retry is safe.

    A lease whose root task has ended is free: its dispatcher publishes the
    end before it lets the solution go, and a client that reacts to the end
    at once must not be told "busy"."""
    try:
        revision = await leases.accept(request)
    except FailedPrecondition:
        current = await leases.get(request.domain, request.solution)
        if current is None or not await _ended(repo, request.domain, current.record.task):
            raise
        revision = await leases.accept(request, over=current)
    try:
        await repo.tasks.put_task(root_task(request), None)
        await js.publish(
            subjects.internal_request(request.domain, request.solution),
            request.SerializeToString(),
            headers={"Nats-Msg-Id": request.uuid},
        )
    except Exception:
        with contextlib.suppress(Exception):
            await leases.withdraw(request, revision)
        raise
    return request.task


_ENDED = (pb.TASK_STATUS_COMPLETED, pb.TASK_STATUS_FAILED, pb.TASK_STATUS_TIMEOUT, pb.TASK_STATUS_TERMINATED)


async def _ended(repo: Repository, domain: str, task: str) -> bool:
    try:
        return (await repo.tasks.get_task(domain, task)).value.status in _ENDED
    except NotFound:
        return False
