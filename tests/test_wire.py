"""The wire (orchestration.store.wire) against a real nats-server: every
touch of nats-py's private parts and of JetStream's wire formats the
project makes, held to what the installed nats-py and nats-server do, so
that an upgrade that changes one fails here first. Acknowledged publishes
(what every KV write and event goes through), direct reads of a stream's
last message, bulk reads, and the error codes the store acts on."""

from __future__ import annotations

import asyncio

import nats
import nats.errors
import nats.js.errors
import pytest
from conftest import NatsServer
from nats.aio.client import Client as NatsClient
from nats.js import api

from orchestration.store import wire
from orchestration.store.kvstore import Fence
from orchestration.store.streams import open_bucket
from orchestration.store.subjects import Subjects
from orchestration.store.wire import publisher_for


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


# ---- nats-py internals and JetStream's codes ----------------------------------------------


async def test_the_private_parts_of_a_jetstream_context_are_where_the_wire_reads_them(nc: NatsClient) -> None:
    js = nc.jetstream(timeout=7.5)
    assert wire.connection_of(js) is nc
    assert wire.api_prefix(js) == "$JS.API"
    assert wire.api_prefix(nc.jetstream(domain="hub")) == "$JS.hub.API"
    assert wire.api_timeout(js) == 7.5


async def test_the_error_codes_the_store_acts_on_are_the_servers(nc: NatsClient, subjects: Subjects, stream: str) -> None:
    js, publisher = nc.jetstream(), publisher_for(nc.jetstream())
    await publisher.publish(f"{stream}.k", b"1")
    with pytest.raises(nats.js.errors.APIError) as wrong:
        await publisher.publish(f"{stream}.k", b"2", {api.Header.EXPECTED_LAST_SUBJECT_SEQUENCE: "7"})
    assert wrong.value.err_code in wire.WRONG_LAST_SEQUENCE
    with pytest.raises(nats.js.errors.APIError) as fenced:
        await publisher.publish(f"{stream}.k", b"2", {api.Header.EXPECTED_LAST_SUBJECT_SEQUENCE: "7",
                                                      wire.EXPECTED_LAST_SEQUENCE_SUBJECT: f"{stream}.fence"})
    assert fenced.value.err_code in wire.WRONG_LAST_SEQUENCE
    full = f"{subjects.prefix}_FULL"
    await js.add_stream(name=full, subjects=[f"{subjects.prefix}.full"], max_bytes=200, discard=api.DiscardPolicy.NEW)
    with pytest.raises(nats.js.errors.APIError) as refused:
        for _ in range(10):
            await publisher.publish(f"{subjects.prefix}.full", b"x" * 100)
    assert refused.value.err_code == wire.STREAM_FULL
    with pytest.raises(nats.js.errors.APIError) as in_use:
        await js.add_stream(name=full, subjects=[f"{subjects.prefix}.other"])
    assert in_use.value.err_code == wire.STREAM_NAME_IN_USE
    assert await wire.last_message(js, stream_name(subjects), f"{stream}.never") is None  # NO_MESSAGE, read as none


async def test_a_direct_read_returns_the_last_message_its_sequence_and_headers(nc: NatsClient, subjects: Subjects,
                                                                              stream: str) -> None:
    js, publisher = nc.jetstream(), publisher_for(nc.jetstream())
    await publisher.publish(f"{stream}.k", b"old")
    sequence = await publisher.publish(f"{stream}.k", b"new", {"KV-Operation": "DEL", "X-Note": "a: b"})
    found = await wire.last_message(js, stream_name(subjects), f"{stream}.k")
    assert found is not None and (found.data, found.sequence) == (b"new", sequence)
    assert found.headers == {"KV-Operation": "DEL", "X-Note": "a: b"} and wire.is_marker(found.headers)
    assert not wire.is_marker({}) and wire.is_marker({"Nats-Marker-Reason": "MaxAge"})


async def test_a_bulk_read_delivers_each_message_with_its_stream_sequence(nc: NatsClient, subjects: Subjects,
                                                                          stream: str) -> None:
    js, publisher = nc.jetstream(), publisher_for(nc.jetstream())
    written = {f"{stream}.k{i}": await publisher.publish(f"{stream}.k{i}", str(i).encode()) for i in range(12)}
    messages = await wire.read_stream(js, stream_name(subjects), [f"{stream}.>"], api.DeliverPolicy.ALL, False, "test",
                                      lambda m: m)
    assert {m.subject: wire.stream_sequence(m) for m in messages} == written
    assert all(wire.stream_sequence(m) == m.metadata.sequence.stream for m in messages)
    # Each message is kept as the conversion makes it; None keeps nothing.
    odd = await wire.read_stream(js, stream_name(subjects), [f"{stream}.>"], api.DeliverPolicy.ALL, False, "test",
                                 lambda m: m.data if int(m.data) % 2 else None)
    assert odd == [str(i).encode() for i in range(1, 12, 2)]
