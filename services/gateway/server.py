"""The gateway process: gRPC API over the NATS repository."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from nats.aio.client import Client

from gateway.api.access import AccessGate, AccessServicer
from gateway.api.administration import AdministrationServicer
from gateway.api.automation import AutomationServicer
from gateway.api.catalog import ArchitectureServicer, CatalogServicer
from gateway.api.channel import Channel
from gateway.api.feeds import Feeds
from gateway.api.solutions import SolutionServicer
from gateway.bus import Bus
from gateway.console.server import Console
from gateway.console.sessions import Sessions, session_seconds_from_environment
from gateway.console.views import Views
from orchestration.store.access import open_access
from orchestration.store.repository import Repository
from orchestration.store.subjects import Subjects
from orchestration.store.wire import connect, redact
from orchestration.v1 import gateway_pb2 as gw
from orchestration.v1 import gateway_pb2_grpc as gw_grpc
from orchestration_sdk.runtime.grpcserver import Server
from orchestration_sdk.runtime.process import serve_until_signalled
from orchestration_sdk.runtime.tls import TlsConfig

log = logging.getLogger("gateway")

SERVICE_NAMES = [s.full_name for s in gw.DESCRIPTOR.services_by_name.values()]


@dataclass(frozen=True)
class GatewaySettings:
    address: str
    nats_url: str
    prefix: str
    token: str
    tls: TlsConfig = field(default_factory=TlsConfig)
    # host:port of the web console ("": none); a Jaeger UI to link traces to.
    console_address: str = ""
    jaeger_url: str = ""
    # Mark the console's cookie Secure although the gateway serves plain HTTP (a proxy terminates TLS).
    console_secure_cookie: bool = False


class Gateway:
    """A running gateway: call start(), then stop()."""

    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self.server: Server | None = None
        self.bus: Bus | None = None
        self.console: Console | None = None
        self._nc: Client | None = None

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.port

    async def start(self) -> None:
        self._nc = nc = await connect(self.settings.nats_url, "gateway", self._nats_state)
        subjects = Subjects(self.settings.prefix)
        js = nc.jetstream()
        repo = Repository(js, subjects)
        await repo.open()
        tokens, audit, policies = await open_access(js, subjects, self.settings.token, repo.replicas)
        gate = AccessGate(tokens, audit)
        server = Server(self.settings.address, gate, SERVICE_NAMES, self.settings.tls)
        access = AccessServicer(tokens, audit, policies, repo.model.require_domain)
        gw_grpc.add_AccessServiceServicer_to_server(access, server.grpc)
        administration, catalog, architectures = AdministrationServicer(repo), CatalogServicer(repo), ArchitectureServicer(repo)
        gw_grpc.add_AdministrationServiceServicer_to_server(administration, server.grpc)
        gw_grpc.add_CatalogServiceServicer_to_server(catalog, server.grpc)
        gw_grpc.add_ArchitectureServiceServicer_to_server(architectures, server.grpc)
        channel = Channel(repo, nc, subjects)
        feeds = Feeds(nc, subjects)
        solutions = SolutionServicer(repo, channel, feeds, policies)
        automation = AutomationServicer(repo, feeds)
        gw_grpc.add_SolutionServiceServicer_to_server(solutions, server.grpc)
        gw_grpc.add_AutomationServiceServicer_to_server(automation, server.grpc)
        self.bus = Bus(nc, subjects, solutions, automation, gate.on("bus"))
        await self.bus.start()
        if self.settings.console_address:
            console_gate = gate.on("console")
            views = Views(console_gate, solutions, automation, administration, catalog, architectures, access)
            self.console = Console(self.settings.console_address, views, console_gate, nc, subjects,
                                   Sessions(session_seconds_from_environment()), self.settings.tls, self.settings.jaeger_url,
                                   self.settings.console_secure_cookie)
            await self.console.start()
            log.info("console at %s", self.console.url)
        await server.start()
        await server.set_serving(True)
        self.server = server
        log.info("listening on port %d, nats %s, prefix %s", server.port, redact(self.settings.nats_url), self.settings.prefix)

    async def _nats_state(self, up: bool) -> None:
        if self.console is not None:
            self.console.connectivity.set(up)
        if self.server is not None:
            await self.server.set_serving(up)

    async def stop(self) -> None:
        if self.console is not None:
            await self.console.stop()
        if self.bus is not None:
            await self.bus.stop()
        if self.server is not None:
            await self.server.set_serving(False)
            await self.server.stop()
        if self._nc is not None:
            await self._nc.close()


async def serve(settings: GatewaySettings) -> None:
    """Run a gateway until SIGTERM or SIGINT."""
    await serve_until_signalled(Gateway(settings), "gateway")
