"""The dispatcher process: takes requests from the internal channel, owns
solutions through leases, resumes whatever a dead dispatcher left behind,
and serves controller registration."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from dataclasses import dataclass, replace

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import api

from dispatcher.controllers import ControllerPool
from dispatcher.run.executor import Run, RunContext
from dispatcher.run.intent import apply_request, read_design
from dispatcher.ownership.registration import RegistrationServicer
from dispatcher.settings import DispatcherSettings
from dispatcher.run.tasks import TaskBook
from orchestration.model.errors import Aborted, Fenced, NotFound, OrchestrationError
from orchestration.runtime.credentials import RegistrationGate
from orchestration.runtime.grpcserver import Server
from orchestration.runtime.metrics import REQUESTS_WAITING
from orchestration.runtime.process import serve_until_signalled
from orchestration.store.events import EventRecorder
from orchestration.store.kvstore import is_transient
from orchestration.store.leases import LEASE_REVISION_HEADER, LEASE_SECONDS, Lease, now_ms, queued_lease
from orchestration.store.natsconn import connect, redact
from orchestration.store.repository import Repository
from orchestration.store.requests import root_task
from orchestration.store.subjects import Subjects
from orchestration.v1 import dispatcher_pb2 as dpb
from orchestration.v1 import dispatcher_pb2_grpc as dpb_grpc
from orchestration.v1 import model_pb2 as pb
from orchestration.v1 import records_pb2 as rpb

log = logging.getLogger("dispatcher")

CONSUMER = "dispatchers"
# A queued request whose message never arrived is picked up from its lease after this.
QUEUED_GRACE_MS = 5000
# A request whose start fails unexpectedly this many times is failed, and its solution freed.
MAX_START_FAILURES = 5


# The run stops sending operations this long before its lease would expire
# unless renewed (seconds of this process's monotonic clock): a process that
# stalled past it wakes up knowing it may have been deposed.
LEASE_MARGIN = LEASE_SECONDS / 3
# Seconds between two full garbage collections after runs end (see _collect_garbage).
GC_SECONDS = 2.0


@dataclass
class ActiveRun:
    run: Run
    lease: Lease
    task: asyncio.Task[None] | None = None
    # Monotonic time until which the lease surely holds (set when it was written).
    valid_until: float = 0.0

    def renewed(self, lease: Lease, sent: float) -> None:
        """The lease was written (claimed or renewed) by a request sent at monotonic `sent`."""
        self.lease = lease
        self.valid_until = sent + LEASE_SECONDS - LEASE_MARGIN

    def holds_lease(self) -> bool:
        return time.monotonic() < self.valid_until


def _announced_lease(msg: Msg, request: rpb.Request) -> Lease | None:
    """The lease that accepting the request wrote, as its message announces it
    (None without a revision in the header): a claim of it that succeeds
    saves reading it. A revision names one write of the leases bucket for
    good (its stream's sequences are never reused while the stream lives),
    so a claim at it succeeds only if that write is still the lease."""
    header = (msg.headers or {}).get(LEASE_REVISION_HEADER, "")
    revision = int(header) if header.isascii() and header.isdigit() else 0
    return queued_lease(request, revision) if revision else None  # 0 would make the claim a create


class Dispatcher:
    """A running dispatcher replica: start(), then stop()."""

    def __init__(self, settings: DispatcherSettings) -> None:
        self.settings = settings
        self.subjects = Subjects(settings.prefix)
        self.runs: dict[str, ActiveRun] = {}
        self.server: Server | None = None
        self._loops: list[asyncio.Task[None]] = []
        self._nc: Client | None = None
        self._lease_nc: Client | None = None
        self.pool: ControllerPool | None = None
        self._start_failures: dict[str, int] = {}  # root task -> failed starts
        self._collected = 0.0  # monotonic time of the last full garbage collection

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.port

    async def start(self) -> None:
        self._nc = nc = await connect(self.settings.nats_url, f"dispatcher {self.settings.replica}", self._nats_state)
        js = nc.jetstream()
        self.js = js
        self.repo = Repository(js, self.subjects)
        await self.repo.open()
        await self.repo.fencing_works()
        # Leases are renewed over a connection of their own: bulk writes of
        # big runs on the main connection cannot delay a renewal.
        self._lease_nc = await connect(self.settings.nats_url, f"dispatcher {self.settings.replica} leases")
        lease_repo = Repository(self._lease_nc.jetstream(), self.subjects)
        await lease_repo.open()
        self.leases = lease_repo.leases
        self.pool = ControllerPool(self.repo.registrations, self.settings.credential, self.settings.engine.controller_wait,
                                   self.settings.tls)
        await self.pool.start()
        self.recorder = EventRecorder(js, self.subjects)
        self.ctx = RunContext(self.repo, self.pool, self.settings.engine)
        server = Server(self.settings.address, RegistrationGate(self.settings.registration_key),
                        [dpb.DESCRIPTOR.services_by_name["DispatcherService"].full_name], self.settings.tls)
        dpb_grpc.add_DispatcherServiceServicer_to_server(RegistrationServicer(self.repo.registrations), server.grpc)
        await server.start()
        await server.set_serving(True)
        self.server = server
        self._loops = [
            asyncio.create_task(self._consume(), name="consume"),
            asyncio.create_task(self._recover_loop(), name="recover"),
            asyncio.create_task(self._renew_loop(), name="renew"),
            asyncio.create_task(self._termination_loop(), name="terminations"),
        ]
        log.info("replica %s on port %d, nats %s", self.settings.replica, server.port, redact(self.settings.nats_url))

    async def _nats_state(self, up: bool) -> None:
        if self.server is not None:
            await self.server.set_serving(up)

    async def stop(self) -> None:
        for loop in self._loops:
            loop.cancel()
        for active in list(self.runs.values()):
            if active.task:
                active.task.cancel()
        for task in [*self._loops, *(a.task for a in self.runs.values() if a.task)]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.pool is not None:  # None when stopped before it started
            await self.pool.stop()
        if self.server is not None:
            await self.server.set_serving(False)
            await self.server.stop()
        for nc in (self._nc, self._lease_nc):
            if nc is not None:
                await nc.close()

    # ---- requests --------------------------------------------------------------

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
        while True:
            if time.monotonic() - counted > 2.0:
                counted = time.monotonic()
                with contextlib.suppress(Exception):
                    REQUESTS_WAITING.set((await subscription.consumer_info()).num_pending or 0)
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
            request = rpb.Request.FromString(msg.data)
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
            if lease is None or lease.record.task != request.task or lease.key in self.runs:
                await msg.ack()  # finished, superseded, or already running here
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

    async def _recover_loop(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            try:
                for lease in await self.leases.all():
                    if lease.key in self.runs:
                        continue
                    if lease.claimable_by(self.settings.replica, now_ms(), QUEUED_GRACE_MS):
                        log.info("taking over solution %s (task %s)", lease.key, lease.record.task)
                        await self._try_start(lease)
            except Exception:  # noqa: BLE001 - NATS may be away; try again
                log.debug("recovery scan failed", exc_info=True)

    async def _try_start(self, lease: Lease) -> bool:
        """Start the lease's run; False when the lease was not as given (its
        claim was refused). After MAX_START_FAILURES unexpected failures
        (a bug, records nobody can read) the request fails for good instead of
        being retried for ever while it holds its solution. NATS trouble
        (a node restarting, a leader being elected) is not counted: it passes."""
        task = lease.record.task
        try:
            claimed = await self._start_run(lease)
        except Exception as err:
            if is_transient(err):
                raise
            failures = self._start_failures[task] = self._start_failures.get(task, 0) + 1
            if failures < MAX_START_FAILURES:
                raise
            del self._start_failures[task]
            await self._give_up(lease, f"the request could not be started ({failures} attempts): {type(err).__name__}: {err}")
            return True
        if claimed:
            self._start_failures.pop(task, None)
        return claimed

    async def _give_up(self, lease: Lease, error: str) -> None:
        """Fail the lease's root task and free its solution."""
        request = lease.record.request
        log.error("giving up request %s on %s: %s", request.uuid, lease.key, error, extra={"task_id": request.task})
        try:
            root = await self.repo.tasks.get_task(request.domain, request.task)
            task = root.value
            revision: int | None = root.revision
        except NotFound:
            task, revision = root_task(request), None
        task.status, task.error, task.updated = pb.TASK_STATUS_FAILED, error, time.time_ns()
        await self.repo.tasks.put_task(task, revision)
        current = await self.leases.get(request.domain, request.solution)
        if current is not None and current.record.task == request.task:
            with contextlib.suppress(Aborted, NotFound):
                await self.leases.release(current)
        self.runs.pop(lease.key, None)

    async def _start_run(self, lease: Lease) -> bool:
        """Claim the lease, apply the request's intent, prepare the run and start it
        (the run stores its tree once its first operation has left, see dispatcher.run.opening).
        False when the claim was refused (the lease was not as given)."""
        request = lease.record.request
        claimed = False
        # The root task is read while the lease is claimed (the gateway stored it; a read is harmless).
        reading = asyncio.ensure_future(self.repo.tasks.get_task(request.domain, request.task))
        reading.add_done_callback(lambda done: done.cancelled() or done.exception())  # an error not awaited is none
        design = read_design(self.repo, request)
        sent = time.monotonic()
        try:
            lease = await self.leases.claim(lease, self.settings.replica)
            claimed = True
            # From here on, every write for the solution is fenced (see Repository.fenced).
            repo = await self.repo.fenced(request.domain, request.solution, self.settings.replica)
        except BaseException as err:
            for read in (reading, design):
                if read is not None:
                    read.cancel()
            if isinstance(err, Aborted) and not claimed:
                return False
            raise
        try:
            root = await reading
        except NotFound:
            await repo.tasks.put_task(root_task(request), None)
            root = await repo.tasks.get_task(request.domain, request.task)
        book = TaskBook(repo, self.recorder, root.value)
        book.revisions[root.value.uuid] = root.revision
        run = Run(replace(self.ctx, repo=repo), book, request.traceparent)
        active = ActiveRun(run, lease)
        active.renewed(lease, sent)
        if not active.holds_lease():
            # Claiming took most of the lease (NATS trouble): renew once now
            # rather than have the run stop at its first operation.
            sent = time.monotonic()
            try:
                active.renewed(await self.leases.claim(active.lease, self.settings.replica), sent)
            except Aborted:
                return True  # another dispatcher has it now
        run.holds_lease = active.holds_lease
        self.runs[lease.key] = active
        try:
            if book.finished(book.root):
                await self._end(active)
                return True
            await run.prepare(await apply_request(repo, request, design))
        except Fenced as err:
            log.warning("lost the lease of %s while preparing: %s", lease.key, err.message)
            self.runs.pop(lease.key, None)
            return True
        except OrchestrationError as err:
            if is_transient(err):
                # NATS slow or away (a read timed out): not the request's fault. The
                # lease stays ours; the request is tried again (redelivery, recovery).
                self.runs.pop(lease.key, None)
                raise
            if request.kind == rpb.REQUEST_KIND_REMOVE and isinstance(err, NotFound):
                # Removed already: a run stopped between the removal and its root's status,
                # or between the grave and the purge (which this finishes).
                with contextlib.suppress(NotFound):
                    await repo.solutions.remove_solution(request.domain, request.solution)
                await book.set_status(book.root, pb.TASK_STATUS_COMPLETED)
                await self._end(active)
                return True
            log.warning("request %s cannot run: %s", request.uuid, err.message)
            await book.set_status(book.root, pb.TASK_STATUS_FAILED, error=err.message)
            await self._end(active)
            return True
        except BaseException:
            self.runs.pop(lease.key, None)
            raise
        log.info("running task %s of %s", book.root, lease.key, extra={"task_id": book.root, "solution": request.solution})
        active.task = asyncio.create_task(self._execute(active), name=f"run {lease.key}")
        return True

    async def _execute(self, active: ActiveRun) -> None:
        run = active.run
        try:
            status = await run.execute()
            if not run.lost:
                log.info("task %s of %s ended %s", run.book.root, active.lease.key,
                         pb.TaskStatus.Name(status).removeprefix("TASK_STATUS_").lower(), extra={"task_id": run.book.root})
                await self._end(active)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - the lease expires and another attempt resumes it
            log.exception("run of %s crashed; it will be resumed", active.lease.key)
            run.lose_lease()
        finally:
            if run.lost:
                self.runs.pop(active.lease.key, None)
                self._collect_garbage()

    async def _end(self, active: ActiveRun) -> None:
        request = active.lease.record.request
        with contextlib.suppress(Aborted, NotFound):
            await self.leases.release(active.lease)
        with contextlib.suppress(Exception):
            await self.leases.clear_terminations(request.domain, request.task)
        self.runs.pop(active.lease.key, None)
        self._collect_garbage()

    def _collect_garbage(self) -> None:
        """Free an ended run at once. Its objects form reference cycles (run,
        scheduler, settler, task book), which only a full collection frees,
        and most of their memory is protobuf's, outside what Python counts
        towards its next collection: left alone, ended runs pile up (a soak
        of 100 deploys grew the dispatcher by a third). At most one full
        collection every GC_SECONDS."""
        now = time.monotonic()
        if now - self._collected >= GC_SECONDS:
            self._collected = now
            gc.collect()

    async def _renew_loop(self) -> None:
        while True:
            await asyncio.sleep(LEASE_SECONDS / 3)
            # All at once: one slow renewal must not make the others late.
            await asyncio.gather(*(self._renew(key, active) for key, active in list(self.runs.items())))

    async def _renew(self, key: str, active: ActiveRun) -> None:
        sent = time.monotonic()
        try:
            active.renewed(await self.leases.claim(active.lease, self.settings.replica), sent)
        except Aborted:
            log.warning("lost the lease of %s; another dispatcher continues", key)
            active.run.lose_lease()
        except Exception:  # noqa: BLE001 - NATS away: retry next round, unless the lease ran out
            log.debug("renewing %s failed", key, exc_info=True)
            if not active.holds_lease():
                log.warning("the lease of %s ran out while NATS was away; the run stops and resumes", key)
                active.run.lose_lease()

    async def _termination_loop(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            for active in list(self.runs.values()):
                request = active.lease.record.request
                try:
                    for termination in await self.leases.terminations(request.domain, request.task):
                        await active.run.terminate(termination.task, termination.actor)
                except Exception:  # noqa: BLE001
                    log.debug("reading terminations failed", exc_info=True)


async def serve(settings: DispatcherSettings) -> None:
    """Run a dispatcher until SIGTERM or SIGINT."""
    await serve_until_signalled(Dispatcher(settings), "dispatcher")
