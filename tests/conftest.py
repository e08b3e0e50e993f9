"""Fixtures: a real nats-server on a free port (always stopped), a unique
subject prefix per test so that tests never see each other's data."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client as NatsClient

from cli.embedded_nats import (
    EmbeddedNatsConfig,
    NatsCredentials,
    free_port,
    nats_url,
    start_nats_server,
    stop_nats_server,
)
from orchestration.store.subjects import Subjects

DATA = Path(__file__).parent / "data"


@dataclass
class NatsServer:
    url: str
    proc: subprocess.Popen
    config: EmbeddedNatsConfig
    creds: NatsCredentials


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    config = EmbeddedNatsConfig(data_dir=tmp_path_factory.mktemp("nats"), port=free_port())
    creds = NatsCredentials("test", "test-secret")
    proc = start_nats_server(config, creds, log_path=config.data_dir / "nats.log")
    try:
        yield NatsServer(nats_url(config.host, config.port, creds), proc, config, creds)
    finally:
        stop_nats_server(proc)


@pytest.fixture
def subjects() -> Subjects:
    """Names under a prefix of this test's own."""
    return Subjects(prefix="t" + uuid.uuid4().hex[:12])


@pytest.fixture
async def nc(nats_server: NatsServer) -> AsyncIterator[NatsClient]:
    client = await nats.connect(nats_server.url)
    try:
        yield client
    finally:
        await client.close()
