"""Fail closed: a service given an empty secret refuses to start (it never
runs without a check), and no gRPC server can be built without a token."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from orchestration_sdk.runtime.grpcserver import GuardInterceptor

NATS = ["--nats-url", "nats://127.0.0.1:1"]
GOOD = "good-secret-file"
SERVICES = {
    "gateway": ["--token-file", *NATS],
    "dispatcher": ["--credential-file", *NATS, "--registration-key-file", GOOD],
    "dispatcher ": ["--registration-key-file", *NATS, "--credential-file", GOOD],
    "monitor": ["--credential-file", *NATS],
    "controllers.sim": ["--credential-file", "--engine-credential-sha256", "0" * 64],
}


@pytest.mark.parametrize("module", sorted(SERVICES))
def test_a_service_with_an_empty_secret_file_does_not_start(module: str, tmp_path: Path) -> None:
    empty = tmp_path / "secret"
    empty.write_text("  \n")
    (tmp_path / GOOD).write_text("a secret")
    option, *rest = [str(tmp_path / GOOD) if arg == GOOD else arg for arg in SERVICES[module]]
    module = module.strip()
    done = subprocess.run(
        [sys.executable, "-m", module, option, str(empty), *rest],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 2, done.stderr
    assert f"{empty} is empty: refusing to run without a secret" in done.stderr


def test_no_grpc_guard_without_a_token() -> None:
    with pytest.raises(ValueError, match="non-empty token"):
        GuardInterceptor("")


def test_a_gateway_with_an_empty_tls_file_does_not_start(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("a token")
    empty = tmp_path / "server.key"
    empty.write_text("")
    (tmp_path / "server.crt").write_text("not empty")
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "--token-file", str(token), *NATS, "--tls-cert", str(tmp_path / "server.crt"),
         "--tls-key", str(empty)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 2, done.stderr
    assert f"TLS file {empty} is empty: refusing to run without it" in done.stderr


@pytest.mark.parametrize("module", ["gateway", "dispatcher"])
def test_a_missing_secret_file_is_named(module: str, tmp_path: Path) -> None:
    option = "--token-file" if module == "gateway" else "--credential-file"
    missing = tmp_path / "nowhere"
    done = subprocess.run([sys.executable, "-m", module, option, str(missing), *NATS],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2 and str(missing) in done.stderr, done.stderr
