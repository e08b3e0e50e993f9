"""NATS least privilege against a real suite and real nats-py clients: with
the bus URL of `orch info` a client sends requests, follows events and
status and replays the events stream, and nats-server refuses everything
else (KV buckets, other streams, internal subjects, services' inboxes)."""

from __future__ import annotations

import asyncio
import json
import urllib.parse
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import nats
import nats.errors
import pytest
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import api

from orchestration.store.natsusers import inbox_prefix
from suite import DATA, Suite, eventually, running_suite


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Suite]:
    with running_suite(tmp_path_factory.mktemp("natsusers")) as running:
        running.ok("apply", "-f", str(DATA / "demo2.yaml"))
        yield running


def info(suite: Suite) -> dict[str, str]:
    return json.loads(suite.ok("info", "-o", "json", "--show-secrets"))  # type: ignore[no-any-return]


def inbox_of(url: str) -> str:
    """The inbox prefix a suite's NATS user may read (natsusers.inbox_prefix), from its URL."""
    return inbox_prefix(urllib.parse.urlsplit(url).username or "")


@asynccontextmanager
async def client(url: str) -> AsyncIterator[tuple[NatsClient, list[str]]]:
    """A connection and the errors the server sent it (permission violations)."""
    errors: list[str] = []

    async def on_error(exc: Exception) -> None:
        errors.append(str(exc))

    nc = await nats.connect(url, error_cb=on_error, max_reconnect_attempts=0, inbox_prefix=inbox_of(url))
    try:
        yield nc, errors
    finally:
        await nc.close()


async def refused(errors: list[str], kind: str, subject: str) -> None:
    """Wait until the server has said the publish or subscription was a violation."""
    await eventually(lambda: any(f"permissions violation for {kind} to" in e.lower() and subject.lower() in e.lower() for e in errors),
                     timeout=5, what=f"a {kind} violation for {subject} (got {errors})")


def test_the_bus_user_sends_requests_and_replays_events(suite: Suite) -> None:
    urls = info(suite)
    assert urls["bus_url"].startswith("nats://bus:") and urls["bus_url"] != urls["nats_url"]
    token = (suite.home / "token").read_text().strip()

    async def scenario() -> None:
        async with client(urls["bus_url"]) as (nc, errors):
            events: list[dict[str, str]] = []
            status = await nc.subscribe("orch.status.>")

            async def on_event(msg: Msg) -> None:
                events.append(json.loads(msg.data))

            live = await nc.subscribe("orch.events.>", cb=on_event)
            reply = await nc.request("orch.requests.deploy", json.dumps(
                {"domain": "demo", "architecture": "app", "version": "V0.0.0", "solution": "on-bus"}).encode(),
                timeout=10, headers={"Authorization": f"Bearer {token}"})
            task = json.loads(reply.data)["task"]
            assert isinstance(task, str), reply.data
            await eventually(lambda: any(e["task"] == task and e["type"] == "completion" for e in events), timeout=60,
                             what="the root's completion event")
            # A late client replays what is stored through the gateway, a page at a time.
            replayed: list[dict[str, str]] = []
            after, more = 0, True
            while more:
                page = json.loads((await nc.request("orch.requests.events", json.dumps(
                    {"domain": "demo", "after": after, "limit": 50}).encode(), timeout=10,
                    headers={"Authorization": f"Bearer {token}"})).data)
                assert set(page) == {"events", "last", "more"}, page
                replayed += page["events"]
                after, more = page["last"], page["more"]
            assert [e["uuid"] for e in replayed if e["task"] == task] == [e["uuid"] for e in events if e["task"] == task]
            await live.unsubscribe()
            await status.unsubscribe()
            assert errors == []

    asyncio.run(scenario())


def test_the_bus_user_is_refused_everything_else(suite: Suite) -> None:
    url = info(suite)["bus_url"]

    async def scenario() -> None:
        async with client(url) as (nc, errors):
            # A refused request gets no answer: each waits out its timeout (1 s, as the requests below, not 5).
            js = nc.jetstream(timeout=1)
            # KV: neither put nor get, nor read a bucket's stream.
            await nc.publish("$KV.orch_model.domain.demo", b"x")
            await refused(errors, "publish", "$KV.orch_model.domain.demo")
            with pytest.raises(nats.errors.TimeoutError):
                await nc.request("$JS.API.DIRECT.GET.KV_orch_access", b'{"last_by_subj": "$KV.orch_access.token.x"}', timeout=1)
            await refused(errors, "publish", "$JS.API.DIRECT.GET.KV_orch_access")
            with pytest.raises(nats.errors.TimeoutError):
                await js.get_msg("KV_orch_model", 1)
            await refused(errors, "publish", "$JS.API.STREAM.MSG.GET.KV_orch_model")
            # No consumer on the requests stream (which would steal the dispatchers' work), nor on any other.
            with pytest.raises(nats.errors.TimeoutError):
                await js.add_consumer("ORCH_REQUESTS", api.ConsumerConfig(durable_name="thief"), timeout=1)
            await refused(errors, "publish", "$JS.API.CONSUMER")
            with pytest.raises(nats.errors.TimeoutError):
                await js.add_consumer("ORCH_EVENTS", api.ConsumerConfig(deliver_subject="orch.status.demo.x"), timeout=1)
            await refused(errors, "publish", "$JS.API.CONSUMER.CREATE.ORCH_EVENTS")
            # No internal subject, no stream administration.
            await nc.publish("orch.internal.requests.demo.app", b"{}")
            await refused(errors, "publish", "orch.internal.requests.demo.app")
            with pytest.raises(nats.errors.TimeoutError):
                await js.delete_stream("ORCH_EVENTS")
            await refused(errors, "publish", "$JS.API.STREAM.DELETE.ORCH_EVENTS")
            # The services' inboxes (where their KV reads are answered) cannot be read.
            await nc.subscribe("_INBOX_gateway.>")
            await refused(errors, "subscription", "_INBOX_gateway.>")
            await nc.subscribe("$KV.orch_access.>")
            await refused(errors, "subscription", "$KV.orch_access.>")

    asyncio.run(scenario())
    # Nothing the refused calls tried happened: the suite still answers and runs.
    assert "demo" in suite.ok("domain", "list")


def test_a_bus_request_cannot_make_the_gateway_write_where_the_client_chooses(suite: Suite) -> None:
    """The reply subject is the client's choice: the gateway answers only on an _INBOX subject,
    so a reply can never be made to land in a KV bucket or on an internal subject."""
    urls = info(suite)

    async def scenario() -> list[str]:
        async with client(urls["bus_url"]) as (nc, _):
            for target in ("$KV.orch_access.token.victim", "$KV.orch_model.domain.demo", "orch.internal.requests.demo.x",
                           "_INBOX.>", "_INBOX.*.x"):
                await nc.publish("orch.requests.deploy", b"{}", reply=target)
            await nc.flush()
        # A real request still gets its answer.
        async with client(urls["bus_url"]) as (nc, _):
            reply = await nc.request("orch.requests.task", b'{"domain": "demo", "task": "x"}', timeout=10)
            assert json.loads(reply.data)["error"]["code"] == "UNAUTHENTICATED"
        async with client(urls["nats_url"]) as (nc, _):
            js = nc.jetstream()
            found = []
            for bucket, key in (("orch_access", "token.victim"), ("orch_model", "domain.demo")):
                kv = await js.key_value(bucket)
                try:
                    entry = await kv.get(key)
                    found.append(f"{bucket} {key} {entry.value[:40]!r}")
                except Exception:  # noqa: BLE001 - missing: nothing was written
                    pass
            return found

    found = asyncio.run(scenario())
    assert all(b"error" not in f.encode() for f in found), found
    assert "demo" in suite.ok("domain", "list")
