"""One libvirt connection, shared by every operation.

libvirt's calls block, so each runs in a thread pool of `concurrency`
workers (at most that many calls at once, whatever the number of
operations), with a time-out per call, as a span (a child of the current
one: the operation's), named `libvirt <call>`. A call that times out is
abandoned, not interrupted: its worker stays busy until libvirt answers.
A broken connection is closed and opened again by the next call; the call
that saw it is `Retryable`.

Credentials for a URI that asks for them (SASL, a password for ssh) come
from the controller's environment (`ORCH_LIBVIRT_USERNAME`,
`ORCH_LIBVIRT_PASSWORD`) or a file named in its settings (`--auth-file`:
`username=...` and `password=...` lines); they are handed to libvirt's
authentication callback and never logged, returned or put on a span.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import urllib.parse
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
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

    def scrub(self, text: str) -> str:
        """`text` with the password blotted out, should libvirt ever echo it."""
        return text.replace(self.password, "***") if self.password else text

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
    """The URI without a password (for logs and spans)."""
    parts = urllib.parse.urlsplit(uri)
    if parts.password is None:
        return uri
    netloc = f"{parts.username}@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


class Hypervisor:
    """The connection to one libvirt URI and the pool its calls run in."""

    def __init__(self, uri: str, credentials: Credentials, concurrency: int, call_timeout: float) -> None:
        self.uri, self.shown = uri, shown_uri(uri)
        self.credentials = credentials
        self.concurrency, self.call_timeout = concurrency, call_timeout
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="libvirt")
        self._lock = threading.Lock()
        self._conn: Any = None

    def _connection(self) -> Any:
        """The open connection, opened now if there is none (in a worker thread)."""
        with self._lock:
            if self._conn is None:
                auth = [[libvirt.VIR_CRED_AUTHNAME, libvirt.VIR_CRED_PASSPHRASE, libvirt.VIR_CRED_NOECHOPROMPT],
                        self.credentials.answer, None]
                self._conn = libvirt.openAuth(self.uri, auth, 0)
                log.info("connected to %s", self.shown)
            return self._conn

    def _drop(self, conn: Any) -> None:
        with self._lock:
            if self._conn is conn and conn is not None:
                self._conn = None
                try:
                    conn.close()
                except libvirt.libvirtError:
                    pass

    def _run(self, function: Callable[[Any], T]) -> T:
        conn = None
        try:
            conn = self._connection()
            return function(conn)
        except libvirt.libvirtError as err:
            if conn is None or err.get_error_code() in BROKEN or not _alive(conn):
                self._drop(conn)
            raise

    async def call(self, what: str, function: Callable[[Any], T], domain: str = "") -> T:
        """`function(connection)` in the pool, as the span `libvirt <what>`.

        Raises Missing (no such domain), Permanent (libvirt refused the
        request as such) or Retryable (anything else: a time-out, a broken
        connection, a busy hypervisor)."""
        attributes = {"libvirt.call": what, "libvirt.uri": self.shown}
        if domain:
            attributes["libvirt.domain"] = domain
        with telemetry.hot_span(_tracer, f"libvirt {what}", None, telemetry.SpanKind.CLIENT, attributes) as span:
            loop = asyncio.get_running_loop()
            try:
                return await asyncio.wait_for(loop.run_in_executor(self._pool, self._run, function), self.call_timeout)
            except TimeoutError:
                telemetry.fail(span, "time-out")
                raise Retryable(f"libvirt {what}{_on(domain)} did not answer within {self.call_timeout:g} s "
                                f"(--call-timeout)", after=1.0) from None
            except libvirt.libvirtError as err:
                code, message = err.get_error_code(), self.credentials.scrub(err.get_error_message() or str(err))
                if code == libvirt.VIR_ERR_NO_DOMAIN:
                    raise Missing(domain) from None
                telemetry.fail(span, message)
                if code in REFUSED:
                    raise Permanent(f"libvirt refused {what}{_on(domain)}: {message}") from None
                if code in (libvirt.VIR_ERR_AUTH_FAILED, libvirt.VIR_ERR_AUTH_UNAVAILABLE, libvirt.VIR_ERR_AUTH_CANCELLED):
                    raise Retryable(f"cannot authenticate to libvirt at {self.shown}: {message} (credentials come "
                                    f"from {USERNAME_ENV}/{PASSWORD_ENV} or --auth-file)", after=5.0) from None
                raise Retryable(f"libvirt {what}{_on(domain)} failed: {message}", after=1.0) from None

    def close(self) -> None:
        self._drop(self._conn)
        self._pool.shutdown(wait=False, cancel_futures=True)


def _alive(conn: Any) -> bool:
    try:
        return bool(conn.isAlive())
    except libvirt.libvirtError:
        return False


def _on(domain: str) -> str:
    return f" of {domain}" if domain else ""
