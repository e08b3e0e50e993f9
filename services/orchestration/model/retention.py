"""What is kept of finished work, and for how long (pure rules, no I/O).

A finished task tree is pruned to its root once the root has not changed
for `ORCH_TREE_DAYS` (default 7): its subtasks and all its events are
deleted, and the root keeps a summary of how its subtasks ended. The root
itself, like every task and event record, ages out after
`ORCH_HISTORY_DAYS` (default 30)."""

from __future__ import annotations

import os
import time

from orchestration.model.lifecycle import TASK_ENDED
from orchestration.v1 import model_pb2 as pb

DAY_NS = 86400 * 10**9


def positive_setting(name: str, default: str) -> float:
    """A positive number from the environment variable `name` (ValueError naming it otherwise)."""
    text = os.environ.get(name, default)
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise ValueError(f"{name}={text!r}: expected a positive number")
    return value


def tree_days_from_environment() -> float:
    """ORCH_TREE_DAYS (default 7)."""
    return positive_setting("ORCH_TREE_DAYS", "7")


def due_for_pruning(task: pb.Task, now_ns: int, tree_days: float) -> bool:
    """A root whose tree ended at least `tree_days` ago and still has
    subtasks (a prune cut short by a crash is finished by the next one)."""
    return (not task.parent and task.status in TASK_ENDED and bool(task.subtasks)
            and now_ns - task.updated >= tree_days * DAY_NS)


def summarize(subtasks: list[pb.Task], summary: pb.TreeSummary | None = None) -> pb.TreeSummary:
    """How a tree's subtasks ended (an earlier summary, from a prune cut short, is kept)."""
    if summary is not None and summary.pruned_unix_ms:
        return summary
    found = pb.TreeSummary(pruned_unix_ms=int(time.time() * 1000), tasks=len(subtasks))
    for task in subtasks:
        if task.status == pb.TASK_STATUS_COMPLETED:
            found.completed += 1
        elif task.status == pb.TASK_STATUS_FAILED:
            found.failed += 1
        elif task.status in (pb.TASK_STATUS_TIMEOUT, pb.TASK_STATUS_TERMINATED):
            found.stopped += 1
    return found


# When the tasks bucket holds more than HIGH_WATER of its cap (ORCH_TASKS_MAX_MB),
# the monitor deletes finished task trees until it holds less than LOW_WATER.
HIGH_WATER, LOW_WATER = 0.7, 0.5


def relief_order(roots: list[pb.Task], live: set[tuple[str, str]]) -> list[pb.Task]:
    """The finished task trees (by their roots) in the order they are deleted
    when the tasks bucket nears its cap: finished tasks whose parent is gone
    (given among `roots` with their parent set) first, then the trees of
    removed solutions (not in `live`, as (domain, solution)), then those of
    live solutions; the oldest first within each. What a live solution needs
    stays: every unfinished tree, and the newest finished tree of each live
    solution."""
    finished = [t for t in roots if t.status in TASK_ENDED]
    orphans = [t for t in finished if t.parent]  # their tree is gone: first of all
    newest: dict[tuple[str, str], pb.Task] = {}
    for task in finished:
        if task.parent:
            continue
        key = (task.domain, task.solution)
        if key in live and (key not in newest or (task.updated, task.uuid) > (newest[key].updated, newest[key].uuid)):
            newest[key] = task
    kept = {t.uuid for t in newest.values()}
    going = [t for t in finished if t.uuid not in kept and not t.parent]
    return orphans + sorted(going, key=lambda t: ((t.domain, t.solution) in live, t.updated, t.uuid))
