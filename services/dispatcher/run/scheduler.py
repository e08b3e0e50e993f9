"""What may run now, in one solution's run: the dependency gates, the
concurrency limit, who waits for whom, retries waiting out their back-off,
stopping and terminated subtrees, and when the run has nothing left to do.

Pure: no I/O and no asyncio. Time comes from an injected Clock (the event
loop in a run, a fake one in tests) and starting an operation is a callback,
so the rules are tested without processes.

Gates (DESIGN.md section 3) are checked in O(1) with per-cluster counters; an
instance whose next transition is blocked waits on the blocking cluster and
is looked at again only when that cluster releases it."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from typing import Protocol

from dispatcher.run.rollout import RolloutGate
from dispatcher.run.state import ClusterSlot, InstanceSlot, SolutionState
from orchestration.v1 import model_pb2 as pb

S = pb.TaskStatus


class Timer(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    """Monotonic seconds and callbacks later (asyncio's event loop is one)."""

    def time(self) -> float: ...

    def call_later(self, delay: float, callback: Callable[[], object]) -> Timer: ...


class Scheduler:
    """Decides when each instance's next transition starts.

    `start(slot)` is called for a transition that may go now (the instance is
    marked in flight first); the caller reports back with `answered` when the
    controller answered, `advance` once the outcome is recorded, and `handled`
    when it is done with the operation. `on_idle()` is called whenever nothing
    is in flight, being handled or waiting out a back-off, and nothing queued
    may start (the run is over, or stopped)."""

    def __init__(self, state: SolutionState, concurrency: int, clock: Clock,
                 start: Callable[[InstanceSlot], None], on_idle: Callable[[], None]) -> None:
        self.state = state
        self.concurrency = concurrency
        self.clock = clock
        self._start = start
        self._on_idle = on_idle
        self.ready: deque[str] = deque()  # may go, waiting for a free place under the concurrency limit
        self.inflight = 0  # operations sent and not answered (bounded by the concurrency limit)
        self.handling = 0  # operations whose outcome is still being recorded
        self.retrying = 0  # instances waiting out a retry back-off
        self.stopping = ""  # why no new operations start ("" while running)
        self.final_status: pb.TaskStatus = S.TASK_STATUS_COMPLETED
        self.terminated: set[str] = set()  # tasks whose subtree starts nothing more
        # The run is still setting its instances going: not idle before that is over (all_going).
        self.setting_going = False
        # Rollout gates of elements whose version changes in batches (see dispatcher.run.rollout).
        self.gates: dict[str, RolloutGate] = {}
        # Paused by an operator: what may go waits in `ready` (operations in flight finish).
        self.paused = False
        self.paused_at = 0.0  # clock time the pause began
        self.paused_for = 0.0  # seconds paused before the current pause (a deadline does not count them)

    # ---- starting ------------------------------------------------------------

    def schedule(self, slot: InstanceSlot) -> None:
        """Start the instance's next transition if nothing blocks it."""
        if self.stopping or slot.inflight or slot.waiting or not slot.path or slot.failed or slot.task in self.terminated:
            return
        gate = self.gates.get(slot.element) if self.gates else None
        if gate is not None and not gate.admits(slot):
            gate.park(slot)
            return
        blockers = self.state.blockers(slot)
        if blockers:
            key, kind = blockers[0]
            self.state.clusters[key].waiters[kind].add(slot.record.uuid)
            return
        if self.inflight >= self.concurrency or self.paused:
            self.ready.append(slot.record.uuid)
            return
        slot.inflight = True  # with work on its path the instance was busy already: no counter changes
        self.inflight += 1
        self.handling += 1
        self._start(slot)

    def answered(self, slot: InstanceSlot) -> None:
        """The operation in flight came back (whatever its outcome): its place is free."""
        self.inflight -= 1
        if slot.path:
            slot.inflight = False  # still busy: no counter changes
        elif slot.record.uuid in self.state.instances:
            self.state.update(slot, lambda: setattr(slot, "inflight", False))

    def advance(self, slot: InstanceSlot) -> None:
        """After an outcome is recorded: the instance's next step, whoever its
        cluster released, and queued instances up to the concurrency limit."""
        cluster = self.state.clusters[slot.key]
        if slot.record.uuid in self.state.instances:
            self.schedule(slot)
        self.wake(cluster)
        gate = self.gates.get(slot.element) if self.gates else None
        if gate is not None:
            gate.changed(self._later, self._schedule_all)
        self._drain()

    def _later(self, seconds: float, callback: Callable[[], object]) -> None:
        """A gate's callback on the clock (the run is not idle while it waits)."""
        def run() -> None:
            if self.stopping:
                return  # the run stops: a rollout's timer does nothing more
            callback()
            self.check_idle()
        self.clock.call_later(seconds, run)

    def _schedule_all(self, uuids: list[str]) -> None:
        for uuid in uuids:
            slot = self.state.instances.get(uuid)
            if slot is not None:
                self.schedule(slot)

    def _drain(self) -> None:
        """Start queued instances up to the concurrency limit (none while paused)."""
        while self.ready and self.inflight < self.concurrency and not self.stopping and not self.paused:
            queued = self.state.instances.get(self.ready.popleft())
            if queued is not None:
                self.schedule(queued)

    def wake(self, cluster: ClusterSlot) -> None:
        """Look again at the instances waiting for what the cluster no longer holds up."""
        waiters: set[str] = set()
        for kind in self.state.released(cluster):
            if cluster.waiters[kind]:
                waiters |= cluster.waiters[kind]
                cluster.waiters[kind] = set()
        for uuid in waiters:
            waiter = self.state.instances.get(uuid)
            if waiter is not None:
                self.schedule(waiter)

    def handled(self) -> None:
        """Done with an operation (its outcome recorded, or given up)."""
        self.handling -= 1
        self.check_idle()

    # ---- retries ---------------------------------------------------------------

    def retry_later(self, slot: InstanceSlot, delay: float) -> None:
        """The instance tries its transition again after `delay` seconds (its next attempt)."""

        def wait() -> None:
            slot.waiting = True
            slot.attempt += 1

        self.state.update(slot, wait)
        self.retrying += 1

        def again() -> None:
            self.retrying -= 1
            if slot.record.uuid in self.state.instances:
                self.state.update(slot, lambda: setattr(slot, "waiting", False))
                self.schedule(slot)
            self.check_idle()

        self.clock.call_later(delay, again)

    # ---- pausing ---------------------------------------------------------------

    def pause(self) -> None:
        """Start no operation until unpause (those in flight finish): each
        instance stops at its next lifecycle boundary."""
        if not self.paused:
            self.paused = True
            self.paused_at = self.clock.time()

    def unpause(self) -> None:
        """Go on where the pause stopped: the queued instances start, up to the limit."""
        if self.paused:
            self.paused = False
            self.paused_for += self.clock.time() - self.paused_at
            self._drain()
            for gate in self.gates.values():
                gate.changed(self._later, self._schedule_all)  # a batch held unhealthy is checked again
            self.check_idle()

    # ---- stopping --------------------------------------------------------------

    def deadline(self, seconds: float) -> Timer:
        """Stop the run with TIMEOUT after `seconds` of not being paused
        (cancel the timer when it ends first): a pause stops the clock."""
        return _Deadline(self, seconds)

    def stop(self, reason: str, status: pb.TaskStatus) -> None:
        """Start nothing more (the first reason stays); in-flight operations finish."""
        if not self.stopping:
            self.stopping = reason
            self.final_status = status
            self.ready.clear()
        self.check_idle()

    def exclude(self, tasks: Iterable[str]) -> None:
        """Instances of these tasks start nothing more (a terminated subtree)."""
        self.terminated.update(tasks)

    def terminated_subtree(self) -> None:
        """A subtree (not the root) was terminated: the rest goes on, the run ends TERMINATED."""
        self.final_status = S.TASK_STATUS_TERMINATED
        self.ready = deque(u for u in self.ready if self.state.instances[u].task not in self.terminated)
        self.check_idle()

    def never_runnable(self) -> list[InstanceSlot]:
        """Instances with work left that nothing will start (asked when the run is idle)."""
        return [s for s in self.state.instances.values() if s.path and not s.failed and s.task not in self.terminated]

    def all_going(self) -> None:
        """Every instance of the run has been set going (see setting_going)."""
        self.setting_going = False
        self.check_idle()

    @property
    def idle(self) -> bool:
        if self.setting_going or self.inflight > 0 or self.handling > 0 or self.retrying > 0:
            return False
        if any(gate.waiting for gate in self.gates.values()) and not self.stopping:
            return False  # a check or a pause between batches runs
        return bool(self.stopping) or not self.ready  # (paused with work queued: waiting, not idle)

    def check_idle(self) -> None:
        if self.idle:
            self._on_idle()


class _Deadline:
    """The run's deadline: it fires once the run has been unpaused for its
    seconds (looked at again when it falls due during or after a pause)."""

    def __init__(self, scheduler: Scheduler, seconds: float) -> None:
        self._scheduler, self._seconds = scheduler, seconds
        self._begun = scheduler.clock.time()
        self._timer = scheduler.clock.call_later(seconds, self._due)

    def _due(self) -> None:
        s = self._scheduler
        now = s.clock.time()
        paused = s.paused_for + (now - s.paused_at if s.paused else 0.0)
        left = self._seconds - (now - self._begun - paused)
        if left > 0:
            self._timer = s.clock.call_later(left, self._due)
            return
        s.stop(f"task tree exceeded its deadline of {self._seconds:.0f}s", S.TASK_STATUS_TIMEOUT)

    def cancel(self) -> None:
        self._timer.cancel()
