"""Credentials between the engine and its controllers, each able to do only
its holder's job:

- A *controller credential* is issued for a controller's names (its name
  and aliases): ``<name>[,<alias>...]/<mac>``, the MAC being a SHA-256 of the
  names enveloped by the *registration key*, which only the dispatchers
  hold. A registration under a name the credential does not cover is
  PERMISSION_DENIED; replicas of one controller share its credential.
- The *engine key* is held by the dispatchers and the monitor. Towards a
  controller they present a credential derived from it for that
  controller's name; the controller is given only the SHA-256 of its own.
  So a controller (which sees what it is presented) learns a secret good
  for itself alone, and cannot pose as the engine towards another one.

Here the engine's side: issuing and checking controller credentials, and
deriving what it presents. The controller's side (the SHA-256 it is given,
the gate that checks callers against it) is the SDK's
(``orchestration_sdk.runtime.credentials``).
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from orchestration.model.names import is_valid_name
from orchestration_sdk.runtime.credentials import secret_sha256
from orchestration_sdk.status_errors import InvalidArgument, PermissionDenied


def _mac(key: str, names: list[str]) -> str:
    """SHA-256 of the names enveloped by the key (the key after them defeats
    length extension): a construction a Helm template can compute too."""
    return hashlib.sha256(f"{key}\n{','.join(names)}\n{key}".encode()).hexdigest()


def issue_controller_credential(key: str, names: list[str]) -> str:
    """The credential of a controller answering to `names` (its name first, then its aliases)."""
    if not key:
        raise ValueError("the registration key is empty")
    for name in names:
        if not is_valid_name(name) or "," in name or "/" in name:
            raise InvalidArgument(f"controller name {name!r} is not valid")
    if not names:
        raise InvalidArgument("a controller credential needs at least one name")
    return f"{','.join(names)}/{_mac(key, names)}"


def controller_names_of(key: str, credential: str) -> frozenset[str] | None:
    """The names a credential was issued for, or None when the registration key did not issue it."""
    names_text, slash, mac = credential.rpartition("/")
    if not slash or not names_text:
        return None
    names = names_text.split(",")
    if not hmac.compare_digest(mac.encode(), _mac(key, names).encode()):
        return None
    return frozenset(names)


def engine_credential_for(engine_key: str, controller: str) -> str:
    """What the engine presents to the controller named `controller`."""
    if not engine_key:
        raise ValueError("the engine key is empty")
    return hashlib.sha256(f"{engine_key}\nengine {controller}\n{engine_key}".encode()).hexdigest()


def engine_credential_sha256(engine_key: str, controller: str) -> str:
    """What a controller named `controller` is told to expect of the engine
    (its --engine-credential-sha256): the hash of engine_credential_for."""
    return secret_sha256(engine_credential_for(engine_key, controller))


class RegistrationGate:
    """The dispatcher's gate: a controller credential issued by the
    registration key, whose names cover the registration's name and aliases."""

    def __init__(self, key: str) -> None:
        if not key:
            raise ValueError("the registration key is empty")
        self._key = key

    async def identify(self, token: str) -> frozenset[str] | None:
        return controller_names_of(self._key, token)

    async def admit(self, caller: frozenset[str], method: str, request: Any) -> None:
        asked = [str(getattr(request, "name", "")), *(str(a) for a in getattr(request, "aliases", ()))]
        outside = [name for name in asked if name not in caller]
        if outside:
            raise PermissionDenied(f"{method}: this controller credential was issued for {', '.join(sorted(caller))}, "
                                   f"not for {', '.join(repr(n) for n in outside)}")

    async def record(self, caller: Any | None, method: str, request: Any | None, code: str, message: str) -> None:
        return None
