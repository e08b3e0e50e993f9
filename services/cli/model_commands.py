"""Model commands: apply, domain, component, architecture, solution, task, event."""

from __future__ import annotations

import time
from pathlib import Path

import click

from cli.output import emit, output_option
from cli.settings import Settings, pass_settings
from orchestration.model.lifecycle import TASK_ENDED, hold_name, state_name, task_status_name
from orchestration.v1 import gateway_pb2 as gw
from orchestration.v1 import model_pb2 as pb


def _enum(enum: object, value: int, prefix: str) -> str:
    return enum.Name(value).removeprefix(prefix).lower()  # type: ignore[attr-defined]




def duration(t: pb.Task) -> str:
    """How long a task ran (so far, while it runs)."""
    if not t.created:
        return "-"
    end = t.updated if t.status in TASK_ENDED else time.time_ns()
    return f"{max(0, end - t.created) / 1e9:.3f}s"


def task_row(t: pb.Task) -> list[str]:
    return [
        t.uuid,
        _enum(pb.TaskType, t.type, "TASK_TYPE_"),
        _enum(pb.TaskStatus, t.status, "TASK_STATUS_"),
        duration(t),
        t.solution,
        "/".join(x for x in (t.element, t.cluster, t.instance) if x),
        t.parent or "-",
        t.error,
    ]


TASK_HEADERS = ["TASK", "TYPE", "STATUS", "DURATION", "SOLUTION", "TARGET", "PARENT", "ERROR"]


@click.command()
@click.option("-f", "--file", "path", required=True, type=click.Path(exists=True, dir_okay=False), help="YAML file.")
@click.option("--domain", default="", help="Domain of a single component or architecture file.")
@pass_settings
def apply(settings: Settings, path: str, domain: str) -> None:
    """Validate a model, domain, component or architecture file and store all of it (or nothing)."""
    try:
        text = Path(path).read_bytes().decode("utf-8", errors="strict")
    except UnicodeDecodeError as err:
        # A protobuf string carries UTF-8 only: say so here rather than fail in the gRPC library.
        raise click.ClickException(f"{path}: not valid UTF-8 (byte {err.start}); model files are UTF-8 YAML") from None
    gateway = settings.gateway()
    result = gateway.call(gateway.admin.Apply, gw.ApplyRequest(document=text, domain=domain))
    kind = gw.DocumentKind.Name(result.kind).removeprefix("DOCUMENT_KIND_").lower()
    click.echo(f"applied {kind} {path}: {len(result.stored)} stored, {len(result.unchanged)} unchanged")
    for label in result.stored:
        click.echo(f"  stored {label}")


@click.group()
def domain() -> None:
    """Domains."""


@domain.command("list")
@output_option
@pass_settings
def domain_list(settings: Settings, output: str) -> None:
    """List domains."""
    gateway = settings.gateway()
    names = list(gateway.call(gateway.admin.ListDomains, gw.ListDomainsRequest()).domains)
    emit(output, names, ["DOMAIN"], [[n] for n in names])


@domain.command("get")
@click.argument("name")
@output_option
@pass_settings
def domain_get(settings: Settings, name: str, output: str) -> None:
    """Show a domain."""
    gateway = settings.gateway()
    d = gateway.call(gateway.admin.RetrieveDomain, gw.RetrieveDomainRequest(domain=name)).domain
    rows = [
        ["components", len(d.components)],
        ["architectures", len(d.architectures)],
        ["solutions", len(d.solutions)],
        ["tasks", len(d.tasks)],
        ["events", len(d.events)],
    ]
    emit(output, d, [f"DOMAIN {d.name}", "COUNT"], rows)


@domain.command("policy")
@click.argument("name")
@click.option("--self-approval", type=click.Choice(["allowed", "forbidden"]), default=None,
              help="Whether whoever asked for a change may approve or reject it too (forbidden by default: "
                   "another approver decides). Without options: show the policy.")
@click.option("--reason", default="", help="Why (one line, at most 500 characters): kept with the policy and in the audit trail.")
@output_option
@pass_settings
def domain_policy(settings: Settings, name: str, self_approval: str | None, reason: str, output: str) -> None:
    """Show or set a domain's access policy (a domain admin sets it)."""
    gateway = settings.gateway()
    if self_approval is None:
        policy = gateway.call(gateway.access.GetDomainPolicy, gw.GetDomainPolicyRequest(domain=name)).policy
    else:
        policy = gateway.call(gateway.access.SetDomainPolicy, gw.SetDomainPolicyRequest(
            domain=name, self_approval=self_approval == "allowed", reason=reason)).policy
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(policy.updated_unix_ms / 1000)) if policy.actor else "-"
    rows = [["self-approval", "allowed" if policy.self_approval else "forbidden"],
            ["set by", policy.actor or "- (defaults)"], ["since", since], ["reason", policy.reason or "-"]]
    emit(output, policy, [f"DOMAIN {policy.domain}", "POLICY"], rows)


@domain.command("delete")
@click.argument("name")
@click.option("--force", is_flag=True, help="Delete even while it has solutions (their real resources are abandoned).")
@pass_settings
def domain_delete(settings: Settings, name: str, force: bool) -> None:
    """Delete a domain and everything in it (refused while it has solutions, unless --force)."""
    gateway = settings.gateway()
    gateway.call(gateway.admin.RemoveDomain, gw.RemoveDomainRequest(domain=name, force=force))
    click.echo(f"deleted domain {name}")


@click.group()
def component() -> None:
    """Catalog components."""


@component.command("list")
@click.argument("domain_name", metavar="DOMAIN")
@output_option
@pass_settings
def component_list(settings: Settings, domain_name: str, output: str) -> None:
    """List the components of a domain."""
    gateway = settings.gateway()
    items = list(gateway.call(gateway.catalog.ListComponents, gw.ListComponentsRequest(domain=domain_name)).components)
    rows = [[c.name, c.version, c.controller, ", ".join(d.name for d in c.dependencies)] for c in items]
    emit(output, items, ["COMPONENT", "VERSION", "CONTROLLER", "DEPENDENCIES"], rows)


@component.command("get")
@click.argument("domain_name", metavar="DOMAIN")
@click.argument("name")
@click.argument("version")
@click.option("-o", "--output", type=click.Choice(["yaml", "json"]), default="yaml", show_default=True)
@pass_settings
def component_get(settings: Settings, domain_name: str, name: str, version: str, output: str) -> None:
    """Show one component version."""
    gateway = settings.gateway()
    request = gw.RetrieveComponentRequest(domain=domain_name, component=name, version=version)
    emit(output, gateway.call(gateway.catalog.RetrieveComponent, request).component)


@component.command("delete")
@click.argument("domain_name", metavar="DOMAIN")
@click.argument("name")
@click.argument("version")
@pass_settings
def component_delete(settings: Settings, domain_name: str, name: str, version: str) -> None:
    """Delete one component version."""
    gateway = settings.gateway()
    gateway.call(gateway.catalog.RemoveComponent, gw.RemoveComponentRequest(domain=domain_name, component=name, version=version))
    click.echo(f"deleted component {name} {version}")


@click.group()
def architecture() -> None:
    """Architectures."""


@architecture.command("list")
@click.argument("domain_name", metavar="DOMAIN")
@output_option
@pass_settings
def architecture_list(settings: Settings, domain_name: str, output: str) -> None:
    """List the architectures of a domain."""
    gateway = settings.gateway()
    request = gw.ListArchitecturesRequest(domain=domain_name)
    items = list(gateway.call(gateway.architectures.ListArchitectures, request).architectures)
    rows = [[a.name, a.version, len(a.elements)] for a in items]
    emit(output, items, ["ARCHITECTURE", "VERSION", "ELEMENTS"], rows)


@architecture.command("get")
@click.argument("domain_name", metavar="DOMAIN")
@click.argument("name")
@click.argument("version")
@click.option("-o", "--output", type=click.Choice(["yaml", "json"]), default="yaml", show_default=True)
@pass_settings
def architecture_get(settings: Settings, domain_name: str, name: str, version: str, output: str) -> None:
    """Show one architecture version."""
    gateway = settings.gateway()
    request = gw.RetrieveArchitectureRequest(domain=domain_name, architecture=name, version=version)
    emit(output, gateway.call(gateway.architectures.RetrieveArchitecture, request).architecture)


@architecture.command("delete")
@click.argument("domain_name", metavar="DOMAIN")
@click.argument("name")
@click.argument("version")
@pass_settings
def architecture_delete(settings: Settings, domain_name: str, name: str, version: str) -> None:
    """Delete one architecture version."""
    gateway = settings.gateway()
    request = gw.RemoveArchitectureRequest(domain=domain_name, architecture=name, version=version)
    gateway.call(gateway.architectures.RemoveArchitecture, request)
    click.echo(f"deleted architecture {name} {version}")


@click.group()
def solution() -> None:
    """Solutions."""


@solution.command("list")
@click.argument("domain_name", metavar="DOMAIN")
@output_option
@pass_settings
def solution_list(settings: Settings, domain_name: str, output: str) -> None:
    """List the solutions of a domain."""
    gateway = settings.gateway()
    items = list(gateway.call(gateway.solutions.ListSolutions, gw.ListSolutionsRequest(domain=domain_name)).solutions)
    rows = [[s.name, s.architecture, s.version, state_name(s.target), state_name(s.state), hold_label(s.hold)] for s in items]
    emit(output, items, ["SOLUTION", "ARCHITECTURE", "VERSION", "TARGET", "STATE", "HOLD"], rows)


def hold_label(hold: pb.SolutionHold) -> str:
    """"held", "degraded" or "-" (running normally)."""
    return hold_name(hold.kind) or "-"


@solution.command("status")
@click.argument("domain_name", metavar="DOMAIN")
@click.argument("name")
@output_option
@pass_settings
def solution_status(settings: Settings, domain_name: str, name: str, output: str) -> None:
    """Count a solution's instances per cluster, each once: at its target by
    state, failed, or in transition (not at its target); with the state of
    each cluster and of the whole by the same rule the console and the bus use."""
    gateway = settings.gateway()
    summary = gateway.call(gateway.solutions.SummarizeSolution, gw.SummarizeSolutionRequest(domain=domain_name, solution=name))
    rows = [[c.element, c.cluster, c.size, state_name(c.target), _label(c.label), c.instances, c.active, c.inactive,
             c.initial, c.failed, c.in_transition] for c in [*summary.clusters, summary.total]]
    rows[-1][:3] = ["(solution)", "", ""]
    document: object = rows
    if output != "table":
        from google.protobuf.json_format import MessageToDict  # the summary is no model-file structure

        document = MessageToDict(summary, preserving_proto_field_name=True)
    emit(output, document, ["ELEMENT", "CLUSTER", "SIZE", "TARGET", "STATE", "INSTANCES", "ACTIVE", "INACTIVE", "INITIAL",
                           "FAILED", "IN TRANSITION"], rows)
    if output == "table":
        _say_hold(summary.solution, domain_name, name)
    if output == "table" and summary.HasField("pause"):
        click.echo(_paused(summary.pause, domain_name, name))
    if output == "table" and summary.HasField("running"):
        click.echo(f"busy with task {summary.running.uuid} ({task_status_name(summary.running.status)}, "
                   f"by {summary.running.actor})")


def _paused(pause: pb.SolutionPause, domain: str, name: str) -> str:
    """Who paused the solution, since when, why, and whether its change has stopped."""
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(pause.since_unix_ms / 1000))
    why = f": {pause.reason}" if pause.reason else ""
    stopped = (f"; task {pause.task} starts no more operations" if pause.acknowledged_unix_ms
               else "; no change has run since")
    return f"paused since {since} by {pause.actor}{why}{stopped}; `orch solution resume {domain} {name}` goes on"


def _label(label: str) -> str:
    return label.replace("_", " ")


@solution.command("get")
@click.argument("domain_name", metavar="DOMAIN")
@click.argument("name")
@output_option
@pass_settings
def solution_get(settings: Settings, domain_name: str, name: str, output: str) -> None:
    """Show a solution with its elements, clusters and instances."""
    gateway = settings.gateway()
    s = gateway.read_solution(domain_name, name)
    rows = []
    for e in s.elements:
        for c in e.clusters:
            for i in c.instances:
                rows.append([e.name, c.version, i.uuid, state_name(i.target), state_name(i.state), i.endpoint])
            if not c.instances:
                rows.append([e.name, c.version, "-", state_name(c.target), state_name(c.state), c.endpoint])
    emit(output, s, ["ELEMENT", "CLUSTER", "INSTANCE", "TARGET", "STATE", "ENDPOINT"], rows)
    if output == "table":
        _say_hold(s, domain_name, name)


def _say_hold(s: pb.Solution, domain_name: str, name: str) -> None:
    """What holds a solution, since when, by whom and why, and how to go on."""
    if not s.hold.kind:
        return
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(s.hold.since_unix_ms / 1000))
    task = f", task {s.hold.task}" if s.hold.task else ""
    click.echo(f"{hold_label(s.hold)} since {since} by {s.hold.actor}{task}: {s.hold.reason}")
    click.echo(f"the monitor leaves it alone until a request for it: `orch solution resume {domain_name} {name}`")


@click.group()
def task() -> None:
    """Tasks."""


@task.command("list")
@click.argument("domain_name", metavar="DOMAIN")
@click.option("--solution", default="", help="Only tasks of this solution.")
@click.option("--request", "request_id", default="", help="Only tasks of this request.")
@click.option("--roots", is_flag=True, help="Only root tasks.")
@output_option
@pass_settings
def task_list(settings: Settings, domain_name: str, solution: str, request_id: str, roots: bool, output: str) -> None:
    """List the tasks of a domain."""
    gateway = settings.gateway()
    request = gw.ListTasksRequest(domain=domain_name, solution=solution, request=request_id, roots_only=roots)
    items = list(gateway.call(gateway.automation.ListTasks, request).tasks)
    emit(output, items, TASK_HEADERS, [task_row(t) for t in items])


@task.command("get")
@click.argument("task_id", metavar="ID")
@click.option("--domain", "domain_name", default="", help="Domain of the task (found when omitted).")
@click.option("--tree", is_flag=True, help="Show the whole task tree.")
@output_option
@pass_settings
def task_get(settings: Settings, task_id: str, domain_name: str, tree: bool, output: str) -> None:
    """Show a task (and its tree)."""
    gateway = settings.gateway()
    reply = gateway.call(gateway.automation.RetrieveTask, gw.RetrieveTaskRequest(domain=domain_name, task=task_id, tree=tree))
    tasks = [reply.task, *reply.subtasks]
    emit(output, tasks if tree else reply.task, TASK_HEADERS, [task_row(t) for t in tasks])
    summary = reply.task.summary
    if output == "table" and summary.pruned_unix_ms:
        click.echo(f"its tree was pruned (ORCH_TREE_DAYS): {summary.tasks} subtasks, {summary.completed} completed, "
                   f"{summary.failed} failed, {summary.stopped} timed out or terminated")


@task.command("trace")
@click.argument("task_id", metavar="ID")
@click.option("--domain", "domain_name", default="", help="Domain of the task (found when omitted).")
@pass_settings
def task_trace(settings: Settings, task_id: str, domain_name: str) -> None:
    """Print the trace id of a task's request (look it up in Jaeger)."""
    gateway = settings.gateway()
    found = gateway.call(gateway.automation.RetrieveTask, gw.RetrieveTaskRequest(domain=domain_name, task=task_id)).task
    if not found.trace:
        raise click.ClickException(f"task {task_id} has no trace id (it was not made by a traced request)")
    click.echo(found.trace)


@click.group()
def event() -> None:
    """Task events."""


@event.command("list")
@click.argument("domain_name", metavar="DOMAIN")
@click.option("--task", "task_id", default="", help="Only events of this task.")
@output_option
@pass_settings
def event_list(settings: Settings, domain_name: str, task_id: str, output: str) -> None:
    """List the events of a domain (or of one task)."""
    gateway = settings.gateway()
    items = list(gateway.call(gateway.automation.ListEvents, gw.ListEventsRequest(domain=domain_name, task=task_id)).events)
    rows = [[e.uuid, e.time, _enum(pb.EventType, e.type, "EVENT_TYPE_"), e.task, e.source, e.comment] for e in items]
    emit(output, items, ["EVENT", "TIME", "TYPE", "TASK", "SOURCE", "COMMENT"], rows)


def register(group: click.Group) -> None:
    """Add the model commands to the orch group."""
    for command in (apply, domain, component, architecture, solution, task, event):
        group.add_command(command)
