"""What a playbook run did, from ansible-runner's events: one line per task
and host, the failures and unreachable hosts, and what the playbook reported
with `set_stats`. Pure: no I/O."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

# A task's failure message is cut: it reaches events and task errors.
MAX_MSG = 500


@dataclass(frozen=True)
class TaskLine:
    """One task on one host: `status` is ok, changed, failed, unreachable or skipped."""

    status: str
    task: str
    host: str
    msg: str = ""

    def __str__(self) -> str:
        return f"{self.status}: {self.task} on {self.host}"


@dataclass(frozen=True)
class Summary:
    """A run's tasks in order, and what its `set_stats` reported (per_host: false)."""

    lines: tuple[TaskLine, ...] = ()
    stats: Mapping[str, Any] = field(default_factory=dict)

    @property
    def failed(self) -> tuple[TaskLine, ...]:
        return tuple(line for line in self.lines if line.status == "failed")

    @property
    def unreachable(self) -> tuple[TaskLine, ...]:
        return tuple(line for line in self.lines if line.status == "unreachable")

    @property
    def changed(self) -> bool:
        return any(line.status == "changed" for line in self.lines)

    def text(self) -> str:
        """One line per task ("changed: install the service on localhost"); skipped tasks left out."""
        return "\n".join(str(line) for line in self.lines if line.status != "skipped")


def _message(result: Mapping[str, Any]) -> str:
    msg = result.get("msg") or result.get("stderr") or result.get("reason") or ""
    text = " ".join(str(msg).split())
    return text if len(text) <= MAX_MSG else text[:MAX_MSG] + "..."


def summarize(events: Iterable[Mapping[str, Any]]) -> Summary:
    """The Summary of ansible-runner's events of one run (in their order)."""
    lines: list[TaskLine] = []
    stats: dict[str, Any] = {}
    for event in events:
        kind = event.get("event", "")
        data = event.get("event_data") or {}
        if kind == "playbook_on_stats":
            artifact = data.get("artifact_data") or {}
            if isinstance(artifact, dict):
                stats.update(artifact)
            continue
        if kind not in ("runner_on_ok", "runner_on_failed", "runner_on_unreachable", "runner_on_skipped"):
            continue
        task = str(data.get("task") or data.get("task_action") or "unnamed task")
        host = str(data.get("host") or data.get("remote_addr") or "?")
        result = data.get("res") or {}
        if kind == "runner_on_ok":
            lines.append(TaskLine("changed" if result.get("changed") else "ok", task, host))
        elif kind == "runner_on_failed":
            # A failure the playbook ignores (ignore_errors) is not the run's failure.
            status = "ok" if data.get("ignore_errors") else "failed"
            lines.append(TaskLine(status, task, host, _message(result)))
        elif kind == "runner_on_unreachable":
            lines.append(TaskLine("unreachable", task, host, _message(result)))
        else:
            lines.append(TaskLine("skipped", task, host))
    return Summary(tuple(lines), stats)


def failure_text(summary: Summary, playbook: str) -> str:
    """A failed run's reason: the first failed task, its host and message."""
    failed = summary.failed
    if not failed:
        return f"{playbook} failed"
    first = failed[0]
    more = f" (and {len(failed) - 1} more failed task(s))" if len(failed) > 1 else ""
    return f"{playbook}: task '{first.task}' failed on {first.host}: {first.msg or 'no message'}{more}"


def unreachable_text(summary: Summary, playbook: str) -> str:
    hosts = sorted({line.host for line in summary.unreachable})
    first = summary.unreachable[0]
    return f"{playbook}: host(s) {', '.join(hosts)} unreachable: {first.msg or 'no message'}"
