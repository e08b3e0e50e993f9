"""TLS for every gRPC server and client of the suite, enabled by
configuration: a certificate and key (servers), a CA to trust (clients), and
optionally mutual TLS (servers require client certificates signed by the CA)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:  # gRPC is imported where credentials or channels are made: `orch info` needs none
    import grpc


@dataclass(frozen=True)
class TlsConfig:
    """Paths of PEM files; an empty config means plaintext."""

    cert: str = ""
    key: str = ""
    ca: str = ""
    # Servers: require a client certificate signed by `ca`.
    client_auth: bool = False

    def __post_init__(self) -> None:
        # Fail closed, at once: a named file that is missing, unreadable or empty stops the process.
        for path in (self.cert, self.key, self.ca):
            if path:
                _read(path)

    @property
    def enabled(self) -> bool:
        return bool(self.cert or self.ca)

    def server_credentials(self) -> grpc.ServerCredentials:
        """Credentials of a server (needs cert and key)."""
        if not (self.cert and self.key):
            raise click.UsageError("TLS needs both --tls-cert and --tls-key")
        pair = (_read(self.key), _read(self.cert))
        ca = _read(self.ca) if self.ca else None
        if self.client_auth and ca is None:
            raise click.UsageError("--tls-client-auth needs --tls-ca to check client certificates against")
        import grpc

        return grpc.ssl_server_credentials([pair], root_certificates=ca, require_client_auth=self.client_auth)

    def channel_credentials(self) -> grpc.ChannelCredentials:
        """Credentials of a client: trust `ca`, present cert/key when given (mutual TLS)."""
        import grpc

        return grpc.ssl_channel_credentials(
            root_certificates=_read(self.ca) if self.ca else None,
            private_key=_read(self.key) if self.key else None,
            certificate_chain=_read(self.cert) if self.cert else None,
        )


def _read(path: str) -> bytes:
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise click.UsageError(f"cannot read TLS file {path}: {err.strerror}") from err
    if not data.strip():
        raise click.UsageError(f"TLS file {path} is empty: refusing to run without it")
    return data


def tls_options(func):  # type: ignore[no-untyped-def]
    """--tls-cert/--tls-key/--tls-ca/--tls-client-auth (ORCH_TLS_* variables)."""
    func = click.option("--tls-client-auth", envvar="ORCH_TLS_CLIENT_AUTH", is_flag=True,
                        help="Require client certificates signed by --tls-ca (mutual TLS).")(func)
    func = click.option("--tls-ca", envvar="ORCH_TLS_CA", default="", help="PEM CA bundle to trust.")(func)
    func = click.option("--tls-key", envvar="ORCH_TLS_KEY", default="", help="PEM private key.")(func)
    func = click.option("--tls-cert", envvar="ORCH_TLS_CERT", default="", help="PEM certificate (chain).")(func)
    return func


def channel(address: str, tls: TlsConfig | None, options: list[tuple[str, int]] | None = None, aio: bool = True):  # type: ignore[no-untyped-def]
    """A gRPC channel to address: TLS when configured, plaintext otherwise."""
    import grpc

    module = grpc.aio if aio else grpc
    if tls is not None and tls.enabled:
        return module.secure_channel(address, tls.channel_credentials(), options=options)
    return module.insecure_channel(address, options=options)
