"""Acknowledged JetStream publishes (orchestration.store.publisher) against a real
nats-server: what every KV write and event of the engine goes through."""

from __future__ import annotations

import asyncio

import nats
import nats.errors
import nats.js.errors
import pytest
from conftest import NatsServer
from nats.aio.client import Client as NatsClient
from nats.js import api

from orchestration.store import publisher as publisher_module
from orchestration.store.publisher import publisher_for
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


# ---- atomic batches: the writes to a stream made in one turn of the event loop -------------------------


@pytest.fixture
async def batched(nc: NatsClient, subjects: Subjects, monkeypatch: pytest.MonkeyPatch) -> str:
    """A stream on `<prefix>.b.>` that allows atomic batches, batched by the
    connection's publisher (whatever number of writes are in flight); its subject prefix."""
    monkeypatch.setattr(publisher_module, "BATCH_FROM", 0)
    await nc.jetstream().add_stream(api.StreamConfig(name=f"{subjects.prefix}_B", subjects=[f"{subjects.prefix}.b.>"],
                                                     allow_atomic=True, duplicate_window=60))
    publisher_for(nc.jetstream()).batch(f"{subjects.prefix}_B")
    return f"{subjects.prefix}.b"


async def stored(nc: NatsClient, subjects: Subjects, sequence: int) -> tuple[str, bytes, dict[str, str]]:
    message = await nc.jetstream().get_msg(f"{subjects.prefix}_B", sequence)
    return message.subject, message.data or b"", dict(message.headers or {})


async def test_writes_of_one_turn_go_out_as_one_batch_and_each_gets_its_sequence(
        nc: NatsClient, subjects: Subjects, batched: str) -> None:
    publisher = publisher_for(nc.jetstream())
    stream = f"{subjects.prefix}_B"
    sequences = await asyncio.gather(*(publisher.publish(f"{batched}.k{i}", str(i).encode(), stream=stream)
                                       for i in range(40)))
    assert sequences == list(range(1, 41))
    for i, sequence in enumerate(sequences):
        subject, data, headers = await stored(nc, subjects, sequence)
        assert (subject, data) == (f"{batched}.k{i}", str(i).encode())
        assert headers.get("Nats-Batch-Id")  # it went out in a batch
    assert len({(await stored(nc, subjects, s))[2]["Nats-Batch-Id"] for s in sequences}) == 1


async def test_more_writes_than_a_batch_takes_keep_their_order(nc: NatsClient, subjects: Subjects, batched: str) -> None:
    from orchestration.store.publisher import MAX_BATCH

    publisher = publisher_for(nc.jetstream())
    count = 2 * MAX_BATCH + 7
    sequences = await asyncio.gather(*(publisher.publish(f"{batched}.same", str(i).encode(), stream=f"{subjects.prefix}_B")
                                       for i in range(count)))
    assert sequences == list(range(1, count + 1))
    assert (await stored(nc, subjects, count))[1] == str(count - 1).encode()  # the last write is the last stored


async def test_a_refused_write_fails_alone_and_the_rest_of_its_batch_is_stored(
        nc: NatsClient, subjects: Subjects, batched: str) -> None:
    publisher = publisher_for(nc.jetstream())
    stream = f"{subjects.prefix}_B"
    expect_none = {api.Header.EXPECTED_LAST_SUBJECT_SEQUENCE: "0"}
    assert await publisher.publish(f"{batched}.taken", b"first", expect_none, stream=stream) == 1
    results = await asyncio.gather(
        publisher.publish(f"{batched}.a", b"a", expect_none, stream=stream),
        publisher.publish(f"{batched}.taken", b"again", expect_none, stream=stream),  # expects it absent: refused
        publisher.publish(f"{batched}.b", b"b", expect_none, stream=stream),
        return_exceptions=True)
    assert isinstance(results[1], nats.js.errors.APIError) and results[1].err_code == 10071  # wrong last sequence
    assert [await stored(nc, subjects, s) for s in (results[0], results[2])] == [
        (f"{batched}.a", b"a", {**expect_none}), (f"{batched}.b", b"b", {**expect_none})]
    assert (await nc.jetstream().stream_info(stream)).state.messages == 3


async def test_a_duplicate_message_id_in_a_batch_stores_the_rest(nc: NatsClient, subjects: Subjects, batched: str) -> None:
    publisher = publisher_for(nc.jetstream())
    stream = f"{subjects.prefix}_B"
    first = await publisher.publish(f"{batched}.e", b"1", {"Nats-Msg-Id": "e1"}, stream=stream)
    again, other = await asyncio.gather(publisher.publish(f"{batched}.e", b"1", {"Nats-Msg-Id": "e1"}, stream=stream),
                                        publisher.publish(f"{batched}.f", b"2", {"Nats-Msg-Id": "f1"}, stream=stream))
    assert again == first  # stored once, as a single publish reports it
    assert (await stored(nc, subjects, other))[:2] == (f"{batched}.f", b"2")
    assert (await nc.jetstream().stream_info(stream)).state.messages == 2


async def test_a_stream_that_takes_no_batches_gets_the_writes_one_by_one(nc: NatsClient, subjects: Subjects, stream: str,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(publisher_module, "BATCH_FROM", 0)
    publisher = publisher_for(nc.jetstream())
    publisher.batch(stream_name(subjects))  # by mistake: the stream does not allow atomic batches
    sequences = await asyncio.gather(*(publisher.publish(f"{stream}.x{i}", b"x", stream=stream_name(subjects)) for i in range(5)))
    assert sorted(sequences) == list(range(1, 6))
    assert stream_name(subjects) not in publisher._batched  # and it stops trying
    assert await publisher.publish(f"{stream}.y", b"y", stream=stream_name(subjects)) == 6


async def test_a_caller_that_gives_up_before_the_end_of_the_turn_writes_nothing(
        nc: NatsClient, subjects: Subjects, batched: str) -> None:
    publisher = publisher_for(nc.jetstream())
    stream = f"{subjects.prefix}_B"
    given_up = asyncio.ensure_future(publisher.publish(f"{batched}.gone", b"x", stream=stream))
    kept = asyncio.ensure_future(publisher.publish(f"{batched}.kept", b"y", stream=stream))
    await asyncio.sleep(0)  # both queued for the end of the turn
    given_up.cancel()
    assert await kept == 1
    assert given_up.cancelled()
    assert (await nc.jetstream().stream_info(stream)).state.messages == 1


async def test_with_few_writes_in_flight_a_write_goes_out_at_once(nc: NatsClient, subjects: Subjects, batched: str,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(publisher_module, "BATCH_FROM", 3)
    publisher = publisher_for(nc.jetstream())
    stream = f"{subjects.prefix}_B"
    sequences = await asyncio.gather(*(publisher.publish(f"{batched}.q{i}", b"q", stream=stream) for i in range(6)))
    assert sequences == list(range(1, 7))
    batch_ids = [(await stored(nc, subjects, s))[2].get("Nats-Batch-Id") for s in sequences]
    assert batch_ids[:3] == [None] * 3  # sent as they came
    assert batch_ids[3] and set(batch_ids[3:]) == {batch_ids[3]}  # the rest waited for the end of the turn, together
