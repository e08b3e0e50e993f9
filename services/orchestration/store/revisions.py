"""Revisions of solutions in the solutions bucket (keys.revision_key): one
record per accepted change, numbered per solution, the newest
`Retention.revisions_kept` kept.

Only the dispatcher that owns a solution writes its revisions, through its
fenced view of the bucket (a deposed owner's write never lands); a
request's revision is recorded once (recording it again, as a resumed run
does, finds it). A revision outlives its solution's removal and goes with
its domain; one written before the domain's grave is dead, whatever the
server brings back after an unclean stop."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Awaitable, Callable

from orchestration.model.lifecycle import outcome_name, policy_name
from orchestration.model.revisions import ENDED
from orchestration.store import keys as rk
from orchestration.store.kvstore import Bucket, Entry, Versioned
from orchestration.v1 import model_pb2 as pb
from orchestration_sdk.runtime.concurrency import gather_bounded
from orchestration_sdk.status_errors import Aborted, NotFound


Announce = Callable[[pb.Revision], Awaitable[None]]


def bus_payload(revision: pb.Revision) -> bytes:
    """The JSON message of a revision on the bus (without its desired state:
    `history` and `diff` requests read that)."""
    return json.dumps({
        "revision": revision.number, "domain": revision.domain, "solution": revision.solution,
        "change": revision.change, "summary": revision.summary, "actor": revision.actor, "reason": revision.reason,
        "time": revision.created_unix_ms, "request": revision.request, "request_id": revision.client_request_id,
        "task": revision.task, "outcome": outcome_name(revision.outcome), "ended": revision.ended_unix_ms,
        "error": revision.error, "bad": revision.bad, "restores": revision.restores,
        "on_failure": policy_name(revision.desired.on_failure),
    }).encode()


class RevisionStore:
    """Reads and writes of solutions' revisions; each write is announced
    (on the bus: Repository passes the publisher)."""

    def __init__(self, bucket: Bucket, kept: int = 50, announce: Announce | None = None) -> None:
        self._bucket = bucket
        self._kept = kept
        self._announce = announce

    async def all(self, domain: str, solution: str) -> list[Versioned[pb.Revision]]:
        """The solution's revisions, newest first."""
        entries = await self._living(domain, await self._bucket.scan(rk.revision_filter(domain, solution)))
        found = [Versioned(pb.Revision.FromString(e.value), e.revision) for e in entries]
        return sorted(found, key=lambda v: v.value.number, reverse=True)

    async def get(self, domain: str, solution: str, number: int) -> Versioned[pb.Revision]:
        """One revision (NotFound names the ones there are)."""
        entry = await self._bucket.get(rk.revision_key(domain, solution, number))
        if entry is not None and await self._living(domain, [entry]):
            return Versioned(pb.Revision.FromString(entry.value), entry.revision)
        numbers = [v.value.number for v in await self.all(domain, solution)]
        there = f"revisions {numbers[-1]} to {numbers[0]}" if numbers else "no revisions"
        raise NotFound(f"revision {number} of solution '{domain}/{solution}' not found; it has {there} "
                       f"(`orch solution history {domain} {solution}`)")

    async def record(self, revision: pb.Revision) -> pb.Revision:
        """Store a new revision of the request it names, numbered after the
        newest, and let the oldest beyond the count go; the one stored when
        this request's revision was recorded before. Returns what is stored."""
        listed = await self.all(revision.domain, revision.solution)
        for stored in listed:
            if stored.value.request == revision.request:
                return stored.value
        record = pb.Revision()
        record.CopyFrom(revision)
        record.number = listed[0].value.number + 1 if listed else 1
        if not record.created_unix_ms:
            record.created_unix_ms = int(time.time() * 1000)
        if not record.outcome:
            record.outcome = pb.REVISION_OUTCOME_RUNNING
        key = rk.revision_key(record.domain, record.solution, record.number)
        what = f"revision {record.number} of '{record.solution}'"
        # Deterministic: the same revision planned again (a resumed run's) is the same bytes, whatever
        # order its parameter maps were filled in.
        value = record.SerializeToString(deterministic=True)
        try:
            await self._bucket.write(key, value, None, what)
        except Aborted:
            # Over a dead one (written before the domain's grave, brought back by the server).
            entry = await self._bucket.get(key)
            if entry is None or await self._living(record.domain, [entry]):
                raise
            await self._bucket.write(key, value, entry.revision, what)
        old = [v.value.number for v in listed[self._kept - 1:]]
        await gather_bounded(self._bucket.delete(rk.revision_key(record.domain, record.solution, n), None, "revision")
                             for n in old)
        await self._announced(record)
        return record

    async def end(self, domain: str, solution: str, number: int, outcome: pb.RevisionOutcome, error: str = "",
                  bad: bool = False, replace: frozenset[int] = frozenset()) -> pb.Revision | None:
        """Write how the revision's change ended; the outcome changes once
        (from running), or from one of `replace` (a failed change later rolled
        back). None when it ended otherwise already or is gone."""
        try:
            stored = await self.get(domain, solution, number)
        except NotFound:
            return None
        record = stored.value
        if record.outcome in ENDED and record.outcome not in replace:
            return None
        record.outcome = outcome
        record.ended_unix_ms = record.ended_unix_ms or int(time.time() * 1000)
        record.error = record.error or error  # the first word on what went wrong stands
        record.bad = record.bad or bad
        await self._bucket.write(rk.revision_key(domain, solution, number), record.SerializeToString(),
                                 stored.revision, f"revision {number} of '{solution}'")
        await self._announced(record)
        return record

    async def approved(self, domain: str, solution: str, number: int) -> None:
        """A revision that awaited approval runs now."""
        stored = await self.get(domain, solution, number)
        if stored.value.outcome != pb.REVISION_OUTCOME_AWAITING_APPROVAL:
            return
        record = stored.value
        record.outcome = pb.REVISION_OUTCOME_RUNNING
        await self._bucket.write(rk.revision_key(domain, solution, number), record.SerializeToString(),
                                 stored.revision, f"revision {number} of '{solution}'")
        await self._announced(record)

    async def _announced(self, revision: pb.Revision) -> None:
        """Tell the bus (at most once: a message lost is read again with `history`)."""
        if self._announce is not None:
            with contextlib.suppress(Exception):
                await self._announce(revision)

    async def _living(self, domain: str, entries: list[Entry]) -> list[Entry]:
        """The entries written after the domain's grave (if it has one)."""
        if not entries:
            return entries
        grave = await self._bucket.get(rk.grave_key(domain))
        return entries if grave is None else [e for e in entries if e.revision > grave.revision]
