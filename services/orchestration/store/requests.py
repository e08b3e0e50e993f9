"""Requests on the internal channel: how they are made, published and
accepted (one place for the gateway, the bus interface and the monitor)."""

from __future__ import annotations

import contextlib
import time
import uuid as uuidlib

import nats.js.errors
from nats.js import JetStreamContext

from orchestration.model.lifecycle import TASK_ENDED
from orchestration.model.names import check_name
from orchestration.store.leases import LEASE_REVISION_HEADER, Leases
from orchestration.store.repository import Repository
from orchestration.store.subjects import Subjects
from orchestration.store.wire import STREAM_FULL
from orchestration.v1 import model_pb2 as pb
from orchestration.v1 import records_pb2 as rpb
from orchestration_sdk.runtime import telemetry
from orchestration_sdk.status_errors import FailedPrecondition, NotFound, ResourceExhausted

# Ids of a request named by its client are derived from that name (and the solution).
_CLIENT_IDS = uuidlib.UUID("5f1c6f0e-2b7a-4c43-9a55-1f0c2d3e4a6b")


Change = (rpb.Request.Deploy | rpb.Request.SetCluster | rpb.Request.SetInstance | rpb.Request.SetSolution
          | rpb.Request.Remove | rpb.Request.Reconcile | rpb.Request.Resume | rpb.Request.Rollback
          | rpb.Request.SetPolicy)

# The field of Request's `change` that holds each kind of change.
_CHANGE_FIELDS = {f.message_type.full_name: f.name for f in rpb.Request.DESCRIPTOR.oneofs_by_name["change"].fields}


def new_request(change: Change, domain: str, solution: str, source: str, traceparent: str = "",
                request_id: str = "", actor: str = "", reason: str = "") -> rpb.Request:
    """A request for `change` with ids for itself and its root task: fresh
    ones, or with a client's `request_id` the same ones each time (a retry is
    the same request)."""
    uuid, task = _ids(domain, solution, request_id)
    request = rpb.Request(
        uuid=uuid, task=task, domain=domain, solution=solution, source=source, traceparent=traceparent,
        accepted=time.time_ns(), client_request_id=request_id, actor=actor or source, reason=reason,
    )
    getattr(request, _CHANGE_FIELDS[change.DESCRIPTOR.full_name]).CopyFrom(change)
    return request


# Who asks for the rollbacks a failure policy makes (its actor and source).
FAILURE_POLICY = "failure-policy"


def policy_rollback(domain: str, solution: str, failed: int, to: int, why: str, traceparent: str = "") -> rpb.Request:
    """The rollback the failure policy asks for after revision `failed`: its
    id derives from that revision, so that the dispatcher's (a failed change),
    the monitor's (a failed status check) and any retry are one request."""
    return new_request(rpb.Request.Rollback(to=to, failed=failed), domain, solution, FAILURE_POLICY, traceparent,
                       f"rollback-of-revision-{failed}", FAILURE_POLICY, why)


def _ids(domain: str, solution: str, request_id: str) -> tuple[str, str]:
    """Ids of a request and of its root task."""
    if not request_id:
        return str(uuidlib.uuid4()), str(uuidlib.uuid4())
    check_name(request_id, "request_id")
    named = f"{domain}/{solution}/{request_id}"
    return str(uuidlib.uuid5(_CLIENT_IDS, "request " + named)), str(uuidlib.uuid5(_CLIENT_IDS, "task " + named))


def root_task(request: rpb.Request) -> pb.Task:
    """The root task of the tree a request creates."""
    return pb.Task(
        uuid=request.task, type=pb.TASK_TYPE_SOLUTION, domain=request.domain, solution=request.solution,
        version=request.deploy.version, request=request.uuid, status=pb.TASK_STATUS_INITIAL,
        created=request.accepted, updated=request.accepted, trace=telemetry.trace_id_of(request.traceparent),
        actor=request.actor,
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
    at once must not be told "busy".

    A request named by its client (`client_request_id`) is accepted once: a
    retry returns the same root task, whether the first was queued, ran or
    ended; one that was not accepted (withdrawn after an error) is tried again."""
    stored: int | None = None
    if request.client_request_id:
        accepted, stored = await _accepted_before(repo, leases, request)
        if accepted:
            return request.task
    try:
        revision = await leases.accept(request)
    except FailedPrecondition:
        current = await leases.get(request.domain, request.solution)
        if current is not None and current.record.task == request.task:
            return request.task  # the same request, accepted by a concurrent retry
        if current is None or not await _ended(repo, request.domain, current.record.task):
            raise
        revision = await leases.accept(request, over=current)
    try:
        await repo.tasks.put_task(root_task(request), stored)
        try:
            await js.publish(
                subjects.internal_request(request.domain, request.solution),
                request.SerializeToString(),
                headers={"Nats-Msg-Id": request.uuid, LEASE_REVISION_HEADER: str(revision)},
            )
        except nats.js.errors.APIError as err:
            if err.err_code != STREAM_FULL:
                raise
            raise ResourceExhausted("request not accepted: the internal channel is at its size cap "
                                    "(ORCH_REQUESTS_MAX_MB); are the dispatchers running?") from err
    except Exception:
        with contextlib.suppress(Exception):
            await leases.withdraw(request, revision)
        raise
    return request.task


async def accepted_before(repo: Repository, leases: Leases, domain: str, solution: str, request_id: str) -> str | None:
    """The root task of the request the client named `request_id`, if it was
    accepted already (whatever became of it since, the solution's removal
    included): a retry is answered with it before anything is checked again."""
    uuid, task = _ids(domain, solution, request_id)
    request = rpb.Request(uuid=uuid, task=task, domain=domain, solution=solution, client_request_id=request_id)
    accepted, _ = await _accepted_before(repo, leases, request)
    return request.task if accepted else None


async def _ended(repo: Repository, domain: str, task: str) -> bool:
    try:
        return (await repo.tasks.get_task(domain, task)).value.status in TASK_ENDED
    except NotFound:
        return False


async def _accepted_before(repo: Repository, leases: Leases, request: rpb.Request) -> tuple[bool, int | None]:
    """Whether a request with this client id was accepted already (its root
    task has started, or its lease is queued), and the revision of a root
    task left behind by an attempt that was not accepted."""
    try:
        stored = await repo.tasks.get_task(request.domain, request.task)
    except NotFound:
        return False, None
    if stored.value.status != pb.TASK_STATUS_INITIAL:
        return True, stored.revision
    current = await leases.get(request.domain, request.solution)
    return current is not None and current.record.task == request.task, stored.revision
