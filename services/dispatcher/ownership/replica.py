"""The dispatcher replica: its parts put together (intake of requests,
tenure of leases: see intake.py and tenure.py), the start of a run for a
claimed lease, and controller registration."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import replace

from nats.aio.client import Client

from dispatcher.controllers import ControllerPool
from dispatcher.previews import Previews
from dispatcher.ownership.intake import Intake
from dispatcher.ownership.outcomes import AwaitingApproval, Rejected, await_approval, close_previous, conclude
from dispatcher.ownership.registration import RegistrationServicer
from dispatcher.ownership.tenure import ActiveRun, Tenure
from dispatcher.run.executor import Run, RunContext
from dispatcher.run.intent import apply_request, read_design
from dispatcher.run.snapshot import Intent
from dispatcher.run.tasks import TaskBook
from dispatcher.settings import DispatcherSettings
from orchestration.runtime.credentials import RegistrationGate
from orchestration.store.events import EventRecorder
from orchestration.store.kvstore import is_transient
from orchestration.store.leases import Lease, solution_key
from orchestration.store.repository import Repository
from orchestration.store.requests import root_task, submit
from orchestration.store.subjects import Subjects
from orchestration.store.wire import connect, redact
from orchestration.v1 import dispatcher_pb2 as dpb
from orchestration.v1 import dispatcher_pb2_grpc as dpb_grpc
from orchestration.v1 import model_pb2 as pb
from orchestration.v1 import records_pb2 as rpb
from orchestration_sdk.runtime.concurrency import cancel_and_wait
from orchestration_sdk.runtime.grpcserver import Server
from orchestration_sdk.runtime.process import serve_until_signalled
from orchestration_sdk.status_errors import Aborted, Fenced, NotFound, OrchestrationError

log = logging.getLogger("dispatcher")

# A request whose start fails unexpectedly this many times is failed, and its solution freed.
MAX_START_FAILURES = 5


class Dispatcher(Intake, Tenure):
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
        self.previews: Previews | None = None
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
                                   self.settings.tls, domain_concurrency=self.settings.engine.domain_concurrency)
        await self.pool.start()
        self.recorder = EventRecorder(js, self.subjects)
        self.ctx = RunContext(self.repo, self.pool, self.settings.engine)
        self.previews = Previews(nc, self.subjects, self.pool)
        await self.previews.start()
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
        if self.previews is not None:
            await self.previews.stop()
        await cancel_and_wait([*self._loops, *(a.task for a in self.runs.values() if a.task)])
        if self.pool is not None:  # None when stopped before it started
            await self.pool.stop()
        if self.server is not None:
            await self.server.set_serving(False)
            await self.server.stop()
        for nc in (self._nc, self._lease_nc):
            if nc is not None:
                await nc.close()

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
                # Ended, but maybe not concluded (its owner died in between).
                await self._conclude(repo, request, book.root_task.status, book.root_task.error)
                await self._end(active)
                return True
            # The previous change concluded if its owner could not, and the
            # pause read (at once: nothing waits for them).
            async def awaits(revision: pb.Revision) -> None:
                raise AwaitingApproval(revision)
            intent, _, paused = await asyncio.gather(apply_request(repo, request, design, awaits),
                                                     close_previous(repo, self.leases, request),
                                                     self.repo.pauses.get(request.domain, request.solution))
            await self._prepare(active, repo, intent, paused is not None)
        except Fenced as err:
            log.warning("lost the lease of %s while preparing: %s", lease.key, err.message)
            self.runs.pop(lease.key, None)
            return True
        except AwaitingApproval as waiting:
            # Waited for on its own, so that this replica goes on taking requests.
            active.task = asyncio.create_task(self._approve_then_run(active, repo, waiting.revision),
                                              name=f"approval {lease.key}")
            return True
        except OrchestrationError as err:
            if is_transient(err):
                # NATS slow or away (a read timed out): not the request's fault. The
                # lease stays ours; the request is tried again (redelivery, recovery).
                self.runs.pop(lease.key, None)
                raise
            if request.HasField("remove") and isinstance(err, NotFound):
                # Removed already: a run stopped between the removal and its root's status,
                # or between the grave and the purge (which this finishes).
                with contextlib.suppress(NotFound):
                    await repo.solutions.remove_solution(request.domain, request.solution)
                await book.set_status(book.root, pb.TASK_STATUS_COMPLETED)
                await self._end(active)
                return True
            log.warning("request %s cannot run: %s", request.uuid, err.message)
            await book.set_status(book.root, pb.TASK_STATUS_FAILED, error=err.message)
            await self._conclude(repo, request, pb.TASK_STATUS_FAILED, err.message)
            await self._end(active)
            return True
        except BaseException:
            self.runs.pop(lease.key, None)
            raise
        log.info("running task %s of %s on %s", book.root, lease.key, self.settings.replica, extra={"task_id": book.root, "solution": request.solution})
        active.task = asyncio.create_task(self._execute(active), name=f"run {lease.key}")
        return True

    async def _prepare(self, active: ActiveRun, repo: Repository, intent: Intent, paused: bool) -> None:
        """Make the run ready (paused when its solution is)."""
        run, request = active.run, active.lease.record.request
        if paused:  # a paused solution's change starts no operation until it is resumed
            run.scheduler.pause()
            await self.repo.pauses.acknowledge(request.domain, request.solution, request.task)
        run.rollouts = not request.HasField("rollback")
        run.urgent = request.HasField("rollback")  # undoing a change goes ahead of other work
        run.adopt = request.HasField("deploy") and request.deploy.adopt
        await run.prepare(intent)

    async def _approve_then_run(self, active: ActiveRun, repo: Repository, revision: pb.Revision) -> None:
        """Wait for an approver's decision on the change, then run it (or end it, rejected)."""
        run, book, request = active.run, active.run.book, active.lease.record.request
        try:
            await await_approval(repo, request, revision, lambda: book.finished(book.root), lambda: run.lost)
            await repo.revisions.approved(request.domain, request.solution, revision.number)
            intent = await apply_request(repo, request)
            await self._prepare(active, repo, intent,
                                await self.repo.pauses.get(request.domain, request.solution) is not None)
        except Rejected as err:
            # Nothing of the change was written: its task ends, the solution is as it was.
            log.info("request %s not run: %s", request.uuid, err, extra={"task_id": request.task})
            if not book.finished(book.root):
                await book.set_status(book.root, pb.TASK_STATUS_TERMINATED, error=str(err))
            await self._end(active)
            return
        except Exception as err:  # noqa: BLE001 - lease gone, fenced, NATS away: the next owner goes on
            log.warning("waiting for approval of %s stopped: %s", active.lease.key, err or type(err).__name__)
            run.lose_lease()
            if self.runs.get(active.lease.key) is active:
                del self.runs[active.lease.key]
            return
        log.info("running task %s of %s on %s", book.root, active.lease.key, self.settings.replica, extra={"task_id": book.root})
        await self._execute(active)

    async def _conclude(self, repo: Repository, request: rpb.Request, status: int, error: str) -> None:
        """The outcome into the request's revision; the failure policy acted on
        (a rollback is queued over the ended run's lease, see outcomes)."""
        try:
            follow = await conclude(repo, self.leases, request, status, error)
        except Fenced:
            # The next request's owner has the solution: it concludes this one (see close_previous).
            log.info("%s/%s moved on before task %s was concluded", request.domain, request.solution, request.task)
            return
        if follow is not None:
            # Queued over the ended run's lease (no gap in which another request
            # could take the solution); the run is let go first, so that this
            # replica takes the rollback at once. Should this fail, the lease
            # runs out and whoever takes it concludes the run again.
            self.runs.pop(solution_key(request.domain, request.solution), None)
            await submit(self.repo, self.leases, self.js, self.subjects, follow)

    async def _execute(self, active: ActiveRun) -> None:
        run = active.run
        try:
            status = await run.execute()
            if not run.lost:
                log.info("task %s of %s ended %s", run.book.root, active.lease.key,
                         pb.TaskStatus.Name(status).removeprefix("TASK_STATUS_").lower(), extra={"task_id": run.book.root})
                await self._conclude(run.ctx.repo, active.lease.record.request, status, run.book.root_task.error)
                await self._end(active)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - the lease expires and another attempt resumes it
            log.exception("run of %s crashed; it will be resumed", active.lease.key)
            run.lose_lease()
        finally:
            if run.lost:
                if self.runs.get(active.lease.key) is active:
                    del self.runs[active.lease.key]
                self._collect_garbage()



async def serve(settings: DispatcherSettings) -> None:
    """Run a dispatcher until SIGTERM or SIGINT."""
    await serve_until_signalled(Dispatcher(settings), "dispatcher")
