"""Attack: keep watching after the token was revoked. A console user whose
token is revoked keeps its live stream, and a gRPC client its WatchStatus
stream, as long as nothing happens on them. Revocation must end every
stream of that token within a second, quiet or not."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections.abc import Iterator

import grpc
import pytest

from orchestration.v1 import gateway_pb2 as gw
from orchestration_sdk.runtime.wire import bearer_metadata
from suite import Suite, console_session, running_suite


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Suite]:
    with running_suite(tmp_path_factory.mktemp("revoked")) as running:
        yield running


def ended_at(read: object) -> tuple[threading.Thread, list[float]]:
    """Run `read` (which returns when its stream ends) in a thread; the time it ended."""
    when: list[float] = []

    def run() -> None:
        read()  # type: ignore[operator]
        when.append(time.monotonic())

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, when


def test_a_revoked_token_ends_its_quiet_console_and_grpc_streams_within_a_second(suite: Suite) -> None:
    token = json.loads(suite.ok("token", "create", "watcher", "--role", "viewer", "-o", "json"))["token"]
    console, opener, cookie = console_session(suite, token)
    stream = opener.open(urllib.request.Request(console + "/api/live", headers={"Cookie": cookie}), timeout=60)
    assert stream.readline().startswith(b"event: status")
    watch = suite.solutions.WatchStatus(gw.WatchStatusRequest(), metadata=bearer_metadata(token), timeout=60)
    codes: list[grpc.StatusCode] = []

    def read_console() -> None:
        while stream.readline():
            pass

    def read_grpc() -> None:
        try:
            for _ in watch:
                pass
        except grpc.RpcError as err:
            codes.append(err.code())  # type: ignore[attr-defined]

    console_thread, console_end = ended_at(read_console)
    grpc_thread, grpc_end = ended_at(read_grpc)
    time.sleep(0.3)  # both streams are open and quiet
    assert not console_end and not grpc_end
    suite.ok("token", "revoke", "watcher")
    revoked = time.monotonic()
    console_thread.join(timeout=20)
    grpc_thread.join(timeout=20)
    assert console_end and console_end[0] - revoked < 1.0, "the console stream outlived its token"
    assert grpc_end and grpc_end[0] - revoked < 1.0, "WatchStatus outlived its token"
    assert codes == [grpc.StatusCode.UNAUTHENTICATED]
