"""Streaming commands: follow task events and status until Ctrl-C."""

from __future__ import annotations

import json
import time

import click
from google.protobuf import json_format

from cli.settings import Settings, pass_settings
from orchestration.model.lifecycle import (
    TRANSITION_NAMES,
    event_type_name,
    state_name,
    task_status_name,
    task_type_name,
)
from orchestration.v1 import gateway_pb2 as gw

FORMAT = click.Choice(["text", "json"])


def _clock(nanos: int) -> str:
    return time.strftime("%H:%M:%S", time.localtime(nanos / 1e9)) + f".{(nanos // 1_000_000) % 1000:03d}"


def event_line(item: gw.WatchEventsResponse) -> str:
    """One readable line per event."""
    e, t = item.event, item.task
    where = "/".join(x for x in (t.solution, t.element, t.cluster, t.instance) if x)
    what = f" {TRANSITION_NAMES.get(t.transition, '')}" if event_type_name(e.type) == "execution" and t.transition else ""
    note = f" ({e.comment})" if e.comment and e.comment not in what else ""
    return (f"{_clock(e.time)} {t.domain} {task_type_name(t.type):<8} {event_type_name(e.type):<11} "
            f"{task_status_name(t.status):<10} {where}{what}{note} task={t.uuid}")


def _follow(stream, render) -> None:  # type: ignore[no-untyped-def]
    try:
        for item in stream:
            click.echo(render(item))
    except KeyboardInterrupt:
        stream.cancel()


@click.command("watch")
@click.argument("domain", required=False, default="")
@click.option("--task", "task_id", default="", help="Only events of this task (its earlier events first).")
@click.option("-o", "--output", type=FORMAT, default="text", show_default=True)
@pass_settings
def events_watch(settings: Settings, domain: str, task_id: str, output: str) -> None:
    """Stream task events as they happen, until Ctrl-C."""
    gateway = settings.gateway()
    stream = gateway.automation.WatchEvents(gw.WatchEventsRequest(domain=domain, task=task_id), metadata=gateway.metadata)
    render = (lambda i: json.dumps(json_format.MessageToDict(i, preserving_proto_field_name=True))) if output == "json" else event_line
    _follow(stream, render)


def status_line(item: gw.WatchStatusResponse) -> str:
    """One readable line per status message."""
    where = "/".join(x for x in (item.solution, item.element, item.cluster, item.instance) if x)
    mark = "" if item.state == item.target else f" (target {state_name(item.target)})"
    return f"{_clock(item.time)} {item.domain} {item.kind:<8} {where} {state_name(item.state)}{mark}"


@click.group("status")
def status() -> None:
    """Status published by the monitor."""


@status.command("watch")
@click.argument("domain", required=False, default="")
@click.option("--solution", default="", help="Only this solution.")
@click.option("-o", "--output", type=FORMAT, default="text", show_default=True)
@pass_settings
def status_watch(settings: Settings, domain: str, solution: str, output: str) -> None:
    """Stream status messages as the monitor publishes them, until Ctrl-C."""
    gateway = settings.gateway()
    stream = gateway.solutions.WatchStatus(gw.WatchStatusRequest(domain=domain, solution=solution), metadata=gateway.metadata)
    render = (lambda i: json.dumps(json_format.MessageToDict(i, preserving_proto_field_name=True))) if output == "json" else status_line
    _follow(stream, render)


def register(event_group: click.Group, root: click.Group) -> None:
    """Add `event watch` (also reachable as `events watch`) and `status watch`."""
    event_group.add_command(events_watch)
    root.add_command(event_group, "events")
    root.add_command(status)
