"""python -m dispatcher: run a dispatcher replica."""

from __future__ import annotations

import click

from dispatcher.settings import DispatcherSettings, EngineSettings
from orchestration.runtime.nats_import import without_websocket_client
from orchestration.store.subjects import DEFAULT_PREFIX
from orchestration_sdk.runtime.process import metrics_option, read_secret
from orchestration_sdk.runtime.process import run as run_service
from orchestration_sdk.runtime.process import service_process
from orchestration_sdk.runtime.tls import TlsConfig, tls_options


@click.command()
@click.option("--addr", default="127.0.0.1:50052", show_default=True, help="Listen address for controller registration.")
@click.option("--nats-url", envvar="ORCH_NATS_URL", required=True, help="NATS URL (with credentials).")
@click.option("--prefix", default=DEFAULT_PREFIX, show_default=True, help="Subject and bucket prefix.")
@click.option("--credential-file", type=click.Path(exists=True, dir_okay=False), required=True,
              help="File holding the engine credential (presented to controllers).")
@click.option("--registration-key-file", type=click.Path(exists=True, dir_okay=False), required=True,
              help="File holding the key that issued the controllers' credentials (checks their registrations).")
@click.option("--replica", default=None, help="Replica id (default host-pid).")
@click.option("--concurrency", default=EngineSettings.concurrency, show_default=True, help="Operations in flight per solution.")
@click.option("--domain-concurrency", default=EngineSettings.domain_concurrency, show_default=True, type=click.IntRange(min=0),
              help="Operations in flight per domain, over all its solutions (0: no limit).")
@click.option("--operation-timeout", default=EngineSettings.operation_timeout, show_default=True, help="Seconds per controller operation.")
@click.option("--max-attempts", default=EngineSettings.max_attempts, show_default=True, help="Attempts per operation.")
@click.option("--controller-wait", default=EngineSettings.controller_wait, show_default=True,
              help="Seconds an operation waits for its controller to register.")
@click.option("--task-timeout", default=EngineSettings.task_timeout, show_default=True, help="Seconds per task tree.")
@metrics_option
@tls_options
def main(addr: str, nats_url: str, prefix: str, credential_file: str, registration_key_file: str, replica: str | None, concurrency: int,
         domain_concurrency: int,
         operation_timeout: float, max_attempts: int, controller_wait: float, task_timeout: float, metrics_addr: str,
         tls_cert: str, tls_key: str, tls_ca: str, tls_client_auth: bool) -> None:
    """Run a dispatcher replica."""
    without_websocket_client(nats_url)
    from dispatcher.ownership.replica import serve

    engine = EngineSettings(concurrency=concurrency, domain_concurrency=domain_concurrency,
                            operation_timeout=operation_timeout, max_attempts=max_attempts,
                            controller_wait=controller_wait, task_timeout=task_timeout)
    settings = DispatcherSettings(address=addr, nats_url=nats_url, prefix=prefix,
                                  credential=read_secret(credential_file, "--credential-file"),
                                  registration_key=read_secret(registration_key_file, "--registration-key-file"), engine=engine,
                                  tls=TlsConfig(tls_cert, tls_key, tls_ca, tls_client_auth))
    if replica:
        settings = DispatcherSettings(**{**settings.__dict__, "replica": replica})
    with service_process("dispatcher", metrics_addr):
        run_service(serve(settings))


if __name__ == "__main__":
    main()
