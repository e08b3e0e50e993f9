"""Asking controllers for the real state of instances: one Status call per
batch of up to `batch_size` instances, on a live replica of the controller,
with the controller credential as bearer token.

Replicas may keep instances of their own (the sim does), so an instance one
replica does not know is asked of the others before it is taken for gone:
"unknown" makes the monitor recreate an instance, so it must be everybody's
answer. Only the unknown ones are asked again, so a controller whose replicas
share their state pays for this only where there is real drift.

A call's request is made as it goes out, from the instances still to be
asked: no reference is kept per instance (10,000 of them, and their copies
in the requests, took 10 MB at the poll's peak)."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import grpc

from monitor.inventory import Watched
from orchestration.runtime.credentials import engine_credential_for
from orchestration.store.leases import Registrations, controller_names
from orchestration.v1 import controller_pb2 as cpb
from orchestration.v1 import controller_pb2_grpc as cpb_grpc
from orchestration.v1 import model_pb2 as pb
from orchestration.v1 import records_pb2 as rpb
from orchestration_sdk.runtime.concurrency import gather_bounded
from orchestration_sdk.runtime.tls import TlsConfig
from orchestration_sdk.runtime.tls import channel as tls_channel
from orchestration_sdk.runtime.wire import MAX_MESSAGE_BYTES, bearer_metadata

log = logging.getLogger("monitor.probe")

# Status calls in flight per controller.
_CALL_CONCURRENCY = 4


@dataclass(frozen=True)
class Observation:
    """The real state of an instance, and the controller (registration name) that reported it."""

    state: pb.State
    controller: str


@dataclass
class Answer:
    """What asking one controller about a set of instances gave."""

    observed: dict[str, Observation] = field(default_factory=dict)
    calls: int = 0
    # Instances no replica could answer for (no replica, or every call failed).
    unanswered: int = 0


class StatusProbe:
    """Status calls to the live replicas of each controller; `refresh` once per poll."""

    def __init__(self, registrations: Registrations, credential: str, batch_size: int, timeout: float, tls: TlsConfig | None = None) -> None:
        self._tls = tls
        self._registrations = registrations
        self._engine_key = credential
        self._batch_size = batch_size
        self._timeout = timeout
        self._live: dict[str, rpb.ControllerRegistration] = {}
        self._channels: dict[str, grpc.aio.Channel] = {}
        # Which replica goes first: turns, so that polls spread over replicas.
        self._turn = itertools.count()
        self._missing: set[str] = set()

    async def refresh(self) -> None:
        """Read the live registrations; close channels to replicas that went away."""
        self._live = await self._registrations.live()
        addresses = {r.address for r in self._live.values()}
        for address in [a for a in self._channels if a not in addresses]:
            await self._channels.pop(address).close()

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()

    def _replicas(self, name: str) -> list[rpb.ControllerRegistration]:
        found = sorted((r for r in self._live.values() if name in controller_names(r)), key=lambda r: r.replica)
        if found:
            shift = next(self._turn) % len(found)
            found = found[shift:] + found[:shift]
        return found

    async def ask(self, name: str, instances: Sequence[Watched]) -> Answer:
        """The real state of each instance served by controller `name`."""
        replicas = self._replicas(name) if name else []
        if not replicas:
            if name not in self._missing:
                self._missing.add(name)
                log.warning("no live controller %r: %d instance(s) cannot be checked", name or "(component not in catalog)",
                            len(instances))
            return Answer(unanswered=len(instances))
        if name in self._missing:
            self._missing.discard(name)
            log.info("controller %r is back", name)
        batches = [instances[i : i + self._batch_size] for i in range(0, len(instances), self._batch_size)]
        answer = Answer()
        for part in await gather_bounded((self._batch(replicas, b) for b in batches), _CALL_CONCURRENCY):
            answer.observed.update(part.observed)
            answer.calls += part.calls
            answer.unanswered += part.unanswered
        return answer

    async def _batch(self, replicas: list[rpb.ControllerRegistration], instances: Sequence[Watched]) -> Answer:
        answer = Answer()
        pending = list(instances)
        first: rpb.ControllerRegistration | None = None
        failed = False
        for replica in replicas:
            answer.calls += 1
            try:
                response = await self._call(replica, pending)
            except (grpc.aio.AioRpcError, asyncio.TimeoutError) as err:
                detail = f"{err.code().name} {err.details()}" if isinstance(err, grpc.aio.AioRpcError) else "timed out"
                log.warning("Status on controller %s replica %s (%s) failed: %s", replica.name, replica.replica, replica.address, detail)
                failed = True
                continue
            first = first or replica
            statuses = {s.uuid: s for s in response.statuses}
            unknown = []
            for watched in pending:
                status = statuses.get(watched.uuid)
                if status is not None and status.known and status.state != pb.STATE_UNSPECIFIED:
                    answer.observed[watched.uuid] = Observation(status.state, replica.name)
                else:
                    unknown.append(watched)
            pending = unknown
            if not pending:
                break
        if first is None or (pending and failed):
            # A replica that did not answer may have them: no verdict this time.
            answer.unanswered += len(pending)
            return answer
        # Every replica said it does not have these: gone.
        for watched in pending:
            answer.observed[watched.uuid] = Observation(pb.STATE_INITIAL, first.name)
        return answer

    async def _call(self, replica: rpb.ControllerRegistration, instances: Sequence[Watched]) -> cpb.StatusResponse:
        address = replica.address
        channel = self._channels.get(address)
        if channel is None:
            options = [("grpc.max_receive_message_length", MAX_MESSAGE_BYTES), ("grpc.max_send_message_length", MAX_MESSAGE_BYTES)]
            channel = self._channels[address] = tls_channel(address, self._tls, options)
        stub = cpb_grpc.ControllerServiceStub(channel)
        metadata = bearer_metadata(engine_credential_for(self._engine_key, replica.name))
        return await stub.Status(status_request(instances), metadata=metadata, timeout=self._timeout)


def status_request(instances: Sequence[Watched]) -> cpb.StatusRequest:
    """A Status request about the instances (each reference made in the request itself)."""
    request = cpb.StatusRequest()
    add = request.instances.add
    for watched in instances:
        r = watched.record
        add(domain=watched.domain, solution=watched.solution, element=r.element, cluster=r.cluster,
            uuid=watched.uuid, component=watched.component, component_version=r.cluster)
    return request
