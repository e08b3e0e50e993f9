"""Finished task trees are pruned to their root and a summary: the rule
without NATS, then the monitor doing it to a real deploy's tree."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from orchestration.model.retention import DAY_NS, due_for_pruning, summarize
from orchestration.v1 import gateway_pb2 as gw
from orchestration.v1 import model_pb2 as pb
from suite import DATA, Suite, running_suite, wait_until

NOW = 100 * DAY_NS


def root(status: int, updated_days_ago: float, subtasks: int = 2, parent: str = "") -> pb.Task:
    return pb.Task(uuid="r", status=status, parent=parent, updated=int(NOW - updated_days_ago * DAY_NS),
                   subtasks=[f"s{i}" for i in range(subtasks)])


def test_only_finished_roots_old_enough_and_not_yet_pruned_are_due() -> None:
    assert due_for_pruning(root(pb.TASK_STATUS_COMPLETED, 8), NOW, 7)
    assert due_for_pruning(root(pb.TASK_STATUS_FAILED, 7), NOW, 7)
    assert due_for_pruning(root(pb.TASK_STATUS_TERMINATED, 30), NOW, 7)
    assert not due_for_pruning(root(pb.TASK_STATUS_COMPLETED, 6.9), NOW, 7)  # too recent
    assert not due_for_pruning(root(pb.TASK_STATUS_EXECUTING, 30), NOW, 7)  # still running
    assert not due_for_pruning(root(pb.TASK_STATUS_INITIAL, 30), NOW, 7)
    assert not due_for_pruning(root(pb.TASK_STATUS_COMPLETED, 30, parent="p"), NOW, 7)  # not a root
    assert not due_for_pruning(root(pb.TASK_STATUS_COMPLETED, 30, subtasks=0), NOW, 7)  # pruned already


def test_the_summary_counts_how_subtasks_ended_and_survives_a_prune_cut_short() -> None:
    ended = [pb.Task(status=s) for s in (pb.TASK_STATUS_COMPLETED, pb.TASK_STATUS_COMPLETED, pb.TASK_STATUS_FAILED,
                                         pb.TASK_STATUS_TIMEOUT, pb.TASK_STATUS_TERMINATED)]
    summary = summarize(ended)
    assert (summary.tasks, summary.completed, summary.failed, summary.stopped) == (5, 2, 1, 2)
    assert summary.pruned_unix_ms > 0
    # A second pass after a crash sees fewer subtasks: the first summary stands.
    assert summarize(ended[:1], summary) == summary


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Suite]:
    env = {"ORCH_TREE_DAYS": "0.00002", "ORCH_PRUNE_SECONDS": "0.5"}  # 1.7 s
    with running_suite(tmp_path_factory.mktemp("retention"), "--monitor-interval", "0.5", env=env) as running:
        running.ok("apply", "-f", str(DATA / "demo2.yaml"))
        yield running


def test_the_monitor_prunes_a_finished_tree_to_its_root_and_a_summary(suite: Suite) -> None:
    task = json.loads(suite.ok("solution", "deploy", "demo", "app", "V0.0.0", "-o", "json"))["task"]
    assert suite.wait_task("demo", task).status == pb.TASK_STATUS_COMPLETED
    tree = suite.task("demo", task, tree=True)
    subtasks = len(tree.subtasks)
    assert subtasks == 45
    wait_until(lambda: suite.task("demo", task).task.summary.pruned_unix_ms > 0 and not suite.task("demo", task).task.subtasks,
               timeout=60, what="the tree pruned to its root")
    pruned = suite.task("demo", task, tree=True)
    assert list(pruned.subtasks) == []
    summary = pruned.task.summary
    assert (summary.tasks, summary.completed, summary.failed, summary.stopped) == (subtasks, subtasks, 0, 0)
    assert pruned.task.status == pb.TASK_STATUS_COMPLETED and pruned.task.solution == "app"
    for uuid in [task, *(t.uuid for t in tree.subtasks[:5])]:
        events = suite.automation.ListEvents(gw.ListEventsRequest(domain="demo", task=uuid), metadata=suite.metadata,
                                             timeout=30).events
        assert list(events) == [], uuid
    # The solution itself is untouched, and the root still reads well.
    assert sum(len(c.instances) for e in suite.solution("demo", "app").elements for c in e.clusters) == 23
    shown = suite.ok("task", "get", task, "--domain", "demo")
    assert "completed" in shown and f"its tree was pruned (ORCH_TREE_DAYS): {subtasks} subtasks, {subtasks} completed" in shown
