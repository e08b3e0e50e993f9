"""The wire: connections to NATS, and every place this project touches
nats-py's private parts or JetStream's wire formats, so that a nats-py or
nats-server upgrade changes this one module (tests/test_wire.py holds each
touch to a real server).

- connecting a service (reconnect forever, say what happens) and keeping
  passwords out of logs;

- JetStream's error codes the store acts on;
- nats-py internals: a JetStream context's connection, API prefix and
  request time-out;
- acknowledged publishes and API requests over one shared reply
  subscription per connection (``Publisher``: nats-py's publish is a request
  per message, most of the dispatcher's time at thousands a second), the
  acknowledgement read without parsing JSON unless it is an error;
- a stream's last message on a subject by a direct API request (what
  KeyValue.get does, without its per-read inbox, timer and email-package
  header parsing), and the headers of a stored message;
- bulk reads by an ephemeral pull consumer with raw ``MSG.NEXT`` requests,
  and a delivered message's stream sequence from its reply subject.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import logging
import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext, api
from nats.js.kv import KV_DEL, KV_MARKER_REASON, KV_OP, KV_PURGE

from orchestration.store.natsusers import inbox_prefix
from orchestration_sdk.status_errors import Unavailable

log = logging.getLogger(__name__)

# ---- JetStream's error codes ------------------------------------------------------------

# "wrong last sequence": the compare-and-set of a write failed (per subject, or per stream).
WRONG_LAST_SEQUENCE = (10071, 10164)
# "no message found": a key never written, or purged.
NO_MESSAGE = 10037
# "maximum bytes exceeded": a stream that discards new messages (a KV
# bucket, the requests stream) is at its size cap.
STREAM_FULL = 10077
# "stream name already in use with a different configuration".
STREAM_NAME_IN_USE = 10058
# "insufficient resources" / no peers: a cluster cannot place the replicas asked for.
NO_PEERS = 10005
# Makes a write conditional on the last sequence of another subject of the same stream.
EXPECTED_LAST_SEQUENCE_SUBJECT = "Nats-Expected-Last-Subject-Sequence-Subject"

# A bulk read pulls at most this many messages per request, so that a huge
# result never piles up in the client's pending buffer at once.
_SCAN_CHUNK = 5000
# Seconds a bulk read may go without receiving its requested chunk.
_SCAN_TIMEOUT = 30.0


# ---- connections --------------------------------------------------------------------------


async def connect(url: str, name: str, on_state: Callable[[bool], Awaitable[None]] | None = None) -> Client:
    """A NATS connection that keeps reconnecting when the server goes away;
    `on_state(False)` runs on every loss and `on_state(True)` on every return
    (services report NOT_SERVING in between)."""

    async def on_error(exc: Exception) -> None:
        log.warning("nats: %s", exc)

    async def on_disconnect() -> None:
        log.warning("nats: disconnected")
        if on_state is not None:
            await on_state(False)

    async def on_reconnect() -> None:
        log.info("nats: reconnected")
        if on_state is not None:
            await on_state(True)

    servers = [u.strip() for u in url.split(",") if u.strip()]
    return await nats.connect(
        # A comma-separated list names several servers of one cluster.
        servers=servers,
        name=name,
        # Replies to this service arrive where only its user may subscribe.
        inbox_prefix=inbox_prefix(user_of(servers[0]) if servers else ""),
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.5,
        connect_timeout=5,
        error_cb=on_error,
        disconnected_cb=on_disconnect,
        reconnected_cb=on_reconnect,
    )


def user_of(url: str) -> str:
    """The user name in a nats:// URL ("" when it has none)."""
    rest = url.split("://", 1)[-1]
    return rest.rsplit("@", 1)[0].split(":", 1)[0] if "@" in rest else ""


def redact(url: str) -> str:
    """The URL(s) without passwords, for logs."""
    if "," in url:
        return ",".join(redact(u.strip()) for u in url.split(","))
    if "@" not in url:
        return url
    scheme, rest = url.split("://", 1) if "://" in url else ("nats", url)
    creds, host = rest.rsplit("@", 1)
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}"


# ---- nats-py internals --------------------------------------------------------------------


def connection_of(js: JetStreamContext) -> Client:
    """The connection a JetStream context runs on (nats-py keeps it private)."""
    nc: Client = js._nc  # noqa: SLF001
    return nc


def api_prefix(js: JetStreamContext) -> str:
    """The JetStream API prefix of a context ("$JS.API", another under a
    JetStream domain); nats-py keeps it private."""
    prefix: str = js._prefix  # noqa: SLF001
    return prefix


def api_timeout(js: JetStreamContext) -> float:
    """The context's time-out for API requests (nats-py keeps it private)."""
    timeout: float = js._timeout  # noqa: SLF001
    return timeout


# ---- acknowledged publishes and API requests ------------------------------------------------


# How long a publish waits for its acknowledgement (nats-py's default).
ACK_TIMEOUT = 5.0
_NO_RESPONDERS = "503"
# The stream sequence in an acknowledgement ({"stream":"S","seq":12}).
_SEQ = re.compile(rb'"seq":\s*(\d+)')
# Granularity of acknowledgement time-outs (seconds).
_SWEEP_SECONDS = 0.25


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
                      timeout: float = ACK_TIMEOUT) -> int:
        """Publish and wait for the stream to store it; the stream sequence.

        Raises nats.errors.TimeoutError without an acknowledgement in time,
        nats.js.errors.NoStreamResponseError when no stream takes the subject,
        and the nats.js.errors.APIError subclass of a refusal (for example
        KeyWrongLastSequenceError when an expected sequence header failed)."""
        try:
            reply = await self.request(subject, payload, headers, timeout)
        except nats.errors.NoRespondersError:
            raise nats.js.errors.NoStreamResponseError from None
        data = reply.data
        found = _SEQ.search(data)
        if found is not None and b'"error"' not in data:
            return int(found.group(1))
        response = json.loads(data)
        if "error" in response:
            nats.js.errors.APIError.from_error(response["error"])  # raises
        raise nats.js.errors.APIError(description=f"unexpected acknowledgement {data[:200]!r}")

    async def request(self, subject: str, payload: bytes, headers: dict[str, str] | None = None,
                      timeout: float = ACK_TIMEOUT) -> Msg:
        """Send a message and wait for its one reply (nats.errors.TimeoutError
        without one in time, nats.errors.NoRespondersError when nobody listens)."""
        if self._subscription is None:
            await self._start()
        token = str(next(self._counter))
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Msg] = loop.create_future()
        self._pending[token] = (future, loop.time() + timeout)
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = loop.create_task(self._sweep())
        try:
            await self._nc.publish(subject, payload, reply=self._prefix + token, headers=headers)
            reply = await future
        finally:
            self._pending.pop(token, None)
            if not self._pending and self._sweeper is not None:
                self._sweeper.cancel()
                self._sweeper = None
        if not reply.data and reply.headers and reply.headers.get("Status") == _NO_RESPONDERS:
            raise nats.errors.NoRespondersError
        return reply


def publisher_for(js: JetStreamContext) -> Publisher:
    """The publisher of a JetStream context's connection (one per connection,
    kept on the connection so that it lives and goes with it)."""
    nc = connection_of(js)
    publisher = getattr(nc, "_orch_publisher", None)
    if publisher is None:
        publisher = Publisher(nc)
        nc._orch_publisher = publisher  # type: ignore[attr-defined]
    return publisher


# ---- reading stored messages --------------------------------------------------------------


@dataclass(frozen=True)
class Stored:
    """A stored message as a direct read returns it."""

    data: bytes
    sequence: int
    headers: dict[str, str]


async def last_message(js: JetStreamContext, stream: str, subject: str) -> Stored | None:
    """The stream's last message on `subject` (None when there is none), by
    one API request over the connection's shared reply subscription."""
    reply = await publisher_for(js).request(f"{api_prefix(js)}.STREAM.MSG.GET.{stream}",
                                            json.dumps({"last_by_subj": subject}).encode(), timeout=api_timeout(js))
    response = json.loads(reply.data)
    error = response.get("error")
    if error is not None:
        if error.get("err_code") == NO_MESSAGE:
            return None
        nats.js.errors.APIError.from_error(error)  # raises
    message = response["message"]
    raw = message.get("hdrs")
    headers = stored_headers(base64.b64decode(raw)) if raw else {}
    return Stored(base64.b64decode(message.get("data") or ""), int(message["seq"]), headers)


def is_marker(headers: dict[str, str]) -> bool:
    """Whether a message with these headers is a delete or purge marker (a
    deleted KV key's latest message)."""
    return headers.get(KV_OP) in (KV_DEL, KV_PURGE) or KV_MARKER_REASON in headers


def stored_headers(raw: bytes) -> dict[str, str]:
    """The headers of a stored message ("NATS/1.0" line, then "Name: value" lines)."""
    headers = {}
    for line in raw.decode("utf-8", "replace").split("\r\n")[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip()] = value.strip()
    return headers


T = TypeVar("T")


async def read_stream(js: JetStreamContext, stream: str, subjects: list[str], deliver: api.DeliverPolicy, replicated: bool,
                  what: str, keep: Callable[[Msg], T | None], **options: object) -> list[T]:
    """What `keep` makes of each message an ephemeral pull consumer of
    `stream` delivers on `subjects` (None: nothing), as many as its creation
    reply counts (see Bucket.scan); on a replicated stream, until NATS says
    there are no more. Each message is kept as `keep` makes it on arrival,
    not as a message (its headers, subjects and reply): a read of 50,000
    records holds 50,000 small values at its peak, not 50,000 messages."""
    name = uuid.uuid4().hex
    config = api.ConsumerConfig(
        name=name,
        ack_policy=api.AckPolicy.NONE,
        deliver_policy=deliver,
        mem_storage=True,
        # Removes the consumer should this process die before deleting it.
        inactive_threshold=_SCAN_TIMEOUT,
        **options,  # type: ignore[arg-type]
    )
    if len(subjects) == 1:
        config.filter_subject = subjects[0]
    else:
        config.filter_subjects = subjects
    info = await js.add_consumer(stream, config=config)
    try:
        return await _pull(js, stream, name, info.num_pending or 0, replicated, what, keep)
    finally:
        try:
            await js.delete_consumer(stream, name)
        except nats.js.errors.NotFoundError:
            pass


async def _pull(js: JetStreamContext, stream: str, consumer: str, expected: int, replicated: bool, what: str,
                keep: Callable[[Msg], T | None]) -> list[T]:
    """Pull the consumer's messages: `expected` of them (fewer if keys
    vanished meanwhile), or on a replicated stream, all it has."""
    kept: list[T] = []
    received = 0
    if expected == 0 and not replicated:
        return kept
    nc = connection_of(js)
    next_subject = f"{api_prefix(js)}.CONSUMER.MSG.NEXT.{stream}.{consumer}"
    loop = asyncio.get_running_loop()
    chunk_done: asyncio.Future[bool] = loop.create_future()
    chunk_end = 0

    async def on_message(msg: Msg) -> None:
        nonlocal received
        if msg.headers and msg.headers.get(api.Header.STATUS):
            # 404 no messages / 408 expired: nothing more for this request.
            if not chunk_done.done():
                chunk_done.set_result(False)
            return
        received += 1
        item = keep(msg)
        if item is not None:
            kept.append(item)
        if received >= chunk_end and not chunk_done.done():
            chunk_done.set_result(True)

    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox, cb=on_message, pending_msgs_limit=4 * _SCAN_CHUNK)
    deadline = loop.time() + _SCAN_TIMEOUT
    try:
        while received < expected or replicated:
            batch = min(_SCAN_CHUNK, expected - received) if received < expected else _SCAN_CHUNK
            chunk_end = received + batch
            chunk_done = loop.create_future()
            request = json.dumps({"batch": batch, "no_wait": True}).encode()
            await nc.publish(next_subject, request, reply=inbox)
            try:
                more = await asyncio.wait_for(chunk_done, max(0.0, deadline - loop.time()))
            except asyncio.TimeoutError as err:
                raise Unavailable(f"reading {what} timed out; is NATS overloaded?") from err
            if not more:
                # "No messages": the end, unless the consumer still holds some
                # (on a cluster, one not quite ready answers so too).
                info = await js.consumer_info(stream, consumer)
                if not info.num_pending:
                    break
                if loop.time() > deadline:
                    raise Unavailable(f"reading {what} timed out; is NATS overloaded?")
                await asyncio.sleep(0.01)
    finally:
        await sub.unsubscribe()
    return kept


def stream_sequence(msg: Msg) -> int:
    """The stream sequence of a consumer's message, from its reply subject
    (what msg.metadata parses, without the rest: a scan reads thousands)."""
    tokens = (msg.reply or "").split(".")
    if len(tokens) == 9 and tokens[0] == "$JS" and tokens[1] == "ACK":  # $JS.ACK.<stream>.<consumer>.<delivered>.<sequence>...
        return int(tokens[5])
    return msg.metadata.sequence.stream
