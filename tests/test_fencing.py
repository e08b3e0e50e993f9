"""Fencing of deposed owners (DESIGN.md section 4, docs/operator.md "Guarantees"):
once another owner has taken a solution's lease and raised its fence, not one
write of the run that owned it before lands, and the run stops. Deterministic:
the test itself takes the lease away from a running run, the way a second
dispatcher does after a stall, and reads every message the solutions and
tasks streams received after that moment."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import nats
import nats.errors
import pytest
from nats.js import api

import models
from cli.embedded_nats import free_port
from orchestration.store import keys as rk
from orchestration.store.leases import LEASE_SECONDS, Lease
from orchestration.store.repository import Repository
from orchestration.store.subjects import Subjects
from orchestration.v1 import model_pb2 as pb
from orchestration_sdk.status_errors import Aborted
from suite import Suite, running_suite, sim_instances, wait_until

INTRUDER = "intruder"


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Suite]:
    # Few operations at once, so that the run is still busy when its lease is taken.
    with running_suite(tmp_path_factory.mktemp("fencing"), "--concurrency", "4") as running:
        yield running


async def _messages_after(js: nats.js.JetStreamContext, stream: str, subject: str, sequence: int) -> list[str]:
    """Subjects of the stream's messages on `subject` stored after `sequence`:
    as many as the consumer says it holds (no waiting out an empty fetch)."""
    config = api.ConsumerConfig(deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=sequence + 1,
                                ack_policy=api.AckPolicy.NONE, filter_subject=subject, inactive_threshold=30)
    sub = await js.pull_subscribe(subject, stream=stream, config=config)
    found: list[str] = []
    try:
        expected = (await sub.consumer_info()).num_pending
        while len(found) < expected:
            batch = await sub.fetch(min(500, expected - len(found)), timeout=10)
            found.extend(m.subject for m in batch)
        return found
    finally:
        await sub.unsubscribe()


async def _take_over(suite: Suite, domain: str, solution: str, hold_for: float) -> dict[str, object]:
    """Take the lease and raise the fence as a new owner, keep the lease for
    `hold_for` seconds (renewing it), then let it expire; what landed meanwhile."""
    connection = json.loads((suite.home / "connection.json").read_text())
    subjects = Subjects(connection["subject_prefix"])
    nc = await nats.connect(connection["nats_url"])
    try:
        js = nc.jetstream()
        repo = Repository(js, subjects)
        await repo.open()
        lease: Lease | None = None
        while lease is None:  # the owner renews concurrently: retry the compare-and-set
            current = await repo.leases.get(domain, solution)
            assert current is not None and current.record.owner not in ("", INTRUDER)
            try:
                lease = await repo.leases.claim(current, INTRUDER)
            except Aborted:
                continue
        await repo.fenced(domain, solution, INTRUDER)
        fence_key = rk.fence_key(domain, solution)
        fences = {b: (await js.key_value(b)).get(fence_key) for b in (subjects.solutions_bucket, subjects.tasks_bucket)}
        fenced_at = {b: (await entry).revision for b, entry in fences.items()}
        deadline = time.monotonic() + hold_for
        while time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            lease = await repo.leases.claim(lease, INTRUDER)
        landed = {
            "solutions": await _messages_after(js, f"KV_{subjects.solutions_bucket}",
                                               f"$KV.{subjects.solutions_bucket}.{rk.record_key(domain, solution)}.>",
                                               fenced_at[subjects.solutions_bucket]),
            "headers": await _messages_after(js, f"KV_{subjects.solutions_bucket}",
                                             f"$KV.{subjects.solutions_bucket}.{rk.solution_key(domain, solution)}",
                                             fenced_at[subjects.solutions_bucket]),
            "tasks": await _messages_after(js, f"KV_{subjects.tasks_bucket}", f"$KV.{subjects.tasks_bucket}.{domain}.>",
                                           fenced_at[subjects.tasks_bucket]),
        }
        # Let the lease run out: the dispatcher takes the solution back and finishes the run.
        expiring = lease.record
        expiring.expires_unix_ms = int(time.time() * 1000)
        await repo.leases.bucket.write(lease.key, expiring.SerializeToString(), lease.revision, "lease")
        return landed
    finally:
        await nc.close()


def test_a_deposed_run_lands_not_one_write_after_the_fence_and_the_solution_is_finished_by_the_next_owner(suite: Suite) -> None:
    suite.apply(models.flat("fence", 40, parameters={"sim_latency_ms": 200, "orch_siblings": "ignore"}))
    task = json.loads(suite.ok("solution", "deploy", "fence", "app", "V1", "-o", "json"))["task"]

    def active() -> int:
        found = suite.planned("fence", "app")
        return sum(i.state == pb.STATE_ACTIVE for e in found.elements for c in e.clusters for i in c.instances)

    wait_until(lambda: active() >= 4, what="the first active instances")
    landed = asyncio.run(_take_over(suite, "fence", "app", hold_for=3.0))
    assert landed == {"solutions": [], "headers": [], "tasks": []}
    log = (suite.home / "up.log").read_text()
    assert "not written: the solution's lease moved on to another owner" in log or "lost the lease of" in log

    # The lease ran out: the dispatcher takes the solution over again and completes the task.
    assert suite.wait_task("fence", task, timeout=60).status == pb.TASK_STATUS_COMPLETED
    assert active() == 40
    creates = [op for op in suite.ops("app") if op["operation"] == "create" and op["outcome"] == "ok"]
    assert len({op["instance"] for op in creates}) == 40


@pytest.mark.faults
def test_a_dispatcher_stopped_past_its_lease_wakes_up_deposed_and_writes_nothing(tmp_path: Path) -> None:
    """Two dispatchers; SIGSTOP the owner of a running 300-instance deploy for
    longer than its lease, let the other finish it, SIGCONT the first."""
    with running_suite(tmp_path, "--concurrency", "16") as suite:
        info = json.loads(suite.ok("info", "-o", "json", "--show-secrets"))
        log_path = tmp_path / "dispatcher-2.log"
        with open(log_path, "wb") as log:
            second = subprocess.Popen(
                [sys.executable, "-m", "dispatcher", "--addr", f"127.0.0.1:{free_port()}", "--credential-file",
                 str(tmp_path / "engine-credential"), "--registration-key-file",
                 str(tmp_path / "registration-key"), "--replica", "dispatcher-2", "--concurrency", "16"],
                env={**os.environ, "ORCH_NATS_URL": info["nats_url"]}, stdout=log, stderr=subprocess.STDOUT,
            )
            try:
                wait_until(lambda: "replica dispatcher-2 on port" in log_path.read_text(), what="the second dispatcher")
                suite.apply(models.flat("stall", 300, parameters={"sim_latency_ms": 40}))
                task = json.loads(suite.ok("solution", "deploy", "stall", "app", "V1", "-o", "json"))["task"]
                wait_until(lambda: len(suite.ops("app")) >= 60, what="the deploy under way")
                logs = {"dispatcher-1": tmp_path / "up.log", "dispatcher-2": log_path}
                owner = next(name for name, path in logs.items() if f"running task {task}" in path.read_text())
                other = "dispatcher-2" if owner == "dispatcher-1" else "dispatcher-1"
                pid = suite.services()["dispatcher"] if owner == "dispatcher-1" else second.pid
                os.kill(pid, signal.SIGSTOP)
                stopped = time.monotonic()
                try:
                    # The other dispatcher takes over once the lease has run out, and finishes the deploy.
                    assert suite.wait_task("stall", task, timeout=90).status == pb.TASK_STATUS_COMPLETED
                    assert f"taking over solution stall.solution.app (task {task})" in logs[other].read_text()
                    assert time.monotonic() - stopped > LEASE_SECONDS
                finally:
                    os.kill(pid, signal.SIGCONT)
                slept = time.monotonic() - stopped
                wait_until(lambda: "lost the lease" in logs[owner].read_text() or "stopping the run of stall/app"
                           in logs[owner].read_text(), timeout=30, what="the woken dispatcher noticing it was deposed")
                found = suite.solution("stall", "app")
                instances = {i.uuid: i for e in found.elements for c in e.clusters for i in c.instances}
                assert len(instances) == 300 and all(i.state == pb.STATE_ACTIVE for i in instances.values())
                creates = [op["instance"] for op in suite.ops("app") if op["operation"] == "create" and op["outcome"] == "ok"]
                assert sorted(creates) == sorted(instances), "every instance created exactly once (per op-log line)"
                held = sim_instances(suite)
                assert set(held) == set(instances) and set(held.values()) == {"active"}
                print(f"owner {owner} stopped {slept:.1f} s; lease {LEASE_SECONDS:.0f} s")
            finally:
                second.terminate()
                second.wait(timeout=30)
