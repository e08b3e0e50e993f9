"""Intake: requests taken from the internal channel, one at a time, and
started as runs when this replica may claim their solution's lease."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import nats.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api

from dispatcher.ownership.tenure import ActiveRun
from dispatcher.settings import DispatcherSettings
from orchestration.runtime.metrics import REQUESTS_WAITING
from orchestration.store.leases import LEASE_REVISION_HEADER, Lease, Leases, now_ms, queued_lease, read_request
from orchestration.store.subjects import Subjects
from orchestration.v1 import records_pb2 as rpb

log = logging.getLogger("dispatcher")

CONSUMER = "dispatchers"
# A replica that runs changes lets a moment pass before it asks for the next
# request (seconds) while other replicas' pulls wait at the server, so that
# an idle one takes it: new solutions go to the dispatchers with spare time.
# A lone dispatcher never waits.
BUSY_YIELD_SECONDS = 0.02
# A request queued behind a run of this replica that has ended but is still
# finishing comes back this often (seconds) until the run lets its solution go.
FINISHING_RETRY_SECONDS = 0.25


def _announced_lease(msg: Msg, request: rpb.Request) -> Lease | None:
    """The lease that accepting the request wrote, as its message announces it
    (None without a revision in the header): a claim of it that succeeds
    saves reading it. A revision names one write of the leases bucket for
    good (its stream's sequences are never reused while the stream lives),
    so a claim at it succeeds only if that write is still the lease."""
    header = (msg.headers or {}).get(LEASE_REVISION_HEADER, "")
    revision = int(header) if header.isascii() and header.isdigit() else 0
    return queued_lease(request, revision) if revision else None  # 0 would make the claim a create


class Intake:
    """The replica's part that takes requests (a part of Dispatcher)."""

    settings: DispatcherSettings
    subjects: Subjects
    js: JetStreamContext
    leases: Leases
    runs: dict[str, ActiveRun]

    async def _try_start(self, lease: Lease) -> bool:
        raise NotImplementedError

    async def _consume(self) -> None:
        config = api.ConsumerConfig(ack_wait=60, max_ack_pending=10000)
        subscription = None
        while subscription is None:
            try:
                subscription = await self.js.pull_subscribe(
                    self.subjects.internal_requests_all, durable=CONSUMER, stream=self.subjects.requests_stream, config=config
                )
            except Exception:  # noqa: BLE001 - NATS may not be reachable yet
                log.warning("cannot subscribe to the internal channel yet", exc_info=True)
                await asyncio.sleep(1)
        counted = 0.0
        others = False  # whether other replicas pull too (read with the figures, every 2 s)
        while True:
            if time.monotonic() - counted > 2.0:
                counted = time.monotonic()
                with contextlib.suppress(Exception):
                    info = await subscription.consumer_info()
                    REQUESTS_WAITING.set(info.num_pending or 0)
                    others = bool(info.num_waiting)  # our own pull is not out between two fetches
            if self.runs and others:
                await asyncio.sleep(BUSY_YIELD_SECONDS)
            try:
                # One at a time: a pull for more waits out its expiry for the
                # rest, which held a lone request back for up to a second.
                messages = await subscription.fetch(batch=1, timeout=1.0)
            except (nats.errors.TimeoutError, asyncio.TimeoutError):
                continue
            except Exception:  # noqa: BLE001 - reconnecting; try again
                log.debug("fetch failed", exc_info=True)
                await asyncio.sleep(0.5)
                continue
            for msg in messages:
                await self._handle(msg)

    async def _handle(self, msg: Msg) -> None:
        try:
            request = read_request(msg.data)
        except Exception:  # noqa: BLE001 - a message nobody can read is dropped, loudly
            log.error("dropping unreadable request on %s", msg.subject)
            await msg.term()
            return
        try:
            announced = _announced_lease(msg, request)
            if announced is not None and announced.key not in self.runs and await self._try_start(announced):
                await msg.ack()  # claimed as the gateway queued it: no read first
                return
            lease = await self.leases.get(request.domain, request.solution)
            if lease is None or lease.record.task != request.task:
                await msg.ack()  # finished or superseded
                return
            running = self.runs.get(lease.key)
            if running is not None and running.lease.record.task == request.task:
                await msg.ack()  # already running here
                return
            if running is not None:
                # Accepted over a run of ours whose task has ended (the gateway
                # lets a client react to the end at once) while the run still
                # finishes (a terminated one waits for its operations in flight):
                # taken once it lets the solution go, not by the recovery scan
                # seconds later.
                await msg.nak(delay=FINISHING_RETRY_SECONDS)
                return
            if not lease.claimable_by(self.settings.replica, now_ms()):
                await msg.ack()  # another live dispatcher runs it
                return
            await self._try_start(lease)
            await msg.ack()
        except Exception:  # noqa: BLE001 - leave it for redelivery or recovery
            log.exception("request %s not taken; it will be retried", request.uuid)
            with contextlib.suppress(Exception):
                await msg.nak(delay=1)
