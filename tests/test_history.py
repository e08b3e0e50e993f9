"""Revisions, history and rollback through real processes: every accepted
change is a numbered revision; a failed version change rolls back by itself
under the `rollback` failure policy and the failed revision is marked bad;
a rollback by hand puts an older revision's sizes, versions, states and
parameters back, as a new revision, or only plans it; a rollback supersedes
a running change; a dispatcher SIGKILLed mid-rollback is taken over; history
and diff outlive a restart of every process."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import nats
import pytest

import models
from orchestration.v1 import gateway_pb2 as gw
from orchestration.v1 import model_pb2 as pb
from suite import Suite, console_url, needs_chromium, running_suite, signed_in, wait_until
from test_nats_users import inbox_of

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("history")


@pytest.fixture(scope="module")
def suite(home: Path) -> Iterator[Suite]:
    # The monitor stays out of the way: a compensation would be a request of its own.
    with running_suite(home, "--monitor-interval", "3600") as running:
        yield running


def shop(domain: str, versions: Mapping[str, tuple[str, int, Mapping[str, object]]]) -> str:
    """A domain whose architecture (named as the domain, as is its solution) has one version per key: db (V1,
    size 1) and web at the given component version, size and parameters.
    Components db V1 and web V1, V2."""
    components = [models.component("db"), models.component("web", "V1"), models.component("web", "V2")]
    documents = []
    for version, (web_version, size, parameters) in versions.items():
        elements = [models.element("db", "db", 1),
                    models.element("web", "web", size, version=web_version, parameters=parameters, maximum=5)]
        documents.append(models.domain(domain, components, domain, version, elements))
    first, *rest = documents
    # One domain document: the first carries the components, the others add architectures.
    return first + "".join(doc.split("Architectures:\n", 1)[1] for doc in rest)


def history(suite: Suite, domain: str, solution: str = "") -> list[dict[str, Any]]:
    return json.loads(suite.ok("solution", "history", domain, solution or domain, "-o", "json"))


def revisions(suite: Suite, domain: str, solution: str = "") -> list[pb.Revision]:
    return list(suite.solutions.ListRevisions(gw.ListRevisionsRequest(domain=domain, solution=solution or domain),
                                              metadata=suite.metadata, timeout=30).revisions)


def clusters(suite: Suite, domain: str, solution: str = "") -> dict[str, tuple[int, set[int], dict[str, str]]]:
    """Per "element/cluster": live instances, their states, and the cluster's colour parameter."""
    found = suite.solution(domain, solution or domain)
    return {f"{e.name}/{c.version}": (len(c.instances), {i.state for i in c.instances},
                                      {k: v for k, v in c.parameters.items() if k == "colour"})
            for e in found.elements for c in e.clusters}


def ended(suite: Suite, domain: str, number: int, solution: str = "", timeout: float = 60) -> pb.Revision:
    """Revision `number` once its outcome is known."""
    def done() -> pb.Revision | None:
        found = {r.number: r for r in revisions(suite, domain, solution)}
        revision = found.get(number)
        return revision if revision is not None and revision.outcome != pb.REVISION_OUTCOME_RUNNING else None
    return wait_until(done, timeout=timeout, what=f"revision {number} of {domain}/{solution} to end")


def test_a_failed_version_change_rolls_back_by_itself_and_is_marked_bad(suite: Suite) -> None:
    suite.apply(shop("auto", {"V1": ("V1", 2, {}), "V2": ("V2", 2, {"sim_fail": "create"})}))
    suite.ok("solution", "deploy", "auto", "auto", "V1", "--on-failure", "rollback", "--reason", "first release", "--wait")
    failed = suite.orch("solution", "deploy", "auto", "auto", "V2", "--reason", "upgrade web", "--wait")
    assert failed.returncode == 1 and "fails permanently" in failed.stderr, failed.stderr
    # --wait follows the rollback the failure policy starts to its end.
    assert "rolling back to revision 1 (revision 3, task" in failed.stderr, failed.stderr
    rollback = ended(suite, "auto", 3)
    assert (rollback.change, rollback.restores, rollback.actor, rollback.outcome) == (
        "rollback", 1, "failure-policy", pb.REVISION_OUTCOME_SUCCEEDED), rollback
    assert rollback.reason.startswith("revision 2 failed: ") and "fails permanently" in rollback.reason
    listed = history(suite, "auto")
    assert [(r["Revision"], r["Change"], r["Outcome"], r["Bad"]) for r in listed] == [
        (3, "rollback", "succeeded", False), (2, "deploy", "rolled-back", True), (1, "deploy", "succeeded", False)]
    assert (listed[1]["Reason"], listed[2]["Reason"], listed[2]["OnFailure"]) == ("upgrade web", "first release", "rollback")
    # Every instance on the previous version, active; the failed cluster is gone.
    assert clusters(suite, "auto") == {"db/V1": (1, {pb.STATE_ACTIVE}, {}), "web/V1": (2, {pb.STATE_ACTIVE}, {})}
    table = suite.ok("solution", "history", "auto", "auto")
    assert "rolled-back, bad" in table and "rollback to revision 1 (revision 2 failed)" in table, table

    # Deploying the bad revision's desired state again needs --force.
    refused = suite.orch("solution", "deploy", "auto", "auto", "V2")
    assert refused.returncode != 0 and "marked bad" in refused.stderr and "--force" in refused.stderr, refused.stderr
    back = suite.orch("solution", "rollback", "auto", "auto", "--to", "2")
    assert back.returncode != 0 and "failed and was rolled back" in back.stderr and "--force" in back.stderr, back.stderr
    assert len(revisions(suite, "auto")) == 3  # nothing was accepted
    forced = suite.orch("solution", "deploy", "auto", "auto", "V2", "--force", "--wait")
    assert forced.returncode == 1
    assert ended(suite, "auto", 5).restores == 3  # failed again, and rolled back to the last good one (the rollback)


def test_a_rollback_by_hand_puts_back_sizes_versions_states_and_parameters(suite: Suite) -> None:
    suite.apply(shop("hand", {"V1": ("V1", 2, {"colour": "red"}), "V2": ("V2", 1, {"colour": "blue"})}))
    suite.ok("solution", "deploy", "hand", "hand", "V1", "--wait")
    suite.ok("cluster", "set", "hand", "hand", "web", "V1", "--size", "4", "--reason", "more traffic", "--wait")
    suite.ok("solution", "set", "hand", "hand", "--state", "inactive", "--wait")
    suite.ok("solution", "deploy", "hand", "hand", "V2", "--wait")
    before = clusters(suite, "hand")
    assert before == {"db/V1": (1, {pb.STATE_ACTIVE}, {}), "web/V2": (1, {pb.STATE_ACTIVE}, {"colour": "blue"})}

    diff = suite.ok("solution", "diff", "hand", "hand", "1", "4").splitlines()
    assert "version: V1 -> V2" in diff and "web/V1: removed (size 2)" in diff and "web/V2: added (size 1, active)" in diff
    assert suite.ok("solution", "diff", "hand", "hand", "2", "2").strip() == "revisions 2 and 2 ask for the same"

    # --plan says what would run and changes nothing.
    planned = json.loads(suite.ok("solution", "rollback", "hand", "hand", "--to", "2", "--plan", "-o", "json"))
    made = [p for p in planned if p["Cluster"] == "V1" and p["Element"] == "web"]
    assert len(made) == 4 * 3 and {p["Transition"] for p in made} == {"create", "configure", "start"}, planned
    assert {(p["Cluster"], p["Transition"]) for p in planned if p["Element"] == "web" and p["Cluster"] == "V2"} == {
        ("V2", "stop"), ("V2", "destroy")}
    assert len(revisions(suite, "hand")) == 4 and clusters(suite, "hand") == before

    suite.ok("solution", "rollback", "hand", "hand", "--to", "2", "--reason", "back to four", "--wait")
    assert clusters(suite, "hand") == {"db/V1": (1, {pb.STATE_ACTIVE}, {}),
                                       "web/V1": (4, {pb.STATE_ACTIVE}, {"colour": "red"})}
    latest = revisions(suite, "hand")[0]
    assert (latest.number, latest.change, latest.restores, latest.reason, latest.outcome) == (
        5, "rollback", 2, "back to four", pb.REVISION_OUTCOME_SUCCEEDED)
    assert suite.ok("solution", "diff", "hand", "hand", "2", "5").strip() == "revisions 2 and 5 ask for the same"
    suite.ok("solution", "rollback", "hand", "hand", "--to", "3", "--wait")  # the inactive one
    assert clusters(suite, "hand") == {"db/V1": (1, {pb.STATE_INACTIVE}, {}),
                                       "web/V1": (4, {pb.STATE_INACTIVE}, {"colour": "red"})}

    missing = suite.orch("solution", "rollback", "hand", "hand", "--to", "99")
    assert missing.returncode != 0 and "revision 99 of solution 'hand/hand' not found; it has revisions 1 to 6" in missing.stderr


def test_a_rollback_supersedes_the_running_change_and_two_at_once_never_interleave(suite: Suite) -> None:
    suite.apply(shop("race", {"V1": ("V1", 1, {}), "V2": ("V2", 3, {"sim_latency_ms": 400})}))
    suite.ok("solution", "deploy", "race", "race", "V1", "--wait")
    slow = json.loads(suite.ok("solution", "deploy", "race", "race", "V2", "-o", "json"))["task"]
    wait_until(lambda: any(op["cluster"] == "V2" for op in suite.ops("race")),
               timeout=30, what="the slow change to start")
    first = suite.orch("solution", "rollback", "race", "race", "--to", "1", "--request-id", "first-rollback")
    assert first.returncode == 0, first.stderr
    assert f"superseded task {slow}" in first.stderr
    assert suite.wait_task("race", slow).status == pb.TASK_STATUS_TERMINATED
    superseded = ended(suite, "race", 2)
    assert superseded.outcome == pb.REVISION_OUTCOME_SUPERSEDED and "superseded by a rollback" in superseded.error
    ended(suite, "race", 3)
    assert clusters(suite, "race") == {"db/V1": (1, {pb.STATE_ACTIVE}, {}), "web/V1": (1, {pb.STATE_ACTIVE}, {})}

    # Two rollbacks sent at once: one runs, the other supersedes it (or
    # follows it); their revisions never interleave and the last one's state stands.
    suite.ok("solution", "deploy", "race", "race", "V2", "--wait")
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda n: suite.orch("solution", "rollback", "race", "race", "--to", n, "--wait"),
                                ["1", "4"]))
    # The superseded one's --wait says its task was terminated (exit 1).
    assert sorted(r.returncode for r in results) in ([0, 0], [0, 1]), [r.stderr for r in results]
    assert all(r.returncode == 0 or "terminated" in r.stderr for r in results), [r.stderr for r in results]
    listed = revisions(suite, "race")
    rollbacks = [r for r in listed if r.number > 4]
    assert sorted(r.restores for r in rollbacks) == [1, 4]
    newest, older = rollbacks
    assert newest.outcome == pb.REVISION_OUTCOME_SUCCEEDED
    assert older.outcome in (pb.REVISION_OUTCOME_SUCCEEDED, pb.REVISION_OUTCOME_SUPERSEDED)
    # The newer was accepted only once the older's root task had ended.
    assert suite.task("race", older.task).task.updated // 1_000_000 <= newest.created_unix_ms + 1
    expected = {1: "V1", 4: "V2"}[newest.restores]
    assert set(clusters(suite, "race")) == {"db/V1", f"web/{expected}"}


def test_a_dispatcher_killed_mid_rollback_is_taken_over_and_the_rollback_converges(suite: Suite) -> None:
    suite.apply(shop("kill", {"V1": ("V1", 3, {"sim_latency_ms": 150}), "V2": ("V2", 1, {})}))
    suite.ok("solution", "deploy", "kill", "kill", "V1", "--wait")
    suite.ok("solution", "deploy", "kill", "kill", "V2", "--wait")
    started = time.time()
    task = suite.ok("solution", "rollback", "kill", "kill", "--to", "1").strip()
    wait_until(lambda: any(op["cluster"] == "V1" and op["started"] >= started for op in suite.ops("kill")),
               timeout=30, what="the rollback's first operation")
    os.kill(suite.services()["dispatcher"], signal.SIGKILL)
    assert suite.wait_task("kill", task, timeout=90).status == pb.TASK_STATUS_COMPLETED
    rollback = ended(suite, "kill", 3)
    assert (rollback.change, rollback.outcome, rollback.task) == ("rollback", pb.REVISION_OUTCOME_SUCCEEDED, task)
    assert [r.number for r in revisions(suite, "kill")] == [3, 2, 1]  # recorded once, though planned twice
    assert clusters(suite, "kill") == {"db/V1": (1, {pb.STATE_ACTIVE}, {}), "web/V1": (3, {pb.STATE_ACTIVE}, {})}


def test_bad_input_is_refused_with_a_clear_error_and_nothing_stored(suite: Suite) -> None:
    suite.apply(shop("bad", {"V1": ("V1", 1, {})}))
    suite.ok("solution", "deploy", "bad", "bad", "V1", "--wait")
    cases = [
        (gw.RollbackSolutionRequest(domain="bad", solution="bad", to=-1), grpc.StatusCode.INVALID_ARGUMENT, "not a revision"),
        (gw.RollbackSolutionRequest(domain="bad", solution="bad"), grpc.StatusCode.FAILED_PRECONDITION,
         "no revision that succeeded before its newest"),
        (gw.RollbackSolutionRequest(domain="bad", solution="bad", to=1, reason="two\nlines"),
         grpc.StatusCode.INVALID_ARGUMENT, "one line"),
        (gw.RollbackSolutionRequest(domain="bad", solution="bad", to=1, reason="x" * 501),
         grpc.StatusCode.INVALID_ARGUMENT, "at most 500"),
        (gw.RollbackSolutionRequest(domain="bad", solution="nope", to=1), grpc.StatusCode.NOT_FOUND, "not found"),
    ]
    for request, code, words in cases:
        with pytest.raises(grpc.RpcError) as caught:
            suite.solutions.RollbackSolution(request, metadata=suite.metadata, timeout=30)
        assert caught.value.code() == code and words in caught.value.details(), caught.value.details()
    with pytest.raises(grpc.RpcError) as caught:
        suite.solutions.SetFailurePolicy(gw.SetFailurePolicyRequest(domain="bad", solution="bad", on_failure=7),
                                         metadata=suite.metadata, timeout=30)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [r.number for r in revisions(suite, "bad")] == [1]


def test_instances_failing_their_status_check_after_a_change_roll_it_back(tmp_path: Path) -> None:
    with running_suite(tmp_path, "--monitor-interval", "0.3") as watched:
        watched.apply(shop("poll", {"V1": ("V1", 1, {}), "V2": ("V2", 2, {})}))
        watched.ok("solution", "deploy", "poll", "poll", "V1", "--on-failure", "rollback", "--wait")
        watched.ok("solution", "deploy", "poll", "poll", "V2", "--reason", "looks fine", "--wait")
        victim = next(i.uuid for e in watched.solution("poll", "poll").elements if e.name == "web"
                      for c in e.clusters for i in c.instances)
        watched.ok("sim", "set-state", victim, "failure")  # it breaks behind the engine's back
        rollback = ended(watched, "poll", 3)
        assert (rollback.change, rollback.restores, rollback.actor, rollback.outcome) == (
            "rollback", 1, "failure-policy", pb.REVISION_OUTCOME_SUCCEEDED)
        bad = {r.number: r for r in revisions(watched, "poll")}[2]
        assert (bad.outcome, bad.bad) == (pb.REVISION_OUTCOME_ROLLED_BACK, True)
        assert "failed its status check after it" in bad.error and victim in bad.error
        assert clusters(watched, "poll") == {"db/V1": (1, {pb.STATE_ACTIVE}, {}), "web/V1": (1, {pb.STATE_ACTIVE}, {})}


def test_a_bus_client_follows_revisions_and_rolls_back_over_the_bus(suite: Suite) -> None:
    suite.apply(shop("wire", {"V1": ("V1", 1, {}), "V2": ("V2", 1, {})}))
    url = json.loads(suite.ok("info", "-o", "json", "--show-secrets"))["bus_url"]
    bearer = {"Authorization": "Bearer " + (suite.home / "token").read_text().strip()}

    async def scenario() -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, Any], dict[str, Any]]:
        nc = await nats.connect(url, inbox_prefix=inbox_of(url))
        seen: list[dict[str, Any]] = []

        async def heard(msg: Any) -> None:
            seen.append(json.loads(msg.data))
        await nc.subscribe("orch.revisions.wire.wire", cb=heard)
        try:
            async def ask(operation: str, payload: dict[str, Any]) -> dict[str, Any]:
                reply = await nc.request(f"orch.requests.{operation}", json.dumps(payload).encode(), timeout=30,
                                         headers=bearer)
                return json.loads(reply.data)
            for version in ("V1", "V2"):
                await ask("deploy", {"domain": "wire", "architecture": "wire", "version": version, "reason": version})
                await asyncio.to_thread(wait_until, lambda: len(seen) >= 2 * int(version[1]), 60, "revision messages")
            plan = await ask("rollback", {"domain": "wire", "solution": "wire", "to": 1, "plan": True})
            back = await ask("rollback", {"domain": "wire", "solution": "wire", "to": 1, "reason": "over the bus"})
            await asyncio.to_thread(wait_until, lambda: len(seen) >= 6, 60, "the rollback's messages")
            return seen, plan, back, await ask("history", {"domain": "wire", "solution": "wire"})
        finally:
            await nc.close()

    seen, plan, back, listed = asyncio.run(scenario())
    assert [(m["revision"], m["outcome"]) for m in seen] == [
        (1, "running"), (1, "succeeded"), (2, "running"), (2, "succeeded"), (3, "running"), (3, "succeeded")]
    assert seen[4]["change"] == "rollback" and seen[4]["reason"] == "over the bus" and seen[4]["task"] == back["task"]
    assert {t["transition"] for t in plan["transitions"]} == {"create", "configure", "start", "stop", "destroy"}
    assert [r["revision"] for r in listed["revisions"]] == [3, 2, 1] and listed["revisions"][2]["reason"] == "V1"


@needs_chromium
def test_the_console_shows_the_history_each_revisions_changes_and_rolls_back(browser: Any, suite: Suite) -> None:
    suite.apply(shop("view", {"V1": ("V1", 1, {}), "V2": ("V2", 2, {"sim_fail": "configure"})}))
    suite.ok("solution", "deploy", "view", "view", "V1", "--on-failure", "rollback", "--reason", "first", "--wait")
    suite.orch("solution", "deploy", "view", "view", "V2", "--wait")
    ended(suite, "view", 3)
    page = signed_in(browser, suite)
    console = console_url(suite)
    page.goto(console + "/domains/view/solutions/view")
    page.wait_for_selector("[data-history] [data-revision='3']")
    rows = page.eval_on_selector_all("[data-history] tbody tr", "rows => rows.map(r => [...r.cells].map(c => c.innerText))")
    assert [r[0] for r in rows] == ["3", "2", "1"]
    assert [r[4] for r in rows] == ["succeeded", "rolled-back, bad", "succeeded"]
    assert rows[2][5] == "first" and rows[0][2] == "failure-policy"
    # A revision's changes against the one before.
    page.click("[data-history] [data-revision='2'] td >> nth=0")
    page.wait_for_selector("[data-diff='2']")
    assert "version: V1 -> V2" in page.inner_text("[data-diff='2']")
    # No rollback to the bad revision (that needs the CLI's --force), one to the first.
    assert page.locator("[data-revision='2'] button").count() == 0
    page.fill("[aria-label='reason to roll back to 1']", "from the console")
    page.click("[data-revision='1'] button:has-text('Roll back to 1')")
    page.wait_for_selector("[data-history] [data-revision='4']")
    latest = ended(suite, "view", 4)
    assert (latest.change, latest.restores, latest.reason) == ("rollback", 1, "from the console")
    audited = json.loads(suite.ok("audit", "list", "--domain", "view", "-o", "json"))
    assert any(e["Method"] == "RollbackSolution" and e["Channel"] == "console" and e["Reason"] == "from the console"
               and e["Outcome"] == "OK" for e in audited), audited
    page.wait_for_function("() => document.querySelector(\"[data-revision='4']\").innerText.includes('succeeded')")
    page.screenshot(path=str(suite.home / "history.png"), full_page=True)
    assert page.errors == []
    page.close()


def test_history_and_diff_outlive_a_restart_of_every_process(suite: Suite, home: Path) -> None:
    # Last in this module: it stops the module's suite.
    suite.apply(shop("kept", {"V1": ("V1", 1, {}), "V2": ("V2", 2, {})}))
    suite.ok("solution", "deploy", "kept", "kept", "V1", "--reason", "before the restart", "--wait")
    suite.ok("solution", "deploy", "kept", "kept", "V2", "--wait")
    before = (history(suite, "kept"), suite.ok("solution", "diff", "kept", "kept", "1", "2"))
    assert suite.stop() == 0
    with running_suite(home, "--monitor-interval", "3600") as again:
        assert (history(again, "kept"), again.ok("solution", "diff", "kept", "kept", "1", "2")) == before
        assert before[0][1]["Reason"] == "before the restart"
