"""Links to controller replicas: registrations come from the KV bucket (any
dispatcher may have taken them), operations go out in batches on one gRPC
stream per replica, results come back in batches. The operations of one
instance stay on one replica (see ControllerPool)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import grpc
from nats.aio.subscription import Subscription

from orchestration.runtime.credentials import engine_credential_for
from orchestration.store.leases import Registrations, controller_names, registration_key
from orchestration.v1 import controller_pb2 as cpb
from orchestration.v1 import controller_pb2_grpc as cpb_grpc
from orchestration.v1 import records_pb2 as rpb
from orchestration.v1.model_pb2 import Transition
from orchestration_sdk.runtime.batching import let_others_join
from orchestration_sdk.runtime.concurrency import cancel_and_wait
from orchestration_sdk.runtime.tls import TlsConfig
from orchestration_sdk.runtime.tls import channel as tls_channel
from orchestration_sdk.runtime.wire import MAX_MESSAGE_BYTES, bearer_metadata

log = logging.getLogger("dispatcher.controllers")


class LinkLost(Exception):
    """The replica went away before answering; the outcome is unknown."""


class NoController(Exception):
    """No live replica serves this controller."""


# A stream message holds at most this many operations (and the member lists
# they refer to), so that no message comes near the gRPC size limit.
MAX_BATCH_OPERATIONS = 500
MAX_BATCH_ENDPOINTS = 50_000

Views = dict[str, tuple[str, ...]]


@dataclass
class Link:
    """One bidirectional Execute stream to one controller replica."""

    registration: rpb.ControllerRegistration
    credential: str
    tls: TlsConfig | None = None
    pending: dict[str, asyncio.Future[cpb.OperationResult]] = field(default_factory=dict)
    outbox: list[tuple[cpb.Operation, Views]] = field(default_factory=list)
    # The priority lane (a rollback's operations): sent ahead of the outbox.
    urgent: list[tuple[cpb.Operation, Views]] = field(default_factory=list)
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    # Resolved once the operations queued with them are written to the stream (see submit).
    sent_waiters: list[asyncio.Future[None]] = field(default_factory=list)
    closed: bool = False
    _task: asyncio.Task[None] | None = None

    @property
    def load(self) -> int:
        return len(self.pending)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"link {self.registration.replica}")

    async def close(self) -> None:
        self.closed = True
        self.wakeup.set()
        if self._task is not None:
            await cancel_and_wait([self._task])
        self._fail_pending()

    def submit(self, operation: cpb.Operation, views: Views, sent: asyncio.Future[None] | None = None,
               urgent: bool = False) -> asyncio.Future[cpb.OperationResult]:
        """Queue an operation (with the member lists it refers to); the future
        resolves with its result, and `sent` once it is written to the stream.
        `urgent` ones (the priority lane) go into the next message ahead of
        everything queued in the ordinary lane."""
        if self.closed:
            raise LinkLost(f"controller replica {self.registration.replica} is gone")
        if sent is not None:
            self.sent_waiters.append(sent)
        future = self.pending.get(operation.operation_id)
        if future is None or future.done():
            future = asyncio.get_running_loop().create_future()
            self.pending[operation.operation_id] = future
        (self.urgent if urgent else self.outbox).append((operation, views))
        self.wakeup.set()
        return future

    def _fail_pending(self) -> None:
        for future in self.pending.values():
            if not future.done():
                future.set_exception(LinkLost(f"controller replica {self.registration.replica} disconnected"))
        self.pending.clear()
        waiters, self.sent_waiters = self.sent_waiters, []
        _resolve(waiters)

    def _batches(self, queued: list[tuple[cpb.Operation, Views]]) -> Iterator[cpb.ExecuteRequest]:
        """Everything queued, in order (the priority lane, then the domains
        taking turns: see fair_order), in as few messages as the size bounds allow."""
        operations: list[cpb.Operation] = []
        views: Views = {}
        endpoints = 0
        for operation, needed in queued:
            extra = sum(len(v) for k, v in needed.items() if k not in views)
            if operations and (len(operations) >= MAX_BATCH_OPERATIONS or endpoints + extra > MAX_BATCH_ENDPOINTS):
                yield _request(operations, views)
                operations, views, endpoints = [], {}, 0
                extra = sum(len(v) for v in needed.values())
            operations.append(operation)
            views.update(needed)
            endpoints += extra
        if operations:
            yield _request(operations, views)

    async def _requests(self) -> AsyncIterator[cpb.ExecuteRequest]:
        while not self.closed:
            await self.wakeup.wait()
            self.wakeup.clear()
            await let_others_join(len(self.outbox) + len(self.urgent), len(self.pending))
            if self.outbox or self.urgent:
                queued, self.outbox, self.urgent = self.urgent + fair_order(self.outbox), [], []
                waiters, self.sent_waiters = self.sent_waiters, []
                for request in self._batches(queued):
                    yield request
                # gRPC asks for the next message once it has written the last.
                _resolve(waiters)

    async def _run(self) -> None:
        options = [("grpc.max_receive_message_length", MAX_MESSAGE_BYTES), ("grpc.max_send_message_length", MAX_MESSAGE_BYTES)]
        try:
            async with tls_channel(self.registration.address, self.tls, options) as channel:
                stub = cpb_grpc.ControllerServiceStub(channel)
                credential = engine_credential_for(self.credential, self.registration.name)
                call = stub.Execute(self._requests(), metadata=bearer_metadata(credential))
                async for response in call:
                    for result in response.results:
                        future = self.pending.pop(result.operation_id, None)
                        if future is not None and not future.done():
                            future.set_result(result)
        except asyncio.CancelledError:
            raise
        except grpc.aio.AioRpcError as err:
            log.warning("stream to %s (%s) ended: %s %s", self.registration.replica, self.registration.address, err.code().name, err.details())
        except Exception:  # noqa: BLE001 - a broken link must never take the dispatcher down
            log.exception("stream to %s failed", self.registration.replica)
        finally:
            self.closed = True
            self._fail_pending()


def fair_order(queued: list[tuple[cpb.Operation, Views]]) -> list[tuple[cpb.Operation, Views]]:
    """The queued operations with the domains taking turns, one operation
    each, in the order each domain queued them: a domain that queued few
    operations behind another's thousands gets them into the first message
    (and to the controller's admission) instead of after all of those."""
    by_domain: dict[str, list[tuple[cpb.Operation, Views]]] = {}
    for item in queued:
        by_domain.setdefault(item[0].instance.domain, []).append(item)
    if len(by_domain) < 2:
        return queued
    ordered: list[tuple[cpb.Operation, Views]] = []
    lanes = list(by_domain.values())
    for turn in range(max(len(lane) for lane in lanes)):
        ordered.extend(lane[turn] for lane in lanes if turn < len(lane))
    return ordered


class DomainQuota:
    """At most `limit` operations of one domain in flight at once, over all
    its runs (0: no limit); the others of that domain wait here, in the order
    they came, before any of their work (see Run._send)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._slots: dict[str, asyncio.Semaphore] = {}

    @contextlib.asynccontextmanager
    async def held(self, domain: str, urgent: bool = False) -> AsyncIterator[None]:
        """A place for one operation of the domain; `urgent` ones (the
        priority lane: a rollback's) never wait for one, nor take one."""
        if self.limit <= 0 or urgent:
            yield
            return
        slots = self._slots.get(domain)
        if slots is None:
            slots = self._slots[domain] = asyncio.Semaphore(self.limit)
        async with slots:
            yield

    def waiting(self, domain: str) -> bool:
        """Whether the domain's operations wait for a place now."""
        slots = self._slots.get(domain)
        return slots is not None and slots.locked()


def _resolve(waiters: list[asyncio.Future[None]]) -> None:
    for waiter in waiters:
        if not waiter.done():
            waiter.set_result(None)


def _request(operations: list[cpb.Operation], views: Views) -> cpb.ExecuteRequest:
    return cpb.ExecuteRequest(
        operations=operations, members=[cpb.Members(key=k, endpoints=v) for k, v in views.items()]
    )


# Operations after which a controller holds nothing of the instance any more.
_FORGETTING = (Transition.TRANSITION_DESTROY, Transition.TRANSITION_RESET)


def _time_out(future: asyncio.Future[cpb.OperationResult]) -> None:
    if not future.done():
        future.set_exception(asyncio.TimeoutError())


def _rendezvous(instance: str, replica: str) -> bytes:
    """Rendezvous-hash weight: the same in every dispatcher process (hash() is salted)."""
    return hashlib.blake2b(f"{instance}\0{replica}".encode(), digest_size=8).digest()


class ControllerPool:
    """Live controller replicas by name, kept in step with the registrations bucket.

    A replica may hold instances of its own (the sim keeps one table per
    replica), so every operation of an instance goes to one replica, its
    home: the replica that got the instance's last operation or, for an
    instance this dispatcher has not sent anything for yet, the registered
    replica that rendezvous hashing picks (the same pick after a dispatcher
    restart). While the home is registered but unreachable (a replica being
    restarted), its operations wait for it; once its registration is gone
    (unregistered or expired), the instance moves to another replica.
    """

    def __init__(self, registrations: Registrations, credential: str, wait_for_controller: float = 30.0, tls: TlsConfig | None = None,
                 domain_concurrency: int = 0) -> None:
        self.registrations = registrations
        self.quota = DomainQuota(domain_concurrency)
        self.tls = tls
        self.credential = credential
        self.wait_for_controller = wait_for_controller
        self.links: dict[str, Link] = {}
        self.registered: dict[str, rpb.ControllerRegistration] = {}
        self.homes: dict[str, str] = {}  # instance uuid -> replica id
        # Replicas registered under each controller name, worked out once per refresh.
        self._serving: dict[str, list[str]] = {}
        self.changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._refreshing: asyncio.Future[None] | None = None
        self._watch: Subscription | None = None

    async def start(self) -> None:
        # A replica that registers is linked at once, and one that unregisters
        # let go at once, not at the next periodic refresh (watching from
        # before the first read: nothing falls in between). The replica's
        # stopping waits for that: its server lets open streams end first.
        self._watch = await self.registrations.on_change(self._registration_changed)
        await self.refresh()
        self._task = asyncio.create_task(self._refresh_loop(), name="controller pool")

    async def _registration_changed(self, key: str, removed: bool) -> None:
        # A known replica's heartbeat changes nothing here.
        if removed or not any(registration_key(r.name, replica) == key for replica, r in self.registered.items()):
            asyncio.ensure_future(self._refresh_quietly())

    async def _refresh_quietly(self) -> None:
        try:
            await self.refresh()
        except Exception:  # noqa: BLE001 - NATS may be away; the next refresh tries again
            log.debug("refreshing controller registrations failed", exc_info=True)

    async def stop(self) -> None:
        if self._watch is not None:
            with contextlib.suppress(Exception):
                await self._watch.unsubscribe()
        if self._task is not None:
            await cancel_and_wait([self._task])
        for link in list(self.links.values()):
            await link.close()
        self.links.clear()

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            await self._refresh_quietly()

    async def refresh(self) -> None:
        """Open links to new live replicas; drop expired or replaced ones.
        Callers at the same time share one read of the registrations."""
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.ensure_future(self._refresh())
        await asyncio.shield(self._refreshing)

    async def _refresh(self) -> None:
        live = await self.registrations.live()
        self.registered = live
        self._serving = {}
        for replica, link in list(self.links.items()):
            current = live.get(replica)
            if link.closed or current is None or current.address != link.registration.address:
                await link.close()
                del self.links[replica]
        for replica, registration in live.items():
            if replica not in self.links:
                link = Link(registration, self.credential, self.tls)
                link.start()
                self.links[replica] = link
                log.info("controller %s replica %s at %s", registration.name, replica, registration.address)
                self.changed.set()
            else:
                self.links[replica].registration = registration

    def _candidates(self, name: str) -> list[Link]:
        return [link for link in self.links.values() if not link.closed and name in controller_names(link.registration)]

    def _serving_replicas(self, name: str) -> list[str]:
        serving = self._serving.get(name)
        if serving is None:
            serving = [r for r, registration in self.registered.items() if name in controller_names(registration)]
            self._serving[name] = serving
        return serving

    def _home(self, name: str, instance: str) -> str:
        """The replica an instance's operations go to ("" when any will do)."""
        serving = self._serving_replicas(name)
        if not instance or not serving:
            return ""
        home = self.homes.get(instance, "")
        if home in serving:
            return home
        return max(serving, key=lambda replica: _rendezvous(instance, replica))

    async def choose(self, name: str, instance: str = "") -> Link:
        """The live replica of `name` for an operation of `instance` (its home,
        see the class docstring; the least loaded one without an instance);
        waits a while for one."""
        deadline = time.monotonic() + self.wait_for_controller
        refreshed = False
        while True:
            home = self._home(name, instance)
            link = self.links.get(home)
            if link is not None and not link.closed:
                self.homes[instance] = home
                return link  # the common case: the home replica is connected
            candidates = self._candidates(name)
            chosen = [link for link in candidates if link.registration.replica == home] if home else candidates
            remaining = deadline - time.monotonic()
            if not chosen and candidates and remaining <= 0:
                chosen = candidates  # the home stayed unreachable all this time: move the instance
            if chosen:
                link = min(chosen, key=lambda link: link.load)
                if instance:
                    self.homes[instance] = link.registration.replica
                return link
            if remaining <= 0:
                raise NoController(f"no controller '{name}' is registered (waited {self.wait_for_controller:.0f}s)")
            if not refreshed:
                # A replica may have registered since the last periodic refresh: look now.
                refreshed = True
                await self.refresh()
                continue
            self.changed.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.changed.wait(), timeout=min(remaining, 1.0))
            await self.refresh()

    async def preview(self, name: str, operation: cpb.Operation, timeout: float) -> str:
        """What the operation would change, as the home replica of its
        instance among controller `name`'s says (its dry run; "" when it
        cannot tell). grpc.aio.AioRpcError when the controller refuses."""
        link = await self.choose(name, operation.instance.uuid)
        async with self._unary(link.registration) as (stub, metadata):
            response = await stub.Preview(cpb.PreviewRequest(operation=operation), metadata=metadata, timeout=timeout)
        return str(response.text)

    @contextlib.asynccontextmanager
    async def _unary(self, registration: rpb.ControllerRegistration) -> AsyncIterator[
            tuple[cpb_grpc.ControllerServiceStub, tuple[tuple[str, str], ...]]]:
        """A channel of its own to one replica, for a unary call (the
        operations go over the replica's Execute stream), and the engine
        credential it is presented."""
        async with tls_channel(registration.address, self.tls) as channel:
            yield (cpb_grpc.ControllerServiceStub(channel),
                   bearer_metadata(engine_credential_for(self.credential, registration.name)))

    async def status(self, name: str, refs: list[cpb.InstanceReference], timeout: float) -> dict[str, int]:
        """The real state of instances of controller `name`, each asked of its
        home replica (uuid -> state; an instance its controller does not know
        is left out)."""
        by_home: dict[str, list[cpb.InstanceReference]] = {}
        for ref in refs:
            link = await self.choose(name, ref.uuid)
            by_home.setdefault(link.registration.replica, []).append(ref)
        states: dict[str, int] = {}
        for replica, asked in by_home.items():
            home = self.links.get(replica)
            if home is None:
                raise LinkLost(f"controller replica {replica} went away")
            async with self._unary(home.registration) as (stub, metadata):
                response = await stub.Status(cpb.StatusRequest(instances=asked), metadata=metadata, timeout=timeout)
            states.update({s.uuid: s.state for s in response.statuses if s.known})
        return states

    async def execute(self, name: str, operation: cpb.Operation, timeout: float, views: Views | None = None,
                      budget: float | None = None, sent: asyncio.Future[None] | None = None,
                      urgent: bool = False) -> cpb.OperationResult:
        """Run one operation on a replica of `name` (LinkLost, NoController, TimeoutError).

        `timeout` bounds the wait for the result here; `budget` (seconds), when
        given, sets the operation's deadline from the moment it is sent: the
        time spent before (recording progress, waiting for a replica) is not
        the controller's. `sent` is resolved once the operation is written
        to a replica's stream; `urgent` ones take the priority lane (see
        Link.submit). (The runs keep within their domain's quota, self.quota,
        before they build an operation: see Run._send.)
        """
        instance = operation.instance.uuid
        link = await self.choose(name, instance)
        if budget is not None:
            operation.deadline_unix_ms = int((time.time() + budget) * 1000)
        future = link.submit(operation, views or {}, sent, urgent)
        timer = asyncio.get_running_loop().call_later(timeout, _time_out, future)
        try:
            result = await future
        except asyncio.TimeoutError:
            link.pending.pop(operation.operation_id, None)
            raise
        finally:
            timer.cancel()
        if result.outcome == cpb.OUTCOME_OK and operation.transition in _FORGETTING:
            self.homes.pop(instance, None)
        return result
