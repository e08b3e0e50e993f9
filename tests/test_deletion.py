"""What is deleted stays deleted, whatever nats-server does on recovery.

nats-server (the pinned 2.15.1 among others) may bring purged messages back
when it rebuilds its index after an unclean stop: reliably so when the purged
messages share file blocks with live ones. These tests store records, delete
them the engine's way, SIGKILL the server, start it again on the same data
and check that no deleted record is in effect. Each first checks that the
server did bring something back, so that it cannot pass without the fault.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client as NatsClient

from cli.embedded_nats import EmbeddedNatsConfig, NatsCredentials, free_port, nats_url, start_nats_server, stop_nats_server
from models import chain, flat
from orchestration.model.codec import parse_document
from orchestration.store.repository import Repository
from orchestration.store.subjects import Subjects, kv_stream
from orchestration.v1.model_pb2 import Cluster, Element, Instance, Solution, State, Task, TaskStatus
from orchestration.v1.records_pb2 import Grave
from orchestration_sdk.status_errors import NotFound
from suite import Suite, alive, monitor_figure, running_suite, wait_until
from test_faults import wait_for_pid

pytestmark = pytest.mark.faults

D = "del"
POLLS = "orch_monitor_poll_seconds_count"


@dataclass
class Server:
    """A nats-server of this test's own, to kill."""

    config: EmbeddedNatsConfig
    creds: NatsCredentials
    proc: object = None

    @property
    def url(self) -> str:
        return nats_url(self.config.host, self.config.port, self.creds)

    def start(self) -> None:
        self.proc = start_nats_server(self.config, self.creds, log_path=self.config.data_dir / "nats.log")

    def sigkill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)  # type: ignore[attr-defined]
        self.proc.wait()  # type: ignore[attr-defined]


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    found = Server(EmbeddedNatsConfig(data_dir=tmp_path / "nats", port=free_port()), NatsCredentials("t", "t-secret"))
    found.start()
    try:
        yield found
    finally:
        stop_nats_server(found.proc)  # type: ignore[arg-type]


async def open_repo(server: Server, subjects: Subjects) -> tuple[NatsClient, Repository]:
    nc = await nats.connect(server.url)
    repo = Repository(nc.jetstream(), subjects)
    await repo.open()
    return nc, repo


async def crash_and_restart(server: Server, nc: NatsClient, subjects: Subjects) -> tuple[NatsClient, Repository]:
    await nc.close()
    server.sigkill()
    server.start()
    return await open_repo(server, subjects)


def solution(name: str, instances: int, elements: int = 2) -> Solution:
    found = Solution(name=name, version="V1", target=State.STATE_ACTIVE)
    for e in range(elements):
        cluster = Cluster(version="V1", size=instances, target=State.STATE_ACTIVE)
        cluster.instances.extend(Instance(uuid=f"{name}-e{e}-{i}", target=State.STATE_ACTIVE, state=State.STATE_ACTIVE)
                                 for i in range(instances))
        found.elements.append(Element(name=f"e{e}", component="c", target=State.STATE_ACTIVE, clusters=[cluster]))
    return found


async def touch(repo: Repository, domain: str, name: str) -> None:
    """Write every instance record of a solution once more, as a run does."""
    for record in await repo.solutions.list_instances(domain, name):
        record.instance.state = State.STATE_INACTIVE
        await repo.solutions.put_instance(domain, name, record.element, record.cluster, record.instance, record.revision)


async def raw_keys(nc: NatsClient, bucket: str, prefix: str) -> set[str]:
    """Keys with a message in the bucket's stream under prefix (live or not, as the server holds them)."""
    info = await nc.jetstream().stream_info(kv_stream(bucket), subjects_filter=f"$KV.{bucket}.{prefix}>")
    return {s.removeprefix(f"$KV.{bucket}.") for s in (info.state.subjects or {})}


async def test_a_removed_solution_stays_removed_after_the_server_is_killed(server: Server, subjects: Subjects) -> None:
    nc, repo = await open_repo(server, subjects)
    await repo.model.create_domain(D)
    # A neighbour live beside it, both written in turns: their records share the server's blocks.
    await repo.solutions.store_solution(D, solution("keep", 150))
    await repo.solutions.store_solution(D, solution("gone", 150))
    await touch(repo, D, "gone")
    await repo.solutions.remove_solution(D, "gone", Grave(actor="alice", task="t-remove"))
    await touch(repo, D, "keep")  # the neighbour goes on being written after the removal
    assert not await raw_keys(nc, subjects.solutions_bucket, f"{D}.gone.")

    nc, repo = await crash_and_restart(server, nc, subjects)
    try:
        back = await raw_keys(nc, subjects.solutions_bucket, f"{D}.gone.")
        assert back, "the server brought no purged record back: this test shows nothing on this nats-server"
        # The server holds them again, and none is in effect.
        assert [s.name for s in await repo.solutions.list_solutions(D)] == ["keep"]
        with pytest.raises(NotFound):
            await repo.solutions.get_solution(D, "gone")
        with pytest.raises(NotFound):
            await repo.solutions.get_solution_header(D, "gone")
        with pytest.raises(NotFound):
            await repo.solutions.get_instance(D, "gone", "e0", "V1", "gone-e0-0")
        assert await repo.solutions.list_instances(D, "gone") == []
        assert await repo.solutions.parts(D, "gone") == ([], [], [])
        assert set(await repo.solutions.trees(D)) == {"keep"}
        assert len(await repo.solutions.list_instances(D, "keep")) == 300
        removal = await repo.solutions.removal(D, "gone")
        assert removal is not None and (removal.actor, removal.task) == ("alice", "t-remove")
        # Removing it again finds nothing (and purges what came back).
        with pytest.raises(NotFound):
            await repo.solutions.remove_solution(D, "gone")
        # Deployed again under the same name: only the new records are its.
        again = solution("gone", 2, elements=1)
        assert await repo.solutions.store_solution(D, again) is True
        stored = await repo.solutions.get_solution(D, "gone")
        assert sorted(i.uuid for e in stored.elements for c in e.clusters for i in c.instances) == ["gone-e0-0", "gone-e0-1"]
        assert [e.name for e in stored.elements] == ["e0"]
        assert await repo.solutions.removal(D, "gone") is None
    finally:
        await nc.close()


async def test_a_removed_domain_stays_removed_after_the_server_is_killed(server: Server, subjects: Subjects) -> None:
    nc, repo = await open_repo(server, subjects)
    for domain in ("stay", D):
        await repo.model.create_domain(domain)
        await repo.apply_model(parse_document(chain(domain, [2, 2]), domain).model)
    for i in range(150):
        for domain in ("stay", D):
            await repo.tasks.put_task(Task(uuid=f"t{i}", domain=domain, created=i, status=TaskStatus.TASK_STATUS_COMPLETED), None)
    await repo.solutions.store_solution("stay", solution("keep", 100))
    await repo.solutions.store_solution(D, solution("gone", 100))
    await touch(repo, D, "gone")
    for i in range(150):
        task = await repo.tasks.get_task(D, f"t{i}")
        await repo.tasks.put_task(task.value, task.revision)
    await repo.remove_domain(D, "alice")
    # The other domain goes on being written.
    await touch(repo, "stay", "keep")
    for i in range(150):
        task = await repo.tasks.get_task("stay", f"t{i}")
        await repo.tasks.put_task(task.value, task.revision)

    nc, repo = await crash_and_restart(server, nc, subjects)
    try:
        back = (await raw_keys(nc, subjects.solutions_bucket, f"{D}.") | await raw_keys(nc, subjects.tasks_bucket, f"{D}."))
        assert back, "the server brought no purged record back: this test shows nothing on this nats-server"
        assert await repo.model.list_domains() == ["stay"]
        with pytest.raises(NotFound):
            await repo.model.require_domain(D)
        # Made again under the same name, it starts empty.
        await repo.model.create_domain(D)
        assert await repo.solutions.list_solutions(D) == []
        assert await repo.tasks.list_tasks(D) == []
        with pytest.raises(NotFound):
            await repo.tasks.get_task(D, "t0")
        assert await repo.model.list_components(D) == []
        assert await repo.leases.all() == []
        assert len(await repo.tasks.list_tasks("stay")) == 150
    finally:
        await nc.close()


def test_a_removed_solution_beside_a_live_one_stays_removed_when_nats_is_killed(tmp_path: Path) -> None:
    """End to end: deploy two solutions, remove one, SIGKILL nats-server right
    after the removal; once everything is back (the monitor polling every
    second), nothing of the removed one is listed or run again."""
    with running_suite(tmp_path, "--monitor-interval", "1") as suite:
        suite.apply(flat("pair", 100, elements=2))
        for name in ("keep", "gone"):
            suite.ok("solution", "deploy", "pair", "app", "V1", "--solution", name, "--wait")
        gone = {i.uuid for e in suite.solution("pair", "gone").elements for c in e.clusters for i in c.instances}
        suite.ok("solution", "delete", "pair", "gone", "--wait", "--request-id", "remove-gone")
        removed = time.time()
        victim = wait_for_pid(suite, "nats-server")
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: not alive(victim), timeout=10, what="nats-server dying")
        wait_for_pid(suite, "nats-server", other_than=victim)
        # The monitor polls again (three polls after the restart) before anything is judged.
        polls = eventually_figure(suite, POLLS, lambda value: value > 0)
        eventually_figure(suite, POLLS, lambda value: value >= polls + 3)
        listed = wait_until(lambda: json_or_none(suite.orch("solution", "list", "pair", "-o", "json")), timeout=60,
                            what="the gateway answering again")
        # The server did bring purged records back (else this test shows nothing).
        back = asyncio.run(raw_keys_of(json.loads(suite.ok("info", "-o", "json", "--show-secrets"))["nats_url"], "orch_solutions", "pair.gone."))
        assert back, "the server brought no purged record back: this test shows nothing on this nats-server"
        assert [s["Solution"] for s in listed] == ["keep"], listed
        missing = suite.orch("solution", "get", "pair", "gone")
        assert missing.returncode != 0 and "was removed" in missing.stderr, missing.stderr
        late = [op for op in suite.ops("gone") if op["started"] > removed or op["instance"] not in gone]
        assert not late, f"operations on the removed solution after its removal: {late[:5]}"
        kept = suite.solution("pair", "keep")
        assert all(i.state == State.STATE_ACTIVE for e in kept.elements for c in e.clusters for i in c.instances)
        # A retry of the removal (its reply lost, say) is the same request, not an error.
        again = suite.orch("solution", "delete", "pair", "gone", "--request-id", "remove-gone")
        assert again.returncode == 0, again.stderr


def eventually_figure(suite: Suite, name: str, good: Callable[[float], bool], timeout: float = 60) -> float:
    """A monitor figure once it is good (the monitor may be reconnecting meanwhile)."""
    def read() -> float | None:
        try:
            value = monitor_figure(suite, name)
        except OSError:
            return None
        return value if good(value) else None
    return wait_until(read, timeout=timeout, what=f"{name} as wanted")


async def raw_keys_of(url: str, bucket: str, prefix: str) -> set[str]:
    nc = await nats.connect(url)
    try:
        return await raw_keys(nc, bucket, prefix)
    finally:
        await nc.close()


def json_or_none(result: subprocess.CompletedProcess) -> object:
    return json.loads(result.stdout) if result.returncode == 0 else None


async def test_a_removal_cut_short_after_its_grave_is_finished_by_the_next(server: Server, subjects: Subjects) -> None:
    nc, repo = await open_repo(server, subjects)
    try:
        await repo.model.create_domain(D)
        await repo.solutions.store_solution(D, solution("cut", 20))
        # Cut short: the grave is written, the purge never ran.
        await nc.jetstream().publish(f"$KV.{subjects.solutions_bucket}.{'_removed'}.{D}.cut", Grave(actor="a").SerializeToString())
        assert await raw_keys(nc, subjects.solutions_bucket, f"{D}.cut.")
        assert [s.name for s in await repo.solutions.list_solutions(D)] == []  # dead already
        # The next removal (a resumed run, or the request sent again) purges what was left.
        with pytest.raises(NotFound):
            await repo.solutions.remove_solution(D, "cut")
        assert not await raw_keys(nc, subjects.solutions_bucket, f"{D}.cut")
    finally:
        await nc.close()
