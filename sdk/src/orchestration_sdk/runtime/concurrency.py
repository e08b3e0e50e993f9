"""Awaiting many calls at once, a bounded number at a time; streams that end
when their caller may no longer have them; tasks cancelled until they end."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, TypeVar

from orchestration_sdk.status_errors import Unauthenticated

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


async def while_valid(items: AsyncIterator[T], valid: Callable[[], Awaitable[bool]], every: float) -> AsyncIterator[T]:
    """The items of a stream for as long as `valid()` says its caller may
    have them, asked before each item and at least every `every` seconds
    while none comes (a revoked token ends a quiet stream too). Raises
    Unauthenticated once it says no; closes `items` however it ends."""
    pending: asyncio.Future[T] | None = None
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(anext(items))
            done, _ = await asyncio.wait({pending}, timeout=every)
            if not await valid():
                raise Unauthenticated("the token of this stream is no longer valid (revoked or expired): sign in again")
            if not done:
                continue
            try:
                item = pending.result()
            except StopAsyncIteration:
                return
            pending = None
            yield item
    finally:
        if pending is not None and not pending.done():
            pending.cancel()
            with contextlib.suppress(BaseException):
                await pending
        aclose = getattr(items, "aclose", None)
        if aclose is not None:
            await aclose()


# How long a cancelled task may go on before it is cancelled again.
RECANCEL_SECONDS = 0.5


async def cancel_and_wait(tasks: Iterable[asyncio.Future[Any]], every: float = RECANCEL_SECONDS) -> None:
    """Cancel the tasks and wait until each has ended, cancelling again any
    that outlives its cancellation. On Python 3.11 `asyncio.wait_for` swallows
    a cancellation that lands as the call it waits on completes (NATS fetches
    and requests use it): a loop around such a call goes on, and a service
    awaiting it once would never stop. Errors of the ended tasks are dropped."""
    tasks = list(tasks)
    pending = {task for task in tasks if not task.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=every)
    for task in tasks:
        if not task.cancelled():
            task.exception()  # retrieved: an ended task's error is not reported again at exit
