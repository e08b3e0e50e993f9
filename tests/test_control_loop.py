"""The control loop obeys the operator (DESIGN.md section 5, docs/architecture.md "How the
engine runs a request"): a terminated solution is held and the monitor
leaves it alone until a request resumes it; a solution compensation cannot
repair is marked degraded after a bounded number of attempts, and one whose
controller said Permanent is not compensated at all. Real processes, a
monitor polling every 0.3 s."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

import models
from orchestration.v1 import gateway_pb2 as gw
from orchestration.v1 import model_pb2 as pb
from suite import Suite, busy, monitor_figure, running_suite, wait_until

INTERVAL = 0.3
POLLS = "orch_monitor_poll_seconds_count"


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Suite]:
    with running_suite(tmp_path_factory.mktemp("control-loop"), "--monitor-interval", str(INTERVAL)) as running:
        yield running


def roots(suite: Suite, domain: str, solution: str) -> list[pb.Task]:
    request = gw.ListTasksRequest(domain=domain, solution=solution, roots_only=True)
    return list(suite.automation.ListTasks(request, metadata=suite.metadata, timeout=30).tasks)


def states(suite: Suite, domain: str, solution: str) -> list[int]:
    found = suite.planned(domain, solution)
    return [i.state for e in found.elements for c in e.clusters for i in c.instances]


def wait_polls(suite: Suite, polls: int) -> None:
    """Until the monitor has polled `polls` more times."""
    start = monitor_figure(suite, POLLS)
    wait_until(lambda: monitor_figure(suite, POLLS) >= start + polls, timeout=30, what=f"{polls} monitor polls")


def test_a_terminated_solution_stays_stopped_until_it_is_resumed(suite: Suite) -> None:
    suite.apply(models.chain("held", [1] * 10, parameters={"sim_latency_ms": 150}))
    task = json.loads(suite.ok("solution", "deploy", "held", "app", "V1", "-o", "json"))["task"]
    wait_until(lambda: states(suite, "held", "app").count(pb.STATE_ACTIVE) >= 2, what="two active instances")
    suite.ok("task", "terminate", task, "--domain", "held")
    assert suite.wait_task("held", task).status == pb.TASK_STATUS_TERMINATED
    # Operations in flight when it was terminated finish; then the run lets the solution go.
    wait_until(lambda: not busy(suite, "held", "app"), what="the terminated run letting the solution go")

    held = suite.solution("held", "app")
    assert held.hold.kind == pb.HOLD_KIND_HELD
    assert (held.hold.actor, held.hold.task, held.hold.reason) == ("bootstrap", task, "terminated on request")
    stopped = states(suite, "held", "app").count(pb.STATE_ACTIVE)
    assert stopped < 10
    # Three monitor intervals and more: no compensation, nothing more made active.
    wait_polls(suite, 4)
    assert [t.uuid for t in roots(suite, "held", "app")] == [task]
    assert states(suite, "held", "app").count(pb.STATE_ACTIVE) == stopped
    shown = suite.ok("solution", "get", "held", "app")
    assert "held since" in shown and "by bootstrap" in shown and "orch solution resume held app" in shown
    assert "held" in suite.ok("solution", "list", "held").splitlines()[1].split()

    suite.ok("solution", "resume", "held", "app", "--wait")
    resumed = suite.solution("held", "app")
    assert not resumed.HasField("hold")
    assert states(suite, "held", "app") == [pb.STATE_ACTIVE] * 10


def test_a_permanent_failure_is_not_compensated_and_the_solution_is_degraded(suite: Suite) -> None:
    suite.apply(models.flat("perm", 2, parameters={"sim_fail": "start"}))
    failed = suite.orch("solution", "deploy", "perm", "app", "V1", "--wait")
    assert failed.returncode == 1
    # --wait reports the end from the root's end event, with its error.
    assert f"error: task {failed.stdout.split()[0]} failed: " in failed.stderr and "sim_fail" in failed.stderr, failed.stderr
    hold = wait_until(lambda: suite.solution("perm", "app").hold if suite.solution("perm", "app").hold.kind else None,
                      what="the solution marked degraded")
    assert hold.kind == pb.HOLD_KIND_DEGRADED and hold.actor == "monitor"
    assert "failed permanently" in hold.reason and "sim_fail" in hold.reason
    wait_polls(suite, 3)
    assert len(roots(suite, "perm", "app")) == 1  # the deploy only: not one compensation
    events = suite.automation.ListEvents(gw.ListEventsRequest(domain="perm"), metadata=suite.metadata, timeout=30).events
    assert [e.comment for e in events if e.type == pb.EVENT_TYPE_DEGRADED] == [f"solution app degraded: {hold.reason}"]


def test_compensation_stops_after_the_limit_and_a_request_clears_the_verdict(suite: Suite) -> None:
    # Start always fails, retryably, and one attempt is all a run may make: no compensation can converge it.
    params = {"sim_fail_retryable": "start", "sim_fail_times": 1000, "orch_max_attempts": 1}
    suite.apply(models.flat("bounded", 1, parameters=params))
    assert suite.orch("solution", "deploy", "bounded", "app", "V1", "--wait").returncode == 1
    hold = wait_until(lambda: suite.solution("bounded", "app").hold if suite.solution("bounded", "app").hold.kind else None,
                      timeout=60, what="the solution marked degraded")
    assert hold.kind == pb.HOLD_KIND_DEGRADED
    assert hold.reason.startswith("3 compensation(s) did not converge it") and "sim_fail_retryable" in hold.reason
    compensations = roots(suite, "bounded", "app")
    assert len(compensations) == 4  # the deploy and three compensations
    wait_polls(suite, 3)
    assert len(roots(suite, "bounded", "app")) == 4

    # An operator's request ends the verdict (here it fails again, and counting starts over).
    task = suite.ok("solution", "resume", "bounded", "app").strip()
    assert suite.wait_task("bounded", task).status == pb.TASK_STATUS_FAILED
    assert suite.solution("bounded", "app").hold.kind == pb.HOLD_KIND_UNSPECIFIED
    assert len(roots(suite, "bounded", "app")) >= 5
