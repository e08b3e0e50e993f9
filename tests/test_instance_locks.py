"""The SDK's per-instance locks: one holder at a time per instance, others
free; a wait bounded by a deadline ends Retryable; nothing kept once unused."""

from __future__ import annotations

import asyncio
import time

import pytest

from orchestration_sdk import InstanceLocks, Retryable


def test_one_holder_per_instance_others_free_and_nothing_kept_after() -> None:
    async def scenario() -> None:
        locks = InstanceLocks()
        order: list[str] = []
        release = asyncio.Event()

        async def hold(uuid: str, name: str) -> None:
            async with locks.held(uuid):
                order.append(f"{name} in")
                await release.wait()
                order.append(f"{name} out")

        first = asyncio.create_task(hold("a", "first"))
        await asyncio.sleep(0)
        second = asyncio.create_task(hold("a", "second"))
        other = asyncio.create_task(hold("b", "other"))
        await asyncio.sleep(0)
        assert order == ["first in", "other in"] and locks.busy("a") and locks.busy("b") and not locks.busy("c")
        release.set()
        await asyncio.gather(first, second, other)
        assert order.index("second in") > order.index("first out")
        assert len(locks) == 0 and not locks.busy("a")

    asyncio.run(scenario())


def test_a_wait_past_the_deadline_is_retryable_and_leaves_the_holder_alone() -> None:
    async def scenario() -> None:
        locks = InstanceLocks()
        release = asyncio.Event()

        async def hold() -> None:
            async with locks.held("a"):
                await release.wait()

        holder = asyncio.create_task(hold())
        await asyncio.sleep(0)
        with pytest.raises(Retryable, match="another operation on instance a still runs"):
            async with locks.held("a", time.time() + 0.05):
                pass
        assert locks.busy("a") and len(locks) == 1
        release.set()
        await holder
        async with locks.held("a", time.time() + 1):
            assert locks.busy("a")
        assert len(locks) == 0

    asyncio.run(scenario())
