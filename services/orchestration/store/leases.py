"""Leases of two kinds, both records that hold while they are renewed.

Solution leases: the record that says which root task a solution is busy
with and which dispatcher runs it (DESIGN.md sections 4 and 5).

The gateway creates the lease (owner empty: queued) when it accepts a
request, so that a second request for a busy solution is refused at once;
a dispatcher claims it with a compare-and-set, renews it while it works and
deletes it when the root task ends. A lease that is not renewed expires and
any dispatcher may take the work over.

Controller registrations (the controllers bucket): which names a
registration answers to, which registrations are live, and the typed store
(``Registrations``) the dispatcher and the monitor use."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from nats.aio.subscription import Subscription

from orchestration.model.names import encode_token
from orchestration.store.kvstore import Bucket
from orchestration.v1 import records_pb2 as rpb
from orchestration_sdk.status_errors import Aborted, FailedPrecondition

LEASE_SECONDS = 10.0
# Header of a request on the internal channel: the revision of the lease that
# accepting it wrote, so that a dispatcher can claim it without reading it first.
LEASE_REVISION_HEADER = "Orch-Lease-Revision"


def now_ms() -> int:
    return int(time.time() * 1000)


# Keys start with the domain, so that removing a domain removes its leases.
def solution_key(domain: str, solution: str) -> str:
    return f"{encode_token(domain)}.solution.{encode_token(solution)}"


def _terminations(domain: str, root: str) -> str:
    return f"{encode_token(domain)}.terminate.{encode_token(root)}"


def termination_key(domain: str, root: str, task: str) -> str:
    return f"{_terminations(domain, root)}.{encode_token(task)}"


# Kinds of a LegacyRequest, by number, and the change each stands for.
_LEGACY_KINDS = {1: "deploy", 2: "set_cluster", 3: "set_instance", 4: "remove", 5: "reconcile", 6: "set_solution", 7: "resume"}


def typed(request: rpb.Request) -> rpb.Request:
    """`request` with its change typed: a request accepted by a version
    before typed requests (a lease it left) carries its change in fields the
    contract now reserves, kept as unknown fields; they are read here, the
    one place that knows that layout."""
    if request.WhichOneof("change") is not None:
        return request
    old = rpb.LegacyRequest.FromString(request.SerializeToString())
    kind = _LEGACY_KINDS.get(old.kind)
    if kind is None:
        return request  # nothing to run; the dispatcher says so
    upgraded = rpb.Request()
    upgraded.CopyFrom(request)
    upgraded.DiscardUnknownFields()
    change = getattr(upgraded, kind)
    change.SetInParent()
    if kind == "deploy":
        change.architecture, change.version = old.architecture, old.version
        change.sizes.update(old.sizes)
    elif kind in ("set_cluster", "set_instance"):
        change.element, change.cluster, change.state = old.element, old.cluster, old.state
        if kind == "set_instance":
            change.instance = old.instance
        elif old.HasField("size"):
            change.size = old.size
    elif kind == "set_solution":
        change.state = old.state
    return upgraded


def read_request(data: bytes) -> rpb.Request:
    """A request from the internal channel."""
    return typed(rpb.Request.FromString(data))


def read_lease(key: str, data: bytes, revision: int) -> Lease:
    """A solution lease as stored, its request typed."""
    record = rpb.SolutionLease.FromString(data)
    if record.HasField("request") and record.request.WhichOneof("change") is None:
        record.request.CopyFrom(typed(record.request))
    return Lease(key, record, revision)


@dataclass(frozen=True)
class Lease:
    """A lease as read, with the revision to pass to the next compare-and-set."""

    key: str
    record: rpb.SolutionLease
    revision: int

    def claimable_by(self, owner: str, at_ms: int, queued_grace_ms: int = 0) -> bool:
        """True when `owner` may take this lease over now."""
        if self.record.owner == owner:
            return True
        if not self.record.owner:
            return at_ms - self.record.request.accepted // 1_000_000 >= queued_grace_ms
        return self.record.expires_unix_ms <= at_ms


def queued_lease(request: rpb.Request, revision: int) -> Lease:
    """The lease accepting `request` wrote, at its revision (what Leases.accept stores)."""
    return Lease(solution_key(request.domain, request.solution), rpb.SolutionLease(task=request.task, request=request), revision)


class Leases:
    """Reads and compare-and-set writes of leases and termination requests."""

    def __init__(self, bucket: Bucket) -> None:
        self.bucket = bucket

    async def get(self, domain: str, solution: str) -> Lease | None:
        key = solution_key(domain, solution)
        entry = await self.bucket.get(key)
        if entry is None:
            return None
        return read_lease(key, entry.value, entry.revision)

    async def accept(self, request: rpb.Request, over: Lease | None = None) -> int:
        """Queue a request's root task on its solution (the lease's revision), or
        FailedPrecondition if busy. `over`: a lease whose task has ended, replaced."""
        queued = queued_lease(request, 0)
        try:
            return await self.bucket.write(queued.key, queued.record.SerializeToString(), over.revision if over else None,
                                           f"lease of solution '{request.solution}'")
        except Aborted:
            current = await self.get(request.domain, request.solution)
            if current is None or not current.record.task:
                raise FailedPrecondition(f"solution '{request.domain}/{request.solution}' is busy with another "
                                         "request; try again in a moment") from None
            busy = current.record.task
            raise FailedPrecondition(
                f"solution '{request.domain}/{request.solution}' is busy with task {busy}; wait for it to finish "
                f"(`orch task get {busy} --domain {request.domain}`) or terminate it "
                f"(`orch task terminate {busy} --domain {request.domain}`), then try again"
            ) from None

    async def withdraw(self, request: rpb.Request, revision: int) -> None:
        """Take back a queued request that could not be published (only if still untouched)."""
        await self.bucket.delete(solution_key(request.domain, request.solution), revision, "solution lease")

    async def claim(self, lease: Lease, owner: str) -> Lease:
        """Take (or renew) the lease for owner; Aborted if someone else changed it."""
        record = rpb.SolutionLease()
        record.CopyFrom(lease.record)
        record.owner = owner
        record.expires_unix_ms = now_ms() + int(LEASE_SECONDS * 1000)
        revision = await self.bucket.write(lease.key, record.SerializeToString(), lease.revision, "solution lease")
        return Lease(lease.key, record, revision)

    async def release(self, lease: Lease) -> None:
        """Delete the lease if it is still ours as we last wrote it."""
        await self.bucket.delete(lease.key, lease.revision, "solution lease")

    async def all(self) -> list[Lease]:
        """Every solution lease."""
        return [
            read_lease(e.key, e.value, e.revision)
            for e in await self.bucket.scan("*.solution.*")
        ]

    async def request_termination(self, domain: str, root: str, task: str, actor: str = "operator", reason: str = "",
                                  superseded: bool = False) -> None:
        """Ask the owner of the tree under `root` to stop `task` (`superseded`:
        for a rollback that supersedes the running change)."""
        record = rpb.Termination(domain=domain, task=task, requested=time.time_ns(), actor=actor, reason=reason,
                                 superseded=superseded)
        await self.bucket.put(termination_key(domain, root, task), record.SerializeToString())

    async def terminations(self, domain: str, root: str) -> list[rpb.Termination]:
        entries = await self.bucket.scan(_terminations(domain, root) + ".*")
        return [rpb.Termination.FromString(e.value) for e in entries]

    async def clear_terminations(self, domain: str, root: str) -> None:
        await self.bucket.purge(_terminations(domain, root) + ".>")


# ---- controller registrations --------------------------------------------------------------


def registration_key(name: str, replica: str) -> str:
    """The key of a replica's registration in the controllers bucket."""
    return f"{encode_token(name)}.{encode_token(replica)}"


def controller_names(registration: rpb.ControllerRegistration) -> list[str]:
    """Every name a component's Controller field may use for this registration."""
    names = [registration.name, *registration.aliases]
    if registration.version:
        names.append(f"{registration.name}:{registration.version}")
    return names


async def live_registrations(bucket: Bucket) -> dict[str, rpb.ControllerRegistration]:
    """Live (unexpired) registrations by replica id."""
    now_ms = int(time.time() * 1000)
    live: dict[str, rpb.ControllerRegistration] = {}
    for entry in await bucket.scan(">"):
        registration = rpb.ControllerRegistration.FromString(entry.value)
        if registration.expires_unix_ms > now_ms:
            live[registration.replica] = registration
    return live


class Registrations:
    """Controller replicas' registrations: heartbeats written by the
    dispatchers, read by the dispatchers' controller pools and the monitor."""

    def __init__(self, bucket: Bucket) -> None:
        self._bucket = bucket

    async def put(self, registration: rpb.ControllerRegistration) -> None:
        """Store a replica's registration (the latest heartbeat is the truth)."""
        await self._bucket.put(registration_key(registration.name, registration.replica), registration.SerializeToString())

    async def remove(self, name: str, replica: str) -> None:
        await self._bucket.delete(registration_key(name, replica), None, "controller registration")

    async def live(self) -> dict[str, rpb.ControllerRegistration]:
        """Live (unexpired) registrations by replica id."""
        return await live_registrations(self._bucket)

    async def on_change(self, callback: Callable[[str, bool], Awaitable[None]]) -> Subscription:
        """Call back with the key of every registration written or removed from
        now on, and whether it was removed."""
        return await self._bucket.on_change(callback)
