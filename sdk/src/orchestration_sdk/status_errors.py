"""Errors a client can act on, each naming the gRPC status code it is
answered with (by name: this package imports no gRPC;
``orchestration_sdk.runtime.status`` is the one place that maps exceptions to
status codes)."""

from __future__ import annotations


class OrchestrationError(Exception):
    """An error a client can act on; `code` is the gRPC status to return."""

    code: str = "INTERNAL"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(OrchestrationError):
    code = "INVALID_ARGUMENT"


class NotFound(OrchestrationError):
    code = "NOT_FOUND"


class AlreadyExists(OrchestrationError):
    code = "ALREADY_EXISTS"


class FailedPrecondition(OrchestrationError):
    code = "FAILED_PRECONDITION"


class Aborted(OrchestrationError):
    """A compare-and-set write lost a race; the caller may re-read and retry."""

    code = "ABORTED"


class Fenced(OrchestrationError):
    """A write of a deposed owner: the solution's lease moved on since it
    took it. Not a race to retry: the writer stops at once."""

    code = "ABORTED"


class Unauthenticated(OrchestrationError):
    code = "UNAUTHENTICATED"


class PermissionDenied(OrchestrationError):
    """The caller is known but its token's role or domains do not cover the call."""

    code = "PERMISSION_DENIED"


class Unavailable(OrchestrationError):
    code = "UNAVAILABLE"


class DeadlineExceeded(OrchestrationError):
    code = "DEADLINE_EXCEEDED"


class ResourceExhausted(OrchestrationError):
    """A store cap is reached: nothing was written (raise the cap, or remove what is no longer needed)."""

    code = "RESOURCE_EXHAUSTED"
