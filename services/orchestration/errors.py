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
    (newline, escape sequence, bidi override) is shown escaped, not acted out."""
    if isinstance(exc, OrchestrationError):
        return exc.code, _visible(exc.message)
    return grpc.StatusCode.INTERNAL, f"internal error ({type(exc).__name__}); see the service log"


def _visible(message: str) -> str:
    if message.isprintable():
        return message
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in message)
