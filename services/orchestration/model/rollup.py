"""The one roll-up rule: how a group of instances (a cluster, an element, a
solution) is counted and what state it is said to be in. The console, the
CLI and the bus status messages all say what this module computes. Pure.

Each instance is counted once, in exactly one column:

- `failure` when its state is failure;
- `in_transition` when it is not at its target (and not failed);
- else by its state: `initial`, `inactive` or `active`.

So the columns always add up to `instances`. The group's `state` is failure
if any member failed, else the lowest state any member is in (initial <
inactive < active; a group with no members is initial, and adds nothing to
the group it is merged into: an empty cluster does not make its element or
its solution initial); the group is
`settled` when no member is in transition. What a person reads (`label`) is
"failure", "in transition" when something is moving, else the state.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from orchestration.model.lifecycle import ACTIVE, FAILURE, INACTIVE, INITIAL, state_name
from orchestration.v1.model_pb2 import State

IN_TRANSITION = "in_transition"
_ORDER = (INITIAL, INACTIVE, ACTIVE)


@dataclass
class Tally:
    """The counts of one group; add instances (or other tallies) to it."""

    instances: int = 0
    initial: int = 0
    inactive: int = 0
    active: int = 0
    failure: int = 0
    in_transition: int = 0
    # The states present among the members (current states, moving ones included).
    _present: int = 0

    def add(self, state: int, target: int) -> Tally:
        """One instance, in `state`, asked to be in `target` (unspecified: initial)."""
        state, target = state or INITIAL, target or INITIAL
        self.instances += 1
        self._present |= 1 << state
        if state == FAILURE:
            self.failure += 1
        elif state != target:
            self.in_transition += 1
        elif state == INITIAL:
            self.initial += 1
        elif state == INACTIVE:
            self.inactive += 1
        else:
            self.active += 1
        return self

    def merge(self, other: Tally) -> Tally:
        """Add every member of `other` (a cluster's tally into its solution's)."""
        for name in ("instances", "initial", "inactive", "active", "failure", "in_transition"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self._present |= other._present
        return self

    @property
    def at_target(self) -> int:
        return self.instances - self.failure - self.in_transition

    @property
    def settled(self) -> bool:
        return self.in_transition == 0

    @property
    def state(self) -> State:
        """failure if any member failed, else the lowest state present; initial when empty."""
        if self._present & (1 << FAILURE):
            return FAILURE
        return next((s for s in _ORDER if self._present & (1 << s)), INITIAL)

    @property
    def label(self) -> str:
        """What a person reads: failure, in_transition (something is moving), or the state."""
        if self.failure:
            return state_name(FAILURE)
        return IN_TRANSITION if self.in_transition else state_name(self.state)

    def counts(self) -> dict[str, int]:
        return {"instances": self.instances, "initial": self.initial, "inactive": self.inactive, "active": self.active,
                "failure": self.failure, "in_transition": self.in_transition}


def tally(members: Iterable[tuple[int, int]]) -> Tally:
    """The tally of (state, target) pairs."""
    found = Tally()
    for state, target in members:
        found.add(state, target)
    return found
