"""Fixtures: a real nats-server on a free port (always stopped), a unique
subject prefix per test so that tests never see each other's data."""

from __future__ import annotations

import functools
import inspect
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
from suite import CHROMIUM

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


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's Chromium driven by Playwright (the browser tests skip without it: see suite.needs_chromium)."""
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture
async def nc(nats_server: NatsServer) -> AsyncIterator[NatsClient]:
    client = await nats.connect(nats_server.url)
    try:
        yield client
    finally:
        await client.close()


# ---- kinds of tests ---------------------------------------------------------------------
# Every test gets one marker saying what it needs, from its fixtures and its
# file (`make test` runs them all; `make test-unit` only `unit`):
#   unit         the rules alone: no NATS, no suite, no browser (fast)
#   integration  a real nats-server, or real processes and servers of one component
#   e2e          a whole running suite (`orch up`)
#   browser      a real Chromium against a suite
#   security     an attack from a position a real installation has (tests/security)
#   faults       real processes killed or stopped mid-work
KINDS = ("unit", "integration", "e2e", "browser", "security", "faults")
BROWSER_FILES = {"test_console.py", "test_newcomer.py"}
FAULT_FILES = {"test_faults.py", "test_chaos.py", "test_fencing.py", "test_engine_faults.py"}
# Files whose tests start real servers or processes of their own (no fixture says so).
PROCESS_FILES = {"test_embedded_nats.py", "test_process_controller.py", "test_controllers_sdk.py", "test_controllers_sim.py",
                 "test_dispatcher_link.py", "test_tls.py", "test_secrets.py", "test_cli_imports.py", "test_helm.py",
                 "test_health_metrics.py"}


@functools.cache
def _source(function: Any) -> str:
    """A function's source, read once: the same fixtures serve hundreds of tests
    (reading them again for each took two seconds of every collection)."""
    try:
        return inspect.getsource(function)
    except (OSError, TypeError):
        return ""


def _sources(item: pytest.Item) -> Iterator[str]:
    """The test's own source and that of every fixture it uses."""
    function = getattr(item, "function", None)
    if function is not None:
        yield _source(function)
    info = getattr(item, "_fixtureinfo", None)
    for definitions in (info.name2fixturedefs.values() if info is not None else ()):
        for definition in definitions:
            yield _source(definition.func)


def kind_of(item: pytest.Item) -> str:
    path = Path(str(item.fspath))
    names = set(getattr(item, "fixturenames", ()))
    if path.parent.name == "security":
        return "security"
    if path.name in BROWSER_FILES:
        return "browser"
    if path.name in FAULT_FILES or item.get_closest_marker("faults"):
        return "faults"
    # A file that says what its tests need (a controller's tests against a real
    # moto server, ansible-playbook, libvirt's driver) is taken at its word.
    for kind in ("integration", "e2e"):
        if item.get_closest_marker(kind):
            return kind
    sources = list(_sources(item))
    if any("running_suite(" in source for source in sources):
        return "e2e"
    if "nats_server" in names or path.name in PROCESS_FILES or any(
            marker in source for source in sources for marker in ("start_nats_server(", "subprocess.", "nats.connect(")):
        return "integration"
    return "unit"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        item.add_marker(getattr(pytest.mark, kind_of(item)))
