"""The information model in NATS JetStream KV (DESIGN.md sections 2 and 4),
as one entry point composed of typed stores: model records (domains,
catalog, architectures, controllers), solution records (one per solution,
element, cluster and instance), task records (tasks, and their events
kept in the events stream), leases and controller registrations.

Every write that can race is a compare-and-set on the KV revision; reads of
many records use one bulk read per key filter, not one round trip per key.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid as uuidlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from google.protobuf.message import Message
from nats.js import JetStreamContext, api

from orchestration.model.diff import WRITE_ORDER, Change, diff_model
from orchestration.store import keys as rk
from orchestration.store.events import EventLog, EventRecorder, bare
from orchestration.store.kvstore import Bucket, Fence, Versioned, apply_cap, apply_limits
from orchestration.store.leases import Leases
from orchestration.store.leases import Registrations
from orchestration.store.model_store import ModelStore
from orchestration.store.pauses import Decisions, Pauses
from orchestration.store.pauses import bus_payload as pauses_bus_payload
from orchestration.store.revisions import RevisionStore
from orchestration.store.revisions import bus_payload as revisions_bus_payload
from orchestration.store.solution_store import ClusterRecord, InstanceRecord, SolutionStore
from orchestration.store.streams import CAPS, Retention, ensure_stream, open_bucket, replicas_from_environment
from orchestration.store.subjects import Subjects, kv_stream
from orchestration.store.task_store import TaskStore
from orchestration.store.wire import connection_of
from orchestration.v1.model_pb2 import (Architecture, Component, Controller, Domain, Event, Model, Revision, Solution,
                                        SolutionPause, Task)
from orchestration.v1.records_pb2 import Grave
from orchestration_sdk.runtime.concurrency import gather_bounded
from orchestration_sdk.status_errors import AlreadyExists

__all__ = ["ApplyResult", "ClusterRecord", "InstanceRecord", "Repository", "Versioned"]

M = TypeVar("M", bound=Message)
log = logging.getLogger("orchestration.store")

# Duplicate window of the events stream: a re-published event (same Nats-Msg-Id) is dropped.
EVENTS_DUPLICATE_WINDOW = 120.0
# At most this many conflicts are named in apply_model's error.
_SHOWN_CONFLICTS = 10


@dataclass
class ApplyResult:
    """What apply_model stored and what was already stored identically (readable labels)."""

    stored: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Buckets:
    model: Bucket
    solutions: Bucket
    tasks: Bucket
    controllers: Bucket
    leases: Bucket


@dataclass(frozen=True)
class _Stores:
    buckets: _Buckets
    model: ModelStore
    solutions: SolutionStore
    tasks: TaskStore
    events: EventLog
    leases: Leases
    registrations: Registrations
    revisions: RevisionStore
    pauses: Pauses
    decisions: Decisions


class Repository:
    """The information model in NATS KV, composed of typed stores; `open()` before use.

    - ``model``: domains, components, architectures, controller records;
    - ``solutions``: solution trees and their records;
    - ``tasks``: tasks and events;
    - ``leases``: who runs each solution, and termination requests;
    - ``registrations``: controller replicas' registrations;
    - ``revisions``: the numbered changes of each solution;
    - ``pauses``: solutions an operator paused.

    What spans them (a domain's removal or contents, the whole model) is here."""

    def __init__(self, js: JetStreamContext, subjects: Subjects, replicas: int | None = None,
                 retention: Retention | None = None) -> None:
        self._js = js
        self._subjects = subjects
        self._retention = retention if retention is not None else Retention.from_environment()
        # Replicas of what open() creates (things that exist keep theirs).
        self._replicas = replicas if replicas is not None else replicas_from_environment()
        self._opened: _Stores | None = None
        self._fencing: bool | None = None  # the server honours fenced writes (checked once)

    @property
    def _s(self) -> _Stores:
        if self._opened is None:
            raise RuntimeError("Repository.open() must be awaited before use")
        return self._opened

    @property
    def model(self) -> ModelStore:
        return self._s.model

    @property
    def solutions(self) -> SolutionStore:
        return self._s.solutions

    @property
    def tasks(self) -> TaskStore:
        return self._s.tasks

    @property
    def revisions(self) -> RevisionStore:
        return self._s.revisions

    @property
    def pauses(self) -> Pauses:
        return self._s.pauses

    @property
    def decisions(self) -> Decisions:
        return self._s.decisions

    @property
    def leases(self) -> Leases:
        return self._s.leases

    @property
    def replicas(self) -> int:
        """JetStream replicas of the buckets and streams this repository opens."""
        return self._replicas

    @property
    def registrations(self) -> Registrations:
        return self._s.registrations

    async def open(self) -> None:
        """Create or bind every bucket and both streams (safe to run concurrently with others)."""
        s = self._subjects
        limits = self._retention
        buckets = await asyncio.gather(*(
            open_bucket(self._js, n, self._replicas, limits.cap(role), CAPS[role][0])
            for n, role in zip(s.repository_buckets, ("model", "solutions", "tasks", "controllers", "leases"))))
        requests = api.StreamConfig(
            name=s.requests_stream,
            subjects=[s.internal_requests_all],
            retention=api.RetentionPolicy.WORK_QUEUE,
            storage=api.StorageType.FILE,
            num_replicas=self._replicas,
            # Full, it refuses a request (the gateway says so) rather than drop a queued one.
            max_bytes=limits.cap("requests"),
            discard=api.DiscardPolicy.NEW,
        )
        events = api.StreamConfig(
            name=s.events_stream,
            subjects=[s.events_all],
            retention=api.RetentionPolicy.LIMITS,
            storage=api.StorageType.FILE,
            duplicate_window=min(EVENTS_DUPLICATE_WINDOW, self._retention.history_seconds),
            num_replicas=self._replicas,
            max_age=self._retention.history_seconds,
            max_bytes=self._retention.events_bytes,
        )
        await asyncio.gather(ensure_stream(self._js, requests), ensure_stream(self._js, events))
        # History ages out (streams made by an earlier version get the limits too).
        history = self._retention.history_seconds
        await asyncio.gather(
            apply_limits(self._js, s.events_stream, history, self._retention.events_bytes),
            apply_limits(self._js, kv_stream(s.tasks_bucket), history),
            apply_cap(self._js, s.requests_stream, limits.cap("requests"), refuse_new=True),
        )
        b = _Buckets(*buckets)
        model = ModelStore(b.model, lambda domain: self._s.solutions.headers(domain))
        solutions = SolutionStore(b.solutions, model.require_domain)
        event_log = EventLog(self._js, s, replicated=self._replicas > 1)
        self._opened = _Stores(b, model, solutions, TaskStore(b.tasks, event_log, model.require_domain), event_log,
                               Leases(b.leases), Registrations(b.controllers),
                               RevisionStore(b.solutions, self._retention.revisions_kept, self._announce_revision),
                               Pauses(b.leases, self._announce_pause), Decisions(b.leases))

    async def _announce_revision(self, revision: Revision) -> None:
        """A revision recorded or ended, on the bus (core NATS: followed live;
        what a client missed it reads with the `history` request)."""
        await connection_of(self._js).publish(self._subjects.revision(revision.domain, revision.solution),
                                              revisions_bus_payload(revision))

    async def _announce_pause(self, domain: str, solution: str, pause: SolutionPause | None) -> None:
        """A pause or its end, among the solution's status messages."""
        await connection_of(self._js).publish(self._subjects.status(domain, solution),
                                              pauses_bus_payload(domain, solution, pause, time.time_ns()))

    async def fencing_works(self) -> bool:
        """Whether the server honours writes conditional on another key
        (found out once, with a probe: a dispatcher asks at start, so that
        its first request does not wait for it)."""
        if self._fencing is None:
            probe = f"{rk.FENCE_PREFIX}.{rk.FENCE_PROBE}.{uuidlib.uuid4().hex}"
            self._fencing = await self._s.buckets.solutions.fencing_works(probe)
            if not self._fencing:
                log.warning("this NATS server does not honour writes conditional on another key "
                            "(Nats-Expected-Last-Subject-Sequence-Subject): runs are not fenced, only "
                            "checked against their lease's renewal before each operation")
        return self._fencing

    async def fenced(self, domain: str, solution: str, owner: str) -> Repository:
        """Raise the solution's fence for a new owner (who just took its lease)
        and return the repository that owner writes through: every write and
        delete of the solution's records and tasks is then conditional on the
        fence as it raised it, so that an earlier owner that wakes up late
        (stalled, partitioned) cannot land a single write (see Bucket.fenced)."""
        s = self._s
        if not await self.fencing_works():
            return self
        key = rk.fence_key(domain, solution)
        solutions, tasks = await asyncio.gather(s.buckets.solutions.put(key, owner.encode()),
                                                s.buckets.tasks.put(key, owner.encode()))
        view = Repository(self._js, self._subjects, self._replicas, self._retention)
        view._opened = _Stores(
            s.buckets, s.model,
            SolutionStore(s.buckets.solutions.fenced(Fence(key, solutions)), s.model.require_domain),
            TaskStore(s.buckets.tasks.fenced(Fence(key, tasks)), s.events, s.model.require_domain),
            s.events, s.leases, s.registrations,
            RevisionStore(s.buckets.solutions.fenced(Fence(key, solutions)), self._retention.revisions_kept,
                          self._announce_revision),
            s.pauses, s.decisions,
        )
        return view

    # ---- what spans the stores ----------------------------------------------

    async def remove_domain(self, name: str, actor: str = "") -> None:
        """Delete the domain and every record of it in every bucket.

        What the engine acts on must not come back should nats-server undo a
        purge after an unclean stop (see Bucket.purge): the solutions and
        tasks buckets get a grave of the domain first, which rules dead every
        record of it written before (and is all that is left of it there);
        the few keys of the model and leases buckets and the solutions'
        fences are deleted with delete markers, which are writes and hold."""
        await self.model.require_domain(name)
        b = self._s.buckets
        # First what lets a run write: its lease and its fences, deleted with
        # markers (a deposed owner's fenced write then fails; a purge of them
        # could be undone and make its fence valid again).
        lease_keys = [e.key for e in await b.leases.scan(*rk.domain_filters(name))]
        solution_fences, task_fences = await asyncio.gather(b.solutions.scan(rk.fence_filter(name)),
                                                            b.tasks.scan(rk.fence_filter(name)))
        await asyncio.gather(
            gather_bounded(b.leases.delete(key, None, key) for key in lease_keys),
            gather_bounded(b.solutions.delete(e.key, None, e.key) for e in solution_fences),
            gather_bounded(b.tasks.delete(e.key, None, e.key) for e in task_fences),
        )
        grave = Grave(actor=actor, removed_unix_ms=int(time.time() * 1000)).SerializeToString()
        in_solutions, in_tasks = await asyncio.gather(b.solutions.put(rk.grave_key(name), grave),
                                                      b.tasks.put(rk.grave_key(name), grave))
        model_keys = [e.key for e in await b.model.scan(
            *(rk.domain_model_filters(name, kind) for kind in ("component", "architecture", "controller")))]
        await asyncio.gather(
            gather_bounded(b.model.delete(key, None, key) for key in model_keys),
            b.solutions.purge(*rk.domain_filters(name), rk.grave_filters(name)[1], rk.revision_filter(name),
                              before=in_solutions),
            b.tasks.purge(*rk.domain_filters(name), before=in_tasks),
            self._s.events.remove_domain(name),
        )
        # The domain record goes last: an interrupted removal can be run again.
        await b.model.delete(rk.domain_key(name), None, f"domain {name!r}")

    async def get_domain(self, name: str) -> Domain:
        """The whole domain: catalog, architectures, full solutions, tasks, events, controllers."""
        await self.model.require_domain(name)
        return await self._read_domain(name)

    async def _read_domain(self, name: str) -> Domain:
        components, architectures, solutions, tasks, events, controllers = await asyncio.gather(
            self.model.all_components(name),
            self.model.all_architectures(name),
            self.solutions.trees(name),
            self.tasks.all_tasks(name, derive=True),
            self.tasks.all_events(name),
            self.model.all_controllers(name),
        )
        return Domain(
            name=name,
            components=components,
            architectures=architectures,
            solutions=[solutions[s] for s in sorted(solutions)],
            tasks=tasks,
            events=[bare(e) for e in events],  # the model holds what an event is about in its task
            controllers=controllers,
        )

    # ---- the whole model -------------------------------------------------------

    async def reset_model(self) -> None:
        """Delete everything of this prefix: every bucket's keys and both streams' messages."""
        b = self._s.buckets
        s = self._subjects
        buckets = (b.model, b.solutions, b.tasks, b.controllers, b.leases)
        await asyncio.gather(
            *(bucket.purge_all() for bucket in buckets),
            self._js.purge_stream(s.requests_stream),
            self._js.purge_stream(s.events_stream),
        )

    async def retrieve_model(self) -> Model:
        """Every domain, in full."""
        names = await self.model.list_domains()
        return Model(domains=await asyncio.gather(*(self._read_domain(n) for n in names)))

    async def apply_model(self, model: Model) -> ApplyResult:
        """Store a validated model: all or nothing (AlreadyExists names every conflicting definition)."""
        for domain in model.domains:
            for event in domain.events:
                # As it reads back: an event is stored under its domain (validation
                # allows only that one, or none).
                event.domain = domain.name
        existing = set(await self.model.list_domains())
        wanted = [d.name for d in model.domains if d.name in existing]
        stored = dict(zip(wanted, await asyncio.gather(*(self._read_domain(n) for n in wanted))))
        diff = diff_model(model, stored)
        if diff.conflicts:
            shown = ", ".join(diff.conflicts[:_SHOWN_CONFLICTS])
            more = len(diff.conflicts) - _SHOWN_CONFLICTS
            raise AlreadyExists(
                f"nothing stored: {len(diff.conflicts)} record(s) already exist with different content "
                f"(components and architectures are immutable: use new versions): {shown}"
                + (f" and {more} more" if more > 0 else "")
            )
        # An event goes on the bus with its task's fields (validation found its task in the model).
        tasks = {(d.name, t.uuid): t for d in model.domains for t in d.tasks}
        recorder = EventRecorder(self._js, self._subjects)

        async def record(domain: str, event: Event) -> None:
            task = Task()
            task.CopyFrom(tasks.get((domain, event.task), Task(uuid=event.task)))
            task.domain = domain
            await recorder.record(event, task, retried=False)

        # Kind by kind, so that what a record refers to is stored before it.
        for kind in WRITE_ORDER:
            await gather_bounded(self._write_change(c, record) for c in diff.changes if c.kind == kind)
        return ApplyResult(stored=[c.label for c in diff.changes], unchanged=diff.unchanged)

    async def _write_change(self, change: Change, record_event: Callable[[str, Event], Awaitable[None]]) -> None:
        """Write one record planned by diff_model (create-only, except controllers)."""
        d, value = change.domain, change.value
        if isinstance(value, Domain):
            await self.model.create_domain(d)
        elif isinstance(value, Controller):
            await self.model.put_controller(d, value)
        elif isinstance(value, Component):
            await self.model.store_component(d, value)
        elif isinstance(value, Architecture):
            await self.model.store_architecture(d, value)
        elif isinstance(value, Solution):
            await self.solutions.store_solution(d, value)
        elif isinstance(value, Task):
            await self._s.buckets.tasks.write(rk.task_key(d, value.uuid), value.SerializeToString(), None, change.label)
        elif isinstance(value, Event):
            await record_event(d, value)
        else:
            raise TypeError(f"cannot write {type(value).__name__}")
