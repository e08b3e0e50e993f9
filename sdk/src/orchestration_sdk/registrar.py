"""Keeps one controller replica registered with the dispatcher: register,
renew at a third of the lease, back off while no dispatcher answers,
unregister on clean shutdown."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import grpc

from orchestration_sdk.runtime.backoff import Backoff, Jitter
from orchestration_sdk.runtime.concurrency import cancel_and_wait
from orchestration_sdk.runtime.tls import TlsConfig
from orchestration_sdk.runtime.tls import channel as tls_channel
from orchestration_sdk.runtime.wire import bearer_metadata
from orchestration_sdk.v1 import dispatcher_pb2 as pb
from orchestration_sdk.v1 import dispatcher_pb2_grpc as pb_grpc

log = logging.getLogger("orchestration_sdk.registrar")

DEFAULT_LEASE_S = 30.0
CALL_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Registration:
    """What a replica announces: the controller it is and where it listens."""

    name: str
    version: str
    aliases: tuple[str, ...]
    replica: str
    address: str


# Delays between attempts while no dispatcher answers, with jitter so that
# replicas restarted together do not call in lock-step.
REGISTRATION_BACKOFF = Backoff(first=0.2, maximum=10.0, jitter=Jitter.HALF)


class Registrar:
    """Registers a replica with one of `dispatchers` ("host:port") and keeps it so.

    Dispatcher replicas share their registrations through the store, so one
    that answers is enough: the registrar sticks to it and fails over to the
    next address when it stops answering. It never raises: an unreachable
    dispatcher is logged and retried.

    Example::

        registrar = Registrar(["127.0.0.1:7001"], credential, Registration(
            "Internal", "V1.0.0", ("sim",), "host-42", "10.0.0.5:7100"))
        await registrar.start()
        ...
        await registrar.stop()  # unregisters
    """

    def __init__(
        self, dispatchers: Sequence[str], credential: str, registration: Registration, backoff: Backoff = REGISTRATION_BACKOFF,
        tls: TlsConfig | None = None,
    ) -> None:
        if not dispatchers:
            raise ValueError("at least one dispatcher address is needed")
        self.registration = registration
        self._addresses = list(dispatchers)
        self._metadata = bearer_metadata(credential)
        self._backoff = backoff
        self._current = 0
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._tls = tls
        self._task: asyncio.Task[None] | None = None
        self.registered = asyncio.Event()
        self.lease_seconds = 0.0
        # A call cut short by stop() may still have reached the dispatcher.
        self._in_call = False

    async def start(self) -> None:
        """Start registering in the background."""
        self._task = asyncio.create_task(self._keep_registered(), name="registrar")

    async def stop(self) -> None:
        """Stop renewing, unregister (best effort) and close the channels."""
        if self._task is not None:
            await cancel_and_wait([self._task])
            self._task = None
        if self.registered.is_set() or self._in_call:
            await self._unregister()
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()

    def _stub(self, address: str) -> pb_grpc.DispatcherServiceStub:
        channel = self._channels.get(address)
        if channel is None:
            # gRPC's own reconnect back-off (1 s and up) would add to ours.
            backoff_ms = int(self._backoff.first * 1000)
            options = [
                ("grpc.initial_reconnect_backoff_ms", backoff_ms),
                ("grpc.min_reconnect_backoff_ms", backoff_ms),
                ("grpc.max_reconnect_backoff_ms", int(self._backoff.maximum * 1000)),
            ]
            channel = self._channels[address] = tls_channel(address, self._tls, options)
        return pb_grpc.DispatcherServiceStub(channel)

    async def _register_once(self) -> float:
        """Register with the current dispatcher; the renewal interval in seconds."""
        reg = self.registration
        address = self._addresses[self._current]
        self._in_call = True
        try:
            response = await self._stub(address).RegisterController(
                pb.RegisterControllerRequest(
                    name=reg.name, version=reg.version, aliases=list(reg.aliases), replica=reg.replica,
                    address=reg.address,
                ),
                metadata=self._metadata,
                timeout=CALL_TIMEOUT_S,
            )
        except asyncio.CancelledError:
            raise  # keep _in_call: stop() unregisters just in case
        except BaseException:
            self._in_call = False
            raise
        self._in_call = False
        lease = float(response.lease_seconds) if response.lease_seconds > 0 else DEFAULT_LEASE_S
        if not self.registered.is_set() or lease != self.lease_seconds:
            log.info("registered %s %s as %s at %s with dispatcher %s (lease %.0f s)",
                     reg.name, reg.version, reg.replica, reg.address, address, lease)
        self.lease_seconds = lease
        self.registered.set()
        return lease / 3

    async def _keep_registered(self) -> None:
        failures = 0
        while True:
            try:
                interval = await self._register_once()
                failures = 0
            except grpc.aio.AioRpcError as err:
                failures += 1
                address = self._addresses[self._current]
                self._current = (self._current + 1) % len(self._addresses)
                interval = self._backoff.delay(failures)
                log.warning("cannot register with dispatcher %s: %s: %s; retrying in %.1f s",
                            address, err.code().name, err.details(), interval)
            except Exception:  # noqa: BLE001 - registration must never kill the controller
                failures += 1
                interval = self._backoff.delay(failures)
                log.exception("registration failed; retrying in %.1f s", interval)
            await asyncio.sleep(interval)

    async def _unregister(self) -> None:
        reg = self.registration
        request = pb.UnregisterControllerRequest(name=reg.name, replica=reg.replica)
        # Try the dispatcher we were registered with first, then the others.
        order = self._addresses[self._current:] + self._addresses[: self._current]
        for address in order:
            try:
                await self._stub(address).UnregisterController(request, metadata=self._metadata, timeout=2.0)
                log.info("unregistered %s replica %s from dispatcher %s", reg.name, reg.replica, address)
                self.registered.clear()
                return
            except grpc.aio.AioRpcError as err:
                log.warning("cannot unregister from dispatcher %s: %s", address, err.code().name)
        # The lease expires on its own: the dispatcher drops the replica then.
