"""Commands that change solutions through the task engine, and follow them:
deploy, plan, delete, cluster set, instance set, task terminate."""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Sequence

import click
import grpc

from cli.client import Gateway
from cli.output import emit, output_option
from cli.settings import Settings, pass_settings
from orchestration.model.lifecycle import STATES_BY_NAME, TRANSITION_NAMES
from orchestration.v1 import gateway_pb2 as gw
from orchestration.v1 import model_pb2 as pb

TARGET_STATES = click.Choice(["initial", "inactive", "active"])

# Every command that asks the engine for a change takes a request id: the
# same id sent again is the same change (its root task), never a second one.
request_id_option = click.option(
    "--request-id", default="",
    help="Name this change (1-128 letters, digits and _ . : @ -). Sent again with the same id, "
         "it is the same change and prints the same task: the safe way to retry after a lost reply. "
         "Default: a fresh id, retried automatically while the gateway is unreachable.")
# Every command that asks for a change takes a reason, kept in the
# solution's history and the audit trail.
reason_option = click.option("--reason", default="", help="Why (one line, at most 500 characters): kept in the "
                                                         "solution's history and the audit trail.")
POLICIES = {"hold": pb.FAILURE_POLICY_HOLD, "rollback": pb.FAILURE_POLICY_ROLLBACK}
APPROVALS = {"none": pb.APPROVAL_NONE, "required": pb.APPROVAL_REQUIRED}
approval_option = click.option(
    "--approval", type=click.Choice(list(APPROVALS)), default=None,
    help="Whether each later change of the solution waits for an approver (`orch solution approve`) before it starts.")


def timeout_seconds(value: str | None) -> int:
    """--approval-timeout as the request's seconds: 0 (unchanged), -1 (never), or the duration's."""
    if value is None:
        return 0
    if value == "never":
        return -1
    from orchestration.model.rollouts import seconds

    try:
        return max(1, int(seconds(value, "--approval-timeout")))
    except Exception as err:  # noqa: BLE001 - a person's typo: say what is expected
        raise click.BadParameter(f"{value!r}: a duration (30m, 2h) or never", param_hint="--approval-timeout") from err


approval_timeout_option = click.option(
    "--approval-timeout", default=None, metavar="DURATION|never",
    help="Reject a change nobody approved or rejected within this long (30m, 2h); never: it waits (the default).")
# How long `task terminate --wait` waits for the task to end.
TERMINATE_WAIT = 300.0
FINISHED = {
    pb.TASK_STATUS_COMPLETED: "completed",
    pb.TASK_STATUS_FAILED: "failed",
    pb.TASK_STATUS_TIMEOUT: "timed out",
    pb.TASK_STATUS_TERMINATED: "terminated",
}


def progress_line(summary: gw.SummarizeSolutionResponse) -> str:
    """Instances in their target state over the total, per element."""
    done: dict[str, list[int]] = {}
    for cluster in summary.clusters:
        counts = done.setdefault(cluster.element, [0, 0])
        counts[0] += cluster.at_target
        counts[1] += cluster.instances
    return ", ".join(f"{element} {at}/{total}" for element, (at, total) in done.items()) or "no instances"


# Progress is read every 0.5 s, or less often when a read takes long (a large
# solution's): reading it takes at most this share of the time, so that
# following a change does not slow it down (a read of 10,000 instances costs
# the gateway and NATS about 0.25 s of CPU, of 1,000 about 35 ms).
READ_SHARE = 0.1


def next_read(interval: float, took: float) -> float:
    """Seconds until the next progress read, after one that took `took`."""
    return max(interval, took / READ_SHARE)


# Events that end a task, and the status each means.
ENDS = {
    pb.EVENT_TYPE_COMPLETION: pb.TASK_STATUS_COMPLETED,
    pb.EVENT_TYPE_FAILURE: pb.TASK_STATUS_FAILED,
    pb.EVENT_TYPE_TIMEOUT: pb.TASK_STATUS_TIMEOUT,
    pb.EVENT_TYPE_TERMINATION: pb.TASK_STATUS_TERMINATED,
}


class _End:
    """The task's end as its end event told it: set as soon as the event
    comes over WatchEvents (a server-side stream of that task's events only)."""

    def __init__(self) -> None:
        self.seen = threading.Event()
        self.status: pb.TaskStatus = pb.TASK_STATUS_UNSPECIFIED
        self.error = ""


def _end_of(gateway: Gateway, domain: str, task: str) -> tuple[_End, grpc.Future]:
    """The task's end, followed on a thread, and the call to cancel."""
    end = _End()
    call = gateway.automation.WatchEvents(gw.WatchEventsRequest(domain=domain, task=task), metadata=gateway.metadata)

    def follow() -> None:
        try:
            for item in call:
                status = ENDS.get(item.event.type)
                if status is not None and item.event.task == task:
                    end.status, end.error = status, item.event.comment
                    end.seen.set()
                    return
        except grpc.RpcError:
            return  # cancelled, or the gateway went away: the polling below still sees the end

    threading.Thread(target=follow, name="watch end", daemon=True).start()
    return end, call


def wait_for(gateway: Gateway, domain: str, solution: str, task: str, interval: float = 0.5) -> None:
    """Show progress until the task ends (exit 0 if it completed, 1
    otherwise) or its solution is paused with it (exit 0: it waits for an operator).
    Progress is read every `interval` (less often when a read takes long:
    `next_read`); the end is taken from the task's end
    event as soon as it comes (its records are stored by then), else from
    the task record."""
    end, call = _end_of(gateway, domain, task)
    try:
        _follow(gateway, domain, solution, task, interval, end)
    finally:
        call.cancel()


def _follow(gateway: Gateway, domain: str, solution: str, task: str, interval: float, end: _End,
            exit_on_failure: bool = True) -> None:
    tty = sys.stderr.isatty()
    last = ""
    while True:
        started = time.monotonic()
        if end.seen.is_set():
            status, error = end.status, end.error
        else:
            root = gateway.call(gateway.automation.RetrieveTask, gw.RetrieveTaskRequest(domain=domain, task=task)).task
            status, error = root.status, root.error
        paused: pb.SolutionPause | None = None
        try:
            # A summary, not the solution: small whatever the number of instances.
            summary = gateway.call(gateway.solutions.SummarizeSolution, gw.SummarizeSolutionRequest(domain=domain, solution=solution))
            line = progress_line(summary)
            if summary.HasField("pause") and summary.pause.task == task and status not in FINISHED:
                paused = summary.pause
        except grpc.RpcError as err:
            if err.code() != grpc.StatusCode.NOT_FOUND:  # type: ignore[attr-defined]
                raise
            line = "waiting for a dispatcher" if status == pb.TASK_STATUS_INITIAL else "solution removed"
        shown = f"[{'paused' if paused else pb.TaskStatus.Name(status).removeprefix('TASK_STATUS_').lower()}] {line}"
        if shown != last:
            click.echo(("\r" if tty else "") + shown + ("" if tty else "\n"), err=True, nl=False)
            last = shown
        if paused is not None:
            # The change waits for an operator (a pause, or a rollout's approval): say so and return.
            if tty:
                click.echo("", err=True)
            why = f": {paused.reason}" if paused.reason else ""
            click.echo(f"task {task} paused by {paused.actor}{why}; `orch solution resume {domain} {solution}` "
                       "goes on", err=True)
            return
        if status in FINISHED:
            if tty:
                click.echo("", err=True)
            if status == pb.TASK_STATUS_COMPLETED:
                click.echo(f"task {task} completed", err=True)
                return
            click.echo(f"error: task {task} {FINISHED[status]}: {error}", err=True)
            if not exit_on_failure:
                return
            if status == pb.TASK_STATUS_FAILED:
                _follow_rollback(gateway, domain, solution, task, interval)
            sys.exit(1)
        end.seen.wait(next_read(interval, time.monotonic() - started))


# How long `--wait` looks for the rollback a failure policy starts after a failed change.
ROLLBACK_APPEARS = 10.0


def _follow_rollback(gateway: Gateway, domain: str, solution: str, task: str, interval: float) -> None:
    """After a failed change of a solution whose failure policy is rollback:
    follow the rollback the engine starts by itself to its end (the command
    still exits 1: the change asked for failed)."""
    give_up = time.monotonic() + ROLLBACK_APPEARS
    while True:
        listed = gateway.call(gateway.solutions.ListRevisions,
                              gw.ListRevisionsRequest(domain=domain, solution=solution)).revisions
        failed = next((r for r in listed if r.task == task), None)
        if failed is None or failed.desired.on_failure != pb.FAILURE_POLICY_ROLLBACK or failed.change == "rollback":
            return
        rollback = next((r for r in listed if r.change == "rollback" and r.reason.startswith(f"revision {failed.number} failed")),
                        None)
        if rollback is not None:
            click.echo(f"rolling back to revision {rollback.restores} (revision {rollback.number}, task {rollback.task})",
                       err=True)
            end, call = _end_of(gateway, domain, rollback.task)
            try:
                _follow(gateway, domain, solution, rollback.task, interval, end, exit_on_failure=False)
            finally:
                call.cancel()
            return
        if time.monotonic() > give_up:
            return
        time.sleep(0.1)


def submitted(gateway: Gateway, domain: str, solution: str, task: str, wait: bool) -> None:
    """Print the root task id of an accepted request; with `wait`, follow it to its end."""
    click.echo(task)
    if wait:
        wait_for(gateway, domain, solution, task)


def _started(output: str, task: str) -> None:
    if output == "json":
        click.echo(json.dumps({"task": task}))
    else:
        click.echo(task)


def _sizes(values: tuple[str, ...]) -> dict[str, int]:
    """--size ELEMENT/CLUSTER=N options as the request's map."""
    sizes = {}
    for value in values:
        key, sep, number = value.partition("=")
        if not sep or "/" not in key or not number.strip().isdigit() or int(number) >= 2**31:
            raise click.BadParameter(f"{value!r}: expected ELEMENT/CLUSTER=N with N a size, e.g. app/V1.0.0=3",
                                     param_hint="--size")
        sizes[key.strip()] = int(number)
    return sizes


size_option = click.option(
    "--size", "sizes", multiple=True, metavar="ELEMENT/CLUSTER=N",
    help="A cluster's size instead of the architecture's (repeat; within its min..max).")


@click.command("deploy")
@click.argument("domain")
@click.argument("architecture")
@click.argument("version")
@click.option("--solution", default="", help="Solution name (default: the architecture's name).")
@size_option
@click.option("--on-failure", type=click.Choice(list(POLICIES)), default=None,
              help="When a change of the solution fails: hold it where it stopped, or roll it back to the last "
                   "revision that succeeded (default: as it is; hold for a new solution).")
@click.option("--force", is_flag=True, help="Deploy even what a revision marked bad (failed and rolled back) asked for.")
@click.option("--adopt", is_flag=True,
              help="Make instances by taking over resources that already exist and match them (as their "
                   "component's configuration says) instead of making new ones; the same as `orch solution adopt`.")
@approval_option
@approval_timeout_option
@click.option("--wait", is_flag=True, help="Show progress until the task ends.")
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text", show_default=True)
@request_id_option
@reason_option
@pass_settings
def deploy(settings: Settings, domain: str, architecture: str, version: str, solution: str, sizes: tuple[str, ...],
           on_failure: str | None, force: bool, adopt: bool, approval: str | None, approval_timeout: str | None,
           wait: bool, output: str, request_id: str, reason: str) -> None:
    """Create or update a solution from an architecture version; prints the root task id."""
    gateway = settings.gateway()
    request = gw.DeploySolutionRequest(domain=domain, architecture=architecture, version=version, solution=solution,
                                      request_id=request_id, sizes=_sizes(sizes), reason=reason, force=force,
                                      on_failure=POLICIES[on_failure] if on_failure else pb.FAILURE_POLICY_UNSPECIFIED,
                                      approval=APPROVALS[approval] if approval else pb.APPROVAL_UNSPECIFIED,
                                      approval_timeout_seconds=timeout_seconds(approval_timeout), adopt=adopt)
    task = gateway.submit(gateway.solutions.DeploySolution, request).task
    _started(output, task)
    if wait:
        wait_for(gateway, domain, solution or architecture, task)


# `orch solution adopt`: deploy --adopt under the name an operator looks for.
adopt = click.Command(
    "adopt", callback=deploy.callback, params=[p for p in deploy.params if p.name != "adopt"] + [
        click.Option(["--adopt"], is_flag=True, default=True, hidden=True)],
    help="Deploy a solution by taking over what already runs: each instance's controller claims a resource "
         "that exists and matches it (by tag, name or a query in the component's configuration) instead of "
         "making a new one; instances with no match are made new. Prints the root task id.",
    short_help="Deploy by taking over resources that already exist.")


@click.command("plan")
@click.argument("domain")
@click.argument("architecture")
@click.argument("version")
@click.option("--solution", default="", help="Solution name (default: the architecture's name).")
@size_option
@click.option("--preview", is_flag=True,
              help="Ask each planned operation's controller what it would change (its dry run, e.g. a playbook's "
                   "--check --diff), for the first 50 operations; changes nothing.")
@output_option
@pass_settings
def plan(settings: Settings, domain: str, architecture: str, version: str, solution: str, sizes: tuple[str, ...],
         preview: bool, output: str) -> None:
    """The transitions a deploy would run (per instance, with what each waits for); runs nothing."""
    gateway = settings.gateway()
    request = gw.PlanSolutionRequest(domain=domain, architecture=architecture, version=version, solution=solution,
                                     sizes=_sizes(sizes), preview=preview)
    show_plan(output, gateway.call(gateway.solutions.PlanSolution, request).transitions)


def show_plan(output: str, transitions: Sequence[gw.PlannedTransition]) -> None:
    """Planned transitions, one per line: what each instance would do and what
    it waits for; then each previewed one's dry run, under a header line."""
    data = [
        {"Element": t.element, "Cluster": t.cluster, "Instance": t.instance,
         "Transition": TRANSITION_NAMES.get(t.transition, ""), "WaitsFor": list(t.waits_for),
         **({"Preview": t.preview} if t.previewed else {})}
        for t in transitions
    ]
    rows = [[d["Element"], d["Cluster"], d["Instance"], d["Transition"], ", ".join(d["WaitsFor"]) or "-"] for d in data]
    emit(output, data, ["ELEMENT", "CLUSTER", "INSTANCE", "TRANSITION", "WAITS FOR"], rows)
    if output != "json" and any(t.previewed for t in transitions):
        for d in data:
            if "Preview" in d:
                click.echo(f"\n--- {d['Element']}/{d['Cluster']} {d['Instance']} {d['Transition']}")
                click.echo(str(d["Preview"]).rstrip() or "(the controller cannot tell)")
        if not all(t.previewed for t in transitions):
            click.echo(f"\n(previewed: the first {sum(t.previewed for t in transitions)} of {len(transitions)} operations)")


@click.command("delete")
@click.argument("domain")
@click.argument("solution")
@click.option("--wait", is_flag=True, help="Show progress until the teardown ends.")
@request_id_option
@reason_option
@pass_settings
def delete(settings: Settings, domain: str, solution: str, wait: bool, request_id: str, reason: str) -> None:
    """Tear a solution down (reverse dependency order), then remove its records."""
    gateway = settings.gateway()
    task = gateway.submit(gateway.solutions.RemoveSolution, gw.RemoveSolutionRequest(domain=domain, solution=solution, request_id=request_id,
                                                                                   reason=reason)).task
    submitted(gateway, domain, solution, task, wait)


@click.command("set")
@click.argument("domain")
@click.argument("solution")
@click.option("--state", type=TARGET_STATES, required=True, help="New target state of every cluster.")
@click.option("--wait", is_flag=True, help="Show progress until the task ends.")
@request_id_option
@reason_option
@pass_settings
def solution_set(settings: Settings, domain: str, solution: str, state: str, wait: bool, request_id: str,
                 reason: str) -> None:
    """Send a whole solution to another state (stops and destroys go in reverse dependency order)."""
    gateway = settings.gateway()
    request = gw.UpdateSolutionRequest(domain=domain, solution=solution, state=STATES_BY_NAME[state], request_id=request_id,
                                       reason=reason)
    task = gateway.submit(gateway.solutions.UpdateSolution, request).task
    submitted(gateway, domain, solution, task, wait)


@click.command("resume")
@click.argument("domain")
@click.argument("solution")
@click.option("--wait", is_flag=True, help="Show progress until the task ends.")
@request_id_option
@reason_option
@pass_settings
def solution_resume(settings: Settings, domain: str, solution: str, wait: bool, request_id: str, reason: str) -> None:
    """End a pause, or a hold (a terminated task, or the monitor giving up), and converge the solution to its
    intent: a paused change goes on where it stopped."""
    gateway = settings.gateway()
    reply = gateway.submit(gateway.solutions.ResumeSolution, gw.ResumeSolutionRequest(
        domain=domain, solution=solution, request_id=request_id, reason=reason))
    if reply.HasField("ended_pause"):
        click.echo(f"pause by {reply.ended_pause.actor} ended", err=True)
    submitted(gateway, domain, solution, reply.task, wait)


# How long `solution pause --wait` waits for the running change to stop starting operations.
PAUSE_WAIT = 30.0


@click.command("pause")
@click.argument("domain")
@click.argument("solution")
@click.option("--wait", is_flag=True, help="Return once the running change (if any) starts no more operations.")
@reason_option
@pass_settings
def solution_pause(settings: Settings, domain: str, solution: str, wait: bool, reason: str) -> None:
    """Start no operation of the solution until it is resumed: its running change stops at each instance's
    next lifecycle boundary (operations in flight finish), later changes wait; the monitor leaves it alone."""
    gateway = settings.gateway()
    pause = gateway.call(gateway.solutions.PauseSolution,
                         gw.PauseSolutionRequest(domain=domain, solution=solution, reason=reason)).pause
    click.echo(f"paused by {pause.actor}" + (f": {pause.reason}" if pause.reason else ""))
    if not wait:
        return
    give_up = time.monotonic() + PAUSE_WAIT
    while time.monotonic() < give_up:
        summary = gateway.call(gateway.solutions.SummarizeSolution,
                               gw.SummarizeSolutionRequest(domain=domain, solution=solution))
        if not summary.HasField("pause"):
            raise click.ClickException("the solution was resumed meanwhile")
        if not summary.HasField("running") or summary.pause.task == summary.running.uuid:
            running = f"task {summary.running.uuid} starts" if summary.HasField("running") else "no change runs; none"
            click.echo(f"{running} no more operations until `orch solution resume {domain} {solution}`")
            return
        time.sleep(0.1)
    raise click.ClickException(f"the running change has not stopped after {PAUSE_WAIT:.0f} s (is a dispatcher up?)")


@click.group()
def cluster() -> None:
    """Clusters of a solution."""


@cluster.command("set")
@click.argument("domain")
@click.argument("solution")
@click.argument("element")
@click.argument("cluster_name", metavar="CLUSTER")
@click.option("--size", type=int, default=None, help="New number of instances (min..max).")
@click.option("--state", type=TARGET_STATES, default=None, help="New target state.")
@click.option("--wait", is_flag=True, help="Show progress until the task ends.")
@request_id_option
@reason_option
@pass_settings
def cluster_set(settings: Settings, domain: str, solution: str, element: str, cluster_name: str, size: int | None,
                state: str | None, wait: bool, request_id: str, reason: str) -> None:
    """Resize a cluster and/or send it to another state."""
    gateway = settings.gateway()
    request = gw.UpdateClusterRequest(domain=domain, solution=solution, element=element, cluster=cluster_name,
                                      state=STATES_BY_NAME[state] if state else pb.STATE_UNSPECIFIED, request_id=request_id,
                                      reason=reason)
    if size is not None:
        request.size = size
    task = gateway.submit(gateway.solutions.UpdateCluster, request).task
    submitted(gateway, domain, solution, task, wait)


@click.group()
def instance() -> None:
    """Instances of a solution."""


@instance.command("set")
@click.argument("domain")
@click.argument("solution")
@click.argument("element")
@click.argument("cluster_name", metavar="CLUSTER")
@click.argument("uuid")
@click.option("--state", type=TARGET_STATES, required=True, help="New target state.")
@click.option("--wait", is_flag=True, help="Show progress until the task ends.")
@request_id_option
@reason_option
@pass_settings
def instance_set(settings: Settings, domain: str, solution: str, element: str, cluster_name: str, uuid: str,
                 state: str, wait: bool, request_id: str, reason: str) -> None:
    """Send one instance to another state."""
    gateway = settings.gateway()
    request = gw.UpdateInstanceRequest(domain=domain, solution=solution, element=element, cluster=cluster_name,
                                       instance=uuid, state=STATES_BY_NAME[state], request_id=request_id, reason=reason)
    task = gateway.submit(gateway.solutions.UpdateInstance, request).task
    submitted(gateway, domain, solution, task, wait)


@click.command("terminate")
@click.argument("task_id", metavar="ID")
@click.option("--domain", "domain_name", default="", help="Domain of the task (found when omitted).")
@click.option("--wait", is_flag=True, help="Return once the task has ended (at most 5 minutes); for a root task, "
                                           "its solution is then free for the next request.")
@reason_option
@pass_settings
def terminate(settings: Settings, task_id: str, domain_name: str, wait: bool, reason: str) -> None:
    """Terminate a running task and its subtree (asking again is harmless: it is one termination)."""
    gateway = settings.gateway()
    gateway.call(gateway.automation.TerminateTask, gw.TerminateTaskRequest(domain=domain_name, task=task_id, reason=reason))
    click.echo(f"termination of {task_id} requested")
    if not wait:
        return
    give_up = time.monotonic() + TERMINATE_WAIT
    while time.monotonic() < give_up:
        task = gateway.call(gateway.automation.RetrieveTask, gw.RetrieveTaskRequest(domain=domain_name, task=task_id)).task
        if task.status in FINISHED:
            click.echo(f"task {task_id} {FINISHED[task.status]}" + (f": {task.error}" if task.error else ""))
            return
        time.sleep(0.1)
    raise click.ClickException(f"task {task_id} has not ended after {TERMINATE_WAIT:.0f} s; "
                               f"`orch task get {task_id}` shows where it is")


def register(groups: dict[str, click.Group], root: click.Group) -> None:
    """Add the engine commands to the solution and task groups and to orch."""
    for command in (deploy, adopt, plan, delete, solution_set, solution_resume, solution_pause):
        groups["solution"].add_command(command)
    groups["task"].add_command(terminate)
    root.add_command(cluster)
    root.add_command(instance)
