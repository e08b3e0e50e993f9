"""Translation between the wire contract (protobuf) and the SDK's frozen
dataclasses, so that user code never touches generated messages."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from types import MappingProxyType

from orchestration_sdk.context import DependencyKind, InstanceRef, OperationContext, Provider
from orchestration_sdk.controller import InstanceState
from orchestration_sdk.lifecycle import STATES_BY_NAME, TRANSITION_NAMES
from orchestration_sdk.v1 import controller_pb2 as pb
from orchestration_sdk.v1.model_pb2 import DependencyType, State

__all__ = ["STATE_VALUES", "TRANSITION_NAMES", "Siblings", "Views", "deadline_of", "instance_ref", "instance_status", "operation_context"]

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


# Member lists a stream message sends once for all its operations (see
# controller.proto, Members), by key.
Views = Mapping[str, tuple[str, ...]]


class Siblings(Sequence[str]):
    """The endpoints of a cluster's members but one (the instance's own): a
    view of the list shared by a whole stream message, so that an operation
    costs nothing per member until its code reads them."""

    def __init__(self, members: tuple[str, ...], own: str) -> None:
        self._members = members
        self._own = own
        self._items: tuple[str, ...] | None = None

    def _all(self) -> tuple[str, ...]:
        if self._items is None:
            self._items = tuple(e for e in self._members if e != self._own) if self._own in self._members else self._members
        return self._items

    def __getitem__(self, index):  # type: ignore[no-untyped-def]
        return self._all()[index]

    def __len__(self) -> int:
        return len(self._all())

    def __iter__(self) -> Iterator[str]:
        return iter(self._all())

    def __eq__(self, other: object) -> bool:
        return tuple(self) == (tuple(other) if isinstance(other, Sequence) else other)

    def __hash__(self) -> int:
        return hash(self._all())

    def __repr__(self) -> str:
        return repr(self._all())


def operation_context(operation: pb.Operation, logger: logging.Logger, now: float | None = None,
                      views: Views | None = None) -> OperationContext:
    """The context user code receives for one operation. Siblings and
    provider endpoints come from `views` where the operation names a member
    list (a stream message), else from the operation itself (a unary call)."""
    views = views or {}
    ref = operation.instance
    providers = tuple(
        Provider(
            relationship=p.relationship,
            # An unspecified type is treated as the weaker (service) need.
            type=_KINDS.get(p.type, "service"),
            element=p.element,
            cluster=p.cluster,
            endpoints=views.get(p.members, ()) if p.members else tuple(p.endpoints),
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
        siblings=Siblings(views.get(operation.members, ()), operation.endpoint) if operation.members else tuple(operation.siblings),
        logger=logging.LoggerAdapter(logger, extra),
        traceparent=operation.traceparent,
        adopt=operation.adopt,
    )
