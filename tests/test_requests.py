"""Edges of accepting and starting requests, with real processes: a lease
whose root task has ended is free at once (and a request accepted while the
ended task's run still finishes is taken as that run ends), a removal that finds nothing
left to remove (its run stopped between the removal and its root's status)
completes instead of failing, and a request's message announces the lease
its acceptance wrote (a dispatcher claims it without reading it first),
which is only a shortcut: a message whose lease has moved on is still taken."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import Iterator

import grpc
import nats
import pytest

import models
from cli.home import load_connection
from dispatcher.ownership.intake import _announced_lease
from orchestration.store import keys as rk
from orchestration.store.leases import LEASE_REVISION_HEADER, Lease, queued_lease
from orchestration.store.repository import Repository
from orchestration.store.requests import new_request, root_task, submit
from orchestration.store.subjects import Subjects
from orchestration.v1 import gateway_pb2 as gw
from orchestration.v1 import model_pb2 as pb
from orchestration.v1 import records_pb2 as rpb
from suite import Suite, busy, running_suite, wait_until


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Suite]:
    with running_suite(tmp_path_factory.mktemp("requests")) as running:
        yield running


def _connection(suite: Suite) -> tuple[str, Subjects]:
    """The suite's NATS URL and subjects, as the CLI reads them."""
    connection = load_connection(suite.home)
    assert connection is not None
    return connection.nats_url, Subjects(connection.subject_prefix)


def _submit(suite: Suite, request: rpb.Request, lease_of: str = "") -> str:
    """Submit on the internal channel as the gateway does; with `lease_of`, first
    leave a lease behind for that ended root task (the window in which a
    dispatcher has published a task's end but not yet let its solution go)."""
    url, subjects = _connection(suite)

    async def go() -> str:
        nc = await nats.connect(url)
        try:
            js = nc.jetstream()
            repo = Repository(js, subjects)
            await repo.open()
            if lease_of:
                old = rpb.Request()
                old.CopyFrom(request)
                old.task = lease_of
                await repo.leases.accept(old)
            return await submit(repo, repo.leases, js, subjects, request)
        finally:
            await nc.close()

    return asyncio.run(go())


def test_a_solution_whose_task_has_ended_is_not_busy(suite: Suite) -> None:
    suite.apply(models.flat("ended", 2))
    first = json.loads(suite.ok("solution", "deploy", "ended", "app", "V1", "--wait", "-o", "json"))["task"]
    assert not busy(suite, "ended", "app")
    request = new_request(rpb.Request.SetSolution(state=pb.STATE_INACTIVE), "ended", "app", "test")
    task = _submit(suite, request, lease_of=first)
    assert suite.wait_task("ended", task).status == pb.TASK_STATUS_COMPLETED
    found = suite.solution("ended", "app")
    assert {i.state for e in found.elements for c in e.clusters for i in c.instances} == {pb.STATE_INACTIVE}


def test_a_request_accepted_while_a_terminated_run_finishes_is_taken_as_the_run_ends(suite: Suite) -> None:
    """A terminated task ends at once, its run a little later: it waits for
    the operations it had in flight. A request accepted meanwhile (the lease
    of an ended task is free) is taken as soon as the run lets the solution
    go, not by the recovery scan seconds later."""
    # Its create takes 3 s: long enough for three CLI calls on a loaded machine,
    # inside the recovery scan's 5 s grace.
    suite.apply(models.flat("finishing", 1, parameters={"sim_latency_ms": 3000}))
    suite.apply(models.architecture_only(models.flat("finishing", 1, version="V2")))  # the same cluster, no latency
    first = suite.ok("solution", "deploy", "finishing", "app", "V1").strip()
    wait_until(lambda: suite.task("finishing", first).task.status == pb.TASK_STATUS_EXECUTING, what="the create in flight")
    suite.ok("task", "terminate", first, "--domain", "finishing", "--wait")
    second = suite.ok("solution", "deploy", "finishing", "app", "V2").strip()
    log = suite.home / "up.log"
    assert f"task {first} of finishing.solution.app ended" not in log.read_text(), \
        "the terminated run ended before the next request came: make its operation slower"
    assert suite.wait_task("finishing", second).status == pb.TASK_STATUS_COMPLETED
    assert "taking over solution finishing.solution.app" not in log.read_text()
    assert suite.solution("finishing", "app").version == "V2"


def test_a_removal_with_nothing_left_to_remove_completes(suite: Suite) -> None:
    suite.apply(models.flat("gone", 1))
    task = _submit(suite, new_request(rpb.Request.Remove(), "gone", "never-deployed", "test"))
    done = suite.wait_task("gone", task)
    assert (done.status, done.error) == (pb.TASK_STATUS_COMPLETED, "")


def test_a_request_that_cannot_start_fails_after_a_few_attempts_and_frees_its_solution(suite: Suite) -> None:
    suite.apply(models.flat("broken", 1))
    url, subjects = _connection(suite)

    async def corrupt() -> None:
        nc = await nats.connect(url)
        try:
            bucket = await nc.jetstream().key_value(subjects.solutions_bucket)
            await bucket.put(rk.solution_key("broken", "app"), b"\xff not a protobuf message")
        finally:
            await nc.close()

    asyncio.run(corrupt())
    task = _submit(suite, new_request(rpb.Request.SetSolution(state=pb.STATE_INACTIVE), "broken", "app", "test"))
    done = suite.wait_task("broken", task, timeout=60)
    assert done.status == pb.TASK_STATUS_FAILED
    assert done.error.startswith("the request could not be started (5 attempts): DecodeError")
    assert not busy(suite, "broken", "app")


def test_a_retry_with_the_same_request_id_returns_the_same_task(suite: Suite) -> None:
    suite.apply(models.flat("again", 3, parameters={"sim_latency_ms": 100}))

    def deploy(request_id: str) -> str:
        request = gw.DeploySolutionRequest(domain="again", architecture="app", version="V1", request_id=request_id)
        return suite.solutions.DeploySolution(request, metadata=suite.metadata, timeout=30).task

    first = deploy("deploy-1")
    assert deploy("deploy-1") == first  # while it runs: the same task, not "busy"
    assert suite.wait_task("again", first).status == pb.TASK_STATUS_COMPLETED
    assert deploy("deploy-1") == first  # after it ended: still the same task, nothing runs again
    roots = suite.automation.ListTasks(gw.ListTasksRequest(domain="again", roots_only=True), metadata=suite.metadata,
                                       timeout=30).tasks
    assert [t.uuid for t in roots] == [first]
    mine = {i.uuid for e in suite.solution("again", "app").elements for c in e.clusters for i in c.instances}
    creates = [op for op in suite.ops("app") if op["operation"] == "create" and op["instance"] in mine]
    assert len(mine) == 3 and len(creates) == 3
    other = deploy("deploy-2")  # another id is another request
    assert other != first and suite.wait_task("again", other).status == pb.TASK_STATUS_COMPLETED
    with pytest.raises(grpc.RpcError) as refused:
        deploy("not a name!")
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "request_id" in refused.value.details()


def test_every_changing_cli_command_takes_a_request_id_and_a_retry_is_the_same_change(suite: Suite) -> None:
    suite.apply(models.flat("cli-ids", 2, maximum=4))
    instance = ""
    commands = [
        ("solution", "deploy", "cli-ids", "app", "V1", "--wait"),
        ("cluster", "set", "cli-ids", "app", "e0", "V1", "--size", "3", "--wait"),
        ("instance", "set", "cli-ids", "app", "e0", "V1", "{instance}", "--state", "inactive", "--wait"),
        ("solution", "set", "cli-ids", "app", "--state", "active", "--wait"),
        ("solution", "resume", "cli-ids", "app", "--wait"),
        ("solution", "delete", "cli-ids", "app", "--wait"),
    ]
    for number, command in enumerate(commands):
        if not instance and suite.planned("cli-ids", "app").elements:
            instance = suite.solution("cli-ids", "app").elements[0].clusters[0].instances[0].uuid
        args = [a.format(instance=instance) for a in command]
        first = suite.ok(*args, "--request-id", f"change-{number}").split()[0]
        # Sent again (a reply lost, say): the same task, and nothing runs again.
        again = suite.orch(*args, "--request-id", f"change-{number}")
        assert again.returncode == 0, again.stderr
        assert again.stdout.split()[0] == first, f"{' '.join(args)}: {again.stdout}"
    roots = suite.automation.ListTasks(gw.ListTasksRequest(domain="cli-ids", roots_only=True), metadata=suite.metadata,
                                       timeout=30).tasks
    assert len(roots) == len(commands)
    refused = suite.orch("solution", "resume", "cli-ids", "app", "--request-id", "not a name!")
    assert refused.returncode != 0 and "request_id" in refused.stderr


def test_a_request_message_announces_the_lease_its_acceptance_stored(suite: Suite) -> None:
    """Read while the dispatcher is stopped (SIGSTOP): it would claim the
    lease, and so replace what the message announces, at once."""
    suite.apply(models.flat("announced", 1))
    url, subjects = _connection(suite)
    request = new_request(rpb.Request.Deploy(architecture="app", version="V1"), "announced", "app", "test")

    async def go() -> tuple[str, Lease | None]:
        nc = await nats.connect(url)
        try:
            seen: asyncio.Future[nats.aio.msg.Msg] = asyncio.get_running_loop().create_future()

            async def on_request(msg: nats.aio.msg.Msg) -> None:
                if not seen.done():
                    seen.set_result(msg)

            await nc.subscribe(subjects.internal_requests_all, cb=on_request)
            js = nc.jetstream()
            repo = Repository(js, subjects)
            await repo.open()
            await submit(repo, repo.leases, js, subjects, request)
            msg = await asyncio.wait_for(seen, 10)
            return (msg.headers or {}).get(LEASE_REVISION_HEADER, ""), await repo.leases.get("announced", "app")
        finally:
            await nc.close()

    dispatcher = suite.services()["dispatcher"]
    os.kill(dispatcher, signal.SIGSTOP)
    try:
        header, stored = asyncio.run(go())
    finally:
        os.kill(dispatcher, signal.SIGCONT)
    assert stored is not None and header == str(stored.revision)
    announced = queued_lease(request, stored.revision)
    assert (announced.key, announced.record.SerializeToString()) == (stored.key, stored.record.SerializeToString())
    assert suite.wait_task("announced", request.task).status == pb.TASK_STATUS_COMPLETED


def test_a_request_whose_announced_lease_moved_on_is_taken_from_the_lease_as_read(suite: Suite) -> None:
    """As a redelivered message: the lease was written again after it was
    announced, so claiming the announced revision is refused; the dispatcher
    reads the lease and runs the request at once (not the recovery scan,
    which would take it over seconds later)."""
    suite.apply(models.flat("moved", 2))
    url, subjects = _connection(suite)
    request = new_request(rpb.Request.Deploy(architecture="app", version="V1"), "moved", "app", "test")

    async def go() -> None:
        nc = await nats.connect(url)
        try:
            js = nc.jetstream()
            repo = Repository(js, subjects)
            await repo.open()
            announced = await repo.leases.accept(request)
            queued = queued_lease(request, announced)
            await repo.leases.bucket.write(queued.key, queued.record.SerializeToString(), announced, "lease")
            await repo.tasks.put_task(root_task(request), None)
            await js.publish(subjects.internal_request(request.domain, request.solution), request.SerializeToString(),
                             headers={"Nats-Msg-Id": request.uuid, LEASE_REVISION_HEADER: str(announced)})
        finally:
            await nc.close()

    asyncio.run(go())
    assert suite.wait_task("moved", request.task).status == pb.TASK_STATUS_COMPLETED
    assert "taking over solution moved.solution.app" not in (suite.home / "up.log").read_text()


def test_only_a_positive_revision_is_taken_from_the_header() -> None:
    """A revision of 0 would make the claim a create, and one that is not a
    plain number would fail the message at every delivery: both are ignored
    (the lease is read instead)."""
    request = new_request(rpb.Request.Deploy(architecture="app", version="V1"), "d", "s", "test")

    class Message:
        def __init__(self, headers: dict[str, str] | None) -> None:
            self.headers = headers

    announced = _announced_lease(Message({LEASE_REVISION_HEADER: "12"}), request)  # type: ignore[arg-type]
    assert announced is not None and announced == queued_lease(request, 12)
    for value in ("0", "\u00b2", "-3", " 5", "5 ", "", "x"):
        assert _announced_lease(Message({LEASE_REVISION_HEADER: value}), request) is None, value  # type: ignore[arg-type]
    assert _announced_lease(Message(None), request) is None  # type: ignore[arg-type]
