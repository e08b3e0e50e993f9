"""Translation between the wire contract (protobuf) and the SDK's frozen
dataclasses, so that user code never touches generated messages."""

from __future__ import annotations

import logging
import time
from types import MappingProxyType

from controllers.sdk.context import DependencyKind, InstanceRef, OperationContext, Provider
from controllers.sdk.controller import InstanceState
from orchestration.lifecycle import STATES_BY_NAME, TRANSITION_NAMES

from orchestration.v1 import controller_pb2 as pb
from orchestration.v1.model_pb2 import DependencyType, State

__all__ = ["STATE_VALUES", "TRANSITION_NAMES", "deadline_of", "instance_ref", "instance_status", "operation_context"]

# Used when a caller (grpcurl, a test) sends no deadline: an operation without
# any bound could hold a concurrency slot forever.
DEFAULT_TIMEOUT_S = 300.0

# The lifecycle's names, shared with the rest of the suite (one definition).
STATE_VALUES: dict[str, State] = dict(STATES_BY_NAME)

_KINDS: dict[int, DependencyKind] = {
    DependencyType.DEPENDENCY_TYPE_CONTEXT: "context",
    DependencyType.DEPENDENCY_TYPE_SERVICE: "service",
}


def instance_ref(ref: pb.InstanceReference) -> InstanceRef:
    """The SDK form of an instance reference."""
    return InstanceRef(
        ref.domain, ref.solution, ref.element, ref.cluster, ref.uuid, ref.component, ref.component_version
    )


def instance_status(uuid: str, state: InstanceState) -> pb.InstanceStatus:
    """The wire form of an instance's state."""
    return pb.InstanceStatus(uuid=uuid, state=STATE_VALUES[state.state], endpoint=state.endpoint, known=state.known)


def deadline_of(operation: pb.Operation, now: float) -> float:
    """The operation's deadline in time.time() seconds (a default when unset)."""
    if operation.deadline_unix_ms <= 0:
        return now + DEFAULT_TIMEOUT_S
    return operation.deadline_unix_ms / 1000.0


def operation_context(operation: pb.Operation, logger: logging.Logger, now: float | None = None) -> OperationContext:
    """The context user code receives for one operation."""
    ref = operation.instance
    providers = tuple(
        Provider(
            relationship=p.relationship,
            # An unspecified type is treated as the weaker (service) need.
            type=_KINDS.get(p.type, "service"),
            element=p.element,
            cluster=p.cluster,
            endpoints=tuple(p.endpoints),
            configuration=p.configuration,
        )
        for p in operation.providers
    )
    extra = {"operation": operation.operation_id, "instance": ref.uuid, "solution": ref.solution}
    return OperationContext(
        domain=ref.domain,
        solution=ref.solution,
        element=ref.element,
        cluster=ref.cluster,
        uuid=ref.uuid,
        component=ref.component,
        component_version=ref.component_version,
        operation_id=operation.operation_id,
        transition=TRANSITION_NAMES.get(operation.transition, ""),
        attempt=max(1, operation.attempt),
        deadline=deadline_of(operation, time.time() if now is None else now),
        configuration=operation.configuration,
        # Read-only: the context is shared by the whole run of one operation.
        parameters=MappingProxyType(dict(operation.parameters)),
        providers=providers,
        siblings=tuple(operation.siblings),
        logger=logging.LoggerAdapter(logger, extra),
        traceparent=operation.traceparent,
    )
