"""The one back-off rule: how long to wait after n failures in a row.

Every retry in the suite uses it: an operation the dispatcher repeats, a
write waiting out NATS trouble, a controller calling a dispatcher that does
not answer, the monitor's compensations, the launcher restarting a child.
Pure (no clock, no sleeping): callers wait the delay their own way."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum


class Jitter(Enum):
    """How a delay is spread so that callers that failed together do not retry in lock-step."""

    NONE = "none"  # exactly the exponential delay
    FULL = "full"  # uniform in [0, delay]
    HALF = "half"  # uniform in [delay / 2, delay]


@dataclass(frozen=True)
class Backoff:
    """Delays growing from `first` by `factor` per failure, capped at `maximum` (seconds).

    Example::

        backoff = Backoff(first=0.2, maximum=10.0, jitter=Jitter.HALF)
        await asyncio.sleep(backoff.delay(failures))
    """

    first: float
    maximum: float
    factor: float = 2.0
    jitter: Jitter = Jitter.NONE

    def __post_init__(self) -> None:
        if self.first < 0 or self.maximum < 0 or self.factor < 1:
            raise ValueError(f"back-off needs first >= 0, maximum >= 0 and factor >= 1, got {self}")

    def ceiling(self, failures: int) -> float:
        """The delay after `failures` failures in a row, before jitter (1 -> first)."""
        if failures <= 1:
            return min(self.maximum, self.first)
        # Capped before it can overflow: factor ** failures grows without bound.
        steps = failures - 1
        delay = self.first
        for _ in range(steps):
            delay *= self.factor
            if delay >= self.maximum:
                return self.maximum
        return delay

    def delay(self, failures: int, uniform: Callable[[float, float], float] = random.uniform) -> float:
        """The delay to wait after `failures` failures in a row (`uniform` draws the jitter)."""
        ceiling = self.ceiling(failures)
        if self.jitter is Jitter.FULL:
            return uniform(0.0, ceiling)
        if self.jitter is Jitter.HALF:
            return uniform(ceiling / 2, ceiling)
        return ceiling
