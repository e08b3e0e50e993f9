"""The rollout gate's rules on the scheduler, without processes: a version
change of 12 instances with Batch 25% and MaxUnavailable 1 goes in 4
batches and never has fewer than 11 active; a batch waits for the one
before to be active, checked and paused; approval pauses the run; the
surge bound holds; a resumed run picks up where the records are."""

from __future__ import annotations

import pytest

from dispatcher.run.rollout import RolloutGate
from dispatcher.run.state import ClusterSlot, InstanceSlot
from orchestration.model.lifecycle import ACTIVE, INACTIVE, INITIAL, plan_transitions
from orchestration.model.rollouts import strategy
from orchestration.v1 import model_pb2 as pb
from orchestration.v1.model_pb2 import Transition as T
from test_scheduler import Harness

pytestmark = pytest.mark.unit


def upgrade(h: Harness, size: int, rollout: pb.Rollout, begun: int = 0, approvals: list[str] | None = None) -> RolloutGate:
    """web/V1 (size instances, active) replaced by web/V2 (size instances: `begun` of them active already)."""
    old = ClusterSlot("web", pb.Cluster(version="V1", target=INITIAL, remove=True, size=size), 1, "web", "sim", {})
    new = ClusterSlot("web", pb.Cluster(version="V2", target=ACTIVE, size=size), 1, "web", "sim", {})
    h.state.add_cluster(old)
    h.state.add_cluster(new)
    for i in range(size):
        record = pb.Instance(uuid=f"old{i:02d}", state=ACTIVE if i >= begun else INITIAL, target=INITIAL, remove=True)
        slot = InstanceSlot("web", "V1", record, 1)
        slot.path = plan_transitions(record.state, INITIAL)
        h.state.add_instance(slot)
    for i in range(size):
        record = pb.Instance(uuid=f"new{i:02d}", state=ACTIVE if i < begun else INITIAL, target=ACTIVE)
        slot = InstanceSlot("web", "V2", record, 1)
        slot.path = plan_transitions(record.state, ACTIVE)
        h.state.add_instance(slot)
    h.state.link()
    old.rolled_out = True
    gate = RolloutGate("web", strategy(rollout, size), new, [old], h.state,
                       on_approval=(approvals.append if approvals is not None else lambda reason: None))
    h.scheduler.gates["web"] = gate
    return gate


def active(h: Harness) -> int:
    return sum(1 for s in h.state.instances.values() if s.record.state == ACTIVE)


def drive(h: Harness, step: float = 1.0, limit: int = 10_000) -> tuple[int, list[int]]:
    """Answer operations one by one (advancing the clock when nothing is in
    flight) until the run is over or paused; the fewest active seen, and the
    clock time of each new create."""
    fewest, creates_at, seen = active(h), [], 0
    for _ in range(limit):
        for uuid, transition in h.started[seen:]:
            if transition == T.TRANSITION_CREATE and uuid.startswith("new"):
                creates_at.append(int(h.clock.now))
        seen = len(h.started)
        if h.in_flight:
            h.succeed(h.in_flight[0])
        elif h.scheduler.idle or h.scheduler.paused:
            return fewest, creates_at  # over, or waiting for an operator
        else:
            h.clock.advance(step)
        fewest = min(fewest, active(h))
    raise AssertionError("the rollout does not end")


def test_batch_25_percent_max_unavailable_1_goes_in_4_batches_never_below_11_active() -> None:
    h = Harness()
    upgrade(h, 12, pb.Rollout(batch="25%", max_unavailable=1, check="5s", pause="10s"))
    h.start_all()
    fewest, creates_at = drive(h)
    assert fewest >= 11
    waves = sorted(set(creates_at))
    assert len(creates_at) == 12 and len(waves) == 4, creates_at
    assert all(b - a >= 15 for a, b in zip(waves, waves[1:]))  # check (5 s) and pause (10 s) between batches
    assert all(s.record.state == (ACTIVE if s.key == ("web", "V2") else INITIAL) for s in h.state.instances.values())


def test_the_surge_bound_holds_and_without_surge_old_instances_go_first() -> None:
    h = Harness()
    upgrade(h, 4, pb.Rollout(batch="2", max_unavailable=2, max_surge=0))
    h.start_all()
    assert [u for u, _ in h.started] == ["old00", "old01"]  # room first: two old ones stop
    fewest, _ = drive(h)
    assert fewest >= 2


def test_approval_between_batches_pauses_the_run_and_a_resume_goes_on() -> None:
    h = Harness()
    approvals: list[str] = []
    upgrade(h, 4, pb.Rollout(batch="2", max_unavailable=1, pause="approval"), approvals=approvals)
    h.scheduler.gates["web"].on_approval = lambda reason: (approvals.append(reason), h.scheduler.pause())
    h.start_all()
    drive(h)
    assert approvals == ["batch 1 of 2 of element web is active; resume the solution to go on with the next"]
    made = {u for u, t in h.started if t == T.TRANSITION_CREATE}
    assert made == {"new00", "new01"} and h.scheduler.paused and not h.scheduler.idle
    h.scheduler.unpause()
    drive(h)
    assert {u for u, t in h.started if t == T.TRANSITION_CREATE} == {"new00", "new01", "new02", "new03"}


def test_a_resumed_rollout_opens_the_batches_its_records_show_begun() -> None:
    h = Harness()
    gate = upgrade(h, 12, pb.Rollout(batch="3", max_unavailable=1), begun=4)
    assert gate.opened == 6 and gate.made == {"new00", "new01", "new02", "new03"}
    h.start_all()
    fewest, creates_at = drive(h)
    assert fewest >= 11 and len(creates_at) == 8


@pytest.mark.parametrize("rollout, message", [
    (pb.Rollout(batch="0"), "Batch: '0' is not a count"),
    (pb.Rollout(batch="120%"), "not a share of 1% to 100%"),
    (pb.Rollout(batch="x"), "not a count (3) or a share (25%)"),
    (pb.Rollout(batch="1", max_unavailable=-1), "MaxUnavailable: -1 is negative"),
    (pb.Rollout(batch="1", max_surge=0), "both 0"),
    (pb.Rollout(batch="1", pause="soon"), "Pause: 'soon' is not a duration"),
    (pb.Rollout(batch="1", check="10 parsecs"), "Check: '10 parsecs' is not a duration"),
])
def test_a_rollout_that_cannot_work_is_refused_with_where_and_why(rollout: pb.Rollout, message: str) -> None:
    with pytest.raises(Exception, match=message.replace("(", r"\(").replace(")", r"\)")):
        strategy(rollout, 12)


def test_durations_and_shares() -> None:
    s = strategy(pb.Rollout(batch="25%", pause="1m", check="500ms"), 10)
    assert (s.batch, s.max_surge, s.pause, s.check, s.approval, s.batches(10)) == (3, 3, 60.0, 0.5, False, 4)
    assert strategy(pb.Rollout(batch="1", pause="approval"), 3).approval
    assert INACTIVE != ACTIVE  # (states imported for the records above)


def test_a_batch_whose_status_check_fails_holds_the_rollout_until_it_is_checked_healthy_again() -> None:
    h = Harness()
    verdicts: list[bool] = [False, True]  # unhealthy at the first check, healthy at the second
    asked: list[list[str]] = []
    unhealthy: list[str] = []
    gate = upgrade(h, 4, pb.Rollout(batch="2", max_unavailable=1, check="5s"))
    gate.verify = lambda uuids, verdict: (asked.append(uuids), verdict(verdicts.pop(0), "new00 is failure"))
    gate.on_unhealthy = lambda reason: (unhealthy.append(reason), h.scheduler.pause())
    h.start_all()
    drive(h)
    assert asked == [["new00", "new01"]]
    assert unhealthy == ["batch 1 of 2 of element web is not healthy: new00 is failure"]
    assert {u for u, t in h.started if t == T.TRANSITION_CREATE} == {"new00", "new01"}  # no second batch
    h.scheduler.unpause()  # resume: the batch is checked again, and now passes
    drive(h)
    assert len(asked) == 2 and {u for u, t in h.started if t == T.TRANSITION_CREATE} == {f"new0{i}" for i in range(4)}
