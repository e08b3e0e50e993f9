"""The rollout gate of one element whose version changes under a rollout
strategy (orchestration.model.rollouts): the new version's instances are
made in batches, each batch once the one before is active, has stayed so
for `check` seconds and the `pause` between batches has passed (or an
operator has approved it); the old version's instances stop only while the
element keeps at least size - max_unavailable active, and the element never
has more than size + max_surge instances alive.

Pure, like the scheduler that consults it: no I/O and no asyncio; time is
the scheduler's clock. Counts come from the run's state (the cluster
counters and the records), so a resumed run picks the rollout up where the
records say it is."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from dispatcher.run.state import ClusterKey, ClusterSlot, InstanceSlot, SolutionState
from orchestration.model.lifecycle import ACTIVE, FAILURE, INITIAL
from orchestration.model.rollouts import Strategy
from orchestration.v1.model_pb2 import Transition

_CREATE = int(Transition.TRANSITION_CREATE)
_STOP = int(Transition.TRANSITION_STOP)


@dataclass
class RolloutGate:
    """Admits the element's creates (new version) and stops (old version)."""

    element: str
    strategy: Strategy
    new: ClusterSlot
    old: list[ClusterSlot]
    state: SolutionState
    # The batch is over and approval is needed: the run pauses the solution (saying why).
    on_approval: Callable[[str], None] = lambda reason: None
    # Asks the controller for the real state of a batch's instances after its check and answers
    # verdict(healthy, what is wrong); without it, a batch that stayed active is healthy.
    verify: Callable[[list[str], Callable[[bool, str], None]], None] | None = None
    # A batch failed its status check: the run holds or fails the change (its failure policy).
    on_unhealthy: Callable[[str], None] = lambda reason: None
    size: int = 0
    made: set[str] = field(default_factory=set)  # new instances admitted to create, or begun before
    stopping: set[str] = field(default_factory=set)  # old instances admitted to stop
    opened: int = 0  # new instances the open batches allow
    parked: deque[str] = field(default_factory=deque)
    waiting: bool = False  # a check or pause between batches runs
    batches_done: int = 0

    def __post_init__(self) -> None:
        self.size = self.new.record.size
        for uuid in self.new.members:
            slot = self.state.instances.get(uuid)
            if slot is not None and (slot.record.state or INITIAL) != INITIAL:
                self.made.add(uuid)  # begun in an earlier run: its batch is open
        batch = self.strategy.batch
        self.opened = min(self.size, max(batch, -(-len(self.made) // batch) * batch))
        self.batches_done = len(self.made) // batch if self._batch_active() else max(0, -(-len(self.made) // batch) - 1)

    @property
    def batch(self) -> int:
        """The number of the batch under way (1 for the first)."""
        return -(-self.opened // self.strategy.batch)

    def admits(self, slot: InstanceSlot) -> bool:
        """Whether the instance's next transition may go as far as the rollout
        is concerned (the dependency gates and the concurrency limit come after)."""
        transition = slot.path[0]
        uuid = slot.record.uuid
        if slot.key == self.new.key and transition == _CREATE:
            if uuid in self.made:
                return True
            if len(self.made) >= self.opened or self._alive() + 1 > self.size + self.strategy.max_surge:
                return False
            self.made.add(uuid)
            return True
        if transition == _STOP and slot.key in self._old_keys():
            if uuid in self.stopping:
                return True
            if self._available() - self._still_stopping() - 1 < self.size - self.strategy.max_unavailable:
                return False
            self.stopping.add(uuid)
            return True
        return True

    def park(self, slot: InstanceSlot) -> None:
        self.parked.append(slot.record.uuid)

    def changed(self, later: Callable[[float, Callable[[], None]], None], wake: Callable[[list[str]], None]) -> None:
        """After an instance of the element moved: admit what may go now, and
        when the batch under way is active, check it and open the next
        (after the pause, or the approval). `later(seconds, callback)` runs a
        callback on the clock; `wake(uuids)` schedules parked instances."""
        wake(self._unpark())
        if self.waiting or self.opened >= self.size or len(self.made) < self.opened or not self._batch_active():
            return
        self.waiting = True

        def checked() -> None:
            if not self._batch_active():
                self.waiting = False  # a member failed or left active: the run decides (see Run._fail)
                return
            if self.verify is None:
                healthy(True, "")
            else:
                self.verify(sorted(self.made), healthy)

        def healthy(ok: bool, wrong: str) -> None:
            if not ok:
                self.waiting = False  # looked at again once the run goes on (see Scheduler.unpause)
                self.on_unhealthy(f"batch {self.batch} of {self.strategy.batches(self.size)} of element "
                                  f"{self.element} is not healthy: {wrong}")
                return
            self.batches_done += 1
            if self.strategy.approval:
                self._open()
                self.on_approval(f"batch {self.batches_done} of {self.strategy.batches(self.size)} of element "
                                 f"{self.element} is active; resume the solution to go on with the next")
                wake(self._unpark())
                return
            def paused() -> None:
                self._open()
                wake(self._unpark())

            later(self.strategy.pause, paused)

        later(self.strategy.check, checked)

    def _open(self) -> None:
        self.waiting = False
        self.opened = min(self.size, self.opened + self.strategy.batch)

    def _unpark(self) -> list[str]:
        """Parked instances, all of them: each is looked at again (and parked again if it may not go yet)."""
        woken = list(self.parked)
        self.parked.clear()
        return woken

    def _batch_active(self) -> bool:
        """Every new instance admitted so far is active (none failed)."""
        for uuid in self.made:
            slot = self.state.instances.get(uuid)
            if slot is None or slot.record.state != ACTIVE or slot.busy:
                return False
        return True

    def _old_keys(self) -> set[ClusterKey]:
        return {c.key for c in self.old}

    def _available(self) -> int:
        """Active instances of the element: the new version's, and the old version's not yet stopped."""
        return self.new.live_active + sum(c.active_going_down for c in self.old)

    def _still_stopping(self) -> int:
        """Old instances admitted to stop that are still active."""
        return sum(1 for uuid in self.stopping
                   if (s := self.state.instances.get(uuid)) is not None and s.record.state == ACTIVE)

    def _alive(self) -> int:
        """Instances of the element that exist or are being made: new ones admitted, old ones not destroyed."""
        return len(self.made) + sum(c.alive_going_away for c in self.old)

    def failed(self) -> bool:
        """A new instance of the rollout failed."""
        return any((s := self.state.instances.get(u)) is not None and s.record.state == FAILURE for u in self.made)
