"""The lifecycle every instance follows, as the engine and its controllers
share it: four states, seven transitions, and the states each transition
leads from and to. Pure: no I/O.

The engine plans paths through this table (``orchestration.model.lifecycle``);
a controller's operation for a transition, once it succeeds, leaves the
instance in the transition's target state.
"""

from __future__ import annotations

from orchestration_sdk.v1.model_pb2 import State, Transition

INITIAL = State.STATE_INITIAL
INACTIVE = State.STATE_INACTIVE
ACTIVE = State.STATE_ACTIVE
FAILURE = State.STATE_FAILURE

STATE_NAMES: dict[int, str] = {INITIAL: "initial", INACTIVE: "inactive", ACTIVE: "active", FAILURE: "failure"}
STATES_BY_NAME: dict[str, State] = {"initial": INITIAL, "inactive": INACTIVE, "active": ACTIVE, "failure": FAILURE}

# The name of a transition is also the name of the Controller method that carries it out.
TRANSITION_NAMES: dict[int, str] = {
    Transition.TRANSITION_CREATE: "create",
    Transition.TRANSITION_CONFIGURE: "configure",
    Transition.TRANSITION_START: "start",
    Transition.TRANSITION_RECONFIGURE: "reconfigure",
    Transition.TRANSITION_STOP: "stop",
    Transition.TRANSITION_DESTROY: "destroy",
    Transition.TRANSITION_RESET: "reset",
}
TRANSITIONS_BY_NAME: dict[str, Transition] = {name: Transition.Value("TRANSITION_" + name.upper()) for name in TRANSITION_NAMES.values()}

# transition -> (from, to)
EDGES: dict[Transition, tuple[State, State]] = {
    Transition.TRANSITION_CREATE: (INITIAL, INACTIVE),
    Transition.TRANSITION_CONFIGURE: (INACTIVE, INACTIVE),
    Transition.TRANSITION_START: (INACTIVE, ACTIVE),
    Transition.TRANSITION_RECONFIGURE: (ACTIVE, ACTIVE),
    Transition.TRANSITION_STOP: (ACTIVE, INACTIVE),
    Transition.TRANSITION_DESTROY: (INACTIVE, INITIAL),
    Transition.TRANSITION_RESET: (FAILURE, INITIAL),
}
