"""Rights on the gateway: the gate every call passes (gRPC, bus, console),
the servicer that manages tokens and reads the audit trail, and the caller
of the running call for servicers whose answer depends on it."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any, TypeVar

import grpc

from orchestration.model.access import RIGHTS, Principal, check
from orchestration.model.names import REASON_MAX, check_name, check_reason
from orchestration.store.access import AuditTrail, DomainPolicies, Tokens
from orchestration.v1 import gateway_pb2 as gw
from orchestration.v1 import gateway_pb2_grpc as gw_grpc
from orchestration_sdk.runtime import telemetry
from orchestration_sdk.runtime.status import status_of
from orchestration_sdk.status_errors import InvalidArgument, Unauthenticated

log = logging.getLogger("gateway.access")
T = TypeVar("T")

_CALLER: ContextVar[Principal | None] = ContextVar("caller", default=None)
_CHANNEL: ContextVar[str] = ContextVar("channel", default="grpc")
# Who an audit entry names when no valid token was presented.
NOBODY = "-"
_TARGET_FIELDS = ("domain", "solution", "element", "cluster", "instance", "task", "name")


def caller() -> Principal:
    """The principal of the running call (set by the gate before the servicer runs)."""
    principal = _CALLER.get()
    if principal is None:  # pragma: no cover - every call passes the gate first
        raise Unauthenticated("no caller: the call did not pass the gate")
    return principal


def target_of(request: Any) -> tuple[str, str]:
    """The request's domain, and what it acts on as "domain/solution/...";
    a deploy names the solution (the architecture's name by default) and what
    it is deployed from: "domain/solution from architecture version"."""
    parts = []
    for name in _TARGET_FIELDS:
        value = getattr(request, name, "")
        if isinstance(value, str) and value:
            parts.append(value)
    domain = getattr(request, "domain", "")
    domain = domain if isinstance(domain, str) else ""
    architecture, version = getattr(request, "architecture", ""), getattr(request, "version", "")
    deploys = "solution" in getattr(getattr(request, "DESCRIPTOR", None), "fields_by_name", {})
    if deploys and isinstance(architecture, str) and architecture and isinstance(version, str):
        solution = getattr(request, "solution", "") or architecture
        return domain, "/".join(p for p in (domain, solution) if p) + f" from {architecture} {version}".rstrip()
    return domain, "/".join(parts)


class AccessGate:
    """Identifies callers by token, admits calls by role and domain, and
    keeps the audit trail of changes (admitted, refused or failed)."""

    def __init__(self, tokens: Tokens, audit: AuditTrail, channel: str = "grpc") -> None:
        self.tokens = tokens
        self.audit = audit
        self.channel = channel

    def on(self, channel: str) -> AccessGate:
        """The same gate, recording calls as made over another channel ("bus", "console")."""
        return AccessGate(self.tokens, self.audit, channel)

    async def identify(self, token: str) -> Principal | None:
        return await self.tokens.identify(token)

    async def admit(self, principal: Principal, method: str, request: Any) -> None:
        _CALLER.set(principal)
        _CHANNEL.set(self.channel)
        domain, _ = target_of(request)
        check(principal, method, domain)

    async def record(self, principal: Principal | None, method: str, request: Any | None, code: str, message: str) -> None:
        right = RIGHTS.get(method)
        if right is None or not right.changes or principal is None:
            # Calls without a valid token are logged (by the gRPC guard and the bus), not
            # stored: whoever can reach the port could otherwise fill the disk.
            return
        domain, target = target_of(request)
        entry = gw.AuditEntry(
            time_unix_ms=int(time.time() * 1000), actor=principal.name if principal else NOBODY, channel=self.channel,
            method=method, target=target, domain=domain, request_id=str(getattr(request, "request_id", "") or ""),
            trace_id=telemetry.trace_id_of(telemetry.traceparent()), outcome=code, message=message,
            reason=str(getattr(request, "reason", "") or "")[:REASON_MAX],
        )
        try:
            await self.audit.append(entry)
        except Exception:  # noqa: BLE001 - the call's outcome stands; the log says what was not recorded
            log.exception("audit entry not recorded: %s %s by %s: %s", method, target, entry.actor, code)


    async def call(self, principal: Principal, method: str, handler: Callable[[Any, Any], Awaitable[T]], request: Any) -> T:
        """Make one call on behalf of `principal` outside gRPC (the bus, the
        console): admitted as over gRPC, the servicer's own code, the outcome
        audited. Errors are raised for the caller to render."""
        try:
            await self.admit(principal, method, request)
            response = await handler(request, None)
        except Exception as exc:
            code, message = status_of(exc)
            await self.record(principal, method, request, code.name, message)
            raise
        await self.record(principal, method, request, "OK", "")
        return response


class AccessServicer(gw_grpc.AccessServiceServicer):
    def __init__(self, tokens: Tokens, audit: AuditTrail, policies: DomainPolicies,
                 require_domain: Callable[[str], Awaitable[Any]]) -> None:
        self.tokens = tokens
        self.audit = audit
        self.policies = policies
        self._require_domain = require_domain

    async def SetDomainPolicy(self, request: gw.SetDomainPolicyRequest,
                              context: grpc.aio.ServicerContext) -> gw.SetDomainPolicyResponse:
        await self._require_domain(check_name(request.domain, "domain"))
        policy = gw.DomainPolicy(domain=request.domain, self_approval=request.self_approval, actor=caller().name,
                                 updated_unix_ms=int(time.time() * 1000), reason=check_reason(request.reason))
        return gw.SetDomainPolicyResponse(policy=await self.policies.set(policy))

    async def GetDomainPolicy(self, request: gw.GetDomainPolicyRequest,
                              context: grpc.aio.ServicerContext) -> gw.GetDomainPolicyResponse:
        await self._require_domain(check_name(request.domain, "domain"))
        return gw.GetDomainPolicyResponse(policy=await self.policies.get(request.domain))

    async def CreateToken(self, request: gw.CreateTokenRequest, context: grpc.aio.ServicerContext) -> gw.CreateTokenResponse:
        token, secret = await self.tokens.create(request.name, request.role, list(request.domains), caller().name)
        return gw.CreateTokenResponse(token=token, secret=secret)

    async def ListTokens(self, request: gw.ListTokensRequest, context: grpc.aio.ServicerContext) -> gw.ListTokensResponse:
        return gw.ListTokensResponse(tokens=await self.tokens.list())

    async def RevokeToken(self, request: gw.RevokeTokenRequest, context: grpc.aio.ServicerContext) -> gw.RevokeTokenResponse:
        await self.tokens.revoke(request.name)
        return gw.RevokeTokenResponse()

    async def ListAudit(self, request: gw.ListAuditRequest, context: grpc.aio.ServicerContext) -> gw.ListAuditResponse:
        if request.since_seconds != request.since_seconds:  # NaN
            raise InvalidArgument("since_seconds: not a number")
        entries = await self.audit.list(request.domain, request.actor, request.since_seconds, request.limit)
        return gw.ListAuditResponse(entries=entries)
