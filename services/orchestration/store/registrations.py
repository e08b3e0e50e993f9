"""Controller registrations as stored in the controllers bucket: which names
a registration answers to, and which registrations are live."""

from __future__ import annotations

import time

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
