"""The YAML form of each model message: which capitalised key holds which proto
field, in the order SolAr writes them, and how map entries are keyed.
Used by ``orchestration.model.codec`` for both parsing and dumping."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Union

from google.protobuf.message import Message

from orchestration.model.lifecycle import HOLD_NAMES, STATE_NAMES, TRANSITION_NAMES
from orchestration.v1 import model_pb2 as pb


@dataclass(frozen=True)
class EnumCodec:
    """Names of an enum's values in YAML (the zero value is written as "")."""

    what: str
    names: dict[int, str]

    @property
    def by_name(self) -> dict[str, int]:
        return {name: value for value, name in self.names.items()}


@dataclass(frozen=True)
class Spec:
    """The YAML form of one message type."""

    cls: type[Message]
    fields: tuple[Field, ...]
    # Map keys under which an entry may appear, the canonical (written) one first.
    keys: Callable[[Any], tuple[str, ...]] = lambda message: ("",)
    key_form: str = ""
    # Fills defaults after parsing (e.g. a solution's architecture is its name).
    fill: Callable[[Any], None] | None = None

    def by_key(self) -> dict[str, Field]:
        return {f.key: f for f in self.fields}


@dataclass(frozen=True)
class One:
    """A single nested message (not a map of them)."""

    spec: Spec


# "str" | "int32" | "int64" | "strs" (list of strings) | "strmap" (string to string) | "bool"
# | "amount" (a count or a percentage, kept as text) | an enum
# | a map of a message keyed by Spec.keys | One message
Kind = Union[str, EnumCodec, Spec, One]


@dataclass(frozen=True)
class Field:
    """One key of a message's YAML form."""

    key: str
    attr: str
    kind: Kind = "str"
    # Not in SolAr: written only when non-empty (and, with default_from, when not that field's value).
    optional: bool = False
    default_from: str = field(default="")


STATE = EnumCodec("state", {int(value): name for value, name in STATE_NAMES.items()})
DEPENDENCY_TYPE = EnumCodec(
    "dependency type",
    {pb.DEPENDENCY_TYPE_CONTEXT: "context", pb.DEPENDENCY_TYPE_SERVICE: "service"},
)
TASK_TYPE = EnumCodec(
    "task type",
    {
        pb.TASK_TYPE_SOLUTION: "Solution",
        pb.TASK_TYPE_ELEMENT: "Element",
        pb.TASK_TYPE_CLUSTER: "Cluster",
        pb.TASK_TYPE_INSTANCE: "Instance",
        pb.TASK_TYPE_PARALLEL: "Parallel",
        pb.TASK_TYPE_SEQUENTIAL: "Sequential",
    },
)
TASK_STATUS = EnumCodec(
    "task status",
    {
        pb.TASK_STATUS_INITIAL: "initial",
        pb.TASK_STATUS_EXECUTING: "executing",
        pb.TASK_STATUS_COMPLETED: "completed",
        pb.TASK_STATUS_FAILED: "failed",
        pb.TASK_STATUS_TIMEOUT: "timeout",
        pb.TASK_STATUS_TERMINATED: "terminated",
    },
)
EVENT_TYPE = EnumCodec(
    "event type",
    {
        pb.EVENT_TYPE_EXECUTION: "execution",
        pb.EVENT_TYPE_COMPLETION: "completion",
        pb.EVENT_TYPE_FAILURE: "failure",
        pb.EVENT_TYPE_TIMEOUT: "timeout",
        pb.EVENT_TYPE_TERMINATION: "termination",
        pb.EVENT_TYPE_DRIFT: "drift",
        pb.EVENT_TYPE_DEGRADED: "degraded",
        pb.EVENT_TYPE_PROGRESS: "progress",
    },
)
HOLD_KIND = EnumCodec("hold kind", dict(HOLD_NAMES))
TRANSITION = EnumCodec("transition", {int(value): name for value, name in TRANSITION_NAMES.items()})


def _name_version(message: Any) -> tuple[str, ...]:
    return (f"{message.name} - {message.version}",)


def _name(message: Any) -> tuple[str, ...]:
    return (message.name,)


def _version(message: Any) -> tuple[str, ...]:
    return (message.version,)


def _uuid(message: Any) -> tuple[str, ...]:
    return (message.uuid,)


def _controller(message: Any) -> tuple[str, ...]:
    if message.version:
        return (f"{message.name}:{message.version}", message.name)
    return (message.name,)


def _default_architecture(solution: pb.Solution) -> None:
    # SolAr has no such field: a solution is built from the architecture of its own name.
    if not solution.architecture:
        solution.architecture = solution.name


F = Field

DEPENDENCY = Spec(
    pb.Dependency,
    (F("Dependency", "name"), F("Type", "type", DEPENDENCY_TYPE), F("Component", "component"),
     F("Version", "version"), F("Configuration", "configuration")),
    _name, "<Dependency>",
)
COMPONENT = Spec(
    pb.Component,
    (F("Component", "name"), F("Version", "version"), F("Controller", "controller"),
     F("Configuration", "configuration"), F("Dependencies", "dependencies", DEPENDENCY)),
    _name_version, "<Component> - <Version>",
)
RELATIONSHIP_CONFIGURATION = Spec(
    pb.RelationshipConfiguration,
    (F("Relationship", "name"), F("Dependency", "dependency"), F("Type", "type", DEPENDENCY_TYPE),
     F("Element", "element"), F("Version", "version"), F("Configuration", "configuration")),
    _name, "<Relationship>",
)
CLUSTER_CONFIGURATION = Spec(
    pb.ClusterConfiguration,
    (F("Version", "version"), F("State", "state", STATE), F("Min", "min", "int32"), F("Max", "max", "int32"),
     F("Size", "size", "int32"), F("Configuration", "configuration"),
     F("Relationships", "relationships", RELATIONSHIP_CONFIGURATION)),
    _version, "<Version>",
)
ROLLOUT = Spec(
    pb.Rollout,
    (F("Batch", "batch", "amount"), F("MaxUnavailable", "max_unavailable", "int32", optional=True),
     F("MaxSurge", "max_surge", "int32", optional=True), F("Pause", "pause", optional=True),
     F("Check", "check", optional=True)),
)
ELEMENT_CONFIGURATION = Spec(
    pb.ElementConfiguration,
    (F("Element", "name"), F("Component", "component"), F("Configuration", "configuration"),
     F("Clusters", "clusters", CLUSTER_CONFIGURATION), F("Rollout", "rollout", One(ROLLOUT), optional=True)),
    _name, "<Element>",
)
ARCHITECTURE = Spec(
    pb.Architecture,
    (F("Architecture", "name"), F("Version", "version"), F("Configuration", "configuration"),
     F("Elements", "elements", ELEMENT_CONFIGURATION)),
    _name_version, "<Architecture> - <Version>",
)
INSTANCE = Spec(
    pb.Instance,
    (F("UUID", "uuid"), F("Target", "target", STATE), F("State", "state", STATE),
     F("Configuration", "configuration"), F("Endpoint", "endpoint"),
     # Engine bookkeeping, not in SolAr files.
     F("Sequence", "sequence", "int32", optional=True), F("Applied", "applied", optional=True),
     F("Members", "members", optional=True), F("Remove", "remove", "bool", optional=True),
     F("Error", "error", optional=True), F("Permanent", "permanent", "bool", optional=True)),
    _uuid, "<UUID>",
)
RELATIONSHIP = Spec(
    pb.Relationship,
    (F("Relationship", "name"), F("Dependency", "dependency"), F("Type", "type", DEPENDENCY_TYPE),
     F("Domain", "domain"), F("Solution", "solution"), F("Element", "element"), F("Version", "version"),
     F("Target", "target", STATE), F("State", "state", STATE), F("Configuration", "configuration"),
     F("Endpoint", "endpoint")),
    _name, "<Relationship>",
)
CLUSTER = Spec(
    pb.Cluster,
    (F("Version", "version"), F("Target", "target", STATE), F("State", "state", STATE),
     F("Min", "min", "int32"), F("Max", "max", "int32"), F("Size", "size", "int32"),
     F("Configuration", "configuration"), F("Endpoint", "endpoint"),
     F("Relationships", "relationships", RELATIONSHIP), F("Instances", "instances", INSTANCE),
     F("Remove", "remove", "bool", optional=True), F("Controller", "controller", optional=True),
     F("Parameters", "parameters", "strmap", optional=True)),
    _version, "<Version>",
)
ELEMENT = Spec(
    pb.Element,
    (F("Element", "name"), F("Component", "component"), F("Target", "target", STATE),
     F("State", "state", STATE), F("Configuration", "configuration"), F("Endpoint", "endpoint"),
     F("Clusters", "clusters", CLUSTER), F("Remove", "remove", "bool", optional=True),
     F("Rollout", "rollout", One(ROLLOUT), optional=True)),
    _name, "<Element>",
)
HOLD = Spec(
    pb.SolutionHold,
    (F("Kind", "kind", HOLD_KIND), F("Reason", "reason"), F("Actor", "actor"), F("Task", "task", optional=True),
     F("Since", "since_unix_ms", "int64")),
)
SOLUTION = Spec(
    pb.Solution,
    (F("Solution", "name"), F("Version", "version"), F("Target", "target", STATE), F("State", "state", STATE),
     F("Configuration", "configuration"), F("Elements", "elements", ELEMENT),
     F("Architecture", "architecture", optional=True, default_from="name"), F("Hold", "hold", One(HOLD), optional=True)),
    _name, "<Solution>", _default_architecture,
)
TASK = Spec(
    pb.Task,
    (F("Type", "type", TASK_TYPE), F("Domain", "domain"), F("Solution", "solution"), F("Version", "version"),
     F("Element", "element"), F("Cluster", "cluster"), F("Instance", "instance"), F("State", "state", STATE),
     F("UUID", "uuid"), F("Parent", "parent"), F("Status", "status", TASK_STATUS), F("Phase", "phase", "int32"),
     F("Subtasks", "subtasks", "strs"), F("Events", "events", "strs"),
     F("Request", "request", optional=True), F("Error", "error", optional=True),
     F("Created", "created", "int64", optional=True), F("Started", "started", "int64", optional=True),
     F("Updated", "updated", "int64", optional=True),
     F("Transition", "transition", TRANSITION, optional=True), F("Trace", "trace", optional=True)),
    _uuid, "<UUID>",
)
EVENT = Spec(
    pb.Event,
    (F("Domain", "domain"), F("UUID", "uuid"), F("Task", "task"), F("Type", "type", EVENT_TYPE),
     F("Source", "source"), F("Time", "time", "int64"), F("Comment", "comment"),
     F("Solution", "solution", optional=True), F("Element", "element", optional=True),
     F("Cluster", "cluster", optional=True), F("Instance", "instance", optional=True),
     F("State", "state", STATE, optional=True), F("Transition", "transition", TRANSITION, optional=True),
     F("Actor", "actor", optional=True)),
    _uuid, "<UUID>",
)
CONTROLLER = Spec(
    pb.Controller,
    (F("Controller", "name"), F("Version", "version"), F("Image", "image"), F("URL", "url"),
     F("Status", "status", STATE)),
    _controller, "<Controller>:<Version> or <Controller>",
)
DOMAIN = Spec(
    pb.Domain,
    (F("Name", "name"), F("Components", "components", COMPONENT), F("Architectures", "architectures", ARCHITECTURE),
     F("Solutions", "solutions", SOLUTION), F("Tasks", "tasks", TASK), F("Events", "events", EVENT),
     F("Controllers", "controllers", CONTROLLER)),
    _name, "<Name>",
)
MODEL = Spec(pb.Model, (F("Schema", "schema"), F("Name", "name"), F("Domains", "domains", DOMAIN)))

SPECS: dict[str, Spec] = {
    spec.cls.DESCRIPTOR.full_name: spec
    for spec in (
        MODEL, DOMAIN, COMPONENT, DEPENDENCY, ARCHITECTURE, ELEMENT_CONFIGURATION, CLUSTER_CONFIGURATION,
        RELATIONSHIP_CONFIGURATION, SOLUTION, ELEMENT, CLUSTER, RELATIONSHIP, INSTANCE, TASK, EVENT, CONTROLLER,
    )
}
