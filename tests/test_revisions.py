"""Revisions: the rules (what a change leaves as desired state, how it is
named, what differs between two, what a rollback puts back, which revision
the failure policy rolls back to), and their store on an in-memory bucket
with NATS KV's semantics (numbering, once per request, the newest kept, an
outcome written once). No NATS."""

from __future__ import annotations

import pytest

from orchestration.model import planner, revisions
from orchestration.store import keys as rk
from orchestration.store.requests import new_request
from orchestration.store.revisions import RevisionStore
from orchestration.v1 import model_pb2 as pb
from orchestration.v1 import records_pb2 as rpb
from test_write_order import DOMAIN, SOLUTION, FakeBucket, design

pytestmark = pytest.mark.unit
O = pb.RevisionOutcome


def deployed(version: str = "V1") -> pb.Solution:
    architecture, catalog = design(version)
    counter = iter(range(1000))
    return planner.merge(None, planner.desired_solution(DOMAIN, SOLUTION, architecture, catalog),
                         new_uuid=lambda: f"{version}-{next(counter)}")


def revision(solution: pb.Solution, number: int = 1, **fields: object) -> pb.Revision:
    desired, apart = revisions.desired_of(solution)
    return pb.Revision(number=number, desired=desired, instance_targets=apart, **fields)  # type: ignore[arg-type]


def test_the_desired_state_leaves_out_instances_observed_state_and_what_is_leaving() -> None:
    solution = deployed()
    solution.elements[0].clusters[0].state = pb.STATE_ACTIVE
    solution.elements[0].clusters[0].instances[0].state = pb.STATE_ACTIVE
    bigger = planner.merge(solution, planner.desired_solution(DOMAIN, SOLUTION, *design("V2")))
    bigger.elements[2].clusters.add(version="V0", remove=True, size=1)  # a cluster being torn down
    desired, apart = revisions.desired_of(bigger)
    assert [(e.name, [(c.version, c.size, len(c.instances), c.state) for c in e.clusters]) for e in desired.elements] == [
        ("e0", [("V1", 3, 0, 0)]), ("e1", [("V1", 3, 0, 0)]), ("e2", [("V1", 2, 0, 0)])]
    assert apart == {}
    assert (desired.version, desired.target, desired.elements[0].clusters[0].controller) == (
        "V2", pb.STATE_ACTIVE, solution.elements[0].clusters[0].controller)


def test_an_instance_sent_apart_is_kept_by_uuid_and_put_back_by_a_rollback() -> None:
    solution = deployed()
    uuid = solution.elements[1].clusters[0].instances[1].uuid
    apart = planner.set_instance(solution, "e1", "V1", uuid, pb.STATE_INACTIVE)
    kept = revision(apart)
    assert dict(kept.instance_targets) == {uuid: pb.STATE_INACTIVE}
    upgraded = planner.merge(apart, planner.desired_solution(DOMAIN, SOLUTION, *design("V2")))
    back = revisions.restore(upgraded, kept)
    live = {i.uuid: i.target for e in back.elements for c in e.clusters for i in c.instances if not i.remove}
    assert live[uuid] == pb.STATE_INACTIVE
    assert sum(1 for t in live.values() if t == pb.STATE_ACTIVE) == 2 + 3 - 1 + 1


def test_a_rollback_puts_back_sizes_and_targets_and_removes_what_came_after() -> None:
    v1 = deployed()
    first = revision(v1)
    v2 = planner.merge(v1, planner.desired_solution(DOMAIN, SOLUTION, *design("V2")))
    v2 = planner.set_cluster(v2, "e0", "V1", 1, pb.STATE_INACTIVE)
    back = revisions.restore(v2, first)
    assert revisions.desired_of(back)[0] == first.desired
    live = {(e.name, c.version): [i for i in c.instances if not i.remove] for e in back.elements for c in e.clusters}
    assert {k: len(v) for k, v in live.items()} == {("e0", "V1"): 2, ("e1", "V1"): 3, ("e2", "V1"): 1}
    assert all(i.target == pb.STATE_ACTIVE for found in live.values() for i in found)
    leaving = [i for e in back.elements for c in e.clusters for i in c.instances if i.remove]
    assert len(leaving) == 2 + 1  # e0 was cut from 3 to 1 (and grows back to 2), e2 shrinks from 2 to 1
    assert revisions.diff(revision(v2, 2), first) == [
        "version: V2 -> V1",
        "e0/V1 size: 1 -> 2", "e0/V1 max: 3 -> 2", "e0/V1 target: inactive -> active", "e0/V1 parameter version: V2 -> V1",
        "e1/V1 parameter version: V2 -> V1",
        "e2/V1 size: 2 -> 1", "e2/V1 max: 2 -> 1", "e2/V1 parameter version: V2 -> V1"]


def test_a_diff_names_each_difference_once_in_a_stable_order() -> None:
    v1 = deployed()
    resized = planner.set_cluster(v1, "e1", "V1", 2, pb.STATE_INACTIVE)
    resized.on_failure = pb.FAILURE_POLICY_ROLLBACK
    resized.elements[0].clusters[0].parameters["colour"] = "blue"
    lines = revisions.diff(revision(v1), revision(resized, 2))
    assert lines == ["on failure: hold -> rollback", "e0/V1 parameter colour: (none) -> blue",
                     "e1/V1 size: 3 -> 2", "e1/V1 target: active -> inactive"]
    assert revisions.diff(revision(v1), revision(v1, 2)) == []
    other = revision(v1, 2)
    other.desired.elements[0].clusters[0].version = "V9"
    lines = revisions.diff(revision(v1), other)
    assert lines == ["e0/V1: removed (size 2)", "e0/V9: added (size 2, active)"]


def test_the_failure_policy_rolls_back_to_the_newest_good_revision_before_the_failed_one() -> None:
    def r(number: int, outcome: int, bad: bool = False, change: str = "deploy") -> pb.Revision:
        return pb.Revision(number=number, outcome=outcome, bad=bad, change=change)  # type: ignore[arg-type]
    history = [r(1, O.REVISION_OUTCOME_SUCCEEDED), r(2, O.REVISION_OUTCOME_SUCCEEDED, bad=True),
               r(3, O.REVISION_OUTCOME_FAILED), r(4, O.REVISION_OUTCOME_SUCCEEDED, change="remove"),
               r(5, O.REVISION_OUTCOME_TERMINATED), r(6, O.REVISION_OUTCOME_FAILED)]
    found = revisions.last_succeeded(history, 6)
    assert found is not None and found.number == 1
    assert revisions.last_succeeded(history, 1) is None


def test_each_change_is_named_in_a_line() -> None:
    def described(change: object) -> tuple[str, str]:
        return revisions.describe(new_request(change, DOMAIN, SOLUTION, "test"))  # type: ignore[arg-type]
    assert described(rpb.Request.Deploy(architecture="app", version="V2", sizes={"e1/V2": 2},
                                        on_failure=pb.FAILURE_POLICY_ROLLBACK)) == (
        "deploy", "deploy app V2, e1/V2=2, on failure rollback")
    assert described(rpb.Request.SetCluster(element="e1", cluster="V1", size=0)) == ("resize", "e1/V1 to size 0")
    assert described(rpb.Request.SetCluster(element="e1", cluster="V1", state=pb.STATE_INACTIVE)) == (
        "resize", "e1/V1 to inactive")
    assert described(rpb.Request.SetSolution(state=pb.STATE_ACTIVE)) == ("state", "every cluster to active")
    assert described(rpb.Request.Rollback(to=3, failed=5)) == ("rollback", "rollback to revision 3 (revision 5 failed)")
    assert described(rpb.Request.Remove()) == ("remove", "remove the solution")
    assert described(rpb.Request.SetPolicy(on_failure=pb.FAILURE_POLICY_HOLD)) == ("policy", "on failure hold")


def test_the_same_desired_state_is_recognised_whatever_the_failure_policy() -> None:
    a, b = revision(deployed()), revision(deployed())
    b.desired.on_failure = pb.FAILURE_POLICY_ROLLBACK
    assert revisions.same_desired(a, b)
    b.desired.elements[0].clusters[0].size += 1
    assert not revisions.same_desired(a, b)


async def test_revisions_are_numbered_recorded_once_per_request_and_the_newest_kept() -> None:
    bucket = FakeBucket()
    store = RevisionStore(bucket, kept=3)  # type: ignore[arg-type]
    numbers = []
    for n in range(5):
        stored = await store.record(pb.Revision(domain=DOMAIN, solution=SOLUTION, request=f"r{n}", change="deploy"))
        again = await store.record(pb.Revision(domain=DOMAIN, solution=SOLUTION, request=f"r{n}", change="deploy"))
        assert again == stored  # a resumed run records nothing new
        numbers.append(stored.number)
    assert numbers == [1, 2, 3, 4, 5]
    assert [v.value.number for v in await store.all(DOMAIN, SOLUTION)] == [5, 4, 3]
    assert all(v.value.outcome == O.REVISION_OUTCOME_RUNNING for v in await store.all(DOMAIN, SOLUTION))
    with pytest.raises(Exception, match="revision 1 of solution 'shop/app' not found; it has revisions 3 to 5"):
        await store.get(DOMAIN, SOLUTION, 1)


async def test_an_outcome_is_written_once_unless_a_rollback_replaces_a_failure() -> None:
    store = RevisionStore(FakeBucket())  # type: ignore[arg-type]
    await store.record(pb.Revision(domain=DOMAIN, solution=SOLUTION, request="r1"))
    ended = await store.end(DOMAIN, SOLUTION, 1, O.REVISION_OUTCOME_FAILED, "boom", bad=True)
    assert ended is not None and (ended.outcome, ended.error, ended.bad) == (O.REVISION_OUTCOME_FAILED, "boom", True)
    assert await store.end(DOMAIN, SOLUTION, 1, O.REVISION_OUTCOME_SUCCEEDED) is None
    rolled = await store.end(DOMAIN, SOLUTION, 1, O.REVISION_OUTCOME_ROLLED_BACK,
                             replace=frozenset({O.REVISION_OUTCOME_FAILED}))
    assert rolled is not None and (rolled.outcome, rolled.error, rolled.bad) == (O.REVISION_OUTCOME_ROLLED_BACK, "boom", True)
    assert await store.end(DOMAIN, SOLUTION, 9, O.REVISION_OUTCOME_FAILED) is None


async def test_revisions_written_before_their_domain_was_removed_are_dead() -> None:
    bucket = FakeBucket()
    store = RevisionStore(bucket)  # type: ignore[arg-type]
    await store.record(pb.Revision(domain=DOMAIN, solution=SOLUTION, request="old"))
    await bucket.put(rk.grave_key(DOMAIN), b"")
    assert await store.all(DOMAIN, SOLUTION) == []
    again = await store.record(pb.Revision(domain=DOMAIN, solution=SOLUTION, request="new"))
    assert again.number == 1


def test_the_monitor_rolls_back_only_a_recent_successful_change_under_the_rollback_policy() -> None:
    from monitor.compensation import ROLLBACK_WINDOW, rollback_for

    def r(number: int, change: str = "deploy", outcome: int = O.REVISION_OUTCOME_SUCCEEDED, ended: int = 1_000,
          policy: int = pb.FAILURE_POLICY_ROLLBACK) -> pb.Revision:
        return pb.Revision(number=number, change=change, outcome=outcome, ended_unix_ms=ended,  # type: ignore[arg-type]
                           desired=pb.Solution(on_failure=policy))  # type: ignore[arg-type]
    now = 1_000 + int(ROLLBACK_WINDOW * 1000)
    found = rollback_for([r(1), r(2)], now)
    assert found is not None and (found[0].number, found[1].number) == (2, 1)
    assert rollback_for([r(1), r(2)], now + 1) is None  # too long after the change: repaired, not blamed on it
    assert rollback_for([r(1), r(2, policy=pb.FAILURE_POLICY_HOLD)], now) is None
    assert rollback_for([r(1), r(2, change="rollback")], now) is None  # a rollback is not rolled back
    assert rollback_for([r(1), r(2, outcome=O.REVISION_OUTCOME_RUNNING)], now) is None  # its run decides
    assert rollback_for([r(2)], now) is None  # nothing earlier to go back to
