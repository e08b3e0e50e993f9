"""How both ends of a controller's Execute stream fill their messages: each
message carries everything waiting to go (operations one way, results the
other); with many operations out and few waiting, the sender first gives
the ones about to come a moment to join (fewer, fuller messages when
operations take time and finish one by one)."""

from __future__ import annotations

import asyncio

# With at least COALESCE_INFLIGHT operations out, fewer than COALESCE_BELOW
# waiting items wait COALESCE_SECONDS for others.
COALESCE_INFLIGHT = 64
COALESCE_BELOW = 32
COALESCE_SECONDS = 0.002


async def let_others_join(waiting: int, out: int) -> None:
    """Before sending `waiting` items while `out` operations are out."""
    if waiting < COALESCE_BELOW and out >= COALESCE_INFLIGHT:
        await asyncio.sleep(COALESCE_SECONDS)
