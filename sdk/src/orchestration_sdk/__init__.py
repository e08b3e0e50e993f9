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

    from orchestration_sdk import Controller, InstanceRef, InstanceState, OperationContext, Result, UNKNOWN
    from orchestration_sdk import Permanent, Retryable, run_controller

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
`runner` (process main), `testing` (loopback helpers for tests),
`lifecycle` (states, transitions and their edges).

The lower layer of the suite lives here too, and the engine builds on it:
`runtime` (what every process is built from: gRPC server, TLS, telemetry,
logs, metrics, back-off, ...), `status_errors` (errors answered with a gRPC
status) and `v1` (the contracts a controller needs, compiled at build time).
The SDK imports nothing of the engine.
"""


from __future__ import annotations

import importlib as _importlib
import os as _os
from typing import TYPE_CHECKING, Any

# A controller that starts processes as another user forks (subprocess uses
# fork, not vfork, to switch user). With gRPC's fork support on, the child
# restarts gRPC's threads before it execs, and one of them crashed there:
# "killed by signal 11 0.0s after it started", one start in three under
# load. Children exec at once and use no gRPC, so the support is not needed.
# Set before grpc is first imported: whatever a process imports of the SDK
# first (the engine's services too, which fork only to exec) comes through here.
_os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

# The public names, each from its module, imported on first use: the engine
# imports the SDK's pure modules (lifecycle, status_errors) and its runtime
# without loading gRPC and the controller machinery.
_PUBLIC = {
    "InstanceRef": "context", "OperationContext": "context", "Provider": "context",
    "UNKNOWN": "controller", "Controller": "controller", "ExtraService": "controller", "InstanceState": "controller",
    "Result": "controller", "StateName": "controller",
    "Permanent": "errors", "Retryable": "errors", "InstanceLocks": "instance_locks",
    "RESULT_STATES": "executor", "execute": "executor",
    "Backoff": "registrar", "Registrar": "registrar", "Registration": "registrar",
    "RunSettings": "runner", "controller_command": "runner", "run_controller": "runner", "serve": "runner",
    "SERVICE_NAME": "servicer", "ControllerServicer": "servicer",
}

__all__ = [
    "RESULT_STATES", "SERVICE_NAME", "UNKNOWN", "Backoff", "Controller", "ControllerServicer", "ExtraService",
    "InstanceLocks", "InstanceRef", "InstanceState", "OperationContext", "Permanent", "Provider", "Registrar", "Registration", "Result",
    "Retryable", "RunSettings", "StateName", "controller_command", "execute", "run_controller", "serve",
]

if TYPE_CHECKING:
    from orchestration_sdk.context import InstanceRef, OperationContext, Provider
    from orchestration_sdk.controller import UNKNOWN, Controller, ExtraService, InstanceState, Result, StateName
    from orchestration_sdk.errors import Permanent, Retryable
    from orchestration_sdk.executor import RESULT_STATES, execute
    from orchestration_sdk.instance_locks import InstanceLocks
    from orchestration_sdk.registrar import Backoff, Registrar, Registration
    from orchestration_sdk.runner import RunSettings, controller_command, run_controller, serve
    from orchestration_sdk.servicer import SERVICE_NAME, ControllerServicer


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'orchestration_sdk' has no attribute {name!r}")
    value = getattr(_importlib.import_module(f"orchestration_sdk.{module}"), name)
    globals()[name] = value  # looked up once
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_PUBLIC})
