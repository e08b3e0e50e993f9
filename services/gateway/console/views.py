"""What each console view shows, as JSON: read and changed through the
gateway's servicers, each call admitted and audited by the gate as the same
call over gRPC would be (no rule of the engine is repeated here)."""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from typing import Any

from gateway.api.access import AccessGate
from orchestration.model.access import RIGHTS, Principal
from orchestration_sdk.status_errors import InvalidArgument, NotFound, PermissionDenied
from orchestration.model.lifecycle import (
    TASK_ENDED,
    TRANSITION_NAMES,
    event_type_name,
    hold_name,
    outcome_name,
    policy_name,
    state_name,
    task_status_name,
    task_type_name,
)
from orchestration.model.rollouts import strategy
from orchestration.store.pauses import ROLLOUT
from orchestration.v1 import gateway_pb2 as gw
from orchestration.v1 import model_pb2 as pb

Handler = Callable[[Any, Any], Awaitable[Any]]
PAGE = 50
EVENTS_SHOWN = 200
# Messages of the events stream the overview and the events view look at (newest).
OVERVIEW_WINDOW = 500
EVENTS_WINDOW = 10_000
# The task view lists at most this many tasks of a tree (read level by level:
# its root, element and cluster tasks come first), and draws one timeline row
# per instance up to TIMELINE_INSTANCES, one per cluster beyond: a tree of
# 10,000 instances was 7 MB of JSON, and a timeline of its first 400
# instances, all of one cluster.
TREE_ROWS = 2000
# What the events view filters on (fields of an event, equal to the value given).
EVENT_FILTERS = ("solution", "element", "cluster", "instance", "type", "state", "transition", "task")
TIMELINE_INSTANCES = 400
_STATES: dict[str, pb.State] = {"initial": pb.STATE_INITIAL, "inactive": pb.STATE_INACTIVE, "active": pb.STATE_ACTIVE}


def _state(value: int) -> str:
    return state_name(value)


def _ms(nanos: int) -> int:
    return nanos // 1_000_000


# The call each change of the console's solution page makes (for the audit of one refused before it).
ACTION_METHODS = {"deploy": "DeploySolution", "state": "UpdateSolution", "resize": "UpdateCluster",
                  "terminate": "TerminateTask", "resume": "ResumeSolution", "delete": "RemoveSolution"}


class Views:
    """The console's reads and actions for one caller at a time."""

    def __init__(self, gate: AccessGate, *servicers: object) -> None:
        self.gate = gate
        self.handlers: dict[str, Handler] = {}
        for servicer in servicers:
            for method in RIGHTS:
                handler = getattr(servicer, method, None)
                if handler is not None and method not in self.handlers:
                    self.handlers[method] = handler

    async def call(self, principal: Principal, method: str, request: Any) -> Any:
        return await self.gate.call(principal, method, self.handlers[method], request)

    async def visible_domains(self, who: Principal) -> list[str]:
        return list((await self.call(who, "ListDomains", gw.ListDomainsRequest())).domains)

    # ---- reads ------------------------------------------------------------

    async def overview(self, who: Principal) -> dict[str, Any]:
        domains = []
        for domain in await self.visible_domains(who):
            names = (await self.call(who, "ListSolutions", gw.ListSolutionsRequest(domain=domain))).solutions
            summaries = [await self.call(who, "SummarizeSolution", gw.SummarizeSolutionRequest(domain=domain, solution=s.name))
                         for s in names]
            events = (await self.call(who, "ListEvents", gw.ListEventsRequest(domain=domain, latest=OVERVIEW_WINDOW))).events
            latest = sorted(events, key=lambda e: e.time)[-10:]
            domains.append({"name": domain, "solutions": [_solution_card(s) for s in summaries],
                            "running": [_task(s.running) for s in summaries if s.HasField("running")],
                            "events": [_event(e) for e in reversed(latest)]})
        return {"domains": domains}

    async def components(self, who: Principal, domain: str) -> dict[str, Any]:
        listed = (await self.call(who, "ListComponents", gw.ListComponentsRequest(domain=domain))).components
        found = [{"name": c.name, "version": c.version, "controller": c.controller,
                  "dependencies": [{"name": d.name, "type": _dependency_type(d.type), "component": d.component,
                                    "version": d.version} for d in c.dependencies]}
                 for c in sorted(listed, key=lambda c: (c.name, c.version))]
        architectures = (await self.call(who, "ListArchitectures", gw.ListArchitecturesRequest(domain=domain))).architectures
        return {"domain": domain, "components": found,
                "architectures": [{"name": a.name, "version": a.version} for a in sorted(architectures, key=lambda a: (a.name, a.version))]}

    async def architecture(self, who: Principal, domain: str, name: str, version: str) -> dict[str, Any]:
        found = (await self.call(who, "RetrieveArchitecture", gw.RetrieveArchitectureRequest(
            domain=domain, architecture=name, version=version))).architecture
        return _graph(domain, found)

    async def solution(self, who: Principal, domain: str, name: str) -> dict[str, Any]:
        summary = await self.call(who, "SummarizeSolution", gw.SummarizeSolutionRequest(domain=domain, solution=name))
        header = summary.solution
        architecture = pb.Architecture()
        if header.architecture and header.version:
            try:
                architecture = (await self.call(who, "RetrieveArchitecture", gw.RetrieveArchitectureRequest(
                    domain=domain, architecture=header.architecture, version=header.version))).architecture
            except NotFound:
                pass  # the architecture was removed since: the clusters are still shown
        return {**_solution_header(header), **_rolled_up(summary.total),
                "graph": _graph(domain, architecture) if architecture.name else {"elements": []},
                "rollouts": _rollouts(architecture, summary), "clusters": [
            {"element": c.element, "cluster": c.cluster, "target": _state(c.target), "size": c.size, **_rolled_up(c)}
            for c in summary.clusters],
            "running": _task(summary.running) if summary.HasField("running") else None,
            "pause": {"actor": summary.pause.actor, "reason": summary.pause.reason, "since_ms": summary.pause.since_unix_ms,
                      "acknowledged_ms": summary.pause.acknowledged_unix_ms, "task": summary.pause.task}
            if summary.HasField("pause") else None}

    async def history(self, who: Principal, domain: str, name: str) -> dict[str, Any]:
        """The solution's revisions, newest first."""
        found = (await self.call(who, "ListRevisions", gw.ListRevisionsRequest(domain=domain, solution=name))).revisions
        # Whether who asked for a change may decide on it too (read only when a change awaits a decision).
        waits = any(r.outcome == pb.REVISION_OUTCOME_AWAITING_APPROVAL for r in found)
        self_approval = waits and (await self.call(who, "GetDomainPolicy", gw.GetDomainPolicyRequest(domain=domain))).policy.self_approval
        return {"self_approval": self_approval, "revisions": [{
            "number": r.number, "change": r.change, "summary": r.summary, "actor": r.actor, "reason": r.reason,
            "created_ms": r.created_unix_ms, "ended_ms": r.ended_unix_ms, "outcome": outcome_name(r.outcome),
            "bad": r.bad, "error": r.error, "task": r.task, "restores": r.restores} for r in found]}

    async def diff(self, who: Principal, domain: str, name: str, older: int, newer: int) -> dict[str, Any]:
        request = gw.DiffRevisionsRequest(domain=domain, solution=name, to=newer)
        setattr(request, "from", older)
        return {"from": older, "to": newer, "changes": list((await self.call(who, "DiffRevisions", request)).changes)}

    async def tasks(self, who: Principal, domain: str, name: str) -> dict[str, Any]:
        """A solution's root tasks, newest first (read on demand: it scans the domain's tasks)."""
        roots = (await self.call(who, "ListTasks", gw.ListTasksRequest(domain=domain, solution=name, roots_only=True))).tasks
        return {"tasks": [_task(t) for t in sorted(roots, key=lambda t: t.created, reverse=True)[:20]]}

    async def instances(self, who: Principal, domain: str, name: str, element: str, cluster: str,
                        offset: int) -> dict[str, Any]:
        listed = (await self.call(who, "ListInstances", gw.ListInstancesRequest(
            domain=domain, solution=name, element=element, cluster=cluster))).instances
        page = listed[max(0, offset):max(0, offset) + PAGE]
        return {"total": len(listed), "offset": offset, "page": PAGE, "instances": [
            {"uuid": i.uuid, "state": _state(i.state), "target": _state(i.target), "endpoint": i.endpoint,
             "error": i.error} for i in page]}

    async def task(self, who: Principal, uuid: str) -> dict[str, Any]:
        for domain in await self.visible_domains(who):
            try:
                found = await self.call(who, "RetrieveTask", gw.RetrieveTaskRequest(domain=domain, task=uuid, tree=True))
            except NotFound:
                continue
            tasks = [found.task, *found.subtasks]
            return {"domain": domain, "root": _task(found.task), "total": len(tasks),
                    "tasks": [_task(t) for t in tasks[:TREE_ROWS]], "timeline": _timeline(tasks)}
        raise NotFound(f"task {uuid!r} not found in the domains this token may see")

    async def events(self, who: Principal, domain: str, filters: dict[str, str]) -> dict[str, Any]:
        """The domain's latest events (a task's all, when one is named), newest
        first, each with what it is about; `filters` (EVENT_FILTERS) keep
        those whose field equals the value given (a prefix, for the task)."""
        task = filters.get("task", "")
        request = gw.ListEventsRequest(domain=domain, task=task if len(task) == 36 else "",
                                       latest=0 if len(task) == 36 else EVENTS_WINDOW)
        events = [_event(e) for e in (await self.call(who, "ListEvents", request)).events]
        wanted = {key: value for key, value in filters.items() if value}
        events = [e for e in events if all(e[key].startswith(value) if key == "task" else e[key] == value
                                           for key, value in wanted.items())]
        shown = sorted(events, key=lambda e: e["time_ms"])[-EVENTS_SHOWN:]
        return {"domain": domain, "total": len(events), "events": list(reversed(shown))}

    # ---- actions ----------------------------------------------------------

    async def act(self, who: Principal, domain: str, name: str, action: str, body: dict[str, Any]) -> dict[str, Any]:
        """One change to a solution; the reply names the task it started, if any."""
        if action == "plan":
            plan = await self.call(who, "PlanSolution", gw.PlanSolutionRequest(
                domain=domain, solution=name, architecture=_text(body, "architecture"), version=_text(body, "version"),
                sizes=_sizes(body)))
            return {"transitions": [{"element": t.element, "cluster": t.cluster, "instance": t.instance,
                                     "transition": TRANSITION_NAMES.get(t.transition, str(t.transition)),
                                     "waits_for": list(t.waits_for)} for t in plan.transitions]}
        if action == "deploy":
            reply = await self.call(who, "DeploySolution", gw.DeploySolutionRequest(
                domain=domain, solution=name, architecture=_text(body, "architecture"), version=_text(body, "version"),
                sizes=_sizes(body)))
        elif action == "state":
            reply = await self.call(who, "UpdateSolution", gw.UpdateSolutionRequest(
                domain=domain, solution=name, state=_state_of(body)))
        elif action == "resize":
            reply = await self.call(who, "UpdateCluster", gw.UpdateClusterRequest(
                domain=domain, solution=name, element=_text(body, "element"), cluster=_text(body, "cluster"),
                size=_int(body, "size")))
        elif action == "terminate":
            await self.call(who, "TerminateTask", gw.TerminateTaskRequest(domain=domain, task=_text(body, "task")))
            return {"task": _text(body, "task")}
        elif action == "rollback":
            reply = await self.call(who, "RollbackSolution", gw.RollbackSolutionRequest(
                domain=domain, solution=name, to=_int(body, "to"), reason=_text(body, "reason"),
                force=body.get("force") is True))
        elif action in ("approve", "reject"):
            method, message = (("ApproveSolution", gw.ApproveSolutionRequest) if action == "approve"
                               else ("RejectSolution", gw.RejectSolutionRequest))
            decided = await self.call(who, method, message(domain=domain, solution=name, revision=_int(body, "revision"),
                                                           reason=_text(body, "reason")))
            return {"task": decided.task}
        elif action == "pause":
            paused = await self.call(who, "PauseSolution", gw.PauseSolutionRequest(
                domain=domain, solution=name, reason=_text(body, "reason")))
            return {"paused": paused.pause.actor}
        elif action == "resume":
            reply = await self.call(who, "ResumeSolution", gw.ResumeSolutionRequest(domain=domain, solution=name))
        elif action == "delete":
            if body.get("confirm") != name:
                raise InvalidArgument(f"confirm: type the solution's name ({name}) to delete it")
            reply = await self.call(who, "RemoveSolution", gw.RemoveSolutionRequest(domain=domain, solution=name))
        else:
            raise InvalidArgument(f"unknown action {action!r}")
        return {"task": reply.task}


def require_domain(who: Principal, domain: str) -> None:
    """A view of a domain the token may not see is refused before anything is read."""
    if not who.sees(domain):
        raise PermissionDenied(f"domain {domain!r}: {who.describe()}")


def _graph(domain: str, found: pb.Architecture) -> dict[str, Any]:
    """An architecture as the console draws it."""
    return {"domain": domain, "name": found.name, "version": found.version, "elements": [
        {"name": e.name, "component": e.component, "clusters": [
            {"version": c.version, "min": c.min, "max": c.max, "size": c.size, "state": _state(c.state),
             "configuration": c.configuration,
             "relationships": [{"name": r.name, "element": r.element, "version": r.version,
                                "type": _dependency_type(r.type)} for r in c.relationships]}
            for c in e.clusters]}
        for e in found.elements]}


def _rollouts(architecture: pb.Architecture, summary: gw.SummarizeSolutionResponse) -> list[dict[str, Any]]:
    """Each element whose version changes under a rollout strategy now (the
    solution's architecture says how): its batches (from the records: the new
    version's active instances), what is left of the old version, and whether
    it waits for approval."""
    found = []
    for element in architecture.elements:
        if not element.HasField("rollout") or not element.clusters:
            continue
        new = element.clusters[0].version
        mine = [c for c in summary.clusters if c.element == element.name]
        now = next((c for c in mine if c.cluster == new), None)
        old = [c for c in mine if c.cluster != new and c.instances]
        if now is None or not old:
            continue
        plan = strategy(element.rollout, now.size)
        waiting = summary.pause.actor == ROLLOUT and f"element {element.name} " in summary.pause.reason
        found.append({
            "element": element.name, "version": new, "size": now.size, "active": now.active,
            "batch": plan.batch, "batches": plan.batches(now.size), "done": min(now.active // plan.batch, plan.batches(now.size)),
            "old": [{"cluster": c.cluster, "instances": c.instances} for c in old],
            "approval": plan.approval, "waiting": waiting,
        })
    return found


def _text(body: dict[str, Any], key: str) -> str:
    value = body.get(key, "")
    if not isinstance(value, str):
        raise InvalidArgument(f"{key}: expected text")
    return value


def _int(body: dict[str, Any], key: str) -> int:
    value = body.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or not -(2**31) <= value < 2**31:
        raise InvalidArgument(f"{key}: expected a whole number")
    return value


def _sizes(body: dict[str, Any]) -> dict[str, int]:
    """The optional sizes of a plan or deploy, by "element/cluster"."""
    sizes = body.get("sizes", {})
    if not isinstance(sizes, dict) or not all(isinstance(k, str) for k in sizes):
        raise InvalidArgument("sizes: expected an object of \"element/cluster\": size")
    return {key: _int(sizes, key) for key in sizes}


def _state_of(body: dict[str, Any]) -> pb.State:
    state = _text(body, "state")
    if state not in _STATES:
        raise InvalidArgument(f"state: {state!r} is not one of {', '.join(_STATES)}")
    return _STATES[state]


def _dependency_type(value: int) -> str:
    return pb.DependencyType.Name(value).removeprefix("DEPENDENCY_TYPE_").lower()


def _counts(c: gw.ClusterSummary) -> dict[str, int]:
    return {"instances": c.instances, "initial": c.initial, "inactive": c.inactive, "active": c.active,
            "failure": c.failed, "in_transition": c.in_transition}


def _rolled_up(c: gw.ClusterSummary) -> dict[str, Any]:
    """Counts and state of a cluster or a whole solution, as the gateway rolled them up (model.rollup)."""
    return {"state": c.label, **_counts(c)}


def _solution_card(summary: gw.SummarizeSolutionResponse) -> dict[str, Any]:
    return {**_solution_header(summary.solution), "state": summary.total.label, "counts": _counts(summary.total)}


def _solution_header(s: pb.Solution) -> dict[str, Any]:
    return {"name": s.name, "architecture": s.architecture, "version": s.version, "target": _state(s.target),
            "state": _state(s.state), "hold": hold_name(s.hold.kind), "hold_reason": s.hold.reason,
            "hold_actor": s.hold.actor, "on_failure": policy_name(s.on_failure)}


def _task(t: pb.Task) -> dict[str, Any]:
    return {"uuid": t.uuid, "type": task_type_name(t.type), "status": task_status_name(t.status),
            "domain": t.domain, "solution": t.solution, "element": t.element, "cluster": t.cluster,
            "instance": t.instance, "parent": t.parent, "transition": TRANSITION_NAMES.get(t.transition, ""),
            "error": t.error, "created_ms": _ms(t.created), "started_ms": _ms(t.started), "updated_ms": _ms(t.updated),
            "ended": t.status in TASK_ENDED, "trace": t.trace,
            "actor": t.actor, "phase": t.phase,
            "summary": {"tasks": t.summary.tasks, "completed": t.summary.completed, "failed": t.summary.failed,
                        "stopped": t.summary.stopped} if t.summary.pruned_unix_ms else None}


def _event(e: pb.Event) -> dict[str, Any]:
    return {"uuid": e.uuid, "task": e.task, "type": event_type_name(e.type), "time_ms": _ms(e.time),
            "comment": e.comment, "solution": e.solution, "element": e.element, "cluster": e.cluster,
            "instance": e.instance, "state": _state(e.state), "transition": TRANSITION_NAMES.get(e.transition, ""),
            "actor": e.actor}


def _span(t: pb.Task, now: int) -> tuple[int, int]:
    """When a task really ran: from the start of its execution to its end
    (now while it runs). A task with no start recorded (stored before tasks
    recorded it) spans from its creation."""
    end = t.updated if t.status in TASK_ENDED else now
    return (t.started or t.created or end), end


def _timeline(tasks: list[pb.Task]) -> dict[str, Any]:
    """The instance tasks of a tree that ran (or run) on a time line: one
    bar each, from the start of its execution to its end, grouped by
    element and cluster, so that the waves of a deploy show; with more than
    TIMELINE_INSTANCES, one bar per cluster instead (in the order the tree
    lists them), from its first instance's start to its last one's end,
    with the count of each status. Tasks still waiting to start have none."""
    now = time.time_ns()
    instances = [t for t in tasks if t.transition and t.instance and (t.started or t.status in TASK_ENDED)]
    if len(instances) <= TIMELINE_INSTANCES:
        bars = []
        for t in instances:
            start, end = _span(t, now)
            bars.append({"element": t.element, "cluster": t.cluster, "instance": t.instance,
                         "transition": TRANSITION_NAMES.get(t.transition, ""), "status": task_status_name(t.status),
                         "start_ms": _ms(start), "end_ms": _ms(end), "task": t.uuid, "error": t.error})
        return {"by": "instance", "instances": len(instances),
                "bars": sorted(bars, key=lambda b: (b["element"], b["cluster"], b["instance"], b["start_ms"]))}
    clusters: dict[tuple[str, str], list[tuple[int, int]]] = defaultdict(list)
    statuses: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    for t in instances:
        clusters[(t.element, t.cluster)].append(_span(t, now))
        statuses[(t.element, t.cluster)][task_status_name(t.status)] += 1
    bars = [
        {"element": element, "cluster": cluster, "instances": len(spans),
         "start_ms": _ms(min(s for s, _ in spans)), "end_ms": _ms(max(e for _, e in spans)),
         "statuses": dict(statuses[(element, cluster)])}
        for (element, cluster), spans in clusters.items()  # in the tree's order, as the task list below it
    ]
    return {"by": "cluster", "instances": len(instances), "bars": bars}
