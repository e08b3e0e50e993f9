"""The write order of a request's intent, on a fake store that can crash
between any two writes. A request is planned once, by apply_request, which
writes (DESIGN.md: self-sufficient records) the solution's header first,
then its element records, then their cluster records, each compare-and-set
(create, or update at the revision read); a record under a cluster is never
written before the cluster's. A dispatcher that dies anywhere in that
sequence leaves the request's lease, and the next owner applies the same
request again: whatever was written before the crash, it must reach the
very records an uninterrupted apply writes. Checked here for each write a
deploy, a resize, a state change and a teardown make. No NATS: the store's
records classes run over an in-memory bucket with NATS KV's semantics."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from types import SimpleNamespace
from typing import Any

import pytest

import models
from dispatcher.run.intent import apply_request
from orchestration.model import planner
from orchestration.model.codec import parse_document
from orchestration.store import keys as rk
from orchestration.store.kvstore import Entry
from orchestration.store.requests import new_request
from orchestration.store.revisions import RevisionStore
from orchestration.store.solution_store import SolutionStore
from orchestration.v1 import model_pb2 as pb
from orchestration.v1 import records_pb2 as rpb
from orchestration_sdk.status_errors import Aborted

DOMAIN, SOLUTION = "shop", "app"


class Crash(Exception):
    """The dispatcher died before this write reached the store."""


class FakeBucket:
    """A KV bucket in memory with NATS KV's semantics: one sequence for the
    whole bucket, compare-and-set on a key's revision, wildcard scans; and a
    budget of writes after which every write crashes."""

    def __init__(self) -> None:
        self.values: dict[str, tuple[bytes, int]] = {}
        self.sequence = 0
        self.budget: int | None = None
        self.writes = 0

    def _land(self, key: str, value: bytes | None) -> int:
        if self.budget is not None and self.writes >= self.budget:
            raise Crash(key)
        self.writes += 1
        self.sequence += 1
        if value is None:
            self.values.pop(key, None)
        else:
            self.values[key] = (value, self.sequence)
        return self.sequence

    async def get(self, key: str) -> Entry | None:
        found = self.values.get(key)
        return Entry(key, found[0], found[1]) if found else None

    async def write(self, key: str, value: bytes, revision: int | None, what: str) -> int:
        found = self.values.get(key)
        if (revision is None and found is not None) or (revision is not None and (found is None or found[1] != revision)):
            raise Aborted(f"{what} was changed concurrently")
        return self._land(key, value)

    async def put(self, key: str, value: bytes) -> int:
        return self._land(key, value)

    async def delete(self, key: str, revision: int | None, what: str) -> None:
        found = self.values.get(key)
        if revision is not None and (found is None or found[1] != revision):
            raise Aborted(f"{what} was changed concurrently")
        self._land(key, None)

    async def scan(self, *filters: str) -> list[Entry]:
        return [Entry(k, v, r) for k, (v, r) in sorted(self.values.items()) if any(_matches(k, f) for f in filters)]

    async def purge(self, *filters: str, before: int | None = None) -> None:
        for key in [k for k, (_, r) in self.values.items() if any(_matches(k, f) for f in filters)
                    and (before is None or r < before)]:
            self._land(key, None)

    def records(self) -> dict[str, bytes]:
        """What is stored, without revisions (they differ with the path taken)."""
        return {key: value for key, (value, _) in self.values.items()}


def _matches(key: str, pattern: str) -> bool:
    keys, parts = key.split("."), pattern.split(".")
    for i, part in enumerate(parts):
        if part == ">":
            return len(keys) > i
        if i >= len(keys) or (part != "*" and part != keys[i]):
            return False
    return len(keys) == len(parts)


def repository(bucket: FakeBucket) -> Any:
    async def domain_exists(domain: str) -> None:
        return None
    return SimpleNamespace(solutions=SolutionStore(bucket, domain_exists),  # type: ignore[arg-type]
                           revisions=RevisionStore(bucket))  # type: ignore[arg-type]


def design(version: str = "V1") -> tuple[pb.Architecture, dict[tuple[str, str], pb.Component]]:
    """A chain of three elements (2, 3 and 1 instances), version V1 or V2 (bigger)."""
    sizes = [2, 3, 1] if version == "V1" else [3, 3, 2]
    model = parse_document(models.chain(DOMAIN, sizes, version=version), DOMAIN).model
    [domain] = model.domains
    return domain.architectures[0], {(c.name, c.version): c for c in domain.components}


async def apply(bucket: FakeBucket, request: rpb.Request, version: str = "V1") -> None:
    """What a dispatcher does with a request until its first operation: the
    intent (header, elements, the first growing cluster), then the records
    it deferred, elements before their clusters, then the revision (as
    dispatcher.run.opening)."""
    repo = repository(bucket)
    ready: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    ready.set_result(design(version))
    intent = await apply_request(repo, request, ready)
    for element, revision in intent.deferred.elements.values():
        await repo.solutions.put_element(DOMAIN, SOLUTION, element, revision)
    for (element, _), (cluster, revision) in intent.deferred.clusters.items():
        await repo.solutions.put_cluster(DOMAIN, SOLUTION, element, cluster, revision)
    if intent.revision is not None:
        await intent.revision()  # recorded once the first operation has left (the run waits for it before it ends)


def succeeded(bucket: FakeBucket) -> None:
    """Every revision's change ended well (what its run writes when it ends; a
    rollback puts back only a change that ran)."""
    for key, (value, revision) in list(bucket.values.items()):
        if key.startswith(rk.REVISION_PREFIX):
            record = pb.Revision.FromString(value)
            record.outcome, record.ended_unix_ms = pb.REVISION_OUTCOME_SUCCEEDED, 1
            bucket.values[key] = (record.SerializeToString(), revision)


def requests() -> Iterable[tuple[str, list[tuple[rpb.Request, str]]]]:
    deploy = new_request(rpb.Request.Deploy(architecture="app", version="V1"), DOMAIN, SOLUTION, "test")
    upgrade = new_request(rpb.Request.Deploy(architecture="app", version="V2"), DOMAIN, SOLUTION, "test")
    resize = new_request(rpb.Request.SetCluster(element="e1", cluster="V1", size=1), DOMAIN, SOLUTION, "test")
    state = new_request(rpb.Request.SetSolution(state=pb.STATE_INACTIVE), DOMAIN, SOLUTION, "test")
    remove = new_request(rpb.Request.Remove(), DOMAIN, SOLUTION, "test")
    rollback = new_request(rpb.Request.Rollback(to=1), DOMAIN, SOLUTION, "test")
    yield "deploy", [(deploy, "V1")]
    yield "upgrade", [(deploy, "V1"), (upgrade, "V2")]
    yield "resize", [(deploy, "V1"), (resize, "V1")]
    yield "state", [(deploy, "V1"), (state, "V1")]
    yield "teardown", [(deploy, "V1"), (remove, "V1")]
    yield "rollback", [(deploy, "V1"), (upgrade, "V2"), (rollback, "V1")]


@pytest.mark.parametrize(("name", "steps"), list(requests()), ids=[n for n, _ in requests()])
async def test_a_crash_between_any_two_writes_of_an_intent_is_finished_by_applying_it_again(
        name: str, steps: list[tuple[rpb.Request, str]]) -> None:
    *before, (last, version) = steps
    reference = FakeBucket()
    for request, v in before:
        await apply(reference, request, v)
        succeeded(reference)
    await apply(reference, last, version)
    prepared = FakeBucket()
    for request, v in before:
        await apply(prepared, request, v)
        succeeded(prepared)
    start = prepared.writes
    writes = reference.writes - start
    assert writes > 0, f"{name}: the request writes something"
    for crash_after in range(writes):
        bucket = FakeBucket()
        bucket.values, bucket.sequence, bucket.writes = dict(prepared.values), prepared.sequence, prepared.writes
        bucket.budget = start + crash_after
        with pytest.raises(Crash):
            await apply(bucket, last, version)
        bucket.budget = None  # the next owner, applying the same request
        await apply(bucket, last, version)
        assert bucket.records() == reference.records(), f"{name}: crash after write {crash_after + 1} of {writes}"


async def test_records_under_a_cluster_are_never_written_before_it() -> None:
    """The order itself: the header first, an element before its clusters."""
    order: list[str] = []
    bucket = FakeBucket()
    land = bucket._land

    def noting(key: str, value: bytes | None) -> int:
        order.append(key)
        return land(key, value)

    bucket._land = noting  # type: ignore[method-assign]
    await apply(bucket, new_request(rpb.Request.Deploy(architecture="app", version="V1"), DOMAIN, SOLUTION, "test"))
    order = [key for key in order if not key.startswith(rk.REVISION_PREFIX)]  # the revision is written beside them
    assert order[0] == rk.solution_key(DOMAIN, SOLUTION), order
    wanted = planner.desired_solution(DOMAIN, SOLUTION, *design())
    for element in wanted.elements:
        element_at = order.index(rk.element_key(DOMAIN, SOLUTION, element.name))
        for cluster in element.clusters:
            assert element_at < order.index(rk.cluster_key(DOMAIN, SOLUTION, element.name, cluster.version)), order
