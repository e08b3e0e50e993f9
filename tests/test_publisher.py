"""Acknowledged JetStream publishes (orchestration.store.publisher) against a real
nats-server: what every KV write and event of the engine goes through, and
the key reads that share its reply subscription."""

from __future__ import annotations

import asyncio

import nats
import nats.errors
import nats.js.errors
import pytest
from conftest import NatsServer
from nats.aio.client import Client as NatsClient
from nats.js import api

from orchestration.store.kvstore import Fence
from orchestration.store.publisher import publisher_for
from orchestration.store.streams import open_bucket
from orchestration.store.subjects import Subjects


def stream_name(subjects: Subjects) -> str:
    return f"{subjects.prefix}_S"


@pytest.fixture
async def stream(nc: NatsClient, subjects: Subjects) -> str:
    """A stream on `<prefix>.s.>`; its subject prefix."""
    await nc.jetstream().add_stream(name=stream_name(subjects), subjects=[f"{subjects.prefix}.s.>"])
    return f"{subjects.prefix}.s"


async def test_publish_returns_the_stream_sequence(nc: NatsClient, subjects: Subjects, stream: str) -> None:
    publisher = publisher_for(nc.jetstream())
    assert await publisher.publish(f"{stream}.a", b"1") == 1
    assert await publisher.publish(f"{stream}.b", b"2", {"Nats-Msg-Id": "x"}) == 2
    message = await nc.jetstream().get_msg(stream_name(subjects), 2)
    assert message.data == b"2" and message.headers == {"Nats-Msg-Id": "x"}


async def test_an_expected_sequence_is_enforced_with_a_plain_or_an_enum_header(nc: NatsClient, stream: str) -> None:
    publisher = publisher_for(nc.jetstream())
    assert await publisher.publish(f"{stream}.k", b"1", {"Nats-Expected-Last-Subject-Sequence": "0"}) == 1
    for header in ("Nats-Expected-Last-Subject-Sequence", api.Header.EXPECTED_LAST_SUBJECT_SEQUENCE):
        with pytest.raises(nats.js.errors.APIError) as refused:
            await publisher.publish(f"{stream}.k", b"2", {header: "0"})
        assert refused.value.err_code == 10071  # wrong last sequence
    assert await publisher.publish(f"{stream}.k", b"2", {api.Header.EXPECTED_LAST_SUBJECT_SEQUENCE: "1"}) == 2


async def test_writes_in_flight_together_are_stored_in_the_order_issued(nc: NatsClient, stream: str) -> None:
    publisher = publisher_for(nc.jetstream())
    assert await asyncio.gather(*(publisher.publish(f"{stream}.n", str(i).encode()) for i in range(200))) == list(range(1, 201))


async def test_no_stream_and_no_acknowledgement_are_errors(nc: NatsClient, subjects: Subjects) -> None:
    publisher = publisher_for(nc.jetstream())
    with pytest.raises(nats.js.errors.NoStreamResponseError):
        await publisher.publish(f"{subjects.prefix}.nowhere", b"x")
    with pytest.raises(nats.errors.NoRespondersError):  # a plain request nobody answers
        await publisher.request(f"{subjects.prefix}.nowhere", b"x")
    silent = await nc.subscribe(f"{subjects.prefix}.silent")  # takes the message, never answers
    with pytest.raises(nats.errors.TimeoutError):
        await publisher.publish(f"{subjects.prefix}.silent", b"x", timeout=0.3)
    await silent.unsubscribe()


async def test_bad_headers_and_a_closed_connection_are_refused_and_nothing_is_sent(
        nats_server: NatsServer, nc: NatsClient, subjects: Subjects, stream: str) -> None:
    client = await nats.connect(nats_server.url)
    publisher = publisher_for(client.jetstream())
    # A value cannot smuggle in a header of its own: its line breaks become spaces.
    assert await publisher.publish(f"{stream}.h", b"ok", {"X-Test": "a\r\nInjected: yes"}) == 1
    assert (await nc.jetstream().get_msg(stream_name(subjects), 1)).headers == {"X-Test": "a  Injected: yes"}
    with pytest.raises(nats.errors.BadHeaderError):
        await publisher.publish(f"{stream}.h", b"x", {"Bad Name": "x"})
    await client.close()
    with pytest.raises(nats.errors.ConnectionClosedError):
        await publisher.publish(f"{stream}.h", b"x")
    assert (await nc.jetstream().stream_info(stream_name(subjects))).state.messages == 1


async def test_a_caller_that_gives_up_leaves_nothing_waiting(nc: NatsClient, subjects: Subjects) -> None:
    publisher = publisher_for(nc.jetstream())
    silent = await nc.subscribe(f"{subjects.prefix}.silent")
    waiting = asyncio.ensure_future(publisher.publish(f"{subjects.prefix}.silent", b"x"))
    await silent.next_msg(timeout=10)  # published: the caller now waits for an acknowledgement
    assert publisher._pending and not waiting.done()
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert not publisher._pending
    await silent.unsubscribe()


async def test_a_bucket_reads_a_key_over_the_shared_reply_subscription(nc: NatsClient, subjects: Subjects) -> None:
    """Bucket.get reads a key as one JetStream API request on the publisher's
    reply subscription: its value and revision, also of a key written with
    headers (fenced writes store theirs); None for a key never written, deleted
    or purged; a bucket that is gone is an error, not an empty key."""
    bucket = await open_bucket(nc.jetstream(), f"{subjects.prefix}_reads")
    assert await bucket.get("never") is None
    first = await bucket.put("plain", b"value")
    entry = await bucket.get("plain")
    assert entry is not None and (entry.key, entry.value, entry.revision) == ("plain", b"value", first)
    fence = await bucket.put("fence", b"owner")
    fenced = bucket.fenced(Fence("fence", fence))
    written = await fenced.write("with.headers", b"\x00\x01 bytes", None, "a fenced record")
    assert (await nc.jetstream().get_msg(bucket.stream, written)).headers  # stored with the write's headers
    entry = await bucket.get("with.headers")
    assert entry is not None and (entry.value, entry.revision) == (b"\x00\x01 bytes", written)
    empty = await bucket.put("empty", b"")
    entry = await bucket.get("empty")
    assert entry is not None and (entry.value, entry.revision) == (b"", empty)
    await bucket.delete("plain", None, "plain")
    assert await bucket.get("plain") is None
    await bucket.purge("with.headers")
    assert await bucket.get("with.headers") is None
    await nc.jetstream().delete_stream(bucket.stream)
    with pytest.raises(nats.js.errors.NotFoundError):
        await bucket.get("fence")
