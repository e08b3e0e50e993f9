"""A whole suite as real processes: `orch up` on free ports with its own
ORCH_HOME, the `orch` CLI run as a subprocess, a gRPC client with the token,
and readers for the sim controller's op log."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest
import nats
import nats.js.errors

from cli.embedded_nats import free_port, wait_for_port
from cli.home import load_connection
from controllers.sim.table import InstanceTable
from orchestration.store.leases import solution_key
from orchestration.store.subjects import Subjects
from orchestration.v1 import gateway_pb2 as gw
from orchestration.v1 import gateway_pb2_grpc as gw_grpc
from orchestration.v1 import model_pb2 as pb
from orchestration_sdk.runtime.wire import bearer_metadata

DATA = Path(__file__).parent / "data"
# The browser tests drive Debian's Chromium (installed by `make setup`), through the `browser` fixture.
CHROMIUM = "/usr/bin/chromium"
needs_chromium = pytest.mark.skipif(shutil.which(CHROMIUM) is None, reason="Chromium is installed by `make setup`")
BIN = Path(sys.executable).parent
T = TypeVar("T")


def children_of(pid: int) -> list[int]:
    """Direct children of a process (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def environment_of(pid: int) -> dict[str, str]:
    """The environment a process was started with (from /proc)."""
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode().split("\0") if "=" in item)


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def wait_until(check: Callable[[], T], timeout: float = 30, what: str = "condition", interval: float = 0.05) -> T:
    """Poll `check` until it returns something truthy and return that; fail
    the test naming `what` if it has not within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout}s"
        time.sleep(interval)
    return value


async def eventually(check: Callable[[], T], timeout: float = 30, what: str = "condition", interval: float = 0.05) -> T:
    """wait_until for a coroutine: the event loop runs while it waits."""
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout}s"
        await asyncio.sleep(interval)
    return value


def alive(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


class Suite:
    """A running `orch up` and ways to talk to it."""

    def __init__(self, home: Path, proc: subprocess.Popen, gateway: str) -> None:
        self.home, self.proc, self.gateway = home, proc, gateway
        self.channel = grpc.insecure_channel(gateway)
        self.metadata = bearer_metadata((home / "token").read_text().strip())
        self.admin = gw_grpc.AdministrationServiceStub(self.channel)
        self.solutions = gw_grpc.SolutionServiceStub(self.channel)
        self.automation = gw_grpc.AutomationServiceStub(self.channel)
        self.architectures = gw_grpc.ArchitectureServiceStub(self.channel)

    def orch(self, *args: str, timeout: float = 120, token: str | None = None) -> subprocess.CompletedProcess:
        """Run the orch CLI against this suite (as the bootstrap admin, or with `token`)."""
        env = {**os.environ, "ORCH_HOME": str(self.home)}
        env.pop("ORCH_TOKEN", None)
        if token is not None:
            env["ORCH_TOKEN"] = token
        return subprocess.run([str(BIN / "orch"), *args], env=env, capture_output=True, text=True, timeout=timeout)

    def ok(self, *args: str, timeout: float = 120) -> str:
        """Run the CLI; fail the test with its stderr unless it exits 0."""
        result = self.orch(*args, timeout=timeout)
        assert result.returncode == 0, f"orch {' '.join(args)} exited {result.returncode}: {result.stderr}"
        return result.stdout

    def apply(self, text: str, domain: str = "") -> None:
        self.admin.Apply(gw.ApplyRequest(document=text, domain=domain), metadata=self.metadata, timeout=30)

    def solution(self, domain: str, name: str) -> pb.Solution:
        return self.solutions.RetrieveSolution(
            gw.RetrieveSolutionRequest(domain=domain, solution=name), metadata=self.metadata, timeout=30
        ).solution

    def planned(self, domain: str, name: str) -> pb.Solution:
        """The solution, or an empty one while its first request is not
        planned yet: a deploy is answered once accepted, before a dispatcher
        has stored the solution's records."""
        try:
            return self.solution(domain, name)
        except grpc.RpcError as err:
            if err.code() != grpc.StatusCode.NOT_FOUND:  # type: ignore[attr-defined]
                raise
            return pb.Solution()

    def task(self, domain: str, uuid: str, tree: bool = False) -> gw.RetrieveTaskResponse:
        return self.automation.RetrieveTask(
            gw.RetrieveTaskRequest(domain=domain, task=uuid, tree=tree), metadata=self.metadata, timeout=30
        )

    def wait_task(self, domain: str, uuid: str, timeout: float = 60) -> pb.Task:
        """Wait until a task ends; return it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            task = self.task(domain, uuid).task
            if task.status in (pb.TASK_STATUS_COMPLETED, pb.TASK_STATUS_FAILED, pb.TASK_STATUS_TIMEOUT, pb.TASK_STATUS_TERMINATED):
                return task
            time.sleep(0.1)
        raise AssertionError(f"task {uuid} did not end within {timeout}s")

    def ops(self, solution: str | None = None) -> list[dict[str, Any]]:
        """The sim controller's op log (of one solution)."""
        path = self.home / "sim-ops.jsonl"
        if not path.exists():
            return []
        lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        return [op for op in lines if solution is None or op["solution"] == solution]

    def services(self) -> dict[str, int]:
        """pid of each child service by the name on its command line."""
        found = {}
        for pid in children_of(self.proc.pid):
            line = cmdline(pid)
            if "nats-server" in line:
                found["nats-server"] = pid
            elif "-m gateway" in line:
                found["gateway"] = pid
            elif "-m dispatcher" in line:
                found["dispatcher"] = pid
            elif "-m monitor" in line:
                found["monitor"] = pid
            elif "-m controllers.process" in line:
                found["process"] = pid
            elif "-m controllers.sim" in line:
                replica = line.split("--replica ", 1)[1].split()[0]
                found[replica] = pid
        return found

    def stop(self) -> int:
        """Ctrl-C: stop the suite; returns orch up's exit code."""
        self.channel.close()
        self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(timeout=30)


class ExtraController:
    """A controller of our own started against a running suite, as an operator
    starts one: a credential issued for its names by the suite's registration
    key, the hash of the credential the engine presents to it, `--dispatcher`.
    `kill` (a real signal) and `start` again to crash and restart it."""

    def __init__(self, suite: Suite, module: str, names: list[str], args: list[str],
                 env: dict[str, str] | None = None) -> None:
        from orchestration.runtime.credentials import engine_credential_sha256, issue_controller_credential

        self.suite, self.module, self.names = suite, module, names
        key = (suite.home / "registration-key").read_text().strip()
        engine = (suite.home / "engine-credential").read_text().strip()
        credential = suite.home / "controllers" / f"{names[0]}-extra.credential"
        credential.parent.mkdir(parents=True, exist_ok=True)
        credential.write_text(issue_controller_credential(key, names) + "\n")
        credential.chmod(0o600)
        self.argv = [sys.executable, "-m", module, "--addr", "127.0.0.1:0",
                     "--dispatcher", load_connection(suite.home).dispatcher, "--credential-file", str(credential),
                     "--engine-credential-sha256", engine_credential_sha256(engine, names[0]),
                     "--replica", f"{names[0]}-1", *args]
        self.env = {**os.environ, **(env or {})}
        self.env.pop("ORCH_NATS_URL", None)  # controllers never reach NATS
        self.log_path = suite.home / f"controller-{names[0]}.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> "ExtraController":
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.argv, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        return self

    def kill(self, sig: int = signal.SIGKILL) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)
        if sig in (signal.SIGKILL, signal.SIGTERM, signal.SIGINT):
            self.proc.wait(timeout=30)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@contextmanager
def extra_controller(suite: Suite, module: str, names: list[str], *args: str,
                     env: dict[str, str] | None = None) -> Iterator[ExtraController]:
    """Start `python -m module` as a controller serving `names` against the
    suite (see ExtraController); always stop it."""
    controller = ExtraController(suite, module, names, list(args), env).start()
    try:
        yield controller
    finally:
        controller.stop()


@contextmanager
def running_suite(home: Path, *flags: str, env: dict[str, str] | None = None) -> Iterator[Suite]:
    """Start `orch up` with flags (and extra environment); always stop it."""
    gateway = f"127.0.0.1:{free_port()}"
    # A home that ran a suite before still names that suite's addresses until this one writes its own.
    (home / "connection.json").unlink(missing_ok=True)
    log = open(home / "up.log", "wb")
    if "--console-addr" not in flags:
        flags = (*flags, "--console-addr", f"127.0.0.1:{free_port()}")
    if "--dispatchers" not in flags:
        # One dispatcher unless a test asks for more: tests signal "the" dispatcher by its name.
        flags = (*flags, "--dispatchers", "1")
    if not any(flag.startswith("--monitor-interval") for flag in flags):
        # The monitor repairs what tests break on purpose; tests that want it say so.
        flags = (*flags, "--monitor-interval", "3600")
    proc = subprocess.Popen(
        [str(BIN / "orch"), "up", "--gateway-addr", gateway, "--nats-port", str(free_port()),
         "--dispatcher-addr", f"127.0.0.1:{free_port()}", *flags],
        env={**os.environ, **(env or {}), "ORCH_HOME": str(home)},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    suite = None
    try:
        deadline = time.monotonic() + 60
        while not (home / "connection.json").exists():
            assert proc.poll() is None, (home / "up.log").read_text()
            assert time.monotonic() < deadline, "orch up did not come up in 60s"
            time.sleep(0.05)
        host, port = gateway.rsplit(":", 1)
        wait_for_port(host, int(port))
        suite = Suite(home, proc, gateway)
        yield suite
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()


def monitor_figure(suite: Suite, name: str) -> float:
    """One value of the monitor's Prometheus metrics (0 before it is first set)."""
    connection = load_connection(suite.home)
    assert connection is not None
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://{connection.metrics['monitor']}/metrics", timeout=10) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return 0.0


def sim_instances(suite: Suite) -> dict[str, str]:
    """uuid -> state of what the sim controller holds (read from a copy of its journal)."""
    copy = suite.home / "sim-copy.jsonl"
    shutil.copy(suite.home / "sim-1-state.jsonl", copy)
    table = InstanceTable(copy)
    table.open()
    try:
        return {r.uuid: r.state for r in table.records()}
    finally:
        table.close()


def busy(suite: Suite, domain: str, solution: str) -> bool:
    """Whether a task holds the solution (its lease exists): the run may still be finishing."""
    connection = load_connection(suite.home)
    assert connection is not None

    async def read() -> bool:
        nc = await nats.connect(connection.nats_url)
        try:
            bucket = await nc.jetstream().key_value(Subjects(connection.subject_prefix).leases_bucket)
            try:
                await bucket.get(solution_key(domain, solution))
            except nats.js.errors.KeyNotFoundError:
                return False
            return True
        finally:
            await nc.close()

    return asyncio.run(read())


def console_session(suite: Suite, token: str) -> tuple[str, urllib.request.OpenerDirector, str]:
    """Sign in to the suite's console with `token` over HTTP (no browser):
    its URL, an opener that bypasses proxies, and the session cookie."""
    console = json.loads(suite.ok("info", "-o", "json", "--show-secrets"))["console"].rstrip("/")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    signin = urllib.request.Request(console + "/api/signin", data=json.dumps({"token": token}).encode(),
                                    headers={"Content-Type": "application/json"}, method="POST")
    with opener.open(signin, timeout=30) as response:
        cookie = response.headers["Set-Cookie"].split(";", 1)[0]
    return console, opener, cookie


def console_url(suite: Suite) -> str:
    url = json.loads(suite.ok("info", "-o", "json", "--show-secrets"))["console"]
    assert url.startswith("http://127.0.0.1:")
    return str(url).rstrip("/")


def signed_in(browser: Any, suite: Suite, token: str | None = None) -> Any:
    """A new page of the web console, signed in (with the bootstrap token
    unless another is given); `page.errors` collects the page's script errors."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.errors = errors
    page.goto(console_url(suite) + "/signin")
    page.fill("input[name=token]", token or (suite.home / "token").read_text().strip())
    page.click("button[type=submit]")
    page.wait_for_selector("h1:has-text('Overview')")
    return page
