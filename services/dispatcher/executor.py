"""Layer C of the seed: one run drives every instance of one solution from
its current state to its target, in dependency order and in parallel, and
reports through the task tree.

Gates (DESIGN.md section 3) are checked in O(1) with per-cluster counters; an
instance whose next transition is blocked waits on the blocking cluster and
is looked at again only when that cluster's instances change."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import time
from collections import deque
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass

from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind

from dispatcher.controllers import ControllerPool, LinkLost, NoController, Views
from dispatcher.records import Intent
from dispatcher.settings import EngineSettings
from dispatcher.state import ClusterSlot, InstanceSlot, SolutionState
from dispatcher.tasks import TaskBook
from orchestration import telemetry
from orchestration.errors import Aborted, NotFound
from orchestration.kvstore import gather_bounded, persist
from orchestration.lifecycle import ACTIVE, FAILURE, INITIAL, TRANSITION_NAMES, next_state, roll_up
from orchestration.metrics import OPERATIONS, OPERATION_SECONDS, labelled
from orchestration.planner import cluster_digest, cluster_parameters, instance_work
from orchestration.repository import Repository
from orchestration.v1 import controller_pb2 as cpb
from orchestration.v1 import model_pb2 as pb
from orchestration.v1.model_pb2 import Transition

log = logging.getLogger("dispatcher.run")
_tracer = telemetry.tracer("dispatcher")
S = pb.TaskStatus
MAX_LINK_LOSSES = 50
# Instances set going per turn of the event loop when a run starts: 1, 2, 4,
# ... up to START_SLICE, so that the first operations leave at once.
START_SLICE = 64
# Transitions that tell a controller the endpoints of the instance's siblings.
SIBLING_AWARE = (Transition.TRANSITION_CONFIGURE, Transition.TRANSITION_START, Transition.TRANSITION_RECONFIGURE)


@dataclass(frozen=True)
class RunContext:
    """What a run needs from the dispatcher process."""

    repo: Repository
    pool: ControllerPool
    settings: EngineSettings


class Run:
    """Converges one solution to its stored intent under one root task."""

    def __init__(self, ctx: RunContext, book: TaskBook, traceparent: str = "") -> None:
        self.ctx = ctx
        self.book = book
        self.domain = book.root_task.domain
        self.solution = book.root_task.solution
        self.state = SolutionState()
        self.ready: deque[str] = deque()
        self.inflight = 0  # operations sent and not answered (bounded by the concurrency limit)
        self.handling = 0  # operations whose outcome is still being recorded
        self.retrying = 0  # instances waiting out a retry back-off
        self.stopping = ""  # why no new operations start ("" while running)
        self.final_status: pb.TaskStatus = S.TASK_STATUS_COMPLETED
        self.terminated: set[str] = set()
        self.lost = False
        self._idle = asyncio.Event()
        self._ops: set[asyncio.Task[None]] = set()
        book.give_up = lambda: self.lost
        book.root_context = telemetry.context_of(traceparent)
        self._delete_on_finish = False

    # ---- preparation -----------------------------------------------------------

    async def prepare(self, intent: Intent) -> None:
        """Take the solution's records and build (or find) the task tree; persist it."""
        repo = self.ctx.repo
        records = intent.records
        if records.header is None:
            raise NotFound(f"solution '{self.domain}/{self.solution}' has no records")
        header = records.header.value
        self._delete_on_finish = header.target == INITIAL and all(e.value.remove for e in records.elements.values())
        catalog = intent.catalog
        if catalog is None:
            catalog = {(c.name, c.version): c for c in await repo.list_components(self.domain)}
        architecture = intent.architecture
        if architecture is None and header.architecture and header.version:
            with contextlib.suppress(NotFound):
                architecture = await repo.get_architecture(self.domain, header.architecture, header.version)
        designs = {}
        if architecture is not None:
            for element in architecture.elements:
                for cluster in element.clusters:
                    designs[(element.name, cluster.version)] = cluster_parameters(
                        self.domain, self.solution, architecture, element, cluster
                    )
        elements = {name: v.value for name, v in records.elements.items()}
        for (element_name, version), record in records.clusters.items():
            element = elements.get(element_name)
            component_name = element.component if element else ""
            component = catalog.get((component_name, version))
            self.state.add_cluster(ClusterSlot(
                element=element_name, record=record.cluster, revision=record.revision, component=component_name,
                controller=component.controller if component else "", parameters=designs.get((element_name, version), {}),
            ))
        digests = {key: cluster_digest(cluster.record) for key, cluster in self.state.clusters.items()}
        for uuid, stored in records.instances.items():
            if (stored.element, stored.cluster) not in self.state.clusters:
                continue
            if stored.instance.remove and (stored.instance.state or INITIAL) == INITIAL:
                # Torn down already (or never made): only the record is left to go.
                if stored.revision is not None:
                    await repo.delete_instance(self.domain, self.solution, stored.element, stored.cluster, uuid, stored.revision)
                continue
            slot = InstanceSlot(stored.element, stored.cluster, stored.instance, stored.revision, unsaved=uuid in intent.unsaved)
            slot.path = instance_work(stored.instance, self.state.clusters[slot.key].record, digests[slot.key])
            self.state.add_instance(slot)
        # Changed records with nothing to do are stored now; the others before their first operation.
        idle = [slot for slot in self.state.instances.values() if slot.unsaved and not slot.path]
        await gather_bounded(self._store(slot) for slot in idle)
        self.state.link()
        await self.book.load()
        for slot in self.state.instances.values():
            if slot.path:
                self._attach_task(slot, self.state.clusters[slot.key])
        await self.book.persist()

    # ---- execution -------------------------------------------------------------

    async def execute(self) -> int:
        """Run to the end; returns the root task's final status."""
        root = self.book.root
        # The root's status is stored while the first operations go out.
        starting = None if self.book.finished(root) else asyncio.ensure_future(self.book.set_status(root, S.TASK_STATUS_EXECUTING))
        deadline = asyncio.get_running_loop().call_later(self.ctx.settings.task_timeout, self._timeout)
        # New and changed instance records are stored alongside the first
        # operations instead of before all of them (each instance's own first
        # operation waits for its record).
        try:
            # In growing slices, letting the first operations out while the rest are set up.
            size, in_slice = 1, 0
            for slot in list(self.state.instances.values()):
                if slot.unsaved:
                    slot.saving = asyncio.ensure_future(self._store(slot))
                if slot.path:
                    self._schedule(slot)
                in_slice += 1
                if in_slice == size:
                    await asyncio.sleep(0)
                    size, in_slice = min(2 * size, START_SLICE), 0
            for cluster in list(self.state.clusters.values()):
                if cluster.busy == 0:
                    await self._cluster_settled(cluster)
            self._check_idle()
            await self._idle.wait()
        finally:
            deadline.cancel()
            # Records of instances that never got to their first operation.
            await asyncio.gather(*(s.saving for s in self.state.instances.values() if s.saving is not None), return_exceptions=True)
            if starting is not None:
                await starting
        if self.lost:
            self.book.end_spans()
            return S.TASK_STATUS_UNSPECIFIED
        await self._finish()
        return self.book.root_task.status

    def _timeout(self) -> None:
        self._stop(f"task tree exceeded its deadline of {self.ctx.settings.task_timeout:.0f}s", S.TASK_STATUS_TIMEOUT)

    def _stop(self, reason: str, status: pb.TaskStatus) -> None:
        if not self.stopping:
            self.stopping = reason
            self.final_status = status
            self.ready.clear()
        self._check_idle()

    def lose_lease(self) -> None:
        """Another dispatcher owns the solution now: stop at once, write nothing more."""
        self.lost = True
        self._stop("lease lost", S.TASK_STATUS_UNSPECIFIED)
        for op in list(self._ops):
            op.cancel()

    async def terminate(self, task: str) -> None:
        """Terminate a task's subtree: no new operations start there."""
        if task in self.terminated or task not in self.book.tasks:
            return
        subtree = [task]
        for uuid in subtree:
            subtree.extend(self.book.tasks[uuid].subtasks)
        self.terminated.update(subtree)
        # Leaves first, the terminated task last: whoever sees it ended (a
        # client waiting on the root) finds its whole subtree ended too.
        for uuid in reversed(subtree):
            await self.book.set_status(uuid, S.TASK_STATUS_TERMINATED, error="terminated on request")
        if task == self.book.root:
            self._stop("terminated on request", S.TASK_STATUS_TERMINATED)
        else:
            self.final_status = S.TASK_STATUS_TERMINATED
            self.ready = deque(u for u in self.ready if self.state.instances[u].task not in self.terminated)
            self._check_idle()

    def _schedule(self, slot: InstanceSlot) -> None:
        """Start the instance's next transition if nothing blocks it."""
        if self.stopping or slot.inflight or slot.waiting or not slot.path or slot.failed or slot.task in self.terminated:
            return
        blockers = self.state.blockers(slot)
        if blockers:
            key, kind = blockers[0]
            self.state.clusters[key].waiters[kind].add(slot.record.uuid)
            return
        if self.inflight >= self.ctx.settings.concurrency:
            self.ready.append(slot.record.uuid)
            return
        slot.inflight = True  # with work on its path the instance was busy already: no counter changes
        self.inflight += 1
        self.handling += 1
        op = asyncio.create_task(self._operate(slot))
        self._ops.add(op)
        op.add_done_callback(self._ops.discard)

    def _mutate(self, slot: InstanceSlot, change: Callable[[], object]) -> None:
        """Apply a change to an instance (see SolutionState.update)."""
        self.state.update(slot, change)

    def _operation(self, slot: InstanceSlot, cluster: ClusterSlot, transition: Transition) -> tuple[cpb.Operation, Views]:
        """The operation to send, and the member lists it refers to."""
        record = slot.record
        views: Views = {}
        for rel in cluster.record.relationships:
            provider = self.state.clusters.get((rel.element, rel.version))
            views[f"{rel.element}/{rel.version}"] = self.state.endpoints(provider) if provider else ()
        operation = cpb.Operation()
        operation.CopyFrom(self._template(cluster))
        if transition in SIBLING_AWARE and not cluster.ignores_siblings:
            operation.members = f"{slot.element}/{slot.cluster}"
            views[operation.members] = self.state.endpoints(cluster)
            slot.sent_siblings = self.state.others(cluster, slot)
        operation.operation_id = f"{record.uuid}-{record.sequence + 1}-{TRANSITION_NAMES[transition]}"
        operation.transition = transition
        operation.instance.uuid = record.uuid
        operation.endpoint = record.endpoint
        operation.attempt = slot.attempt
        operation.deadline_unix_ms = int((time.time() + self._timeout_of(cluster)) * 1000)
        return operation, views

    def _template(self, cluster: ClusterSlot) -> cpb.Operation:
        """What every operation of a cluster has in common (made once, copied per operation)."""
        if cluster.template is None:
            cluster.template = cpb.Operation(
                instance=cpb.InstanceReference(
                    domain=self.domain, solution=self.solution, element=cluster.element, cluster=cluster.record.version,
                    component=cluster.component, component_version=cluster.record.version,
                ),
                configuration=cluster.record.configuration,
                parameters=cluster.parameters,
                providers=[cpb.Provider(
                    relationship=rel.name, type=rel.type, element=rel.element, cluster=rel.version,
                    configuration=rel.configuration, members=f"{rel.element}/{rel.version}",
                ) for rel in cluster.record.relationships],
            )
        return cluster.template

    def _timeout_of(self, cluster: ClusterSlot) -> float:
        try:
            return float(cluster.parameters.get("orch_operation_timeout", self.ctx.settings.operation_timeout))
        except ValueError:
            return self.ctx.settings.operation_timeout

    def _attempts_of(self, cluster: ClusterSlot) -> int:
        try:
            return int(cluster.parameters.get("orch_max_attempts", self.ctx.settings.max_attempts))
        except ValueError:
            return self.ctx.settings.max_attempts

    async def _operate(self, slot: InstanceSlot) -> None:
        """Run one operation and record its outcome; never leaves the run hanging."""
        try:
            await self._run_operation(slot)
            await self._after(slot)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - the store stayed away: stop, the run is resumed later
            log.exception("recording an operation of %s failed; stopping the run so that it resumes", slot.record.uuid)
            self.lose_lease()
        finally:
            self.handling -= 1
            self._check_idle()

    async def _run_operation(self, slot: InstanceSlot) -> None:
        if slot.saving is not None:
            await slot.saving  # the intent of an instance is durable before its first operation
            slot.saving = None
        cluster = self.state.clusters[slot.key]
        transition = slot.path[0]
        operation, views = self._operation(slot, cluster, transition)
        name = TRANSITION_NAMES[transition]
        started = time.perf_counter()
        outcome = "ok"
        with self._operation_span(name, slot, operation.operation_id) as span:
            operation.traceparent = telemetry.traceparent(span)
            try:
                # The task's first status change is stored while the operation runs.
                starting = self.book.progress(slot.task, transition, slot.record.sequence + 1, slot.record.state)
                if starting is None:
                    result = await self._send(cluster, operation, views)
                else:
                    _, result = await asyncio.gather(starting, self._send(cluster, operation, views))
                if result.outcome != cpb.OUTCOME_OK:
                    outcome = "permanent" if result.outcome == cpb.OUTCOME_PERMANENT else "retryable"
                    telemetry.fail(span, result.message)
            except asyncio.TimeoutError:
                outcome = "timeout"
                message = f"{name} timed out after {self._timeout_of(cluster):g}s"
                telemetry.fail(span, message)
                await self._retry(slot, cluster, transition, message, None)
                return
            except NoController as err:
                outcome = "no controller"
                telemetry.fail(span, str(err))
                await self._fail(slot, f"component '{cluster.component}' version '{slot.cluster}': {err}")
                return
            except LinkLost as err:
                outcome = "link lost"
                telemetry.fail(span, str(err))
                await self._fail(slot, f"{name}: {err}")
                return
            finally:
                labelled(OPERATIONS, name, outcome).inc()
                labelled(OPERATION_SECONDS, name).observe(time.perf_counter() - started)
                self.inflight -= 1
                if slot.path:
                    slot.inflight = False  # still busy: no counter changes
                elif slot.record.uuid in self.state.instances:
                    self._mutate(slot, lambda: setattr(slot, "inflight", False))
        if result.outcome == cpb.OUTCOME_OK:
            await self._succeeded(slot, cluster, transition, result)
        elif result.outcome == cpb.OUTCOME_PERMANENT:
            await self._fail(slot, f"{name} failed: {result.message}")
        else:
            delay = result.retry_after_ms / 1000 if result.retry_after_ms else None
            await self._retry(slot, cluster, transition, result.message or "retryable failure", delay)

    def _operation_span(self, name: str, slot: InstanceSlot, operation_id: str) -> AbstractContextManager[Span]:
        """The current span while an operation runs: its own, a child of its
        instance task's (or that task's span when nothing is recorded)."""
        return telemetry.hot_span(
            _tracer, f"{name} {slot.record.uuid}", trace.set_span_in_context(self.book.span_of(slot.task)), SpanKind.CLIENT,
            {"orch.transition": name, "orch.operation_id": operation_id, "orch.instance": slot.record.uuid, "orch.task_id": slot.task},
        )

    async def _send(self, cluster: ClusterSlot, operation: cpb.Operation, views: Views) -> cpb.OperationResult:
        """Send to a replica; a replica that goes away mid-operation is replaced
        (same operation id: the outcome was unknown)."""
        losses = 0
        while True:
            try:
                timeout = self._timeout_of(cluster)
                return await self.ctx.pool.execute(cluster.controller or "?", operation, timeout + 1.0, views, budget=timeout)
            except LinkLost:
                losses += 1
                if losses > MAX_LINK_LOSSES or self.stopping:
                    raise
                await asyncio.sleep(0.2)

    async def _store(self, slot: InstanceSlot) -> None:
        """Write the instance record, waiting out NATS trouble. A lost
        compare-and-set means someone wrote behind the owner's back (the run
        holds the lease): re-read the revision and write again."""
        repo = self.ctx.repo

        async def write() -> None:
            try:
                slot.revision = await repo.put_instance(self.domain, self.solution, slot.element, slot.cluster, slot.record, slot.revision)
                slot.unsaved = False
            except Aborted:
                current = await repo.get_instance(self.domain, self.solution, slot.element, slot.cluster, slot.record.uuid)
                slot.revision = current.revision
                slot.revision = await repo.put_instance(self.domain, self.solution, slot.element, slot.cluster, slot.record, slot.revision)
                slot.unsaved = False

        await persist(write, lambda: self.lost)

    async def _succeeded(self, slot: InstanceSlot, cluster: ClusterSlot, transition: Transition, result: cpb.OperationResult) -> None:
        def apply() -> None:
            record = slot.record
            record.state = next_state(record.state or INITIAL, transition)
            record.sequence += 1
            record.error = ""
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

        self._mutate(slot, apply)
        if transition in SIBLING_AWARE and not cluster.ignores_siblings:
            slot.record.members = self.state.told(slot.sent_siblings, slot)
        if slot.record.remove and slot.record.state == INITIAL and not slot.path:
            await persist(lambda: self.ctx.repo.delete_instance(
                self.domain, self.solution, slot.element, slot.cluster, slot.record.uuid, slot.revision), lambda: self.lost)
            self.state.remove_instance(slot)
        else:
            await self._store(slot)

    async def _retry(self, slot: InstanceSlot, cluster: ClusterSlot, transition: Transition, message: str, delay: float | None) -> None:
        attempts = self._attempts_of(cluster)
        if slot.attempt >= attempts:
            await self._fail(slot, f"{TRANSITION_NAMES[transition]} failed after {slot.attempt} attempts: {message}")
            return
        settings = self.ctx.settings
        if delay is None:
            delay = random.uniform(0, min(settings.backoff_max, settings.backoff_base * 2 ** (slot.attempt - 1)))
        def wait() -> None:
            slot.waiting = True
            slot.attempt += 1

        self._mutate(slot, wait)
        self.retrying += 1
        log.info("retrying %s of %s in %.2fs (attempt %d): %s", TRANSITION_NAMES[transition], slot.record.uuid, delay,
                 slot.attempt, message, extra={"instance": slot.record.uuid, "task_id": slot.task})

        def again() -> None:
            self.retrying -= 1
            if slot.record.uuid in self.state.instances:
                self._mutate(slot, lambda: setattr(slot, "waiting", False))
                self._schedule(slot)
            self._check_idle()

        asyncio.get_running_loop().call_later(delay, again)

    async def _fail(self, slot: InstanceSlot, message: str) -> None:
        """The instance goes to failure; its task and every parent fail; the run stops."""
        log.warning("instance %s failed: %s", slot.record.uuid, message, extra={"instance": slot.record.uuid, "task_id": slot.task})

        def apply() -> None:
            slot.record.state = FAILURE
            slot.record.error = message
            # The failed step is over: the next one (a reset, later) gets a new operation id
            # instead of the controller's remembered failure.
            slot.record.sequence += 1
            slot.path.clear()
            slot.failed = True

        self._mutate(slot, apply)
        await self._store(slot)
        task = slot.task
        while task:
            await self.book.set_status(task, S.TASK_STATUS_FAILED, error=message)
            task = self.book.tasks[task].parent
        self._stop(f"stopped: {message}", S.TASK_STATUS_FAILED)

    async def _after(self, slot: InstanceSlot) -> None:
        """After an operation: next step of this instance, wake whoever waited."""
        cluster = self.state.clusters[slot.key]
        if slot.record.uuid in self.state.instances:
            self._schedule(slot)
        waiters: set[str] = set()
        for kind in self.state.released(cluster):
            if cluster.waiters[kind]:
                waiters |= cluster.waiters[kind]
                cluster.waiters[kind] = set()
        for uuid in waiters:
            waiter = self.state.instances.get(uuid)
            if waiter is not None:
                self._schedule(waiter)
        while self.ready and self.inflight < self.ctx.settings.concurrency and not self.stopping:
            queued = self.state.instances.get(self.ready.popleft())
            if queued is not None:
                self._schedule(queued)
        if cluster.busy == 0:
            await self._cluster_settled(cluster)
        self._check_idle()

    async def _cluster_settled(self, cluster: ClusterSlot) -> None:
        """A cluster with no work left: reconfigure siblings whose view is stale, or complete it."""
        # Two operations of a cluster may end together; only one settles it.
        if self.stopping or cluster.busy or cluster.settling:
            return
        cluster.settling = True
        try:
            await self._settle(cluster)
        finally:
            cluster.settling = False

    async def _settle(self, cluster: ClusterSlot) -> None:
        changed, cluster.membership_changed = cluster.membership_changed, False
        if changed and not cluster.ignores_siblings:
            current = self.state.membership(cluster)
            stale = [
                self.state.instances[u] for u in cluster.members
                if self.state.instances[u].record.state == ACTIVE and not self.state.instances[u].record.remove
                and self.state.instances[u].record.members != current
            ]
            if stale:
                for slot in stale:
                    if not slot.task:
                        self._attach_task(slot, cluster)
                    self._mutate(slot, functools.partial(slot.path.append, Transition.TRANSITION_RECONFIGURE))
                await self.book.persist()
                for slot in stale:
                    self._schedule(slot)
                return
        if cluster.task and not self.book.finished(cluster.task):
            await gather_bounded(self.book.set_status(uuid, S.TASK_STATUS_COMPLETED)
                                 for uuid in self.book.tasks[cluster.task].subtasks if uuid not in self.terminated)
            await self.book.set_status(cluster.task, S.TASK_STATUS_COMPLETED)
            element_task = self.book.tasks[cluster.task].parent
            if all(self.book.finished(u) for u in self.book.tasks[element_task].subtasks):
                await self.book.set_status(element_task, S.TASK_STATUS_COMPLETED)

    def _attach_task(self, slot: InstanceSlot, cluster: ClusterSlot) -> None:
        """Give an instance its task (and its cluster and element theirs), made once per tree."""
        if not cluster.task:
            element_task = self.book.ensure(self.book.root, pb.TASK_TYPE_ELEMENT, "element", slot.element, element=slot.element)
            cluster.task = self.book.ensure(element_task.uuid, pb.TASK_TYPE_CLUSTER, "cluster", slot.element, slot.cluster,
                                            element=slot.element, cluster=slot.cluster).uuid
        slot.task = self.book.ensure(cluster.task, pb.TASK_TYPE_INSTANCE, "instance", slot.record.uuid,
                                     lazy=True, element=slot.element, cluster=slot.cluster, instance=slot.record.uuid,
                                     state=slot.record.target).uuid

    def _check_idle(self) -> None:
        if self.inflight > 0 or self.handling > 0 or self.retrying > 0:
            return
        if not self.stopping and self.ready:
            return
        self._idle.set()

    # ---- the end ---------------------------------------------------------------

    async def _finish(self) -> None:
        """Close every task, roll states up, remove what was torn down."""
        blocked = [s for s in self.state.instances.values() if s.path and not s.failed and s.task not in self.terminated]
        if blocked and not self.stopping:
            first = blocked[0]
            waits = ", ".join(f"{e}/{v}" for (e, v), _ in self.state.blockers(first))
            await self._fail(first, f"{TRANSITION_NAMES[first.path[0]]} can never run: it waits for {waits}")
        reason = self.stopping
        for uuid, task in list(self.book.tasks.items()):
            if uuid == self.book.root or self.book.finished(uuid):
                continue
            status = self.final_status if self.final_status in (S.TASK_STATUS_TIMEOUT, S.TASK_STATUS_TERMINATED) else S.TASK_STATUS_TERMINATED
            await self.book.set_status(uuid, status, error=reason or "not run")
        await self._roll_up()
        root_status = self.final_status if self.stopping or self.final_status != S.TASK_STATUS_COMPLETED else S.TASK_STATUS_COMPLETED
        await self.book.set_status(self.book.root, root_status, error=reason if root_status != S.TASK_STATUS_COMPLETED else "")

    async def _roll_up(self) -> None:
        """Write cluster, element and solution states; delete what was removed."""
        repo = self.ctx.repo
        by_element: dict[str, list[pb.State]] = {}
        for key, cluster in list(self.state.clusters.items()):
            states = [self.state.instances[u].record.state or INITIAL for u in cluster.members]
            rolled = roll_up(states or [INITIAL], cluster.record.target)  # no members left: initial
            if cluster.record.remove and not cluster.members:
                with contextlib.suppress(NotFound):
                    await repo.delete_cluster(self.domain, self.solution, cluster.element, cluster.record.version)
                continue
            endpoints = self.state.endpoints(cluster)
            if cluster.record.state != rolled or cluster.record.endpoint != ",".join(endpoints):
                cluster.record.state = rolled
                cluster.record.endpoint = ",".join(endpoints)
                cluster.revision = await repo.put_cluster(self.domain, self.solution, cluster.element, cluster.record, cluster.revision)
            by_element.setdefault(cluster.element, []).append(rolled)
        for element in await repo.list_elements(self.domain, self.solution):
            found = by_element.get(element.value.name)
            if found is None:
                if element.value.remove:
                    await repo.delete_element(self.domain, self.solution, element.value.name, element.revision)
                continue
            rolled = roll_up(found, element.value.target)
            if element.value.state != rolled:
                element.value.state = rolled
                await repo.put_element(self.domain, self.solution, element.value, element.revision)
        header = await repo.get_solution_header(self.domain, self.solution)
        if self._delete_on_finish and not self.state.instances and self.final_status == S.TASK_STATUS_COMPLETED:
            await repo.remove_solution(self.domain, self.solution)
            return
        rolled = roll_up([s for states in by_element.values() for s in states] or [INITIAL], header.value.target)
        if header.value.state != rolled:
            header.value.state = rolled
            await repo.put_solution_header(self.domain, header.value, header.revision)
