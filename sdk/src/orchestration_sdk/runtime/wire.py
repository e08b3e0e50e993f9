"""What every gRPC client and server of the suite agrees on, without
importing gRPC: how a token travels and how large a message may be."""

from __future__ import annotations

MAX_MESSAGE_BYTES = 8 * 1024 * 1024


def bearer_metadata(token: str) -> tuple[tuple[str, str], ...]:
    """Call metadata that carries the token."""
    return (("authorization", f"Bearer {token}"),)
