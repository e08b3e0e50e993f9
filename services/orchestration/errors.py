"""Errors that carry their gRPC status code: the one place that maps
exceptions to status codes."""

from __future__ import annotations

import grpc


class OrchestrationError(Exception):
    """An error a client can act on; `code` is the gRPC status to return."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(OrchestrationError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(OrchestrationError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(OrchestrationError):
    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(OrchestrationError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class Aborted(OrchestrationError):
    """A compare-and-set write lost a race; the caller may re-read and retry."""

    code = grpc.StatusCode.ABORTED


class Unauthenticated(OrchestrationError):
    code = grpc.StatusCode.UNAUTHENTICATED


class Unavailable(OrchestrationError):
    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(OrchestrationError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


def status_of(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The gRPC status code and message for any exception; never a traceback.

    The message is one line of visible text: a name from a hostile request
    (newline, escape sequence, bidi override) is shown escaped, not acted out.
    It is also bounded: it travels in HTTP/2 trailers, where a client drops
    the whole status beyond 16 KiB; a huge name is elided in the middle, so
    the problem (at the end) stays readable."""
    if isinstance(exc, OrchestrationError):
        return exc.code, _bounded(_visible(exc.message))
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
