"""Rollout strategies: how a version change of an element goes (the
`Rollout` keys of an architecture element), read into numbers once. Pure:
the dispatcher's rollout gate (dispatcher.run.rollout) applies them."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from orchestration.v1 import model_pb2 as pb
from orchestration_sdk.status_errors import InvalidArgument

APPROVAL = "approval"
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)?$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def seconds(text: str, path: str) -> float:
    """A duration: "500ms", "30s", "5m", "1h" or a number of seconds (InvalidArgument otherwise)."""
    found = _DURATION.match(text.strip())
    if found is None:
        raise InvalidArgument(f"{path}: {text!r} is not a duration (30s, 5m, 1h)")
    return float(found.group(1)) * _UNITS[found.group(2)]


@dataclass(frozen=True)
class Strategy:
    """A rollout's numbers for an element of `size` instances."""

    batch: int
    max_unavailable: int
    max_surge: int
    pause: float  # seconds between batches
    approval: bool  # between batches, wait for an operator
    check: float  # seconds a batch must stay active

    def batches(self, size: int) -> int:
        return max(1, math.ceil(size / self.batch))


def strategy(rollout: pb.Rollout, size: int, path: str = "Rollout") -> Strategy:
    """The rollout's numbers (InvalidArgument names what is wrong and where)."""
    text = rollout.batch.strip()
    if text.endswith("%"):
        share = text[:-1]
        if not share.isdigit() or not 0 < int(share) <= 100:
            raise InvalidArgument(f"{path}/Batch: {text!r} is not a share of 1% to 100%")
        batch = max(1, math.ceil(size * int(share) / 100))
    elif text.isdigit() and int(text) > 0:
        batch = int(text)
    else:
        raise InvalidArgument(f"{path}/Batch: {text!r} is not a count (3) or a share (25%) of instances")
    if rollout.max_unavailable < 0:
        raise InvalidArgument(f"{path}/MaxUnavailable: {rollout.max_unavailable} is negative")
    surge = rollout.max_surge if rollout.HasField("max_surge") else batch
    if surge < 0:
        raise InvalidArgument(f"{path}/MaxSurge: {surge} is negative")
    if surge == 0 and rollout.max_unavailable == 0:
        raise InvalidArgument(f"{path}: MaxSurge and MaxUnavailable are both 0: no instance could ever change")
    approval = rollout.pause.strip() == APPROVAL
    pause = 0.0 if approval or not rollout.pause.strip() else seconds(rollout.pause, f"{path}/Pause")
    check = seconds(rollout.check, f"{path}/Check") if rollout.check.strip() else 0.0
    return Strategy(batch, rollout.max_unavailable, surge, pause, approval, check)
