"""The base class a controller implements: one async method per lifecycle
operation, plus status."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import grpc

from orchestration_sdk.context import InstanceRef, OperationContext
from orchestration_sdk.errors import Permanent

StateName = Literal["initial", "inactive", "active", "failure"]


@dataclass(frozen=True)
class Result:
    """What a successful operation reports: the instance's endpoint and its
    run-time configuration (both flow into the configuration of dependants),
    and a `message` for people: what the operation did (it becomes the comment
    of the task's event; one line per step, at most a few kilobytes).
    Returning None from an operation is the same as `Result()`."""

    endpoint: str = ""
    configuration: str = ""
    message: str = ""


@dataclass(frozen=True)
class InstanceState:
    """The real state of an instance as the controller sees it.

    `known=False` means the controller has no such instance (state "initial").
    """

    state: StateName
    endpoint: str = ""
    known: bool = True


UNKNOWN = InstanceState("initial", "", False)


@dataclass(frozen=True)
class ExtraService:
    """A gRPC service a controller serves next to its ControllerService: on the
    same port, behind the same credential, with health and reflection.

    `name` is the full service name (for health checking and reflection);
    `add` registers the servicer, as the generated ``add_*_to_server`` does.
    """

    name: str
    add: Callable[[grpc.aio.Server], None]


class Controller:
    """Base class of a controller: override the operations your component type needs.

    Every operation takes one `OperationContext` and returns a `Result` (or
    None). Operations must be idempotent: the engine repeats them after a crash
    or a time-out with the same `ctx.operation_id`, so create of an existing
    matching instance succeeds and destroy of a missing one succeeds. Raise
    `Retryable` for transient trouble, `Permanent(...) from err` for what no
    retry fixes; any other exception is reported as retryable. An operation
    that is not overridden fails permanently.

    `open` and `close` run once around serving (open files, connections).

    Example::

        class Echo(Controller):
            def __init__(self) -> None:
                self.states: dict[str, StateName] = {}

            async def create(self, ctx: OperationContext) -> Result:
                self.states.setdefault(ctx.uuid, "inactive")
                return Result(endpoint=f"echo://{ctx.uuid}")

            async def status(self, ref: InstanceRef) -> InstanceState:
                state = self.states.get(ref.uuid)
                return InstanceState(state) if state else UNKNOWN

        run_controller(Echo(), name="Echo", version="V1.0.0", aliases=("echo",))
    """

    async def open(self) -> None:
        """Prepare to serve (called once, before the server starts)."""

    async def close(self) -> None:
        """Release resources (called once, after the server stopped)."""

    async def sync(self) -> None:
        """Make durable what the operations that just finished changed. The
        SDK awaits it before it reports their results (once per stream
        message of results, however many operations it carries, and after
        each single-operation call), so a controller may buffer its writes
        and flush them here instead of once per operation. Raise when it
        cannot, and keep what was not written for the next call: the stream
        then ends, and the operations the engine sends again are answered
        from the SDK's memory of their results (by operation id), not run
        again. Nothing to do by default."""

    def extra_services(self) -> Sequence[ExtraService]:
        """gRPC services of this controller's own to serve next to ControllerService
        (an admin API, say); none by default. Called once, after `open`.

        Example::

            def extra_services(self) -> Sequence[ExtraService]:
                return [ExtraService(ADMIN_SERVICE_NAME, lambda server: add_AdminServicer_to_server(Admin(self), server))]
        """
        return ()

    async def create(self, ctx: OperationContext) -> Result | None:
        """initial -> inactive: bring the instance into existence."""
        raise self._missing("create")

    async def configure(self, ctx: OperationContext) -> Result | None:
        """inactive -> inactive: apply `ctx.configuration` to a stopped instance."""
        raise self._missing("configure")

    async def start(self, ctx: OperationContext) -> Result | None:
        """inactive -> active: start serving."""
        raise self._missing("start")

    async def reconfigure(self, ctx: OperationContext) -> Result | None:
        """active -> active: apply a changed configuration or membership."""
        raise self._missing("reconfigure")

    async def stop(self, ctx: OperationContext) -> Result | None:
        """active -> inactive: stop serving, keep the instance."""
        raise self._missing("stop")

    async def destroy(self, ctx: OperationContext) -> Result | None:
        """inactive -> initial: remove the instance (a missing one is fine)."""
        raise self._missing("destroy")

    async def reset(self, ctx: OperationContext) -> Result | None:
        """failure -> initial: remove whatever is left of a failed instance."""
        raise self._missing("reset")

    async def status(self, ref: InstanceRef) -> InstanceState:
        """The real state of one instance; `UNKNOWN` when there is none."""
        raise self._missing("status")

    async def preview(self, ctx: OperationContext) -> str:
        """What the operation `ctx.transition` would change, changing nothing
        (a dry run, shown by `orch solution plan --preview`); "" when the
        controller cannot tell, which is the default. Raise `Retryable` or
        `Permanent` as from an operation when the preview itself fails."""
        return ""

    def _missing(self, operation: str) -> Permanent:
        return Permanent(f"controller {type(self).__name__} does not implement {operation}")
