"""The controller SDK: write a controller for a component type by subclassing
`Controller` and implementing its operations.

Each operation method takes one `OperationContext` (instance identity, an
operation id stable across retries, attempt, deadline, configuration,
parameters, providers, siblings, logger, traceparent) and returns a `Result`
(endpoint, run-time configuration) or None. Raise `Retryable` for transient
trouble and `Permanent(...) from err` for what no retry fixes; anything else is
reported as retryable, and an operation that outlives its deadline is cancelled
and reported retryable. The dispatcher owns retry counting and back-off.

Example (a complete controller process)::

    import os

    from controllers.sdk import Controller, InstanceRef, InstanceState, OperationContext, Result, UNKNOWN
    from controllers.sdk import Permanent, Retryable, run_controller

    class Files(Controller):
        '''Instances are files in a directory.'''

        async def create(self, ctx: OperationContext) -> Result:
            path = f"/srv/files/{ctx.uuid}"
            try:
                open(path, "a").close()           # idempotent: exists is fine
            except PermissionError as err:
                raise Permanent("cannot write /srv/files") from err
            except OSError as err:
                raise Retryable(f"disk trouble: {err}", after=2.0)
            return Result(endpoint=f"file://{path}")

        async def status(self, ref: InstanceRef) -> InstanceState:
            exists = os.path.exists(f"/srv/files/{ref.uuid}")
            return InstanceState("inactive", f"file:///srv/files/{ref.uuid}") if exists else UNKNOWN

    if __name__ == "__main__":
        run_controller(Files(), name="Files", version="V1.0.0", aliases=("files",))

Modules: `controller` (base class, Result, InstanceState), `context`
(OperationContext, InstanceRef, Provider), `errors`, `executor` (outcome ->
OperationResult), `dedup`, `servicer` (ControllerService), `registrar`,
`runner` (process main), `testing` (loopback helpers for tests).
"""

import os as _os

# A controller that starts processes as another user forks (subprocess uses
# fork, not vfork, to switch user). With gRPC's fork support on, the child
# restarts gRPC's threads before it execs, and one of them crashed there:
# "killed by signal 11 0.0s after it started", one start in three under
# load. Children exec at once and use no gRPC, so the support is not needed.
# Set before grpc is first imported (the SDK's modules below import it).
_os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")


from controllers.sdk.context import InstanceRef, OperationContext, Provider
from controllers.sdk.controller import UNKNOWN, Controller, ExtraService, InstanceState, Result, StateName
from controllers.sdk.errors import Permanent, Retryable
from controllers.sdk.executor import RESULT_STATES, execute
from controllers.sdk.registrar import Backoff, Registrar, Registration
from controllers.sdk.runner import RunSettings, controller_command, run_controller, serve
from controllers.sdk.servicer import SERVICE_NAME, ControllerServicer

__all__ = [
    "RESULT_STATES",
    "SERVICE_NAME",
    "UNKNOWN",
    "Backoff",
    "Controller",
    "ControllerServicer",
    "ExtraService",
    "InstanceRef",
    "InstanceState",
    "OperationContext",
    "Permanent",
    "Provider",
    "Registrar",
    "Registration",
    "Result",
    "Retryable",
    "RunSettings",
    "StateName",
    "execute",
    "controller_command",
    "run_controller",
    "serve",
]
