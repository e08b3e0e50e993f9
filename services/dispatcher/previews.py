"""Dry runs on request: the gateway's `plan --preview` asks any dispatcher
(core NATS request-reply on <prefix>.internal.preview, a queue group) for
what each planned operation would change; the dispatcher asks the
operation's controller (ControllerService.Preview) and answers with every
text, or why there is none. Nothing is stored and nothing runs."""

from __future__ import annotations

import asyncio
import logging
import time

import grpc
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from dispatcher.controllers import ControllerPool, LinkLost, NoController
from orchestration.store.subjects import Subjects
from orchestration.v1 import controller_pb2 as cpb
from orchestration.v1 import records_pb2 as rpb
from orchestration_sdk.runtime.concurrency import cancel_and_wait, gather_bounded

log = logging.getLogger("dispatcher.previews")

QUEUE = "dispatchers"
# Dry runs asked at once, over all controllers (a playbook's check mode is a process each).
CONCURRENCY = 8
# A dry run's time (seconds), and the most of one answer kept (a NATS message holds them all).
TIMEOUT = 60.0
TEXT_LIMIT = 8192


class Previews:
    """Answers preview requests with the controllers' dry runs."""

    def __init__(self, nc: Client, subjects: Subjects, pool: ControllerPool) -> None:
        self._nc, self._subjects, self._pool = nc, subjects, pool
        self._subscription: Subscription | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._subscription = await self._nc.subscribe(self._subjects.preview, queue=QUEUE, cb=self._received)

    async def stop(self) -> None:
        if self._subscription is not None:
            await self._subscription.unsubscribe()
        await cancel_and_wait(list(self._tasks))

    async def _received(self, msg: Msg) -> None:
        # Answered in a task of its own: a long dry run must not hold up the next request.
        task = asyncio.create_task(self._answer(msg))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(self, msg: Msg) -> None:
        try:
            batch = rpb.PreviewBatch.FromString(msg.data)
        except Exception:  # noqa: BLE001 - not ours to parse: answer nothing
            log.warning("a preview request that is not a PreviewBatch was ignored")
            return
        answers = await gather_bounded(
            (self.one(controller, operation) for controller, operation in zip(batch.controllers, batch.operations)),
            CONCURRENCY)
        try:
            await msg.respond(rpb.PreviewAnswers(answers=answers).SerializeToString())
        except Exception:  # noqa: BLE001 - the asker went away (or NATS did): it sees a time-out
            log.warning("a preview answer could not be sent", exc_info=True)

    async def one(self, controller: str, operation: cpb.Operation) -> rpb.PreviewAnswer:
        """One operation's dry run, or why there is none."""
        operation.deadline_unix_ms = int((time.time() + TIMEOUT) * 1000)
        try:
            text = await self._pool.preview(controller, operation, TIMEOUT + 1.0)
        except (NoController, LinkLost) as err:
            return rpb.PreviewAnswer(error=f"no preview: {err}")
        except grpc.aio.AioRpcError as err:
            return rpb.PreviewAnswer(error=f"no preview: {controller} answered {err.code().name}: {err.details()}")
        except (TimeoutError, asyncio.TimeoutError):
            return rpb.PreviewAnswer(error=f"no preview: {controller} did not answer within {TIMEOUT:g} s")
        if len(text) > TEXT_LIMIT:
            text = text[:TEXT_LIMIT] + f"\n... ({len(text) - TEXT_LIMIT} more characters)"
        return rpb.PreviewAnswer(text=text)
