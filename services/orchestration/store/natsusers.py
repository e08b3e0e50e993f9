"""The NATS users of a suite and the subjects each may use: one user per
service, one for external bus clients, and one for operators. nats-server
enforces them; the embedded server's configuration and the Helm chart's
are made from this one definition.

- ``gateway``, ``dispatcher``, ``monitor``: the JetStream API, the suite's
  KV buckets and subjects (``<prefix>.>``), replies to requests they
  receive, and their own inbox (``_INBOX_<user>``), which no bus client
  can subscribe to.
- ``bus`` and ``bus-<client>`` (external systems, one user per client
  named in ORCH_BUS_CLIENTS): publish requests (``<prefix>.requests.>``,
  replays of stored events included), subscribe to events and status and
  to their own inbox (``_INBOX_<user>.>``, which no other client can read):
  no JetStream API, no KV bucket, no stream, no internal subject.
- ``orch``: everything, for operators' tools; the URL in ``orch info``.

Controllers do not use NATS and have no user.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from collections.abc import Mapping, Sequence

from orchestration.store.subjects import Subjects

SERVICES = ("gateway", "dispatcher", "monitor")
BUS = "bus"
OPERATOR = "orch"
USERS = (*SERVICES, BUS, OPERATOR)
# Named bus clients, each a NATS user of its own (bus-<name>): ORCH_BUS_CLIENTS="erp,billing".
BUS_CLIENTS_ENV = "ORCH_BUS_CLIENTS"
_CLIENT_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}$")


def bus_clients_from_environment() -> tuple[str, ...]:
    """The NATS users of the named bus clients (ORCH_BUS_CLIENTS, comma-separated
    names of lower-case letters, digits and '-'); ValueError naming a bad one."""
    names = [n.strip() for n in os.environ.get(BUS_CLIENTS_ENV, "").split(",") if n.strip()]
    for name in names:
        if not _CLIENT_NAME.fullmatch(name):
            raise ValueError(f"{BUS_CLIENTS_ENV}: {name!r} is not a client name (1-32 of a-z, 0-9 and '-')")
    return tuple(f"{BUS}-{n}" for n in dict.fromkeys(names))


def is_bus(user: str) -> bool:
    return user == BUS or user.startswith(BUS + "-")


def inbox_prefix(user: str) -> str:
    """Where replies to a user's requests arrive; only that user may subscribe there.
    A bus client passes it to its NATS library (nats-py: ``inbox_prefix=``)."""
    return f"_INBOX_{user}" if user in SERVICES or is_bus(user) else "_INBOX"


def _buckets(s: Subjects) -> list[str]:
    return [*s.repository_buckets, s.access_bucket, s.audit_bucket]


def permissions(user: str, s: Subjects) -> dict[str, object] | None:
    """The nats-server permissions of a user (None: everything)."""
    if user == OPERATOR:
        return None
    if is_bus(user):
        # No JetStream API at all: a consumer a client made could deliver
        # copies of events onto any subject (the status subjects, KV, the
        # requests stream). Bus clients replay stored events through the
        # gateway (the `events` request) and follow live ones by subscribing.
        return {
            "publish": {"allow": [f"{s.prefix}.requests.>"]},
            # Its own inbox only: another client's replies are out of its reach.
            "subscribe": {"allow": [f"{s.prefix}.events.>", f"{s.prefix}.status.>", s.revisions_all,
                                    f"{inbox_prefix(user)}.>"]},
        }
    if user not in SERVICES:
        raise ValueError(f"no NATS user {user!r}; one of {', '.join(USERS)}")
    kv = [f"$KV.{bucket}.>" for bucket in _buckets(s)]
    own = f"{inbox_prefix(user)}.>"
    return {
        "publish": {"allow": ["$JS.API.>", "$JS.ACK.>", "$JS.FC.>", *kv, f"{s.prefix}.>"]},
        "subscribe": {"allow": [f"{s.prefix}.>", own, *kv]},
        # Answer requests (bus requests, the monitor's figures) on whatever inbox they name.
        "allow_responses": True,
    }


def new_passwords(clients: Sequence[str] = ()) -> dict[str, str]:
    """A password for every user, the named bus clients' (`clients`) included."""
    return {user: secrets.token_urlsafe(24) for user in (*USERS, *clients)}


def server_authorization(passwords: Mapping[str, str], s: Subjects) -> str:
    """The ``authorization`` block of nats-server's configuration (every user of `passwords`)."""
    users = []
    for user in passwords:
        entry: dict[str, object] = {"user": user, "password": passwords[user]}
        allowed = permissions(user, s)
        if allowed is not None:
            entry["permissions"] = allowed
        users.append(entry)
    return "authorization {\n  users: " + json.dumps(users, indent=2).replace("\n", "\n  ") + "\n}\n"


# Stand-ins for the prefix in the chart's copy of the permissions
# (helm/orchestrator/files/nats-permissions.json), which the chart replaces
# with its `prefix` value (and its upper case for stream names).
CHART_PREFIX = "zzprefixzz"
# Stands for the name of a named bus client (nats.auth.busClients) there.
CHART_CLIENT = "zzclientzz"


def chart_permissions() -> str:
    """The permissions of every user but the operator, and of a named bus
    client (`bus-zzclientzz`), for the Helm chart (JSON)."""
    s = Subjects(CHART_PREFIX)
    users = (*SERVICES, BUS, f"{BUS}-{CHART_CLIENT}")
    return json.dumps({user: permissions(user, s) for user in users}, indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    print(chart_permissions(), end="")
