"""The settler's rule for an instance's task on its own: it completes as soon
as the instance's work in the run is done, unless a reconfigure may still
come its way. No NATS, no processes."""

from __future__ import annotations

import asyncio

from test_scheduler import Harness

from dispatcher.settling import Settler
from orchestration.model.lifecycle import ACTIVE, INITIAL
from orchestration.v1 import model_pb2 as pb
from orchestration.v1.model_pb2 import Transition

T = Transition


class RecordingBook:
    """The part of the task book the rule uses: which tasks it completed."""

    def __init__(self) -> None:
        self.completed: list[str] = []

    async def set_status(self, uuid: str, status: int, error: str = "", comment: str = "") -> None:
        assert status == pb.TASK_STATUS_COMPLETED
        self.completed.append(uuid)


def settled() -> tuple[Harness, Settler, RecordingBook]:
    """Two clusters run to the end: `quiet` ignores its member list, `chatty` uses it."""
    h = Harness()
    h.cluster("quiet", parameters={"orch_siblings": "ignore"})
    h.cluster("chatty")
    for element, uuid in (("quiet", "q1"), ("quiet", "q2"), ("chatty", "c1"), ("chatty", "c2")):
        h.instance(element, uuid).task = f"task-{uuid}"
    h.instance("chatty", "gone", state=ACTIVE, target=INITIAL, remove=True).task = "task-gone"
    h.start_all()
    h.run_to_end()
    book = RecordingBook()
    settler = Settler(None, book, h.state, h.scheduler, "d", "s")  # type: ignore[arg-type]  # the rule reads nothing
    return h, settler, book


def done(h: Harness, settler: Settler, uuid: str, transition: Transition) -> None:
    slot = h.state.instances[uuid]
    asyncio.run(settler.instance_done(slot, h.state.clusters[slot.key], transition))


def test_an_instance_of_a_cluster_that_ignores_its_members_completes_with_its_last_step() -> None:
    h, settler, book = settled()
    done(h, settler, "q1", T.TRANSITION_START)
    assert book.completed == ["task-q1"]


def test_a_member_that_uses_its_member_list_waits_for_a_reconfigure_that_told_it_the_current_members() -> None:
    h, settler, book = settled()
    done(h, settler, "c1", T.TRANSITION_START)
    assert book.completed == [], "a sibling-aware member completed before its reconfigure"
    c1 = h.state.instances["c1"]
    c1.record.members = "stale"
    done(h, settler, "c1", T.TRANSITION_RECONFIGURE)
    assert book.completed == [], "completed after a reconfigure that told it members it no longer has"
    c1.record.members = h.state.membership(h.state.clusters[c1.key])
    done(h, settler, "c1", T.TRANSITION_RECONFIGURE)
    assert book.completed == ["task-c1"]


def test_an_instance_that_is_no_active_member_completes_at_once() -> None:
    h, settler, book = settled()
    gone = h.state.instances["gone"]
    assert gone.record.state == INITIAL and gone.record.remove
    done(h, settler, "gone", T.TRANSITION_DESTROY)
    assert book.completed == ["task-gone"]


def test_nothing_completes_once_the_run_stops_or_in_a_terminated_subtree() -> None:
    h, settler, book = settled()
    h.scheduler.exclude(["task-q1"])
    done(h, settler, "q1", T.TRANSITION_START)
    h.scheduler.stop("stopped: a failure", pb.TASK_STATUS_FAILED)
    done(h, settler, "q2", T.TRANSITION_START)
    assert book.completed == []
