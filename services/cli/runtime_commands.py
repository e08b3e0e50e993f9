"""Runtime commands: `orch up` (the seed's main routine, layer A) and `orch info`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

import click

from cli.embedded_nats import (
    EmbeddedNatsConfig,
    find_nats_server,
    free_port,
    load_or_create_users,
    nats_url,
    server_environment,
    wait_for_port,
    write_config,
)
from cli.home import Connection, load_or_create_secret, load_or_create_token, orch_home, save_connection, write_private
from cli.settings import Settings, pass_settings
from cli.supervisor import ServiceSpec, Supervisor
from orchestration.runtime.credentials import engine_credential_sha256, issue_controller_credential
from orchestration.store.natsusers import BUS, OPERATOR, bus_clients_from_environment, inbox_prefix, is_bus
from orchestration.store.subjects import DEFAULT_PREFIX, Subjects, check_prefix
from orchestration_sdk.runtime.tls import tls_options
from orchestration_sdk.status_errors import InvalidArgument

# The names each built-in controller registers (its NAME and ALIASES; the CLI
# imports no service, tests/test_controller_credentials.py checks they agree):
# the credential `orch up` issues it is good for these only.
BUILT_IN_NAMES = {"sim": ["Internal", "sim"], "process": ["process"]}


def _split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise click.BadParameter(f"{address!r} is not host:port")
    return host, int(port)


def _port_ready(host: str, port: int, timeout: float = 30.0) -> Callable[[subprocess.Popen], None]:
    def wait(proc: subprocess.Popen) -> None:
        try:
            wait_for_port(host, port, timeout=timeout, proc=proc)
        except (RuntimeError, TimeoutError) as err:
            raise click.ClickException(f"service did not come up on {host}:{port}: {err}") from err

    return wait


@click.command()
@click.option("--gateway-addr", default="127.0.0.1:50051", show_default=True, help="Listen address of the gateway API.")
@click.option("--console-addr", default="127.0.0.1:8470", show_default=True,
              help="Listen address of the web console (served by the gateway); '' for none.")
@click.option("--jaeger-url", envvar="ORCH_JAEGER_URL", default="", help="Jaeger UI to link the console's traces to.")
@click.option("--nats-port", default=4222, show_default=True, help="Port of the embedded NATS server (loopback only).")
@click.option("--nats-url", "external_nats_url", default=None, help="Use this NATS server instead of starting one.")
@click.option("--prefix", default=DEFAULT_PREFIX, show_default=True, help="Subject and bucket prefix.")
@click.option("--dispatcher-addr", default="127.0.0.1:50052", show_default=True,
              help="Listen address of the (first) dispatcher (controller registration); the others take free ports.")
@click.option("--dispatchers", default=None, type=click.IntRange(min=1),
              help="Dispatcher processes: each solution's change runs on one of them, so changes of different "
                   "solutions use several cores (default: one per core, at most 4).")
@click.option("--concurrency", default=None, type=int, help="Operations in flight per solution (dispatcher default).")
@click.option("--domain-concurrency", default=None, type=int,
              help="Operations in flight per domain (dispatcher default; 0: no limit).")
@click.option("--operation-timeout", default=None, type=float, help="Seconds per controller operation (dispatcher default).")
@click.option("--max-attempts", default=None, type=int, help="Attempts per operation (dispatcher default).")
@click.option("--controller-wait", default=None, type=float, help="Seconds an operation waits for its controller.")
@click.option("--sim-replicas", default=1, show_default=True, help="Replicas of the sim controller.")
@click.option("--monitor-interval", default=5.0, show_default=True, type=click.FloatRange(min=0.1),
              help="Seconds between two polls of the monitor.")
@click.option("--monitor-max-compensations", default=3, show_default=True, type=click.IntRange(min=1),
              help="Compensations of a solution that may fail before the monitor marks it degraded.")
@click.option("--otlp-endpoint", envvar="OTEL_EXPORTER_OTLP_ENDPOINT", default="",
              help="Export traces of every service over OTLP/gRPC to this endpoint (e.g. http://jaeger:4317).")
@tls_options
@pass_settings
def up(settings: Settings, gateway_addr: str, console_addr: str, jaeger_url: str, nats_port: int, external_nats_url: str | None, prefix: str,
       dispatcher_addr: str, dispatchers: int | None, concurrency: int | None, domain_concurrency: int | None, operation_timeout: float | None, max_attempts: int | None,
       controller_wait: float | None, sim_replicas: int, monitor_interval: float, monitor_max_compensations: int,
       otlp_endpoint: str,
       tls_cert: str, tls_key: str, tls_ca: str, tls_client_auth: bool) -> None:
    """Start NATS and every service in the foreground; Ctrl-C stops them all."""
    from orchestration_sdk.runtime import logs  # OpenTelemetry: only `up` needs it

    logs.configure("orch-up")
    try:
        check_prefix(prefix)
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint="--prefix") from err
    if bool(tls_cert) != bool(tls_key) or (tls_cert and not tls_ca):
        raise click.UsageError("TLS needs --tls-cert, --tls-key and --tls-ca together")
    home = orch_home(settings.home)
    home.mkdir(parents=True, exist_ok=True)
    token = load_or_create_token(home)
    # The engine credential (dispatcher and monitor -> controllers; controllers get its hash)
    # and the key that issues each controller a credential for its names.
    credential = home / "engine-credential"
    engine_key = load_or_create_secret(credential)
    registration_key = home / "registration-key"
    key = load_or_create_secret(registration_key)
    supervisor = Supervisor()
    signal.signal(signal.SIGTERM, supervisor.request_stop)
    signal.signal(signal.SIGINT, supervisor.request_stop)
    python = sys.executable
    metrics: dict[str, str] = {}

    def spec(name: str, argv: list[str], env: dict[str, str], ready: str = "") -> ServiceSpec:
        """A service with its own metrics port and the suite-wide environment
        (a controller's without any NATS URL: controllers do not use NATS)."""
        metrics[name] = f"127.0.0.1:{free_port()}"
        wait = _port_ready(*_split(ready)) if ready else None
        unset = frozenset({"ORCH_NATS_URL"}) if "ORCH_NATS_URL" not in env else frozenset()
        return ServiceSpec(name, argv, env={**env, "ORCH_METRICS_ADDR": metrics[name]}, wait_ready=wait, unset=unset)

    dispatcher_addrs = [dispatcher_addr] + [f"127.0.0.1:{free_port()}"
                                            for _ in range((dispatchers or min(os.cpu_count() or 1, 4)) - 1)]
    url = external_nats_url
    try:
        # Each service connects as its own NATS user (natsusers); with --nats-url, all use that URL.
        urls: dict[str, str] = {}
        if url is None:
            config = EmbeddedNatsConfig(data_dir=home / "nats", port=nats_port)
            users = load_or_create_users(home, Subjects(prefix), bus_clients_from_environment())
            conf = write_config(config, users)
            supervisor.start(ServiceSpec("nats-server", [find_nats_server(), "-c", str(conf), "-l", str(home / "nats-server.log")],
                                         env=server_environment(), wait_ready=_port_ready(config.host, config.port)))
            urls = {user: nats_url(config.host, config.port, users.credentials(user)) for user in users.passwords}
            url = urls[OPERATOR]
        # With --nats-url there is no bus user of ours: no bus URL rather than an all-powerful one.
        bus_url = urls.get(BUS, "")
        bus_clients = {user.removeprefix(BUS + "-"): url for user, url in urls.items() if is_bus(user) and user != BUS}
        env: dict[str, str] = {}
        if otlp_endpoint:
            env["OTEL_EXPORTER_OTLP_ENDPOINT"] = otlp_endpoint
        if tls_cert:
            env.update(ORCH_TLS_CERT=tls_cert, ORCH_TLS_KEY=tls_key, ORCH_TLS_CA=tls_ca)
            if tls_client_auth:
                env["ORCH_TLS_CLIENT_AUTH"] = "1"
        engine_flags = [
            flag
            for name, value in (("--concurrency", concurrency), ("--domain-concurrency", domain_concurrency),
                                ("--operation-timeout", operation_timeout),
                                ("--max-attempts", max_attempts), ("--controller-wait", controller_wait))
            if value is not None
            for flag in (name, str(value))
        ]
        def controller(names: list[str]) -> list[str]:
            path = home / "controllers" / f"{names[0]}.credential"
            write_private(path, issue_controller_credential(key, names) + "\n")
            return ["--dispatcher", ",".join(dispatcher_addrs), "--credential-file", str(path)]

        def env_controller(name: str) -> dict[str, str]:
            """A controller's environment: no NATS URL (controllers do not use NATS), and
            the hash of the credential the engine presents to it (derived for its name)."""
            return {**env, "ORCH_ENGINE_CREDENTIAL_SHA256": engine_credential_sha256(engine_key, name)}

        def as_user(user: str) -> dict[str, str]:
            return {**env, "ORCH_NATS_URL": urls.get(user, url or "")}

        console = ["--console-addr", console_addr, "--jaeger-url", jaeger_url] if console_addr else []
        supervisor.start(spec("gateway", [python, "-m", "gateway", "--addr", gateway_addr, "--prefix", prefix,
                                          "--token-file", str(home / "token"), *console], as_user("gateway"),
                              ready=gateway_addr))
        for number, address in enumerate(dispatcher_addrs, 1):
            # Fixed ports (kept across restarts by the supervisor): the controllers register with each one.
            supervisor.start(spec("dispatcher" if number == 1 else f"dispatcher-{number}", [
                python, "-m", "dispatcher", "--addr", address, "--prefix", prefix, "--credential-file", str(credential),
                "--registration-key-file", str(registration_key), "--replica", f"dispatcher-{number}", *engine_flags],
                as_user("dispatcher"), ready=address))
        sims = []
        for replica in range(1, sim_replicas + 1):
            # A fixed port (kept across restarts by the supervisor) so that `orch sim` finds the replica.
            sims.append(f"127.0.0.1:{free_port()}")
            supervisor.start(spec(f"controller sim-{replica}", [
                python, "-m", "controllers.sim", "--addr", sims[-1], *controller(BUILT_IN_NAMES["sim"]),
                "--replica", f"sim-{replica}", "--state-file", str(home / f"sim-{replica}-state.jsonl"),
                "--op-log", str(home / "sim-ops.jsonl")], env_controller(BUILT_IN_NAMES["sim"][0])))
        # Instances of the process controller are local processes; their work dirs
        # (and pid files, for adoption after a restart) live under $ORCH_HOME-process,
        # outside the directory that holds the suite's secrets.
        supervisor.start(spec("controller process-1", [
            python, "-m", "controllers.process", "--addr", "127.0.0.1:0", *controller(BUILT_IN_NAMES["process"]),
            "--replica", "process-1",
            "--work-dir", str(home.parent / f"{home.name}-process")], env_controller(BUILT_IN_NAMES["process"][0])))
        supervisor.start(spec("monitor", [python, "-m", "monitor", "--prefix", prefix, "--credential-file", str(credential),
                                          "--interval", str(monitor_interval),
                                          "--max-compensations", str(monitor_max_compensations)], as_user("monitor")))
        console_url = f"{'https' if tls_cert else 'http'}://{console_addr}/" if console_addr else ""
        save_connection(home, Connection(gateway=gateway_addr, nats_url=url, bus_url=bus_url, bus_clients=bus_clients, subject_prefix=prefix, token=token,
                                         dispatcher=",".join(dispatcher_addrs), sims=sims, tls_ca=tls_ca, metrics=metrics,
                                         console=console_url))
        click.echo(f"orch is up: gateway {gateway_addr}, ORCH_HOME={home}. Ctrl-C stops everything.", err=True)
        if console_url:
            click.echo(f"web console: {console_url} (sign in with the token in {home / 'token'})", err=True)
    except BaseException:
        supervisor.stop_all()
        raise
    supervisor.run()
    click.echo("orch is down.", err=True)


@click.command()
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.option("--show-secrets", is_flag=True,
              help="Print the passwords in the NATS URLs (masked as *** otherwise): anyone who reads them can "
                   "connect as that NATS user.")
@pass_settings
def info(settings: Settings, output: str, show_secrets: bool) -> None:
    """Where the running suite listens (for scripts: -o json; passwords masked unless --show-secrets)."""
    connection = settings.connection()
    shown = (lambda url: url) if show_secrets else mask_password
    # A bus client connects with its own inbox prefix: it can read replies there only.
    clients = {name: {"url": shown(url), "inbox_prefix": inbox_prefix(f"{BUS}-{name}")}
               for name, url in connection.bus_clients.items()}
    data = {"gateway": settings.server or connection.gateway, "nats_url": shown(connection.nats_url),
            "bus_url": shown(connection.bus_url), "bus_inbox_prefix": inbox_prefix(BUS) if connection.bus_url else "",
            "bus_clients": clients, "console": connection.console,
            "subject_prefix": connection.subject_prefix, "metrics": connection.metrics}
    if output == "json":
        click.echo(json.dumps(data))
    else:
        for key, value in _lines(data):
            click.echo(f"{key}: {value}")


def mask_password(url: str) -> str:
    """The URL (or comma-separated URLs) with every password replaced by ***:
    `user:password@` keeps the user, a token alone (`token@`) goes whole."""
    if "," in url:
        return ",".join(mask_password(part.strip()) for part in url.split(","))
    scheme, sep, rest = url.partition("://")
    userinfo, at, host = rest.rpartition("@")
    if not at:
        return url
    user, colon, _ = userinfo.partition(":")
    return f"{scheme}{sep}{user}:***@{host}" if colon else f"{scheme}{sep}***@{host}"


def _lines(data: Mapping[str, object], prefix: str = "") -> list[tuple[str, object]]:
    """The table form of nested settings: one `a.b: value` line per leaf."""
    lines: list[tuple[str, object]] = []
    for key, value in data.items():
        if isinstance(value, Mapping) and value:
            lines += _lines(value, f"{prefix}{key}.")
        else:
            lines.append((f"{prefix}{key}", value if value != {} else "-"))
    return lines


def register(group: click.Group) -> None:
    """Add the runtime commands to the orch group."""
    group.add_command(up)
    group.add_command(info)


@click.group()
def controller() -> None:
    """Controllers of your own: their credentials, from this suite's keys."""


@controller.command("credential")
@click.argument("names", nargs=-1, required=True)
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False),
              help="File to write the credential to (mode 0600): the controller's --credential-file.")
@click.option("-o", "--output", type=click.Choice(["text", "json", "flags"]), default="text", show_default=True,
              help="flags: only the controller's options (--dispatcher, --credential-file, "
                   "--engine-credential-sha256), for its command line.")
@pass_settings
def credential(settings: Settings, names: tuple[str, ...], out: str, output: str) -> None:
    """Issue a controller a credential for NAMES (its name, then its aliases)
    from $ORCH_HOME's registration key, and print what the controller is
    started with: the dispatchers, the credential file and the hash of the
    credential the engine presents to it. Reads the suite's secrets: run it
    where `orch up` keeps its home.

    Example: python my_controller.py $(orch controller credential mine --out mine.credential -o flags)"""
    home = orch_home(settings.home)
    try:
        key = (home / "registration-key").read_text().strip()
        engine = (home / "engine-credential").read_text().strip()
    except OSError as err:
        raise click.ClickException(f"cannot read the suite's keys in {home} ({err.strerror}); "
                                   "run `orch up` there first, or give --home") from err
    if not key or not engine:
        raise click.ClickException(f"the suite's keys in {home} are empty; run `orch up` there to make them")
    try:
        issued = issue_controller_credential(key, list(names))
    except (ValueError, InvalidArgument) as err:
        raise click.BadParameter(str(getattr(err, "message", err)), param_hint="NAMES") from err
    write_private(Path(out), issued + "\n")
    digest = engine_credential_sha256(engine, names[0])
    dispatchers = settings.connection().dispatcher if (home / "connection.json").exists() else ""
    flags = " ".join([*(["--dispatcher", dispatchers] if dispatchers else []), "--credential-file",
                      str(Path(out).resolve()), "--engine-credential-sha256", digest])
    if output == "json":
        click.echo(json.dumps({"dispatcher": dispatchers, "credential_file": str(Path(out).resolve()),
                               "engine_credential_sha256": digest}))
    elif output == "flags":
        click.echo(flags)
    else:
        click.echo(f"credential for {', '.join(names)} written to {out}")
        click.echo(f"start the controller with: {flags}")
