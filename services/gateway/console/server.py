"""The console's HTTP server: the page and its static files, the JSON API of
the views, sign-in and sessions, and the live stream.

Security: a session cookie (HttpOnly, SameSite=Strict, Secure under TLS)
that expires; every change needs the session's CSRF token in the
X-CSRF-Token header; a strict Content-Security-Policy (nothing but this
origin, no inline script or style); roles apply to every call as over
gRPC, and every change is in the audit trail (channel "console")."""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
from aiohttp import web
from nats.aio.client import Client as NatsClient

from gateway.api.access import AccessGate
from gateway.console.live import Connectivity, changes, subjects_for
from gateway.console.sessions import COOKIE, Session, Sessions
from gateway.console.views import ACTION_METHODS, EVENT_FILTERS, Views, require_domain
from orchestration.model.access import Principal
from orchestration.store.subjects import Subjects
from orchestration.v1 import gateway_pb2 as gw
from orchestration_sdk.runtime.concurrency import while_valid
from orchestration_sdk.runtime.status import status_of
from orchestration_sdk.runtime.tls import TlsConfig
from orchestration_sdk.status_errors import InvalidArgument, PermissionDenied, Unauthenticated

log = logging.getLogger("gateway.console")

STATIC = Path(__file__).parent / "static"
MAX_BODY = 64 * 1024
# A live stream re-checks its session (expiry, revocation) at least this often.
RECHECK_SECONDS = 0.25
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "font-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
# The one mapping of the API's status codes to HTTP statuses.
HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400, grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403, grpc.StatusCode.NOT_FOUND: 404, grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.FAILED_PRECONDITION: 409, grpc.StatusCode.ABORTED: 409, grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNAVAILABLE: 503, grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}
# Paths of the single page: the browser routes them.
PAGES = ("/", "/signin", "/domains/{tail:.*}", "/tasks/{tail:.*}")

View = Callable[[web.Request, Principal], Awaitable[dict[str, Any]]]


class Console:
    """A running console: start(), then stop()."""

    def __init__(self, address: str, views: Views, gate: AccessGate, nc: NatsClient, subjects: Subjects,
                 sessions: Sessions, tls: TlsConfig | None = None, jaeger_url: str = "", secure_cookie: bool = False) -> None:
        self.address = address
        self.views = views
        self.gate = gate
        self.nc = nc
        self.subjects = subjects
        self.sessions = sessions
        self.tls = tls if tls is not None and tls.cert else None
        self.jaeger_url = jaeger_url.rstrip("/")
        # Secure cookies when the console serves TLS itself, or behind a proxy that does.
        self.secure_cookie = secure_cookie or self.tls is not None
        self.connectivity = Connectivity()
        self._runner: web.AppRunner | None = None
        # The live streams open now (their handlers' tasks), ended on shutdown.
        self._streams: set[asyncio.Task[Any]] = set()
        self.port = 0

    @property
    def url(self) -> str:
        host = self.address.rsplit(":", 1)[0]
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}/"

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY, middlewares=[_headers])
        for page in PAGES:
            app.router.add_get(page, self._page)
        app.router.add_static("/static/", STATIC, show_index=False, follow_symlinks=False)
        app.router.add_post("/api/signin", self._signin)
        app.router.add_post("/api/signout", self._signout)
        reads: dict[str, View] = {
            "/api/session": self._session_info,
            "/api/overview": lambda r, who: self.views.overview(who),
            "/api/domains/{domain}/components": lambda r, who: self.views.components(who, _domain(r, who)),
            "/api/domains/{domain}/architectures/{architecture}/{version}": lambda r, who: self.views.architecture(
                who, _domain(r, who), r.match_info["architecture"], r.match_info["version"]),
            "/api/domains/{domain}/solutions/{solution}": lambda r, who: self.views.solution(
                who, _domain(r, who), r.match_info["solution"]),
            "/api/domains/{domain}/solutions/{solution}/tasks": lambda r, who: self.views.tasks(
                who, _domain(r, who), r.match_info["solution"]),
            "/api/domains/{domain}/solutions/{solution}/history": lambda r, who: self.views.history(
                who, _domain(r, who), r.match_info["solution"]),
            "/api/domains/{domain}/solutions/{solution}/diff": lambda r, who: self.views.diff(
                who, _domain(r, who), r.match_info["solution"], _number(r, "from"), _number(r, "to")),
            "/api/domains/{domain}/solutions/{solution}/instances": lambda r, who: self.views.instances(
                who, _domain(r, who), r.match_info["solution"], r.query.get("element", ""), r.query.get("cluster", ""),
                _offset(r)),
            "/api/domains/{domain}/events": lambda r, who: self.views.events(
                who, _domain(r, who), {key: r.query.get(key, "") for key in EVENT_FILTERS}),
            "/api/tasks/{task}": lambda r, who: self.views.task(who, r.match_info["task"]),
        }
        for path, view in reads.items():
            app.router.add_get(path, self._json(view))
        app.router.add_post("/api/domains/{domain}/solutions/{solution}/{action}", self._json(self._act, change=True))
        app.router.add_get("/api/live", self._live)
        app.on_shutdown.append(self._end_streams)
        return app

    async def _end_streams(self, app: web.Application) -> None:
        """A live stream lasts as long as its session: left alone, an open one
        (or one whose browser went away without a word) holds the shutdown
        for as long as aiohttp waits for handlers, longer than `orch up`
        waits for the gateway. They end first: what aiohttp itself does once
        its wait is over."""
        for stream in list(self._streams):
            stream.cancel()

    async def start(self) -> None:
        host, port = self.address.rsplit(":", 1)
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        context = None
        if self.tls is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(self.tls.cert, self.tls.key)
        site = web.TCPSite(self._runner, host.strip("[]"), int(port), ssl_context=context, reuse_port=False)
        try:
            await site.start()
        except OSError as err:
            raise OSError(f"console: cannot listen on {self.address}: {err.strerror}") from err
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.port = int(sockets[0].getsockname()[1]) if sockets else int(port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # ---- sessions ------------------------------------------------------------

    async def _caller(self, request: web.Request) -> tuple[Session, Principal]:
        session = self.sessions.get(request.cookies.get(COOKIE))
        if session is None:
            raise Unauthenticated("not signed in (or the session expired): sign in with a token")
        principal = await self.gate.identify(session.token)
        if principal is None:  # the token was revoked: so is the session
            self.sessions.close(session.id)
            raise Unauthenticated("the token of this session is no longer valid: sign in again")
        return session, principal

    async def _signin(self, request: web.Request) -> web.Response:
        try:
            _same_origin_json(request)
            body = await _body(request)
            token = body.get("token")
            if not isinstance(token, str) or not token.strip():
                raise InvalidArgument("token: paste a token (orch token create, or $ORCH_HOME/token)")
            principal = await self.gate.identify(token.strip())
            if principal is None:
                raise Unauthenticated("this token is not valid")
        except Exception as exc:  # noqa: BLE001 - every failure is an error reply
            return _error(exc)
        session = self.sessions.open(token.strip())
        response = web.json_response(_who(principal, session))
        response.set_cookie(COOKIE, session.id, httponly=True, samesite="Strict", secure=self.secure_cookie,
                            max_age=int(self.sessions.seconds), path="/")
        return response

    async def _signout(self, request: web.Request) -> web.Response:
        self.sessions.close(request.cookies.get(COOKIE))
        response = web.json_response({})
        response.del_cookie(COOKIE, path="/")
        return response

    async def _session_info(self, request: web.Request, who: Principal) -> dict[str, Any]:
        session = self.sessions.get(request.cookies.get(COOKIE))
        assert session is not None
        return {**_who(who, session), "jaeger": self.jaeger_url}

    # ---- views ---------------------------------------------------------------

    def _json(self, view: View, change: bool = False) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handle(request: web.Request) -> web.Response:
            try:
                session, who = await self._caller(request)
                if change and not session.csrf_matches(request.headers.get("X-CSRF-Token", "")):
                    message = "missing or wrong CSRF token: reload the page"
                    await self._refused(request, who, "PERMISSION_DENIED", message)
                    return web.json_response({"error": {"code": "PERMISSION_DENIED", "message": message}}, status=403)
                return web.json_response(await view(request, who))
            except Exception as exc:  # noqa: BLE001 - every failure is an error reply, never a trace
                return _error(exc)

        return handle

    async def _refused(self, request: web.Request, who: Principal, code: str, message: str) -> None:
        """Audit a change refused before it became a call (a forged request: no CSRF token)."""
        method = ACTION_METHODS.get(request.match_info.get("action", ""), "")
        target = gw.RemoveSolutionRequest(domain=request.match_info.get("domain", ""),
                                          solution=request.match_info.get("solution", ""))
        await self.gate.on("console").record(who, method, target, code, message)

    async def _act(self, request: web.Request, who: Principal) -> dict[str, Any]:
        domain = _domain(request, who)
        return await self.views.act(who, domain, request.match_info["solution"], request.match_info["action"],
                                    await _body(request))

    async def _live(self, request: web.Request) -> web.StreamResponse:
        try:
            _, who = await self._caller(request)
            domain = request.query.get("domain", "")
            if domain:
                require_domain(who, domain)
                subjects = subjects_for(self.subjects, [domain], request.query.get("solution", ""))
            elif who.is_global:
                subjects = [self.subjects.events_all, self.subjects.status_filter()]
            else:
                subjects = subjects_for(self.subjects, await self.views.visible_domains(who), "")
        except Exception as exc:  # noqa: BLE001
            return _error(exc)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"})
        await response.prepare(request)
        stream = asyncio.current_task()
        assert stream is not None
        self._streams.add(stream)

        async def signed_in() -> bool:
            try:
                await self._caller(request)
            except Unauthenticated:
                return False
            except Exception:  # noqa: BLE001 - NATS away: valid a moment ago, checked again at the next tick
                return True
            return True

        # An expired session or a revoked token ends the stream within RECHECK_SECONDS, quiet or not.
        try:
            async for message in while_valid(changes(self.nc, subjects, self.connectivity), signed_in, RECHECK_SECONDS):
                try:
                    await response.write(message.encode())
                except (ConnectionResetError, RuntimeError):
                    break
        except Unauthenticated:
            pass
        finally:
            self._streams.discard(stream)
        return response

    async def _page(self, request: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})


@web.middleware
async def _headers(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        response = exc
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Frame-Options"] = "DENY"
    return response


def _same_origin_json(request: web.Request) -> None:
    """Sign-in takes JSON from this origin only: a form of another site cannot sign a browser in."""
    if request.content_type != "application/json":
        raise InvalidArgument("sign-in: expected a JSON body (Content-Type: application/json)")
    origin = request.headers.get("Origin")
    if origin is not None and origin.split("://", 1)[-1] != request.host:
        raise PermissionDenied(f"sign-in: a request from {origin!r} is refused")


def _domain(request: web.Request, who: Principal) -> str:
    domain = request.match_info["domain"]
    require_domain(who, domain)
    return domain


def _number(request: web.Request, key: str) -> int:
    """A revision number from the query (InvalidArgument otherwise)."""
    value = request.query.get(key, "")
    if not value.isdigit() or len(value) > 9:
        raise InvalidArgument(f"{key}: expected a revision number")
    return int(value)


def _offset(request: web.Request) -> int:
    text = request.query.get("offset", "0")
    if not text.isdigit() or len(text) > 9:
        raise InvalidArgument(f"offset: {text!r} is not a whole number")
    return int(text)


async def _body(request: web.Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.text() or "{}")
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as err:
        raise InvalidArgument(f"body: not JSON ({err})") from None
    if not isinstance(body, dict):
        raise InvalidArgument("body: expected a JSON object")
    return body


def _who(principal: Principal, session: Session) -> dict[str, Any]:
    return {"name": principal.name, "role": principal.role.label, "domains": sorted(principal.domains),
            "csrf": session.csrf}


def _error(exc: BaseException) -> web.Response:
    code, message = status_of(exc)
    if code == grpc.StatusCode.INTERNAL:
        log.exception("console request failed", exc_info=exc)
    return web.json_response({"error": {"code": code.name, "message": message}}, status=HTTP_STATUS.get(code, 500))
