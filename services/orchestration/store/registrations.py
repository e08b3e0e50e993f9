"""Controller registrations as stored in the controllers bucket: which names
a registration answers to, which registrations are live, and the typed store
(``Registrations``) the dispatcher and the monitor use."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from nats.aio.subscription import Subscription

from orchestration.model.names import encode_token
from orchestration.store.kvstore import Bucket
from orchestration.v1 import records_pb2 as rpb


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

    async def on_change(self, callback: Callable[[str], Awaitable[None]]) -> Subscription:
        """Call back with the key of every registration written or removed from now on."""
        return await self._bucket.on_change(callback)
