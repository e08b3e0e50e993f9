"""What applying a model to the store would change: the records to write, the
ones already stored identically, and the conflicts that forbid the whole
apply (immutable definitions stored with other content). Pure: no I/O."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from google.protobuf.message import Message

from orchestration.model.names import controller_name
from orchestration.v1.model_pb2 import Domain, Model, Solution


def canonical_solution(solution: Solution) -> Solution:
    """The solution as it reads back from the store: elements by name,
    clusters by version, instances by uuid (the store's key order)."""
    canonical = Solution()
    canonical.CopyFrom(solution)
    canonical.elements.sort(key=lambda e: e.name)
    for element in canonical.elements:
        element.clusters.sort(key=lambda c: c.version)
        for cluster in element.clusters:
            cluster.instances.sort(key=lambda i: i.uuid)
    return canonical


# Kinds in the order they are written: what others refer to comes first.
WRITE_ORDER = ("domain", "controller", "component", "architecture", "solution", "task", "event")


@dataclass(frozen=True)
class Change:
    """One record to write: `kind` of WRITE_ORDER, in `domain`."""

    kind: str
    domain: str
    label: str
    value: Message


@dataclass
class ModelDiff:
    """The outcome of comparing a model with the store."""

    changes: list[Change] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)


def label(kind: str, domain: str, *names: str) -> str:
    """Readable name of a record, e.g. ``component demo/server/V1.0.0``."""
    return f"{kind} {'/'.join([domain, *names])}"


def diff_model(model: Model, stored: Mapping[str, Domain]) -> ModelDiff:
    """Compare model with the stored domains (full, by name; absent when not stored)."""
    diff = ModelDiff()
    for domain in model.domains:
        d = domain.name
        old = stored.get(d)
        if old is None:
            diff.changes.append(Change("domain", d, label("domain", d), Domain(name=d)))
            old = Domain(name=d)
        else:
            diff.unchanged.append(label("domain", d))
        # Controllers are registrations, not definitions: a changed one is replaced.
        old_controllers = {controller_name(c): c for c in old.controllers}
        for controller in domain.controllers:
            name = controller_name(controller)
            change = Change("controller", d, label("controller", d, name), controller)
            _compare(diff, change, old_controllers.get(name), replaceable=True)
        old_components = {(c.name, c.version): c for c in old.components}
        for c in domain.components:
            change = Change("component", d, label("component", d, c.name, c.version), c)
            _compare(diff, change, old_components.get((c.name, c.version)))
        old_architectures = {(a.name, a.version): a for a in old.architectures}
        for a in domain.architectures:
            change = Change("architecture", d, label("architecture", d, a.name, a.version), a)
            _compare(diff, change, old_architectures.get((a.name, a.version)))
        # Stored solutions read back in canonical order; compare like with like.
        old_solutions = {s.name: s for s in old.solutions}
        for s in domain.solutions:
            change = Change("solution", d, label("solution", d, s.name), s)
            old_solution = old_solutions.get(s.name)
            _compare(diff, change, old_solution, same=old_solution is not None and canonical_solution(s) == old_solution)
        old_tasks = {t.uuid: t for t in old.tasks}
        for t in domain.tasks:
            _compare(diff, Change("task", d, label("task", d, t.uuid), t), old_tasks.get(t.uuid))
        old_events = {e.uuid: e for e in old.events}
        for e in domain.events:
            _compare(diff, Change("event", d, label("event", d, e.uuid), e), old_events.get(e.uuid))
    diff.changes.sort(key=lambda c: WRITE_ORDER.index(c.kind))
    return diff


def _compare(
    diff: ModelDiff, change: Change, old: Message | None, replaceable: bool = False, same: bool | None = None
) -> None:
    """File change as a write, as unchanged, or as a conflict."""
    if old is None:
        diff.changes.append(change)
    elif (old == change.value) if same is None else same:
        diff.unchanged.append(change.label)
    elif replaceable:
        diff.changes.append(change)
    else:
        diff.conflicts.append(change.label)
