"""Publishing to JetStream and awaiting the acknowledgement, many publishes
in flight on one connection.

nats-py's ``JetStreamContext.publish`` is a request per message (a fresh
inbox token, a timeout task, a parsed acknowledgement object): at thousands
of writes a second it is most of the dispatcher's time. Here every publish
shares one wildcard reply subscription, a future keyed by a counter, and a
check of the acknowledgement that parses JSON only for errors. Errors are
raised as nats-py raises them, so callers handle both paths alike.

Writes to a stream that allows atomic batches (see batch()) made in one
turn of the event loop while many others are in flight go out together as
one atomic batch (nats-server 2.12+, ADR-50): one acknowledgement for all
of them instead of one each, which is most of a write's cost here (a busy
run's writes come in bursts: the results of a message from a controller
are recorded in the same turn). A batch is stored whole or not at all; when the server refuses it (one of
its writes expected another sequence, a duplicate message id, too many
batches in flight), nothing of it was stored, and each of its writes is
sent again alone, so that each gets its own answer, as without batches.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import uuid
from dataclasses import dataclass

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext

from orchestration.store.natsconn import connection_of

# How long a publish waits for its acknowledgement (nats-py's default).
ACK_TIMEOUT = 5.0
_NO_RESPONDERS = "503"
_SEQ = re.compile(rb'"seq":\s*(\d+)')
# Granularity of acknowledgement time-outs (seconds).
_SWEEP_SECONDS = 0.25
# Writes per atomic batch (the server takes at most 1,000).
MAX_BATCH = 256
# Writes wait for the end of the turn (to go out in a batch) only while at
# least this many acknowledgements are awaited: a write of a quiet run (a
# chain of dependent steps, a few slow operations) goes out at once.
BATCH_FROM = 32
_BATCH_ID, _BATCH_SEQUENCE, _BATCH_COMMIT = "Nats-Batch-Id", "Nats-Batch-Sequence", "Nats-Batch-Commit"
# JetStream error code: the stream does not allow atomic batches (any more).
_ATOMIC_DISABLED = 10174


@dataclass
class _Write:
    """A write waiting for the end of the turn (see Publisher.publish)."""

    subject: str
    payload: bytes
    headers: dict[str, str] | None
    timeout: float
    sequence: asyncio.Future[int]


class Publisher:
    """Acknowledged JetStream publishes over one connection (see publisher_for)."""

    def __init__(self, nc: Client) -> None:
        self._nc = nc
        self._prefix = ""
        # Token -> (the publish's future, when it times out in loop time).
        self._pending: dict[str, tuple[asyncio.Future[Msg], float]] = {}
        self._counter = itertools.count(1)
        self._subscription: Subscription | None = None
        self._lock = asyncio.Lock()
        # One timer for all pending publishes (a timer each costs more than the
        # publish), running only while some are pending.
        self._sweeper: asyncio.Task[None] | None = None
        # Streams whose writes go out in atomic batches; the writes to each waiting for the end of the turn.
        self._batched: set[str] = set()
        self._queued: dict[str, list[_Write]] = {}
        self._batch_ids = (f"{uuid.uuid4().hex[:16]}.{n}" for n in itertools.count(1))
        self._senders: set[asyncio.Task[None]] = set()

    def batch(self, stream: str) -> None:
        """Send the writes to `stream` (made to allow atomic batches) in batches."""
        self._batched.add(stream)

    async def _start(self) -> None:
        async with self._lock:
            if self._subscription is None:
                self._prefix = self._nc.new_inbox() + "."
                # No limit on pending replies: every one of them has a waiting publish.
                self._subscription = await self._nc.subscribe(self._prefix + "*", cb=self._on_reply, pending_msgs_limit=0,
                                                              pending_bytes_limit=0)

    async def _on_reply(self, msg: Msg) -> None:
        pending = self._pending.pop(msg.subject[len(self._prefix):], None)
        if pending is not None and not pending[0].done():
            pending[0].set_result(msg)

    async def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        while self._pending:
            await asyncio.sleep(_SWEEP_SECONDS)
            now = loop.time()
            for token, (future, deadline) in list(self._pending.items()):
                if deadline <= now:
                    del self._pending[token]
                    if not future.done():
                        future.set_exception(nats.errors.TimeoutError())

    async def publish(self, subject: str, payload: bytes, headers: dict[str, str] | None = None,
                      timeout: float = ACK_TIMEOUT, stream: str = "") -> int:
        """Publish and wait for the stream to store it; the stream sequence.
        `stream`: the stream that takes the subject, when the write may go
        out in a batch with others (see batch()).

        Raises nats.errors.TimeoutError without an acknowledgement in time,
        nats.js.errors.NoStreamResponseError when no stream takes the subject,
        and the nats.js.errors.APIError subclass of a refusal (for example
        KeyWrongLastSequenceError when an expected sequence header failed)."""
        queued = self._queued.get(stream)
        if queued is None:
            if stream not in self._batched or len(self._pending) < BATCH_FROM:
                return _sequence(await self._send(subject, payload, headers, timeout))
            # Sent at the end of this turn, with the writes to the stream that follow it in the turn.
            queued = self._queued[stream] = []
            sender = asyncio.ensure_future(self._send_queued(stream))
            self._senders.add(sender)
            sender.add_done_callback(self._senders.discard)
        write = _Write(subject, payload, headers, timeout, asyncio.get_running_loop().create_future())
        queued.append(write)
        return await write.sequence

    async def _send(self, subject: str, payload: bytes, headers: dict[str, str] | None, timeout: float) -> Msg:
        """Publish with a reply subject; the acknowledgement."""
        return await (await self._request(subject, payload, headers, timeout))

    async def _request(self, subject: str, payload: bytes, headers: dict[str, str] | None,
                       timeout: float) -> asyncio.Future[Msg]:
        """Publish with a reply subject; the future of its acknowledgement
        (what is published in order is sent in order)."""
        if self._subscription is None:
            await self._start()
        token = str(next(self._counter))
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Msg] = loop.create_future()
        self._pending[token] = (future, loop.time() + timeout)
        future.add_done_callback(lambda _: self._settled(token))
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = loop.create_task(self._sweep())
        try:
            await self._nc.publish(subject, payload, reply=self._prefix + token, headers=headers)
        except BaseException:
            future.cancel()
            raise
        return future

    def _settled(self, token: str) -> None:
        self._pending.pop(token, None)
        if not self._pending and self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None

    async def _send_queued(self, stream: str) -> None:
        """The end of the turn (a task's first step runs after what was ready
        when it was made): the writes queued for `stream` go out, in order."""
        writes = [w for w in self._queued.pop(stream, []) if not w.sequence.done()]  # done: its caller gave up
        if writes:
            await self._send_batches(stream, writes)

    async def _send_batches(self, stream: str, writes: list[_Write]) -> None:
        chunks = [writes[i:i + MAX_BATCH] for i in range(0, len(writes), MAX_BATCH)]
        acks: list[tuple[list[_Write], asyncio.Future[Msg] | BaseException]] = []
        for chunk in chunks:
            try:
                acks.append((chunk, await self._send_batch(chunk)))
            except Exception as err:  # noqa: BLE001 - the connection is closed or draining: each write says so
                acks.append((chunk, err))
        alone: list[_Write] = []
        for chunk, ack in acks:
            try:
                if isinstance(ack, BaseException):
                    raise ack
                last = _sequence(await ack)
            except nats.js.errors.APIError as err:
                if len(chunk) == 1:
                    _fail(chunk, err)
                else:
                    if err.err_code == _ATOMIC_DISABLED:
                        self._batched.discard(stream)
                    alone.extend(chunk)  # nothing of the batch was stored
                continue
            except Exception as err:  # noqa: BLE001 - a time-out or a lost connection: the caller decides
                _fail(chunk, err)
                continue
            for offset, write in enumerate(reversed(chunk)):
                if not write.sequence.done():
                    write.sequence.set_result(last - offset)
        if alone:
            await self._send_alone(alone)

    async def _send_batch(self, chunk: list[_Write]) -> asyncio.Future[Msg]:
        """Publish a batch (a single write as it is); the future of its acknowledgement."""
        if len(chunk) == 1:
            write = chunk[0]
            return await self._request(write.subject, write.payload, write.headers, write.timeout)
        batch = next(self._batch_ids)
        for number, write in enumerate(chunk[:-1], start=1):
            await self._nc.publish(write.subject, write.payload,
                                   headers={**(write.headers or {}), _BATCH_ID: batch, _BATCH_SEQUENCE: str(number)})
        last = chunk[-1]
        headers = {**(last.headers or {}), _BATCH_ID: batch, _BATCH_SEQUENCE: str(len(chunk)), _BATCH_COMMIT: "1"}
        return await self._request(last.subject, last.payload, headers, max(w.timeout for w in chunk))

    async def _send_alone(self, writes: list[_Write]) -> None:
        """Each write on its own (sent in order), with its own answer."""
        acks: list[asyncio.Future[Msg] | BaseException] = []
        for write in writes:
            try:
                acks.append(await self._request(write.subject, write.payload, write.headers, write.timeout))
            except Exception as err:  # noqa: BLE001 - reported to its caller
                acks.append(err)
        for write, ack in zip(writes, acks):
            try:
                if isinstance(ack, BaseException):
                    raise ack
                sequence = _sequence(await ack)
            except Exception as err:  # noqa: BLE001 - reported to its caller
                _fail([write], err)
            else:
                if not write.sequence.done():
                    write.sequence.set_result(sequence)


def _fail(writes: list[_Write], err: BaseException) -> None:
    for write in writes:
        if not write.sequence.done():
            write.sequence.set_exception(err)


def _sequence(reply: Msg) -> int:
    """The stream sequence an acknowledgement gives, or the error it reports, raised."""
    data = reply.data
    found = _SEQ.search(data)
    if found is not None and b'"error"' not in data:
        return int(found.group(1))
    if not data and reply.headers and reply.headers.get("Status") == _NO_RESPONDERS:
        raise nats.js.errors.NoStreamResponseError
    response = json.loads(data)
    if "error" in response:
        nats.js.errors.APIError.from_error(response["error"])  # raises the matching error
    raise nats.js.errors.APIError(description=f"unexpected acknowledgement {data[:200]!r}")


def publisher_for(js: JetStreamContext) -> Publisher:
    """The publisher of a JetStream context's connection (one per connection,
    kept on the connection so that it lives and goes with it)."""
    nc = connection_of(js)
    publisher = getattr(nc, "_orch_publisher", None)
    if publisher is None:
        publisher = Publisher(nc)
        nc._orch_publisher = publisher  # type: ignore[attr-defined]
    return publisher
