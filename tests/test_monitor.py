"""The monitor through real processes (DESIGN.md sections 4 and 5): status on
the bus for every instance, drift behind the orchestrator's back detected and
repaired by a compensating task, back-off for a component that keeps failing,
and the figures of the last poll. `orch up --monitor-interval 1`: "within two
intervals" is two seconds."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import grpc
import nats
import pytest
from nats.aio.client import Client as NatsClient

from cli.home import load_connection
from models import flat
from monitor.compensation import Pacing
from monitor.drift import is_drift
from monitor.inventory import Inventory, SolutionView, Watched
from monitor.probe import Observation
from monitor.status import StatusBoard
from orchestration.store.repository import InstanceRecord, Repository
from orchestration.store.subjects import Subjects
from orchestration.v1 import model_pb2 as pb
from orchestration.v1 import sim_pb2, sim_pb2_grpc
from suite import DATA, Suite, running_suite, wait_until

INTERVAL = 1.0
# Detection must happen within two poll intervals.
WITHIN = 2 * INTERVAL

Message = dict[str, Any]


class BusTap:
    """A plain nats-py client on a thread of its own, so that the blocking CLI
    calls of a test never stall it: records status messages as they arrive."""

    def __init__(self, url: str, prefix: str) -> None:
        self.prefix = prefix
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="bus tap", daemon=True)
        self._thread.start()
        self._lock = threading.Lock()
        # (monotonic receipt time, payload)
        self._received: list[tuple[float, Message]] = []
        self._run(self._connect(url))

    def _run(self, coro: Any, timeout: float = 10.0) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result(timeout)

    async def _connect(self, url: str) -> None:
        self._nc = await nats.connect(url)

        async def on_status(msg: Any) -> None:
            with self._lock:
                self._received.append((time.monotonic(), json.loads(msg.data)))

        await self._nc.subscribe(Subjects(self.prefix).status_filter(), cb=on_status)

    def since(self, start: float) -> list[tuple[float, Message]]:
        """Messages received at or after `start` (monotonic)."""
        with self._lock:
            return [(t, msg) for t, msg in self._received if t >= start]

    def wait_for(self, start: float, match: Callable[[Message], bool], timeout: float) -> float | None:
        """Receipt time of the first message since `start` that matches, waiting up to `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            for received, msg in self.since(start):
                if match(msg):
                    return received
            if time.monotonic() > deadline:
                return None
            time.sleep(0.02)

    def request(self, subject: str) -> Message:
        async def ask() -> bytes:
            return (await self._nc.request(subject, b"", timeout=5)).data

        return json.loads(self._run(ask()))

    def close(self) -> None:
        self._run(self._nc.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


@dataclass
class Deployed:
    suite: Suite
    tap: BusTap
    # When `orch solution deploy --wait` returned (monotonic).
    finished: float


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployed]:
    with running_suite(tmp_path_factory.mktemp("monitor"), "--monitor-interval", str(INTERVAL)) as suite:
        info = json.loads(suite.ok("info", "-o", "json", "--show-secrets"))
        tap = BusTap(info["nats_url"], info["subject_prefix"])
        try:
            suite.ok("apply", "-f", str(DATA / "demo2.yaml"))
            suite.ok("solution", "deploy", "demo", "app", "V0.0.0", "--wait")
            yield Deployed(suite, tap, time.monotonic())
        finally:
            tap.close()


def instances_of(suite: Suite, domain: str, solution: str) -> dict[str, tuple[str, str, pb.Instance]]:
    """Stored instances by uuid, with their element and cluster."""
    found = suite.solution(domain, solution)
    return {i.uuid: (e.name, c.version, i) for e in found.elements for c in e.clusters for i in c.instances}


def roots(suite: Suite, domain: str) -> list[dict[str, Any]]:
    """Root tasks as `orch task list DOMAIN --roots -o json` prints them, oldest first."""
    return json.loads(suite.ok("task", "list", domain, "--roots", "-o", "json"))


def drift_events(suite: Suite, domain: str, uuid: str) -> list[dict[str, Any]]:
    events = json.loads(suite.ok("event", "list", domain, "-o", "json"))
    return [e for e in events if str(e.get("Type", "")).lower() == "drift" and uuid in e.get("Comment", "")]


def test_status_of_every_instance_is_published_within_two_intervals_of_a_deploy(deployed: Deployed) -> None:
    suite, tap = deployed.suite, deployed.tap
    wanted = instances_of(suite, "demo", "app")
    assert len(wanted) == 23
    seen: dict[str, Message] = {}

    def all_seen() -> bool:
        for _, msg in tap.since(deployed.finished):
            if msg["kind"] == "instance":
                seen[msg["instance"]] = msg
        return set(seen) >= set(wanted)

    deadline = deployed.finished + WITHIN
    while not all_seen() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert set(wanted) - set(seen) == set(), "instances without a status message within two intervals"
    for uuid, (element, cluster, _) in wanted.items():
        msg = seen[uuid]
        assert (msg["domain"], msg["solution"], msg["element"], msg["cluster"]) == ("demo", "app", element, cluster)
        assert (msg["state"], msg["target"]) == ("active", "active")
        assert isinstance(msg["time"], int) and abs(msg["time"] / 1e9 - time.time()) < 30
    # Aggregates are published when they change: the solution became active.
    solution_active = tap.wait_for(
        0.0, lambda msg: msg["kind"] == "solution" and msg["solution"] == "app" and msg["state"] == "active", WITHIN
    )
    assert solution_active is not None


def test_a_solution_with_a_running_task_is_left_to_its_dispatcher(deployed: Deployed) -> None:
    """While a task runs, the monitor neither reads nor asks about its
    solution (the dispatcher owns it); once it ends, its instances are
    polled again."""
    suite, tap = deployed.suite, deployed.tap
    suite.apply(flat("slow", 2, parameters={"sim_latency_ms": 2000}))
    task = suite.ok("solution", "deploy", "slow", "app", "V1", "--solution", "slowapp").strip()
    wait_until(lambda: suite.task("slow", task).task.status == pb.TASK_STATUS_EXECUTING, timeout=10, what="the slow deploy running")
    start = polled = time.monotonic()
    # Two whole polls while the task runs.
    wait_until(lambda: time.monotonic() > polled + 2.5 * INTERVAL, timeout=10, what="two polls")
    assert suite.task("slow", task).task.status == pb.TASK_STATUS_EXECUTING, "the slow deploy ended too soon for this test"
    during = [msg for _, msg in tap.since(start) if msg["domain"] == "slow"]
    assert during == [], f"status of a solution whose task runs: {during[:2]}"
    assert tap.request(Subjects(tap.prefix).monitor_figures)["busy"] >= 1
    suite.wait_task("slow", task, timeout=30)
    ended = time.monotonic()
    slow = tap.wait_for(ended, lambda msg: msg["domain"] == "slow" and msg["kind"] == "instance", WITHIN + 1)
    assert slow is not None, "the solution was not polled again after its task ended"


def force_and_watch_repair(deployed: Deployed, uuid: str, state: str, repair: list[str]) -> None:
    """Force `state` in the sim, then check detection (status and drift event
    within two intervals) and repair (one compensating task, these operations)."""
    suite, tap = deployed.suite, deployed.tap
    before = {t["UUID"] for t in roots(suite, "demo")}
    start, wall = time.monotonic(), time.time()
    out = suite.ok("sim", "set-state", uuid, state)
    forced, forced_wall = time.monotonic(), time.time()
    assert uuid in out

    detected = tap.wait_for(start, lambda msg: msg.get("instance") == uuid and msg["state"] == state, WITHIN + 1)
    assert detected is not None and detected - forced <= WITHIN, f"status {state} not published within two intervals"

    def repaired() -> bool:
        new = [t for t in roots(suite, "demo") if t["UUID"] not in before]
        return bool(new) and all(t["Status"] == "completed" for t in new) and \
            instances_of(suite, "demo", "app")[uuid][2].state == pb.STATE_ACTIVE

    wait_until(repaired, 15, f"repair of {uuid} after {state}")
    [compensation] = [t for t in roots(suite, "demo") if t["UUID"] not in before]
    assert compensation["Status"] == "completed" and compensation["Solution"] == "app"

    [event] = drift_events(suite, "demo", uuid)
    assert f"active -> {state}" in event["Comment"] and "reported by controller Internal" in event["Comment"]
    assert event["Time"] / 1e9 - forced_wall <= WITHIN
    done = [op["operation"] for op in suite.ops("app") if op["instance"] == uuid and op["started"] >= wall]
    assert done == repair
    assert all(op["outcome"] == "ok" for op in suite.ops("app") if op["started"] >= wall)


def test_an_instance_forced_to_failure_is_detected_and_rebuilt(deployed: Deployed) -> None:
    uuid = sorted(u for u, (element, _, _) in instances_of(deployed.suite, "demo", "app").items() if element == "app")[0]
    force_and_watch_repair(deployed, uuid, "failure", ["reset", "create", "configure", "start"])


def test_an_instance_forced_to_inactive_is_detected_and_started(deployed: Deployed) -> None:
    uuid = sorted(u for u, (element, _, _) in instances_of(deployed.suite, "demo", "app").items() if element == "db")[0]
    force_and_watch_repair(deployed, uuid, "inactive", ["start"])


def test_set_state_of_an_unknown_instance_fails_clearly(deployed: Deployed) -> None:
    result = deployed.suite.orch("sim", "set-state", "no-such-instance", "failure")
    assert result.returncode == 1
    assert "no sim controller knows instance no-such-instance" in result.stderr


def test_the_simulator_service_requires_the_controller_credential(deployed: Deployed) -> None:
    connection = load_connection(deployed.suite.home)
    assert connection is not None and len(connection.sims) == 1
    with grpc.insecure_channel(connection.sims[0]) as channel:
        stub = sim_pb2_grpc.SimulatorServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.SetState(sim_pb2.SetStateRequest(uuid="x", state=pb.STATE_FAILURE), timeout=5)
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_a_start_that_keeps_failing_is_compensated_with_back_off(deployed: Deployed) -> None:
    # Retryable, and one attempt per run: each compensation fails again (a
    # permanent failure is not compensated at all: tests/test_control_loop.py).
    suite = deployed.suite
    params = {"sim_fail_retryable": "start", "sim_fail_times": 1000, "orch_max_attempts": 1}
    suite.apply(flat("flaky", 1, parameters=params, architecture="flaky"))
    failed = suite.orch("solution", "deploy", "flaky", "flaky", "V1", "--wait")
    assert failed.returncode != 0
    failed_at = time.monotonic()
    # The monitor gives up after three compensations (--max-compensations): wait for that.
    wait_until(lambda: suite.solution("flaky", "flaky").hold.kind == pb.HOLD_KIND_DEGRADED, timeout=60,
               what="the solution marked degraded")
    elapsed = time.monotonic() - failed_at
    tasks = roots(suite, "flaky")
    compensations = len(tasks) - 1
    assert compensations == 3, [t["Status"] for t in tasks]
    # One per interval would take about three intervals; the back-off waits 2 and then 4 between them.
    assert elapsed >= 6 * INTERVAL, elapsed
    for task in tasks:
        suite.wait_task("flaky", task["UUID"], timeout=10)
    # Every compensation was a real attempt from a reset, failing as the first did.
    history = [(op["operation"], op["outcome"]) for op in suite.ops("flaky")]
    first = [("create", "ok"), ("configure", "ok"), ("start", "retryable")]
    assert history == first + [("reset", "ok"), *first] * compensations


def test_figures_of_the_last_poll_are_answered_on_request(deployed: Deployed) -> None:
    figures = deployed.tap.request(Subjects(deployed.tap.prefix).monitor_figures)
    assert figures["polls"] >= 2
    assert figures["instances"] >= 23 and figures["unanswered"] == 0
    assert figures["controller_calls"] >= 1
    assert 0 < figures["duration_seconds"] < INTERVAL
    for key in ("drifted", "compensations", "solutions", "time"):
        assert key in figures


# ---- pure parts, no processes ------------------------------------------------


def test_pacing_doubles_per_compensation_up_to_the_cap_and_resets_when_converged() -> None:
    backoff = Pacing(interval=1.0, cap=5.0)
    key = ("d", "s")
    assert backoff.allowed(key, 0.0)
    assert backoff.compensated(key, 0.0) == 2.0
    assert not backoff.allowed(key, 1.9) and backoff.allowed(key, 2.0)
    assert backoff.compensated(key, 2.0) == 4.0
    assert backoff.compensated(key, 6.0) == 5.0  # 8 s capped
    backoff.converged(key)
    assert backoff.allowed(key, 6.1) and backoff.compensated(key, 6.1) == 2.0


@pytest.mark.parametrize(
    ("stored", "observed", "drift"),
    [
        (pb.STATE_ACTIVE, pb.STATE_FAILURE, True),
        (pb.STATE_ACTIVE, pb.STATE_INACTIVE, True),
        (pb.STATE_ACTIVE, pb.STATE_INITIAL, True),
        (pb.STATE_ACTIVE, pb.STATE_ACTIVE, False),
        (pb.STATE_UNSPECIFIED, pb.STATE_INITIAL, False),
        # The engine's failure verdict stands while the instance exists: the next reconciliation resets it.
        (pb.STATE_FAILURE, pb.STATE_INACTIVE, False),
        (pb.STATE_FAILURE, pb.STATE_ACTIVE, False),
        (pb.STATE_FAILURE, pb.STATE_INITIAL, True),
    ],
)
def test_drift_is_a_differing_state_except_a_failure_verdict_on_an_existing_instance(
    stored: int, observed: int, drift: bool
) -> None:
    assert is_drift(stored, observed) is drift


def test_pacing_counts_the_compensations_since_the_solution_last_converged() -> None:
    pacing = Pacing(interval=1.0, cap=5.0)
    key = ("d", "s")
    assert pacing.streak(key) == 0
    pacing.compensated(key, 0.0)
    pacing.compensated(key, 2.0)
    assert pacing.streak(key) == 2
    pacing.converged(key)
    assert pacing.streak(key) == 0


@pytest.mark.parametrize("names", [("d", "s", "e", "V1", "u-1"), ('we"ird', "s\\x", "\u00e9l\u00e9ment", "1.0", "u\n")])
def test_instance_status_messages_are_the_json_of_their_fields(names: tuple[str, str, str, str, str]) -> None:
    # Encoded from fragments (once per cluster per poll): the bytes must be
    # those of the whole message, whatever the names hold.
    domain, solution, element, cluster, uuid = names
    header = pb.Solution(name=solution, target=pb.STATE_ACTIVE)
    view = SolutionView(domain, header, element_targets={element: pb.STATE_ACTIVE}, cluster_targets={(element, cluster): pb.STATE_ACTIVE})
    record = InstanceRecord(element, cluster, pb.Instance(uuid=uuid, target=pb.STATE_ACTIVE, state=pb.STATE_ACTIVE), 1)
    view.instances.append(Watched(domain, solution, record, "c", "sim"))
    [message] = [m for m in StatusBoard().messages([view], {uuid: Observation(pb.STATE_INACTIVE, "sim")}, 7)
                 if m.payload["kind"] == "instance"]
    fields = {"time": 7, "kind": "instance", "domain": domain, "solution": solution, "element": element,
              "cluster": cluster, "instance": uuid, "state": "inactive", "target": "active"}
    assert message.encode() == json.dumps(fields, separators=(",", ":")).encode()
    assert (message.domain, message.solution) == (domain, solution)


def test_a_solution_status_names_its_hold_once_it_changes() -> None:
    header = pb.Solution(name="s", target=pb.STATE_ACTIVE)
    view = SolutionView("d", header, element_targets={"e": pb.STATE_ACTIVE}, cluster_targets={("e", "V1"): pb.STATE_ACTIVE})
    record = InstanceRecord("e", "V1", pb.Instance(uuid="u", target=pb.STATE_ACTIVE, state=pb.STATE_INACTIVE), 1)
    view.instances.append(Watched("d", "s", record, "c", "sim"))
    observed = {"u": Observation(pb.STATE_INACTIVE, "sim")}
    board = StatusBoard()

    def solution_messages() -> list[dict[str, object]]:
        return [m.payload for m in board.messages([view], observed, 1) if m.payload["kind"] == "solution"]

    [first] = solution_messages()
    assert "hold" not in first
    assert solution_messages() == []  # nothing changed
    header.hold.CopyFrom(pb.SolutionHold(kind=pb.HOLD_KIND_HELD, reason="terminated on request", actor="operator"))
    [held] = solution_messages()
    assert (held["hold"], held["reason"], held["actor"], held["state"]) == ("held", "terminated on request", "operator", "inactive")


def _two_instance_solution(name: str) -> pb.Solution:
    solution = pb.Solution(name=name, version="V1", architecture="app", target=pb.STATE_ACTIVE)
    element = solution.elements.add(name="web", component="server", target=pb.STATE_ACTIVE)
    cluster = element.clusters.add(version="V1", target=pb.STATE_ACTIVE, min=1, max=2, size=2, controller="sim")
    for uuid in (f"{name}-1", f"{name}-2"):
        cluster.instances.add(uuid=uuid, target=pb.STATE_ACTIVE, state=pb.STATE_ACTIVE)
    return solution


async def test_the_inventory_reads_again_only_the_solutions_whose_records_changed(nc: NatsClient, subjects: Subjects) -> None:
    repo = Repository(nc.jetstream(), subjects)
    await repo.open()
    await repo.model.create_domain("d")
    for name in ("a", "b"):
        await repo.solutions.store_solution("d", _two_instance_solution(name))
    inventory = Inventory(repo)
    first = await inventory.read()
    assert [v.name for v in first] == ["a", "b"] and inventory.read_count == 2
    assert [w.uuid for v in first for w in v.instances] == ["a-1", "a-2", "b-1", "b-2"]
    assert first[0].instances[0].controller == "sim"
    # Nothing written since: both views are kept, nothing is read.
    again = await inventory.read()
    assert inventory.read_count == 0 and again[0] is first[0] and again[1] is first[1]
    # An instance of "a" changed behind the monitor's back: "a" alone is read again, as it is now.
    record = first[0].instances[0].record
    changed = pb.Instance()
    changed.CopyFrom(record.instance)
    changed.state = pb.STATE_FAILURE
    await repo.solutions.put_instance("d", "a", record.element, record.cluster, changed, record.revision)
    third = await inventory.read()
    assert inventory.read_count == 1 and third[1] is first[1]
    assert [w.record.instance.state for w in third[0].instances] == [pb.STATE_FAILURE, pb.STATE_ACTIVE]
    # A skipped solution (its task runs) is left out and forgotten: read again once it is not skipped.
    assert [v.name for v in await inventory.read(skip=lambda domain, name: name == "b")] == ["a"]
    assert [v.name for v in await inventory.read()] == ["a", "b"] and inventory.read_count == 1
    # A removed solution (purged: no write to see) is gone from the next read.
    await repo.solutions.remove_solution("d", "a")
    assert [v.name for v in await inventory.read()] == ["b"] and inventory.read_count == 0
    # More writes than REREAD_ABOVE since the last read: every solution is read again.
    inventory.REREAD_ABOVE = 1
    await repo.solutions.store_solution("d", _two_instance_solution("c"))
    assert [v.name for v in await inventory.read()] == ["b", "c"] and inventory.read_count == 2
