"""The scheduler and the retry policy on their own: gates, concurrency,
wake-ups, retries with back-off, time-outs and stopping, on a fake clock.
No NATS, no processes, no event loop."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable

import pytest

from dispatcher.run.operations import Outcome, RetryPolicy, Verdict, outcome_of
from dispatcher.run.scheduler import Scheduler
from dispatcher.settings import EngineSettings
from dispatcher.run.state import ClusterSlot, InstanceSlot, SolutionState
from orchestration.model.lifecycle import ACTIVE, INACTIVE, INITIAL, next_state, plan_transitions
from orchestration.v1 import controller_pb2 as cpb
from orchestration.v1 import model_pb2 as pb
from orchestration.v1.model_pb2 import Transition
from orchestration_sdk.runtime.backoff import Backoff, Jitter

T = Transition
S = pb.TaskStatus
CONTEXT, SERVICE = pb.DEPENDENCY_TYPE_CONTEXT, pb.DEPENDENCY_TYPE_SERVICE


class FakeClock:
    """Time moves only when a test says so; callbacks run in time order."""

    def __init__(self) -> None:
        self.now = 0.0
        self._due: list[tuple[float, int, Callable[[], object]]] = []
        self._order = itertools.count()
        self._cancelled: set[int] = set()

    def time(self) -> float:
        return self.now

    def call_later(self, delay: float, callback: Callable[[], object]) -> _Timer:
        number = next(self._order)
        heapq.heappush(self._due, (self.now + delay, number, callback))
        return _Timer(self, number)

    def advance(self, seconds: float) -> None:
        until = self.now + seconds
        while self._due and self._due[0][0] <= until:
            when, number, callback = heapq.heappop(self._due)
            self.now = when
            if number not in self._cancelled:
                callback()
        self.now = until


class _Timer:
    def __init__(self, clock: FakeClock, number: int) -> None:
        self._clock, self._number = clock, number

    def cancel(self) -> None:
        self._clock._cancelled.add(self._number)


class Harness:
    """A solution of clusters and instances, a scheduler, and a log of started operations."""

    def __init__(self, concurrency: int = 100) -> None:
        self.state = SolutionState()
        self.clock = FakeClock()
        self.started: list[tuple[str, Transition]] = []
        self.in_flight: list[str] = []  # started and not answered yet, oldest first
        self.idle_calls = 0
        self.scheduler = Scheduler(self.state, concurrency, self.clock, self._start, self._idle)

    def _start(self, slot: InstanceSlot) -> None:
        self.started.append((slot.record.uuid, slot.path[0]))
        self.in_flight.append(slot.record.uuid)

    def _idle(self) -> None:
        self.idle_calls += 1

    def cluster(self, element: str, target: int = ACTIVE, relationships: tuple[tuple[str, int], ...] = (),
                remove: bool = False, parameters: dict[str, str] | None = None) -> ClusterSlot:
        record = pb.Cluster(version="1", target=target, remove=remove)
        for provider, kind in relationships:
            record.relationships.add(name=provider, element=provider, version="1", type=kind)
        slot = ClusterSlot(element=element, record=record, revision=1, component=element, controller="sim",
                           parameters=parameters or {})
        self.state.add_cluster(slot)
        return slot

    def instance(self, element: str, uuid: str, state: int = INITIAL, target: int = ACTIVE, remove: bool = False,
                 version: str = "1") -> InstanceSlot:
        record = pb.Instance(uuid=uuid, state=state, target=target, remove=remove)
        slot = InstanceSlot(element, version, record, revision=1)
        slot.path = plan_transitions(state, target)
        self.state.add_instance(slot)
        return slot

    def start_all(self) -> None:
        self.state.link()
        for slot in list(self.state.instances.values()):
            self.scheduler.schedule(slot)

    def succeed(self, uuid: str) -> None:
        """The operation in flight for `uuid` succeeded: its state moves on."""
        slot = self.state.instances[uuid]
        self.in_flight.remove(uuid)
        transition = slot.path[0]
        self.scheduler.answered(slot)

        def apply() -> None:
            slot.record.state = next_state(slot.record.state or INITIAL, transition)
            slot.path.pop(0)
            slot.attempt = 1

        self.state.update(slot, apply)
        self.scheduler.advance(slot)
        self.scheduler.handled()

    def retry(self, uuid: str, delay: float) -> None:
        slot = self.state.instances[uuid]
        self.in_flight.remove(uuid)
        self.scheduler.answered(slot)
        self.scheduler.retry_later(slot, delay)
        self.scheduler.advance(slot)
        self.scheduler.handled()

    def run_to_end(self, limit: int = 1000) -> None:
        """Answer every started operation with success until nothing runs."""
        for _ in range(limit):
            if not self.in_flight:
                return
            self.succeed(self.in_flight[0])
        raise AssertionError("the run does not end")

    def started_of(self, uuid: str) -> list[Transition]:
        return [t for u, t in self.started if u == uuid]


# ---- gates (DESIGN.md section 3) ---------------------------------------------------


def test_create_waits_for_context_providers_to_be_active_and_is_woken_when_they_are() -> None:
    h = Harness()
    h.cluster("network")
    h.cluster("server", relationships=(("network", CONTEXT),))
    h.instance("network", "n1")
    h.instance("server", "s1")
    h.start_all()
    assert h.started == [("n1", T.TRANSITION_CREATE)]
    assert "s1" in h.state.clusters[("network", "1")].waiters["active"]
    h.succeed("n1")  # network created: inactive, not active yet
    assert h.started_of("s1") == []
    h.succeed("n1")  # configure
    h.succeed("n1")  # start: the network is active
    assert h.started_of("s1") == [T.TRANSITION_CREATE]


def test_create_of_a_service_dependant_does_not_wait_but_its_start_does() -> None:
    h = Harness()
    h.cluster("db")
    h.cluster("app", relationships=(("db", SERVICE),))
    h.instance("db", "d1")
    h.instance("app", "a1")
    h.start_all()
    assert ("a1", T.TRANSITION_CREATE) in h.started
    h.succeed("a1")
    h.succeed("a1")  # created and configured: start waits for db
    assert h.started_of("a1") == [T.TRANSITION_CREATE, T.TRANSITION_CONFIGURE]
    h.run_to_end()
    assert h.started_of("a1")[-1] == T.TRANSITION_START
    starts = [u for u, t in h.started if t == T.TRANSITION_START]
    assert starts.index("d1") < starts.index("a1")


def test_stop_waits_until_service_dependants_have_stopped() -> None:
    h = Harness()
    h.cluster("db", target=INACTIVE)
    h.cluster("app", target=INACTIVE, relationships=(("db", SERVICE),))
    h.instance("db", "d1", state=ACTIVE, target=INACTIVE)
    h.instance("app", "a1", state=ACTIVE, target=INACTIVE)
    h.start_all()
    assert h.started == [("a1", T.TRANSITION_STOP)]
    h.succeed("a1")
    assert h.started[-1] == ("d1", T.TRANSITION_STOP)


def test_destroy_waits_until_context_dependants_are_destroyed_reverse_teardown() -> None:
    h = Harness()
    h.cluster("network", target=INITIAL, remove=True)
    h.cluster("server", target=INITIAL, remove=True, relationships=(("network", CONTEXT),))
    h.instance("network", "n1", state=INACTIVE, target=INITIAL, remove=True)
    h.instance("server", "s1", state=INACTIVE, target=INITIAL, remove=True)
    h.start_all()
    assert h.started == [("s1", T.TRANSITION_DESTROY)]
    h.succeed("s1")
    assert h.started[-1] == ("n1", T.TRANSITION_DESTROY)


def test_a_retired_cluster_stops_only_after_its_replacement_is_active() -> None:
    h = Harness()
    old = pb.Cluster(version="1", target=INITIAL, remove=True)
    h.state.add_cluster(ClusterSlot("web", old, 1, "web", "sim", {}))
    new = pb.Cluster(version="2", target=ACTIVE)
    h.state.add_cluster(ClusterSlot("web", new, 1, "web", "sim", {}))
    h.instance("web", "old", state=ACTIVE, target=INITIAL, remove=True, version="1")
    h.instance("web", "new", version="2")
    h.start_all()
    assert h.started == [("new", T.TRANSITION_CREATE)]
    h.succeed("new")
    h.succeed("new")
    assert h.started_of("old") == []
    h.succeed("new")  # the replacement is active
    assert h.started_of("old") == [T.TRANSITION_STOP]


def test_a_big_waiting_cluster_is_not_woken_by_each_operation_of_its_provider() -> None:
    h = Harness()
    h.cluster("network")
    h.cluster("server", relationships=(("network", CONTEXT),))
    for i in range(3):
        h.instance("network", f"n{i}")
    for i in range(50):
        h.instance("server", f"s{i:02}")
    h.start_all()
    network = h.state.clusters[("network", "1")]
    assert len(network.waiters["active"]) == 50
    for step in range(3):
        for i in range(3):
            h.succeed(f"n{i}")
        if step < 2:
            assert len(network.waiters["active"]) == 50  # not woken until the whole network is active
    assert network.waiters["active"] == set()
    assert len([u for u, t in h.started if u.startswith("s") and t == T.TRANSITION_CREATE]) == 50


# ---- concurrency ---------------------------------------------------------------------


def test_no_more_than_the_concurrency_limit_in_flight_and_the_queue_drains_in_order() -> None:
    h = Harness(concurrency=2)
    h.cluster("web")
    for i in range(5):
        h.instance("web", f"w{i}")
    h.start_all()
    assert [u for u, _ in h.started] == ["w0", "w1"]
    assert list(h.scheduler.ready) == ["w2", "w3", "w4"]
    h.succeed("w0")  # w0's next step and the queue compete for the freed place: w0 goes first
    assert h.scheduler.inflight == 2
    h.run_to_end()
    assert h.scheduler.inflight == 0 and not h.scheduler.ready
    assert all(h.started_of(f"w{i}") == [T.TRANSITION_CREATE, T.TRANSITION_CONFIGURE, T.TRANSITION_START] for i in range(5))


def test_idle_only_when_nothing_is_in_flight_handled_retrying_or_ready() -> None:
    h = Harness()
    h.cluster("web")
    h.instance("web", "w0", state=INACTIVE)
    h.start_all()
    assert not h.scheduler.idle
    h.succeed("w0")
    assert h.scheduler.idle and h.idle_calls == 1


def test_never_idle_while_the_run_is_still_setting_instances_going() -> None:
    # The run sets instances going in slices; everything started so far may
    # end before the next slice, which must not end the run.
    h = Harness()
    h.cluster("web")
    h.instance("web", "w0", state=INACTIVE)
    h.scheduler.setting_going = True
    h.start_all()
    h.succeed("w0")
    assert not h.scheduler.idle and h.idle_calls == 0
    h.instance("web", "w1", state=INACTIVE)
    h.scheduler.schedule(h.state.instances["w1"])
    h.scheduler.all_going()
    assert h.idle_calls == 0
    h.succeed("w1")
    assert h.scheduler.idle and h.idle_calls == 1


def test_instances_counted_before_they_are_made_hold_their_cluster_like_made_ones() -> None:
    # A run counts the instances a deploy adds (state.expect) and makes them
    # as it goes: until the last is made and active, a dependant waits.
    h = Harness()
    db = h.cluster("db")
    h.cluster("app", relationships=(("db", CONTEXT),))
    h.state.expect(db, 2, busy=True)
    h.instance("app", "a0")
    h.start_all()
    assert h.started == [] and not db.active
    for uuid in ("d0", "d1"):
        record = pb.Instance(uuid=uuid, state=INITIAL, target=ACTIVE)
        slot = InstanceSlot("db", "1", record, revision=None, path=plan_transitions(INITIAL, ACTIVE))
        h.state.add_instance(slot, counted=True)
        h.scheduler.schedule(slot)
    before = (db.live, db.busy)
    for _ in range(3):
        h.succeed("d0")
    assert h.started_of("a0") == [] and db.busy == 1
    for _ in range(3):
        h.succeed("d1")
    assert h.started_of("a0") == [T.TRANSITION_CREATE] and before == (2, 2) and (db.live, db.live_active, db.busy) == (2, 2, 0)


# ---- retries, back-off, time-outs on the fake clock -----------------------------------


def test_a_retry_waits_its_delay_on_the_clock_then_starts_again_with_the_next_attempt() -> None:
    h = Harness()
    h.cluster("web")
    slot = h.instance("web", "w0", state=INACTIVE)
    h.start_all()
    h.retry("w0", 2.0)
    assert slot.waiting and slot.attempt == 2 and h.scheduler.retrying == 1
    assert not h.scheduler.idle
    h.clock.advance(1.9)
    assert h.started_of("w0") == [T.TRANSITION_START]
    h.clock.advance(0.1)
    assert h.started_of("w0") == [T.TRANSITION_START, T.TRANSITION_START]
    assert not slot.waiting and h.scheduler.retrying == 0
    assert h.state.clusters[("web", "1")].busy == 1  # counters kept through the wait


def test_the_deadline_stops_the_run_with_timeout_and_clears_the_queue() -> None:
    h = Harness(concurrency=1)
    h.cluster("web")
    h.instance("web", "w0")
    h.instance("web", "w1")
    h.start_all()
    h.scheduler.deadline(60.0)
    h.clock.advance(59.0)
    assert not h.scheduler.stopping
    h.clock.advance(1.0)
    assert h.scheduler.final_status == S.TASK_STATUS_TIMEOUT
    assert "deadline of 60s" in h.scheduler.stopping
    assert not h.scheduler.ready
    h.succeed("w0")  # the operation in flight finishes; nothing new starts
    assert h.started == [("w0", T.TRANSITION_CREATE)]
    assert h.scheduler.idle


def test_a_cancelled_deadline_never_fires() -> None:
    h = Harness()
    timer = h.scheduler.deadline(5.0)
    timer.cancel()
    h.clock.advance(10.0)
    assert h.scheduler.stopping == ""


def test_the_first_stop_reason_stays() -> None:
    h = Harness()
    h.scheduler.stop("stopped: boom", S.TASK_STATUS_FAILED)
    h.scheduler.stop("terminated on request", S.TASK_STATUS_TERMINATED)
    assert (h.scheduler.stopping, h.scheduler.final_status) == ("stopped: boom", S.TASK_STATUS_FAILED)


def test_a_terminated_subtree_starts_nothing_more_while_the_rest_goes_on() -> None:
    h = Harness(concurrency=1)
    h.cluster("web")
    a = h.instance("web", "a")
    b = h.instance("web", "b")
    a.task, b.task = "task-a", "task-b"
    h.start_all()
    assert list(h.scheduler.ready) == ["b"]
    h.scheduler.exclude(["task-b"])
    h.scheduler.terminated_subtree()
    assert not h.scheduler.ready
    h.run_to_end()
    assert h.started_of("b") == []
    assert h.started_of("a") == [T.TRANSITION_CREATE, T.TRANSITION_CONFIGURE, T.TRANSITION_START]
    assert h.scheduler.final_status == S.TASK_STATUS_TERMINATED
    assert h.scheduler.never_runnable() == []


def test_work_blocked_for_ever_is_reported_when_the_run_is_idle() -> None:
    h = Harness()
    h.cluster("server", relationships=(("network", CONTEXT),))
    h.cluster("network", target=INITIAL)  # never becomes active
    h.instance("server", "s1")
    h.start_all()
    assert h.started == [] and h.scheduler.idle
    assert [s.record.uuid for s in h.scheduler.never_runnable()] == ["s1"]


# ---- the retry policy ------------------------------------------------------------------


def _cluster(parameters: dict[str, str] | None = None) -> ClusterSlot:
    return ClusterSlot("web", pb.Cluster(version="1"), 1, "web", "sim", parameters or {})


def test_retryable_outcomes_get_a_jittered_back_off_delay_and_fail_after_the_attempts() -> None:
    policy = RetryPolicy(EngineSettings(max_attempts=3, backoff_base=0.5, backoff_max=1.5), uniform=lambda lo, hi: hi)
    slot = InstanceSlot("web", "1", pb.Instance(uuid="w"), 1)
    retry = Outcome(Verdict.RETRY, "busy", label="retryable")
    assert policy.decide(retry, slot, _cluster(), T.TRANSITION_START).delay == 0.5
    slot.attempt = 2
    assert policy.decide(retry, slot, _cluster(), T.TRANSITION_START).delay == 1.0
    slot.attempt = 3
    failed = policy.decide(retry, slot, _cluster(), T.TRANSITION_START)
    assert failed.verdict is Verdict.FAIL
    assert failed.message == "start failed after 3 attempts: busy"


def test_the_controllers_retry_after_wins_over_the_back_off() -> None:
    policy = RetryPolicy(EngineSettings())
    slot = InstanceSlot("web", "1", pb.Instance(uuid="w"), 1)
    outcome = outcome_of(cpb.OperationResult(outcome=cpb.OUTCOME_RETRYABLE, retry_after_ms=2500), "start")
    assert policy.decide(outcome, slot, _cluster(), T.TRANSITION_START).delay == 2.5


def test_a_permanent_failure_fails_at_once_and_ok_passes() -> None:
    policy = RetryPolicy(EngineSettings())
    slot = InstanceSlot("web", "1", pb.Instance(uuid="w"), 1)
    permanent = outcome_of(cpb.OperationResult(outcome=cpb.OUTCOME_PERMANENT, message="no disk"), "create")
    assert policy.decide(permanent, slot, _cluster(), T.TRANSITION_CREATE).message == "create failed: no disk"
    ok = outcome_of(cpb.OperationResult(outcome=cpb.OUTCOME_OK), "create")
    assert policy.decide(ok, slot, _cluster(), T.TRANSITION_CREATE).verdict is Verdict.OK


@pytest.mark.parametrize(("parameters", "timeout", "attempts"), [
    ({}, 30.0, 5),
    ({"orch_operation_timeout": "2.5", "orch_max_attempts": "1"}, 2.5, 1),
    ({"orch_operation_timeout": "soon", "orch_max_attempts": "many"}, 30.0, 5),
])
def test_a_clusters_parameters_override_the_engine_limits(parameters: dict[str, str], timeout: float, attempts: int) -> None:
    policy = RetryPolicy(EngineSettings(operation_timeout=30.0, max_attempts=5))
    assert policy.timeout_of(_cluster(parameters)) == timeout
    assert policy.attempts_of(_cluster(parameters)) == attempts


# ---- the one back-off rule ------------------------------------------------------------


def test_backoff_grows_by_its_factor_and_is_capped() -> None:
    backoff = Backoff(first=0.2, maximum=1.0)
    assert [backoff.delay(n) for n in range(1, 6)] == [0.2, 0.4, 0.8, 1.0, 1.0]
    assert backoff.ceiling(10_000) == 1.0  # no overflow however many failures


@pytest.mark.parametrize(("jitter", "low", "high"), [(Jitter.FULL, 0.0, 0.8), (Jitter.HALF, 0.4, 0.8)])
def test_backoff_jitter_draws_within_its_band(jitter: Jitter, low: float, high: float) -> None:
    backoff = Backoff(first=0.2, maximum=10.0, jitter=jitter)
    drawn: list[tuple[float, float]] = []
    backoff.delay(3, uniform=lambda a, b: drawn.append((a, b)) or a)
    assert drawn == [(low, high)]


def test_backoff_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="factor >= 1"):
        Backoff(first=1.0, maximum=2.0, factor=0.5)


# ---- pause and resume --------------------------------------------------------------


def test_a_pause_starts_nothing_more_lets_running_operations_finish_and_unpause_goes_on() -> None:
    h = Harness(concurrency=2)
    h.cluster("web")
    for i in range(4):
        h.instance("web", f"w{i}")
    h.start_all()
    assert [u for u, _ in h.started] == ["w0", "w1"]
    h.scheduler.pause()
    h.succeed("w0")  # its create finishes; its configure (the next boundary) waits, as do w2 and w3
    h.succeed("w1")
    assert len(h.started) == 2 and h.scheduler.inflight == 0
    assert not h.scheduler.idle and h.idle_calls == 0  # waiting, not over
    h.clock.advance(3600)
    assert len(h.started) == 2
    h.scheduler.unpause()
    assert h.scheduler.inflight == 2
    h.run_to_end()
    assert all(h.started_of(f"w{i}") == [T.TRANSITION_CREATE, T.TRANSITION_CONFIGURE, T.TRANSITION_START] for i in range(4))
    assert h.scheduler.idle and h.idle_calls >= 1


def test_an_operation_held_back_unsent_by_a_pause_queues_and_the_run_waits_paused_not_idle() -> None:
    """What the run does with an operation a pause caught before it left
    (waiting for its domain's quota or its record): its place is given
    back, it queues (no attempt counted), and the run is paused, not over."""
    h = Harness()
    h.cluster("web")
    h.instance("web", "w0")
    h.start_all()
    assert h.started == [("w0", T.TRANSITION_CREATE)]
    h.scheduler.pause()
    slot = h.state.instances["w0"]
    h.in_flight.remove("w0")
    h.scheduler.answered(slot)  # in the order Run._operated gives them
    h.scheduler.schedule(slot)
    h.scheduler.handled()
    assert list(h.scheduler.ready) == ["w0"] and h.scheduler.inflight == 0
    assert not h.scheduler.idle and h.idle_calls == 0 and slot.attempt == 1
    h.scheduler.unpause()
    h.run_to_end()
    assert h.started_of("w0") == [T.TRANSITION_CREATE] * 2 + [T.TRANSITION_CONFIGURE, T.TRANSITION_START]
    assert h.scheduler.idle


def test_a_retry_or_a_woken_waiter_due_during_a_pause_waits_for_the_unpause() -> None:
    h = Harness()
    h.cluster("db")
    h.cluster("web", relationships=(("db", pb.DEPENDENCY_TYPE_CONTEXT),))
    h.instance("db", "d0")
    h.instance("web", "w0")
    h.start_all()
    assert [u for u, _ in h.started] == ["d0"]
    h.retry("d0", 5.0)
    h.scheduler.pause()
    h.clock.advance(10)  # the retry is due: it queues
    assert len(h.started) == 1 and not h.scheduler.idle
    h.scheduler.unpause()
    h.run_to_end()
    assert h.started_of("w0") == [T.TRANSITION_CREATE, T.TRANSITION_CONFIGURE, T.TRANSITION_START]


def test_a_stop_while_paused_ends_the_run() -> None:
    h = Harness(concurrency=1)
    h.cluster("web")
    h.instance("web", "w0")
    h.instance("web", "w1")
    h.start_all()
    h.scheduler.pause()
    h.succeed("w0")
    h.scheduler.stop("terminated on request", pb.TASK_STATUS_TERMINATED)
    assert h.scheduler.idle and h.idle_calls >= 1


def test_a_pause_stops_the_deadlines_clock() -> None:
    h = Harness()
    h.cluster("web")
    h.instance("web", "w0")
    h.start_all()
    h.scheduler.deadline(60)
    h.clock.advance(10)
    h.scheduler.pause()
    h.clock.advance(600)  # paused far past the deadline: not timed out
    assert not h.scheduler.stopping
    h.scheduler.unpause()
    h.clock.advance(49)
    assert not h.scheduler.stopping
    h.clock.advance(2)
    assert h.scheduler.stopping.startswith("task tree exceeded its deadline of 60s")
    assert h.scheduler.final_status == pb.TASK_STATUS_TIMEOUT
