"""The model records in the model bucket: domains, the catalog of components,
architectures and controller records. Components and architectures are
immutable and versioned; one of the typed stores ``Repository`` is composed of."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from google.protobuf.message import Message

from orchestration.model.names import controller_name
from orchestration.store import keys as rk
from orchestration.store.kvstore import Bucket
from orchestration.v1.model_pb2 import Architecture, Component, Controller, Domain, Solution
from orchestration_sdk.status_errors import Aborted, AlreadyExists, FailedPrecondition, NotFound

D = TypeVar("D", Component, Architecture)


class ModelStore:
    """Domains, components, architectures and controllers."""

    def __init__(self, bucket: Bucket, solution_headers: Callable[[str], Awaitable[list[Solution]]]) -> None:
        self._bucket = bucket
        # The solutions of a domain (an architecture in use is not removed).
        self._solution_headers = solution_headers

    # ---- domains -------------------------------------------------------------

    async def list_domains(self) -> list[str]:
        """Names of all domains, sorted."""
        return sorted(rk.decode_key(e.key)[1] for e in await self._bucket.scan(rk.DOMAINS_FILTER))

    async def create_domain(self, name: str) -> bool:
        """Create the domain; False when it already existed."""
        try:
            await self._bucket.write(rk.domain_key(name), Domain(name=name).SerializeToString(), None, f"domain {name!r}")
        except Aborted:
            return False
        return True

    async def require_domain(self, name: str) -> None:
        """Raise NotFound unless the domain exists."""
        if await self._bucket.get(rk.domain_key(name)) is None:
            raise NotFound(f"domain {name!r} not found; `orch domain list` lists the domains")

    # ---- catalog and architectures (immutable, versioned) --------------------

    async def list_components(self, domain: str) -> list[Component]:
        """Components of the domain, sorted by (name, version)."""
        await self.require_domain(domain)
        return await self.all_components(domain)

    async def get_component(self, domain: str, name: str, version: str) -> Component:
        """One component (NotFound)."""
        return await self._get_definition(Component, rk.component_key(domain, name, version), domain,
                                          _component(name, version), "component", name, self.all_components)

    async def store_component(self, domain: str, component: Component) -> bool:
        """Store a new component; False if stored identically; AlreadyExists if stored with other content."""
        key = rk.component_key(domain, component.name, component.version)
        return await self._store_definition(domain, key, component, _component(component.name, component.version))

    async def remove_component(self, domain: str, name: str, version: str) -> None:
        """Remove a component no architecture or other component refers to."""
        what = _component(name, version)
        await self.get_component(domain, name, version)
        architectures, components = await asyncio.gather(self.all_architectures(domain), self.all_components(domain))
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
        await self._bucket.delete(rk.component_key(domain, name, version), None, rk.in_domain(what, domain))

    async def list_architectures(self, domain: str) -> list[Architecture]:
        """Architectures of the domain, sorted by (name, version)."""
        await self.require_domain(domain)
        return await self.all_architectures(domain)

    async def get_architecture(self, domain: str, name: str, version: str) -> Architecture:
        """One architecture (NotFound)."""
        return await self._get_definition(Architecture, rk.architecture_key(domain, name, version), domain,
                                          _architecture(name, version), "architecture", name, self.all_architectures)

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
        await self._bucket.delete(rk.architecture_key(domain, name, version), None, rk.in_domain(what, domain))

    async def all_components(self, domain: str) -> list[Component]:
        """Components of the domain, sorted (no domain check)."""
        entries = await self._bucket.scan(rk.domain_model_filters(domain, "component"))
        return sorted((Component.FromString(e.value) for e in entries), key=lambda c: (c.name, c.version))

    async def all_architectures(self, domain: str) -> list[Architecture]:
        """Architectures of the domain, sorted (no domain check)."""
        entries = await self._bucket.scan(rk.domain_model_filters(domain, "architecture"))
        return sorted((Architecture.FromString(e.value) for e in entries), key=lambda a: (a.name, a.version))

    async def _get_definition(self, cls: type[D], key: str, domain: str, what: str, kind: str, name: str,
                              listed: Callable[[str], Awaitable[list[D]]]) -> D:
        """One component or architecture; NotFound names the domain when it is
        missing, else the versions of that name there are, and the command
        that lists them."""
        entry = await self._bucket.get(key)
        if entry is None:
            await self.require_domain(domain)  # the better message when the domain is missing
            versions = [d.version for d in await listed(domain) if d.name == name]
            there = f"its versions: {', '.join(versions)}" if versions else f"there is no {kind} {name!r} in any version"
            raise NotFound(f"{rk.not_found(what, domain)}; {there} (`orch {kind} list {domain}`)")
        return cls.FromString(entry.value)

    async def _store_definition(self, domain: str, key: str, value: Message, what: str) -> bool:
        await self.require_domain(domain)
        data = value.SerializeToString()
        described = rk.in_domain(what, domain)
        for _ in range(3):
            try:
                await self._bucket.write(key, data, None, described)
                return True
            except Aborted:
                # The server decided the race: compare with what won.
                existing = await self._bucket.get(key)
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
        existing = await self._bucket.get(key)
        if existing is not None and Controller.FromString(existing.value) == controller:
            return False
        await self._bucket.put(key, controller.SerializeToString())
        return True

    async def put_controller(self, domain: str, controller: Controller) -> None:
        """Insert or replace a controller record (no domain check)."""
        await self._bucket.put(rk.controller_key(domain, controller_name(controller)), controller.SerializeToString())

    async def list_controllers(self, domain: str) -> list[Controller]:
        """Controllers of the domain, sorted by (name, version)."""
        await self.require_domain(domain)
        return await self.all_controllers(domain)

    async def all_controllers(self, domain: str) -> list[Controller]:
        """Controller records of the domain, sorted (no domain check)."""
        entries = await self._bucket.scan(rk.domain_model_filters(domain, "controller"))
        return sorted((Controller.FromString(e.value) for e in entries), key=lambda c: (c.name, c.version))



def _component(name: str, version: str) -> str:
    return f"component {name!r} version {version!r}"


def _architecture(name: str, version: str) -> str:
    return f"architecture {name!r} version {version!r}"
