"""The sim controller over real gRPC: idempotent semantics, a truthful Status,
the instance table across restarts (in-process and as a SIGKILLed process),
the op log, and the sim_* parameters."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from controllers.sim import SimController
from orchestration.v1 import controller_pb2 as pb
from orchestration.v1 import controller_pb2_grpc as pb_grpc
from orchestration.v1.model_pb2 import State, Transition
from orchestration_sdk.runtime.credentials import secret_sha256
from orchestration_sdk.runtime.wire import bearer_metadata
from orchestration_sdk.testing import Served, recording_dispatcher, serve_in_process

CREDENTIAL = "sim-secret"
T = Transition
OK, RETRYABLE, PERMANENT = pb.OUTCOME_OK, pb.OUTCOME_RETRYABLE, pb.OUTCOME_PERMANENT
LOG_KEYS = {"solution", "element", "cluster", "instance", "operation", "operation_id", "outcome", "started", "finished", "deadline"}

_ids = iter(range(10**9))


@dataclass
class Peer:
    """A client of a controller in another process."""

    stub: pb_grpc.ControllerServiceStub
    metadata: tuple[tuple[str, str], ...]


def op(transition: Transition, uuid: str = "u1", attempt: int = 1, op_id: str = "", element: str = "web",
       params: dict[str, str] | None = None, **parameters: str) -> pb.Operation:
    return pb.Operation(
        operation_id=op_id or f"op-{next(_ids)}",
        transition=transition,
        instance=pb.InstanceReference(domain="demo", solution="shop", element=element, cluster="V1", uuid=uuid),
        parameters=(params or {}) | parameters,
        attempt=attempt,
        deadline_unix_ms=int((time.time() + 10) * 1000),
    )


async def execute(s: Served | Peer, operations: list[pb.Operation], batch: int = 1000) -> dict[str, pb.OperationResult]:
    """Send operations over one Execute stream; results by operation id."""
    stream = s.stub.Execute(metadata=s.metadata)
    for start in range(0, len(operations), batch):
        await stream.write(pb.ExecuteRequest(operations=operations[start:start + batch]))
    await stream.done_writing()
    results = {r.operation_id: r async for response in stream for r in response.results}
    assert len(results) == len(operations)
    return results


async def run(s: Served | Peer, operation: pb.Operation) -> pb.OperationResult:
    return (await execute(s, [operation]))[operation.operation_id]


async def status(s: Served | Peer, *uuids: str) -> dict[str, pb.InstanceStatus]:
    request = pb.StatusRequest(instances=[pb.InstanceReference(uuid=u) for u in uuids])
    return {st.uuid: st for st in (await s.stub.Status(request, metadata=s.metadata)).statuses}


@pytest.fixture
async def sim(tmp_path: Path) -> AsyncIterator[Served]:
    async with serve_in_process(SimController(tmp_path / "state.jsonl", tmp_path / "ops.jsonl"), CREDENTIAL) as s:
        yield s


def table(s: Served) -> SimController:
    controller = s.servicer.controller
    assert isinstance(controller, SimController)
    return controller


def op_log(tmp_path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (tmp_path / "ops.jsonl").read_text().splitlines()]


async def test_create_is_idempotent_and_status_is_truthful(sim: Served) -> None:
    first = await sim.stub.Create(pb.CreateRequest(operation=op(T.TRANSITION_CREATE)), metadata=sim.metadata)
    again = await run(sim, op(T.TRANSITION_CREATE))  # a new operation id: a second create
    assert first.result.outcome == again.outcome == OK
    assert first.result.endpoint == again.endpoint == "sim://web/u1"
    assert len(table(sim).table) == 1
    statuses = await status(sim, "u1", "ghost")
    assert (statuses["u1"].known, statuses["u1"].state, statuses["u1"].endpoint) == (True, State.STATE_INACTIVE, "sim://web/u1")
    assert (statuses["ghost"].known, statuses["ghost"].state) == (False, State.STATE_INITIAL)
    clash = await run(sim, op(T.TRANSITION_CREATE, element="db"))
    assert clash.outcome == PERMANENT and "already exists in shop/web/V1" in clash.message


async def test_lifecycle_semantics(sim: Served) -> None:
    for transition in (T.TRANSITION_CONFIGURE, T.TRANSITION_RECONFIGURE, T.TRANSITION_START, T.TRANSITION_STOP):
        missing = await run(sim, op(transition))
        assert missing.outcome == PERMANENT and "instance u1 of element web does not exist" in missing.message
    steps = [
        (T.TRANSITION_CREATE, State.STATE_INACTIVE, True),
        (T.TRANSITION_CONFIGURE, State.STATE_INACTIVE, True),
        (T.TRANSITION_START, State.STATE_ACTIVE, True),
        (T.TRANSITION_START, State.STATE_ACTIVE, True),
        (T.TRANSITION_RECONFIGURE, State.STATE_ACTIVE, True),
        (T.TRANSITION_STOP, State.STATE_INACTIVE, True),
        (T.TRANSITION_DESTROY, State.STATE_INITIAL, False),
        (T.TRANSITION_DESTROY, State.STATE_INITIAL, False),
    ]
    for transition, state, known in steps:
        assert (await run(sim, op(transition))).outcome == OK
        now = (await status(sim, "u1"))["u1"]
        assert (now.state, now.known) == (state, known), Transition.Name(transition)
    await run(sim, op(T.TRANSITION_CREATE))
    table(sim).set_state("u1", "failure")
    assert (await status(sim, "u1"))["u1"].state == State.STATE_FAILURE
    assert (await run(sim, op(T.TRANSITION_RESET))).outcome == OK
    assert (await run(sim, op(T.TRANSITION_RESET))).outcome == OK
    assert not (await status(sim, "u1"))["u1"].known


async def test_set_state_simulates_drift(sim: Served) -> None:
    await run(sim, op(T.TRANSITION_CREATE))
    table(sim).set_state("u1", "active")
    assert (await status(sim, "u1"))["u1"].state == State.STATE_ACTIVE
    table(sim).set_state("u1", "initial")
    assert not (await status(sim, "u1"))["u1"].known
    with pytest.raises(KeyError):
        table(sim).set_state("u1", "active")
    with pytest.raises(ValueError):
        table(sim).set_state("u1", "running")


async def test_table_survives_a_restart_and_the_journal_is_compacted(tmp_path: Path) -> None:
    state = tmp_path / "state.jsonl"
    async with serve_in_process(SimController(state), CREDENTIAL) as first:
        await execute(first, [op(T.TRANSITION_CREATE, uuid=u) for u in ("a", "b", "c")])
        await execute(first, [op(T.TRANSITION_START, uuid="a"), op(T.TRANSITION_DESTROY, uuid="c")])
    assert len(state.read_text().splitlines()) == 5  # append-only: one line per change
    async with serve_in_process(SimController(state), CREDENTIAL) as second:
        statuses = await status(second, "a", "b", "c")
        assert (statuses["a"].state, statuses["b"].state, statuses["c"].known) == (
            State.STATE_ACTIVE, State.STATE_INACTIVE, False)
        assert statuses["a"].endpoint == "sim://web/a"
        assert len(state.read_text().splitlines()) == 2  # compacted on start


async def test_torn_last_journal_line_is_skipped(tmp_path: Path) -> None:
    state = tmp_path / "state.jsonl"
    async with serve_in_process(SimController(state), CREDENTIAL) as first:
        await run(first, op(T.TRANSITION_CREATE, uuid="a"))
    with state.open("a") as journal:
        journal.write('{"op":"put","uuid":"b","sta')  # killed in mid-write
    async with serve_in_process(SimController(state), CREDENTIAL) as second:
        statuses = await status(second, "a", "b")
        assert statuses["a"].known and not statuses["b"].known


async def test_ten_thousand_instances_stay_fast(tmp_path: Path) -> None:
    state = tmp_path / "state.jsonl"
    uuids = [f"i{n}" for n in range(10_000)]
    async with serve_in_process(SimController(state), CREDENTIAL) as first:
        started = time.monotonic()
        results = await execute(first, [op(T.TRANSITION_CREATE, uuid=u) for u in uuids])
        elapsed = time.monotonic() - started
        assert all(r.outcome == OK for r in results.values())
    assert elapsed < 4.0, f"10,000 creates took {elapsed:.1f} s"
    started = time.monotonic()
    async with serve_in_process(SimController(state), CREDENTIAL) as second:
        reopened = time.monotonic() - started
        statuses = await status(second, *uuids)
    assert reopened < 1.0, f"reopening 10,000 instances took {reopened:.1f} s"
    assert sum(s.known for s in statuses.values()) == 10_000


async def test_op_log_has_one_line_per_operation_with_exactly_the_keys(sim: Served, tmp_path: Path) -> None:
    create = op(T.TRANSITION_CREATE)
    await run(sim, create)
    await run(sim, op(T.TRANSITION_START, sim_fail="start"))
    await run(sim, op(T.TRANSITION_STOP, sim_fail_retryable="stop"))
    lines = op_log(tmp_path)
    assert all(set(line) == LOG_KEYS for line in lines)
    assert [(line["operation"], line["outcome"]) for line in lines] == [
        ("create", "ok"), ("start", "permanent"), ("stop", "retryable")]
    first = lines[0]
    assert (first["solution"], first["element"], first["cluster"], first["instance"], first["operation_id"]) == (
        "shop", "web", "V1", "u1", create.operation_id)
    assert all(isinstance(line["started"], float) and line["started"] <= line["finished"] for line in lines)
    assert first["deadline"] == create.deadline_unix_ms / 1000  # the engine's, as it sent the operation
    assert abs(float(first["started"]) - time.time()) < 10


async def test_sim_fail_fails_listed_operations_permanently(sim: Served) -> None:
    params = {"sim_fail": "start, stop"}
    assert (await run(sim, op(T.TRANSITION_CREATE, params=params))).outcome == OK
    result = await run(sim, op(T.TRANSITION_START, params=params))
    assert (result.outcome, result.message) == (PERMANENT, "sim: start fails permanently (sim_fail)")
    assert (await status(sim, "u1"))["u1"].state == State.STATE_INACTIVE  # nothing changed


@pytest.mark.parametrize(("times", "failing_attempts"), [(None, 1), ("2", 2)])
async def test_sim_fail_retryable_fails_the_first_attempts(sim: Served, times: str | None, failing_attempts: int) -> None:
    await run(sim, op(T.TRANSITION_CREATE))
    params = {"sim_fail_retryable": "start"} | ({"sim_fail_times": times} if times else {})
    outcomes = [(await run(sim, op(T.TRANSITION_START, attempt=a, op_id="start-1", params=params))).outcome
                for a in range(1, 5)]
    assert outcomes == [RETRYABLE] * failing_attempts + [OK] * (4 - failing_attempts)
    assert (await status(sim, "u1"))["u1"].state == State.STATE_ACTIVE


async def test_sim_latency_delays_each_operation_but_not_the_batch(sim: Served, tmp_path: Path) -> None:
    started = time.monotonic()
    results = await execute(sim, [op(T.TRANSITION_CREATE, uuid=f"i{n}", sim_latency_ms="200") for n in range(50)])
    elapsed = time.monotonic() - started
    assert all(r.outcome == OK for r in results.values())
    assert 0.2 <= elapsed < 1.0  # every operation slept, concurrently
    assert all(float(line["finished"]) - float(line["started"]) >= 0.2 for line in op_log(tmp_path))


async def test_sim_endpoint_pattern(sim: Served) -> None:
    pattern = "http://{solution}.{element}.{cluster}.{domain}/{uuid}"
    result = await run(sim, op(T.TRANSITION_CREATE, sim_endpoint=pattern))
    assert result.endpoint == "http://shop.web.V1.demo/u1"
    assert (await status(sim, "u1"))["u1"].endpoint == "http://shop.web.V1.demo/u1"
    bad = await run(sim, op(T.TRANSITION_CREATE, uuid="u2", sim_endpoint="x://{host}"))
    assert bad.outcome == PERMANENT and "bad sim_endpoint" in bad.message


async def _start_sim_process(tmp_path: Path, dispatcher: str) -> tuple[asyncio.subprocess.Process, str]:
    """Run `python -m controllers.sim`; its address from the line it prints."""
    credential = tmp_path / "credential"
    credential.write_text(CREDENTIAL + "\n")
    with (tmp_path / "sim.log").open("ab") as log:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "controllers.sim", "--credential-file", str(credential),
            "--engine-credential-sha256", secret_sha256(CREDENTIAL),
            "--state-file", str(tmp_path / "state.jsonl"), "--op-log", str(tmp_path / "ops.jsonl"),
            "--dispatcher", dispatcher, "--replica", "sim-1",
            stdout=asyncio.subprocess.PIPE, stderr=log,
        )
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), timeout=15)
    assert line.startswith(b"listening on "), (tmp_path / "sim.log").read_text()
    return proc, line.decode().split()[-1]


async def test_process_keeps_its_table_across_sigkill_and_unregisters_on_sigterm(tmp_path: Path) -> None:
    metadata = bearer_metadata(CREDENTIAL)
    async with recording_dispatcher(CREDENTIAL) as (dispatcher_address, dispatcher):
        proc, address = await _start_sim_process(tmp_path, dispatcher_address)
        try:
            async with grpc.aio.insecure_channel(address) as channel:
                peer = Peer(pb_grpc.ControllerServiceStub(channel), metadata)
                await execute(peer, [op(T.TRANSITION_CREATE, uuid="k1"), op(T.TRANSITION_CREATE, uuid="k2")])
                await execute(peer, [op(T.TRANSITION_START, uuid="k1")])
            await dispatcher.wait_for(registrations=1)
        finally:
            proc.send_signal(signal.SIGKILL)
            await proc.wait()
        registered = dispatcher.registrations[0][1]
        assert (registered.name, registered.version, list(registered.aliases), registered.replica,
                registered.address) == ("Internal", "V1.0.0", ["sim"], "sim-1", address)
        assert not dispatcher.unregistrations  # a killed process cannot say goodbye

        proc, address = await _start_sim_process(tmp_path, dispatcher_address)
        try:
            async with grpc.aio.insecure_channel(address) as channel:
                statuses = await status(Peer(pb_grpc.ControllerServiceStub(channel), metadata), "k1", "k2", "k3")
            assert (statuses["k1"].state, statuses["k2"].state, statuses["k3"].known) == (
                State.STATE_ACTIVE, State.STATE_INACTIVE, False)
            await dispatcher.wait_for(registrations=2)
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(proc.wait(), timeout=10) == 0
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        assert [(u.name, u.replica) for u in dispatcher.unregistrations] == [("Internal", "sim-1")]
    assert sorted((line["instance"], line["operation"]) for line in op_log(tmp_path)) == [
        ("k1", "create"), ("k1", "start"), ("k2", "create")]
