"""The common lifecycle (DESIGN.md section 3): the planning of a path from
one state to another, and the names of task statuses and holds. Pure: no I/O.

The states, transitions and edges are the table controllers share
(``orchestration_sdk.lifecycle``); the engine reads them through this module."""

from __future__ import annotations

import functools
from collections import deque

from google.protobuf.internal.enum_type_wrapper import EnumTypeWrapper

from orchestration.v1 import model_pb2 as pb
from orchestration.v1.model_pb2 import HoldKind, State, TaskStatus, Transition
from orchestration_sdk.lifecycle import (
    ACTIVE,
    EDGES,
    FAILURE,
    INACTIVE,
    INITIAL,
    STATE_NAMES,
    STATES_BY_NAME,
    TRANSITION_NAMES,
    TRANSITIONS_BY_NAME,
)

__all__ = [
    "ACTIVE", "EDGES", "FAILURE", "HOLD_NAMES", "INACTIVE", "INITIAL", "STATE_NAMES", "STATES_BY_NAME", "TASK_ENDED",
    "TRANSITION_NAMES", "TRANSITIONS_BY_NAME", "event_type_name", "hold_name", "next_state", "outcome_name",
    "plan_transitions", "policy_name", "state_name", "task_status_name", "task_type_name",
]

# Task statuses a task never leaves.
TASK_ENDED: tuple[int, ...] = (TaskStatus.TASK_STATUS_COMPLETED, TaskStatus.TASK_STATUS_FAILED,
                               TaskStatus.TASK_STATUS_TIMEOUT, TaskStatus.TASK_STATUS_TERMINATED)

# Why the engine leaves a solution alone (SolutionHold.kind).
HOLD_NAMES: dict[int, str] = {HoldKind.HOLD_KIND_HELD: "held", HoldKind.HOLD_KIND_DEGRADED: "degraded"}


def outcome_name(outcome: int) -> str:
    """"succeeded", "rolled-back", ... ("" when unspecified)."""
    if not outcome:
        return ""
    return pb.RevisionOutcome.Name(outcome).removeprefix("REVISION_OUTCOME_").lower().replace("_", "-")


def policy_name(policy: int) -> str:
    """"hold" or "rollback"."""
    return "rollback" if policy == pb.FAILURE_POLICY_ROLLBACK else "hold"


def state_name(state: int) -> str:
    """Readable name of a state ("" when unspecified)."""
    return STATE_NAMES.get(state, "")


def hold_name(kind: int) -> str:
    """Readable name of a hold kind ("" when the solution is not held)."""
    return HOLD_NAMES.get(kind, "")


def next_state(state: int, transition: Transition) -> State:
    """State reached by applying transition in state; ValueError if not allowed."""
    source, target = EDGES[transition]
    if source != state:
        raise ValueError(f"{TRANSITION_NAMES[transition]} is not allowed in state {state_name(state)}")
    return target


def plan_transitions(current: int, target: int) -> list[Transition]:
    """The transitions from current to target state.

    Initial to active is create, configure, start (a created instance is always
    configured before it starts). Unspecified current means initial.
    """
    return list(_planned(current, target))


@functools.lru_cache(maxsize=64)
def _planned(current: int, target: int) -> tuple[Transition, ...]:
    return tuple(_search(current, target))


def _search(current: int, target: int) -> list[Transition]:
    if current == State.STATE_UNSPECIFIED:
        current = INITIAL
    if current == target:
        return []
    if target == FAILURE:
        raise ValueError("failure is not a target state")
    # Breadth-first over the state-changing edges; configure is added after create.
    queue: deque[tuple[int, list[Transition]]] = deque([(current, [])])
    seen = {current}
    while queue:
        state, path = queue.popleft()
        for transition, (source, dest) in EDGES.items():
            if source != state or dest == source or dest in seen:
                continue
            step = path + [transition]
            if transition == Transition.TRANSITION_CREATE:
                step.append(Transition.TRANSITION_CONFIGURE)
            if dest == target:
                return step
            seen.add(dest)
            queue.append((dest, step))
    raise ValueError(f"no path from {state_name(current)} to {state_name(target)}")


def _names(enum: EnumTypeWrapper, prefix: str) -> dict[int, str]:
    return {number: name.removeprefix(prefix).lower() for name, number in enum.items()}


# Looked up on every status change: dictionaries, not enum reflection.
_TASK_TYPES = _names(pb.TaskType, "TASK_TYPE_")
_EVENT_TYPES = _names(pb.EventType, "EVENT_TYPE_")
_TASK_STATUSES = _names(pb.TaskStatus, "TASK_STATUS_")


def task_type_name(value: int) -> str:
    return _TASK_TYPES.get(value) or pb.TaskType.Name(value)  # Name raises on an unknown value, as before


def event_type_name(value: int) -> str:
    return _EVENT_TYPES.get(value) or pb.EventType.Name(value)


def task_status_name(value: int) -> str:
    return _TASK_STATUSES.get(value) or pb.TaskStatus.Name(value)
