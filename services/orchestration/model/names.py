"""The name rule for user-supplied names, and their safe encoding into NATS
KV keys and subject tokens.

A name is 1 to 128 characters: letters, digits and ``_ . : @ -``, starting
with a letter or digit, never containing ``..``. Versions such as ``V1.0.0``
and controllers such as ``Internal:V1.0.0`` are names. Names never reach a
key or subject raw: ``encode_token`` maps every character outside
``[A-Za-z0-9_-]`` to ``=XX`` (hex), so a token can hold no ``.``, ``*`` or ``>``.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from orchestration_sdk.status_errors import InvalidArgument

if TYPE_CHECKING:  # names are checked without loading protobuf (`orch info` imports this)
    from orchestration.v1.model_pb2 import Controller

NAME_RULE = "1 to 128 characters: letters, digits and _ . : @ -, starting with a letter or digit, no '..'"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,127}$")
_PLAIN = re.compile(r"[A-Za-z0-9_-]")
_ALL_PLAIN = re.compile(r"[A-Za-z0-9_-]+")


def is_valid_name(name: str) -> bool:
    """True when name follows the name rule."""
    # fullmatch: with match, "$" would also accept a name that ends in a newline.
    return bool(_NAME.fullmatch(name)) and ".." not in name


def check_name(name: object, what: str) -> str:
    """Return name if it follows the rule; raise InvalidArgument naming `what` otherwise."""
    if not isinstance(name, str) or name == "":
        raise InvalidArgument(f"{what}: a name is required ({NAME_RULE})")
    if not is_valid_name(name):
        shown = name if len(name) <= 64 else name[:61] + "..."
        raise InvalidArgument(f"{what}: {shown!r} is not a valid name ({NAME_RULE})")
    return name


# The longest reason a change may give (it is kept in every revision and audit record).
REASON_MAX = 500


def check_reason(reason: str) -> str:
    """A reason given for a change: at most REASON_MAX characters of one line
    of printable text (InvalidArgument otherwise); empty when none."""
    if len(reason) > REASON_MAX:
        raise InvalidArgument(f"reason: {len(reason)} characters; at most {REASON_MAX}")
    if not reason.isprintable():
        raise InvalidArgument("reason: one line of printable text (no line breaks or control characters)")
    return reason


def encode_token(name: str) -> str:
    """Encode a name as one KV-key / subject token (reversible)."""
    if _ALL_PLAIN.fullmatch(name):  # most names (uuids, plain words): nothing to escape
        return name
    return "".join(c if _PLAIN.match(c) else "=%02X" % ord(c) for c in name)


def decode_token(token: str) -> str:
    """Invert encode_token."""
    if "=" not in token:  # most tokens: nothing was escaped
        return token
    return re.sub(r"=([0-9A-F]{2})", lambda m: chr(int(m.group(1), 16)), token)


def controller_name(controller: Controller) -> str:
    """The name a controller is registered under: ``<name>:<version>``, or ``<name>``."""
    return f"{controller.name}:{controller.version}" if controller.version else controller.name
