"""Revisions of a solution: the desired state a change leaves, what a change
is called, what differs between two revisions, and the desired state a
rollback puts back. Pure: no I/O (the store keeps them, the dispatcher
records them)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from orchestration.model import planner
from orchestration.model.lifecycle import policy_name, state_name
from orchestration.v1 import model_pb2 as pb
from orchestration.v1 import records_pb2 as rpb

O = pb.RevisionOutcome

# Outcomes that are final (a revision's outcome changes once, from running).
ENDED = frozenset({O.REVISION_OUTCOME_SUCCEEDED, O.REVISION_OUTCOME_FAILED, O.REVISION_OUTCOME_ROLLED_BACK,
                   O.REVISION_OUTCOME_SUPERSEDED, O.REVISION_OUTCOME_TERMINATED, O.REVISION_OUTCOME_REJECTED})
# Changes that never wait for approval: putting a known state back, and compensations.
UNAPPROVED = frozenset({"rollback", "reconcile"})


def needs_approval(request: rpb.Request, current: pb.Solution | None) -> bool:
    """Whether the request's change waits for an approver: the solution (as it
    was before the change) requires approval, and the change is not exempt."""
    return current is not None and current.approval_required and request.WhichOneof("change") not in UNAPPROVED

# The kind of change of each kind of request, as the history names it.
CHANGES = {"deploy": "deploy", "set_cluster": "resize", "set_instance": "instance", "set_solution": "state",
           "remove": "remove", "resume": "resume", "rollback": "rollback", "set_policy": "policy"}


def outcome_of(status: int, error: str, termination: rpb.Termination | None) -> tuple[pb.RevisionOutcome, str]:
    """A revision's outcome and its error from its root task's final status
    (and, for a terminated one, the termination that asked for it)."""
    if status == pb.TASK_STATUS_COMPLETED:
        return O.REVISION_OUTCOME_SUCCEEDED, ""
    if status != pb.TASK_STATUS_TERMINATED:
        return O.REVISION_OUTCOME_FAILED, error
    asked = termination or rpb.Termination(actor="operator")
    why = f": {asked.reason}" if asked.reason else ""
    if asked.superseded:
        return O.REVISION_OUTCOME_SUPERSEDED, f"superseded by a rollback asked by {asked.actor}{why}"
    return O.REVISION_OUTCOME_TERMINATED, f"terminated by {asked.actor}{why}"


def desired_of(solution: pb.Solution) -> tuple[pb.Solution, dict[str, pb.State]]:
    """What a solution is asked to be, apart from what it is: its elements
    and clusters without instances, observed state or what is leaving (torn
    down by the change), and the instances whose target differs from their
    cluster's."""
    desired = pb.Solution(name=solution.name, version=solution.version, target=solution.target,
                          configuration=solution.configuration, architecture=solution.architecture,
                          on_failure=solution.on_failure, approval_required=solution.approval_required,
                          approval_timeout_seconds=solution.approval_timeout_seconds)
    apart: dict[str, pb.State] = {}
    for element in solution.elements:
        if element.remove:
            continue
        out = desired.elements.add(name=element.name, component=element.component, target=element.target,
                                   configuration=element.configuration)
        if element.HasField("rollout"):
            out.rollout.CopyFrom(element.rollout)
        for cluster in element.clusters:
            if cluster.remove:
                continue
            kept = out.clusters.add(version=cluster.version, target=cluster.target, min=cluster.min, max=cluster.max,
                                    size=cluster.size, configuration=cluster.configuration, controller=cluster.controller)
            kept.parameters.update(cluster.parameters)
            for relationship in cluster.relationships:
                copy = kept.relationships.add()
                copy.CopyFrom(relationship)
                copy.state = pb.STATE_UNSPECIFIED
            for instance in cluster.instances:
                if not instance.remove and instance.target != cluster.target:
                    apart[instance.uuid] = instance.target
    return desired, apart


def same_desired(a: pb.Revision, b: pb.Revision) -> bool:
    """Whether two revisions ask for the same (the failure policy aside)."""
    left, right = pb.Solution(), pb.Solution()
    left.CopyFrom(a.desired)
    right.CopyFrom(b.desired)
    left.on_failure = right.on_failure = pb.FAILURE_POLICY_UNSPECIFIED
    left.approval_required = right.approval_required = False
    return left == right and dict(a.instance_targets) == dict(b.instance_targets)


def describe(request: rpb.Request) -> tuple[str, str]:
    """The kind of change a request makes and the change in a line."""
    kind = request.WhichOneof("change") or ""
    change = CHANGES.get(kind, kind)
    if kind == "deploy":
        d = request.deploy
        sizes = "".join(f", {key}={size}" for key, size in sorted(d.sizes.items()))
        policy = f", on failure {policy_name(d.on_failure)}" if d.on_failure else ""
        return change, f"deploy {d.architecture} {d.version}{sizes}{policy}"
    if kind == "set_cluster":
        c = request.set_cluster
        parts = ([f"size {c.size}"] if c.HasField("size") else []) + ([state_name(c.state)] if c.state else [])
        return change, f"{c.element}/{c.cluster} to {' and '.join(parts)}"
    if kind == "set_instance":
        i = request.set_instance
        return change, f"instance {i.element}/{i.cluster}/{i.instance} to {state_name(i.state)}"
    if kind == "set_solution":
        return change, f"every cluster to {state_name(request.set_solution.state)}"
    if kind == "rollback":
        r = request.rollback
        why = f" (revision {r.failed} failed)" if r.failed else ""
        return change, f"rollback to revision {r.to}{why}"
    if kind == "set_policy":
        return change, f"on failure {policy_name(request.set_policy.on_failure)}"
    return change, {"remove": "remove the solution", "resume": "resume"}.get(kind, kind)


# What a rollback may put back: a change that ran (a rejected one, or one
# still awaiting approval or running, never did).
RESTORABLE = frozenset({O.REVISION_OUTCOME_SUCCEEDED, O.REVISION_OUTCOME_FAILED, O.REVISION_OUTCOME_ROLLED_BACK,
                        O.REVISION_OUTCOME_SUPERSEDED, O.REVISION_OUTCOME_TERMINATED})


def restore(current: pb.Solution | None, revision: pb.Revision, later: planner.Additions | None = None,
            new_uuid: Callable[[], str] = planner.new_uuid4) -> pb.Solution:
    """The solution that results from putting a revision's desired state back
    over `current`: its clusters, versions, sizes, targets and parameters,
    with what is not in it torn down; instances it sent apart keep their
    target where they still exist."""
    wanted = planner.merge(current, revision.desired, new_uuid=new_uuid, later=later)
    if current is not None:
        # Whether changes need an approver is not a rollback's to change.
        wanted.approval_required = current.approval_required
        wanted.approval_timeout_seconds = current.approval_timeout_seconds
    apart = revision.instance_targets
    if apart:
        for element in wanted.elements:
            for cluster in element.clusters:
                for instance in cluster.instances:
                    if not instance.remove and instance.uuid in apart:
                        instance.target = apart[instance.uuid]
    return wanted


def last_succeeded(revisions: Iterable[pb.Revision], before: int) -> pb.Revision | None:
    """The newest revision before `before` whose change succeeded and that is
    not marked bad (None when there is none)."""
    good = [r for r in revisions if r.number < before and r.outcome == O.REVISION_OUTCOME_SUCCEEDED and not r.bad
            and r.change not in ("remove", "terminate")]
    return max(good, key=lambda r: r.number, default=None)


def diff(a: pb.Revision, b: pb.Revision) -> list[str]:
    """What differs from revision a's desired state to b's, one line each:
    the solution's version, target and failure policy, elements and clusters
    added or gone, and each cluster's size, bounds, target, parameters,
    configuration and controller; then instances sent apart."""
    x, y = a.desired, b.desired
    lines: list[str] = []

    def changed(what: str, old: object, new: object) -> None:
        if old != new:
            lines.append(f"{what}: {old if old != '' else '(none)'} -> {new if new != '' else '(none)'}")

    changed("architecture", x.architecture, y.architecture)
    changed("version", x.version, y.version)
    changed("target", state_name(x.target), state_name(y.target))
    changed("on failure", policy_name(x.on_failure), policy_name(y.on_failure))
    changed("approval", "required" if x.approval_required else "none", "required" if y.approval_required else "none")
    old_clusters = _clusters(x)
    new_clusters = _clusters(y)
    for key in sorted(old_clusters.keys() - new_clusters.keys()):
        lines.append(f"{key}: removed (size {old_clusters[key].size})")
    for key in sorted(new_clusters.keys() - old_clusters.keys()):
        c = new_clusters[key]
        lines.append(f"{key}: added (size {c.size}, {state_name(c.target)})")
    for key in sorted(old_clusters.keys() & new_clusters.keys()):
        old, new = old_clusters[key], new_clusters[key]
        changed(f"{key} size", old.size, new.size)
        changed(f"{key} min", old.min, new.min)
        changed(f"{key} max", old.max, new.max)
        changed(f"{key} target", state_name(old.target), state_name(new.target))
        changed(f"{key} controller", old.controller, new.controller)
        for name in sorted(old.parameters.keys() | new.parameters.keys()):
            changed(f"{key} parameter {name}", old.parameters.get(name, ""), new.parameters.get(name, ""))
        if old.configuration != new.configuration:
            lines.append(f"{key} configuration: changed")
    apart_old, apart_new = dict(a.instance_targets), dict(b.instance_targets)
    for uuid in sorted(apart_old.keys() | apart_new.keys()):
        changed(f"instance {uuid} target",
                state_name(apart_old[uuid]) if uuid in apart_old else "as its cluster",
                state_name(apart_new[uuid]) if uuid in apart_new else "as its cluster")
    return lines


def _clusters(solution: pb.Solution) -> dict[str, pb.Cluster]:
    return {f"{e.name}/{c.version}": c for e in solution.elements for c in e.clusters}
