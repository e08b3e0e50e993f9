"""The embedded nats-server's process settings."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import NatsServer

from cli.embedded_nats import (
    MEMORY_LIMIT,
    EmbeddedNatsConfig,
    NatsCredentials,
    free_port,
    start_nats_server,
    stop_nats_server,
)
from suite import environment_of


def test_embedded_server_has_a_soft_memory_limit(nats_server: NatsServer) -> None:
    assert environment_of(nats_server.proc.pid)["GOMEMLIMIT"] == MEMORY_LIMIT


def test_the_environment_overrides_the_memory_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOMEMLIMIT", "1GiB")
    server = start_nats_server(EmbeddedNatsConfig(data_dir=tmp_path, port=free_port()), NatsCredentials("m", "m-secret"))
    try:
        assert environment_of(server.pid)["GOMEMLIMIT"] == "1GiB"
    finally:
        stop_nats_server(server)
