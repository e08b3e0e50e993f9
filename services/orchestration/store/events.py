"""The one way to record a task event: stored in the events bucket (so a
task's events can be listed) and published on the events stream (the book's
TOPIC1, ``<prefix>.events.<domain>.<task type>.<event type>``, JSON)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid as uuidlib

from nats.js import JetStreamContext

from orchestration.model.lifecycle import (
    TRANSITION_NAMES,
    event_type_name,
    state_name,
    task_status_name,
    task_type_name,
)
from orchestration.store.publisher import publisher_for
from orchestration.store.subjects import Subjects
from orchestration.v1 import model_pb2 as pb


def new_event(task: pb.Task, kind: pb.EventType, comment: str = "", source: str = "") -> pb.Event:
    """An event of `task` happening now."""
    return pb.Event(
        uuid=str(uuidlib.uuid4()), domain=task.domain, task=task.uuid, type=kind,
        source=source or task.uuid, time=time.time_ns(), comment=comment,
    )


def bus_payload(event: pb.Event, task: pb.Task, state: int = 0, configuration: str = "") -> bytes:
    """The JSON message of an event on the bus, with the book's fields."""
    return json.dumps({
        "request": task.request,
        "actor": task.actor,
        "type": event_type_name(event.type),
        "uuid": event.uuid,
        "source": event.source,
        "time": event.time,
        "task": task.uuid,
        "task_type": task_type_name(task.type),
        "parent": task.parent,
        "subtasks": list(task.subtasks),
        "status": task_status_name(task.status),
        "phase": task.phase,
        "transition": TRANSITION_NAMES.get(task.transition, ""),
        "domain": task.domain,
        "solution": task.solution,
        "element": task.element,
        "cluster": task.cluster,
        "instance": task.instance,
        "state": state_name(state or task.state),
        "configuration": configuration,
        "comment": event.comment,
    }).encode()


def parse_bus_payload(data: bytes) -> tuple[pb.Event, pb.Task]:
    """The event and task of a bus message (the inverse of bus_payload)."""
    fields = json.loads(data)
    task = pb.Task(
        uuid=fields.get("task", ""), request=fields.get("request", ""), actor=fields.get("actor", ""), parent=fields.get("parent", ""),
        type=pb.TaskType.Value("TASK_TYPE_" + fields.get("task_type", "unspecified").upper()),
        status=pb.TaskStatus.Value("TASK_STATUS_" + fields.get("status", "unspecified").upper()),
        phase=int(fields.get("phase", 0)), domain=fields.get("domain", ""), solution=fields.get("solution", ""),
        element=fields.get("element", ""), cluster=fields.get("cluster", ""), instance=fields.get("instance", ""),
        subtasks=fields.get("subtasks", []),
    )
    if fields.get("state"):
        task.state = pb.State.Value("STATE_" + fields["state"].upper())
    if fields.get("transition"):
        task.transition = pb.Transition.Value("TRANSITION_" + fields["transition"].upper())
    event = pb.Event(
        uuid=fields.get("uuid", ""), domain=task.domain, task=task.uuid, source=fields.get("source", ""),
        type=pb.EventType.Value("EVENT_TYPE_" + fields.get("type", "unspecified").upper()),
        time=int(fields.get("time", 0)), comment=fields.get("comment", ""),
    )
    return event, task


class EventRecorder:
    """Stores and publishes task events."""

    def __init__(self, js: JetStreamContext, subjects: Subjects, put_event) -> None:  # type: ignore[no-untyped-def]
        self.js = js
        self._publisher = publisher_for(js)
        self.subjects = subjects
        self._put_event = put_event

    async def record(self, event: pb.Event, task: pb.Task, state: int = 0, configuration: str = "") -> None:
        """Store the event and publish it; both are done when this returns."""
        subject = self.subjects.event(task.domain, task_type_name(task.type), event_type_name(event.type))
        published = asyncio.ensure_future(
            self._publisher.publish(subject, bus_payload(event, task, state, configuration), headers={"Nats-Msg-Id": event.uuid}))
        try:
            await self._put_event(event)
        finally:
            await published
