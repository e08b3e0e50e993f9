"""The information model in NATS JetStream KV (DESIGN.md sections 2 and 4):
domains, catalog, architectures, controllers, solutions (one record per
solution, element, cluster and instance), tasks and events.

Every write that can race is a compare-and-set on the KV revision; reads of
many records use one bulk read per key filter, not one round trip per key.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TypeVar

from google.protobuf.message import Message
from nats.js import JetStreamContext, api

from orchestration.model.diff import WRITE_ORDER, Change, diff_model
from orchestration.model.errors import Aborted, AlreadyExists, FailedPrecondition, NotFound
from orchestration.model.names import controller_name
from orchestration.runtime.concurrency import gather_bounded
from orchestration.store import keys as rk
from orchestration.store.kvstore import Bucket, Versioned, ensure_stream, open_bucket, replicas_from_environment
from orchestration.store.solution_records import ClusterRecord, InstanceRecord, SolutionRecords
from orchestration.store.subjects import Subjects
from orchestration.store.task_records import TaskRecords
from orchestration.v1.model_pb2 import Architecture, Component, Controller, Domain, Event, Model, Solution, Task

__all__ = ["ApplyResult", "ClusterRecord", "InstanceRecord", "Repository", "Versioned"]

M = TypeVar("M", bound=Message)

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
    events: Bucket
    controllers: Bucket
    leases: Bucket


class Repository(SolutionRecords, TaskRecords):
    """The information model in NATS KV; `open()` before use."""

    def __init__(self, js: JetStreamContext, subjects: Subjects, replicas: int | None = None) -> None:
        self._js = js
        self._subjects = subjects
        # Replicas of what open() creates (things that exist keep theirs).
        self._replicas = replicas if replicas is not None else replicas_from_environment()
        self._opened: _Buckets | None = None

    @property
    def _b(self) -> _Buckets:
        if self._opened is None:
            raise RuntimeError("Repository.open() must be awaited before use")
        return self._opened

    @property
    def _solutions(self) -> Bucket:
        return self._b.solutions

    @property
    def _task_bucket(self) -> Bucket:
        return self._b.tasks

    @property
    def _event_bucket(self) -> Bucket:
        return self._b.events

    @property
    def leases_bucket(self) -> Bucket:
        """Solution leases and termination requests (see ``orchestration.store.leases``)."""
        return self._b.leases

    @property
    def controllers_bucket(self) -> Bucket:
        """Controller replica registrations (written by the dispatchers)."""
        return self._b.controllers

    async def open(self) -> None:
        """Create or bind every bucket and both streams (safe to run concurrently with others)."""
        s = self._subjects
        names = (s.model_bucket, s.solutions_bucket, s.tasks_bucket, s.events_bucket, s.controllers_bucket, s.leases_bucket)
        buckets = await asyncio.gather(*(open_bucket(self._js, n, self._replicas) for n in names))
        requests = api.StreamConfig(
            name=s.requests_stream,
            subjects=[s.internal_requests_all],
            retention=api.RetentionPolicy.WORK_QUEUE,
            storage=api.StorageType.FILE,
            num_replicas=self._replicas,
        )
        events = api.StreamConfig(
            name=s.events_stream,
            subjects=[s.events_all],
            retention=api.RetentionPolicy.LIMITS,
            storage=api.StorageType.FILE,
            duplicate_window=EVENTS_DUPLICATE_WINDOW,
            num_replicas=self._replicas,
        )
        await asyncio.gather(ensure_stream(self._js, requests), ensure_stream(self._js, events))
        self._opened = _Buckets(*buckets)

    # ---- domains -------------------------------------------------------------

    async def list_domains(self) -> list[str]:
        """Names of all domains, sorted."""
        return sorted(rk.decode_key(e.key)[1] for e in await self._b.model.scan(rk.DOMAINS_FILTER))

    async def create_domain(self, name: str) -> bool:
        """Create the domain; False when it already existed."""
        try:
            await self._b.model.write(rk.domain_key(name), Domain(name=name).SerializeToString(), None, f"domain {name!r}")
        except Aborted:
            return False
        return True

    async def require_domain(self, name: str) -> None:
        """Raise NotFound unless the domain exists."""
        if await self._b.model.get(rk.domain_key(name)) is None:
            raise NotFound(f"domain {name!r} not found")

    async def remove_domain(self, name: str) -> None:
        """Delete the domain and every record of it in every bucket."""
        await self.require_domain(name)
        b = self._b
        await asyncio.gather(
            b.model.purge(*(rk.domain_model_filters(name, kind) for kind in ("component", "architecture", "controller"))),
            *(bucket.purge(*rk.domain_filters(name)) for bucket in (b.solutions, b.tasks, b.events, b.leases)),
        )
        # The domain record goes last: an interrupted removal can be run again.
        await b.model.purge(rk.domain_key(name))

    async def get_domain(self, name: str) -> Domain:
        """The whole domain: catalog, architectures, full solutions, tasks, events, controllers."""
        await self.require_domain(name)
        return await self._read_domain(name)

    async def _read_domain(self, name: str) -> Domain:
        components, architectures, solutions, tasks, events, controllers = await asyncio.gather(
            self._components(name),
            self._architectures(name),
            self._solution_trees(*rk.domain_filters(name)),
            self._tasks(name),
            self._events(name),
            self._controllers(name),
        )
        return Domain(
            name=name,
            components=components,
            architectures=architectures,
            solutions=[solutions[s] for s in sorted(solutions)],
            tasks=tasks,
            events=events,
            controllers=controllers,
        )

    # ---- catalog and architectures (immutable, versioned) --------------------

    async def list_components(self, domain: str) -> list[Component]:
        """Components of the domain, sorted by (name, version)."""
        await self.require_domain(domain)
        return await self._components(domain)

    async def get_component(self, domain: str, name: str, version: str) -> Component:
        """One component (NotFound)."""
        return await self._get_definition(Component, rk.component_key(domain, name, version), domain, _component(name, version))

    async def store_component(self, domain: str, component: Component) -> bool:
        """Store a new component; False if stored identically; AlreadyExists if stored with other content."""
        key = rk.component_key(domain, component.name, component.version)
        return await self._store_definition(domain, key, component, _component(component.name, component.version))

    async def remove_component(self, domain: str, name: str, version: str) -> None:
        """Remove a component no architecture or other component refers to."""
        what = _component(name, version)
        await self.get_component(domain, name, version)
        architectures, components = await asyncio.gather(self._architectures(domain), self._components(domain))
        users = [
            f"architecture {a.name!r} version {a.version!r}"
            for a in architectures
            if any(e.component == name and any(c.version == version for c in e.clusters) for e in a.elements)
        ] + [
            f"component {c.name!r} version {c.version!r}"
            for c in components
            if (c.name, c.version) != (name, version)
            and any(d.component == name and d.version == version for d in c.dependencies)
        ]
        if users:
            raise FailedPrecondition(f"{rk.in_domain(what, domain)} is used by {', '.join(users)}; remove those first")
        await self._b.model.delete(rk.component_key(domain, name, version), None, rk.in_domain(what, domain))

    async def list_architectures(self, domain: str) -> list[Architecture]:
        """Architectures of the domain, sorted by (name, version)."""
        await self.require_domain(domain)
        return await self._architectures(domain)

    async def get_architecture(self, domain: str, name: str, version: str) -> Architecture:
        """One architecture (NotFound)."""
        key = rk.architecture_key(domain, name, version)
        return await self._get_definition(Architecture, key, domain, _architecture(name, version))

    async def store_architecture(self, domain: str, architecture: Architecture) -> bool:
        """Store a new architecture; False if stored identically; AlreadyExists if stored with other content."""
        key = rk.architecture_key(domain, architecture.name, architecture.version)
        return await self._store_definition(domain, key, architecture, _architecture(architecture.name, architecture.version))

    async def remove_architecture(self, domain: str, name: str, version: str) -> None:
        """Remove an architecture no solution was deployed from."""
        what = _architecture(name, version)
        await self.get_architecture(domain, name, version)
        users = [
            f"solution {s.name!r}"
            for s in await self._solution_headers(domain)
            if (s.architecture or s.name) == name and s.version == version
        ]
        if users:
            raise FailedPrecondition(f"{rk.in_domain(what, domain)} is in use by {', '.join(users)}; remove those first")
        await self._b.model.delete(rk.architecture_key(domain, name, version), None, rk.in_domain(what, domain))

    async def _components(self, domain: str) -> list[Component]:
        entries = await self._b.model.scan(rk.domain_model_filters(domain, "component"))
        return sorted((Component.FromString(e.value) for e in entries), key=lambda c: (c.name, c.version))

    async def _architectures(self, domain: str) -> list[Architecture]:
        entries = await self._b.model.scan(rk.domain_model_filters(domain, "architecture"))
        return sorted((Architecture.FromString(e.value) for e in entries), key=lambda a: (a.name, a.version))

    async def _get_definition(self, cls: type[M], key: str, domain: str, what: str) -> M:
        entry = await self._b.model.get(key)
        if entry is None:
            await self.require_domain(domain)  # the better message when the domain is missing
            raise NotFound(rk.not_found(what, domain))
        return cls.FromString(entry.value)

    async def _store_definition(self, domain: str, key: str, value: Message, what: str) -> bool:
        await self.require_domain(domain)
        data = value.SerializeToString()
        described = rk.in_domain(what, domain)
        for _ in range(3):
            try:
                await self._b.model.write(key, data, None, described)
                return True
            except Aborted:
                # The server decided the race: compare with what won.
                existing = await self._b.model.get(key)
                if existing is None:
                    continue  # removed meanwhile: try to create again
                if type(value).FromString(existing.value) == value:
                    return False
                raise AlreadyExists(
                    f"{described} already exists with different content; definitions are immutable: "
                    "store the change under a new version"
                ) from None
        raise Aborted(f"{described} keeps changing concurrently; retry")

    # ---- controllers (domain records) ----------------------------------------

    async def store_controller(self, domain: str, controller: Controller) -> bool:
        """Insert or replace a controller record; False when stored identically."""
        await self.require_domain(domain)
        key = rk.controller_key(domain, controller_name(controller))
        existing = await self._b.model.get(key)
        if existing is not None and Controller.FromString(existing.value) == controller:
            return False
        await self._b.model.put(key, controller.SerializeToString())
        return True

    async def list_controllers(self, domain: str) -> list[Controller]:
        """Controllers of the domain, sorted by (name, version)."""
        await self.require_domain(domain)
        return await self._controllers(domain)

    async def _controllers(self, domain: str) -> list[Controller]:
        entries = await self._b.model.scan(rk.domain_model_filters(domain, "controller"))
        return sorted((Controller.FromString(e.value) for e in entries), key=lambda c: (c.name, c.version))

    # ---- the whole model -------------------------------------------------------

    async def reset_model(self) -> None:
        """Delete everything of this prefix: every bucket's keys and both streams' messages."""
        b = self._b
        s = self._subjects
        buckets = (b.model, b.solutions, b.tasks, b.events, b.controllers, b.leases)
        await asyncio.gather(
            *(bucket.purge_all() for bucket in buckets),
            self._js.purge_stream(s.requests_stream),
            self._js.purge_stream(s.events_stream),
        )

    async def retrieve_model(self) -> Model:
        """Every domain, in full."""
        names = await self.list_domains()
        return Model(domains=await asyncio.gather(*(self._read_domain(n) for n in names)))

    async def apply_model(self, model: Model) -> ApplyResult:
        """Store a validated model: all or nothing (AlreadyExists names every conflicting definition)."""
        existing = set(await self.list_domains())
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
        # Kind by kind, so that what a record refers to is stored before it.
        for kind in WRITE_ORDER:
            await gather_bounded(self._write_change(c) for c in diff.changes if c.kind == kind)
        return ApplyResult(stored=[c.label for c in diff.changes], unchanged=diff.unchanged)

    async def _write_change(self, change: Change) -> None:
        """Write one record planned by diff_model (create-only, except controllers)."""
        d, value = change.domain, change.value
        if isinstance(value, Domain):
            await self.create_domain(d)
        elif isinstance(value, Controller):
            await self._b.model.put(rk.controller_key(d, controller_name(value)), value.SerializeToString())
        elif isinstance(value, Component):
            await self.store_component(d, value)
        elif isinstance(value, Architecture):
            await self.store_architecture(d, value)
        elif isinstance(value, Solution):
            await self.store_solution(d, value)
        elif isinstance(value, Task):
            await self._b.tasks.write(rk.task_key(d, value.uuid), value.SerializeToString(), None, change.label)
        elif isinstance(value, Event):
            # Keyed by the domain it is listed under, whatever its own domain field says.
            key = rk.event_key(d, value.task, value.uuid)
            await self._b.events.write(key, value.SerializeToString(), None, change.label)
        else:
            raise TypeError(f"cannot write {type(value).__name__}")


def _component(name: str, version: str) -> str:
    return f"component {name!r} version {version!r}"


def _architecture(name: str, version: str) -> str:
    return f"architecture {name!r} version {version!r}"

