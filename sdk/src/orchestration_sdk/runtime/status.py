"""The one place that maps exceptions to gRPC status codes and messages."""

from __future__ import annotations

import grpc

from orchestration_sdk.status_errors import OrchestrationError


def status_of(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The gRPC status code and message for any exception; never a traceback.

    The message is one line of visible text: a name from a hostile request
    (newline, escape sequence, bidi override) is shown escaped, not acted out.
    It is also bounded: it travels in HTTP/2 trailers, where a client drops
    the whole status beyond 16 KiB; a huge name is elided in the middle, so
    the problem (at the end) stays readable."""
    if isinstance(exc, OrchestrationError):
        return grpc.StatusCode[exc.code], _bounded(_visible(exc.message))
    if type(exc).__module__.startswith("nats.") or isinstance(exc, TimeoutError):
        # The store or channel is away or slow (restarting NATS, a lost leader): worth a retry.
        return grpc.StatusCode.UNAVAILABLE, f"NATS did not answer ({type(exc).__name__}); try again in a moment"
    return grpc.StatusCode.INTERNAL, f"internal error ({type(exc).__name__}); see the service log"


MAX_MESSAGE_BYTES = 2048


def _visible(message: str) -> str:
    if message.isprintable():
        return message
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in message)


def _bounded(message: str) -> str:
    data = message.encode()
    if len(data) <= MAX_MESSAGE_BYTES:
        return message
    keep = (MAX_MESSAGE_BYTES - 64) // 2
    head = data[:keep].decode(errors="ignore")
    tail = data[-keep:].decode(errors="ignore")
    return f"{head} ... ({len(message) - len(head) - len(tail)} characters left out) ... {tail}"
