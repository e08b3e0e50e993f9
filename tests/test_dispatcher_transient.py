"""A request whose start meets NATS trouble (a read that times out) is tried
again, not failed: the trouble is not the request's. Seen in a chaos run: a
removal failed with "reading bucket 'orch_solutions' timed out"."""

from __future__ import annotations

import asyncio

import nats
import pytest

import models
from conftest import NatsServer
from dispatcher.ownership import replica as service
from dispatcher.ownership.replica import Dispatcher
from dispatcher.settings import DispatcherSettings
from orchestration.model.codec import parse_document
from orchestration.store.repository import Repository
from orchestration.store.requests import new_request, submit
from orchestration.store.subjects import Subjects
from orchestration.v1 import model_pb2 as pb
from orchestration.v1 import records_pb2 as rpb
from orchestration_sdk.status_errors import Unavailable


async def test_a_request_whose_start_times_out_reading_nats_is_tried_again_not_failed(
        nats_server: NatsServer, subjects: Subjects, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = 0
    real = service.apply_request

    async def flaky(*args: object, **kwargs: object) -> object:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise Unavailable("reading bucket 'orch_solutions' timed out; is NATS overloaded?")
        return await real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(service, "apply_request", flaky)
    nc = await nats.connect(nats_server.url)
    repo = Repository(nc.jetstream(), subjects)
    await repo.open()
    await repo.apply_model(parse_document(models.flat("flaky", 1), "flaky").model)
    dispatcher = Dispatcher(DispatcherSettings(address="127.0.0.1:0", nats_url=nats_server.url, prefix=subjects.prefix,
                                               credential="c", registration_key="k", replica="t1"))
    await dispatcher.start()
    try:
        request = new_request(rpb.Request.Remove(), "flaky", "never-deployed", "test")
        task = await asyncio.wait_for(submit(repo, repo.leases, nc.jetstream(), subjects, request), 30)
        deadline = asyncio.get_running_loop().time() + 30
        while asyncio.get_running_loop().time() < deadline:
            status = (await asyncio.wait_for(repo.tasks.get_task("flaky", task), 10)).value.status
            if status in (pb.TASK_STATUS_COMPLETED, pb.TASK_STATUS_FAILED):
                break
            await asyncio.sleep(0.05)
        lease = await repo.leases.get("flaky", "never-deployed")
        assert status == pb.TASK_STATUS_COMPLETED and calls == 2, (
            f"status {status}, {calls} start(s), lease {lease}, runs here {list(dispatcher.runs)}")
    finally:
        # A stop that hangs is named as such, not left to the suite's time-out.
        await asyncio.wait_for(dispatcher.stop(), 30)
        await nc.close()
