"""Global settings of the CLI (flags, environment, $ORCH_HOME). Light on
purpose: a command that needs no gateway (`orch info`, `--help`) imports
neither gRPC nor protobuf."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import click

from cli.home import Connection, load_connection, orch_home
from orchestration_sdk.runtime.tls import TlsConfig

if TYPE_CHECKING:
    from cli.client import Gateway


@dataclass
class Settings:
    """Global CLI settings (from flags, environment and $ORCH_HOME)."""

    home: str | None
    server: str | None
    tls: TlsConfig = field(default_factory=TlsConfig)

    def connection(self) -> Connection:
        found = load_connection(orch_home(self.home))
        if found is None:
            raise click.ClickException(
                f"no running suite found in {orch_home(self.home)}: start one with `orch up` (or `make run`), "
                "or set ORCH_HOME to its directory"
            )
        return found

    def gateway(self) -> Gateway:
        """Stubs of the gateway (from --server and ORCH_TOKEN, else the running suite's)."""
        from cli.client import connect

        address = self.server
        token = os.environ.get("ORCH_TOKEN")
        tls = self.tls
        if address is None or token is None:
            connection = self.connection()
            address = address or connection.gateway
            token = token or connection.token
            if not tls.ca and connection.tls_ca:
                tls = TlsConfig(tls.cert, tls.key, connection.tls_ca)
        return connect(address, token, tls)


pass_settings = click.make_pass_decorator(Settings)
