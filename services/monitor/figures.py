"""What the last poll did: logged once per poll, answered on request."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class PollFigures:
    """Figures of one poll."""

    # Unix nanoseconds when the poll started.
    time: int = 0
    # Solutions polled, and those left to the task running on them (not read).
    solutions: int = 0
    busy: int = 0
    # Solutions whose records were read from the store (the others had not changed since the last poll).
    read: int = 0
    # Instances whose real state a controller reported.
    instances: int = 0
    # Instances no controller could answer for (none live, or calls failed).
    unanswered: int = 0
    # Stored states corrected (each with a drift event).
    drifted: int = 0
    # Drift seen in solutions with a running task (left to the task).
    drift_deferred: int = 0
    compensations: int = 0
    # Solutions left alone because they are held or degraded (see SolutionHold).
    held: int = 0
    # Solutions marked degraded by this poll.
    degraded: int = 0
    controller_calls: int = 0
    duration_seconds: float = 0.0

    def to_json(self, polls: int) -> bytes:
        return json.dumps({**asdict(self), "polls": polls}).encode()

    def log_line(self) -> str:
        return (
            f"poll: {self.instances} instance(s) in {self.solutions} solution(s) ({self.read} read again), "
            f"{self.busy} busy (left to their task), "
            f"{self.unanswered} unanswered, "
            f"{self.drifted} drifted, {self.drift_deferred} deferred, {self.compensations} compensation(s), "
            f"{self.held} held, {self.degraded} degraded, "
            f"{self.controller_calls} controller call(s), {self.duration_seconds:.3f} s"
        )
