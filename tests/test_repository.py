"""The repository against a real NATS server: every entity stored, read,
listed and removed; immutability; compare-and-set races; one record per
instance; whole-model apply (all or nothing) with the SolAr demo files."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import nats
import nats.js.errors
import pytest
from nats.aio.client import Client as NatsClient
from nats.js import api

from orchestration.model.codec import parse_document
from orchestration_sdk.status_errors import (
    Aborted,
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unavailable,
)
from orchestration.model.names import encode_token
from orchestration.store import kvstore, streams, wire
from orchestration.store.events import EventRecorder
from orchestration.store.repository import ApplyResult, InstanceRecord, Repository
from orchestration.store.subjects import Subjects
from orchestration.v1.records_pb2 import Grave
from orchestration_sdk.runtime import concurrency
from orchestration.v1.model_pb2 import (
    Architecture,
    Cluster,
    Component,
    Controller,
    DependencyType,
    Domain,
    Element,
    Event,
    EventType,
    Instance,
    Model,
    Solution,
    State,
    Task,
    TaskStatus,
    TaskType,
    Transition,
)

DATA = Path(__file__).parent / "data"
D = "demo"


@pytest.fixture
async def repo(nc: NatsClient, subjects: Subjects) -> Repository:
    repository = Repository(nc.jetstream(), subjects)
    await repository.open()
    return repository


@pytest.fixture
async def demo(repo: Repository) -> Repository:
    """A repository with the domain "demo"."""
    assert await repo.model.create_domain(D) is True
    return repo


# ---- builders ----------------------------------------------------------------


def component(name: str = "server", version: str = "V1.0.0", configuration: str = "image: centos", **deps: str) -> Component:
    """A component; deps maps a dependency name to "<component>:<version>"."""
    c = Component(name=name, version=version, controller="Internal:V1.0.0", configuration=configuration)
    for dep, target in deps.items():
        target_name, target_version = target.split(":")
        c.dependencies.add(name=dep, type=DependencyType.DEPENDENCY_TYPE_CONTEXT, component=target_name, version=target_version)
    return c


def architecture(name: str = "app", version: str = "V0.0.0", uses: tuple[str, str] = ("server", "V1.0.0")) -> Architecture:
    a = Architecture(name=name, version=version)
    element = a.elements.add(name="web", component=uses[0])
    element.clusters.add(version=uses[1], state=State.STATE_ACTIVE, min=1, max=3, size=2)
    return a


def solution(name: str = "app", sizes: tuple[int, ...] = (10, 8, 5), architecture: str = "app") -> Solution:
    """A solution whose elements e0, e1, ... have clusters of the given sizes (23 instances by default).

    Built in the order the store reads back (elements by name, instances by uuid).
    """
    s = Solution(name=name, version="V0.0.0", architecture=architecture, target=State.STATE_ACTIVE, state=State.STATE_INITIAL)
    for i, size in enumerate(sizes):
        element = s.elements.add(name=f"e{i}", component="server", target=State.STATE_ACTIVE, configuration=f"element {i}")
        cluster = element.clusters.add(version="V1.0.0", target=State.STATE_ACTIVE, min=1, max=size, size=size)
        cluster.relationships.add(name="net", dependency="network", element="net", version="V1.0.0")
        for uuid_ in sorted(str(uuid.uuid4()) for _ in range(size)):
            cluster.instances.add(uuid=uuid_, target=State.STATE_ACTIVE, state=State.STATE_INITIAL)
    return s


def task(uuid_: str, created: int, parent: str = "", subtasks: tuple[str, ...] = (), request: str = "r1") -> Task:
    return Task(
        uuid=uuid_, domain=D, solution="app", type=TaskType.TASK_TYPE_ELEMENT, parent=parent, subtasks=list(subtasks),
        status=TaskStatus.TASK_STATUS_INITIAL, request=request, created=created,
    )


async def key_revisions(nc: NatsClient, bucket: str) -> dict[str, int]:
    """Every live key of a bucket with its revision, read with the plain KV API.

    The keys come from the stream's subjects, not from `KeyValue.keys()`: its
    watcher now and then sees no keys right after writes (about 1 in 500
    tries on this machine, with nats-py's writes as with ours)."""
    js = nc.jetstream()
    kv = await js.key_value(bucket)
    info = await js.stream_info(f"KV_{bucket}", subjects_filter=">")
    revisions = {}
    for subject in info.state.subjects or {}:
        key = subject.removeprefix(f"$KV.{bucket}.")
        try:
            revisions[key] = (await kv.get(key)).revision or 0
        except nats.js.errors.KeyNotFoundError:
            pass  # deleted: only its marker is left
    return revisions


def load_model(name: str) -> Model:
    document = parse_document((DATA / name).read_text())
    assert document.kind == "model"
    return document.model


# ---- opening -----------------------------------------------------------------


async def test_open_is_idempotent_and_safe_when_concurrent(nats_server, subjects: Subjects) -> None:
    clients = [await nats.connect(nats_server.url) for _ in range(3)]
    try:
        repos = [Repository(c.jetstream(), subjects) for c in clients]
        await asyncio.gather(*(r.open() for r in repos))
        await repos[0].open()  # again, after the fact
        js = clients[0].jetstream()
        requests = await js.stream_info(subjects.requests_stream)
        assert requests.config.retention == api.RetentionPolicy.WORK_QUEUE
        assert requests.config.subjects == [subjects.internal_requests_all]
        assert requests.config.storage == api.StorageType.FILE
        events = await js.stream_info(subjects.events_stream)
        assert events.config.retention == api.RetentionPolicy.LIMITS
        assert events.config.subjects == [subjects.events_all]
        assert events.config.duplicate_window == pytest.approx(120.0)
        for bucket in (subjects.model_bucket, subjects.solutions_bucket, subjects.tasks_bucket,
                       subjects.controllers_bucket, subjects.leases_bucket):
            status = await (await js.key_value(bucket)).status()
            assert status.history == 1
        # All three handles work on the same store.
        assert await repos[1].model.create_domain(D) is True
        assert await repos[2].model.list_domains() == [D]
    finally:
        for c in clients:
            await c.close()


async def test_a_repository_must_be_opened(nc: NatsClient, subjects: Subjects) -> None:
    with pytest.raises(RuntimeError, match="open"):
        await Repository(nc.jetstream(), subjects).model.list_domains()


# ---- domains -----------------------------------------------------------------


async def test_domains_are_created_listed_required_and_removed(repo: Repository) -> None:
    assert await repo.model.list_domains() == []  # empty bucket: no hang, no error
    assert await repo.model.create_domain("zeta") is True
    assert await repo.model.create_domain("alpha") is True
    assert await repo.model.create_domain("alpha") is False
    assert await repo.model.list_domains() == ["alpha", "zeta"]
    await repo.model.require_domain("alpha")
    with pytest.raises(NotFound, match="domain 'nope' not found"):
        await repo.model.require_domain("nope")
    with pytest.raises(NotFound, match="domain 'nope' not found"):
        await repo.remove_domain("nope")
    await repo.remove_domain("zeta")
    assert await repo.model.list_domains() == ["alpha"]
    assert await repo.model.create_domain("zeta") is True  # a removed domain can be created again


async def test_empty_name_is_rejected_not_turned_into_a_bad_key(demo: Repository) -> None:
    with pytest.raises(InvalidArgument, match="version name is required"):
        await demo.model.get_component(D, "server", "")


# ---- components --------------------------------------------------------------


async def test_components_are_stored_read_listed_and_removed(demo: Repository) -> None:
    assert await demo.model.list_components(D) == []
    assert await demo.model.store_component(D, component("server", "V2.0.0")) is True
    assert await demo.model.store_component(D, component("network", "V1.0.0")) is True
    assert await demo.model.store_component(D, component("server", "V1.0.0")) is True
    assert await demo.model.get_component(D, "server", "V2.0.0") == component("server", "V2.0.0")
    listed = [(c.name, c.version) for c in await demo.model.list_components(D)]
    assert listed == [("network", "V1.0.0"), ("server", "V1.0.0"), ("server", "V2.0.0")]
    with pytest.raises(NotFound, match="component 'server' version 'V9' not found in domain 'demo'"):
        await demo.model.get_component(D, "server", "V9")
    with pytest.raises(NotFound, match="domain 'other' not found"):
        await demo.model.get_component("other", "server", "V1.0.0")
    with pytest.raises(NotFound, match="domain 'other' not found"):
        await demo.model.store_component("other", component())
    with pytest.raises(NotFound, match="domain 'other' not found"):
        await demo.model.list_components("other")
    await demo.model.remove_component(D, "server", "V2.0.0")
    assert [(c.name, c.version) for c in await demo.model.list_components(D)] == [("network", "V1.0.0"), ("server", "V1.0.0")]
    with pytest.raises(NotFound, match="component 'server' version 'V2.0.0' not found"):
        await demo.model.remove_component(D, "server", "V2.0.0")


async def test_components_are_immutable(demo: Repository, nc: NatsClient, subjects: Subjects) -> None:
    original = component("server", "V1.0.0", configuration="image: centos")
    assert await demo.model.store_component(D, original) is True
    before = await key_revisions(nc, subjects.model_bucket)
    assert await demo.model.store_component(D, component("server", "V1.0.0", configuration="image: centos")) is False
    with pytest.raises(AlreadyExists, match="component 'server' version 'V1.0.0' in domain 'demo' already exists"):
        await demo.model.store_component(D, component("server", "V1.0.0", configuration="image: ubuntu"))
    assert await demo.model.get_component(D, "server", "V1.0.0") == original
    assert await key_revisions(nc, subjects.model_bucket) == before  # neither store wrote anything


async def test_concurrent_stores_of_one_component_are_decided_by_the_server(demo: Repository) -> None:
    results = await asyncio.gather(
        *(demo.model.store_component(D, component(configuration=f"v{i}")) for i in range(5)), return_exceptions=True
    )
    assert results.count(True) == 1
    assert sum(isinstance(r, AlreadyExists) for r in results) == 4
    winner = results.index(True)
    assert (await demo.model.get_component(D, "server", "V1.0.0")).configuration == f"v{winner}"


async def test_a_component_in_use_cannot_be_removed(demo: Repository) -> None:
    await demo.model.store_component(D, component("server", "V1.0.0"))
    await demo.model.store_component(D, component("application", "V1.0.0", server="server:V1.0.0"))
    await demo.model.store_architecture(D, architecture("app", "V0.0.0", uses=("application", "V1.0.0")))
    with pytest.raises(FailedPrecondition, match="used by component 'application' version 'V1.0.0'"):
        await demo.model.remove_component(D, "server", "V1.0.0")
    with pytest.raises(FailedPrecondition, match="used by architecture 'app' version 'V0.0.0'"):
        await demo.model.remove_component(D, "application", "V1.0.0")
    assert len(await demo.model.list_components(D)) == 2  # nothing was removed
    await demo.model.remove_architecture(D, "app", "V0.0.0")
    await demo.model.remove_component(D, "application", "V1.0.0")
    await demo.model.remove_component(D, "server", "V1.0.0")
    assert await demo.model.list_components(D) == []


# ---- architectures -----------------------------------------------------------


async def test_architectures_are_stored_read_listed_immutable_and_removed(demo: Repository) -> None:
    assert await demo.model.list_architectures(D) == []
    assert await demo.model.store_architecture(D, architecture("app", "V1.0.0")) is True
    assert await demo.model.store_architecture(D, architecture("app", "V0.0.0")) is True
    assert await demo.model.store_architecture(D, architecture("app", "V0.0.0")) is False
    with pytest.raises(AlreadyExists, match="architecture 'app' version 'V0.0.0' in domain 'demo' already exists"):
        await demo.model.store_architecture(D, architecture("app", "V0.0.0", uses=("server", "V2.0.0")))
    assert await demo.model.get_architecture(D, "app", "V0.0.0") == architecture("app", "V0.0.0")
    assert [a.version for a in await demo.model.list_architectures(D)] == ["V0.0.0", "V1.0.0"]
    with pytest.raises(NotFound, match="architecture 'app' version 'V9' not found in domain 'demo'"):
        await demo.model.get_architecture(D, "app", "V9")
    await demo.model.remove_architecture(D, "app", "V1.0.0")
    assert [a.version for a in await demo.model.list_architectures(D)] == ["V0.0.0"]


async def test_an_architecture_a_solution_was_deployed_from_cannot_be_removed(demo: Repository) -> None:
    await demo.model.store_architecture(D, architecture("app", "V0.0.0"))
    await demo.model.store_architecture(D, architecture("app", "V1.0.0"))
    await demo.solutions.store_solution(D, solution("prod", sizes=(1,), architecture="app"))  # deployed from app V0.0.0
    with pytest.raises(FailedPrecondition, match="architecture 'app' version 'V0.0.0' in domain 'demo' is in use by solution 'prod'"):
        await demo.model.remove_architecture(D, "app", "V0.0.0")
    await demo.model.remove_architecture(D, "app", "V1.0.0")  # another version is free
    await demo.solutions.remove_solution(D, "prod")
    await demo.model.remove_architecture(D, "app", "V0.0.0")
    assert await demo.model.list_architectures(D) == []


# ---- controllers -------------------------------------------------------------


async def test_controllers_are_upserted_and_listed(demo: Repository) -> None:
    internal = Controller(name="Internal", version="V1.0.0", url="http://localhost/", status=State.STATE_ACTIVE)
    assert await demo.model.store_controller(D, internal) is True
    assert await demo.model.store_controller(D, internal) is False
    moved = Controller(name="Internal", version="V1.0.0", url="http://elsewhere/", status=State.STATE_ACTIVE)
    assert await demo.model.store_controller(D, moved) is True
    assert await demo.model.store_controller(D, Controller(name="Cloud")) is True
    assert await demo.model.list_controllers(D) == [Controller(name="Cloud"), moved]
    with pytest.raises(NotFound, match="domain 'other' not found"):
        await demo.model.store_controller("other", internal)


# ---- solutions ---------------------------------------------------------------


async def test_a_solution_of_23_instances_reads_back_equal(demo: Repository, nc: NatsClient, subjects: Subjects) -> None:
    original = solution()
    assert await demo.solutions.store_solution(D, original) is True
    stored = await demo.solutions.get_solution(D, "app")
    assert stored == original
    assert sum(len(c.instances) for e in stored.elements for c in e.clusters) == 23
    keys = await key_revisions(nc, subjects.solutions_bucket)
    assert len(keys) == 1 + 3 + 3 + 23  # one record per solution, element, cluster and instance
    headers = await demo.solutions.list_solutions(D)
    assert [h.name for h in headers] == ["app"] and not headers[0].elements
    with pytest.raises(NotFound, match="solution 'nope' not found in domain 'demo'"):
        await demo.solutions.get_solution(D, "nope")


async def test_one_instance_update_writes_exactly_one_key(demo: Repository, nc: NatsClient, subjects: Subjects) -> None:
    await demo.solutions.store_solution(D, solution())
    before = await key_revisions(nc, subjects.solutions_bucket)
    record = (await demo.solutions.list_instances(D, "app", "e1"))[3]
    changed = Instance()
    changed.CopyFrom(record.instance)
    changed.state = State.STATE_ACTIVE
    changed.endpoint = "10.0.0.7:443"
    revision = await demo.solutions.put_instance(D, "app", "e1", "V1.0.0", changed, record.revision)
    after = await key_revisions(nc, subjects.solutions_bucket)
    differing = {k for k in after if after[k] != before.get(k)}
    key = ".".join(encode_token(n) for n in (D, "app", "e1", "V1.0.0", changed.uuid))
    assert differing == {key}
    assert after[key] == revision
    assert (await demo.solutions.get_instance(D, "app", "e1", "V1.0.0", changed.uuid)).value == changed


async def test_solutions_are_immutable_as_a_whole(demo: Repository, nc: NatsClient, subjects: Subjects) -> None:
    original = solution(sizes=(2, 1))
    await demo.solutions.store_solution(D, original)
    before = await key_revisions(nc, subjects.solutions_bucket)
    shuffled = Solution()
    shuffled.CopyFrom(original)
    shuffled.elements[0].clusters[0].instances.reverse()  # order is not content
    assert await demo.solutions.store_solution(D, shuffled) is False
    different = Solution()
    different.CopyFrom(original)
    different.elements[1].clusters[0].instances[0].state = State.STATE_FAILURE
    with pytest.raises(AlreadyExists, match="solution 'app' in domain 'demo' already exists"):
        await demo.solutions.store_solution(D, different)
    assert await key_revisions(nc, subjects.solutions_bucket) == before


async def test_remove_solution_deletes_all_its_records(demo: Repository, nc: NatsClient, subjects: Subjects) -> None:
    await demo.solutions.store_solution(D, solution("app"))
    await demo.solutions.store_solution(D, solution("app2", sizes=(1,)))  # a name sharing a prefix
    await demo.solutions.remove_solution(D, "app", Grave(actor="alice", task="t-1"))
    remaining = await key_revisions(nc, subjects.solutions_bucket)
    # Nothing of it is left but its grave: who removed it, and when.
    assert remaining and all(k.startswith(f"{D}.app2") for k in remaining if k != f"_removed.{D}.app")
    grave = await demo.solutions.removal(D, "app")
    assert grave is not None and (grave.actor, grave.task) == ("alice", "t-1") and grave.removed_unix_ms > 0
    assert await demo.solutions.removal(D, "app2") is None
    assert [s.name for s in await demo.solutions.list_solutions(D)] == ["app2"]
    with pytest.raises(NotFound, match="solution 'app' not found in domain 'demo'"):
        await demo.solutions.remove_solution(D, "app")
    # Deployed again under the same name, it lives again.
    await demo.solutions.store_solution(D, solution("app"))
    assert await demo.solutions.removal(D, "app") is None
    assert [s.name for s in await demo.solutions.list_solutions(D)] == ["app", "app2"]


async def test_two_writers_of_one_instance_with_one_revision_exactly_one_wins(demo: Repository) -> None:
    first = Instance(uuid="i-1", target=State.STATE_ACTIVE, state=State.STATE_INITIAL)
    revision = await demo.solutions.put_instance(D, "app", "web", "V1.0.0", first, None)
    writers = [Instance(uuid="i-1", target=State.STATE_ACTIVE, state=s) for s in (State.STATE_INACTIVE, State.STATE_FAILURE)]
    results = await asyncio.gather(
        *(demo.solutions.put_instance(D, "app", "web", "V1.0.0", w, revision) for w in writers), return_exceptions=True
    )
    wins = [i for i, r in enumerate(results) if isinstance(r, int)]
    losses = [r for r in results if isinstance(r, Aborted)]
    assert len(wins) == 1 and len(losses) == 1, results
    assert f"was changed concurrently (expected revision {revision}); re-read and retry" in losses[0].message
    stored = await demo.solutions.get_instance(D, "app", "web", "V1.0.0", "i-1")
    assert stored.value == writers[wins[0]] and stored.revision == results[wins[0]]


async def test_creating_an_existing_instance_is_aborted(demo: Repository) -> None:
    instance = Instance(uuid="i-1", state=State.STATE_INITIAL)
    await demo.solutions.put_instance(D, "app", "web", "V1.0.0", instance, None)
    with pytest.raises(Aborted, match="instance 'i-1' of cluster 'V1.0.0' of element 'web' of solution 'app' in domain 'demo' already exists"):
        await demo.solutions.put_instance(D, "app", "web", "V1.0.0", Instance(uuid="i-1", state=State.STATE_ACTIVE), None)
    assert (await demo.solutions.get_instance(D, "app", "web", "V1.0.0", "i-1")).value == instance


async def test_versioned_records_of_every_level(demo: Repository) -> None:
    await demo.solutions.store_solution(D, solution(sizes=(2, 1)))
    header = await demo.solutions.get_solution_header(D, "app")
    assert not header.value.elements
    header.value.state = State.STATE_ACTIVE
    new_revision = await demo.solutions.put_solution_header(D, header.value, header.revision)
    with pytest.raises(Aborted, match=f"solution 'app' in domain 'demo' was changed concurrently \\(expected revision {header.revision}\\)"):
        await demo.solutions.put_solution_header(D, header.value, header.revision)
    assert (await demo.solutions.get_solution_header(D, "app")).revision == new_revision

    element = await demo.solutions.get_element(D, "app", "e0")
    assert element.value.configuration == "element 0" and not element.value.clusters
    with_clusters = Element()
    with_clusters.CopyFrom(element.value)
    with_clusters.clusters.add(version="V9")  # not stored through the element record
    await demo.solutions.put_element(D, "app", with_clusters, element.revision)
    assert [e.value.name for e in await demo.solutions.list_elements(D, "app")] == ["e0", "e1"]

    cluster = await demo.solutions.get_cluster(D, "app", "e1", "V1.0.0")
    assert not cluster.value.instances and cluster.value.size == 1
    await demo.solutions.put_cluster(D, "app", "e1", Cluster(version="V2.0.0", size=0), None)
    assert [(c.element, c.cluster.version) for c in await demo.solutions.list_clusters(D, "app")] == [
        ("e0", "V1.0.0"), ("e1", "V1.0.0"), ("e1", "V2.0.0"),
    ]
    assert [c.cluster.version for c in await demo.solutions.list_clusters(D, "app", "e1")] == ["V1.0.0", "V2.0.0"]
    full = await demo.solutions.get_solution(D, "app")
    assert [len(e.clusters) for e in full.elements] == [1, 2]  # the element put wrote no cluster

    everything = await demo.solutions.list_instances(D, "app")
    assert len(everything) == 3 and all(isinstance(r, InstanceRecord) for r in everything)
    assert [(r.element, r.cluster) for r in everything] == [("e0", "V1.0.0"), ("e0", "V1.0.0"), ("e1", "V1.0.0")]
    assert len(await demo.solutions.list_instances(D, "app", "e0")) == 2
    assert len(await demo.solutions.list_instances(D, "app", "e1", "V1.0.0")) == 1
    assert len(await demo.solutions.list_instances(D, "app", cluster="V1.0.0")) == 3
    assert await demo.solutions.list_instances(D, "app", "e1", "V2.0.0") == []
    assert await demo.solutions.list_instances(D, "ghost") == []

    gone = everything[0]
    path = (D, "app", gone.element, gone.cluster, gone.instance.uuid)
    await demo.solutions.put_instance(D, "app", gone.element, gone.cluster, gone.instance, gone.revision)  # now stale
    with pytest.raises(Aborted, match="changed concurrently"):
        await demo.solutions.delete_instance(*path, revision=gone.revision)
    current = await demo.solutions.get_instance(*path)
    await demo.solutions.delete_instance(*path, revision=current.revision)
    with pytest.raises(NotFound, match=f"instance '{gone.instance.uuid}' .* not found in domain 'demo'"):
        await demo.solutions.get_instance(*path)
    with pytest.raises(NotFound):
        await demo.solutions.delete_instance(*path)
    assert len(await demo.solutions.list_instances(D, "app")) == 2
    # A deleted instance can be created again.
    await demo.solutions.put_instance(D, "app", gone.element, gone.cluster, gone.instance, None)
    assert len(await demo.solutions.list_instances(D, "app")) == 3


async def test_bulk_reads_span_several_pull_requests(demo: Repository, monkeypatch: pytest.MonkeyPatch) -> None:
    await demo.solutions.store_solution(D, solution())
    monkeypatch.setattr(wire, "_SCAN_CHUNK", 4)
    assert len(await demo.solutions.list_instances(D, "app")) == 23
    assert sum(len(c.instances) for e in (await demo.solutions.get_solution(D, "app")).elements for c in e.clusters) == 23


async def test_changed_since_names_the_solutions_written_or_deleted_after_a_position(demo: Repository, nc: NatsClient,
                                                                                    subjects: Subjects) -> None:
    records = demo.solutions
    changed, start = await records.changed_since(kvstore.Position(), 1000)
    assert changed == set()
    await records.store_solution(D, solution("app", sizes=(2, 1)))
    await records.store_solution(D, solution("my app.2", sizes=(1,)))  # a name that needs encoding
    changed, stored = await records.changed_since(start, 1000)
    assert changed == {(D, "app"), (D, "my app.2")} and stored.sequence > start.sequence
    assert await records.changed_since(stored, 1000) == (set(), stored)  # nothing since: one request, nothing read
    # One instance written, another deleted: only their solutions.
    record = (await records.list_instances(D, "app"))[0]
    record.instance.state = State.STATE_ACTIVE
    await records.put_instance(D, "app", record.element, record.cluster, record.instance, record.revision)
    changed, written = await records.changed_since(stored, 1000)
    assert changed == {(D, "app")}
    gone = (await records.list_instances(D, "my app.2"))[0]
    await records.delete_instance(D, "my app.2", gone.element, gone.cluster, gone.instance.uuid, gone.revision)
    changed, deleted = await records.changed_since(written, 1000)
    assert changed == {(D, "my app.2")}
    # More writes than asked for: their keys are not read, and the position still moves on.
    assert await records.changed_since(start, 3) == (None, deleted)
    # A removal writes the solution's grave (the purge itself leaves nothing behind).
    await records.remove_solution(D, "app")
    changed, deleted = await records.changed_since(deleted, 1000)
    assert changed == {(D, "app")}
    assert [h.name for h in await records.list_solutions(D)] == ["my app.2"]
    # The bucket made anew (its sequences start again): anything may have changed.
    js = nc.jetstream()
    await js.delete_stream(f"KV_{subjects.solutions_bucket}")
    await Repository(js, subjects).open()
    changed, anew = await demo.solutions.changed_since(deleted, 1000)
    assert changed is None and anew.made != deleted.made


# ---- tasks and events --------------------------------------------------------


async def test_tasks_are_versioned_listed_and_read_as_trees(demo: Repository) -> None:
    # root -> (a -> (a1, a2), b); "other" belongs to another request.
    tasks = [
        task("root", 1, subtasks=("a", "b")), task("a", 2, "root", ("a1", "a2")), task("b", 3, "root"),
        task("a1", 4, "a"), task("a2", 5, "a"), task("other", 0, request="r2"),
    ]
    for t in reversed(tasks):
        assert await demo.tasks.put_task(t, None) > 0
    with pytest.raises(Aborted, match="task 'root' in domain 'demo' already exists"):
        await demo.tasks.put_task(tasks[0], None)
    root = await demo.tasks.get_task(D, "root")
    assert root.value == tasks[0]
    root.value.status = TaskStatus.TASK_STATUS_EXECUTING
    await demo.tasks.put_task(root.value, root.revision)
    with pytest.raises(Aborted, match="changed concurrently"):
        await demo.tasks.put_task(root.value, root.revision)
    assert [t.uuid for t in await demo.tasks.list_tasks(D)] == ["other", "root", "a", "b", "a1", "a2"]
    assert [t.uuid for t in await demo.tasks.list_tasks(D, request="r2")] == ["other"]
    assert len(await demo.tasks.list_tasks(D, solution="app", request="r1")) == 5
    assert await demo.tasks.list_tasks(D, solution="nope") == []
    tree = [t.uuid for t in await demo.tasks.get_task_tree(D, "root")]
    assert sorted(tree) == ["a", "a1", "a2", "b", "root"]
    assert all(tree.index(t.parent) < tree.index(t.uuid) for t in tasks if t.uuid in tree and t.parent)
    assert [t.uuid for t in await demo.tasks.get_task_tree(D, "a")] == ["a", "a1", "a2"]
    with pytest.raises(NotFound, match="task 'nope' not found in domain 'demo'"):
        await demo.tasks.get_task(D, "nope")
    with pytest.raises(NotFound):
        await demo.tasks.get_task_tree(D, "nope")


async def test_an_instance_task_with_no_record_is_read_from_its_events(demo: Repository, nc: NatsClient, subjects: Subjects) -> None:
    # An instance task's record is written once, when it ends: while it runs,
    # its execution event is its only store, and every reader takes it from
    # there (a tree, a listing, one task, a prune); one it never started
    # (no record, no event) is left out, as before.
    cluster = task("cluster", 1, subtasks=("running", "pending", "stale"))
    cluster.version, cluster.trace = "V1", "ab" * 16
    await demo.tasks.put_task(cluster, None)
    running = Task(uuid="running", domain=D, solution="app", type=TaskType.TASK_TYPE_INSTANCE, parent="cluster",
                   status=TaskStatus.TASK_STATUS_EXECUTING, request="r1", instance="i1", phase=1,
                   transition=Transition.TRANSITION_CREATE, state=State.STATE_INITIAL)
    recorder = EventRecorder(nc.jetstream(), subjects)
    await recorder.record(Event(uuid="x1", domain=D, task="running", source="running", type=EventType.EVENT_TYPE_EXECUTION,
                                time=10, comment="create"), running)
    running.phase, running.transition = 2, Transition.TRANSITION_CONFIGURE
    await recorder.record(Event(uuid="x2", domain=D, task="running", source="running", type=EventType.EVENT_TYPE_PROGRESS,
                                time=12, comment="create: made"), running)
    expected = Task()
    expected.CopyFrom(running)
    expected.version, expected.trace, expected.created, expected.updated, expected.started = "V1", "ab" * 16, 10, 12, 10
    assert await demo.tasks.get_task_tree(D, "cluster") == [cluster, expected]
    assert [t.uuid for t in await demo.tasks.list_tasks(D)] == ["cluster", "running"]
    assert [t.uuid for t in await demo.tasks.list_tasks(D, roots_only=True)] == ["cluster"]
    assert await demo.tasks.find_task(D, "running") == expected
    with pytest.raises(NotFound):
        await demo.tasks.get_task(D, "running")  # what a run writes against: records only
    with pytest.raises(NotFound):
        await demo.tasks.find_task(D, "pending")
    assert [t.uuid for t in await demo.tasks.get_task_tree(D, "running")] == ["running"]
    # Ended, it has its record, which readers take from then on.
    running.status = TaskStatus.TASK_STATUS_COMPLETED
    await demo.tasks.put_task(running, None)
    assert (await demo.tasks.find_task(D, "running")).status == TaskStatus.TASK_STATUS_COMPLETED
    # A prune takes the events of a task with no record too (one whose run
    # stopped while it ran), and purges no key that was never written.
    stale = Task(uuid="stale", domain=D, solution="app", type=TaskType.TASK_TYPE_INSTANCE, parent="cluster",
                 status=TaskStatus.TASK_STATUS_EXECUTING, request="r1")
    await recorder.record(Event(uuid="x3", domain=D, task="stale", source="stale", type=EventType.EVENT_TYPE_EXECUTION,
                                time=11), stale)
    pruned = await demo.tasks.prune_tree(D, (await demo.tasks.get_task(D, "cluster")).value)
    assert (pruned.tasks, pruned.completed) == (2, 1)
    assert await demo.tasks.list_events(D) == []
    info = await nc.jetstream().stream_info(f"KV_{subjects.tasks_bucket}", subjects_filter=">")
    assert not [s for s in info.state.subjects or {} if s.endswith(".stale")], "a purge wrote a key never written"


async def test_a_running_tree_is_read_from_its_tasks_last_events_without_scanning_the_events_stream(
        demo: Repository, nc: NatsClient, subjects: Subjects) -> None:
    # A consumer filtered on the tasks' subjects makes the server scan the
    # whole stream (a running tree of 10,000 read in 3 s beside 20,000 other
    # events, and not at all beside 100,000): a task with no record is read
    # by direct gets of its last event, and of its execution event when a
    # later one came.
    running = [f"i{n}" for n in range(3)]
    await demo.tasks.put_task(task("cluster", 1, subtasks=tuple(running)), None)
    recorder = EventRecorder(nc.jetstream(), subjects)
    for n, uuid_ in enumerate(running):
        t = Task(uuid=uuid_, domain=D, solution="app", type=TaskType.TASK_TYPE_INSTANCE, parent="cluster",
                 status=TaskStatus.TASK_STATUS_EXECUTING, phase=1)
        await recorder.record(Event(uuid=f"x{n}", domain=D, task=uuid_, source=uuid_, type=EventType.EVENT_TYPE_EXECUTION,
                                    time=10 + n), t)
        t.phase = 2
        await recorder.record(Event(uuid=f"p{n}", domain=D, task=uuid_, source=uuid_, type=EventType.EVENT_TYPE_PROGRESS,
                                    time=20 + n), t)
    created: list[str] = []

    async def on_create(msg: nats.aio.msg.Msg) -> None:
        created.append(msg.subject)

    watching = await nc.subscribe("$JS.API.CONSUMER.CREATE.>", cb=on_create)
    tree = await demo.tasks.get_task_tree(D, "cluster")
    await nc.flush()
    await watching.unsubscribe()
    assert [(t.uuid, t.phase, t.created, t.started, t.updated) for t in tree[1:]] == [
        (f"i{n}", 2, 10 + n, 10 + n, 20 + n) for n in range(3)]
    assert not [s for s in created if subjects.events_stream in s], "a tree read scanned the events stream"


async def test_events_are_stored_once_listed_by_time_and_found(demo: Repository, nc: NatsClient, subjects: Subjects) -> None:
    # t1 is the parent of t2; e4 is caused by t1 and received by t2 (stored under t2).
    await demo.tasks.put_task(task("t1", 1, subtasks=("t2",)), None)
    await demo.tasks.put_task(task("t2", 2, parent="t1"), None)
    events = [
        Event(uuid="e3", domain=D, task="t1", source="t1", type=EventType.EVENT_TYPE_COMPLETION, time=30),
        Event(uuid="e1", domain=D, task="t1", source="t1", type=EventType.EVENT_TYPE_EXECUTION, time=10),
        Event(uuid="e2", domain=D, task="t2", source="t2", type=EventType.EVENT_TYPE_EXECUTION, time=20),
        Event(uuid="drift", domain=D, type=EventType.EVENT_TYPE_DRIFT, time=25),  # no task
        Event(uuid="e4", domain=D, task="t2", source="t1", type=EventType.EVENT_TYPE_EXECUTION, time=15),
        Event(uuid="e5", domain=D, task="t9", source="t8", type=EventType.EVENT_TYPE_EXECUTION, time=5, comment="é \"quoted\""),
    ]
    recorder = EventRecorder(nc.jetstream(), subjects)
    for e in events:
        await recorder.record(e, Task(uuid=e.task, domain=D, type=TaskType.TASK_TYPE_INSTANCE))
    # Recorded again (a retry after a crash or time-out), or another event under the same uuid: the first stands.
    await recorder.record(events[0], Task(uuid="t1", domain=D))
    await recorder.record(Event(uuid="e3", domain=D, task="t1", time=31), Task(uuid="t1", domain=D))
    # Stored again after the duplicate window (a retry that waited out a long outage): listed once.
    await recorder.record(events[2], Task(uuid="t2", domain=D), retried=False)
    assert [e.uuid for e in await demo.tasks.list_events(D)] == ["e5", "e1", "e4", "e2", "drift", "e3"]
    assert await demo.tasks.list_events(D) == sorted(events, key=lambda e: e.time)  # every field as recorded
    # The events of a task are those it received and those it caused (as in SolAr's Task.Events).
    assert [e.uuid for e in await demo.tasks.list_events(D, task="t1")] == ["e1", "e4", "e3"]
    assert [e.uuid for e in await demo.tasks.list_events(D, task="t2")] == ["e4", "e2"]
    assert [e.uuid for e in await demo.tasks.list_events(D, task="t8")] == ["e5"]  # no task record: searched
    assert await demo.tasks.list_events(D, task="t7") == []
    assert await demo.tasks.get_event(D, "e2") == events[2]
    assert await demo.tasks.get_event(D, "e2", task="t2") == events[2]
    assert await demo.tasks.get_event(D, "e4", task="t1") == events[4]
    assert await demo.tasks.get_event(D, "drift") == events[3]
    with pytest.raises(NotFound, match="event 'e2' not found in domain 'demo'"):
        await demo.tasks.get_event(D, "e2", task="t1")
    with pytest.raises(NotFound, match="event 'nope' not found"):
        await demo.tasks.get_event(D, "nope")
    with pytest.raises(NotFound, match="domain 'other' not found"):
        await demo.tasks.list_events("other")
    # Stored once: in the events stream, under the task that received each (no events bucket).
    info = await nc.jetstream().stream_info(subjects.events_stream, subjects_filter=">")
    assert info.state.messages == len(events) + 1  # the one stored again
    assert subjects.event(D, "instance", "execution", "t2") in (info.state.subjects or {})
    assert f"KV_{subjects.prefix}_events" not in [s.config.name for s in await nc.jetstream().streams_info()]


async def test_events_of_a_task_in_demo3_are_those_it_lists(repo: Repository) -> None:
    model = load_model("demo3.yaml")
    await repo.apply_model(model)
    for t in model.domains[0].tasks:
        assert {e.uuid for e in await repo.tasks.list_events("demo", task=t.uuid)} == set(t.events), t.uuid


# ---- names in keys -----------------------------------------------------------


async def test_names_with_dots_and_spaces_are_encoded_in_keys(repo: Repository, nc: NatsClient, subjects: Subjects) -> None:
    domain = "acme.eu"
    await repo.model.create_domain(domain)
    # Unencoded, both would be the key component.acme.eu.web.front.V1.0.0.
    a = component("web.front", "V1.0.0", configuration="a")
    b = component("web", "front.V1.0.0", configuration="b")
    spaced = component("app - V0.0.0", "V 1", configuration="c")
    for c in (a, b, spaced):
        assert await repo.model.store_component(domain, c) is True
    assert await repo.model.get_component(domain, "web.front", "V1.0.0") == a
    assert await repo.model.get_component(domain, "web", "front.V1.0.0") == b
    assert await repo.model.get_component(domain, "app - V0.0.0", "V 1") == spaced
    assert len(await repo.model.list_components(domain)) == 3
    keys = set(await key_revisions(nc, subjects.model_bucket))
    assert "component.acme=2Eeu.web=2Efront.V1=2E0=2E0" in keys
    assert "component.acme=2Eeu.web.front=2EV1=2E0=2E0" in keys
    assert all(len(k.split(".")) == 4 for k in keys if k.startswith("component."))
    assert not any(" " in k for k in keys)
    await repo.solutions.store_solution(domain, solution("my.app", sizes=(1,)))
    assert (await repo.solutions.get_solution(domain, "my.app")).name == "my.app"
    assert await repo.model.list_domains() == [domain]


# ---- whole model -------------------------------------------------------------


async def test_apply_demo2_then_demo3(repo: Repository) -> None:
    demo2 = load_model("demo2.yaml")
    result = await repo.apply_model(demo2)
    assert isinstance(result, ApplyResult)
    assert "domain demo" in result.stored
    assert "component demo/server/V1.0.0" in result.stored
    assert "architecture demo/app/V0.0.0" in result.stored
    assert "controller demo/Internal:V1.0.0" in result.stored
    assert len(result.stored) == 1 + 4 + 1 + 1 and result.unchanged == []

    again = await repo.apply_model(demo2)
    assert again.stored == [] and sorted(again.unchanged) == sorted(result.stored)

    demo3 = load_model("demo3.yaml")
    third = await repo.apply_model(demo3)
    assert "solution demo/app" in third.stored
    assert "component demo/server/V1.0.0" in third.unchanged
    assert sum(s.startswith("task ") for s in third.stored) == 38
    assert sum(s.startswith("event ") for s in third.stored) == 159

    domain = await repo.get_domain("demo")
    source = demo3.domains[0]
    assert list(domain.components) == sorted(source.components, key=lambda c: (c.name, c.version))
    assert list(domain.architectures) == list(source.architectures)
    assert list(domain.controllers) == list(source.controllers)
    assert len(domain.solutions) == 1
    app = domain.solutions[0]
    assert sum(len(c.instances) for e in app.elements for c in e.clusters) == 23
    assert sorted(e.name for e in app.elements) == sorted(e.name for e in source.solutions[0].elements)
    assert {t.uuid: t for t in domain.tasks} == {t.uuid: t for t in source.tasks}
    assert {e.uuid: e for e in domain.events} == {e.uuid: e for e in source.events}
    assert [e.time for e in domain.events] == sorted(e.time for e in source.events)

    model = await repo.retrieve_model()
    assert [d.name for d in model.domains] == ["demo"] and model.domains[0] == domain
    final = await repo.apply_model(demo3)
    assert final.stored == []


async def test_apply_is_all_or_nothing(repo: Repository, nc: NatsClient, subjects: Subjects) -> None:
    await repo.apply_model(load_model("demo2.yaml"))
    before = {b: await key_revisions(nc, b) for b in (subjects.model_bucket, subjects.solutions_bucket, subjects.tasks_bucket)}
    changed = component("server", "V1.0.0", configuration="a different template")
    model = Model(domains=[
        Domain(name="fresh", components=[component("web", "V1.0.0")]),
        Domain(name="demo", components=[component("brand-new", "V1.0.0"), changed], solutions=[solution()],
               tasks=[task("t-1", 1)]),
    ])
    with pytest.raises(AlreadyExists, match="nothing stored: 1 record.* component demo/server/V1.0.0"):
        await repo.apply_model(model)
    after = {b: await key_revisions(nc, b) for b in before}
    assert after == before
    assert await repo.model.list_domains() == ["demo"]


async def test_apply_names_every_conflict(repo: Repository) -> None:
    await repo.model.create_domain(D)
    await repo.model.store_component(D, component("server"))
    await repo.model.store_architecture(D, architecture("app"))
    model = Model(domains=[Domain(name=D, components=[component("server", configuration="x")],
                                  architectures=[architecture("app", uses=("server", "V2"))])])
    with pytest.raises(AlreadyExists) as caught:
        await repo.apply_model(model)
    assert "component demo/server/V1.0.0" in caught.value.message
    assert "architecture demo/app/V0.0.0" in caught.value.message


async def test_remove_domain_removes_everything_of_it(repo: Repository, nc: NatsClient, subjects: Subjects) -> None:
    await repo.apply_model(load_model("demo3.yaml"))
    await repo.model.create_domain("demo2")  # a name sharing the prefix "demo"
    await repo.model.store_component("demo2", component())
    await repo.tasks.put_task(Task(uuid="keep", domain="demo2", created=1), None)
    await repo.remove_domain("demo")
    assert await repo.model.list_domains() == ["demo2"]
    buckets = (subjects.model_bucket, subjects.solutions_bucket, subjects.tasks_bucket)
    for bucket in buckets:
        for key in await key_revisions(nc, bucket):
            # Nothing of it is left but its grave, in the buckets that need one.
            assert "demo2" in key.split(".") or key == "_removed.demo", f"{bucket} still holds {key}"
    assert await repo.tasks.all_events("demo") == []  # and its events
    with pytest.raises(NotFound, match="domain 'demo' not found"):
        await repo.get_domain("demo")
    assert len(await repo.model.list_components("demo2")) == 1
    assert [t.uuid for t in await repo.tasks.list_tasks("demo2")] == ["keep"]
    # The domain can be loaded again from scratch, events included (the
    # server still remembers their message ids: a purge does not clear them).
    model = load_model("demo3.yaml")
    assert len((await repo.apply_model(model)).unchanged) == 0
    assert {e.uuid for e in await repo.tasks.all_events("demo")} == {e.uuid for e in model.domains[0].events}


async def test_a_model_event_without_its_domain_reads_back_with_it_and_applies_again(repo: Repository) -> None:
    model = load_model("demo3.yaml")
    for event in model.domains[0].events:
        event.ClearField("domain")
    first = await repo.apply_model(model)
    assert first.stored and not first.unchanged
    again = load_model("demo3.yaml")
    for event in again.domains[0].events:
        event.ClearField("domain")
    assert not (await repo.apply_model(again)).stored
    assert {e.domain for e in await repo.tasks.all_events("demo")} == {"demo"}


async def test_reset_model_empties_buckets_and_streams(repo: Repository, nc: NatsClient, subjects: Subjects) -> None:
    await repo.apply_model(load_model("demo3.yaml"))
    js = nc.jetstream()
    await js.publish(subjects.internal_request(D, "app"), b"request")
    await js.publish(subjects.event(D, "solution", "completion", "t1"), b"event", headers={"Nats-Msg-Id": "x"})
    await repo.reset_model()
    assert await repo.model.list_domains() == []
    assert await repo.retrieve_model() == Model()
    for bucket in (subjects.model_bucket, subjects.solutions_bucket, subjects.tasks_bucket):
        assert await key_revisions(nc, bucket) == {}
    for stream in (subjects.requests_stream, subjects.events_stream):
        assert (await js.stream_info(stream)).state.messages == 0
    # Still usable afterwards.
    assert (await repo.apply_model(load_model("demo2.yaml"))).unchanged == []


async def test_gather_bounded_keeps_order_and_bound_and_raises_after_all_finished() -> None:
    running = peak = 0
    finished: list[int] = []

    async def call(i: int) -> int:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.001 * (i % 3))  # on purpose: calls of uneven length finish out of order
        running -= 1
        finished.append(i)
        if i == 5:
            raise ValueError("five")
        return i * 2

    assert await concurrency.gather_bounded((call(i) for i in range(20) if i != 5), limit=4) == [i * 2 for i in range(20) if i != 5]
    assert peak == 4
    finished.clear()
    with pytest.raises(ValueError, match="five"):
        await concurrency.gather_bounded((call(i) for i in range(20)), limit=4)
    assert sorted(finished) == list(range(20)), "every call ran to its end"
    assert await concurrency.gather_bounded([], limit=4) == []


async def test_gather_bounded_of_many_calls_is_linear() -> None:
    async def call(i: int) -> int:
        await asyncio.sleep(0)  # on purpose: each call yields to the loop once, as a real one would
        return i

    loop = asyncio.get_running_loop()
    started = loop.time()
    assert len(await concurrency.gather_bounded((call(i) for i in range(50_000)), limit=256)) == 50_000
    # A semaphore's wake-ups made this quadratic (tens of seconds); linear, it takes well under a second.
    assert loop.time() - started < 20


async def test_creating_waits_while_the_cluster_cannot_place_the_replicas_yet(monkeypatch: pytest.MonkeyPatch) -> None:
    """A cluster whose servers start together answers "no suitable peers"
    until its routes are up: a service starting then waits instead of dying."""
    no_peers = nats.js.errors.BadRequestError(code=400, err_code=10005, description="no suitable peers for placement")
    answers: list[object] = [no_peers, no_peers, "made"]

    async def create() -> object:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert await streams.placed(create, "bucket 'x'", 3) == "made" and not answers
    # Other refusals are not waited out; and the wait ends, with a message an operator can act on.
    other = nats.js.errors.BadRequestError(code=400, err_code=10058, description="stream name already in use")
    answers[:] = [other]
    with pytest.raises(nats.js.errors.BadRequestError):
        await streams.placed(create, "bucket 'x'", 3)
    monkeypatch.setattr(streams, "PLACEMENT_WAIT", 0.0)
    answers[:] = [no_peers, no_peers]
    with pytest.raises(Unavailable, match="cannot place bucket 'x' on 3 server"):
        await streams.placed(create, "bucket 'x'", 3)


async def test_history_ages_out_and_the_events_stream_is_bounded(nc: NatsClient, subjects: Subjects) -> None:
    js = nc.jetstream()
    await Repository(js, subjects, retention=streams.Retention(history_seconds=3600, events_bytes=2**20)).open()
    events = (await js.stream_info(subjects.events_stream)).config
    assert (events.max_age, events.max_bytes) == (3600, 2**20)
    assert (await js.stream_info(f"KV_{subjects.tasks_bucket}")).config.max_age == 3600
    assert not (await js.stream_info(f"KV_{subjects.solutions_bucket}")).config.max_age  # records are not history
    # A later process with other settings applies them to what exists.
    await Repository(js, subjects, retention=streams.Retention(history_seconds=60, events_bytes=2**21)).open()
    events = (await js.stream_info(subjects.events_stream)).config
    assert (events.max_age, events.max_bytes, events.duplicate_window) == (60, 2**21, 60)


def test_retention_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCH_HISTORY_DAYS", "2")
    monkeypatch.setenv("ORCH_EVENTS_MAX_MB", "64")
    assert streams.Retention.from_environment() == streams.Retention(2 * 86400.0, 64 * 2**20)
    monkeypatch.setenv("ORCH_HISTORY_DAYS", "-1")
    with pytest.raises(ValueError, match="ORCH_HISTORY_DAYS='-1'"):
        streams.Retention.from_environment()
