"""The NATS message bus interface: requests in, events out, with a plain
nats-py client against a running suite."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import nats
import pytest

from orchestration.v1 import gateway_pb2 as gw
from test_nats_users import inbox_of
from suite import DATA, Suite, eventually, running_suite


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Suite]:
    with running_suite(tmp_path_factory.mktemp("bus")) as running:
        running.ok("apply", "-f", str(DATA / "demo2.yaml"))
        yield running


def nats_url(suite: Suite) -> str:
    return json.loads(suite.ok("info", "-o", "json", "--show-secrets"))["bus_url"]


def token(suite: Suite) -> str:
    return (suite.home / "token").read_text().strip()


async def request(url: str, operation: str, payload: bytes, bearer: str = "") -> dict:
    nc = await nats.connect(url, inbox_prefix=inbox_of(url))
    try:
        headers = {"Authorization": f"Bearer {bearer}"} if bearer else None
        reply = await nc.request(f"orch.requests.{operation}", payload, timeout=10, headers=headers)
        return json.loads(reply.data)
    finally:
        await nc.close()


def task_count(suite: Suite) -> int:
    return len(suite.automation.ListTasks(gw.ListTasksRequest(domain="demo"), metadata=suite.metadata).tasks)


def test_deploy_over_the_bus_and_follow_the_events(suite: Suite) -> None:
    async def scenario() -> tuple[str, list[dict]]:
        url = nats_url(suite)
        reply = await request(url, "deploy", json.dumps({"domain": "demo", "architecture": "app", "version": "V0.0.0"}).encode(), token(suite))
        assert set(reply) == {"task"}, reply
        root = reply["task"]
        # A late subscriber: it follows live events and replays what it missed
        # (stored in the events stream) through the gateway.
        nc = await nats.connect(url, inbox_prefix=inbox_of(url))
        events: dict[str, dict] = {}
        done = asyncio.Event()

        def collect(event: dict) -> None:
            events[event["uuid"]] = event
            if event["task"] == root and event["type"] in ("completion", "failure"):
                done.set()

        async def live(msg) -> None:  # type: ignore[no-untyped-def]
            collect(json.loads(msg.data))

        # Subscribe only once the deploy has recorded its first event, so that
        # the subscriber really is late and must be given what it missed.
        await eventually(lambda: suite.automation.ListEvents(gw.ListEventsRequest(domain="demo", task=root),
                                                             metadata=suite.metadata, timeout=10).events,
                         timeout=30, what="the deploy's first event")
        subscription = await nc.subscribe("orch.events.>", cb=live)
        after, more = 0, True
        while more:
            page = await request(url, "events", json.dumps({"domain": "demo", "after": after}).encode(), token(suite))
            for event in page["events"]:
                collect(event)
            after, more = page["last"], page["more"]
        await asyncio.wait_for(done.wait(), timeout=60)
        await subscription.unsubscribe()
        await nc.close()
        return root, sorted(events.values(), key=lambda e: e["time"])

    root, events = asyncio.run(scenario())
    mine = [e for e in events if e["request"] == events[-1]["request"]]
    assert mine[-1]["task"] == root and mine[-1]["type"] == "completion"
    tree = suite.task("demo", root, tree=True)
    tasks = {t.uuid for t in [tree.task, *tree.subtasks]}
    assert {e["task"] for e in mine} == tasks, "every task of the tree has events"
    instance_tasks = [t for t in tree.subtasks if t.instance]
    assert len(instance_tasks) == 23
    for task in tasks:
        kinds = [e["type"] for e in mine if e["task"] == task]
        info = [(e["task_type"], e["element"], e["comment"]) for e in mine if e["task"] == task]
        assert kinds[0] == "execution" and kinds[-1] == "completion", (task, kinds, info)
        times = [e["time"] for e in mine if e["task"] == task]
        assert times == sorted(times)
    sample = mine[-1]
    for key in ("request", "type", "uuid", "source", "time", "task", "task_type", "parent", "subtasks", "status",
                "phase", "domain", "solution", "element", "cluster", "instance", "state", "configuration"):
        assert key in sample


@pytest.mark.parametrize(
    ("operation", "payload", "code"),
    [
        ("deploy", b"{not json", "INVALID_ARGUMENT"),
        ("deploy", b"\xff\xfe", "INVALID_ARGUMENT"),
        ("deploy", b"[1, 2]", "INVALID_ARGUMENT"),
        ("deploy", json.dumps({"domain": "demo", "architecture": "app", "version": "V9"}).encode(), "NOT_FOUND"),
        ("deploy", json.dumps({"domain": "demo.*", "architecture": "app", "version": "V0.0.0"}).encode(), "INVALID_ARGUMENT"),
        ("deploy", json.dumps({"domain": "demo", "architecture": ">", "version": "V0.0.0"}).encode(), "INVALID_ARGUMENT"),
        ("deploy", json.dumps({"domain": "demo", "architecture": "app", "version": 7}).encode(), "INVALID_ARGUMENT"),
        ("deploy", json.dumps({"domain": "demo", "bogus": 1}).encode(), "INVALID_ARGUMENT"),
        ("cluster", json.dumps({"domain": "demo", "solution": "nothere", "element": "app", "cluster": "V1.0.0", "size": 2}).encode(), "NOT_FOUND"),
        ("instance", json.dumps({"domain": "demo", "solution": "app", "element": "app", "cluster": "V1.0.0",
                                 "instance": "x", "state": "running"}).encode(), "INVALID_ARGUMENT"),
        ("task", json.dumps({"domain": "demo", "task": "no-such-task"}).encode(), "NOT_FOUND"),
        ("explode", b"{}", "INVALID_ARGUMENT"),
    ],
)
def test_malformed_bus_requests_get_an_error_and_change_nothing(suite: Suite, operation: str, payload: bytes, code: str) -> None:
    before = task_count(suite)
    reply = asyncio.run(request(nats_url(suite), operation, payload, token(suite)))
    assert reply["error"]["code"] == code, reply
    assert reply["error"]["message"]
    assert task_count(suite) == before


def test_get_task_over_the_bus(suite: Suite) -> None:
    roots = [t for t in suite.automation.ListTasks(gw.ListTasksRequest(domain="demo", roots_only=True), metadata=suite.metadata).tasks]
    assert roots
    reply = asyncio.run(request(nats_url(suite), "task", json.dumps({"domain": "demo", "task": roots[0].uuid, "tree": True}).encode(), token(suite)))
    assert reply["task"] == roots[0].uuid and reply["document"]["UUID"] == roots[0].uuid and reply["subtasks"]
