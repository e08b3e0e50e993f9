"""At most one run of user code per operation id in this process: re-deliveries
of a finished operation get the cached result, a re-delivery of a running one
waits for that run."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from orchestration_sdk.v1 import controller_pb2 as pb

DEFAULT_CACHE_SIZE = 100_000


class OperationDeduplicator:
    """Runs each operation id once; remembers the last `capacity` results (LRU).

    A retryable result is final only for its attempt: a delivery with a higher
    `attempt` is the dispatcher's retry and runs again, while a re-delivery of
    the same attempt (after a lost stream) gets the cached answer.
    """

    def __init__(self, capacity: int = DEFAULT_CACHE_SIZE) -> None:
        self._capacity = capacity
        # op id -> the serialized result without its operation id (the key
        # holds it), or for a retryable one (attempt, that): a serialized
        # result takes a third of the memory of a message, and a final one
        # needs no tuple (10-12 MB less at 100,000).
        self._done: OrderedDict[str, bytes | tuple[int, bytes]] = OrderedDict()
        self._running: dict[str, asyncio.Future[pb.OperationResult]] = {}

    def __len__(self) -> int:
        return len(self._done)

    def cached(self, operation: pb.Operation) -> pb.OperationResult | None:
        """The result this delivery must get without running anything, if any."""
        op_id = operation.operation_id
        entry = self._done.get(op_id)
        if entry is None:
            return None
        if isinstance(entry, tuple):
            attempt, entry = entry
            if max(1, operation.attempt) > attempt:
                return None
        self._done.move_to_end(op_id)
        result = pb.OperationResult.FromString(entry)
        result.operation_id = op_id
        return result

    async def run(
        self, operation: pb.Operation, run: Callable[[], Awaitable[pb.OperationResult]]
    ) -> pb.OperationResult:
        """The result of `run()` for this operation, running it at most once."""
        op_id = operation.operation_id
        hit = self.cached(operation)
        if hit is not None:
            return hit
        running = self._running.get(op_id)
        if running is not None:
            # shield: a cancelled waiter must not cancel the run it shares.
            return await asyncio.shield(running)
        future: asyncio.Future[pb.OperationResult] = asyncio.get_running_loop().create_future()
        self._running[op_id] = future
        try:
            result = await run()
        except asyncio.CancelledError:
            # Nothing to cache: the next delivery runs again.
            future.cancel()
            raise
        except BaseException as err:
            future.set_exception(err)
            future.exception()  # mark retrieved: no "never retrieved" warning
            raise
        finally:
            del self._running[op_id]
        future.set_result(result)
        self._remember(op_id, max(1, operation.attempt), result)
        return result

    def _remember(self, op_id: str, attempt: int, result: pb.OperationResult) -> None:
        stored = pb.OperationResult()
        stored.CopyFrom(result)
        stored.ClearField("operation_id")
        serialized = stored.SerializeToString()
        self._done[op_id] = (attempt, serialized) if result.outcome == pb.Outcome.OUTCOME_RETRYABLE else serialized
        self._done.move_to_end(op_id)
        while len(self._done) > self._capacity:
            self._done.popitem(last=False)
