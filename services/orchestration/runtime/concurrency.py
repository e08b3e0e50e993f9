"""Awaiting many calls at once, a bounded number at a time."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable
from typing import TypeVar

T = TypeVar("T")
# Calls in flight at once by default (JetStream writes, reads, Status calls).
DEFAULT_LIMIT = 256


async def gather_bounded(calls: Iterable[Awaitable[T]], limit: int = DEFAULT_LIMIT) -> list[T]:
    """Await all calls concurrently, at most `limit` at a time; results in order.
    The first error is raised once every call has finished.

    `limit` workers take the calls in turn. (An asyncio.Semaphore would do the
    same, but waking its next waiter scans every waiter already woken: with
    thousands of calls that is quadratic, seconds of CPU.)"""
    pending = list(calls)
    results: list[T] = [None] * len(pending)  # type: ignore[list-item]
    turns = iter(range(len(pending)))
    errors: list[BaseException] = []

    async def worker() -> None:
        for index in turns:
            try:
                results[index] = await pending[index]
            except Exception as err:  # noqa: BLE001 - raised below, after the others
                errors.append(err)

    await asyncio.gather(*(worker() for _ in range(min(limit, len(pending)))))
    if errors:
        raise errors[0]
    return results
