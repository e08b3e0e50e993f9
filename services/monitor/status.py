"""Status messages on the bus (the book's TOPIC2, ``<prefix>.status.<domain>.<solution>``):
one per instance per poll, and one per cluster, element and solution whose
rolled-up real state changed since the previous poll. An aggregate's `state`
and `label` follow the one roll-up rule (`orchestration.model.rollup`), as
the console and the CLI do: `label` is what they show ("in_transition" while
an instance is not at its target)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from monitor.inventory import SolutionView
from monitor.probe import Observation
from orchestration.model.lifecycle import hold_name, state_name
from orchestration.model.rollup import Tally
from orchestration.v1 import model_pb2 as pb

# (kind, domain, solution, element, cluster) of an aggregate.
AggregateKey = tuple[str, str, str, str, str]


@dataclass(frozen=True)
class StatusMessage:
    """One message: its subject's domain and solution, and its JSON."""

    domain: str
    solution: str
    encoded: bytes

    def encode(self) -> bytes:
        return self.encoded

    @property
    def payload(self) -> dict[str, object]:
        fields: dict[str, object] = json.loads(self.encoded)
        return fields


def hold_message(view: SolutionView, hold: pb.SolutionHold, time_ns: int) -> StatusMessage:
    """The solution's status when it becomes held or degraded: what, why, who."""
    fields = _fields("solution", time_ns, view.domain, view.name, "", "", "", view.header.state, view.header.target)
    return _message(view.domain, view.name, _with_hold(fields, hold))


def _with_hold(fields: dict[str, object], hold: pb.SolutionHold) -> dict[str, object]:
    """The fields with what holds the solution, why and who (unchanged when nothing does)."""
    if hold.kind:
        fields.update(hold=hold_name(hold.kind), reason=hold.reason, actor=hold.actor)
    return fields


def _fields(kind: str, time_ns: int, domain: str, solution: str, element: str, cluster: str, instance: str,
            state: int, target: int) -> dict[str, object]:
    return {
        "time": time_ns, "kind": kind, "domain": domain, "solution": solution, "element": element,
        "cluster": cluster, "instance": instance, "state": state_name(state), "target": state_name(target),
    }


def _message(domain: str, solution: str, fields: dict[str, object]) -> StatusMessage:
    return StatusMessage(domain, solution, json.dumps(fields, separators=(",", ":")).encode())


class _InstanceMessages:
    """The instance messages of one cluster in one poll: what they have in
    common is encoded once (the same JSON as _message's, field for field)."""

    def __init__(self, time_ns: int, domain: str, solution: str, element: str, cluster: str) -> None:
        self.domain, self.solution = domain, solution
        common = _fields("instance", time_ns, domain, solution, element, cluster, "", 0, 0)
        for name in ("instance", "state", "target"):
            del common[name]
        self._head = json.dumps(common, separators=(",", ":"))[:-1] + ',"instance":'

    def message(self, uuid: str, state: int, target: int) -> StatusMessage:
        text = f'{self._head}{json.dumps(uuid)},"state":"{state_name(state)}","target":"{state_name(target)}"}}'
        return StatusMessage(self.domain, self.solution, text.encode())


@dataclass
class StatusBoard:
    """Builds each poll's messages; remembers aggregate states between polls."""

    _last: dict[AggregateKey, tuple[int, str, int]] = field(default_factory=dict)

    def messages(self, views: Iterable[SolutionView], observed: Mapping[str, Observation], time_ns: int) -> Iterator[StatusMessage]:
        """Instance messages for every observed instance, aggregate messages
        for changes, made as they are taken (a poll publishes each as it
        comes: 10,000 of them at once took 3 MB); what the board remembers
        is brought up to date once they all were."""
        seen: set[AggregateKey] = set()
        for view in views:
            d, s = view.domain, view.name
            clusters: dict[tuple[str, str], Tally] = {}
            encoders: dict[tuple[str, str], _InstanceMessages] = {}
            for watched in view.instances:
                found = observed.get(watched.uuid)
                if found is None:
                    continue  # not checked this poll: no news is not a status
                r = watched.record
                of = (r.element, r.cluster)
                encoder = encoders.get(of)
                if encoder is None:
                    encoder = encoders[of] = _InstanceMessages(time_ns, d, s, r.element, r.cluster)
                yield encoder.message(watched.uuid, found.state, r.instance.target)
                clusters.setdefault(of, Tally()).add(found.state, r.instance.target)
            elements: dict[str, Tally] = {}
            for (element, cluster), rolled in sorted(clusters.items()):
                target = view.cluster_targets.get((element, cluster), 0)
                elements.setdefault(element, Tally()).merge(rolled)
                yield from self._changed(seen, ("cluster", d, s, element, cluster), rolled, target, time_ns)
            whole = Tally()
            for element, rolled in sorted(elements.items()):
                target = view.element_targets.get(element, 0)
                whole.merge(rolled)
                yield from self._changed(seen, ("element", d, s, element, ""), rolled, target, time_ns)
            if elements:
                yield from self._changed(seen, ("solution", d, s, "", ""), whole, view.header.target, time_ns,
                                         view.header.hold)
        # Forget what was not seen: a solution that comes back is news again.
        for key in [k for k in self._last if k not in seen]:
            del self._last[key]

    def _changed(self, seen: set[AggregateKey], key: AggregateKey, rolled: Tally, target: int, time_ns: int,
                 hold: pb.SolutionHold | None = None) -> list[StatusMessage]:
        """A message when the aggregate's state or label (or, for a solution, its hold) changed."""
        seen.add(key)
        now = (rolled.state, rolled.label, hold.kind if hold is not None else 0)
        if self._last.get(key) == now:
            return []
        self._last[key] = now
        kind, domain, solution, element, cluster = key
        fields = {**_fields(kind, time_ns, domain, solution, element, cluster, "", rolled.state, target), "label": rolled.label}
        return [_message(domain, solution, _with_hold(fields, hold) if hold is not None else fields)]
