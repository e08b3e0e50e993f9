"""python -m gateway: run the gateway service."""

from __future__ import annotations

import click

from gateway.server import GatewaySettings, serve
from orchestration.store.subjects import DEFAULT_PREFIX
from orchestration_sdk.runtime.process import metrics_option, read_secret
from orchestration_sdk.runtime.process import run as run_service
from orchestration_sdk.runtime.process import service_process
from orchestration_sdk.runtime.tls import TlsConfig, tls_options


@click.command()
@click.option("--addr", default="127.0.0.1:50051", show_default=True, help="Listen address of the gRPC API.")
@click.option("--nats-url", envvar="ORCH_NATS_URL", required=True, help="NATS URL (with credentials).")
@click.option("--prefix", default=DEFAULT_PREFIX, show_default=True, help="Subject and bucket prefix.")
@click.option("--token-file", type=click.Path(exists=True, dir_okay=False), required=True, help="File holding the API token.")
@click.option("--console-addr", envvar="ORCH_CONSOLE_ADDR", default="",
              help="Listen address (host:port) of the web console; none when empty.")
@click.option("--jaeger-url", envvar="ORCH_JAEGER_URL", default="",
              help="URL of a Jaeger UI: the console links each task's trace there.")
@click.option("--console-secure-cookie", envvar="ORCH_CONSOLE_SECURE_COOKIE", is_flag=True,
              help="Mark the console's session cookie Secure although the gateway serves HTTP (TLS ends at a proxy).")
@metrics_option
@tls_options
def main(addr: str, nats_url: str, prefix: str, token_file: str, console_addr: str, jaeger_url: str,
         console_secure_cookie: bool, metrics_addr: str, tls_cert: str, tls_key: str, tls_ca: str, tls_client_auth: bool) -> None:
    """Run the gateway service."""
    token = read_secret(token_file, "--token-file")
    with service_process("gateway", metrics_addr):
        tls = TlsConfig(tls_cert, tls_key, tls_ca, tls_client_auth)
        run_service(serve(GatewaySettings(address=addr, nats_url=nats_url, prefix=prefix, token=token, tls=tls,
                                          console_address=console_addr, jaeger_url=jaeger_url,
                                          console_secure_cookie=console_secure_cookie)))


if __name__ == "__main__":
    main()
