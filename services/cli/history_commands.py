"""A solution's history: its revisions, what differs between two, a
rollback to one of them, and the failure policy that rolls back by itself."""

from __future__ import annotations

from typing import Any

import click

from cli.engine_commands import (APPROVALS, POLICIES, approval_option, approval_timeout_option, reason_option,
                                 request_id_option, show_plan, submitted, timeout_seconds)
from cli.output import emit, output_option, when
from cli.settings import Settings, pass_settings
from orchestration.model.lifecycle import outcome_name, policy_name
from orchestration.v1 import gateway_pb2 as gw
from orchestration.v1 import model_pb2 as pb


def _outcome(revision: pb.Revision) -> str:
    return outcome_name(revision.outcome) + (", bad" if revision.bad else "")


def _document(revision: pb.Revision) -> dict[str, Any]:
    return {
        "Revision": revision.number, "Time": when(revision.created_unix_ms), "Actor": revision.actor,
        "Change": revision.change, "Summary": revision.summary, "Reason": revision.reason,
        "Outcome": outcome_name(revision.outcome), "Bad": revision.bad, "Error": revision.error,
        "Task": revision.task, "RequestId": revision.client_request_id, "Restores": revision.restores,
        "OnFailure": policy_name(revision.desired.on_failure),
    }


@click.command("history")
@click.argument("domain")
@click.argument("solution")
@output_option
@pass_settings
def history(settings: Settings, domain: str, solution: str, output: str) -> None:
    """The solution's revisions, newest first: who asked for which change, why, and how it ended."""
    gateway = settings.gateway()
    found = gateway.call(gateway.solutions.ListRevisions, gw.ListRevisionsRequest(domain=domain, solution=solution)).revisions
    rows = [[r.number, when(r.created_unix_ms), r.actor, r.summary, _outcome(r), r.reason or "-"] for r in found]
    emit(output, [_document(r) for r in found], ["REV", "TIME", "ACTOR", "CHANGE", "OUTCOME", "REASON"], rows)


@click.command("diff")
@click.argument("domain")
@click.argument("solution")
@click.argument("from_revision", metavar="FROM", type=int)
@click.argument("to_revision", metavar="TO", type=int)
@output_option
@pass_settings
def diff(settings: Settings, domain: str, solution: str, from_revision: int, to_revision: int, output: str) -> None:
    """What differs from revision FROM's desired state to revision TO's (versions, sizes, states, parameters)."""
    gateway = settings.gateway()
    request = gw.DiffRevisionsRequest(domain=domain, solution=solution, to=to_revision)
    setattr(request, "from", from_revision)
    changes = list(gateway.call(gateway.solutions.DiffRevisions, request).changes)
    if output == "table":
        click.echo("\n".join(changes) if changes else f"revisions {from_revision} and {to_revision} ask for the same")
        return
    emit(output, {"From": from_revision, "To": to_revision, "Changes": changes})


@click.command("rollback")
@click.argument("domain")
@click.argument("solution")
@click.option("--to", "to_revision", type=click.IntRange(min=1), default=None,
              help="The revision whose desired state to put back (default: the last that succeeded before the newest).")
@click.option("--plan", is_flag=True, help="Print the transitions the rollback would run; change nothing.")
@click.option("--force", is_flag=True, help="Roll back even to a revision marked bad (failed and rolled back).")
@click.option("--wait", is_flag=True, help="Show progress until the rollback ends.")
@output_option
@request_id_option
@reason_option
@pass_settings
def rollback(settings: Settings, domain: str, solution: str, to_revision: int | None, plan: bool, force: bool, wait: bool,
             output: str, request_id: str, reason: str) -> None:
    """Put revision N's desired state back (by default the last that succeeded before the newest), as a new
    revision (history is never rewritten).
    A change still running is superseded: its running operations finish, none of its others start."""
    gateway = settings.gateway()
    request = gw.RollbackSolutionRequest(domain=domain, solution=solution, to=to_revision or 0, plan=plan, force=force,
                                         request_id=request_id, reason=reason)
    if plan:
        show_plan(output, gateway.call(gateway.solutions.RollbackSolution, request).transitions)
        return
    reply = gateway.submit(gateway.solutions.RollbackSolution, request)
    if reply.superseded_task:
        click.echo(f"superseded task {reply.superseded_task}", err=True)
    submitted(gateway, domain, solution, reply.task, wait)


@click.command("policy")
@click.argument("domain")
@click.argument("solution")
@click.option("--on-failure", type=click.Choice(list(POLICIES)), default=None,
              help="When a change fails: hold the solution where it stopped, or roll it back to the last revision "
                   "that succeeded (and mark the failed one bad).")
@approval_option
@approval_timeout_option
@click.option("--wait", is_flag=True, help="Show progress until the change ends.")
@request_id_option
@reason_option
@pass_settings
def policy(settings: Settings, domain: str, solution: str, on_failure: str | None, approval: str | None,
           approval_timeout: str | None, wait: bool, request_id: str, reason: str) -> None:
    """Change what happens when a change of the solution fails, and whether changes wait for an approver
    (a revision of its own, which itself waits for approval when the solution requires it)."""
    if not on_failure and not approval and approval_timeout is None:
        raise click.UsageError("give --on-failure, --approval, --approval-timeout, or some of them")
    gateway = settings.gateway()
    request = gw.SetFailurePolicyRequest(
        domain=domain, solution=solution, request_id=request_id, reason=reason,
        on_failure=POLICIES[on_failure] if on_failure else pb.FAILURE_POLICY_UNSPECIFIED,
        approval=APPROVALS[approval] if approval else pb.APPROVAL_UNSPECIFIED,
        approval_timeout_seconds=timeout_seconds(approval_timeout))
    submitted(gateway, domain, solution, gateway.submit(gateway.solutions.SetFailurePolicy, request).task, wait)


def _decision(name: str, approve: bool) -> click.Command:
    @click.command(name)
    @click.argument("domain")
    @click.argument("solution")
    @click.option("--revision", "number", type=click.IntRange(min=1), required=True,
                  help="The revision that awaits approval (`orch solution history`).")
    @reason_option
    @pass_settings
    def decide(settings: Settings, domain: str, solution: str, number: int, reason: str) -> None:
        gateway = settings.gateway()
        if approve:
            task = gateway.call(gateway.solutions.ApproveSolution, gw.ApproveSolutionRequest(
                domain=domain, solution=solution, revision=number, reason=reason)).task
            click.echo(f"revision {number} approved: task {task} goes on")
        else:
            task = gateway.call(gateway.solutions.RejectSolution, gw.RejectSolutionRequest(
                domain=domain, solution=solution, revision=number, reason=reason)).task
            click.echo(f"revision {number} rejected: task {task} ends, nothing of it ran")

    decide.__doc__ = (("Let a change that awaits approval start" if approve else "Reject a change that awaits approval: "
                       "nothing of it runs") + " (approvers and admins; never who asked for the change).")
    decide.help = decide.__doc__
    return decide


def register(solution: click.Group) -> None:
    """Add the history commands to the solution group."""
    for command in (history, diff, rollback, policy, _decision("approve", True), _decision("reject", False)):
        solution.add_command(command)
