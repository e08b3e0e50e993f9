"""Tokens and the audit trail, as stored in NATS.

The access bucket holds ``token.<name>`` (the token's description and the
SHA-256 of its secret; never the secret) and ``used.<name>`` (when it was
last used, kept to the minute) and ``policy.<domain>`` (the domain's access
policy). The audit bucket holds one key per audited
call, ``<domain or _>.<unix ms>-<random>``, and ages out after the audit
retention. Neither is touched by a model reset.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import secrets
import time
import uuid

from nats.js import JetStreamContext

from orchestration.model.access import BOOTSTRAP, Principal, Role, check_token_name, split_token
from orchestration.model.names import check_name, encode_token
from orchestration.model.retention import positive_setting
from orchestration.store.kvstore import Bucket
from orchestration.store.streams import open_bucket
from orchestration.store.subjects import Subjects
from orchestration.v1 import gateway_pb2 as gw
from orchestration.v1 import records_pb2 as rpb
from orchestration_sdk.status_errors import Aborted, AlreadyExists, InvalidArgument, NotFound

# A gateway re-reads a token it has checked after this many seconds, so a
# revocation takes effect everywhere within it.
TOKEN_CACHE_SECONDS = 0.5
# How often the last use of a token is written (at most).
LAST_USED_EVERY_MS = 60_000
AUDIT_LIMIT = 1000


def audit_bytes_from_environment() -> int:
    """ORCH_AUDIT_MAX_MB (default 256): the most the audit trail keeps (the oldest entries go first)."""
    text = os.environ.get("ORCH_AUDIT_MAX_MB", "256")
    if not text.isdigit() or int(text) <= 0:
        raise ValueError(f"ORCH_AUDIT_MAX_MB={text!r}: expected a positive whole number")
    return int(text) * 2**20


def audit_seconds_from_environment() -> float:
    """ORCH_AUDIT_DAYS (default 90): how long audit entries are kept."""
    return positive_setting("ORCH_AUDIT_DAYS", "90") * 86400.0


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


class Tokens:
    """Stored tokens: create, list, revoke, and identify a presented one."""

    def __init__(self, bucket: Bucket, bootstrap: str) -> None:
        if not bootstrap:
            raise ValueError("the bootstrap token is empty")
        self._bucket = bucket
        self._bootstrap = _digest(bootstrap)
        self._cache: dict[str, tuple[float, rpb.TokenRecord | None]] = {}
        self._used: dict[str, int] = {}

    async def create(self, name: str, role: str, domains: list[str], created_by: str) -> tuple[gw.Token, str]:
        """A new token and its secret (``<name>.<secret>``); AlreadyExists for a taken name."""
        check_token_name(name)
        parsed = Role.parse(role)
        for domain in domains:
            check_name(domain, "domain")
        secret = secrets.token_urlsafe(32)
        token = gw.Token(name=name, role=parsed.label, domains=sorted(set(domains)),
                         created_unix_ms=int(time.time() * 1000), created_by=created_by)
        record = rpb.TokenRecord(token=token, secret_sha256=_digest(secret))
        try:
            await self._bucket.write(f"token.{name}", record.SerializeToString(), None, f"token {name!r}")
        except Aborted:
            raise AlreadyExists(f"token {name!r} already exists; revoke it first or choose another name") from None
        return token, f"{name}.{secret}"

    async def list(self) -> list[gw.Token]:
        entries = await self._bucket.scan("token.*", "used.*")
        used = {e.key[len("used."):]: int(e.value or b"0") for e in entries if e.key.startswith("used.")}
        tokens = []
        for entry in entries:
            if entry.key.startswith("token."):
                token = rpb.TokenRecord.FromString(entry.value).token
                token.last_used_unix_ms = used.get(token.name, 0)
                tokens.append(token)
        return sorted(tokens, key=lambda t: t.name)

    async def revoke(self, name: str) -> None:
        check_token_name(name)
        if await self._bucket.get(f"token.{name}") is None:
            raise NotFound(f"token {name!r} not found; `orch token list` shows the tokens")
        await self._bucket.delete(f"token.{name}", None, f"token {name!r}")
        await self._bucket.delete(f"used.{name}", None, f"token {name!r}")
        self._cache.pop(name, None)

    async def identify(self, presented: str) -> Principal | None:
        """Who holds this token, or None: the bootstrap token, or a stored
        one whose secret hashes to the stored hash (compared in constant time)."""
        if hmac.compare_digest(_digest(presented), self._bootstrap):
            return Principal(BOOTSTRAP, Role.ADMIN)
        parts = split_token(presented)
        if parts is None:
            return None
        name, secret = parts
        record = await self._record(name)
        if record is None or not hmac.compare_digest(_digest(secret), record.secret_sha256):
            return None
        self._touch(name)
        return Principal(name, Role.parse(record.token.role), frozenset(record.token.domains))

    async def _record(self, name: str) -> rpb.TokenRecord | None:
        now = time.monotonic()
        cached = self._cache.get(name)
        if cached is not None and now - cached[0] < TOKEN_CACHE_SECONDS:
            return cached[1]
        entry = await self._bucket.get(f"token.{name}")
        record = rpb.TokenRecord.FromString(entry.value) if entry is not None else None
        if len(self._cache) > 10_000:
            self._cache.clear()  # names that never existed must not grow it without bound
        self._cache[name] = (now, record)
        return record

    def _touch(self, name: str) -> None:
        """Note the use in the background, at most once a minute per token and gateway."""
        now_ms = int(time.time() * 1000)
        if now_ms - self._used.get(name, 0) < LAST_USED_EVERY_MS:
            return
        self._used[name] = now_ms
        task = asyncio.ensure_future(self._bucket.put(f"used.{name}", str(now_ms).encode()))
        task.add_done_callback(lambda t: t.cancelled() or t.exception())


class DomainPolicies:
    """Each domain's access policy, ``policy.<domain>`` in the access bucket
    (the defaults hold for a domain that has none)."""

    def __init__(self, bucket: Bucket) -> None:
        self._bucket = bucket

    async def get(self, domain: str) -> gw.DomainPolicy:
        entry = await self._bucket.get(f"policy.{encode_token(domain)}")
        if entry is None or not entry.value:
            return gw.DomainPolicy(domain=domain)
        return gw.DomainPolicy.FromString(entry.value)

    async def set(self, policy: gw.DomainPolicy) -> gw.DomainPolicy:
        await self._bucket.put(f"policy.{encode_token(policy.domain)}", policy.SerializeToString())
        return policy


class AuditTrail:
    """Audit entries: appended by the gateway, listed by admins."""

    def __init__(self, bucket: Bucket) -> None:
        self._bucket = bucket

    async def append(self, entry: gw.AuditEntry) -> None:
        domain = encode_token(entry.domain) if entry.domain else "_"
        key = f"{domain}.{entry.time_unix_ms:015d}-{uuid.uuid4().hex[:12]}"
        await self._bucket.put(key, entry.SerializeToString())

    async def list(self, domain: str = "", actor: str = "", since_seconds: float = 0.0,
                   limit: int = 0) -> list[gw.AuditEntry]:
        if since_seconds < 0 or limit < 0:
            raise InvalidArgument("since and limit: expected zero or positive numbers")
        if domain:
            check_name(domain, "domain")
        entries = await self._bucket.scan(f"{encode_token(domain)}.*" if domain else ">")
        oldest = int((time.time() - since_seconds) * 1000) if since_seconds else 0
        found = [gw.AuditEntry.FromString(e.value) for e in entries]
        found = [e for e in found if e.time_unix_ms >= oldest and (not actor or e.actor == actor)]
        found.sort(key=lambda e: e.time_unix_ms)
        return found[-(limit or AUDIT_LIMIT):]


async def open_access(js: JetStreamContext, subjects: Subjects, bootstrap: str,
                      replicas: int = 1) -> tuple[Tokens, AuditTrail, DomainPolicies]:
    """Bind (or create) the access and audit buckets; audit entries age out after ORCH_AUDIT_DAYS."""
    access, audit = await asyncio.gather(open_bucket(js, subjects.access_bucket, replicas),
                                         open_bucket(js, subjects.audit_bucket, replicas))
    await audit.limit_age(audit_seconds_from_environment(), audit_bytes_from_environment())
    return Tokens(access, bootstrap), AuditTrail(audit), DomainPolicies(access)
