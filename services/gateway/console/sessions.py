"""Console sessions: a random id in an HttpOnly, SameSite=Strict cookie,
the token it was opened with (checked again on every request, so a revoked
token ends its sessions at once), a CSRF token, and an expiry."""

from __future__ import annotations

import hmac
import secrets
import time
from dataclasses import dataclass, field

from orchestration.model.retention import positive_setting

COOKIE = "orch_session"


def session_seconds_from_environment() -> float:
    """ORCH_CONSOLE_SESSION_HOURS (default 12): how long a console session lasts."""
    return positive_setting("ORCH_CONSOLE_SESSION_HOURS", "12") * 3600.0


@dataclass
class Session:
    id: str
    token: str
    csrf: str
    expires: float  # time.monotonic()
    created: float = field(default_factory=time.time)

    def csrf_matches(self, given: str) -> bool:
        return bool(given) and hmac.compare_digest(given.encode(), self.csrf.encode())


class Sessions:
    """Open sessions of one gateway (kept in memory: a restart signs everyone out)."""

    MAX = 10_000
    # Sessions one token may hold open (its oldest goes first): signing in again
    # and again with one token cannot push other people's sessions out.
    PER_TOKEN = 20

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._open: dict[str, Session] = {}

    def open(self, token: str) -> Session:
        now = time.monotonic()
        mine = sorted((s for s in self._open.values() if s.token == token), key=lambda s: s.expires)
        for old in mine[: max(0, len(mine) - self.PER_TOKEN + 1)]:
            del self._open[old.id]
        if len(self._open) >= self.MAX:
            self._open = {k: s for k, s in self._open.items() if s.expires > now}
            if len(self._open) >= self.MAX:  # still full: the oldest goes
                self._open.pop(min(self._open, key=lambda k: self._open[k].expires))
        session = Session(secrets.token_urlsafe(32), token, secrets.token_urlsafe(32), now + self.seconds)
        self._open[session.id] = session
        return session

    def get(self, session_id: str | None) -> Session | None:
        if not session_id:
            return None
        session = self._open.get(session_id)
        if session is None:
            return None
        if session.expires <= time.monotonic():
            del self._open[session_id]
            return None
        return session

    def close(self, session_id: str | None) -> None:
        if session_id:
            self._open.pop(session_id, None)
