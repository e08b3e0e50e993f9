"""Generic versioned access to one NATS KV bucket: compare-and-set and
fenced writes, bulk reads over key filters, and the wait of a write through
NATS trouble (``persist``). Making buckets and streams is in ``streams``.

Knows nothing of the information model; ``repository`` builds on it.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext, api
from nats.js.kv import KV_DEL, KV_OP, KV_PURGE, KeyValue

from orchestration.store.subjects import kv_stream
from orchestration_sdk.runtime.backoff import Backoff, Jitter
from orchestration_sdk.status_errors import Aborted, Fenced, ResourceExhausted, Unavailable
from orchestration.store.wire import (
    EXPECTED_LAST_SEQUENCE_SUBJECT,
    STREAM_FULL,
    WRONG_LAST_SEQUENCE,
    connection_of,
    is_marker,
    last_message,
    publisher_for,
    read_stream,
    stream_sequence,
)

T = TypeVar("T")

# Waits between tries of a write while NATS is away (restarting, electing a leader).
STORE_BACKOFF = Backoff(first=0.05, maximum=2.0)
# Waits before a fenced write refused while its fence still holds is sent again.
FENCE_CONTENTION_BACKOFF = Backoff(first=0.002, maximum=0.1, jitter=Jitter.FULL)


@dataclass(frozen=True)
class Fence:
    """A fencing token: the key of a solution's fence in a bucket, and its
    sequence as the current owner wrote it when it took the solution."""

    key: str
    sequence: int


@dataclass(frozen=True)
class Versioned(Generic[T]):
    """A stored value with the revision to pass to the next compare-and-set write."""

    value: T
    revision: int


@dataclass(frozen=True)
class Entry:
    """One live key of a bucket, as read by a bulk read."""

    key: str
    value: bytes
    revision: int


@dataclass(frozen=True)
class Position:
    """How far a reader of a bucket's writes got: a sequence of its stream,
    and when that stream was made (one made anew numbers from 1 again)."""

    sequence: int = 0
    made: str = ""


@dataclass(frozen=True)
class Written:
    """What a bucket's keys went through since a position (see Bucket.written_since)."""

    keys: set[str] | None  # None: too many to list, anything may have changed
    position: Position


class Bucket:
    """One KV bucket: reads, compare-and-set writes, bulk reads and purges."""

    def __init__(self, js: JetStreamContext, kv: KeyValue, name: str, replicas: int = 1, cap: str = "") -> None:
        self._js = js
        self._cap = cap  # the setting of its size cap, for the error of a write beyond it
        self._kv = kv
        # On a replicated bucket the count a new consumer reports may come from
        # a replica that lags: bulk reads then read until NATS says "no more".
        self._replicated = replicas > 1
        self._publisher = publisher_for(js)
        self.name = name
        # The KV layout is fixed by the NATS KV specification (ADR-8).
        self.stream = kv_stream(name)
        self._prefix = f"$KV.{name}."
        self._fence: Fence | None = None

    def fenced(self, fence: Fence) -> Bucket:
        """The same bucket for a writer holding `fence`: every write and delete
        is conditional on the fence key being as that writer left it (the
        server checks it, atomically with the write), instead of on the
        written key's own revision. Once another owner raised the fence, each
        of them fails with Fenced: a deposed owner's write never lands."""
        view = copy.copy(self)
        view._fence = fence
        return view

    async def get(self, key: str) -> Entry | None:
        """The live value of key, or None when it is missing or deleted.

        One JetStream API request over the connection's shared reply
        subscription (see Publisher.request), its answer read without what
        nats-py's KeyValue.get adds per read (a reply inbox and timer task
        each, the stored headers parsed with the email package): a tree of
        10,000 tasks read key by key took 1.4 s of the gateway's CPU."""
        found = await last_message(self._js, self.stream, self._prefix + key)
        if found is None or is_marker(found.headers):
            return None
        return Entry(key, found.data, found.sequence)

    async def write(self, key: str, value: bytes, revision: int | None, what: str) -> int:
        """Create (revision None) or update (revision given) with compare-and-set; the new revision.

        Raises Aborted when key exists on create, or its revision differs on
        update; on a fenced bucket, Fenced when the fence moved (see fenced).
        """
        if self._fence is not None:
            return await self._publish_fenced(key, value, {}, what)
        try:
            return await self._publish(key, value, revision or 0)
        except nats.js.errors.APIError as err:
            if err.err_code not in WRONG_LAST_SEQUENCE:
                raise
            if revision is None:
                # Creating a deleted key: its delete marker is the revision to expect.
                marker = await self._delete_marker(key)
                if marker is not None:
                    try:
                        return await self._publish(key, value, marker)
                    except nats.js.errors.APIError as again:
                        if again.err_code not in WRONG_LAST_SEQUENCE:
                            raise
            raise _cas_failure(what, revision) from err

    async def _publish(self, key: str, value: bytes, last: int) -> int:
        try:
            return await self._publisher.publish(self._prefix + key, value, {api.Header.EXPECTED_LAST_SUBJECT_SEQUENCE: str(last)})
        except nats.js.errors.APIError as err:
            if err.err_code == STREAM_FULL:
                raise self._full(key) from err
            raise

    def _full(self, key: str) -> ResourceExhausted:
        """A write refused beyond the bucket's size cap: not transient (waiting
        does not free space), and nothing was written."""
        setting = f" ({self._cap})" if self._cap else ""
        return ResourceExhausted(f"{key!r} not written: the store's {self.name!r} bucket is at its size cap{setting}; "
                                 "remove what is no longer needed (solutions, task history) or raise the cap")

    async def _publish_fenced(self, key: str, value: bytes, headers: dict[str, str], what: str) -> int:
        fence = self._fence
        assert fence is not None
        headers = {**headers, api.Header.EXPECTED_LAST_SUBJECT_SEQUENCE: str(fence.sequence),
                   EXPECTED_LAST_SEQUENCE_SUBJECT: self._prefix + fence.key}
        refusals = 0
        while True:
            try:
                return await self._publisher.publish(self._prefix + key, value, headers)
            except nats.js.errors.APIError as err:
                if err.err_code == STREAM_FULL:
                    raise self._full(key) from err
                if err.err_code not in WRONG_LAST_SEQUENCE:
                    raise
                current = await self.get(fence.key)
                if current is None or current.revision != fence.sequence:
                    raise Fenced(f"{what} not written: the solution's lease moved on to another owner "
                                 f"(fence {fence.sequence} is stale)") from err
            # The fence holds: a clustered stream refuses a write that expects a
            # subject's sequence while another such write is in flight. Again, later.
            refusals += 1
            await asyncio.sleep(FENCE_CONTENTION_BACKOFF.delay(refusals))

    async def fencing_works(self, probe: str) -> bool:
        """Whether the server honours a write conditional on another key's
        sequence (Nats-Expected-Last-Subject-Sequence-Subject): a right
        fence lets a write through and a stale one stops it. Tried on two
        keys under `probe`, removed afterwards."""
        fence = Fence(probe, await self.put(probe, b"probe"))
        try:
            try:
                await self.fenced(fence).write(probe + ".w", b"1", None, "fencing probe")
            except Fenced:
                return False
            try:
                await self.fenced(Fence(probe, fence.sequence - 1)).write(probe + ".w", b"2", None, "fencing probe")
            except Fenced:
                return True
            return False
        finally:
            await self.purge(probe, probe + ".w")

    async def _delete_marker(self, key: str) -> int | None:
        """The revision of key's delete marker, or None when the key is live."""
        try:
            await self._kv.get(key)
        except nats.js.errors.KeyNotFoundError as err:
            # nats-py reports a deleted key as not found, with the marker as its entry.
            entry = getattr(err, "entry", None)
            return entry.revision if entry is not None else None
        return None

    async def on_change(self, callback: Callable[[str, bool], Awaitable[None]]) -> Subscription:
        """Call back with the key of every write or delete from now on, and
        whether it was a delete (or purge). Core NATS, not a consumer: nothing
        is replayed, and a change made while disconnected is missed (callers
        also read the bucket now and then)."""
        nc = connection_of(self._js)

        async def changed(msg: Msg) -> None:
            await callback(msg.subject[len(self._prefix):], (msg.headers or {}).get(KV_OP) in (KV_DEL, KV_PURGE))

        return await nc.subscribe(self._prefix + ">", cb=changed)

    async def usage(self) -> tuple[int, int]:
        """Bytes of messages the bucket holds, and its size cap (0: none)."""
        info = await self._js.stream_info(self.stream)
        return info.state.bytes or 0, max(0, info.config.max_bytes or 0)

    async def limit_age(self, seconds: float, max_bytes: int | None = None) -> None:
        """Let keys age out `seconds` after their last write (and the oldest go beyond `max_bytes`)."""
        await apply_limits(self._js, self.stream, seconds, max_bytes)

    async def put(self, key: str, value: bytes) -> int:
        """Write whatever is stored (for upserts where last-writer-wins is the
        intent); on a fenced bucket, only while the fence holds (else Fenced)."""
        if self._fence is not None:
            return await self._publish_fenced(key, value, {}, f"key {key!r}")
        try:
            return await self._kv.put(key, value)
        except nats.js.errors.APIError as err:
            if err.err_code == STREAM_FULL:
                raise self._full(key) from err
            raise

    async def delete(self, key: str, revision: int | None, what: str) -> None:
        """Delete key; with a revision, only if it is still the stored one (else
        Aborted); on a fenced bucket, only while the fence holds (else Fenced)."""
        if self._fence is not None:
            await self._publish_fenced(key, b"", {KV_OP: KV_DEL}, what)
            return
        try:
            # nats-py treats last=0 as "no condition"; a revision is never 0.
            await self._kv.delete(key, last=revision)
        except nats.js.errors.APIError as err:
            if err.err_code in WRONG_LAST_SEQUENCE:
                raise _cas_failure(what, revision) from err
            if err.err_code == STREAM_FULL:
                raise self._full(key) from err
            raise

    async def scan(self, *filters: str) -> list[Entry]:
        """Every live key matching any of the filters (subject wildcards allowed).

        One ephemeral pull consumer delivers the latest message per key in a few
        round trips, whatever the number of keys: reading keys one by one would
        cost a round trip each. Unlike ``KeyValue.watch``, the consumer's
        creation reply says exactly how many messages to expect, so an empty
        result returns at once and there is no race with an end-of-data marker.
        """
        if not filters:
            return []
        skip = len(self._prefix)

        def entry(msg: Msg) -> Entry | None:
            return None if is_marker(msg.headers or {}) else Entry(msg.subject[skip:], msg.data, stream_sequence(msg))

        return await self._consume(api.DeliverPolicy.LAST_PER_SUBJECT, [self._prefix + f for f in filters], entry)

    async def written_since(self, after: Position, at_most: int) -> Written:
        """The keys written or deleted since `after`, and the position they
        reach (where the next call starts).

        Costs one request when nothing was written. When more than `at_most`
        writes happened, or the bucket was made anew, their keys are not
        read: `keys` is None, and anything may have changed. A key removed by
        a purge is not among them (a purge leaves no message behind)."""
        info = await self._js.stream_info(self.stream)
        last, made = info.state.last_seq or 0, str(info.created)
        if (after.made and after.made != made) or last < after.sequence or last - after.sequence > at_most:
            return Written(None, Position(last, made))
        if last == after.sequence:
            return Written(set(), Position(last, made))
        skip = len(self._prefix)
        written = await self._consume(api.DeliverPolicy.BY_START_SEQUENCE, [self._prefix + ">"],
                                      lambda m: (m.subject[skip:], stream_sequence(m)),
                                      opt_start_seq=after.sequence + 1, headers_only=True)
        delivered = [sequence for _, sequence in written]
        # Unreplicated, the consumer delivered every message up to `last` that
        # is still there; replicated, one may lag behind: only what arrived counts.
        reached = max([after.sequence, *delivered]) if self._replicated else max([last, *delivered])
        return Written({key for key, _ in written}, Position(reached, made))

    async def _consume(self, deliver: api.DeliverPolicy, subjects: list[str], keep: Callable[[Msg], T | None],
                       **options: object) -> list[T]:
        return await read_stream(self._js, self.stream, subjects, deliver, self._replicated, f"bucket {self.name!r}", keep,
                                 **options)

    async def purge(self, *filters: str, before: int | None = None) -> None:
        """Remove every key matching the filters at once (no delete markers are
        left); with `before`, only what was written before that revision.

        A purge is a physical delete, which nats-server may undo when it
        rebuilds its index after an unclean stop (nats-server issue 8505):
        nothing may depend on it lasting. Records whose return would be acted
        on are first ruled dead by a durable write (see keys.grave_key)."""
        for f in filters:
            await self._js.purge_stream(self.stream, subject=self._prefix + f, seq=before)

    async def purge_all(self) -> None:
        """Remove every key of the bucket."""
        await self._js.purge_stream(self.stream)


def _cas_failure(what: str, revision: int | None) -> Aborted:
    if revision is None:
        return Aborted(f"{what} already exists")
    return Aborted(f"{what} was changed concurrently (expected revision {revision}); re-read and retry")


async def apply_cap(js: JetStreamContext, stream: str, max_bytes: int, refuse_new: bool = False) -> None:
    """Give an existing stream (or KV bucket's stream) this size cap, if it has
    another; with `refuse_new`, a full stream refuses new messages instead of
    dropping its oldest (as one made by an earlier version may)."""
    info = await js.stream_info(stream)
    discard = api.DiscardPolicy.NEW if refuse_new else info.config.discard
    if info.config.max_bytes != max_bytes or info.config.discard != discard:
        info.config.max_bytes = max_bytes
        info.config.discard = discard
        await js.update_stream(info.config)


async def apply_limits(js: JetStreamContext, stream: str, max_age: float, max_bytes: int | None = None) -> None:
    """Give an existing stream (or KV bucket's stream) these limits, if it has others."""
    info = await js.stream_info(stream)
    config = info.config
    if config.max_age == max_age and (max_bytes is None or config.max_bytes == max_bytes):
        return
    config.max_age = max_age
    if config.duplicate_window and config.duplicate_window > max_age:
        config.duplicate_window = max_age  # NATS wants it no longer than the age limit
    if max_bytes is not None:
        config.max_bytes = max_bytes
    await js.update_stream(config)


def is_transient(exc: BaseException) -> bool:
    """True for trouble that goes away by itself: NATS unreachable, slow, restarting."""
    if isinstance(exc, (nats.js.errors.ServiceUnavailableError, asyncio.TimeoutError, Unavailable)):
        return True
    return isinstance(exc, nats.errors.Error) and not isinstance(exc, nats.js.errors.APIError)


async def persist(call: Callable[[], Awaitable[T]], give_up: Callable[[], bool] = lambda: False,
                  backoff: Backoff = STORE_BACKOFF) -> T:
    """Run a write until it succeeds, waiting out transient NATS trouble.

    Durable state must not be skipped because NATS restarted; `give_up` ends
    the wait (re-raising the error) when the caller no longer owns the work.
    """
    failures = 0
    while True:
        try:
            return await call()
        except Exception as exc:
            if not is_transient(exc) or give_up():
                raise
        failures += 1
        await asyncio.sleep(backoff.delay(failures))
