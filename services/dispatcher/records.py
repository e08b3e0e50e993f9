"""Reading a solution's records with their revisions, and writing a new
intent for it record by record (compare-and-set, only what changed)."""

from __future__ import annotations

from dataclasses import dataclass, field

from orchestration.errors import NotFound
from orchestration.kvstore import Versioned, gather_bounded
from orchestration.repository import Repository
from orchestration.solution_records import ClusterRecord, InstanceRecord
from orchestration.v1 import model_pb2 as pb


@dataclass
class SolutionRecordSet:
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


async def load_records(repo: Repository, domain: str, solution: str) -> SolutionRecordSet:
    """Every record of a solution (header None when it does not exist)."""
    try:
        header = await repo.get_solution_header(domain, solution)
    except NotFound:
        return SolutionRecordSet(header=None)
    elements = {v.value.name: v for v in await repo.list_elements(domain, solution)}
    clusters = {(c.element, c.cluster.version): c for c in await repo.list_clusters(domain, solution)}
    instances = {i.instance.uuid: i for i in await repo.list_instances(domain, solution)}
    return SolutionRecordSet(header, elements, clusters, instances)


def _strip(message: pb.Solution | pb.Element | pb.Cluster, repeated: str) -> bytes:
    copy = type(message)()
    copy.CopyFrom(message)
    copy.ClearField(repeated)  # type: ignore[arg-type]
    return copy.SerializeToString(deterministic=True)


async def write_intent(repo: Repository, domain: str, current: SolutionRecordSet, wanted: pb.Solution) -> None:
    """Store `wanted` over `current`: create new records, update changed ones
    (each a compare-and-set on the revision read), leave equal ones alone."""
    name = wanted.name
    writes = []
    header_bytes = _strip(wanted, "elements")
    if current.header is None:
        writes.append(repo.put_solution_header(domain, pb.Solution.FromString(header_bytes), None))
    elif _strip(current.header.value, "elements") != header_bytes:
        writes.append(repo.put_solution_header(domain, pb.Solution.FromString(header_bytes), current.header.revision))
    for element in wanted.elements:
        element_bytes = _strip(element, "clusters")
        old_element = current.elements.get(element.name)
        if old_element is None or _strip(old_element.value, "clusters") != element_bytes:
            writes.append(repo.put_element(domain, name, pb.Element.FromString(element_bytes), old_element.revision if old_element else None))
        for cluster in element.clusters:
            cluster_bytes = _strip(cluster, "instances")
            old_cluster = current.clusters.get((element.name, cluster.version))
            if old_cluster is None or _strip(old_cluster.cluster, "instances") != cluster_bytes:
                revision = old_cluster.revision if old_cluster else None
                writes.append(repo.put_cluster(domain, name, element.name, pb.Cluster.FromString(cluster_bytes), revision))
            for instance in cluster.instances:
                old_instance = current.instances.get(instance.uuid)
                if old_instance is None or old_instance.instance != instance:
                    revision = old_instance.revision if old_instance else None
                    writes.append(repo.put_instance(domain, name, element.name, cluster.version, instance, revision))
    await gather_bounded(writes)
