"""Attack: read another bus client's replies. Every bus client shared one
NATS user allowed to subscribe to `_INBOX.>`, so any client saw every other
client's replies (task ids, errors, replayed events). Each named client
(ORCH_BUS_CLIENTS) is now a NATS user of its own whose replies arrive under
its own inbox prefix, which no other user may read."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest

from suite import Suite, running_suite
from test_nats_users import client, refused


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Suite]:
    with running_suite(tmp_path_factory.mktemp("inboxes"), env={"ORCH_BUS_CLIENTS": "erp,billing"}) as running:
        yield running


def test_each_bus_client_reads_its_own_replies_and_no_one_elses(suite: Suite) -> None:
    urls = json.loads(suite.ok("info", "-o", "json", "--show-secrets"))
    clients = urls["bus_clients"]
    assert set(clients) == {"erp", "billing"} and clients["erp"]["inbox_prefix"] == "_INBOX_bus-erp"
    assert clients["erp"]["url"].startswith("nats://bus-erp:") and urls["bus_inbox_prefix"] == "_INBOX_bus"
    token = (suite.home / "token").read_text().strip()

    async def scenario() -> None:
        async with client(clients["erp"]["url"]) as (erp, erp_errors), \
                client(clients["billing"]["url"]) as (billing, billing_errors):
            # Its own request is answered in its own inbox.
            reply = await erp.request("orch.requests.task", json.dumps({"domain": "nope", "task": "x"}).encode(),
                                      timeout=10, headers={"Authorization": f"Bearer {token}"})
            assert json.loads(reply.data)["error"]["code"] == "NOT_FOUND"
            # Another client's inbox, and every inbox at once, are refused.
            await billing.subscribe("_INBOX_bus-erp.>")
            await refused(billing_errors, "subscription", "_INBOX_bus-erp.>")
            await billing.subscribe("_INBOX.>")
            await refused(billing_errors, "subscription", "_INBOX.>")
            async with client(urls["bus_url"]) as (shared, shared_errors):
                await shared.subscribe("_INBOX_bus-billing.>")
                await refused(shared_errors, "subscription", "_INBOX_bus-billing.>")
            assert erp_errors == []

    asyncio.run(scenario())
