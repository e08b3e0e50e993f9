"""A service stops when told, even when a task of its own outlives one
cancellation (Python 3.11's asyncio.wait_for may swallow it), and one that
does not stop says in its log what it waits on."""

from __future__ import annotations

import asyncio
import logging

import pytest

from orchestration_sdk.runtime.concurrency import cancel_and_wait
from orchestration_sdk.runtime.process import serve_until_signalled


async def _swallows_one_cancellation(swallowed: list[int]) -> None:
    """A loop like a NATS fetch loop whose first cancellation was lost."""
    while True:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            if swallowed:
                raise
            swallowed.append(1)


def test_a_task_that_outlives_its_cancellation_is_cancelled_again() -> None:
    async def main() -> None:
        swallowed: list[int] = []
        stubborn = asyncio.ensure_future(_swallows_one_cancellation(swallowed))
        failed = asyncio.ensure_future(asyncio.sleep(0))
        done = asyncio.ensure_future(asyncio.sleep(0))
        await asyncio.sleep(0.01)
        await asyncio.wait_for(cancel_and_wait([stubborn, failed, done], every=0.05), timeout=5)
        assert swallowed == [1] and stubborn.cancelled()

    asyncio.run(main())


def test_a_service_that_does_not_stop_says_what_it_waits_on(caplog: pytest.LogCaptureFixture,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import orchestration_sdk.runtime.process as process

    monkeypatch.setattr(process, "STOP_REPORT_SECONDS", 0.05)
    monkeypatch.setattr(process, "stop_on_signals", lambda: _set_event())

    class Slow:
        async def start(self) -> None:
            pass

        async def stop(self) -> None:
            await asyncio.sleep(0.3)

    with caplog.at_level(logging.WARNING, logger="slowpoke"):
        asyncio.run(serve_until_signalled(Slow(), "slowpoke"))
    (record,) = [r for r in caplog.records if r.name == "slowpoke"]
    assert "still stopping" in record.getMessage()
    assert "(stop)" in record.getMessage(), record.getMessage()


def _set_event() -> asyncio.Event:
    event = asyncio.Event()
    event.set()
    return event
