"""The one roll-up rule (orchestration.model.rollup), on the cases a person
saw contradict themselves: a cluster said `active` with no instance active
after a terminate, `initial` while instances were active, and instances
counted twice (by state and as in transition). Pure: no NATS."""

from __future__ import annotations

import pytest

from orchestration.model.lifecycle import ACTIVE, FAILURE, INACTIVE, INITIAL
from orchestration.model.rollup import Tally, tally
from orchestration.v1 import model_pb2 as pb

COLUMNS = ("initial", "inactive", "active", "failure", "in_transition")


def columns(found: Tally) -> dict[str, int]:
    return {name: getattr(found, name) for name in COLUMNS}


def test_every_instance_is_counted_once_and_the_columns_add_up() -> None:
    # Deploying 4: one active, one started (inactive, bound for active), two not created yet.
    found = tally([(ACTIVE, ACTIVE), (INACTIVE, ACTIVE), (INITIAL, ACTIVE), (pb.STATE_UNSPECIFIED, ACTIVE)])
    assert columns(found) == {"initial": 0, "inactive": 0, "active": 1, "failure": 0, "in_transition": 3}
    assert sum(columns(found).values()) == found.instances == 4
    assert found.at_target == 1 and not found.settled
    assert (found.state, found.label) == (INITIAL, "in_transition")  # never "initial" while one is active and others move


def test_after_a_terminate_the_cluster_says_what_its_instances_are() -> None:
    # A deploy to active terminated half-way, the target set to inactive: two stopped, one still active.
    moving = tally([(INACTIVE, INACTIVE), (INACTIVE, INACTIVE), (ACTIVE, INACTIVE)])
    assert (moving.label, moving.active, moving.inactive, moving.in_transition) == ("in_transition", 0, 2, 1)
    # Terminated with the target left at active: nothing runs, nothing is active, so the cluster is not "active".
    held = tally([(INACTIVE, ACTIVE), (INITIAL, ACTIVE)])
    assert (held.state, held.label, held.active) == (INITIAL, "in_transition", 0)
    settled = tally([(INACTIVE, INACTIVE)] * 3)
    assert (settled.state, settled.label, settled.settled) == (INACTIVE, "inactive", True)


@pytest.mark.parametrize(("members", "state", "label"), [
    ([], INITIAL, "initial"),  # nothing exists
    ([(ACTIVE, ACTIVE)] * 2, ACTIVE, "active"),
    ([(ACTIVE, ACTIVE), (INACTIVE, INACTIVE)], INACTIVE, "inactive"),  # settled on different targets: the lowest
    ([(ACTIVE, ACTIVE), (FAILURE, ACTIVE), (INITIAL, ACTIVE)], FAILURE, "failure"),  # failure wins over moving
    ([(FAILURE, INITIAL)], FAILURE, "failure"),
    ([(ACTIVE, INITIAL)], ACTIVE, "in_transition"),  # being torn down
])
def test_state_is_failure_first_else_the_lowest_and_the_label_says_moving(members: list[tuple[int, int]], state: int,
                                                                          label: str) -> None:
    found = tally(members)
    assert (found.state, found.label) == (state, label)


def test_a_solution_is_the_merge_of_its_clusters_by_the_same_rule() -> None:
    db = tally([(ACTIVE, ACTIVE)] * 2)
    app = tally([(INACTIVE, ACTIVE), (ACTIVE, ACTIVE)])
    whole = Tally().merge(db).merge(app)
    assert whole == tally([(ACTIVE, ACTIVE)] * 2 + [(INACTIVE, ACTIVE), (ACTIVE, ACTIVE)])
    assert (whole.instances, whole.active, whole.in_transition, whole.label) == (4, 3, 1, "in_transition")
    assert Tally().merge(Tally()).label == "initial"


def test_an_empty_cluster_adds_nothing_to_its_element_or_solution() -> None:
    empty, active = Tally(), tally([(ACTIVE, ACTIVE)] * 2)
    assert empty.state == INITIAL
    assert Tally().merge(active).merge(empty).label == "active"
