"""The NATS message bus interface of the gateway (requests in): external
systems publish JSON requests on ``<prefix>.requests.<operation>`` and get a
JSON reply. Each operation runs the same code as its gRPC call, so
validation, errors and effects are identical."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from opentelemetry.trace import SpanKind

from gateway.api.access import AccessGate
from gateway.api.automation import AutomationServicer
from gateway.api.solutions import SolutionServicer
from orchestration.model import codec
from orchestration.model.access import Principal
from orchestration.model.lifecycle import TRANSITION_NAMES
from orchestration.model.names import check_name
from orchestration.store.revisions import bus_payload as revisions_bus_payload
from orchestration.store.subjects import Subjects
from orchestration.v1 import gateway_pb2 as gw
from orchestration_sdk.runtime import telemetry
from orchestration_sdk.runtime.status import status_of
from orchestration_sdk.status_errors import InvalidArgument, Unauthenticated

log = logging.getLogger("gateway.bus")

MAX_REQUEST_BYTES = 1024 * 1024
# Events one `events` request replays at most (a reply stays well under NATS's payload limit).
REPLAY_LIMIT = 1000
QUEUE_GROUP = "gateway"
# Requests that may take long (a rollback waits for the change it supersedes to stop).
SLOW_OPERATIONS = frozenset({"rollback"})
_STATES = {"initial", "inactive", "active", "failure"}


Handler = Callable[[Any, Any], Awaitable[Any]]


class Bus:
    """Answers bus requests until stopped."""

    def __init__(self, nc: NatsClient, subjects: Subjects, solutions: SolutionServicer, automation: AutomationServicer,
                 gate: AccessGate) -> None:
        self.nc = nc
        self.gate = gate
        self.subjects = subjects
        self.operations: dict[str, tuple[type[Message], Handler]] = {
            "deploy": (gw.DeploySolutionRequest, solutions.DeploySolution),
            "cluster": (gw.UpdateClusterRequest, solutions.UpdateCluster),
            "instance": (gw.UpdateInstanceRequest, solutions.UpdateInstance),
            "solution": (gw.UpdateSolutionRequest, solutions.UpdateSolution),
            "resume": (gw.ResumeSolutionRequest, solutions.ResumeSolution),
            "remove": (gw.RemoveSolutionRequest, solutions.RemoveSolution),
            "rollback": (gw.RollbackSolutionRequest, solutions.RollbackSolution),
            "policy": (gw.SetFailurePolicyRequest, solutions.SetFailurePolicy),
            "pause": (gw.PauseSolutionRequest, solutions.PauseSolution),
            "approve": (gw.ApproveSolutionRequest, solutions.ApproveSolution),
            "reject": (gw.RejectSolutionRequest, solutions.RejectSolution),
            "history": (gw.ListRevisionsRequest, solutions.ListRevisions),
            "diff": (gw.DiffRevisionsRequest, solutions.DiffRevisions),
            "terminate": (gw.TerminateTaskRequest, automation.TerminateTask),
            "task": (gw.RetrieveTaskRequest, automation.RetrieveTask),
            "events": (gw.ListEventsRequest, self.ListEvents),
        }
        self.feeds = automation.feeds
        self.repo = automation.repo
        self._subscription: Subscription | None = None
        self._serving: set[asyncio.Task[None]] = set()
        self.tracer = telemetry.tracer("gateway.bus")

    async def start(self) -> None:
        self._subscription = await self.nc.subscribe(self.subjects.bus_requests_all, queue=QUEUE_GROUP, cb=self._on_message)

    async def stop(self) -> None:
        if self._subscription is not None:
            await self._subscription.unsubscribe()

    async def _on_message(self, msg: Msg) -> None:
        if not is_inbox(msg.reply):
            # The gateway's NATS user may write the suite's buckets and subjects: a reply
            # goes only to a bus client's inbox, never to a subject the client chose.
            log.warning("bus request on %s ignored: its reply subject %r is not an _INBOX subject",
                        msg.subject, msg.reply[:200])
            return
        operation = msg.subject.rsplit(".", 1)[-1]
        if operation in SLOW_OPERATIONS:
            # Answered on its own (it may wait for a running change to stop):
            # the requests after it are not held up.
            serving = asyncio.create_task(self._serve(operation, msg))
            self._serving.add(serving)
            serving.add_done_callback(self._serving.discard)
            return
        await self._serve(operation, msg)

    async def _serve(self, operation: str, msg: Msg) -> None:
        parent = telemetry.context_of((msg.headers or {}).get("traceparent", ""))
        with self.tracer.start_as_current_span(f"bus {operation}", context=parent, kind=SpanKind.SERVER) as span:
            reply = await self.answer(operation, msg.data, _bearer((msg.headers or {}).get("Authorization", "")))
            if "error" in reply:
                telemetry.fail(span, reply["error"]["message"])
        await self.nc.publish(msg.reply, json.dumps(reply).encode())

    async def answer(self, operation: str, data: bytes, token: str = "") -> dict[str, Any]:
        """The JSON reply to one request: a result, or {"error": {"code", "message"}}.

        The token comes from the ``Authorization: Bearer <token>`` header or
        the payload's ``token`` field; rights and the audit trail are those
        of the same call over gRPC."""
        principal: Principal | None = None
        method = operation
        try:
            found = self.operations.get(operation)
            if found is None:
                raise InvalidArgument(f"unknown operation {operation!r}; one of {', '.join(sorted(self.operations))}")
            request_type, handler = found
            method = handler.__name__
            fields = parse_payload(data)
            given = fields.pop("token", None)
            if given is not None and not isinstance(given, str):
                raise InvalidArgument("token: expected a string")
            token = token or given or ""
            principal = await self.gate.identify(token) if token else None
            if principal is None:
                raise Unauthenticated("missing or invalid token: send the header 'Authorization: Bearer <token>' "
                                      "or a \"token\" field")
            if operation == "events":
                _PAGE.set(_page(fields))
            request = to_request(fields, request_type)
        except Exception as exc:  # noqa: BLE001 - every failure becomes an error reply
            code, message = status_of(exc)
            await self.gate.record(principal, method, None, code.name, message)
            return {"error": {"code": code.name, "message": message}}
        try:
            return render_reply(request, await self.gate.call(principal, method, handler, request))
        except Exception as exc:  # noqa: BLE001 - every failure becomes an error reply (the gate audited it)
            code, message = status_of(exc)
            if code == grpc.StatusCode.INTERNAL:
                log.exception("bus request %s failed", operation)
            return {"error": {"code": code.name, "message": message}}


    async def ListEvents(self, request: gw.ListEventsRequest, context: Any) -> dict[str, Any]:  # noqa: N802 - its right's name
        """A page of the stored events of a domain (or task), as the bus
        published them: how a bus client replays what it missed, with the
        rights of ListEvents. Bus clients have no JetStream access of their
        own: a consumer they made could deliver onto any subject."""
        check_name(request.domain, "domain")
        if request.task:
            check_name(request.task, "task")
        await self.repo.model.require_domain(request.domain)
        after, limit = _PAGE.get()
        events, last, more = await self.feeds.replay(request.domain, request.task, after, limit)
        return {"events": events, "last": last, "more": more}


# The page an `events` request asks for: (after, limit).
_PAGE: ContextVar[tuple[int, int]] = ContextVar("page", default=(0, REPLAY_LIMIT))


def _page(fields: dict[str, Any]) -> tuple[int, int]:
    """`after` (a stream sequence, default 0: from the start) and `limit`
    (1..REPLAY_LIMIT, default REPLAY_LIMIT) of an `events` request, taken
    out of its fields."""
    after, limit = fields.pop("after", 0), fields.pop("limit", REPLAY_LIMIT)
    if isinstance(after, bool) or not isinstance(after, int) or after < 0:
        raise InvalidArgument("after: expected the sequence of the last event replayed (a number >= 0; 0: from the start)")
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= REPLAY_LIMIT:
        raise InvalidArgument(f"limit: expected a number from 1 to {REPLAY_LIMIT}")
    return after, limit


def is_inbox(subject: str) -> bool:
    """A bus client's reply subject: its inbox (`_INBOX_bus.`, `_INBOX_bus-<client>.`,
    or `_INBOX.` under a NATS user of the operator's) and plain tokens (no
    wildcard, no empty token). Only that client may read there."""
    if not subject.startswith(("_INBOX.", "_INBOX_bus.", "_INBOX_bus-")) or len(subject) > 256:
        return False
    tokens = subject.split(".")
    return all(t and t not in ("*", ">") and t.isprintable() and " " not in t for t in tokens)


def _bearer(header: str) -> str:
    return header[len("Bearer "):] if header.startswith("Bearer ") else ""


def parse_payload(data: bytes) -> dict[str, Any]:
    """A JSON payload as a dict (InvalidArgument when it is not one JSON object)."""
    if len(data) > MAX_REQUEST_BYTES:
        raise InvalidArgument(f"payload: {len(data)} bytes is over the limit of {MAX_REQUEST_BYTES}")
    try:
        payload = json.loads(data.decode("utf-8"), object_pairs_hook=_refuse_duplicates)
    except UnicodeDecodeError as err:
        raise InvalidArgument(f"payload: not UTF-8 ({err.reason} at byte {err.start})") from None
    except json.JSONDecodeError as err:
        raise InvalidArgument(f"payload: malformed JSON at line {err.lineno}, column {err.colno}: {err.msg}") from None
    except RecursionError:
        raise InvalidArgument("payload: JSON nested too deeply") from None
    except ValueError as err:  # an integer of more than 4300 digits, a duplicate key
        raise InvalidArgument(f"payload: {str(err).split(';')[0]}") from None
    if not isinstance(payload, dict):
        raise InvalidArgument(f"payload: expected a JSON object, got {type(payload).__name__}")
    return payload


def to_request(payload: dict[str, Any], request_type: type[Message]) -> Message:
    """A parsed payload as a gRPC request message (same field names)."""
    state = payload.get("state")
    if isinstance(state, str) and state.lower() in _STATES:
        payload["state"] = "STATE_" + state.upper()
    try:
        return json_format.ParseDict(payload, request_type())
    except json_format.ParseError as err:
        raise InvalidArgument(f"payload: {err}") from None


def _refuse_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object as a dict; a repeated key is an error (one reader would take the first, another the last)."""
    found: dict[str, Any] = {}
    for key, value in pairs:
        if key in found:
            raise ValueError(f"duplicate key {key!r}")
        found[key] = value
    return found


def render_reply(request: Message, response: Message | dict[str, Any]) -> dict[str, Any]:
    """The JSON reply of a successful request."""
    if isinstance(response, dict):
        return response
    if isinstance(response, gw.RetrieveTaskResponse):
        return {
            "task": response.task.uuid,
            "document": codec.to_document(response.task),
            "subtasks": [codec.to_document(t) for t in response.subtasks],
        }
    if isinstance(response, gw.TerminateTaskResponse):
        return {"task": request.task}  # type: ignore[attr-defined]
    if isinstance(response, gw.PauseSolutionResponse):
        p = response.pause
        return {"paused": True, "actor": p.actor, "reason": p.reason, "since": p.since_unix_ms}
    if isinstance(response, gw.ListRevisionsResponse):
        return {"revisions": [json.loads(revisions_bus_payload(r)) for r in response.revisions]}
    if isinstance(response, gw.DiffRevisionsResponse):
        return {"changes": list(response.changes)}
    if isinstance(response, gw.RollbackSolutionResponse):
        if not response.task:  # a plan
            return {"transitions": [{"element": t.element, "cluster": t.cluster, "instance": t.instance,
                                     "transition": TRANSITION_NAMES.get(t.transition, ""), "waits_for": list(t.waits_for)}
                                    for t in response.transitions]}
        return {"task": response.task, "superseded_task": response.superseded_task}
    return {"task": response.task}  # type: ignore[attr-defined]
