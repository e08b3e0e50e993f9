"""One way to build a gRPC server of the suite: bearer-token authentication,
exception-to-status mapping, health checking and server reflection."""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Protocol

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from opentelemetry.trace import SpanKind

from orchestration_sdk.runtime import telemetry
from orchestration_sdk.runtime.concurrency import while_valid
from orchestration_sdk.runtime.metrics import GRPC_CALLS, labelled
from orchestration_sdk.runtime.status import status_of
from orchestration_sdk.runtime.tls import TlsConfig
from orchestration_sdk.runtime.wire import MAX_MESSAGE_BYTES
from orchestration_sdk.status_errors import InvalidArgument

log = logging.getLogger(__name__)

# Calls that need no token: probes and schema discovery.
PUBLIC_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")
TOKEN_HINT = "the suite's first admin token is in $ORCH_HOME/token; admins make others with `orch token create`"
# A streaming call re-checks its token at least this often: a revoked one ends it.
STREAM_RECHECK_SECONDS = 0.25


def _token_of(metadata: Iterable[Any] | None) -> str | None:
    for key, value in metadata or ():
        if key == "authorization" and isinstance(value, str) and value.startswith("Bearer "):
            return value[len("Bearer "):]
    return None


class Gate(Protocol):
    """Who may call: identifies a caller by its token, admits (or refuses,
    by raising) a decoded request, and records the outcome of each call."""

    async def identify(self, token: str) -> Any | None:
        """The caller holding `token`, or None when it is not valid."""

    async def admit(self, caller: Any, method: str, request: Any) -> None:
        """Raise (PermissionDenied) unless `caller` may make this call."""

    async def record(self, caller: Any | None, method: str, request: Any | None, code: str, message: str) -> None:
        """Note the outcome of a call (an audit trail), if the gate keeps one."""


class SecretGate:
    """One shared secret: whoever presents it may call everything."""

    def __init__(self, token: str) -> None:
        if not token:
            # Fail closed: an empty secret must stop the service, not open it.
            raise ValueError("a gRPC server needs a non-empty token or credential")
        self._token = token.encode()

    async def identify(self, token: str) -> Any | None:
        return True if hmac.compare_digest(token.encode(), self._token) else None

    async def admit(self, caller: Any, method: str, request: Any) -> None:
        return None

    async def record(self, caller: Any | None, method: str, request: Any | None, code: str, message: str) -> None:
        return None


def method_name(method: str) -> str:
    """"/orchestration.v1.SolutionService/DeploySolution" -> "DeploySolution"."""
    return method.rsplit("/", 1)[-1]


class GuardInterceptor(grpc.aio.ServerInterceptor):
    """Checks the bearer token and turns exceptions into gRPC statuses."""

    def __init__(self, gate: Gate | str) -> None:
        self._gate: Gate = SecretGate(gate) if isinstance(gate, str) else gate

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None:
            return handler
        method = details.method
        if method.startswith(PUBLIC_PREFIXES):
            return handler
        given = _token_of(details.invocation_metadata)
        caller = await self._gate.identify(given) if given else None
        if caller is None:
            log.warning("rejected call to %s: %s", method, "missing token" if given is None else "wrong token")
            message = (f"no bearer token: pass the metadata 'authorization: Bearer <token>' ({TOKEN_HINT})" if given is None
                       else f"the bearer token is not valid here: unknown to this gateway, revoked, or mistyped ({TOKEN_HINT})")
            await self._gate.record(None, method_name(method), None, "UNAUTHENTICATED", message)
            return _deny(handler, message)
        return _guard(handler, method, _metadata_value(details.invocation_metadata, "traceparent"), self._gate, caller,
                      lambda: self._still(given or ""))

    async def _still(self, token: str) -> bool:
        """Whether a streaming call's token is still valid (revocation ends its
        stream). When it cannot be checked (NATS away), the stream goes on: it
        was valid a moment ago, and no revocation can be stored meanwhile."""
        try:
            return await self._gate.identify(token) is not None
        except Exception:  # noqa: BLE001 - checked again at the next tick
            return True


def _deny(handler: grpc.RpcMethodHandler, message: str) -> grpc.RpcMethodHandler:
    async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    async def stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)
        yield  # pragma: no cover

    return _rebuild(handler, unary, stream)


def _metadata_value(metadata: Iterable[Any] | None, name: str) -> str:
    for key, value in metadata or ():
        if key == name and isinstance(value, str):
            return value
    return ""


def _guard(handler: grpc.RpcMethodHandler, method: str, traceparent_value: str, gate: Gate,
           caller: Any, still_valid: Callable[[], Awaitable[bool]]) -> grpc.RpcMethodHandler:
    """Wrap a handler: the gate's admission and record, a server span per
    call, errors as statuses, call metrics."""
    tracer = telemetry.tracer("orchestration.grpc")
    parent = telemetry.context_of(traceparent_value)
    name = method_name(method)

    async def fail(exc: BaseException, context: grpc.aio.ServicerContext, span: Any, request: Any) -> None:
        code, message = status_of(exc)
        if code == grpc.StatusCode.INTERNAL:
            log.exception("%s failed", method, exc_info=exc)
        telemetry.fail(span, message)
        labelled(GRPC_CALLS, method, code.name).inc()
        await gate.record(caller, name, request, code.name, message)
        await context.abort(code, message)

    def wrap_unary(behaviour: Callable[..., Any], deserialize: Callable[[bytes], Any] | None = None) -> Callable[..., Any]:
        async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
            with tracer.start_as_current_span(method, context=parent, kind=SpanKind.SERVER) as span:
                try:
                    if deserialize is not None:
                        request = _decode(deserialize, request)
                    await gate.admit(caller, name, request)
                    response = await behaviour(request, context)
                except grpc.aio.AbortError:
                    raise
                except Exception as exc:  # noqa: BLE001 - every error becomes a status
                    await fail(exc, context, span, request)
                labelled(GRPC_CALLS, method, "OK").inc()
                await gate.record(caller, name, request, "OK", "")
                return response

        return call

    def wrap_stream(behaviour: Callable[..., Any], deserialize: Callable[[bytes], Any] | None = None) -> Callable[..., Any]:
        async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
            with tracer.start_as_current_span(method, context=parent, kind=SpanKind.SERVER) as span:
                try:
                    if deserialize is not None:
                        request = _decode(deserialize, request)
                    await gate.admit(caller, name, request)
                    # A revoked token ends the stream within STREAM_RECHECK_SECONDS, quiet or not.
                    async for item in while_valid(behaviour(request, context), still_valid, STREAM_RECHECK_SECONDS):
                        yield item
                except grpc.aio.AbortError:
                    raise
                except Exception as exc:  # noqa: BLE001
                    await fail(exc, context, span, request)
                labelled(GRPC_CALLS, method, "OK").inc()
                await gate.record(caller, name, request, "OK", "")

        return call

    # A single request arrives as bytes and is decoded inside the call, so that
    # an undecodable one is INVALID_ARGUMENT rather than grpc's UNKNOWN.
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(
            wrap_unary(handler.unary_unary, handler.request_deserializer), None, handler.response_serializer
        )
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(
            wrap_stream(handler.unary_stream, handler.request_deserializer), None, handler.response_serializer
        )
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(
            wrap_unary(handler.stream_unary), handler.request_deserializer, handler.response_serializer
        )
    return grpc.stream_stream_rpc_method_handler(
        wrap_stream(handler.stream_stream), handler.request_deserializer, handler.response_serializer
    )


def _decode(deserialize: Callable[[bytes], Any], raw: bytes) -> Any:
    """The request message, or InvalidArgument when the bytes are not one (bad wire format, bad UTF-8)."""
    try:
        return deserialize(raw)
    except Exception as exc:  # noqa: BLE001 - DecodeError, or whatever a custom deserializer raises
        raise InvalidArgument(f"request: cannot be decoded: {exc}") from None


def _rebuild(handler: grpc.RpcMethodHandler, unary: Callable[..., Any], stream: Callable[..., Any]) -> grpc.RpcMethodHandler:
    des, ser = handler.request_deserializer, handler.response_serializer
    # A refused call's single request is never decoded.
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(unary, None, ser)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(unary, des, ser)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(stream, None, ser)
    return grpc.stream_stream_rpc_method_handler(stream, des, ser)


class Server:
    """A grpc.aio server with health and reflection; `health` sets serving status."""

    def __init__(self, address: str, gate: Gate | str, service_names: list[str], tls: TlsConfig | None = None) -> None:
        self.grpc = grpc.aio.server(
            interceptors=[GuardInterceptor(gate)],
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                # A port in use is an error, not a port shared with a stranger.
                ("grpc.so_reuseport", 0),
            ],
        )
        self.health = health.aio.HealthServicer() if hasattr(health, "aio") else health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.grpc)
        self._services = service_names
        reflection.enable_server_reflection(
            [*service_names, health.SERVICE_NAME, reflection.SERVICE_NAME], self.grpc
        )
        try:
            if tls is not None and tls.enabled:
                self.port = self.grpc.add_secure_port(address, tls.server_credentials())
            else:
                self.port = self.grpc.add_insecure_port(address)
        except RuntimeError as err:
            raise OSError(f"cannot listen on {address}: the port is in use or the address is not valid") from err

    async def set_serving(self, serving: bool) -> None:
        """Report every service (and the server as a whole) as (not) serving."""
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ["", *self._services]:
            result = self.health.set(name, status)
            if isinstance(result, Awaitable):
                await result

    async def start(self) -> None:
        await self.grpc.start()

    async def stop(self, grace: float = 2.0) -> None:
        await self.grpc.stop(grace)
