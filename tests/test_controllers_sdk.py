"""The controller SDK against real gRPC on loopback: unary API, Status,
authentication, the batched Execute stream, de-duplication, outcome mapping,
and registration with a real (in-test) DispatcherService."""

from __future__ import annotations

import asyncio
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator

import grpc
import pytest

from cli.embedded_nats import free_port
from orchestration_sdk import (
    RESULT_STATES,
    UNKNOWN,
    Backoff,
    Controller,
    InstanceRef,
    InstanceState,
    OperationContext,
    Permanent,
    Registrar,
    Registration,
    Result,
    Retryable,
    StateName,
)
from orchestration.v1 import controller_pb2 as pb
from orchestration.v1.model_pb2 import DependencyType, State, Transition
from orchestration_sdk.runner import advertised_address, dispatcher_addresses
from orchestration_sdk.testing import Served, recording_dispatcher, serve_in_process
from suite import eventually

CREDENTIAL = "controller-secret"
T = Transition


class Scripted(Controller):
    """Behaves as the `behave` parameter says; counts runs per operation id."""

    def __init__(self) -> None:
        self.runs: Counter[str] = Counter()
        self.states: dict[str, StateName] = {}
        self.contexts: list[OperationContext] = []
        # Operation ids whose run ended, and those made durable by a sync.
        self.finished: set[str] = set()
        self.durable: set[str] = set()
        self.syncs = 0

    async def sync(self) -> None:
        self.syncs += 1
        self.durable |= self.finished

    async def _do(self, ctx: OperationContext, state: StateName) -> Result:
        try:
            return await self._behave(ctx, state)
        finally:
            self.finished.add(ctx.operation_id)

    async def _behave(self, ctx: OperationContext, state: StateName) -> Result:
        self.runs[ctx.operation_id] += 1
        self.contexts.append(ctx)
        behave = ctx.parameters.get("behave", "ok")
        # A fixed wait on purpose: the `sleep` parameter makes this operation slow.
        await asyncio.sleep(float(ctx.parameters.get("sleep", "0")))
        if behave == "retryable":
            raise Retryable("backend busy", after=2.5)
        if behave == "permanent":
            try:
                raise LookupError("image gone")
            except LookupError as err:
                raise Permanent("no such image") from err
        if behave == "boom":
            raise ValueError("bug in controller")
        if behave == "hang":
            await asyncio.sleep(30)  # on purpose: outlasts any deadline a test gives it
        self.states[ctx.uuid] = state
        return Result(endpoint=f"test://{ctx.uuid}", configuration=f"cfg-{ctx.transition}")

    async def create(self, ctx: OperationContext) -> Result:
        return await self._do(ctx, "inactive")

    async def configure(self, ctx: OperationContext) -> Result:
        return await self._do(ctx, "inactive")

    async def start(self, ctx: OperationContext) -> Result:
        return await self._do(ctx, "active")

    async def reconfigure(self, ctx: OperationContext) -> Result:
        return await self._do(ctx, "active")

    async def stop(self, ctx: OperationContext) -> Result:
        return await self._do(ctx, "inactive")

    async def destroy(self, ctx: OperationContext) -> None:
        await self._do(ctx, "initial")
        self.states.pop(ctx.uuid, None)

    # reset is deliberately not implemented: the default must fail permanently.

    async def status(self, ref: InstanceRef) -> InstanceState:
        state = self.states.get(ref.uuid)
        return InstanceState(state, f"test://{ref.uuid}") if state else UNKNOWN


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    async with serve_in_process(Scripted(), CREDENTIAL) as s:
        yield s


def scripted(s: Served) -> Scripted:
    controller = s.servicer.controller
    assert isinstance(controller, Scripted)
    return controller


def op(transition: Transition, uuid: str = "u1", op_id: str | None = None, attempt: int = 1,
       deadline_s: float = 10.0, params: dict[str, str] | None = None, **parameters: str) -> pb.Operation:
    return pb.Operation(
        operation_id=op_id or f"{uuid}-{transition}",
        transition=transition,
        instance=pb.InstanceReference(domain="d", solution="s", element="e", cluster="V1", uuid=uuid,
                                      component="c", component_version="V1"),
        parameters=(params or {}) | parameters,
        attempt=attempt,
        deadline_unix_ms=int((time.time() + deadline_s) * 1000),
        configuration="x=1",
        providers=[pb.Provider(relationship="db", type=DependencyType.DEPENDENCY_TYPE_CONTEXT, element="db", cluster="V1", endpoints=["db:1"])],
        siblings=["test://u2"],
        traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    )


async def call(s: Served, operation: pb.Operation) -> pb.OperationResult:
    """The unary RPC that matches the operation's transition."""
    rpc, request = {
        T.TRANSITION_CREATE: (s.stub.Create, pb.CreateRequest),
        T.TRANSITION_CONFIGURE: (s.stub.Configure, pb.ConfigureRequest),
        T.TRANSITION_START: (s.stub.Start, pb.StartRequest),
        T.TRANSITION_RECONFIGURE: (s.stub.Reconfigure, pb.ReconfigureRequest),
        T.TRANSITION_STOP: (s.stub.Stop, pb.StopRequest),
        T.TRANSITION_DESTROY: (s.stub.Destroy, pb.DestroyRequest),
        T.TRANSITION_RESET: (s.stub.Reset, pb.ResetRequest),
    }[operation.transition]
    response = await rpc(request(operation=operation), metadata=s.metadata)
    return response.result


async def status(s: Served, *uuids: str) -> dict[str, pb.InstanceStatus]:
    refs = [pb.InstanceReference(uuid=u) for u in uuids]
    response = await s.stub.Status(pb.StatusRequest(instances=refs), metadata=s.metadata)
    return {st.uuid: st for st in response.statuses}


async def test_unary_lifecycle_reports_states_and_status(served: Served) -> None:
    expected = [
        (T.TRANSITION_CREATE, State.STATE_INACTIVE, "inactive"),
        (T.TRANSITION_CONFIGURE, State.STATE_INACTIVE, "inactive"),
        (T.TRANSITION_START, State.STATE_ACTIVE, "active"),
        (T.TRANSITION_RECONFIGURE, State.STATE_ACTIVE, "active"),
        (T.TRANSITION_STOP, State.STATE_INACTIVE, "inactive"),
    ]
    for transition, state, _ in expected:
        result = await call(served, op(transition))
        assert (result.outcome, result.state) == (pb.OUTCOME_OK, state)
        assert result.endpoint == "test://u1"
        assert result.operation_id == f"u1-{transition}"
    assert (await status(served, "u1"))["u1"].state == State.STATE_INACTIVE
    result = await call(served, op(T.TRANSITION_DESTROY))
    assert (result.outcome, result.state, result.endpoint) == (pb.OUTCOME_OK, State.STATE_INITIAL, "")
    statuses = await status(served, "u1", "nobody")
    assert not statuses["u1"].known and statuses["u1"].state == State.STATE_INITIAL
    assert not statuses["nobody"].known


def test_result_states_follow_the_lifecycle() -> None:
    assert RESULT_STATES == {
        T.TRANSITION_CREATE: State.STATE_INACTIVE,
        T.TRANSITION_CONFIGURE: State.STATE_INACTIVE,
        T.TRANSITION_START: State.STATE_ACTIVE,
        T.TRANSITION_RECONFIGURE: State.STATE_ACTIVE,
        T.TRANSITION_STOP: State.STATE_INACTIVE,
        T.TRANSITION_DESTROY: State.STATE_INITIAL,
        T.TRANSITION_RESET: State.STATE_INITIAL,
    }


def test_advertised_address_and_dispatcher_list() -> None:
    assert advertised_address("", "127.0.0.1:0", 4711) == "127.0.0.1:4711"
    assert advertised_address("10.1.2.3", "0.0.0.0:0", 4711) == "10.1.2.3:4711"
    assert advertised_address("ctl.svc:9000", "0.0.0.0:0", 4711) == "ctl.svc:9000"
    assert advertised_address("", "0.0.0.0:0", 4711) == f"{socket.gethostname()}:4711"
    assert dispatcher_addresses(("a:1,b:2", "c:3")) == ("a:1", "b:2", "c:3")


async def test_context_carries_the_operation(served: Served) -> None:
    before = time.time()
    await call(served, op(T.TRANSITION_START, attempt=3, deadline_s=7))
    ctx = scripted(served).contexts[-1]
    assert (ctx.domain, ctx.solution, ctx.element, ctx.cluster, ctx.uuid) == ("d", "s", "e", "V1", "u1")
    assert (ctx.component, ctx.component_version, ctx.transition, ctx.attempt) == ("c", "V1", "start", 3)
    assert before + 6 < ctx.deadline < time.time() + 7.1
    assert ctx.configuration == "x=1" and ctx.siblings == ("test://u2",)
    assert ctx.providers[0].type == "context" and ctx.providers[0].endpoints == ("db:1",)
    assert ctx.traceparent.startswith("00-0af7")
    assert ctx.logger.extra == {"operation": ctx.operation_id, "instance": "u1", "solution": "s"}
    assert ctx.instance == InstanceRef("d", "s", "e", "V1", "u1", "c", "V1")
    with pytest.raises(TypeError):
        ctx.parameters["behave"] = "boom"  # type: ignore[index]


async def test_stream_member_lists_reach_each_operation_without_its_own_endpoint(served: Served) -> None:
    members = [f"test://m{i}" for i in range(300)]
    first, second = op(T.TRANSITION_CONFIGURE, uuid="m0"), op(T.TRANSITION_START, uuid="m7")
    for operation in (first, second):
        operation.ClearField("siblings")
        operation.members = "e/V1"
        operation.providers[0].ClearField("endpoints")
        operation.providers[0].members = "db/V1"
    first.endpoint, second.endpoint = "test://m0", "test://m7"
    stream = served.stub.Execute(metadata=served.metadata)
    await stream.write(pb.ExecuteRequest(operations=[first, second], members=[
        pb.Members(key="e/V1", endpoints=members), pb.Members(key="db/V1", endpoints=["db:1", "db:2"])]))
    results = []
    while len(results) < 2:
        results.extend((await stream.read()).results)
    await stream.done_writing()
    assert all(r.outcome == pb.OUTCOME_OK for r in results)
    contexts = {c.uuid: c for c in scripted(served).contexts}
    assert list(contexts["m0"].siblings) == members[1:] and len(contexts["m0"].siblings) == 299
    assert contexts["m7"].siblings == tuple(m for m in members if m != "test://m7")
    assert contexts["m7"].siblings[0] == "test://m0" and "test://m7" not in contexts["m7"].siblings
    assert contexts["m0"].providers[0].endpoints == ("db:1", "db:2")


async def test_calls_without_or_with_a_wrong_credential_are_unauthenticated(served: Served) -> None:
    for metadata in [(), (("authorization", "Bearer wrong"),)]:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await served.stub.Create(pb.CreateRequest(operation=op(T.TRANSITION_CREATE)), metadata=metadata)
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await served.stub.Status(pb.StatusRequest(), metadata=metadata)
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        stream = served.stub.Execute(metadata=metadata)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stream.read()
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert not scripted(served).runs


async def test_unary_transition_must_match_the_rpc(served: Served) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await served.stub.Create(pb.CreateRequest(operation=op(T.TRANSITION_START)), metadata=served.metadata)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "create called with an operation whose transition is start" in (err.value.details() or "")
    bad = op(T.TRANSITION_CREATE, op_id="x")
    bad.operation_id = ""
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await served.stub.Create(pb.CreateRequest(operation=bad), metadata=served.metadata)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert not scripted(served).runs


async def execute_batch(served: Served, operations: list[pb.Operation]) -> tuple[list[pb.OperationResult], int]:
    """Send operations as one Execute message; every result (each operation's
    once) and how many response messages they came in."""
    stream = served.stub.Execute(metadata=served.metadata)
    await stream.write(pb.ExecuteRequest(operations=operations))
    results: list[pb.OperationResult] = []
    messages = 0
    while len(results) < len(operations):
        response = await stream.read()
        assert response is not grpc.aio.EOF
        messages += 1
        results.extend(response.results)
    await stream.done_writing()
    assert await stream.read() is grpc.aio.EOF
    assert sorted(r.operation_id for r in results) == sorted(o.operation_id for o in operations)
    return results, messages


async def test_execute_batch_of_1000_returns_1000_results_in_fewer_messages(served: Served) -> None:
    operations = [op(T.TRANSITION_CREATE, uuid=f"i{n}", sleep="0.01") for n in range(1000)]
    results, messages = await execute_batch(served, operations)
    assert all(r.outcome == pb.OUTCOME_OK and r.state == State.STATE_INACTIVE for r in results)
    assert messages < 100, f"{messages} response messages for 1000 results: results are not batched"
    assert len(scripted(served).states) == 1000


async def test_results_are_reported_after_a_sync_once_per_message(served: Served) -> None:
    controller = scripted(served)
    stream = served.stub.Execute(metadata=served.metadata)
    operations = [op(T.TRANSITION_CREATE, uuid=f"d{n}", sleep=f"{(n % 10) * 0.002:.3f}") for n in range(300)]
    await stream.write(pb.ExecuteRequest(operations=operations))
    received, messages = 0, 0
    while received < len(operations):
        response = await stream.read()
        assert response is not grpc.aio.EOF
        messages += 1
        received += len(response.results)
        reported = {r.operation_id for r in response.results}
        assert reported <= controller.durable, f"reported before a sync: {sorted(reported - controller.durable)[:3]}"
    await stream.done_writing()
    assert 1 <= controller.syncs <= messages, f"{controller.syncs} syncs for {messages} messages"
    # A single-operation call syncs before it answers too.
    single = op(T.TRANSITION_CREATE, uuid="single")
    assert (await call(served, single)).outcome == pb.OUTCOME_OK
    assert single.operation_id in controller.durable


async def test_results_of_operations_finishing_one_by_one_share_messages(served: Served) -> None:
    # 600 operations in flight, finishing spread over 120 ms: with many running,
    # a result waits a moment for others instead of taking a message of its own.
    operations = [op(T.TRANSITION_CREATE, uuid=f"s{n}", sleep=f"{n * 0.0002:.4f}") for n in range(600)]
    _, messages = await execute_batch(served, operations)
    assert messages < 150, f"{messages} response messages for 600 results finishing one by one"


async def test_repeated_operation_id_runs_user_code_once(served: Served) -> None:
    # Twice in one batch (the second waits for the running first), then again later.
    slow = op(T.TRANSITION_CREATE, op_id="same", sleep="0.2")
    stream = served.stub.Execute(metadata=served.metadata)
    await stream.write(pb.ExecuteRequest(operations=[slow, slow]))
    results: list[pb.OperationResult] = []
    while len(results) < 2:
        results.extend((await stream.read()).results)
    await stream.write(pb.ExecuteRequest(operations=[slow]))
    results.extend((await stream.read()).results)
    await stream.done_writing()
    again = await call(served, slow)
    assert [r.outcome for r in [*results, again]] == [pb.OUTCOME_OK] * 4
    assert scripted(served).runs["same"] == 1


async def test_retryable_result_is_cached_per_attempt(served: Served) -> None:
    first = await call(served, op(T.TRANSITION_START, op_id="r", behave="retryable"))
    redelivered = await call(served, op(T.TRANSITION_START, op_id="r", behave="retryable"))
    retried = await call(served, op(T.TRANSITION_START, op_id="r", attempt=2))
    assert (first.outcome, redelivered.outcome, retried.outcome) == (pb.OUTCOME_RETRYABLE, pb.OUTCOME_RETRYABLE, pb.OUTCOME_OK)
    assert scripted(served).runs["r"] == 2


@pytest.mark.parametrize(
    ("transition", "parameters", "outcome", "state", "message", "after_ms"),
    [
        (T.TRANSITION_START, {"behave": "retryable"}, pb.OUTCOME_RETRYABLE, State.STATE_UNSPECIFIED, "backend busy", 2500),
        (T.TRANSITION_START, {"behave": "permanent"}, pb.OUTCOME_PERMANENT, State.STATE_FAILURE,
         "no such image: image gone", 0),
        (T.TRANSITION_START, {"behave": "boom"}, pb.OUTCOME_RETRYABLE, State.STATE_UNSPECIFIED,
         "ValueError: bug in controller", 0),
        (T.TRANSITION_RESET, {}, pb.OUTCOME_PERMANENT, State.STATE_FAILURE,
         "controller Scripted does not implement reset", 0),
    ],
)
async def test_outcomes_of_user_code(
    served: Served, transition: Transition, parameters: dict[str, str], outcome: int, state: int, message: str, after_ms: int
) -> None:
    result = await call(served, op(transition, params=parameters))
    assert (result.outcome, result.state, result.message, result.retry_after_ms) == (outcome, state, message, after_ms)


async def test_operation_past_its_deadline_is_cancelled_and_retryable(served: Served) -> None:
    started = time.monotonic()
    result = await call(served, op(T.TRANSITION_START, behave="hang", deadline_s=0.3))
    assert time.monotonic() - started < 2
    assert result.outcome == pb.OUTCOME_RETRYABLE
    assert result.message.startswith("deadline exceeded after 0.")
    late = await call(served, op(T.TRANSITION_STOP, deadline_s=-1))
    assert late.outcome == pb.OUTCOME_RETRYABLE and "deadline passed" in late.message
    assert "u1-5" not in scripted(served).runs  # never started


async def test_registrar_registers_renews_and_unregisters() -> None:
    async with recording_dispatcher(CREDENTIAL, lease_seconds=1) as (address, dispatcher):
        registration = Registration("Internal", "V1.0.0", ("sim",), "replica-1", "127.0.0.1:7777")
        registrar = Registrar([address], CREDENTIAL, registration)
        await registrar.start()
        await dispatcher.wait_for(registrations=3, timeout=3)  # renewed at lease/3
        await registrar.stop()
        assert len(dispatcher.unregistrations) == 1
    times = [t for t, _ in dispatcher.registrations]
    assert all(0.2 < b - a < 0.8 for a, b in zip(times, times[1:])), times  # lease 1 s: every ~0.33 s
    request = dispatcher.registrations[0][1]
    assert (request.name, request.version, list(request.aliases), request.replica, request.address) == (
        "Internal", "V1.0.0", ["sim"], "replica-1", "127.0.0.1:7777")
    unregistration = dispatcher.unregistrations[0]
    assert (unregistration.name, unregistration.replica) == ("Internal", "replica-1")


def refused_registrations(caplog: pytest.LogCaptureFixture) -> int:
    """How many times a registrar logged that a dispatcher refused or did not answer."""
    return sum("cannot register with dispatcher" in r.getMessage() for r in caplog.records)


async def test_registrar_retries_until_a_dispatcher_answers(caplog: pytest.LogCaptureFixture) -> None:
    port = free_port()
    registration = Registration("Internal", "V1.0.0", (), "r", "127.0.0.1:1")
    registrar = Registrar([f"127.0.0.1:{port}"], CREDENTIAL, registration, Backoff(first=0.05, maximum=0.1))
    await registrar.start()
    await eventually(lambda: refused_registrations(caplog) >= 3, timeout=10, what="three failed attempts")
    assert not registrar.registered.is_set()
    async with recording_dispatcher(CREDENTIAL, address=f"127.0.0.1:{port}") as (_, dispatcher):
        await dispatcher.wait_for(registrations=1, timeout=3)
        await registrar.stop()
        assert len(dispatcher.unregistrations) == 1


async def test_registrar_with_a_wrong_credential_keeps_trying_without_crashing(caplog: pytest.LogCaptureFixture) -> None:
    async with recording_dispatcher(CREDENTIAL) as (address, dispatcher):
        registrar = Registrar([address], "wrong", Registration("X", "V1", (), "r", "a:1"), Backoff(0.05, 0.1))
        await registrar.start()
        await eventually(lambda: refused_registrations(caplog) >= 3, timeout=10, what="three refused attempts")
        assert "UNAUTHENTICATED" in caplog.text
        assert not registrar._task.done(), "the registrar stopped trying"  # type: ignore[union-attr]
        assert not registrar.registered.is_set() and not dispatcher.registrations
        await registrar.stop()
