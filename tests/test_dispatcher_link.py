"""The dispatcher's stream to one controller replica (dispatcher.controllers.Link)
against a controller served over real gRPC on loopback, and the pool that
opens and closes those streams as replicas register and unregister."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from nats.aio.client import Client as NatsClient

from orchestration_sdk import Controller, OperationContext, Result
from orchestration_sdk.testing import serve_in_process
from dispatcher.controllers import ControllerPool, Link
from orchestration.runtime.credentials import engine_credential_for
from orchestration.store.leases import now_ms
from orchestration.store.repository import Repository
from orchestration.store.subjects import Subjects
from orchestration.v1 import controller_pb2 as cpb
from orchestration.v1 import records_pb2 as rpb
from orchestration.v1.model_pb2 import Transition
from orchestration_sdk.runtime import batching
from suite import eventually

ENGINE_KEY = "link-secret"
# What a controller named "sleepy" is given: the engine derives it from its key and the name.
CREDENTIAL = engine_credential_for(ENGINE_KEY, "sleepy")


class Sleepy(Controller):
    """Creates after the number of seconds its `sleep` parameter says."""

    async def create(self, ctx: OperationContext) -> Result:
        await asyncio.sleep(float(ctx.parameters.get("sleep", "0")))  # on purpose: a slow operation
        return Result(endpoint=f"sleepy://{ctx.uuid}")


def create(uuid: str, sleep: float) -> cpb.Operation:
    return cpb.Operation(
        operation_id=f"{uuid}-1-create", transition=Transition.TRANSITION_CREATE,
        instance=cpb.InstanceReference(domain="d", solution="s", element="e", cluster="V1", uuid=uuid, component="c",
                                       component_version="V1"),
        parameters={"sleep": str(sleep)}, deadline_unix_ms=int((time.time() + 10) * 1000),
    )


async def test_operations_queued_one_by_one_while_many_are_out_share_messages(monkeypatch: pytest.MonkeyPatch) -> None:
    # A wide window, so that a slow machine cannot spread the late operations over several.
    monkeypatch.setattr(batching, "COALESCE_SECONDS", 0.5)
    async with serve_in_process(Sleepy(), CREDENTIAL) as served:
        messages: list[int] = []
        read = served.servicer._read

        async def counting(requests: AsyncIterator[cpb.ExecuteRequest], stream: object) -> None:
            async def counted() -> AsyncIterator[cpb.ExecuteRequest]:
                async for request in requests:
                    messages.append(len(request.operations))
                    yield request
            await read(counted(), stream)  # type: ignore[arg-type]

        served.servicer._read = counting  # type: ignore[method-assign]
        link = Link(rpb.ControllerRegistration(name="sleepy", replica="r1", address=served.address), ENGINE_KEY)
        link.start()
        try:
            futures = [link.submit(create(f"busy{n}", 2.0), {}) for n in range(100)]
            await eventually(lambda: messages, timeout=10, what="the first message reaching the controller", interval=0.01)
            for n in range(40):  # one at a time, as results come back during a run
                futures.append(link.submit(create(f"late{n}", 0.0), {}))
                await asyncio.sleep(0.001)  # on purpose: paces the submissions, one per loop turn or so
            results = await asyncio.wait_for(asyncio.gather(*futures), 10)
        finally:
            await link.close()
    assert sorted(r.operation_id for r in results) == sorted([f"busy{n}-1-create" for n in range(100)]
                                                             + [f"late{n}-1-create" for n in range(40)])
    assert all(r.outcome == cpb.OUTCOME_OK for r in results)
    assert messages[0] == 100 and sum(messages) == 140
    assert len(messages) <= 4, f"40 operations queued one by one took {len(messages) - 1} messages"


async def test_the_pool_lets_a_replica_go_as_it_unregisters_not_at_its_next_refresh(
        nc: NatsClient, subjects: Subjects, monkeypatch: pytest.MonkeyPatch) -> None:
    """A controller that stops unregisters, then waits for its open streams
    to end: the dispatcher's pool closes its link on the unregistration
    itself (watched), not up to a second later at its periodic refresh."""
    monkeypatch.setattr(ControllerPool, "_refresh_loop", lambda self: asyncio.sleep(3600))  # the watch alone
    repo = Repository(nc.jetstream(), subjects)
    await repo.open()
    pool = ControllerPool(repo.registrations, ENGINE_KEY)
    await pool.start()
    try:
        async with serve_in_process(Sleepy(), CREDENTIAL) as served:
            await repo.registrations.put(rpb.ControllerRegistration(
                name="sleepy", replica="r1", address=served.address, expires_unix_ms=now_ms() + 15_000))
            await eventually(lambda: "r1" in pool.links, timeout=10, what="the replica linked as it registers")
            link = pool.links["r1"]
            await repo.registrations.remove("sleepy", "r1")
            await eventually(lambda: "r1" not in pool.links, timeout=10, what="the replica let go as it unregisters")
            assert link.closed
    finally:
        await pool.stop()
