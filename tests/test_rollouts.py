"""Rollouts through real processes: a 12-instance element upgraded with
Batch 25% and MaxUnavailable 1 never has fewer than 11 active and changes
in 4 waves (read from the sim controller's operation log); a rollout with
`Pause: approval` waits for an operator after each batch, and a rollback
instead of an approval leaves every instance on the old version."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

import models
from orchestration.v1 import gateway_pb2 as gw
from orchestration.v1 import model_pb2 as pb
from suite import Suite, console_url, needs_chromium, running_suite, signed_in, wait_until

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Suite]:
    with running_suite(tmp_path_factory.mktemp("rollouts"), "--monitor-interval", "3600") as running:
        yield running


def shop(domain: str, size: int, rollout: Mapping[str, object], latency_ms: int = 50) -> str:
    """Architecture `domain` V1 (web V1) and V2 (web V2), the element's rollout in both."""
    keys = "".join(f"\n              {key}: {value}" for key, value in rollout.items())
    parameters = {"sim_latency_ms": latency_ms, "orch_siblings": "ignore"}
    docs = [models.domain(domain, [models.component("web", "V1"), models.component("web", "V2")], domain, version,
                          [models.element("web", "web", size, version=version, parameters=parameters)
                           + f"\n            Rollout:{keys}"])
            for version in ("V1", "V2")]
    return docs[0] + docs[1].split("Architectures:\n", 1)[1]


def timeline(suite: Suite, solution: str, since: float) -> list[tuple[float, int]]:
    """(time, change of active instances) from the op log: +1 when a start
    ends, -1 when a stop begins (the instance is no longer serving)."""
    changes = []
    for op in suite.ops(solution):
        if op["started"] < since or op["outcome"] != "ok":
            continue
        if op["operation"] == "start":
            changes.append((op["finished"], +1))
        elif op["operation"] == "stop":
            changes.append((op["started"], -1))
    return sorted(changes)


def test_batches_of_25_percent_never_leave_fewer_than_11_of_12_active(suite: Suite) -> None:
    suite.apply(shop("waves", 12, {"Batch": "25%", "MaxUnavailable": 1, "Check": "300ms", "Pause": "300ms"}))
    suite.ok("solution", "deploy", "waves", "waves", "V1", "--wait")
    since = max(op["finished"] for op in suite.ops("waves"))
    suite.ok("solution", "deploy", "waves", "waves", "V2", "--wait", timeout=180)
    active, fewest = 12, 12
    for _, change in timeline(suite, "waves", since):
        active += change
        fewest = min(fewest, active)
    assert fewest >= 11 and active == 12
    creates = sorted(op["started"] for op in suite.ops("waves") if op["cluster"] == "V2" and op["operation"] == "create")
    waves = [[creates[0]]]
    for at in creates[1:]:
        if at - waves[-1][-1] > 0.5:  # a check and a pause (0.6 s) lie between two batches
            waves.append([])
        waves[-1].append(at)
    assert [len(w) for w in waves] == [3, 3, 3, 3], creates
    found = suite.solution("waves", "waves")
    assert [(c.version, len(c.instances), {i.state for i in c.instances}) for e in found.elements for c in e.clusters] == [
        ("V2", 12, {pb.STATE_ACTIVE})]


def test_a_rollout_waits_for_approval_and_a_rollback_instead_keeps_the_old_version(suite: Suite) -> None:
    suite.apply(shop("gate", 4, {"Batch": 2, "MaxUnavailable": 0, "Pause": "approval"}, latency_ms=0))
    suite.ok("solution", "deploy", "gate", "gate", "V1", "--wait")
    upgrade = json.loads(suite.ok("solution", "deploy", "gate", "gate", "V2", "-o", "json"))["task"]

    def waiting() -> gw.SummarizeSolutionResponse | None:
        found = suite.solutions.SummarizeSolution(gw.SummarizeSolutionRequest(domain="gate", solution="gate"),
                                                  metadata=suite.metadata, timeout=30)
        return found if found.HasField("pause") else None
    paused = wait_until(waiting, timeout=60, what="the rollout to wait for approval").pause
    assert paused.actor == "rollout" and paused.reason.startswith("batch 1 of 2 of element web is active")
    status = suite.ok("solution", "status", "gate", "gate")
    assert "paused since" in status and "by rollout: batch 1 of 2" in status
    made = [op for op in suite.ops("gate") if op["cluster"] == "V2" and op["operation"] == "create"]
    assert len(made) == 2
    assert suite.task("gate", upgrade).task.status == pb.TASK_STATUS_EXECUTING

    # Approve: resume goes on with the next (last) batch.
    suite.ok("solution", "resume", "gate", "gate")
    assert suite.wait_task("gate", upgrade).status == pb.TASK_STATUS_COMPLETED
    assert len([op for op in suite.ops("gate") if op["cluster"] == "V2" and op["operation"] == "create"]) == 4
    assert waiting() is None

    # Reject instead: a rollback supersedes the next rollout (V2 -> V1) at its
    # first approval and puts its old version (V2) back everywhere, at once.
    second = json.loads(suite.ok("solution", "deploy", "gate", "gate", "V1", "-o", "json"))["task"]
    wait_until(waiting, timeout=60, what="the next rollout to wait for approval")
    suite.ok("solution", "rollback", "gate", "gate", "--to", "2", "--reason", "rejected", "--wait")
    assert suite.task("gate", second).task.status == pb.TASK_STATUS_TERMINATED
    assert waiting() is None  # the rollout's wait for approval ended with it
    found = suite.solution("gate", "gate")
    assert [(c.version, len(c.instances), {i.state for i in c.instances}) for e in found.elements for c in e.clusters] == [
        ("V2", 4, {pb.STATE_ACTIVE})]


@pytest.mark.parametrize("policy", ["rollback", "hold"])
def test_a_batch_that_turns_unhealthy_rolls_back_or_pauses_the_rollout(suite: Suite, policy: str) -> None:
    domain = f"sick-{policy}"
    suite.apply(shop(domain, 4, {"Batch": 2, "MaxUnavailable": 1, "Check": "3s"}, latency_ms=0))
    suite.ok("solution", "deploy", domain, domain, "V1", "--on-failure", policy, "--wait")
    task = json.loads(suite.ok("solution", "deploy", domain, domain, "V2", "-o", "json"))["task"]
    started = wait_until(lambda: [op["instance"] for op in suite.ops(domain)
                                  if op["cluster"] == "V2" and op["operation"] == "start" and op["outcome"] == "ok"],
                         timeout=30, what="the first batch to start")
    suite.ok("sim", "set-state", started[0], "failure")  # during the batch's check
    if policy == "rollback":
        assert suite.wait_task(domain, task, timeout=60).status == pb.TASK_STATUS_FAILED
        wait_until(lambda: suite.solutions.ListRevisions(
            gw.ListRevisionsRequest(domain=domain, solution=domain), metadata=suite.metadata, timeout=30).revisions[0]
            .outcome == pb.REVISION_OUTCOME_SUCCEEDED, timeout=60, what="the rollback")
        listed = {r.number: r for r in suite.solutions.ListRevisions(
            gw.ListRevisionsRequest(domain=domain, solution=domain), metadata=suite.metadata, timeout=30).revisions}
        assert listed[2].bad and "is not healthy" in listed[2].error and started[0] in listed[2].error
        found = suite.solution(domain, domain)
        assert [(c.version, {i.state for i in c.instances}) for e in found.elements for c in e.clusters] == [
            ("V1", {pb.STATE_ACTIVE})]
    else:
        def held() -> gw.SummarizeSolutionResponse | None:
            summary = suite.solutions.SummarizeSolution(gw.SummarizeSolutionRequest(domain=domain, solution=domain),
                                                        metadata=suite.metadata, timeout=30)
            return summary if summary.HasField("pause") else None
        pause = wait_until(held, timeout=30, what="the rollout to pause").pause
        assert pause.actor == "rollout" and "batch 1 of 2 of element web is not healthy" in pause.reason
        assert f"{started[0]} is failure" in pause.reason
        assert suite.task(domain, task).task.status == pb.TASK_STATUS_EXECUTING
        suite.ok("solution", "rollback", domain, domain, "--wait")  # reject: back to V1 at once


def test_an_approved_change_of_a_rollout_goes_its_batches(suite: Suite) -> None:
    """A change that waited for an approver runs its rollout as any other (the
    run lifted from its wait does not take itself for over)."""
    suite.apply(shop("both", 4, {"Batch": 1, "MaxUnavailable": 0, "Pause": "approval"}, latency_ms=0))
    suite.ok("solution", "deploy", "both", "both", "V1", "--approval", "required", "--wait")
    anna = json.loads(suite.ok("token", "create", "anna-both", "--role", "approver", "--domain", "both", "-o", "json"))["token"]
    task = json.loads(suite.ok("solution", "deploy", "both", "both", "V2", "-o", "json"))["task"]

    def paused_by(actor: str) -> bool:
        summary = suite.solutions.SummarizeSolution(gw.SummarizeSolutionRequest(domain="both", solution="both"),
                                                    metadata=suite.metadata, timeout=30)
        return summary.pause.actor == actor and summary.pause.acknowledged_unix_ms > 0
    # Acknowledged: the dispatcher has paused the waiting run (whose lifting once ended it at once).
    wait_until(lambda: paused_by("approval"), timeout=30, what="the change to await approval")
    approved = suite.orch("solution", "approve", "both", "both", "--revision", "2", token=anna, timeout=60)
    assert approved.returncode == 0, approved.stderr
    wait_until(lambda: paused_by("rollout"), timeout=30, what="the rollout's first batch and its wait for approval")
    assert suite.task("both", task).task.status == pb.TASK_STATUS_EXECUTING
    suite.ok("solution", "rollback", "both", "both", "--wait")


@needs_chromium
def test_the_console_shows_a_rollouts_batches_and_its_wait_for_approval(browser: Any, suite: Suite) -> None:
    suite.apply(shop("seen", 4, {"Batch": 1, "MaxUnavailable": 0, "Pause": "approval"}, latency_ms=0))
    suite.ok("solution", "deploy", "seen", "seen", "V1", "--wait")
    out = suite.ok("solution", "deploy", "seen", "seen", "V2", "--wait")
    assert "paused by rollout: batch 1 of 4 of element web" in out or out  # --wait returns at the approval
    page = signed_in(browser, suite)
    console = console_url(suite)
    page.goto(console + "/domains/seen/solutions/seen")
    card = page.wait_for_selector("[data-rollout='web']:has-text('waiting for approval')")
    text = card.inner_text()
    assert "Rollout of web to V2" in text and "batch 2 of 4" in text and "1 of 4 new active" in text, text
    assert page.eval_on_selector_all("[data-rollout='web'] .batches span", "s => s.map(x => x.className)") == [
        "done", "now", "", ""]
    page.click("button:has-text('Resume')")
    page.wait_for_selector("[data-rollout='web']:has-text('batch 3 of 4')")
    page.screenshot(path=str(suite.home / "rollout.png"), full_page=True)
    suite.ok("solution", "rollback", "seen", "seen", "--wait")
    assert page.errors == []
    page.close()
