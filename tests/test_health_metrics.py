"""Health follows NATS (NOT_SERVING while it is away) and every service
serves Prometheus metrics that count real work."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from cli.embedded_nats import (
    GC_PERCENT,
    EmbeddedNatsConfig,
    NatsCredentials,
    free_port,
    nats_url,
    start_nats_server,
    stop_nats_server,
)
from dispatcher.ownership.replica import Dispatcher
from dispatcher.settings import DispatcherSettings
from suite import DATA, Suite, environment_of, running_suite, wait_until


async def health_of(address: str) -> int:
    async with grpc.aio.insecure_channel(address) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=2)
        return reply.status


async def wait_health(address: str, expected: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = await health_of(address)
        if last == expected:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"health stayed {last}, expected {expected}")


async def test_dispatcher_health_follows_nats(tmp_path: Path) -> None:
    config = EmbeddedNatsConfig(data_dir=tmp_path / "nats", port=free_port())
    creds = NatsCredentials("h", "h-secret")
    server = start_nats_server(config, creds)
    (tmp_path / "credential").write_text("c")
    dispatcher = Dispatcher(DispatcherSettings(address="127.0.0.1:0", nats_url=nats_url(config.host, config.port, creds),
                                               prefix="health", credential="c", registration_key="k", replica="h1"))
    try:
        await dispatcher.start()
        address = f"127.0.0.1:{dispatcher.port}"
        await wait_health(address, health_pb2.HealthCheckResponse.SERVING)
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=10)
        await wait_health(address, health_pb2.HealthCheckResponse.NOT_SERVING)
        server = start_nats_server(config, creds)
        await wait_health(address, health_pb2.HealthCheckResponse.SERVING)
    finally:
        await dispatcher.stop()
        stop_nats_server(server)


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Suite]:
    with running_suite(tmp_path_factory.mktemp("metrics"), "--monitor-interval", "1") as running:
        yield running


def scrape(address: str) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://{address}/metrics", timeout=5).read().decode()
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


def test_orch_up_gives_the_embedded_nats_server_its_collection_target(suite: Suite) -> None:
    assert environment_of(suite.services()["nats-server"])["GOGC"] == GC_PERCENT


def test_only_the_gateway_loads_the_http_stack_of_the_console(suite: Suite) -> None:
    """nats-py imports aiohttp for WebSocket connections nobody here makes:
    the dispatcher and the monitor keep it out (8 MB and 0.15 s each)."""
    def loaded(pid: int) -> bool:
        return "/aiohttp/" in Path(f"/proc/{pid}/maps").read_text()

    pids = suite.services()
    assert loaded(pids["gateway"])
    assert not loaded(pids["dispatcher"]) and not loaded(pids["monitor"])


def test_a_websocket_nats_url_keeps_the_websocket_client() -> None:
    probe = ("import sys; from orchestration.runtime.nats_import import without_websocket_client as w; w({url!r}); "
             "import nats; print(sys.modules.get('aiohttp') is not None)")
    for url, kept in (("nats://u:p@127.0.0.1:4222", "False"), ("nats://a:4222, WSS://b:443", "True")):
        done = subprocess.run([sys.executable, "-c", probe.format(url=url)], capture_output=True, text=True, timeout=60)
        assert done.stdout.strip() == kept, done.stderr


@pytest.mark.parametrize("service", ["gateway", "dispatcher"])
def test_a_service_that_cannot_start_stops_on_sigterm(service: str, nats_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """NATS refuses its credentials, so its connection keeps trying and it
    never finishes starting: SIGTERM still stops it, at once."""
    secret = tmp_path / "secret"
    secret.write_text("s3cret")
    refused = nats_server.url.replace(nats_server.creds.password, "wrong")
    files = {"gateway": ["--token-file", str(secret)],
             "dispatcher": ["--credential-file", str(secret), "--registration-key-file", str(secret)]}[service]
    log = tmp_path / "log"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", service, "--nats-url", refused, "--addr", f"127.0.0.1:{free_port()}",
                                 *files], stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: "Authorization Violation" in log.read_text(), timeout=30, what="NATS to refuse it")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0, log.read_text()
        assert "stopping before it started" in log.read_text()
    finally:
        proc.kill()
        proc.wait()


def test_metrics_endpoints_count_the_work_of_a_deploy(suite: Suite) -> None:
    suite.ok("apply", "-f", str(DATA / "demo2.yaml"))
    suite.ok("solution", "deploy", "demo", "app", "V0.0.0", "--wait")
    endpoints = json.loads(suite.ok("info", "-o", "json", "--show-secrets"))["metrics"]
    assert {"gateway", "dispatcher", "controller sim-1", "monitor"} <= set(endpoints)
    dispatcher = scrape(endpoints["dispatcher"])
    assert dispatcher['orch_controller_operations_total{outcome="ok",transition="create"}'] == 23
    assert dispatcher['orch_tasks_total{status="completed",type="instance"}'] == 23
    assert "orch_requests_waiting" in dispatcher
    sim = scrape(endpoints["controller sim-1"])
    assert sim['orch_controller_operations_total{outcome="ok",transition="start"}'] == 23
    gateway = scrape(endpoints["gateway"])
    deploys = [v for k, v in gateway.items() if k.startswith("orch_grpc_calls_total") and "DeploySolution" in k and 'code="OK"' in k]
    assert deploys == [1.0]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        monitor = scrape(endpoints["monitor"])
        if monitor.get("orch_monitor_poll_seconds_count", 0) >= 1 and monitor.get("orch_monitor_instances_polled") == 23:
            break
        time.sleep(0.5)
    assert monitor.get("orch_monitor_instances_polled") == 23


async def test_gateway_answers_unavailable_while_nats_is_away(tmp_path: Path) -> None:
    from gateway.server import Gateway, GatewaySettings
    from orchestration_sdk.runtime.wire import bearer_metadata
    from orchestration.v1 import gateway_pb2 as gw
    from orchestration.v1 import gateway_pb2_grpc as gw_grpc

    config = EmbeddedNatsConfig(data_dir=tmp_path / "nats", port=free_port())
    creds = NatsCredentials("g", "g-secret")
    server = start_nats_server(config, creds)
    gateway = Gateway(GatewaySettings(address="127.0.0.1:0", nats_url=nats_url(config.host, config.port, creds),
                                      prefix="away", token="t"))
    try:
        await gateway.start()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
            admin = gw_grpc.AdministrationServiceStub(channel)
            assert list((await admin.ListDomains(gw.ListDomainsRequest(), metadata=bearer_metadata("t"))).domains) == []
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=10)
            with pytest.raises(grpc.aio.AioRpcError) as away:
                await admin.ListDomains(gw.ListDomainsRequest(), metadata=bearer_metadata("t"), timeout=30)
            assert away.value.code() == grpc.StatusCode.UNAVAILABLE, away.value.details()
            assert "NATS" in away.value.details()
            server = start_nats_server(config, creds)
            await wait_health(f"127.0.0.1:{gateway.port}", health_pb2.HealthCheckResponse.SERVING)
            assert list((await admin.ListDomains(gw.ListDomainsRequest(), metadata=bearer_metadata("t"))).domains) == []
    finally:
        await gateway.stop()
        stop_nats_server(server)
