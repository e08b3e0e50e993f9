"""One libvirt connection, shared by every operation.

libvirt's calls block, so each runs in a thread pool of `concurrency`
workers (at most that many calls at once, whatever the number of
operations), with a time-out per call, as a span (a child of the current
one: the operation's), named `libvirt <call>`. A call that times out is
abandoned, not interrupted: its worker stays busy until libvirt answers,
and its connection is retired (closed once that call returns), so that the
next call opens a new one instead of queueing behind a connection that may
be half-open. Remote connections also send keepalive probes (libvirt's
event loop runs in a thread of its own): a peer that stops answering has
its connection closed, and the calls on it fail, within about 20 s. A call made for an operation (`Hypervisor.serving`) also ends
a little before that operation's deadline, and remembers what it abandoned:
the instance's next operation waits for that first (`settle`). A broken
connection is closed and opened again by the next call; the call that saw
it is `Retryable`.

Credentials for a URI that asks for them (SASL, a password for ssh) come
from the controller's environment (`ORCH_LIBVIRT_USERNAME`,
`ORCH_LIBVIRT_PASSWORD`) or a file named in its settings (`--auth-file`:
`username=...` and `password=...` lines); they are handed to libvirt's
authentication callback and never logged, returned or put on a span; a
password inside the URI is shown nowhere either (`shown_uri`), and both are
blotted out of libvirt's error messages.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import libvirt

from orchestration_sdk import Permanent, Retryable
from orchestration_sdk.runtime import telemetry

T = TypeVar("T")
log = logging.getLogger("controllers.libvirt")
_tracer = telemetry.tracer("controllers.libvirt")

USERNAME_ENV, PASSWORD_ENV = "ORCH_LIBVIRT_USERNAME", "ORCH_LIBVIRT_PASSWORD"

# libvirt prints every error on stderr unless a handler takes them: the
# controller reports them itself (as Retryable or Permanent).
libvirt.registerErrorHandler(lambda _context, _error: None, None)

# Keepalive probes on remote connections (every 5 s, 3 unanswered = dead): libvirt then closes a half-open
# connection, and the calls hanging on it fail (BROKEN) instead of waiting for TCP. They need libvirt's event loop.
KEEPALIVE = (5, 3)
_events = threading.Lock()
_events_running = False


def _run_events() -> None:
    """libvirt's default event loop, in a thread of its own, once per process (before any connection opens)."""
    global _events_running
    with _events:
        if _events_running:
            return
        libvirt.virEventRegisterDefaultImpl()

        def loop() -> None:
            while True:
                libvirt.virEventRunDefaultImpl()

        threading.Thread(target=loop, name="libvirt-events", daemon=True).start()
        _events_running = True


# The connection itself is gone or unusable: open a new one, try again.
BROKEN = {libvirt.VIR_ERR_SYSTEM_ERROR, libvirt.VIR_ERR_RPC, libvirt.VIR_ERR_NO_CONNECT, libvirt.VIR_ERR_INVALID_CONN}
# What a retry cannot fix: the request itself is wrong for this hypervisor.
REFUSED = {libvirt.VIR_ERR_XML_ERROR, libvirt.VIR_ERR_XML_DETAIL, libvirt.VIR_ERR_INVALID_ARG,
           libvirt.VIR_ERR_CONFIG_UNSUPPORTED, libvirt.VIR_ERR_NO_SUPPORT, libvirt.VIR_ERR_OPERATION_UNSUPPORTED}


class Missing(Exception):
    """The domain a call named does not exist."""


@dataclass(frozen=True)
class Credentials:
    """A user name and password for libvirt's authentication callback."""

    username: str = ""
    password: str = field(default="", repr=False)

    @classmethod
    def load(cls, auth_file: str | None) -> "Credentials":
        """From `auth_file` (username=/password= lines) if given, else from the environment."""
        if not auth_file:
            return cls(os.environ.get(USERNAME_ENV, ""), os.environ.get(PASSWORD_ENV, ""))
        values: dict[str, str] = {}
        for line in Path(auth_file).read_text().splitlines():
            key, sep, value = line.partition("=")
            if sep and key.strip() in ("username", "password"):
                values[key.strip()] = value.strip()
        return cls(values.get("username", ""), values.get("password", ""))

    def scrub(self, text: str, *others: str) -> str:
        """`text` with the password (and `others`: a password in the URI) blotted out, should libvirt echo one."""
        for secret in sorted({self.password, *others} - {""}, key=len, reverse=True):
            text = text.replace(secret, "***")
        return text

    def answer(self, credentials: list[list[Any]], _data: object) -> int:
        """libvirt's callback: fill in what it asks for; -1 when we have nothing to give."""
        for credential in credentials:
            kind = credential[0]
            if kind == libvirt.VIR_CRED_AUTHNAME and self.username:
                credential[4] = self.username
            elif kind in (libvirt.VIR_CRED_PASSPHRASE, libvirt.VIR_CRED_NOECHOPROMPT) and self.password:
                credential[4] = self.password
            else:
                return -1
        return 0


def shown_uri(uri: str) -> str:
    """The URI without a password (for logs and spans); host and port as they were written."""
    parts = urllib.parse.urlsplit(uri)
    userinfo, at, host = parts.netloc.rpartition("@")
    if not at or ":" not in userinfo:
        return uri
    user = userinfo.partition(":")[0]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}@{host}" if user else host))


def uri_secrets(uri: str) -> tuple[str, ...]:
    """The password inside a URI, as written and decoded (none: ())."""
    userinfo, at, _host = urllib.parse.urlsplit(uri).netloc.rpartition("@")
    password = userinfo.partition(":")[2] if at and ":" in userinfo else ""
    return tuple({password, urllib.parse.unquote(password)} - {""})


@dataclass(frozen=True)
class Serving:
    """What calls are made for: an instance (its key) and its operation's deadline (time.time(); 0: none)."""

    key: str = ""
    deadline: float = 0.0


_serving: contextvars.ContextVar[Serving] = contextvars.ContextVar("libvirt_serving", default=Serving())
MARGIN = 0.5  # seconds a call leaves before its operation's deadline


class Hypervisor:
    """The connection to one libvirt URI and the pool its calls run in."""

    def __init__(self, uri: str, credentials: Credentials, concurrency: int, call_timeout: float) -> None:
        self.uri, self.shown = uri, shown_uri(uri)
        self.credentials = credentials
        _run_events()
        self.concurrency, self.call_timeout = concurrency, call_timeout
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="libvirt")
        self._lock = threading.Lock()
        self._conn: Any = None
        self._users: dict[Any, int] = {}  # connection -> calls using it now
        self._secrets = uri_secrets(uri)
        self._abandoned: dict[str, list[Future[Any]]] = {}  # instance key -> its calls still running after a time-out

    def _connection(self, used: list[Any]) -> Any:
        """The open connection, opened now if there is none (in a worker thread); counted as in use until _release."""
        with self._lock:
            if self._conn is None:
                auth = [[libvirt.VIR_CRED_AUTHNAME, libvirt.VIR_CRED_PASSPHRASE, libvirt.VIR_CRED_NOECHOPROMPT],
                        self.credentials.answer, None]
                self._conn = libvirt.openAuth(self.uri, auth, 0)
                if not self.uri.startswith("test:"):  # the test driver runs in this process: nothing to probe
                    try:
                        self._conn.setKeepAlive(*KEEPALIVE)
                    except libvirt.libvirtError:
                        libvirt.virResetLastError()  # a driver without keepalive
                log.info("connected to %s", self.shown)
            conn = self._conn
            self._users[conn] = self._users.get(conn, 0) + 1
            used.append(conn)
            return conn

    def _release(self, conn: Any) -> None:
        """A call is done with `conn`: the last one closes it if it was retired meanwhile."""
        with self._lock:
            left = self._users.pop(conn) - 1
            if left:
                self._users[conn] = left
                return
            if conn is self._conn:
                return
        _close(conn)

    def _retire(self, conn: Any) -> None:
        """No new call takes `conn`; it is closed now, or when the last call using it returns."""
        with self._lock:
            if self._conn is conn:
                self._conn = None
            if conn in self._users:
                return
        _close(conn)

    def _run(self, function: Callable[[Any], T], used: list[Any]) -> T:
        conn = self._connection(used)
        try:
            return function(conn)
        except libvirt.libvirtError as err:
            if err.get_error_code() in BROKEN or not _alive(conn):
                self._retire(conn)
            raise
        finally:
            self._release(conn)

    @contextmanager
    def serving(self, key: str, deadline: float) -> Iterator[None]:
        """Calls made in this block are for instance `key` and end before `deadline` (time.time())."""
        token = _serving.set(Serving(key, deadline))
        try:
            yield
        finally:
            _serving.reset(token)

    def _timeout(self, what: str, domain: str) -> float:
        deadline = _serving.get().deadline
        if not deadline:
            return self.call_timeout
        left = deadline - time.time() - MARGIN
        if left <= 0:
            raise Retryable(f"libvirt {what}{_on(domain)}: the operation's deadline has come", after=1.0)
        return min(self.call_timeout, left)

    async def settle(self, key: str) -> None:
        """Wait for calls of instance `key` that an earlier operation abandoned
        (a time-out, a cancel): they may still change the domain. Retryable if
        they do not end within a call's time-out."""
        running = [f for f in self._abandoned.get(key, []) if not f.done()]
        if not running:
            self._abandoned.pop(key, None)
            return
        _done, pending = await asyncio.wait([asyncio.wrap_future(f) for f in running], timeout=self._timeout("call", ""))
        if pending:
            raise Retryable(f"{len(pending)} libvirt call(s) an earlier attempt abandoned are still under way", after=1.0)
        self._abandoned.pop(key, None)

    def _abandon(self, running: Future[Any], used: list[Any], retire: bool) -> None:
        """A call given up on: its instance's next operation waits for it; after a time-out
        its connection is retired too (a half-open one would hang every later call)."""
        for conn in used if retire else ():
            self._retire(conn)
        key = _serving.get().key
        if key and not running.done():
            self._abandoned.setdefault(key, []).append(running)

    async def call(self, what: str, function: Callable[[Any], T], domain: str = "") -> T:
        """`function(connection)` in the pool, as the span `libvirt <what>`.

        Raises Missing (no such domain), Permanent (libvirt refused the
        request as such) or Retryable (anything else: a time-out, a broken
        connection, a busy hypervisor)."""
        attributes = {"libvirt.call": what, "libvirt.uri": self.shown}
        if domain:
            attributes["libvirt.domain"] = domain
        with telemetry.hot_span(_tracer, f"libvirt {what}", None, telemetry.SpanKind.CLIENT, attributes) as span:
            timeout = self._timeout(what, domain)
            used: list[Any] = []
            running = self._pool.submit(self._run, function, used)
            try:
                return await asyncio.wait_for(asyncio.wrap_future(running), timeout)
            except TimeoutError:
                self._abandon(running, used, retire=True)
                telemetry.fail(span, "time-out")
                why = "(--call-timeout)" if timeout >= self.call_timeout else "(the operation's deadline)"
                raise Retryable(f"libvirt {what}{_on(domain)} did not answer within {round(timeout, 1):g} s {why}",
                                after=1.0) from None
            except asyncio.CancelledError:  # the operation's deadline, or the controller stopping
                self._abandon(running, used, retire=False)
                raise
            except libvirt.libvirtError as err:
                code = err.get_error_code()
                message = self.credentials.scrub(err.get_error_message() or str(err), *self._secrets)
                if code == libvirt.VIR_ERR_NO_DOMAIN:
                    raise Missing(domain) from None
                telemetry.fail(span, message)
                if code in REFUSED:
                    raise Permanent(f"libvirt refused {what}{_on(domain)}: {message}") from None
                if code in (libvirt.VIR_ERR_AUTH_FAILED, libvirt.VIR_ERR_AUTH_UNAVAILABLE, libvirt.VIR_ERR_AUTH_CANCELLED):
                    raise Retryable(f"cannot authenticate to libvirt at {self.shown}: {message} (credentials come "
                                    f"from {USERNAME_ENV}/{PASSWORD_ENV} or --auth-file)", after=5.0) from None
                raise Retryable(f"libvirt {what}{_on(domain)} failed: {message}", after=1.0) from None

    async def close(self) -> None:
        """Close the connection, off the event loop (openAuth may hold the lock): at most a call's time-out."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        closed: Future[None] = Future()

        def close_now() -> None:
            if not closed.set_running_or_notify_cancel():
                return
            try:
                with self._lock:
                    conn = self._conn
                if conn is not None:
                    self._retire(conn)
            finally:
                closed.set_result(None)

        threading.Thread(target=close_now, name="libvirt-close", daemon=True).start()
        try:
            await asyncio.wait_for(asyncio.wrap_future(closed), self.call_timeout)
        except TimeoutError:
            log.warning("libvirt connection to %s did not close within %g s: left to the process's exit",
                        self.shown, self.call_timeout)


def _close(conn: Any) -> None:
    try:
        conn.close()
    except libvirt.libvirtError:
        pass


def _alive(conn: Any) -> bool:
    try:
        return bool(conn.isAlive())
    except libvirt.libvirtError:
        return False


def _on(domain: str) -> str:
    return f" of {domain}" if domain else ""
