"""Pause and resume through real processes: a pause stops a running change
at each instance's next lifecycle boundary (operations in flight finish)
and resume goes on where it stopped; a paused solution's later change
waits, and the pause outlives a restart of every process; the monitor
leaves a paused solution alone."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import models
from orchestration.v1 import gateway_pb2 as gw
from orchestration.v1 import model_pb2 as pb
from suite import Suite, console_url, needs_chromium, running_suite, signed_in, wait_until

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("pause")


# 50 operations at a time: a deploy of 1,000 (3,000 operations of 100 ms) takes about 6 s.
OPERATION_TIMEOUT = 30
FLAGS = ("--concurrency", "50", "--operation-timeout", str(OPERATION_TIMEOUT))


@pytest.fixture(scope="module")
def suite(home: Path) -> Iterator[Suite]:
    with running_suite(home, *FLAGS) as running:
        yield running


def web(domain: str, size: int, latency_ms: int) -> str:
    element = models.element("web", "web", size, parameters={"sim_latency_ms": latency_ms, "orch_siblings": "ignore"},
                             maximum=max(size, 4))
    return models.domain(domain, [models.component("web")], domain, "V1", [element])


def summary(suite: Suite, domain: str) -> gw.SummarizeSolutionResponse:
    return suite.solutions.SummarizeSolution(gw.SummarizeSolutionRequest(domain=domain, solution=domain),
                                             metadata=suite.metadata, timeout=30)


def test_a_pause_stops_a_deploy_of_1000_at_the_next_boundary_and_resume_completes_it(suite: Suite) -> None:
    suite.apply(web("big", 1000, 100))
    task = json.loads(suite.ok("solution", "deploy", "big", "big", "V1", "-o", "json"))["task"]
    wait_until(lambda: len(suite.ops("big")) >= 50, timeout=60, what="the deploy under way")
    out = suite.ok("solution", "pause", "big", "big", "--reason", "look first", "--wait")
    assert out.splitlines()[0] == "paused by bootstrap: look first"
    assert f"task {task} starts no more operations" in out
    pause = summary(suite, "big").pause
    acknowledged = pause.acknowledged_unix_ms / 1000
    assert pause.task == task and acknowledged > 0
    time.sleep(1.5)  # operations in flight (100 ms each) finish; no other starts
    # Sent when their deadline says (the engine stamps it as it sends them):
    # none after the acknowledgement. Those in flight then, at most 50, may
    # start in the sim a little later on a loaded machine.
    sent_after = [op for op in suite.ops("big") if op["deadline"] - OPERATION_TIMEOUT > acknowledged]
    assert sent_after == [], f"{len(sent_after)} operations sent after the pause was acknowledged"
    started_after = [op for op in suite.ops("big") if op["started"] > acknowledged]
    assert len(started_after) <= 50, f"{len(started_after)} operations started after the pause was acknowledged"
    status = suite.ok("solution", "status", "big", "big")
    assert "paused since" in status and "by bootstrap: look first" in status and f"task {task} starts no more" in status
    assert suite.task("big", task).task.status == pb.TASK_STATUS_EXECUTING
    done_before = len(suite.ops("big"))
    assert done_before < 3000

    resumed = suite.orch("solution", "resume", "big", "big", "--wait", timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.splitlines()[0] == task  # the paused change went on; no second one
    assert "pause by bootstrap ended" in resumed.stderr
    assert suite.wait_task("big", task).status == pb.TASK_STATUS_COMPLETED
    final = summary(suite, "big")
    assert (final.total.instances, final.total.active) == (1000, 1000) and not final.HasField("pause")
    assert len(suite.ops("big")) == 3000  # each instance created, configured, started once


def test_bad_pause_requests_are_refused_and_a_second_pause_keeps_the_first(suite: Suite) -> None:
    suite.apply(web("twice", 1, 0))
    suite.ok("solution", "deploy", "twice", "twice", "V1", "--wait")
    missing = suite.orch("solution", "pause", "twice", "nope")
    assert missing.returncode == 1 and "NOT_FOUND" in missing.stderr
    long = suite.orch("solution", "pause", "twice", "twice", "--reason", "x" * 501)
    assert long.returncode == 1 and "INVALID_ARGUMENT" in long.stderr and "at most 500" in long.stderr
    assert not summary(suite, "twice").HasField("pause")  # nothing stored
    suite.ok("solution", "pause", "twice", "twice", "--reason", "first")
    again = suite.ok("solution", "pause", "twice", "twice", "--reason", "second")
    assert again.strip() == "paused by bootstrap: first"
    suite.ok("solution", "resume", "twice", "twice", "--wait")
    assert not summary(suite, "twice").HasField("pause")


@needs_chromium
def test_the_console_pauses_shows_who_and_why_and_resumes(browser: Any, suite: Suite) -> None:
    suite.apply(web("seen", 300, 200))
    task = json.loads(suite.ok("solution", "deploy", "seen", "seen", "V1", "-o", "json"))["task"]
    page = signed_in(browser, suite)
    console = console_url(suite)
    page.goto(console + "/domains/seen/solutions/seen")
    page.click("button:has-text('Pause')")
    page.wait_for_selector("[data-paused='bootstrap']:has-text('starts no more operations')")
    banner = page.inner_text("[data-paused]")
    assert banner.startswith("Paused by bootstrap since") and task[:8] in banner
    assert suite.task("seen", task).task.status == pb.TASK_STATUS_EXECUTING
    page.click("button:has-text('Resume')")
    page.wait_for_selector("[data-paused]", state="detached")
    assert suite.wait_task("seen", task, timeout=120).status == pb.TASK_STATUS_COMPLETED
    audited = json.loads(suite.ok("audit", "list", "--domain", "seen", "-o", "json"))
    assert [e["Method"] for e in audited if e["Channel"] == "console"] == ["PauseSolution", "ResumeSolution"]
    assert page.errors == []
    page.close()


def test_a_paused_solutions_next_change_waits_and_the_pause_outlives_a_restart(suite: Suite, home: Path) -> None:
    # Last in this module: it stops the module's suite.
    suite.apply(web("later", 2, 0))
    suite.ok("solution", "deploy", "later", "later", "V1", "--wait")
    suite.ok("solution", "pause", "later", "later", "--reason", "freeze")
    assert suite.stop() == 0
    with running_suite(home, *FLAGS) as again:
        assert again.ok("solution", "status", "later", "later").count("paused since") == 1
        resize = again.ok("cluster", "set", "later", "later", "web", "V1", "--size", "4").strip()
        wait_until(lambda: summary(again, "later").pause.task == resize, timeout=30, what="the change to stop at once")
        before = len(again.ops("later"))
        time.sleep(1.0)
        assert len(again.ops("later")) == before  # not one operation while paused
        assert again.task("later", resize).task.status == pb.TASK_STATUS_EXECUTING
        again.ok("solution", "resume", "later", "later")
        assert again.wait_task("later", resize).status == pb.TASK_STATUS_COMPLETED
        assert summary(again, "later").total.active == 4
