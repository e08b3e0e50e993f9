"""The `orch` command group and its global options.

Commands are loaded when they are run: `orch --help` and `orch info`
import neither gRPC nor protobuf, and a gateway command imports only what
talking to the gateway takes (see `make bench`, CLI section)."""

from __future__ import annotations

import functools
import os
import sys
from typing import Any

import click

from cli.settings import Settings
from orchestration_sdk.runtime.tls import TlsConfig

# Every top-level command: the line `orch --help` shows for it, and the
# command modules it is made from (engine_commands adds to model_commands'
# solution and task groups, history_commands to its solution group,
# watch_commands to its event group), which are
# all it loads; `up`, `info` and `controller` come from runtime_commands.
COMMANDS: dict[str, tuple[str, tuple[str, ...]]] = {
    "apply": ("Validate a model, domain, component or architecture file and store it.", ("model",)),
    "architecture": ("Architectures.", ("model",)),
    "audit": ("The audit trail: every change made (or refused) through the gateway.", ("access",)),
    "cluster": ("Clusters of a solution.", ("model", "engine")),
    "component": ("Catalog components.", ("model",)),
    "controller": ("Controllers of your own: their credentials, from this suite's keys.", ()),
    "domain": ("Domains.", ("model",)),
    "event": ("Task events.", ("model", "watch")),
    "events": ("Task events.", ("model", "watch")),
    "info": ("Where the running suite listens (for scripts: -o json).", ()),
    "instance": ("Instances of a solution.", ("model", "engine")),
    "sim": ("The sim controller (drift for tests and demos).", ("sim",)),
    "solution": ("Solutions.", ("model", "engine")),
    "status": ("Status published by the monitor.", ("model", "watch")),
    "task": ("Tasks.", ("model", "engine")),
    "token": ("Tokens: who may call the gateway, with which role, in which domains.", ("access",)),
    "up": ("Start NATS and every service in the foreground; Ctrl-C stops them all.", ()),
}


@functools.cache
def _gateway_commands(modules: tuple[str, ...]) -> click.Group:
    """The commands that talk to the gateway made by these modules, registered as one tree."""
    tree = click.Group()
    if "model" in modules:
        from cli import model_commands

        model_commands.register(tree)
        if "engine" in modules:
            from cli import engine_commands

            engine_commands.register({"solution": model_commands.solution, "task": model_commands.task}, tree)
            from cli import history_commands

            history_commands.register(model_commands.solution)
        if "watch" in modules:
            from cli import watch_commands

            watch_commands.register(model_commands.event, tree)
    if "sim" in modules:
        from cli import sim_commands

        sim_commands.register(tree)
    if "access" in modules:
        from cli import access_commands

        access_commands.register(tree)
    return tree


def _command(name: str) -> click.Command | None:
    if name in ("up", "info", "controller"):
        from cli import runtime_commands

        return getattr(runtime_commands, name)  # type: ignore[no-any-return]
    if name not in COMMANDS:
        return None
    return _gateway_commands(COMMANDS[name][1]).commands.get(name)


class _Group(click.Group):
    """Loads a command when it runs; turns gRPC errors into one clear line and a non-zero exit."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return _command(cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl(sorted((name, line) for name, (line, _) in COMMANDS.items()))

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except Exception as err:
            if type(err).__module__.startswith("grpc") and hasattr(err, "code"):
                import grpc

                code = err.code()
                details = err.details() if hasattr(err, "details") else str(err)
                if code == grpc.StatusCode.UNAVAILABLE:
                    details = f"gateway unreachable ({details}); is `orch up` running?"
                elif code == grpc.StatusCode.UNAUTHENTICATED and os.environ.get("ORCH_TOKEN"):
                    details = ("the gateway refused the token in ORCH_TOKEN (unknown, revoked or mistyped); "
                               "unset ORCH_TOKEN to use the suite's own token ($ORCH_HOME/token), then `orch token list` "
                               "shows the valid tokens")
                elif code == grpc.StatusCode.UNAUTHENTICATED:
                    details = (f"the gateway refused the token in $ORCH_HOME/token ({details}); is ORCH_HOME "
                               "(or --home) the directory of the suite at this gateway?")
                name = code.name if code is not None else "ERROR"
                click.echo(f"error: {name}: {details}", err=True)
                sys.exit(1)
            raise


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


def main() -> None:
    """The `orch` command: run it, then leave at once. The interpreter's own
    teardown (gRPC's shutdown, freeing every module) takes 40-70 ms after a
    call to the gateway and holds nothing the CLI needs: its output is
    flushed here, and every command has closed what it opened by the time it
    returns. An unexpected exception still ends the usual way, with its
    traceback."""
    try:
        cli.main(prog_name="orch")
        code: object = 0
    except SystemExit as done:
        code = done.code
    if code is None:
        code = 0
    elif not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except OSError:  # a closed pipe (orch ... | head): nothing more to say
        code = code or 1
    os._exit(code)
