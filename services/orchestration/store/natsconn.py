"""Connecting a service to NATS: reconnect forever, log what happens."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import nats
from nats.aio.client import Client as NatsClient

from orchestration.store.natsusers import inbox_prefix

log = logging.getLogger(__name__)


async def connect(url: str, name: str, on_state: Callable[[bool], Awaitable[None]] | None = None) -> NatsClient:
    """A NATS connection that keeps reconnecting when the server goes away;
    `on_state(False)` runs on every loss and `on_state(True)` on every return
    (services report NOT_SERVING in between)."""

    async def on_error(exc: Exception) -> None:
        log.warning("nats: %s", exc)

    async def on_disconnect() -> None:
        log.warning("nats: disconnected")
        if on_state is not None:
            await on_state(False)

    async def on_reconnect() -> None:
        log.info("nats: reconnected")
        if on_state is not None:
            await on_state(True)

    servers = [u.strip() for u in url.split(",") if u.strip()]
    return await nats.connect(
        # A comma-separated list names several servers of one cluster.
        servers=servers,
        name=name,
        # Replies to this service arrive where only its user may subscribe.
        inbox_prefix=inbox_prefix(user_of(servers[0]) if servers else ""),
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.5,
        connect_timeout=5,
        error_cb=on_error,
        disconnected_cb=on_disconnect,
        reconnected_cb=on_reconnect,
    )


def user_of(url: str) -> str:
    """The user name in a nats:// URL ("" when it has none)."""
    rest = url.split("://", 1)[-1]
    return rest.rsplit("@", 1)[0].split(":", 1)[0] if "@" in rest else ""


def redact(url: str) -> str:
    """The URL(s) without passwords, for logs."""
    if "," in url:
        return ",".join(redact(u.strip()) for u in url.split(","))
    if "@" not in url:
        return url
    scheme, rest = url.split("://", 1) if "://" in url else ("nats", url)
    creds, host = rest.rsplit("@", 1)
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}"
