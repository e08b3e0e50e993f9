"""python -m monitor: run the monitor."""

from __future__ import annotations

import click

from monitor.settings import MonitorSettings
from orchestration.model.retention import tree_days_from_environment
from orchestration.runtime.nats_import import without_websocket_client
from orchestration.store.subjects import DEFAULT_PREFIX
from orchestration_sdk.runtime.process import metrics_option, read_secret
from orchestration_sdk.runtime.process import run as run_service
from orchestration_sdk.runtime.process import service_process
from orchestration_sdk.runtime.tls import TlsConfig, tls_options


@click.command()
@click.option("--nats-url", envvar="ORCH_NATS_URL", required=True, help="NATS URL (with credentials).")
@click.option("--prefix", default=DEFAULT_PREFIX, show_default=True, help="Subject and bucket prefix.")
@click.option("--credential-file", type=click.Path(exists=True, dir_okay=False), required=True,
              help="File holding the controller credential (for the controllers' Status).")
@click.option("--interval", type=click.FloatRange(min=0.1), default=MonitorSettings.interval, show_default=True,
              help="Seconds between polls.")
@click.option("--status-timeout", type=click.FloatRange(min=0.1), default=MonitorSettings.status_timeout,
              show_default=True, help="Seconds per controller Status call.")
@click.option("--batch-size", type=click.IntRange(min=1, max=20_000), default=MonitorSettings.batch_size, show_default=True,
              help="Instances per Status call.")
@click.option("--max-compensations", type=click.IntRange(min=1), default=MonitorSettings.max_compensations,
              show_default=True, help="Compensations of a solution that may fail before it is marked degraded.")
@click.option("--prune-every", envvar="ORCH_PRUNE_SECONDS", type=click.FloatRange(min=0.1),
              default=MonitorSettings.prune_every, show_default=True,
              help="Seconds between two looks for finished task trees to prune (older than ORCH_TREE_DAYS).")
@metrics_option
@tls_options
def main(nats_url: str, prefix: str, credential_file: str, interval: float, status_timeout: float, batch_size: int,
         max_compensations: int, prune_every: float, metrics_addr: str, tls_cert: str, tls_key: str, tls_ca: str,
         tls_client_auth: bool) -> None:
    """Run the monitor: status, drift and compensation at an interval; pruning of finished task trees."""
    without_websocket_client(nats_url)
    from monitor.service import serve

    credential = read_secret(credential_file, "--credential-file")
    try:
        tree_days = tree_days_from_environment()
    except ValueError as err:
        raise click.UsageError(str(err)) from None
    with service_process("monitor", metrics_addr):
        run_service(serve(MonitorSettings(nats_url=nats_url, prefix=prefix, credential=credential, interval=interval,
                                          status_timeout=status_timeout, batch_size=batch_size,
                                          max_compensations=max_compensations, tree_days=tree_days,
                                          prune_every=prune_every,
                                          tls=TlsConfig(tls_cert, tls_key, tls_ca, tls_client_auth))))


if __name__ == "__main__":
    main()
