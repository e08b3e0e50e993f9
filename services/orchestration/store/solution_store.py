"""Solutions in the solutions bucket: whole trees, and versioned access to
single records (solution, element, cluster, instance) for the task engine.

One of the typed stores ``Repository`` is composed of; one instance update
writes one small value, and every write that can race is a compare-and-set
on the record's revision.

Removal writes a grave first (``keys.grave_key``: durable, like any write)
and then purges the removed records up to it. nats-server may bring purged
messages back after an unclean stop; every read here therefore leaves out a
record written before the grave of its solution or domain, so that what was
removed stays removed whatever the server does on recovery.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from google.protobuf.message import Message

from orchestration.model.diff import canonical_solution
from orchestration.store import keys as rk
from orchestration.store.kvstore import Bucket, Entry, Position, Versioned
from orchestration.v1.model_pb2 import Cluster, Element, Instance, Solution
from orchestration.v1.records_pb2 import Grave
from orchestration_sdk.runtime.concurrency import gather_bounded
from orchestration_sdk.status_errors import Aborted, AlreadyExists, NotFound

M = TypeVar("M", bound=Message)


@dataclass(frozen=True)
class ClusterRecord:
    """A cluster record (without instances) with its element and revision."""

    element: str
    cluster: Cluster
    revision: int


@dataclass(frozen=True)
class InstanceRecord:
    """An instance record with the element and cluster it belongs to, and its revision."""

    element: str
    cluster: str
    instance: Instance
    revision: int | None  # None: not stored yet


@dataclass(frozen=True)
class Graves:
    """The graves that rule over records of one domain: a record is alive
    only when written after the grave of its domain and of its solution."""

    domain: int = 0
    solutions: dict[str, int] = field(default_factory=dict)

    def alive(self, solution: str, revision: int) -> bool:
        return revision > self.domain and revision > self.solutions.get(solution, 0)

    def living(self, entries: list[Entry]) -> list[Entry]:
        """The entries (of solutions-bucket records) no grave rules dead."""
        if not self.domain and not self.solutions:
            return entries
        return [e for e in entries if self.alive(rk.decode_key(e.key)[1], e.revision)]


class SolutionStore:
    """Solution trees and records in the solutions bucket."""

    def __init__(self, bucket: Bucket, require_domain: Callable[[str], Awaitable[None]]) -> None:
        self._solutions = bucket
        # Raises NotFound unless the domain exists (the model records know).
        self.require_domain = require_domain

    # ---- solutions: whole trees ------------------------------------------------

    async def list_solutions(self, domain: str) -> list[Solution]:
        """Solution headers (without elements) of the domain, sorted by name."""
        await self.require_domain(domain)
        return await self.headers(domain)

    async def get_solution(self, domain: str, name: str) -> Solution:
        """The full solution tree, in canonical order (NotFound)."""
        trees = await self.trees(domain, name)
        if name not in trees:
            await self.require_domain(domain)
            raise NotFound(rk.not_found(rk.describe_solution(name), domain))
        return trees[name]

    async def store_solution(self, domain: str, solution: Solution) -> bool:
        """Store a new full solution; False if stored identically; AlreadyExists if stored with other content."""
        await self.require_domain(domain)
        header, *children = rk.split_solution(domain, solution)
        try:
            # Creating the header decides a race between two stores of the same name.
            await self._create(domain, solution.name, header.key, header.value.SerializeToString(), header.what)
        except Aborted:
            if await self.get_solution(domain, solution.name) == canonical_solution(solution):
                return False
            raise AlreadyExists(
                f"{header.what} already exists with different content; change it with the solution operations "
                "or remove it first"
            ) from None
        await gather_bounded(self._create(domain, solution.name, r.key, r.value.SerializeToString(), r.what)
                             for r in children)
        return True

    async def _create(self, domain: str, solution: str, key: str, value: bytes, what: str) -> int:
        """Create a record; over a dead one (written before a grave that rules
        over it, brought back by the server), as if it were not there."""
        try:
            return await self._solutions.write(key, value, None, what)
        except Aborted:
            entry, graves = await asyncio.gather(self._solutions.get(key), self._graves(domain, solution))
            if entry is None or graves.alive(solution, entry.revision):
                raise
            return await self._solutions.write(key, value, entry.revision, what)

    async def remove_solution(self, domain: str, name: str, grave: Grave | None = None) -> None:
        """Remove the solution: write its grave (who removed it, when), then
        purge every record of it written before (NotFound when it has none).
        An interrupted removal is finished by the next one."""
        header, subtree = rk.solution_filters(domain, name)
        entry, graves = await asyncio.gather(self._solutions.get(header), self._graves(domain, name))
        # Records without a header (an interrupted store) are removed too. (One
        # filter per read: a literal subject among several costs nats-server dearly.)
        living = (entry is not None and graves.alive(name, entry.revision)) or \
            await self._scan(domain, name, subtree, graves=graves)
        if not living:
            buried = graves.solutions
            if name in buried:  # removed: what an interrupted removal left is purged
                await self._solutions.purge(subtree, header, rk.fence_key(domain, name), before=buried[name])
            await self.require_domain(domain)
            raise NotFound(rk.not_found(rk.describe_solution(name), domain))
        record = grave if grave is not None else Grave()
        if not record.removed_unix_ms:
            record.removed_unix_ms = int(time.time() * 1000)
        revision = await self._solutions.put(rk.grave_key(domain, name), record.SerializeToString())
        await self._solutions.purge(subtree, header, rk.fence_key(domain, name), before=revision)

    async def removal(self, domain: str, name: str) -> Grave | None:
        """Who removed the solution and when, unless it lives (again) or never did."""
        entry, graves, header = await asyncio.gather(
            self._solutions.get(rk.grave_key(domain, name)), self._graves(domain, name),
            self._solutions.get(rk.solution_key(domain, name)))
        if entry is None or (header is not None and graves.alive(name, header.revision)):
            return None
        return Grave.FromString(entry.value)

    async def headers(self, domain: str) -> list[Solution]:
        """Solution headers of the domain, sorted by name (no domain check)."""
        entries = await self._scan(domain, "", rk.solutions_filter(domain))
        return sorted((Solution.FromString(e.value) for e in entries), key=lambda s: s.name)

    async def changed_since(self, after: Position, at_most: int) -> tuple[set[tuple[str, str]] | None, Position]:
        """The (domain, solution) of every solution with a record written or
        deleted since `after` (None when more than `at_most` writes happened:
        any may have changed), and the position to pass next time. A
        solution's records are purged only with its header (removing it or
        its domain), so a purge shows as a missing header."""
        written = await self._solutions.written_since(after, at_most)
        if written.keys is None:
            return None, written.position
        found = (rk.solution_of_key(k) for k in written.keys)
        return {s for s in found if s is not None}, written.position

    async def trees(self, domain: str, solution: str = "") -> dict[str, Solution]:
        """Full solution trees of the domain (or of one solution of it), by name (no domain check)."""
        filters = rk.solution_filters(domain, solution) if solution else rk.domain_filters(domain)
        return rk.assemble_solutions((e.key, e.value) for e in await self._scan(domain, solution, *filters))

    async def _scan(self, domain: str, solution: str, *filters: str, graves: Graves | None = None) -> list[Entry]:
        """The live records under the filters (of one solution, or any of
        the domain's when `solution` is empty), read with their graves at once.
        (Not as more filters of the same read: a consumer with literal
        subjects among its filters cost nats-server ten times the CPU of a
        whole deploy.)"""
        if graves is not None:
            return graves.living(await self._solutions.scan(*filters))
        entries, read = await asyncio.gather(self._solutions.scan(*filters), self._graves(domain, solution))
        return read.living(entries)

    async def _graves(self, domain: str, solution: str) -> Graves:
        """The graves of the domain and of one solution of it (of all its
        solutions when `solution` is empty)."""
        of_domain_key, of_solutions = rk.grave_filters(domain, solution)
        if solution:
            of_domain, of_solution = await asyncio.gather(self._solutions.get(of_domain_key), self._solutions.get(of_solutions))
            return Graves(of_domain.revision if of_domain else 0, {solution: of_solution.revision} if of_solution else {})
        of_domain, buried = await asyncio.gather(self._solutions.get(of_domain_key), self._solutions.scan(of_solutions))
        return Graves(of_domain.revision if of_domain else 0, {rk.decode_key(e.key)[2]: e.revision for e in buried})

    # ---- solutions: versioned records for the task engine ----------------------

    async def get_solution_header(self, domain: str, solution: str) -> Versioned[Solution]:
        """The solution record (without elements) and its revision (NotFound)."""
        return await self._get_record(Solution, rk.solution_key(domain, solution), domain, rk.describe_solution(solution))

    async def put_solution_header(self, domain: str, solution: Solution, revision: int | None) -> int:
        """Create (revision None) or compare-and-set the solution record; elements are not stored here."""
        what = rk.in_domain(rk.describe_solution(solution.name), domain)
        key = rk.solution_key(domain, solution.name)
        return await self._solutions.write(key, rk.solution_header(solution).SerializeToString(), revision, what)

    async def get_element(self, domain: str, solution: str, element: str) -> Versioned[Element]:
        """An element record (without clusters) and its revision (NotFound)."""
        key = rk.element_key(domain, solution, element)
        return await self._get_record(Element, key, domain, rk.describe_element(solution, element))

    async def put_element(self, domain: str, solution: str, element: Element, revision: int | None) -> int:
        """Create or compare-and-set an element record; clusters are not stored here."""
        what = rk.in_domain(rk.describe_element(solution, element.name), domain)
        key = rk.element_key(domain, solution, element.name)
        return await self._solutions.write(key, rk.bare_element(element).SerializeToString(), revision, what)

    async def list_elements(self, domain: str, solution: str, graves: Graves | None = None) -> list[Versioned[Element]]:
        """Element records (without clusters) of a solution, sorted by name."""
        entries = await self._scan(domain, solution, rk.level_filter(domain, solution, 1), graves=graves)
        return sorted((Versioned(Element.FromString(e.value), e.revision) for e in entries), key=lambda v: v.value.name)

    async def get_cluster(self, domain: str, solution: str, element: str, cluster: str) -> Versioned[Cluster]:
        """A cluster record (without instances) and its revision (NotFound)."""
        key = rk.cluster_key(domain, solution, element, cluster)
        return await self._get_record(Cluster, key, domain, rk.describe_cluster(solution, element, cluster))

    async def put_cluster(self, domain: str, solution: str, element: str, cluster: Cluster, revision: int | None) -> int:
        """Create or compare-and-set a cluster record; instances are not stored here."""
        what = rk.in_domain(rk.describe_cluster(solution, element, cluster.version), domain)
        key = rk.cluster_key(domain, solution, element, cluster.version)
        return await self._solutions.write(key, rk.bare_cluster(cluster).SerializeToString(), revision, what)

    async def list_clusters(self, domain: str, solution: str, element: str = "", graves: Graves | None = None) -> list[ClusterRecord]:
        """Cluster records of a solution (or of one element), sorted by (element, version)."""
        entries = await self._scan(domain, solution, rk.level_filter(domain, solution, 2, element), graves=graves)
        found = [ClusterRecord(rk.decode_key(e.key)[2], Cluster.FromString(e.value), e.revision) for e in entries]
        return sorted(found, key=lambda r: (r.element, r.cluster.version))

    async def delete_cluster(self, domain: str, solution: str, element: str, cluster: str, revision: int | None = None) -> None:
        """Delete a cluster record (its instances are deleted one by one before)."""
        what = rk.describe_cluster(solution, element, cluster)
        key = rk.cluster_key(domain, solution, element, cluster)
        if revision is None and await self._solutions.get(key) is None:
            raise NotFound(rk.not_found(what, domain))
        await self._solutions.delete(key, revision, rk.in_domain(what, domain))

    async def delete_element(self, domain: str, solution: str, element: str, revision: int | None = None) -> None:
        """Delete an element record (its clusters are deleted before)."""
        what = rk.describe_element(solution, element)
        key = rk.element_key(domain, solution, element)
        if revision is None and await self._solutions.get(key) is None:
            raise NotFound(rk.not_found(what, domain))
        await self._solutions.delete(key, revision, rk.in_domain(what, domain))

    async def get_instance(self, domain: str, solution: str, element: str, cluster: str, uuid: str) -> Versioned[Instance]:
        """An instance record and its revision (NotFound)."""
        key = rk.instance_key(domain, solution, element, cluster, uuid)
        return await self._get_record(Instance, key, domain, rk.describe_instance(solution, element, cluster, uuid))

    async def put_instance(
        self, domain: str, solution: str, element: str, cluster: str, instance: Instance, revision: int | None
    ) -> int:
        """Create (revision None) or compare-and-set an instance record; the new revision."""
        what = rk.in_domain(rk.describe_instance(solution, element, cluster, instance.uuid), domain)
        key = rk.instance_key(domain, solution, element, cluster, instance.uuid)
        return await self._solutions.write(key, instance.SerializeToString(), revision, what)

    async def delete_instance(
        self, domain: str, solution: str, element: str, cluster: str, uuid: str, revision: int | None = None
    ) -> None:
        """Delete an instance record; with a revision, only if unchanged since (else Aborted)."""
        what = rk.describe_instance(solution, element, cluster, uuid)
        key = rk.instance_key(domain, solution, element, cluster, uuid)
        if revision is None and await self._solutions.get(key) is None:
            raise NotFound(rk.not_found(what, domain))
        await self._solutions.delete(key, revision, rk.in_domain(what, domain))

    async def list_instances(self, domain: str, solution: str, element: str = "", cluster: str = "",
                             graves: Graves | None = None) -> list[InstanceRecord]:
        """Instance records of a solution, optionally of one element and/or cluster, sorted by (element, cluster, uuid)."""
        entries = await self._scan(domain, solution, rk.level_filter(domain, solution, 3, element, cluster), graves=graves)
        found = []
        # One protobuf arena for the records of a read, not one each (a
        # quarter less memory and faster; the monitor keeps 10,000s of them).
        add = Cluster().instances.add
        for e in entries:
            names = rk.decode_key(e.key)
            record = add()
            record.MergeFromString(e.value)
            found.append(InstanceRecord(names[2], names[3], record, e.revision))
        return sorted(found, key=lambda r: (r.element, r.cluster, r.instance.uuid))

    async def parts(self, domain: str, solution: str) -> tuple[list[Versioned[Element]], list[ClusterRecord], list[InstanceRecord]]:
        """Every element, cluster and instance record of a solution, read at
        once in bulk (three key-filter reads, whatever its size, and its graves once)."""
        graves = await self._graves(domain, solution)
        elements, clusters, instances = await asyncio.gather(
            self.list_elements(domain, solution, graves), self.list_clusters(domain, solution, graves=graves),
            self.list_instances(domain, solution, graves=graves))
        return elements, clusters, instances

    async def _get_record(self, cls: type[M], key: str, domain: str, what: str) -> Versioned[M]:
        solution = rk.decode_key(key)[1]
        entry, graves = await asyncio.gather(self._solutions.get(key), self._graves(domain, solution))
        if entry is None or not graves.alive(solution, entry.revision):
            raise NotFound(rk.not_found(what, domain))
        return Versioned(cls.FromString(entry.value), entry.revision)
