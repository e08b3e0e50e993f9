"""Every bucket and stream has a size cap: a write beyond it is refused with
a clear error and nothing lost or half written, and the tasks bucket is kept
below its cap by deleting finished trees, those of removed solutions first."""

from __future__ import annotations

from pathlib import Path

import pytest
from nats.aio.client import Client as NatsClient

import models
from monitor.pruning import Pruner
from orchestration.model.retention import LOW_WATER, relief_order
from orchestration.store import streams
from orchestration.store.repository import Repository
from orchestration.store.subjects import Subjects, kv_stream
from orchestration.v1.model_pb2 import Solution, Task, TaskStatus
from orchestration_sdk.status_errors import ResourceExhausted
from suite import running_suite

DONE, RUNNING = TaskStatus.TASK_STATUS_COMPLETED, TaskStatus.TASK_STATUS_EXECUTING


def task(uuid: str, solution: str, updated: int, status: int = DONE, parent: str = "", domain: str = "d") -> Task:
    return Task(uuid=uuid, domain=domain, solution=solution, updated=updated, status=status, parent=parent)


def test_removed_solutions_trees_go_first_then_the_oldest_and_what_live_work_needs_stays() -> None:
    roots = [
        task("live-old", "live", 1), task("live-newest", "live", 5), task("live-mid", "live", 3),
        task("live-running", "live", 0, RUNNING),
        task("gone-new", "gone", 9), task("gone-old", "gone", 2),
        task("orphan", "live", 7, parent="pruned-long-ago"),  # its parent is gone: first of all
    ]
    order = [t.uuid for t in relief_order(roots, {("d", "live")})]
    assert order == ["orphan", "gone-old", "gone-new", "live-old", "live-mid"]


def test_caps_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCH_TASKS_MAX_MB", "3")
    monkeypatch.setenv("ORCH_EVENTS_MAX_MB", "5")
    limits = streams.Retention.from_environment()
    assert (limits.cap("tasks"), limits.cap("events"), limits.cap("solutions")) == (3 * 2**20, 5 * 2**20, 256 * 2**20)
    monkeypatch.setenv("ORCH_SOLUTIONS_MAX_MB", "0")
    with pytest.raises(ValueError, match="ORCH_SOLUTIONS_MAX_MB='0'"):
        streams.Retention.from_environment()


def small(tasks_mb: int = 1) -> streams.Retention:
    caps = dict(streams.Retention().caps)
    caps["tasks"] = tasks_mb * 2**20
    return streams.Retention(caps=tuple(caps.items()))


async def test_every_bucket_and_stream_gets_its_cap(nc: NatsClient, subjects: Subjects) -> None:
    js = nc.jetstream()
    limits = streams.Retention()
    await Repository(js, subjects, retention=limits).open()
    roles = ("model", "solutions", "tasks", "controllers", "leases")
    for bucket, role in zip(subjects.repository_buckets, roles):
        assert (await js.stream_info(kv_stream(bucket))).config.max_bytes == limits.cap(role), bucket
    requests = (await js.stream_info(subjects.requests_stream)).config
    assert requests.max_bytes == limits.cap("requests") and requests.discard == "new"
    assert (await js.stream_info(subjects.events_stream)).config.max_bytes == limits.cap("events")
    # A later process with other caps applies them to what exists.
    await Repository(js, subjects, retention=small()).open()
    assert (await js.stream_info(kv_stream(subjects.tasks_bucket))).config.max_bytes == 2**20


async def test_a_write_beyond_a_cap_is_refused_clearly_and_a_relief_makes_room(nc: NatsClient, subjects: Subjects) -> None:
    repo = Repository(nc.jetstream(), subjects, retention=small(1))
    await repo.open()
    await repo.model.create_domain("d")
    await repo.solutions.store_solution("d", Solution(name="live"))
    written: list[str] = []
    with pytest.raises(ResourceExhausted, match="'.*_tasks' bucket is at its size cap \\(ORCH_TASKS_MAX_MB\\)"):
        for i in range(2000):
            # Finished trees of a removed solution (the first 100), then of a live one.
            record = task(f"t{i:04}", "gone" if i < 100 else "live", i)
            record.error = "x" * 2000
            await repo.tasks.put_task(record, None)
            written.append(record.uuid)
    # Nothing half written: every task before the refusal reads back, the refused one is not there.
    assert sorted(t.uuid for t in await repo.tasks.all_tasks("d")) == written
    deleted = await Pruner(repo, tree_days=7, every_seconds=60).relieve()
    used, cap = await repo.tasks.usage()
    assert deleted and used < LOW_WATER * cap
    left = {t.uuid for t in await repo.tasks.all_tasks("d")}
    gone = [u for u in written if u not in left]
    # The removed solution's trees went first (oldest first), then the live one's oldest; its newest stays.
    assert gone == written[:len(gone)] and len(gone) == deleted and deleted > 100
    assert written[-1] in left
    await repo.tasks.put_task(task("after", "live", 10_000), None)  # room again


def test_deploys_go_on_under_a_small_tasks_cap_while_the_monitor_relieves_it(tmp_path: Path) -> None:
    """End to end, the monitor polling once an hour (relief has its own pace):
    sixteen deploy and delete cycles write about twice the tasks cap, and each completes."""
    env = {"ORCH_TASKS_MAX_MB": "2"}
    with running_suite(tmp_path, env=env) as suite:
        suite.apply(models.flat("capped", 100, elements=2, parameters={"orch_siblings": "ignore"}))
        for _ in range(16):
            suite.ok("solution", "deploy", "capped", "app", "V1", "--wait", timeout=120)
            suite.ok("solution", "delete", "capped", "app", "--wait", timeout=120)
        log = (tmp_path / "up.log").read_text()
        assert "the tasks bucket neared its cap" in log
        assert "at its size cap" not in log, "a write was refused: relief came too late"
