"""Attack: forge status and events with the bus credentials. A bus client
could create a push consumer on the events stream whose delivery subject is
one the gateway's status watchers, the console or the dispatchers listen on
(status, KV, the requests stream), and so make the server deliver copies
there: clients would see status no engine wrote. Bus clients now have no
JetStream API at all; they replay stored events through the gateway."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import nats
import nats.errors
import pytest
from nats.aio.msg import Msg
from nats.js import api

from suite import Suite, running_suite
from test_nats_users import client, info, refused


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Suite]:
    with running_suite(tmp_path_factory.mktemp("forged")) as running:
        yield running


@pytest.mark.parametrize("deliver", ["orch.status.demo.app", "$KV.orch_solutions.demo.app", "orch.internal.requests.d.s"])
def test_a_bus_client_cannot_make_the_server_deliver_onto_an_engine_subject(suite: Suite, deliver: str) -> None:
    urls = info(suite)

    async def scenario() -> list[bytes]:
        seen: list[bytes] = []
        # What an engine-side listener on that subject would receive.
        watcher = await nats.connect(urls["nats_url"])

        async def heard(msg: Msg) -> None:
            seen.append(msg.data)

        await watcher.subscribe(deliver, cb=heard)
        try:
            async with client(urls["bus_url"]) as (nc, errors):
                with pytest.raises(nats.errors.TimeoutError):
                    await nc.jetstream().add_consumer(
                        "ORCH_EVENTS", api.ConsumerConfig(deliver_subject=deliver, deliver_policy=api.DeliverPolicy.ALL),
                        timeout=1)
                await refused(errors, "publish", "$JS.API.CONSUMER.CREATE.ORCH_EVENTS")
                # A direct publish there is refused too.
                await nc.publish(deliver, json.dumps({"state": "active", "forged": True}).encode())
                await refused(errors, "publish", deliver)
            await asyncio.sleep(0.5)
        finally:
            await watcher.close()
        return seen

    assert asyncio.run(scenario()) == [], "something reached an engine subject"
