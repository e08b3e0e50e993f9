"""The embedded nats-server's process settings."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import NatsServer

from cli.embedded_nats import (
    GC_PERCENT,
    EmbeddedNatsConfig,
    NatsCredentials,
    free_port,
    start_nats_server,
    stop_nats_server,
)
from suite import environment_of


def test_embedded_server_collects_garbage_at_a_lower_target(nats_server: NatsServer) -> None:
    environment = environment_of(nats_server.proc.pid)
    assert environment["GOGC"] == GC_PERCENT
    assert "GOMEMLIMIT" not in environment  # a fixed limit makes a big store collect without pause


@pytest.mark.parametrize("variable, value", [("GOMEMLIMIT", "1GiB"), ("GOGC", "200")])
def test_the_environment_overrides_the_collection_target(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         variable: str, value: str) -> None:
    monkeypatch.delenv("GOGC", raising=False)
    monkeypatch.delenv("GOMEMLIMIT", raising=False)
    monkeypatch.setenv(variable, value)
    server = start_nats_server(EmbeddedNatsConfig(data_dir=tmp_path, port=free_port()), NatsCredentials("m", "m-secret"))
    try:
        environment = environment_of(server.pid)
        assert environment[variable] == value
        assert environment.get("GOGC") == (value if variable == "GOGC" else None)
    finally:
        stop_nats_server(server)


def test_free_port_never_hands_out_a_port_twice() -> None:
    """orch up asks for several ports in a row (NATS, the dispatcher, metrics):
    one handed out twice made a suite's dispatcher fail to listen."""
    from cli.embedded_nats import free_port

    ports = [free_port() for _ in range(300)]
    assert len(set(ports)) == len(ports)
