"""A controller's side of the credentials between the engine and its
controllers: it is given the SHA-256 of the credential the engine presents
to it (derived for its name, so it is good towards this controller alone),
and admits whoever presents the secret behind it. The engine's side
(issuing controller credentials, deriving what it presents) is in
``orchestration.runtime.credentials``."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any


def secret_sha256(secret: str) -> str:
    """The hex SHA-256 of a secret: what a controller is given of the engine credential."""
    return hashlib.sha256(secret.encode()).hexdigest()


class DigestGate:
    """A gRPC gate that admits whoever presents the secret whose SHA-256 it holds (a controller's)."""

    def __init__(self, digest_hex: str) -> None:
        digest_hex = digest_hex.strip().lower()
        if len(digest_hex) != 64 or any(c not in "0123456789abcdef" for c in digest_hex):
            raise ValueError("the engine credential's SHA-256 must be 64 hex digits")
        self._digest = bytes.fromhex(digest_hex)

    async def identify(self, token: str) -> Any | None:
        return True if hmac.compare_digest(hashlib.sha256(token.encode()).digest(), self._digest) else None

    async def admit(self, caller: Any, method: str, request: Any) -> None:
        return None

    async def record(self, caller: Any | None, method: str, request: Any | None, code: str, message: str) -> None:
        return None
