"""What makes a solution's change wait for a person, in the leases bucket:
pauses, and approvers' decisions.

Pauses of solutions (model_pb2.SolutionPause), at
`<domain>.pause.<solution>`: written by the gateway when an operator pauses
or resumes a solution, read by the dispatcher running its change (which
stops starting operations and acknowledges) and by the monitor (which does
not compensate a paused solution). A KV record: it survives every restart,
and goes with its domain.

Decisions (records_pb2.ApprovalDecision), at `<domain>.approval.<solution>`:
the answer to the revision that awaits approval, written by the gateway,
read by the dispatcher holding the change."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Awaitable, Callable

from orchestration_sdk.status_errors import Aborted
from orchestration.model.names import decode_token, encode_token
from orchestration.store.kvstore import Bucket, Versioned
from orchestration.v1 import model_pb2 as pb
from orchestration.v1 import records_pb2 as rpb

# Who pauses a solution besides an operator: a rollout waiting for approval
# between batches (or holding an unhealthy batch), and a change awaiting an
# approver.
ROLLOUT = "rollout"
APPROVAL = "approval"

# A pause, or its end (None), told to the bus.
Announce = Callable[[str, str, pb.SolutionPause | None], Awaitable[None]]


def pause_key(domain: str, solution: str) -> str:
    return f"{encode_token(domain)}.pause.{encode_token(solution)}"


def bus_payload(domain: str, solution: str, pause: pb.SolutionPause | None, time_ns: int) -> bytes:
    """A status message saying that the solution is paused (by whom, since
    when, why) or no longer."""
    fields: dict[str, object] = {"time": time_ns, "kind": "pause", "domain": domain, "solution": solution,
                                 "paused": pause is not None}
    if pause is not None:
        fields.update(actor=pause.actor, reason=pause.reason, since=pause.since_unix_ms,
                      acknowledged=pause.acknowledged_unix_ms, task=pause.task)
    return json.dumps(fields, separators=(",", ":")).encode()


class Pauses:
    """Reads and writes of pauses."""

    def __init__(self, bucket: Bucket, announce: Announce | None = None) -> None:
        self._bucket = bucket
        self._announce = announce

    async def get(self, domain: str, solution: str) -> Versioned[pb.SolutionPause] | None:
        entry = await self._bucket.get(pause_key(domain, solution))
        return None if entry is None else Versioned(pb.SolutionPause.FromString(entry.value), entry.revision)

    async def all(self) -> dict[tuple[str, str], pb.SolutionPause]:
        """Every pause, by (domain, solution)."""
        found = {}
        for entry in await self._bucket.scan("*.pause.*"):
            domain, _, solution = entry.key.split(".")
            found[(decode_token(domain), decode_token(solution))] = pb.SolutionPause.FromString(entry.value)
        return found

    async def pause(self, domain: str, solution: str, actor: str, reason: str) -> pb.SolutionPause:
        """Pause the solution; the pause already there when it was paused."""
        record = pb.SolutionPause(actor=actor, reason=reason, since_unix_ms=int(time.time() * 1000))
        try:
            await self._bucket.write(pause_key(domain, solution), record.SerializeToString(), None, "pause")
        except Aborted:
            current = await self.get(domain, solution)
            if current is not None:
                return current.value
            raise
        await self._announced(domain, solution, record)
        return record

    async def resume(self, domain: str, solution: str) -> pb.SolutionPause | None:
        """End the pause; the pause it ended (None when there was none)."""
        current = await self.get(domain, solution)
        if current is None:
            return None
        with contextlib.suppress(Aborted):  # ended by another resume meanwhile
            await self._bucket.delete(pause_key(domain, solution), current.revision, "pause")
            await self._announced(domain, solution, None)
        return current.value

    async def acknowledge(self, domain: str, solution: str, task: str) -> None:
        """The run of `task` starts no more operations (once per pause and task)."""
        current = await self.get(domain, solution)
        if current is None or current.value.task == task:
            return
        record = pb.SolutionPause()
        record.CopyFrom(current.value)
        record.acknowledged_unix_ms, record.task = int(time.time() * 1000), task
        with contextlib.suppress(Aborted):  # resumed, or paused again, meanwhile
            await self._bucket.write(pause_key(domain, solution), record.SerializeToString(), current.revision, "pause")
            await self._announced(domain, solution, record)

    async def _announced(self, domain: str, solution: str, pause: pb.SolutionPause | None) -> None:
        if self._announce is not None:
            with contextlib.suppress(Exception):
                await self._announce(domain, solution, pause)


def decision_key(domain: str, solution: str) -> str:
    return f"{encode_token(domain)}.approval.{encode_token(solution)}"


class Decisions:
    """Approvers' decisions on revisions that await approval (one per solution at a time)."""

    def __init__(self, bucket: Bucket) -> None:
        self._bucket = bucket

    async def get(self, domain: str, solution: str) -> rpb.ApprovalDecision | None:
        entry = await self._bucket.get(decision_key(domain, solution))
        return None if entry is None else rpb.ApprovalDecision.FromString(entry.value)

    async def decide(self, domain: str, solution: str, decision: rpb.ApprovalDecision) -> None:
        await self._bucket.put(decision_key(domain, solution), decision.SerializeToString())

    async def clear(self, domain: str, solution: str) -> None:
        with contextlib.suppress(Exception):
            await self._bucket.delete(decision_key(domain, solution), None, "approval decision")
