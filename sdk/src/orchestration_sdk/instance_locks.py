"""One operation per instance at a time, for controllers: the engine sends
an instance one operation at a time, but a retry can arrive while the call
of an attempt given up at its deadline still runs, and a status check can
come in between. A lock exists while someone holds or waits for it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from orchestration_sdk.errors import Retryable


@dataclass
class _Entry:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0  # holding or waiting


class InstanceLocks:
    """Per-instance locks that go away when nobody uses them.

    Example::

        self.locks = InstanceLocks()

        async def start(self, ctx: OperationContext) -> Result:
            async with self.locks.held(ctx.uuid, ctx.deadline):
                ...
    """

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}

    @asynccontextmanager
    async def held(self, uuid: str, deadline: float | None = None) -> AsyncIterator[None]:
        """The instance's lock, waited for until `deadline` (`time.time()`
        seconds; None: as long as it takes), then Retryable."""
        entry = self._entries.get(uuid)
        if entry is None:
            entry = self._entries[uuid] = _Entry()
        entry.users += 1
        try:
            if deadline is None:
                await entry.lock.acquire()
            else:
                try:
                    async with asyncio.timeout(max(0.0, deadline - time.time())):
                        await entry.lock.acquire()
                except TimeoutError:
                    raise Retryable(f"another operation on instance {uuid} still runs", after=1.0) from None
            try:
                yield
            finally:
                entry.lock.release()
        finally:
            entry.users -= 1
            if entry.users == 0 and self._entries.get(uuid) is entry:
                del self._entries[uuid]

    def busy(self, uuid: str) -> bool:
        """Whether an operation holds the instance's lock now."""
        entry = self._entries.get(uuid)
        return entry is not None and entry.lock.locked()

    def __len__(self) -> int:
        return len(self._entries)
