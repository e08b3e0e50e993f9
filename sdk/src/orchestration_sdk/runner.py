"""The main routine of every controller process: options, server,
registration, clean shutdown on SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import click

from orchestration_sdk.controller import Controller
from orchestration_sdk.registrar import Registrar, Registration
from orchestration_sdk.runtime.credentials import DigestGate
from orchestration_sdk.runtime.grpcserver import Server
from orchestration_sdk.runtime.process import METRICS_HELP, read_secret
from orchestration_sdk.runtime.process import run as run_service
from orchestration_sdk.runtime.process import service_process
from orchestration_sdk.runtime.tls import TlsConfig
from orchestration_sdk.servicer import SERVICE_NAME, ControllerServicer
from orchestration_sdk.v1 import controller_pb2_grpc as pb_grpc

log = logging.getLogger("orchestration_sdk.runner")

# A factory receives the values of the controller's own options by name.
ControllerFactory = Callable[[Mapping[str, Any]], Controller]


@dataclass(frozen=True)
class RunSettings:
    """The common options of a controller process, resolved."""

    name: str
    version: str
    aliases: tuple[str, ...]
    address: str
    advertise: str
    dispatchers: tuple[str, ...]
    # This controller's own credential, sent to the dispatchers.
    credential: str
    # SHA-256 (hex) of the engine credential, which callers must present.
    engine_sha256: str
    replica: str
    tls: TlsConfig = field(default_factory=TlsConfig)


def split_address(address: str) -> tuple[str, int]:
    """("host", port) of "host:port" (port 0 when missing); IPv6 in brackets."""
    host, sep, port = address.rpartition(":")
    if not sep or "]" in port:
        return address, 0
    return host, int(port or 0)


def advertised_address(advertise: str, bound: str, port: int) -> str:
    """The address other processes reach this replica at.

    A wildcard bind is not reachable as such, so the host name stands in; an
    advertised host without a port gets the bound port.
    """
    if advertise:
        host, given = split_address(advertise)
        return f"{host}:{given or port}"
    host, _ = split_address(bound)
    if host in ("", "0.0.0.0", "[::]", "::"):
        host = socket.gethostname()
    return f"{host}:{port}"


def dispatcher_addresses(values: Sequence[str]) -> tuple[str, ...]:
    """--dispatcher values: repeatable, comma- or whitespace-separated (ORCH_DISPATCHER)."""
    return tuple(a for v in values for a in v.replace(",", " ").split())


async def serve(controller: Controller, settings: RunSettings, stop: asyncio.Event | None = None) -> None:
    """Serve `controller` until `stop` is set (or SIGTERM/SIGINT), then shut down
    in order: unregister, stop accepting calls, finish operations, close."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await controller.open()
    servicer = ControllerServicer(controller)
    extras = list(controller.extra_services())
    server = Server(settings.address, DigestGate(settings.engine_sha256), [SERVICE_NAME, *(e.name for e in extras)], settings.tls)
    pb_grpc.add_ControllerServiceServicer_to_server(servicer, server.grpc)
    for extra in extras:
        extra.add(server.grpc)
    await server.start()
    await server.set_serving(True)
    host, _ = split_address(settings.address)
    advertise = advertised_address(settings.advertise, settings.address, server.port)
    log.info("controller %s %s listening on port %d (advertised as %s)", settings.name, settings.version, server.port, advertise)
    # On stdout too: whoever started the process learns the port without parsing logs.
    print(f"listening on {host}:{server.port}", flush=True)
    registrar: Registrar | None = None
    if settings.dispatchers:
        registration = Registration(settings.name, settings.version, settings.aliases, settings.replica, advertise)
        registrar = Registrar(settings.dispatchers, settings.credential, registration, tls=settings.tls)
        await registrar.start()
    else:
        log.warning("no --dispatcher given: serving without registration")
    try:
        await stop.wait()
    finally:
        log.info("stopping")
        if registrar is not None:
            await registrar.stop()
        await server.set_serving(False)
        await server.stop(grace=2.0)
        await servicer.drain(timeout=2.0)
        await controller.close()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


def run_controller(
    controller: Controller | ControllerFactory,
    *,
    name: str,
    version: str,
    aliases: Sequence[str] = (),
    argv: Sequence[str] | None = None,
    options: Sequence[click.Option] = (),
) -> None:
    """The main routine of a controller process (blocks until stopped): its
    command line (see controller_command) parsed and run."""
    command = controller_command(controller, name=name, version=version, aliases=aliases, options=options)
    command.main(args=list(argv) if argv is not None else None, prog_name=f"controller {name}")


def controller_command(
    controller: Controller | ControllerFactory,
    *,
    name: str,
    version: str,
    aliases: Sequence[str] = (),
    options: Sequence[click.Option] = (),
) -> click.Command:
    """The command line of a controller process.

    Common options: `--addr` (listen, default 127.0.0.1:0), `--advertise`
    (address to register, default the bound one), `--dispatcher` host:port
    (repeatable or comma-separated; ORCH_DISPATCHER), `--credential-file`
    (this controller's credential, issued for its names: sent to the
    dispatcher), `--engine-credential-sha256` (ORCH_ENGINE_CREDENTIAL_SHA256:
    the hash of the credential callers must present), `--replica` (default hostname-pid). A controller with options of
    its own passes them as `options` and a factory instead of an instance; the
    factory receives their values by parameter name.

    Example::

        run_controller(Echo(), name="Echo", version="V1.0.0", aliases=("echo",))

        run_controller(
            lambda opts: Sim(state_file=opts["state_file"]),
            name="Internal", version="V1.0.0", aliases=("sim",),
            options=[click.Option(["--state-file"], type=click.Path(dir_okay=False))],
        )
    """

    def main(addr: str, advertise: str, dispatcher: tuple[str, ...], credential_file: str, engine_credential_sha256: str,
             replica: str, metrics_addr: str, tls_cert: str, tls_key: str, tls_ca: str, tls_client_auth: bool,
             **own: Any) -> None:
        with service_process(name, metrics_addr):
            tls = TlsConfig(tls_cert, tls_key, tls_ca, tls_client_auth)
            run(addr, advertise, dispatcher, credential_file, engine_credential_sha256, replica, tls, own)

    def run(addr: str, advertise: str, dispatcher: tuple[str, ...], credential_file: str, engine_sha256: str, replica: str,
            tls: TlsConfig, own: dict[str, Any]) -> None:
        credential = read_secret(credential_file, "--credential-file")
        try:
            DigestGate(engine_sha256)
        except ValueError as err:
            raise click.BadParameter(str(err), param_hint="--engine-credential-sha256") from None
        settings = RunSettings(
            name=name,
            version=version,
            aliases=tuple(aliases),
            address=addr,
            advertise=advertise,
            dispatchers=dispatcher_addresses(dispatcher),
            credential=credential,
            engine_sha256=engine_sha256,
            replica=replica or f"{socket.gethostname()}-{os.getpid()}",
            tls=tls,
        )
        instance = controller if isinstance(controller, Controller) else controller(own)
        run_service(serve(instance, settings))

    params: list[click.Parameter] = [
        click.Option(["--addr"], default="127.0.0.1:0", show_default=True, help="Listen address of the ControllerService."),
        click.Option(["--advertise"], default="", help="Address to register (default: the bound address)."),
        click.Option(["--dispatcher"], multiple=True, envvar="ORCH_DISPATCHER",
                     help="Dispatcher host:port; repeatable or comma-separated."),
        click.Option(["--credential-file"], required=True, type=click.Path(exists=True, dir_okay=False),
                     help="File holding this controller's credential (issued for its names; sent to the dispatcher)."),
        click.Option(["--engine-credential-sha256"], envvar="ORCH_ENGINE_CREDENTIAL_SHA256", required=True,
                     help="SHA-256 (hex) of the engine credential that the dispatchers and the monitor present."),
        click.Option(["--replica"], default="", help="Unique replica id (default: hostname-pid)."),
        click.Option(["--metrics-addr"], envvar="ORCH_METRICS_ADDR", default="", help=METRICS_HELP),
        click.Option(["--tls-cert"], envvar="ORCH_TLS_CERT", default="", help="PEM certificate (server, and client for mutual TLS)."),
        click.Option(["--tls-key"], envvar="ORCH_TLS_KEY", default="", help="PEM private key."),
        click.Option(["--tls-ca"], envvar="ORCH_TLS_CA", default="", help="PEM CA bundle to trust."),
        click.Option(["--tls-client-auth"], envvar="ORCH_TLS_CLIENT_AUTH", is_flag=True, help="Require client certificates."),
        *options,
    ]
    return click.Command(name, callback=main, params=params, help=f"Run the {name} {version} controller.")
