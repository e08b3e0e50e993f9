"""Approval gates through real processes: a solution that requires approval
holds each change (recorded as a revision awaiting approval, the solution
paused by "approval", nothing of it written or run) until an approver (or
an admin) who did not ask for it approves; a rejection ends the change with
nothing of it run."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator

import pytest

import models
from orchestration.v1 import gateway_pb2 as gw
from orchestration.v1 import model_pb2 as pb
from suite import Suite, running_suite, wait_until

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Suite]:
    with running_suite(tmp_path_factory.mktemp("approvals"), "--monitor-interval", "3600") as running:
        running.apply(models.domain("ok", [models.component("web")], "ok", "V1",
                                    [models.element("web", "web", 2, maximum=4)]))
        yield running


def as_token(suite: Suite, token: str, *args: str) -> subprocess.CompletedProcess:
    return suite.orch(*args, token=token, timeout=60)


def token(suite: Suite, name: str, role: str) -> str:
    return json.loads(suite.ok("token", "create", name, "--role", role, "--domain", "ok", "-o", "json"))["token"]


def revision(suite: Suite, number: int) -> pb.Revision:
    listed = suite.solutions.ListRevisions(gw.ListRevisionsRequest(domain="ok", solution="ok"), metadata=suite.metadata,
                                           timeout=30).revisions
    return {r.number: r for r in listed}[number]


def awaiting(suite: Suite, number: int) -> pb.Revision:
    return wait_until(lambda: (r := revision_or_none(suite, number)) is not None
                      and r.outcome == pb.REVISION_OUTCOME_AWAITING_APPROVAL and r,
                      timeout=30, what=f"revision {number} to await approval")


def revision_or_none(suite: Suite, number: int) -> pb.Revision | None:
    try:
        return revision(suite, number)
    except KeyError:
        return None


def test_a_change_waits_for_an_approver_who_did_not_ask_for_it(suite: Suite) -> None:
    suite.ok("solution", "deploy", "ok", "ok", "V1", "--approval", "required", "--wait")  # takes effect for later changes
    olga, anna = token(suite, "olga", "operator"), token(suite, "anna", "approver")
    ops = len(suite.ops("ok"))
    asked = as_token(suite, olga, "cluster", "set", "ok", "ok", "web", "V1", "--size", "4", "--reason", "traffic")
    assert asked.returncode == 0, asked.stderr
    task = asked.stdout.strip()
    waiting = awaiting(suite, 2)
    assert (waiting.actor, waiting.reason, waiting.task) == ("olga", "traffic", task)
    status = suite.ok("solution", "status", "ok", "ok")
    assert "by approval: revision 2 (web/V1 to size 4, by olga) awaits approval" in status
    time.sleep(0.5)
    assert len(suite.ops("ok")) == ops and suite.task("ok", task).task.status != pb.TASK_STATUS_COMPLETED
    # The wait holds up nothing else: another solution's change runs meanwhile.
    suite.apply(models.domain("other", [models.component("web")], "other", "V1", [models.element("web", "web", 1)]))
    suite.ok("solution", "deploy", "other", "other", "V1", "--wait", timeout=30)

    refused = as_token(suite, olga, "solution", "approve", "ok", "ok", "--revision", "2")
    assert refused.returncode == 1 and "needs the approver or admin role" in refused.stderr
    resumed = suite.orch("solution", "resume", "ok", "ok")
    assert resumed.returncode == 1 and "resume does not approve" in resumed.stderr
    approved = as_token(suite, anna, "solution", "approve", "ok", "ok", "--revision", "2", "--reason", "expected")
    assert approved.returncode == 0 and f"task {task} goes on" in approved.stdout, approved.stderr
    assert suite.wait_task("ok", task).status == pb.TASK_STATUS_COMPLETED
    assert revision(suite, 2).outcome == pb.REVISION_OUTCOME_SUCCEEDED
    assert sum(len(c.instances) for e in suite.solution("ok", "ok").elements for c in e.clusters) == 4
    audited = json.loads(suite.ok("audit", "list", "--domain", "ok", "-o", "json"))
    assert any(e["Method"] == "ApproveSolution" and e["Actor"] == "anna" and e["Reason"] == "expected" for e in audited)

    # Nobody approves their own change, admins included.
    mine = suite.ok("cluster", "set", "ok", "ok", "web", "V1", "--size", "1").strip()
    awaiting(suite, 3)
    own = suite.orch("solution", "approve", "ok", "ok", "--revision", "3")
    assert own.returncode == 1 and "asked for by bootstrap: another approver decides" in own.stderr
    ops = len(suite.ops("ok"))
    rejected = as_token(suite, anna, "solution", "reject", "ok", "ok", "--revision", "3", "--reason", "not now")
    assert rejected.returncode == 0, rejected.stderr
    ended = suite.wait_task("ok", mine)
    assert ended.status == pb.TASK_STATUS_TERMINATED and "rejected by anna: not now" in ended.error
    assert revision(suite, 3).outcome == pb.REVISION_OUTCOME_REJECTED
    assert len(suite.ops("ok")) == ops  # nothing of it ran
    found = suite.solution("ok", "ok")
    assert sum(len(c.instances) for e in found.elements for c in e.clusters) == 4 and found.approval_required
    assert "paused" not in suite.ok("solution", "status", "ok", "ok")
    again = as_token(suite, anna, "solution", "reject", "ok", "ok", "--revision", "3")
    assert again.returncode == 1 and "does not await approval (it is rejected)" in again.stderr
    # A rejected change never ran: a rollback cannot put it back (nor skip the approver so).
    back = suite.orch("solution", "rollback", "ok", "ok", "--to", "3")
    assert back.returncode == 1 and "never ran" in back.stderr


def test_a_change_nobody_decides_on_in_time_is_rejected_when_the_solution_says_so(suite: Suite) -> None:
    # After the test above: "ok" requires approval, 4 instances; a policy change itself awaits approval.
    anna = token(suite, "anna2", "approver")
    number = 1 + max(r.number for r in suite.solutions.ListRevisions(
        gw.ListRevisionsRequest(domain="ok", solution="ok"), metadata=suite.metadata, timeout=30).revisions)
    task = suite.ok("solution", "policy", "ok", "ok", "--approval-timeout", "1s", "--reason", "no waiting").strip()
    awaiting(suite, number)
    assert as_token(suite, anna, "solution", "approve", "ok", "ok", "--revision", str(number)).returncode == 0
    assert suite.wait_task("ok", task).status == pb.TASK_STATUS_COMPLETED
    assert suite.solution("ok", "ok").approval_timeout_seconds == 1
    late = suite.ok("cluster", "set", "ok", "ok", "web", "V1", "--size", "2").strip()
    ended = suite.wait_task("ok", late, timeout=30)
    assert ended.status == pb.TASK_STATUS_TERMINATED and "rejected by approval-timeout" in ended.error
    assert revision(suite, number + 1).outcome == pb.REVISION_OUTCOME_REJECTED
    assert "paused" not in suite.ok("solution", "status", "ok", "ok")
    bad = suite.orch("solution", "policy", "ok", "ok", "--approval-timeout", "soon")
    assert bad.returncode == 2 and "a duration (30m, 2h) or never" in bad.stderr


def test_whoever_asked_approves_their_own_change_only_where_the_domain_allows_it(suite: Suite) -> None:
    suite.apply(models.domain("self", [models.component("web")], "self", "V1", [models.element("web", "web", 1, maximum=3)]))
    suite.ok("solution", "deploy", "self", "self", "V1", "--approval", "required", "--wait")
    assert "self-approval  forbidden" in suite.ok("domain", "policy", "self")
    olga = json.loads(suite.ok("token", "create", "olga-self", "--role", "operator", "--domain", "self", "-o", "json"))["token"]
    refused = as_token(suite, olga, "domain", "policy", "self", "--self-approval", "allowed")
    assert refused.returncode == 1 and "needs the admin role" in refused.stderr
    missing = suite.orch("domain", "policy", "nowhere", "--self-approval", "allowed")
    assert missing.returncode == 1 and "nowhere" in missing.stderr

    shown = suite.ok("domain", "policy", "self", "--self-approval", "allowed", "--reason", "a team of one")
    assert "self-approval  allowed" in shown and "bootstrap" in shown and "a team of one" in shown
    number = 1 + max(r.number for r in suite.solutions.ListRevisions(
        gw.ListRevisionsRequest(domain="self", solution="self"), metadata=suite.metadata, timeout=30).revisions)
    mine = suite.ok("cluster", "set", "self", "self", "web", "V1", "--size", "2").strip()
    wait_until(lambda: {r.number: r.outcome for r in suite.solutions.ListRevisions(
        gw.ListRevisionsRequest(domain="self", solution="self"), metadata=suite.metadata, timeout=30).revisions
    }.get(number) == pb.REVISION_OUTCOME_AWAITING_APPROVAL, timeout=30, what="the change to await approval")
    suite.ok("solution", "approve", "self", "self", "--revision", str(number), "--reason", "mine, allowed")
    assert suite.wait_task("self", mine).status == pb.TASK_STATUS_COMPLETED
    audited = json.loads(suite.ok("audit", "list", "--domain", "self", "-o", "json"))
    assert [(e["Method"], e["Actor"], e["Outcome"]) for e in audited if e["Method"] in ("SetDomainPolicy", "ApproveSolution")] == \
        [("SetDomainPolicy", "olga-self", "PERMISSION_DENIED"), ("SetDomainPolicy", "bootstrap", "OK"),
         ("ApproveSolution", "bootstrap", "OK")]
    # Forbidden again: the old rule holds.
    suite.ok("domain", "policy", "self", "--self-approval", "forbidden")
    suite.ok("cluster", "set", "self", "self", "web", "V1", "--size", "1")
    wait_until(lambda: any(r.outcome == pb.REVISION_OUTCOME_AWAITING_APPROVAL for r in suite.solutions.ListRevisions(
        gw.ListRevisionsRequest(domain="self", solution="self"), metadata=suite.metadata, timeout=30).revisions),
        timeout=30, what="the next change to await approval")
    own = suite.orch("solution", "approve", "self", "self", "--revision", str(number + 1))
    assert own.returncode == 1 and "another approver decides" in own.stderr
