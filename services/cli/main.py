"""The `orch` command group and its global options."""

from __future__ import annotations

import sys
from typing import Any

import click
import grpc

from cli import access_commands, engine_commands, model_commands, runtime_commands, sim_commands, watch_commands
from cli.client import Settings
from orchestration.runtime.tls import TlsConfig


class _Group(click.Group):
    """Turns gRPC errors into one clear line and a non-zero exit."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except grpc.RpcError as err:
            code = err.code() if hasattr(err, "code") else None
            details = err.details() if hasattr(err, "details") else str(err)
            if code == grpc.StatusCode.UNAVAILABLE:
                details = f"gateway unreachable ({details}); is `orch up` running?"
            name = code.name if code is not None else "ERROR"
            click.echo(f"error: {name}: {details}", err=True)
            sys.exit(1)


@click.group(cls=_Group)
@click.option("--home", envvar="ORCH_HOME", default=None, help="Directory of the running suite (default ./.orch).")
@click.option("--server", default=None, help="Gateway address host:port (default: from $ORCH_HOME).")
@click.option("--tls-ca", envvar="ORCH_TLS_CA", default="", help="CA bundle to trust: talk TLS to the gateway.")
@click.option("--tls-cert", envvar="ORCH_TLS_CERT", default="", help="Client certificate (mutual TLS).")
@click.option("--tls-key", envvar="ORCH_TLS_KEY", default="", help="Client key (mutual TLS).")
@click.pass_context
def cli(ctx: click.Context, home: str | None, server: str | None, tls_ca: str, tls_cert: str, tls_key: str) -> None:
    """orch: the lifecycle orchestration engine."""
    ctx.obj = Settings(home=home, server=server, tls=TlsConfig(tls_cert, tls_key, tls_ca))


runtime_commands.register(cli)
model_commands.register(cli)
engine_commands.register({"solution": model_commands.solution, "task": model_commands.task}, cli)
sim_commands.register(cli)
watch_commands.register(model_commands.event, cli)
access_commands.register(cli)
