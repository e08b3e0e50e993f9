"""How the engine's services import nats-py: without the parts they never use."""

from __future__ import annotations

import sys


def without_websocket_client(nats_url: str) -> None:
    """Keep nats-py from loading aiohttp, which it imports only to offer
    WebSocket connections (ws:// and wss:// URLs): about 8 MB and 0.15 s
    of start-up in every process that reaches NATS over its own protocol.
    Called by the services that have no other use for aiohttp, before they
    import nats (the gateway serves the console with it)."""
    if "nats" in sys.modules or "aiohttp" in sys.modules:
        return
    if any(url.strip().lower().startswith(("ws://", "wss://")) for url in nats_url.split(",")):
        return
    # An import of a module set to None raises ImportError: nats-py then leaves WebSocket support out.
    sys.modules["aiohttp"] = None  # type: ignore[assignment]
