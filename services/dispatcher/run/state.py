"""The in-memory view of one solution during a run: every cluster and
instance with its stored revision, the dependency gates between clusters,
and counters that make every gate check O(1) in the size of the solution."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field

from orchestration.model.lifecycle import ACTIVE, INITIAL
from orchestration.v1 import controller_pb2 as cpb
from orchestration.v1 import model_pb2 as pb
from orchestration.v1.model_pb2 import Transition

ClusterKey = tuple[str, str]  # (element, version)
# Plain ints: attribute access on protobuf enum wrappers is slow in a hot path.
_CREATE = int(Transition.TRANSITION_CREATE)
_START = int(Transition.TRANSITION_START)
_STOP = int(Transition.TRANSITION_STOP)
_DESTROY = int(Transition.TRANSITION_DESTROY)
_MODULUS = 2**64


def member_hash(slot: InstanceSlot) -> int:
    """A stable 64-bit hash of who a member is; membership hashes are sums of these,
    so adding or removing one member is arithmetic, not a new digest of the whole list."""
    identity = slot.record.endpoint or slot.record.uuid
    return int.from_bytes(hashlib.blake2b(identity.encode(), digest_size=8).digest(), "big")


@dataclass
class InstanceSlot:
    """One instance: its record, what it still has to do, and its task."""

    element: str
    cluster: str
    record: pb.Instance
    revision: int | None  # None: not stored yet
    unsaved: bool = False  # the record (new or changed intent) is still to be written
    saving: asyncio.Future[None] | None = None  # that write, while it runs
    path: list[Transition] = field(default_factory=list)
    inflight: bool = False
    waiting: bool = False  # queued for a retry back-off
    attempt: int = 1
    task: str = ""
    failed: bool = False
    # Membership hash of the siblings sent with the operation in flight.
    sent_siblings: int = 0

    @property
    def key(self) -> ClusterKey:
        return (self.element, self.cluster)

    @property
    def busy(self) -> bool:
        return bool(self.path) or self.inflight or self.waiting


# Cluster parameter: "ignore" when the component does not use its member list.
SIBLINGS_PARAMETER = "orch_siblings"


@dataclass
class ClusterSlot:
    """One cluster, its providers and dependants, and its counters."""

    element: str
    record: pb.Cluster
    revision: int | None  # None: not stored yet
    component: str
    controller: str
    parameters: dict[str, str]
    members: set[str] = field(default_factory=set)
    context_providers: list[ClusterKey] = field(default_factory=list)
    service_providers: list[ClusterKey] = field(default_factory=list)
    context_dependants: list[ClusterKey] = field(default_factory=list)
    service_dependants: list[ClusterKey] = field(default_factory=list)
    replacements: list[ClusterKey] = field(default_factory=list)
    # Its instances stop as its element's rollout gate admits them, not once
    # its replacement is wholly active.
    rolled_out: bool = False
    # Instances blocked by this cluster, by what they wait for ("active": it to
    # be active; "down": its members going down to have stopped; "away": its
    # members going away to be destroyed). They are looked at again only when
    # that condition holds, so a big cluster does not wake a big waiting one
    # at each of its operations.
    waiters: dict[str, set[str]] = field(default_factory=lambda: {"active": set(), "down": set(), "away": set()})
    task: str = ""
    # What every operation of the cluster has in common (see Run._template).
    template: cpb.Operation | None = None
    membership_changed: bool = False
    settling: bool = False
    # The live active members (uuid -> endpoint) and an order-free hash of who
    # they are (endpoint, or uuid while there is none), both kept up to date by
    # SolutionState.count; the endpoint list is rebuilt after a real change only.
    active_members: dict[str, str] = field(default_factory=dict)
    view_hash: int = 0
    view: tuple[str, ...] | None = None
    # Counters, kept by SolutionState.count.
    live: int = 0  # instances not being removed
    live_active: int = 0
    active_going_down: int = 0  # active, and leaving active
    alive_going_away: int = 0  # not initial, and going to initial
    busy: int = 0  # instances with work left

    @property
    def ignores_siblings(self) -> bool:
        """The cluster's parameter `orch_siblings: ignore`: its component does
        not use its member list (no list sent, no reconfigure when it changes)."""
        return self.parameters.get(SIBLINGS_PARAMETER) == "ignore"

    @property
    def key(self) -> ClusterKey:
        return (self.element, self.record.version)

    @property
    def active(self) -> bool:
        """Every live instance is active (and there is at least one)."""
        return self.live > 0 and self.live_active == self.live


class SolutionState:
    """Clusters and instances of one solution during a run."""

    def __init__(self) -> None:
        self.clusters: dict[ClusterKey, ClusterSlot] = {}
        self.instances: dict[str, InstanceSlot] = {}

    def add_cluster(self, slot: ClusterSlot) -> None:
        self.clusters[slot.key] = slot

    def add_instance(self, slot: InstanceSlot, counted: bool = False) -> None:
        """Add an instance (`counted`: a new one that `expect` counted already)."""
        self.instances[slot.record.uuid] = slot
        self.clusters[slot.key].members.add(slot.record.uuid)
        if not counted:
            self.count(slot, +1)

    def expect(self, cluster: ClusterSlot, count: int, busy: bool) -> None:
        """Count `count` new instances of the cluster before they are added
        (initial, not removed, with work to do when `busy`): what count(+1)
        adds for each of them."""
        cluster.live += count
        if busy:
            cluster.busy += count

    def remove_instance(self, slot: InstanceSlot) -> None:
        if self._member(slot):
            self.members_changed(self.clusters[slot.key])
        self.count(slot, -1)
        self.clusters[slot.key].members.discard(slot.record.uuid)
        del self.instances[slot.record.uuid]

    def link(self) -> None:
        """Index providers, dependants and rolling replacements of every cluster."""
        for slot in self.clusters.values():
            for rel in slot.record.relationships:
                provider = self.clusters.get((rel.element, rel.version))
                if provider is None:
                    continue
                if rel.type == pb.DEPENDENCY_TYPE_CONTEXT:
                    slot.context_providers.append(provider.key)
                    provider.context_dependants.append(slot.key)
                else:
                    slot.service_providers.append(provider.key)
                    provider.service_dependants.append(slot.key)
        for slot in self.clusters.values():
            # Members whose view of the cluster is stale (it changed since they
            # were told, maybe in an earlier run) are found when it settles.
            slot.membership_changed = True
            if slot.record.remove:
                slot.replacements = [
                    other.key for other in self.clusters.values()
                    if other.element == slot.element and not other.record.remove and other.record.target == ACTIVE
                ]

    def count(self, slot: InstanceSlot, sign: int) -> None:
        """Add (+1) or take away (-1) an instance's share of its cluster's counters."""
        cluster = self.clusters[slot.key]
        record = slot.record
        state = record.state or INITIAL
        leaving = record.remove or record.target != ACTIVE
        if not record.remove:
            cluster.live += sign
            if state == ACTIVE:
                cluster.live_active += sign
        if state == ACTIVE and leaving:
            cluster.active_going_down += sign
        if state != INITIAL and (record.remove or record.target == INITIAL):
            cluster.alive_going_away += sign
        if slot.busy:
            cluster.busy += sign
        if state == ACTIVE and not record.remove:
            cluster.view_hash = (cluster.view_hash + sign * member_hash(slot)) % _MODULUS
            if sign > 0:
                cluster.active_members[record.uuid] = record.endpoint
            else:
                cluster.active_members.pop(record.uuid, None)

    def update(self, slot: InstanceSlot, change: Callable[[], object]) -> None:
        """Apply a change to an instance, keeping its cluster's counters and
        membership right (a join, a leave or a new endpoint is a change of membership)."""
        before = self._identity(slot)
        self.count(slot, -1)
        change()
        self.count(slot, +1)
        if self._identity(slot) != before:
            self.members_changed(self.clusters[slot.key])

    def _identity(self, slot: InstanceSlot) -> str | None:
        return (slot.record.endpoint or slot.record.uuid) if self._member(slot) else None

    def blockers(self, slot: InstanceSlot) -> list[tuple[ClusterKey, str]]:
        """Clusters the instance's next transition waits for, and for what (empty: it may go)."""
        cluster = self.clusters[slot.key]
        transition = slot.path[0]
        if transition == _CREATE:
            return [(k, "active") for k in cluster.context_providers if not self.clusters[k].active]
        if transition == _START:
            return [(k, "active") for k in cluster.service_providers if not self.clusters[k].active]
        if transition == _STOP:
            waits = [(k, "down") for k in cluster.service_dependants if self.clusters[k].active_going_down > 0]
            if cluster.record.remove and not cluster.rolled_out:
                waits += [(k, "active") for k in cluster.replacements if not self.clusters[k].active]
            return waits
        if transition == _DESTROY:
            return [(k, "away") for k in cluster.context_dependants if self.clusters[k].alive_going_away > 0]
        return []

    @staticmethod
    def released(cluster: ClusterSlot) -> list[str]:
        """The kinds of waiting this cluster no longer causes."""
        return [kind for kind, holds in (("active", cluster.active), ("down", cluster.active_going_down == 0),
                                         ("away", cluster.alive_going_away == 0)) if holds]

    def members_changed(self, cluster: ClusterSlot) -> None:
        cluster.membership_changed = True
        cluster.view = None

    def _member(self, slot: InstanceSlot) -> bool:
        return slot.record.state == ACTIVE and not slot.record.remove

    def endpoints(self, cluster: ClusterSlot) -> tuple[str, ...]:
        """Endpoints of the cluster's live active instances (cached until membership changes)."""
        if cluster.view is None:
            cluster.view = tuple(e for e in cluster.active_members.values() if e)
        return cluster.view

    def membership(self, cluster: ClusterSlot) -> str:
        """Who the cluster's live active members are, as a short token."""
        return format(cluster.view_hash, "016x")

    def others(self, cluster: ClusterSlot, slot: InstanceSlot) -> int:
        """The membership hash without this instance (what its siblings are)."""
        own = member_hash(slot) if self._member(slot) else 0
        return (cluster.view_hash - own) % _MODULUS

    @staticmethod
    def told(others: int, slot: InstanceSlot) -> str:
        """The membership an instance knows of: the siblings it was sent, and itself."""
        return format((others + member_hash(slot)) % _MODULUS, "016x")
