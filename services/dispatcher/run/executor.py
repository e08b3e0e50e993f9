"""Layer C of the seed: one run drives every instance of one solution from
its current state to its target, in dependency order and in parallel, and
reports through the task tree.

A run is made of three parts, each in its own module: the scheduler decides
what may start now (scheduler.py), the operation path builds, sends and
judges each operation (operations.py), and the settler completes clusters
and rolls states up at the end (settling.py). This module prepares a run
from the solution's records and ties the parts together."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass

from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind

from dispatcher.run import operations
from dispatcher.controllers import ControllerPool
from dispatcher.run.opening import Opening
from dispatcher.run.operations import SIBLING_AWARE, Outcome, RetryPolicy, Verdict
from dispatcher.run.snapshot import Intent
from dispatcher.run.rolling import Rollouts
from dispatcher.run.scheduler import Scheduler
from dispatcher.settings import EngineSettings
from dispatcher.run.settling import Settler, attach_task, cluster_task
from dispatcher.run.state import ClusterKey, ClusterSlot, InstanceSlot, SolutionState
from dispatcher.run.tasks import TaskBook
from orchestration.model.lifecycle import FAILURE, INITIAL, TRANSITION_NAMES, next_state
from orchestration.model.planner import cluster_digest, instance_work, new_instance, new_uuid4
from orchestration.store.kvstore import persist
from orchestration.store.repository import Repository
from orchestration.v1 import controller_pb2 as cpb
from orchestration.v1 import model_pb2 as pb
from orchestration.v1.model_pb2 import Transition
from orchestration_sdk.runtime import telemetry
from orchestration_sdk.runtime.concurrency import gather_bounded
from orchestration_sdk.runtime.metrics import OPERATION_SECONDS, OPERATIONS, labelled
from orchestration_sdk.status_errors import Aborted, Fenced, NotFound

log = logging.getLogger("dispatcher.run")
_tracer = telemetry.tracer("dispatcher")
S = pb.TaskStatus
# Instances set going per turn of the event loop when a run starts: 1, 2, 4,
# ... up to START_SLICE, so that the first operations leave at once.
START_SLICE = 64


@dataclass
class _Ticket:
    """One operation's bookkeeping: whether its place under the concurrency
    limit was given back, and whether it was held back unsent (a pause)."""

    answered: bool = False
    held: bool = False


class LeaseExpired(Exception):
    """The run cannot be sure it still owns its solution (its lease was not
    renewed in time: this process stalled, or NATS was away)."""


@dataclass(frozen=True)
class RunContext:
    """What a run needs from the dispatcher process."""

    repo: Repository
    pool: ControllerPool
    settings: EngineSettings


class Run(Rollouts):
    """Converges one solution to its stored intent under one root task."""

    def __init__(self, ctx: RunContext, book: TaskBook, traceparent: str = "") -> None:
        self.ctx = ctx
        self.book = book
        self.domain = book.root_task.domain
        self.solution = book.root_task.solution
        self.state = SolutionState()
        self.lost = False
        # Whether the lease surely holds now (the renewal loop's knowledge; see the dispatcher service).
        self.holds_lease: Callable[[], bool] = lambda: True
        self._idle = asyncio.Event()
        # A run has at most its domain's quota in flight (and the domain's runs together, see DomainQuota).
        limits = [ctx.settings.concurrency, ctx.settings.domain_concurrency]
        self.concurrency = min(limit for limit in limits if limit > 0)
        self.scheduler = Scheduler(self.state, self.concurrency, asyncio.get_running_loop(),
                                   self._start, self._idle.set)
        self.settler = Settler(ctx.repo, book, self.state, self.scheduler, self.domain, self.solution)
        self.policy = RetryPolicy(ctx.settings)
        self._ops: set[asyncio.Task[None]] = set()
        book.give_up = lambda: self.lost
        book.root_context = telemetry.context_of(traceparent)
        self._delete_on_finish = False
        # Whether version changes follow their elements' rollout strategies (not a rollback's).
        self.rollouts = True
        # Whether its creates take over existing resources (a deploy --adopt).
        self.adopt = False
        # Whether its operations take the priority lane (a rollback's: see ControllerPool.execute).
        self.urgent = False
        self.on_failure: int = pb.FAILURE_POLICY_HOLD  # the solution's failure policy (from its header)
        # Instances the run adds to clusters (made as they are set going): cluster, how many, their path.
        self._additions: list[tuple[ClusterSlot, int, list[Transition]]] = []
        # What it stores around its first operation (see dispatcher.run.opening).
        self.opening = Opening(ctx.repo, book, self.state, self.domain, self.solution, lambda: self.lost,
                               self._complete_tree)
        # Instances made by the run so far, and the protobuf arena their records live in (see planner.new_instance).
        self._made = 0
        self._arena = pb.Cluster()

    # ---- preparation -----------------------------------------------------------

    async def prepare(self, intent: Intent) -> None:
        """Take the solution's records and build (or find) the task tree
        (stored as the run starts, see execute). Everything comes from the
        records: a cluster record carries its controller and parameters (see
        dispatcher.run.intent)."""
        repo = self.ctx.repo
        records = intent.records
        if records.header is None:
            raise NotFound(f"solution '{self.domain}/{self.solution}' has no records")
        header = records.header.value
        self.opening.deferred = intent.deferred
        self.opening.record_revision = intent.revision
        elements = {name: v.value for name, v in records.elements.items()}
        elements.update({name: element for name, (element, _) in intent.deferred.elements.items()})
        self._delete_on_finish = header.target == INITIAL and all(e.remove for e in elements.values())
        self.on_failure = header.on_failure
        clusters: dict[ClusterKey, tuple[pb.Cluster, int | None]] = {
            key: (record.cluster, record.revision) for key, record in records.clusters.items()}
        clusters.update(intent.deferred.clusters)
        for (element_name, _), (cluster_record, revision) in clusters.items():
            element = elements.get(element_name)
            self.state.add_cluster(ClusterSlot(
                element=element_name, record=cluster_record, revision=revision,
                component=element.component if element else "", controller=cluster_record.controller,
                parameters=dict(cluster_record.parameters),
            ))
        digests = {key: cluster_digest(cluster.record) for key, cluster in self.state.clusters.items()}
        for uuid, stored in records.instances.items():
            if (stored.element, stored.cluster) not in self.state.clusters:
                continue
            if stored.instance.remove and (stored.instance.state or INITIAL) == INITIAL:
                # Torn down already (or never made): only the record is left to go.
                if stored.revision is not None:
                    await repo.solutions.delete_instance(self.domain, self.solution, stored.element, stored.cluster, uuid, stored.revision)
                continue
            slot = InstanceSlot(stored.element, stored.cluster, stored.instance, stored.revision, unsaved=uuid in intent.unsaved)
            slot.path = instance_work(stored.instance, self.state.clusters[slot.key].record, digests[slot.key])
            self.state.add_instance(slot)
        for key, count in intent.additions.items():
            cluster = self.state.clusters.get(key)
            if cluster is not None and count > 0:
                # Counted now (every gate sees the cluster as it will be), made as they are set going.
                path = instance_work(new_instance(cluster.record, ""), cluster.record, digests[key])
                self.state.expect(cluster, count, busy=bool(path))
                self._additions.append((cluster, count, path))
        # Changed records with nothing to do are stored now; the others before their first operation.
        idle = [slot for slot in self.state.instances.values() if slot.unsaved and not slot.path]
        await gather_bounded(self._store(slot) for slot in idle)
        self.state.link()
        self._gate_rollouts(elements)
        await self.book.load()
        for slot in self.state.instances.values():
            if slot.path:
                attach_task(self.book, slot, self.state.clusters[slot.key])
        for cluster, _, _ in self._additions[:1]:
            cluster_task(self.book, cluster)  # the others' once the first operation has left
        self.book.hold_tree()  # stored once the first operation has left (see execute)

    def _complete_tree(self) -> None:
        """The tasks of the clusters the run adds to (and their elements'),
        made when the tree is stored (see dispatcher.run.opening); held, as
        the rest of the tree, until that store is done."""
        for cluster, _, _ in self._additions:
            cluster_task(self.book, cluster)
        self.book.hold_tree()

    # ---- execution -------------------------------------------------------------

    async def execute(self) -> int:
        """Run to the end; returns the root task's final status."""
        deadline = self.scheduler.deadline(self.ctx.settings.task_timeout)
        # New and changed instance records are stored alongside the first
        # operations instead of before all of them (each instance's own first
        # operation waits for its record); the rest follows the first
        # operation (see dispatcher.run.opening).
        try:
            # In growing slices, letting the first operations out while the rest are set up.
            size, in_slice, first, listed_at = 1, 0, True, START_SLICE
            self.scheduler.setting_going = True
            # Idle before it started means nothing (a pause lifted while the run
            # waited for an approver looks idle): only what follows counts.
            self._idle.clear()
            # Record writes started and not yet done: at most `run_ahead` at
            # once, so that a big run does not queue thousands of writes ahead
            # of everyone else's on the store (another solution's request
            # waits behind them all), nor ahead of its own operations.
            run_ahead = asyncio.Semaphore(max(START_SLICE, self.concurrency))
            for slot in self._setting_going():
                if slot.unsaved:
                    await run_ahead.acquire()
                    slot.saving = asyncio.ensure_future(self._store(slot))
                    slot.saving.add_done_callback(lambda _: run_ahead.release())
                if slot.path:
                    self.scheduler.schedule(slot)
                    if first and slot.inflight:
                        # The first operation leaves before anything else is
                        # written or set going: the only write it waits for
                        # is its record's.
                        first = False
                        if slot.saving is not None:
                            await asyncio.wait([slot.saving])
                        await self.opening.first_operation_out()
                in_slice += 1
                if in_slice == size:
                    await asyncio.sleep(0)
                    size, in_slice = min(2 * size, START_SLICE), 0
                    if self.opening.started and self._made >= listed_at:
                        # The instance tasks made so far get listed in the store
                        # (their first status waits for it), at doubling counts.
                        self.opening.list_made()
                        listed_at = 2 * self._made
            try:
                await self.opening.stored(listing=bool(self._additions))
            except Fenced as err:
                log.warning("stopping the run of %s/%s: %s", self.domain, self.solution, err,
                            extra={"task_id": self.book.root, "solution": self.solution})
                self.lose_lease()
            for cluster in list(self.state.clusters.values()):
                if cluster.busy == 0:
                    await self.settler.cluster_settled(cluster)
            self.scheduler.all_going()
            await self._idle.wait()
        except BaseException:
            self.lose_lease()  # the run stops here (whoever resumes the solution goes on): nothing more is written
            raise
        finally:
            deadline.cancel()
            # Records of instances that never got to their first operation.
            await asyncio.gather(*(s.saving for s in self.state.instances.values() if s.saving is not None), return_exceptions=True)
            await self.opening.close()
        if self.lost:
            self.book.end_spans()
            return S.TASK_STATUS_UNSPECIFIED
        await self._finish()
        return self.book.root_task.status

    def _setting_going(self) -> Iterator[InstanceSlot]:
        """Every instance of the run in order: first those with records, then
        those the run adds (see planner.Additions), each made as it comes."""
        yield from list(self.state.instances.values())
        for cluster, count, path in self._additions:
            for _ in range(count):
                if self.lost:
                    return  # the solution's next owner plans what is still missing
                slot = InstanceSlot(cluster.element, cluster.record.version,
                                    new_instance(cluster.record, new_uuid4(), self._arena), None, unsaved=True, path=list(path))
                self.state.add_instance(slot, counted=True)
                attach_task(self.book, slot, cluster)
                self._made += 1
                if cluster.task in self.scheduler.terminated:
                    self.scheduler.exclude([slot.task])  # its cluster's subtree was terminated before it was made
                yield slot

    def lose_lease(self) -> None:
        """Another dispatcher owns the solution now: stop at once, write nothing more."""
        self.lost = True
        self.scheduler.stop("lease lost", S.TASK_STATUS_UNSPECIFIED)
        for op in list(self._ops):
            op.cancel()

    async def terminate(self, task: str, actor: str = "operator") -> None:
        """Terminate a task's subtree: no new operations start there, and the
        solution is held (the monitor leaves it alone until the next request)."""
        if task in self.scheduler.terminated or task not in self.book.tasks:
            return
        reason = "terminated on request" if task == self.book.root else f"task {task} terminated on request"
        hold = pb.SolutionHold(kind=pb.HOLD_KIND_HELD, reason=reason, actor=actor or "operator", task=task,
                               since_unix_ms=int(time.time() * 1000))
        subtree = [task]
        for uuid in subtree:
            subtree.extend(self.book.tasks[uuid].subtasks)
        # Nothing more of the subtree starts from now on (nor leaves its domain's quota, see operations.send) ...
        self.scheduler.exclude(subtree)
        # ... and it is held before any task shows it ended: whoever reacts to the end finds the hold.
        await self.settler.hold(hold)
        # Leaves first, the terminated task last: whoever sees it ended (a
        # client waiting on the root) finds its whole subtree ended too.
        for uuid in reversed(subtree):
            await self.book.set_status(uuid, S.TASK_STATUS_TERMINATED, error="terminated on request")
        if task == self.book.root:
            self.scheduler.stop("terminated on request", S.TASK_STATUS_TERMINATED)
        else:
            self.scheduler.terminated_subtree()

    def _start(self, slot: InstanceSlot) -> None:
        ticket = _Ticket()
        op = asyncio.create_task(self._operate(slot, ticket))
        self._ops.add(op)
        op.add_done_callback(functools.partial(self._operated, slot, ticket))

    def _operated(self, slot: InstanceSlot, ticket: _Ticket, op: asyncio.Task[None]) -> None:
        """An operation's task is over, however it ended. Counted here, not in
        _operate: a task cancelled before it ever ran (lose_lease) runs none
        of its code, and its place must be given back all the same."""
        self._ops.discard(op)
        if not ticket.answered:
            self.scheduler.answered(slot)
        if ticket.held and not self.lost:
            # Queued until the pause ends, before its place is given back:
            # a run with nothing else to do is paused, not idle.
            self.scheduler.schedule(slot)
        self.scheduler.handled()

    async def _operate(self, slot: InstanceSlot, ticket: _Ticket) -> None:
        """Run one operation and record its outcome; never leaves the run hanging."""
        try:
            cluster = self.state.clusters[slot.key]
            transition = slot.path[0]
            succeeded = False
            sent = await self._send(slot, cluster, transition, ticket)
            if ticket.held:
                return
            outcome = self.policy.decide(sent, slot, cluster, transition)
            if outcome.verdict is Verdict.OK:
                assert outcome.result is not None
                await self._succeeded(slot, cluster, transition, outcome.result)
                succeeded = True
            elif outcome.verdict is Verdict.RETRY:
                assert outcome.delay is not None
                log.info("retrying %s of %s in %.2fs (attempt %d): %s", TRANSITION_NAMES[transition], slot.record.uuid,
                         outcome.delay, slot.attempt + 1, outcome.message,
                         extra={"instance": slot.record.uuid, "task_id": slot.task})
                self.scheduler.retry_later(slot, outcome.delay)
            else:
                await self._fail(slot, outcome.message, permanent=outcome.label == "permanent")
            await self._after(slot, succeeded)
        except asyncio.CancelledError:
            raise
        except (Fenced, LeaseExpired) as err:
            if not self.lost:
                log.warning("stopping the run of %s/%s: %s", self.domain, self.solution, err,
                            extra={"task_id": self.book.root, "solution": self.solution})
            self.lose_lease()
        except Exception:  # noqa: BLE001 - the store stayed away: stop, the run is resumed later
            log.exception("recording an operation of %s failed; stopping the run so that it resumes", slot.record.uuid)
            self.lose_lease()

    async def _send(self, slot: InstanceSlot, cluster: ClusterSlot, transition: Transition, ticket: _Ticket) -> Outcome:
        """Send the instance's next operation (once its record is stored) and
        wait for its outcome, within its domain's quota of operations at once
        (see DomainQuota: the others wait here, before any of their work).
        One whose run stopped, or whose task was terminated, while it waited
        is not sent."""
        async with self.ctx.pool.quota.held(self.domain, self.urgent):
            if self.scheduler.stopping or slot.task in self.scheduler.terminated:
                return Outcome(Verdict.RETRY, f"{TRANSITION_NAMES[transition]} not sent: the run stopped", 0.0, label="not sent")
            return await self._send_now(slot, cluster, transition, ticket)

    async def _send_now(self, slot: InstanceSlot, cluster: ClusterSlot, transition: Transition, ticket: _Ticket) -> Outcome:
        if slot.saving is not None:
            await slot.saving  # the intent of an instance is durable before its first operation
            slot.saving = None
        await self.opening.cluster_stored(slot.key)  # and so is its cluster's
        if self.scheduler.paused:
            # Paused while it waited (for its domain's quota, its records): it
            # goes back to the queue unsent. Once a pause is acknowledged, no
            # operation leaves this run before it ends.
            ticket.held = True
            return Outcome(Verdict.RETRY, f"{TRANSITION_NAMES[transition]} held back: the solution is paused", 0.0,
                           label="not sent")
        timeout = self.policy.timeout_of(cluster)
        operation, views = operations.build_operation(
            self.state, slot, cluster, transition, self.domain, self.solution, timeout, time.time())
        operation.adopt = self.adopt and transition == Transition.TRANSITION_CREATE
        name = TRANSITION_NAMES[transition]
        first = self.opening.sent_signal()
        started = time.perf_counter()
        label = "error"
        with self._operation_span(name, slot, operation.operation_id) as span:
            operation.traceparent = telemetry.traceparent(span)
            try:
                if not self.holds_lease():
                    # Checked before every operation: a process that stalled past its lease sends nothing.
                    raise LeaseExpired("its lease was not renewed in time; another dispatcher may own the solution")
                sending = operations.send(self.ctx.pool, cluster, operation, views, timeout,
                                          lambda: bool(self.scheduler.stopping), sent=first, urgent=self.urgent)
                # The task's first status change is stored while the operation runs.
                starting = self.book.progress(slot.task, transition, slot.record.sequence + 1, slot.record.state)
                if starting is None:
                    outcome = await sending
                else:
                    _, outcome = await asyncio.gather(starting, sending)
                label = outcome.label
                if outcome.verdict is not Verdict.OK:
                    telemetry.fail(span, outcome.message)
            finally:
                if first is not None and not first.done():
                    first.set_result(None)  # not sent after all (no controller, lease expired)
                labelled(OPERATIONS, name, label).inc()
                labelled(OPERATION_SECONDS, name).observe(time.perf_counter() - started)
                self.scheduler.answered(slot)
                ticket.answered = True
        return outcome

    def _operation_span(self, name: str, slot: InstanceSlot, operation_id: str) -> AbstractContextManager[Span]:
        """The current span while an operation runs: its own, a child of its
        instance task's (or that task's span when nothing is recorded)."""
        return telemetry.hot_span(
            _tracer, f"{name} {slot.record.uuid}", trace.set_span_in_context(self.book.span_of(slot.task)), SpanKind.CLIENT,
            {"orch.transition": name, "orch.operation_id": operation_id, "orch.instance": slot.record.uuid, "orch.task_id": slot.task},
        )

    async def _store(self, slot: InstanceSlot) -> None:
        """Write the instance record, waiting out NATS trouble. The write is
        fenced (see Repository.fenced): a refusal means this run was deposed,
        and it stops (Fenced) instead of overwriting anyone's work."""
        repo = self.ctx.repo

        await self.opening.cluster_stored(slot.key)  # no instance record before its cluster's

        async def write() -> None:
            try:
                slot.revision = await repo.solutions.put_instance(self.domain, self.solution, slot.element, slot.cluster,
                                                                  slot.record, slot.revision)
            except Aborted as err:  # unfenced (a server without fenced writes): someone wrote behind the owner's back
                raise Fenced(f"instance {slot.record.uuid} changed behind this run ({err.message}); stopping") from err
            slot.unsaved = False

        await persist(write, lambda: self.lost)

    async def _succeeded(self, slot: InstanceSlot, cluster: ClusterSlot, transition: Transition, result: cpb.OperationResult) -> None:
        def apply() -> None:
            record = slot.record
            record.state = next_state(record.state or INITIAL, transition)
            record.sequence += 1
            record.error = ""
            record.permanent = False
            if result.endpoint:
                record.endpoint = result.endpoint
            if result.configuration:
                record.configuration = result.configuration
            if transition in (Transition.TRANSITION_CONFIGURE, Transition.TRANSITION_RECONFIGURE):
                record.applied = cluster_digest(cluster.record)
            if transition in (Transition.TRANSITION_DESTROY, Transition.TRANSITION_RESET):
                record.endpoint = ""
                record.applied = ""
                record.members = ""
            slot.path.pop(0)
            slot.attempt = 1

        self.state.update(slot, apply)
        if result.message and slot.task:
            await self.book.note(slot.task, f"{TRANSITION_NAMES[transition]}: {result.message}")
        if transition in SIBLING_AWARE and not cluster.ignores_siblings:
            slot.record.members = self.state.told(slot.sent_siblings, slot)
        if slot.record.remove and slot.record.state == INITIAL and not slot.path:
            await persist(lambda: self.ctx.repo.solutions.delete_instance(
                self.domain, self.solution, slot.element, slot.cluster, slot.record.uuid, slot.revision), lambda: self.lost)
            self.state.remove_instance(slot)
        elif slot.path and not self.scheduler.stopping and not self.scheduler.paused:
            # More of its steps follow in this run: its record is written once
            # they are done, or when it fails, or the run pauses or stops (see
            # store_progress). A run that dies in between leaves the record as
            # it was: the next owner sends the same steps under the same
            # operation ids (from the stored sequence), which controllers
            # answer from their memory of them or, being idempotent, again.
            slot.unsaved = True
        else:
            await self._store(slot)

    async def _fail(self, slot: InstanceSlot, message: str, permanent: bool = False) -> None:
        """The instance goes to failure; its task and every parent fail; the run stops.
        `permanent`: the controller said so (the monitor will not compensate it)."""
        log.warning("instance %s failed: %s", slot.record.uuid, message, extra={"instance": slot.record.uuid, "task_id": slot.task})

        def apply() -> None:
            slot.record.state = FAILURE
            slot.record.error = message
            slot.record.permanent = permanent
            # The failed step is over: the next one (a reset, later) gets a new operation id
            # instead of the controller's remembered failure.
            slot.record.sequence += 1
            slot.path.clear()
            slot.failed = True

        self.state.update(slot, apply)
        await self._store(slot)
        task = slot.task
        while task:
            await self.book.set_status(task, S.TASK_STATUS_FAILED, error=message)
            task = self.book.tasks[task].parent
        self.scheduler.stop(f"stopped: {message}", S.TASK_STATUS_FAILED)

    async def _after(self, slot: InstanceSlot, succeeded: bool) -> None:
        """After an operation: first the next steps (so that no dependant's
        gate waits for the writes below), then the instance's task when its
        work is done, then the cluster's settling if it has no work left."""
        cluster = self.state.clusters[slot.key]
        self.scheduler.advance(slot)
        if succeeded and not slot.path:
            await self.settler.instance_done(slot, cluster)
        if cluster.busy == 0:
            await self.settler.cluster_settled(cluster)
        self.scheduler.check_idle()

    # ---- the end ---------------------------------------------------------------

    async def store_progress(self) -> None:
        """Write the records of instances whose steps so far are not stored
        (see _succeeded) and that have no operation in flight: when the run
        pauses, and before it ends."""
        await gather_bounded(self._store(slot) for slot in list(self.state.instances.values())
                             if slot.unsaved and slot.revision is not None and not slot.inflight)

    async def _finish(self) -> None:
        """Close every task, roll states up, remove what was torn down."""
        blocked = self.scheduler.never_runnable()
        if blocked and not self.scheduler.stopping:
            first = blocked[0]
            waits = ", ".join(f"{e}/{v}" for (e, v), _ in self.state.blockers(first))
            await self._fail(first, f"{TRANSITION_NAMES[first.path[0]]} can never run: it waits for {waits}")
        await self.store_progress()
        await self.settler.close_tasks()
        await self.settler.roll_up(self._delete_on_finish)
        reason, final = self.scheduler.stopping, self.scheduler.final_status
        root_status = final if reason or final != S.TASK_STATUS_COMPLETED else S.TASK_STATUS_COMPLETED
        await self.book.set_status(self.book.root, root_status, error=reason if root_status != S.TASK_STATUS_COMPLETED else "")
