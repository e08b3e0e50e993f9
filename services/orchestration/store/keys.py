"""Where the information model lives in the KV buckets: keys, key filters,
readable descriptions of records, and the split of a solution tree into one
record per solution, element, cluster and instance (and back). Pure: no I/O.

Every user-supplied name enters a key through ``subjects.model_key`` or
``subjects.record_key`` (that is, ``names.encode_token``), so a token never
holds a ``.``, ``*`` or ``>`` and a filter such as ``<domain>.*`` is exact.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import NamedTuple

from google.protobuf.message import Message

from orchestration.model.names import decode_token, encode_token
from orchestration.store.subjects import model_key, record_key
from orchestration.v1.model_pb2 import Cluster, Element, Instance, Solution
from orchestration_sdk.status_errors import InvalidArgument


def _need(**names: str) -> None:
    """Reject empty names: they would make an invalid key such as ``a..b``."""
    if all(names.values()):
        return
    for role, value in names.items():
        if not value:
            raise InvalidArgument(f"{role} name is required")


def decode_key(key: str) -> list[str]:
    """The names a key was built from (a constant kind token decodes to itself)."""
    return [decode_token(t) for t in key.split(".")]


# Model bucket.
DOMAINS_FILTER = "domain.*"


def domain_key(domain: str) -> str:
    _need(domain=domain)
    return model_key("domain", domain)


def component_key(domain: str, name: str, version: str) -> str:
    _need(domain=domain, component=name, version=version)
    return model_key("component", domain, name, version)


def architecture_key(domain: str, name: str, version: str) -> str:
    _need(domain=domain, architecture=name, version=version)
    return model_key("architecture", domain, name, version)


def controller_key(domain: str, name: str) -> str:
    _need(domain=domain, controller=name)
    return model_key("controller", domain, name)


def domain_model_filters(domain: str, kind: str) -> str:
    """Filter of every model key of one kind (component, architecture, controller) in a domain."""
    _need(domain=domain)
    return model_key(kind, domain) + ".>"


# Solutions bucket: <domain>.<solution>[.<element>[.<cluster>[.<uuid>]]].
def solution_key(domain: str, solution: str) -> str:
    _need(domain=domain, solution=solution)
    return record_key(domain, solution)


def element_key(domain: str, solution: str, element: str) -> str:
    _need(domain=domain, solution=solution, element=element)
    return record_key(domain, solution, element)


def cluster_key(domain: str, solution: str, element: str, cluster: str) -> str:
    _need(domain=domain, solution=solution, element=element, cluster=cluster)
    return record_key(domain, solution, element, cluster)


def instance_key(domain: str, solution: str, element: str, cluster: str, uuid: str) -> str:
    _need(domain=domain, solution=solution, element=element, cluster=cluster, instance=uuid)
    return record_key(domain, solution, element, cluster, uuid)


def solutions_filter(domain: str) -> str:
    """Filter of the solution header records of a domain."""
    _need(domain=domain)
    return record_key(domain) + ".*"


def domain_filters(domain: str) -> tuple[str, str]:
    """Filters of every key of a domain in a bucket keyed by record_key."""
    _need(domain=domain)
    return record_key(domain), record_key(domain) + ".>"


# A name never starts with "_", nor does its token: fence keys never meet a record's.
FENCE_PREFIX = "_fence"
# Where the fencing probe writes (a "_" token is never a domain's).
FENCE_PROBE = "_probe"


def fence_key(domain: str, solution: str) -> str:
    """The key of a solution's fence (in the solutions and tasks buckets)."""
    _need(domain=domain, solution=solution)
    return f"{FENCE_PREFIX}.{record_key(domain, solution)}"


def fence_filter(domain: str) -> str:
    """Filter of the fence keys of a domain's solutions."""
    _need(domain=domain)
    return f"{FENCE_PREFIX}.{record_key(domain)}.*"


# Graves (records_pb2.Grave): what was removed, and from which stream
# sequence on a record of it is alive again. A solution's grave stays while
# its domain lives; a domain's, while its bucket does.
GRAVE_PREFIX = "_removed"


def grave_key(domain: str, solution: str = "") -> str:
    """The key of a solution's grave, or (without a solution) of a domain's."""
    _need(domain=domain)
    return f"{GRAVE_PREFIX}.{record_key(domain, solution) if solution else record_key(domain)}"


def grave_filters(domain: str, solution: str = "") -> tuple[str, str]:
    """Filters of the graves that rule over one solution's records (or, without
    a solution, over every record of the domain): the domain's and the solution's."""
    _need(domain=domain)
    return grave_key(domain), (grave_key(domain, solution) if solution else f"{GRAVE_PREFIX}.{record_key(domain)}.*")


# Revisions (model_pb2.Revision) of a solution, by number: they outlive the
# solution's removal (a removed solution's history can be read, and a deploy
# of it again goes on counting) and go with its domain.
REVISION_PREFIX = "_revision"


def revision_key(domain: str, solution: str, number: int) -> str:
    _need(domain=domain, solution=solution)
    return f"{REVISION_PREFIX}.{record_key(domain, solution)}.{number:09d}"


def revision_filter(domain: str, solution: str = "") -> str:
    """Filter of the revisions of one solution (or, without one, of a domain's)."""
    _need(domain=domain)
    return f"{REVISION_PREFIX}.{record_key(domain, solution)}.*" if solution else f"{REVISION_PREFIX}.{record_key(domain)}.>"


def solution_of_key(key: str) -> tuple[str, str] | None:
    """The (domain, solution) a solutions-bucket key belongs to (its record,
    a record below it, its fence, its grave or a revision); None for any other key."""
    tokens = key.split(".")
    if tokens[0] in (FENCE_PREFIX, GRAVE_PREFIX, REVISION_PREFIX):
        tokens = tokens[1:]
    if len(tokens) < 2 or tokens[0].startswith("_"):
        return None
    return decode_token(tokens[0]), decode_token(tokens[1])


def solution_filters(domain: str, solution: str) -> tuple[str, str]:
    """Filters of every record of one solution (its header and everything below)."""
    key = solution_key(domain, solution)
    return key, key + ".>"


def level_filter(domain: str, solution: str, depth: int, *names: str) -> str:
    """Filter of the records `depth` tokens below the solution; empty names match any."""
    key = solution_key(domain, solution)
    tokens = [encode_token(n) if n else "*" for n in names]
    return ".".join([key, *tokens, *["*"] * (depth - len(tokens))])


# Tasks bucket.
def task_key(domain: str, uuid: str) -> str:
    _need(domain=domain, task=uuid)
    return record_key(domain, uuid)


# Readable names of records, for error messages.
def describe_solution(solution: str) -> str:
    return f"solution {solution!r}"


def describe_element(solution: str, element: str) -> str:
    return f"element {element!r} of solution {solution!r}"


def describe_cluster(solution: str, element: str, cluster: str) -> str:
    return f"cluster {cluster!r} of element {element!r} of solution {solution!r}"


def describe_instance(solution: str, element: str, cluster: str, uuid: str) -> str:
    return f"instance {uuid!r} of cluster {cluster!r} of element {element!r} of solution {solution!r}"


def in_domain(thing: str, domain: str) -> str:
    return f"{thing} in domain {domain!r}"


def not_found(thing: str, domain: str) -> str:
    return f"{thing} not found in domain {domain!r}"


# Solution trees <-> records.
class SolutionRecord(NamedTuple):
    """One stored record of a solution tree."""

    key: str
    value: Message
    what: str


def solution_header(solution: Solution) -> Solution:
    """The solution's own record: the solution without its elements."""
    if not solution.elements:
        return solution
    header = Solution()
    header.CopyFrom(solution)
    header.ClearField("elements")
    return header


def bare_element(element: Element) -> Element:
    """The element's own record: the element without its clusters."""
    if not element.clusters:
        return element
    bare = Element()
    bare.CopyFrom(element)
    bare.ClearField("clusters")
    return bare


def bare_cluster(cluster: Cluster) -> Cluster:
    """The cluster's own record: the cluster without its instances."""
    if not cluster.instances:
        return cluster
    bare = Cluster()
    bare.CopyFrom(cluster)
    bare.ClearField("instances")
    return bare


def split_solution(domain: str, solution: Solution) -> list[SolutionRecord]:
    """The records of a full solution tree, the solution header first."""
    s = solution.name
    records = [SolutionRecord(solution_key(domain, s), solution_header(solution), in_domain(describe_solution(s), domain))]
    for element in solution.elements:
        e = element.name
        records.append(
            SolutionRecord(element_key(domain, s, e), bare_element(element), in_domain(describe_element(s, e), domain))
        )
        for cluster in element.clusters:
            c = cluster.version
            what = in_domain(describe_cluster(s, e, c), domain)
            records.append(SolutionRecord(cluster_key(domain, s, e, c), bare_cluster(cluster), what))
            for instance in cluster.instances:
                what = in_domain(describe_instance(s, e, c, instance.uuid), domain)
                records.append(SolutionRecord(instance_key(domain, s, e, c, instance.uuid), instance, what))
    return records


def assemble_solutions(records: Iterable[tuple[str, bytes]]) -> dict[str, Solution]:
    """Full solution trees from the records of one domain, keyed by solution name.

    `records` are (key, value) pairs from the solutions bucket. The trees are
    in canonical order (elements by name, clusters by version, instances by
    uuid); records whose parent record is missing are left out.
    """
    headers: dict[str, Solution] = {}
    elements: dict[str, list[tuple[str, Element]]] = defaultdict(list)
    clusters: dict[tuple[str, str], list[tuple[str, Cluster]]] = defaultdict(list)
    instances: dict[tuple[str, str, str], list[Instance]] = defaultdict(list)
    for key, value in records:
        names = decode_key(key)[1:]  # drop the domain
        if len(names) == 1:
            headers[names[0]] = Solution.FromString(value)
        elif len(names) == 2:
            elements[names[0]].append((names[1], Element.FromString(value)))
        elif len(names) == 3:
            clusters[(names[0], names[1])].append((names[2], Cluster.FromString(value)))
        elif len(names) == 4:
            instances[(names[0], names[1], names[2])].append(Instance.FromString(value))
    # Built top-down with add() + MergeFrom: appending a finished sub-tree would
    # deep-copy it once per level, and a solution may hold 10,000 instances.
    for s, header in headers.items():
        for e, element in sorted(elements.get(s, []), key=lambda pair: pair[0]):
            element_out = header.elements.add()
            element_out.MergeFrom(element)
            for c, cluster in sorted(clusters.get((s, e), []), key=lambda pair: pair[0]):
                cluster_out = element_out.clusters.add()
                cluster_out.MergeFrom(cluster)
                cluster_out.instances.extend(sorted(instances.get((s, e, c), []), key=lambda i: i.uuid))
    return headers
