"""A solution as stored (a snapshot of its records with their revisions),
read at once, and a new intent written over it record by record
(compare-and-set, only what changed)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from orchestration.store.kvstore import Versioned
from orchestration.store.repository import Repository
from orchestration.store.solution_store import ClusterRecord, InstanceRecord
from orchestration.v1 import model_pb2 as pb
from orchestration_sdk.runtime.concurrency import gather_bounded
from orchestration_sdk.status_errors import NotFound


@dataclass
class SolutionSnapshot:
    """Every record of one solution, as stored."""

    header: Versioned[pb.Solution] | None
    elements: dict[str, Versioned[pb.Element]] = field(default_factory=dict)
    clusters: dict[tuple[str, str], ClusterRecord] = field(default_factory=dict)
    instances: dict[str, InstanceRecord] = field(default_factory=dict)

    def tree(self) -> pb.Solution | None:
        """The solution as one message (None when there is none)."""
        if self.header is None:
            return None
        solution = pb.Solution()
        solution.CopyFrom(self.header.value)
        by_element: dict[str, pb.Element] = {}
        for name, element in sorted(self.elements.items()):
            out = solution.elements.add()
            out.CopyFrom(element.value)
            by_element[name] = out
        by_cluster: dict[tuple[str, str], pb.Cluster] = {}
        for key, record in sorted(self.clusters.items()):
            element_out = by_element.get(record.element)
            if element_out is None:
                continue
            out_cluster = element_out.clusters.add()
            out_cluster.CopyFrom(record.cluster)
            by_cluster[key] = out_cluster
        for uuid, instance in sorted(self.instances.items()):
            cluster_out = by_cluster.get((instance.element, instance.cluster))
            if cluster_out is not None:
                cluster_out.instances.add().CopyFrom(instance.instance)
        return solution


async def load_records(repo: Repository, domain: str, solution: str) -> SolutionSnapshot:
    """Every record of a solution (header None when it does not exist)."""
    try:
        header = await repo.solutions.get_solution_header(domain, solution)
    except NotFound:
        return SolutionSnapshot(header=None)
    listed_elements, listed_clusters, listed_instances = await repo.solutions.parts(domain, solution)
    elements = {v.value.name: v for v in listed_elements}
    clusters = {(c.element, c.cluster.version): c for c in listed_clusters}
    instances = {i.instance.uuid: i for i in listed_instances}
    return SolutionSnapshot(header, elements, clusters, instances)


def _strip(message: pb.Solution | pb.Element | pb.Cluster, repeated: str) -> bytes:
    copy = type(message)()
    copy.CopyFrom(message)
    copy.ClearField(repeated)  # type: ignore[arg-type]
    return copy.SerializeToString(deterministic=True)


@dataclass
class Intent:
    """A solution's records as a request wants them, which instance records
    are still to be written, and how many instances each cluster is to grow
    by (`additions`, see planner.Additions): the run makes those as it sets
    them going, and stores each instance's record just before its first
    operation, so that a big deploy starts at once."""

    records: SolutionSnapshot
    unsaved: set[str] = field(default_factory=set)
    additions: dict[tuple[str, str], int] = field(default_factory=dict)
    deferred: Deferred = field(default_factory=lambda: Deferred())
    # Records the request's revision (None for a compensation, which
    # records none): the run calls it once its first operation has left.
    revision: Callable[[], Awaitable[pb.Revision]] | None = None


@dataclass
class Deferred:
    """New or changed element and cluster records of an intent left to the
    run, each with the revision it replaces (None: a new record). The run
    writes them once its first operation has left, and writes no record
    under a cluster, nor sends it an operation, before the cluster's record
    (and its element's) is stored. A new one may be the intent's own message
    (an element with its clusters): the store keeps only its own fields."""

    elements: dict[str, tuple[pb.Element, int | None]] = field(default_factory=dict)
    clusters: dict[tuple[str, str], tuple[pb.Cluster, int | None]] = field(default_factory=dict)


async def write_intent(repo: Repository, domain: str, current: SolutionSnapshot, wanted: pb.Solution,
                       first: tuple[str, str] | None = None) -> Intent:
    """Store `wanted` over `current` down to the clusters (create new records,
    compare-and-set changed ones, leave equal ones alone); instance records
    that are new or changed are returned unsaved. With `first` (element,
    version), only the header and that cluster's records are written here:
    the others are returned deferred (see Deferred), so that a big deploy's
    first operation does not wait for every cluster's records."""
    name = wanted.name
    records = SolutionSnapshot(current.header, dict(current.elements), dict(current.clusters), dict(current.instances))
    intent = Intent(records)
    # All at once: one connection publishes them in order, so the header is
    # stored before the records under it.
    writes = []

    async def header_written(header: pb.Solution, revision: int | None) -> None:
        records.header = Versioned(header, await repo.solutions.put_solution_header(domain, header, revision))

    header_bytes = _strip(wanted, "elements")
    if current.header is None or _strip(current.header.value, "elements") != header_bytes:
        writes.append(header_written(pb.Solution.FromString(header_bytes), current.header.revision if current.header else None))

    async def element_written(element: pb.Element, revision: int | None) -> None:
        records.elements[element.name] = Versioned(element, await repo.solutions.put_element(domain, name, element, revision))

    async def cluster_written(element: str, cluster: pb.Cluster, revision: int | None) -> None:
        stored = await repo.solutions.put_cluster(domain, name, element, cluster, revision)
        records.clusters[(element, cluster.version)] = ClusterRecord(element, cluster, stored)

    deferred = intent.deferred
    for element in wanted.elements:
        old_element = current.elements.get(element.name)
        later = first is not None and element.name != first[0]
        if old_element is None and later:
            # New and deferred: taken as it is (the store keeps an element
            # without its clusters), not copied and compared before the first operation.
            deferred.elements[element.name] = (element, None)
        else:
            element_bytes = _strip(element, "clusters")
            if old_element is None or _strip(old_element.value, "clusters") != element_bytes:
                revision = old_element.revision if old_element else None
                if later:
                    deferred.elements[element.name] = (pb.Element.FromString(element_bytes), revision)
                else:
                    writes.append(element_written(pb.Element.FromString(element_bytes), revision))
        for cluster in element.clusters:
            key = (element.name, cluster.version)
            old_cluster = current.clusters.get(key)
            later = first is not None and key != first
            if old_cluster is None and later and not cluster.instances:
                deferred.clusters[key] = (cluster, None)  # likewise (it has no instances to leave out)
            else:
                cluster_bytes = _strip(cluster, "instances")
                if old_cluster is None or _strip(old_cluster.cluster, "instances") != cluster_bytes:
                    revision = old_cluster.revision if old_cluster else None
                    if later:
                        deferred.clusters[key] = (pb.Cluster.FromString(cluster_bytes), revision)
                    else:
                        writes.append(cluster_written(element.name, pb.Cluster.FromString(cluster_bytes), revision))
            for instance in cluster.instances:
                old_instance = current.instances.get(instance.uuid)
                if old_instance is None or old_instance.instance != instance:
                    revision = old_instance.revision if old_instance else None
                    records.instances[instance.uuid] = InstanceRecord(element.name, cluster.version, instance, revision)
                    intent.unsaved.add(instance.uuid)
    await gather_bounded(writes)
    return intent
