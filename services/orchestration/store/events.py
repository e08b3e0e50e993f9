"""Task events, stored once: as JSON on the events stream, the bus's TOPIC1
(``<prefix>.events.<domain>.<task type>.<event type>.<task>``). The last
token is the task that received the event, so a task's events are read
back by subject filter, on the server, never by reading a domain's.
``EventRecorder`` is the one way to record an event, ``EventLog`` the one
way to read and remove them.

An event is kept as long as the stream keeps it (``ORCH_HISTORY_DAYS``,
``ORCH_EVENTS_MAX_MB``); ``Event.source`` is the task that caused it, which
in a task tree is the receiver itself, its parent or one of its subtasks."""

from __future__ import annotations

import json
import time
import uuid as uuidlib
from collections.abc import Iterable

from nats.js import JetStreamContext, api

from orchestration.model.lifecycle import (
    TRANSITION_NAMES,
    event_type_name,
    state_name,
    task_status_name,
    task_type_name,
)
from orchestration.store.subjects import Subjects
from orchestration.store.wire import last_message, publisher_for, read_stream
from orchestration.v1 import model_pb2 as pb
from orchestration_sdk.runtime.concurrency import gather_bounded


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
        solution=task.solution, element=task.element, cluster=task.cluster, instance=task.instance,
        state=task.state, transition=task.transition, actor=task.actor,
    )
    return event, task


# What parse_bus_payload adds to an event from its task (what it is about).
_ABOUT = ("solution", "element", "cluster", "instance", "state", "transition", "actor")


def bare(event: pb.Event) -> pb.Event:
    """The event as a model file holds it: without what it is about (that
    is its task's, and the model holds the task)."""
    own = pb.Event()
    own.CopyFrom(event)
    for name in _ABOUT:
        own.ClearField(name)
    return own


# Subject filters per read of the events of many tasks (one consumer carries them all).
_FILTERS_PER_READ = 256


class EventRecorder:
    """Records task events: published on the events stream, which stores them."""

    def __init__(self, js: JetStreamContext, subjects: Subjects) -> None:
        self._publisher = publisher_for(js)
        self.subjects = subjects

    async def record(self, event: pb.Event, task: pb.Task, state: int = 0, configuration: str = "", retried: bool = True) -> None:
        """Store the event (done when this returns). Recording it again (a
        write retried after a lost acknowledgement) within the stream's
        duplicate window stores nothing more; a later repeat is left out of
        listings (see EventLog). `retried=False`: not a retry whatever the
        window remembers (a model's events stored again after their domain was
        removed: a purge does not clear the server's memory of message ids)."""
        subject = self.subjects.event(task.domain, task_type_name(task.type), event_type_name(event.type), event.task)
        # The id is the event's place (domain, receiving task, uuid), as its key was in the bucket events had before.
        headers = {"Nats-Msg-Id": f"{task.domain}/{event.task}/{event.uuid}"} if retried else None
        await self._publisher.publish(subject, bus_payload(event, task, state, configuration), headers=headers)


class EventLog:
    """Reads and removes the events kept in the events stream."""

    def __init__(self, js: JetStreamContext, subjects: Subjects, replicated: bool = False) -> None:
        self._js = js
        self.subjects = subjects
        self._replicated = replicated

    async def of_domain(self, domain: str) -> list[pb.Event]:
        """Every event of the domain the stream still keeps, by time."""
        return by_time(await self._read([self.subjects.events_filter(domain)]))

    async def of_tasks(self, domain: str, tasks: Iterable[str]) -> list[pb.Event]:
        """The events the tasks received, by time."""
        filters = [self.subjects.task_events_filter(domain, t) for t in dict.fromkeys(tasks)]
        chunks = [filters[i : i + _FILTERS_PER_READ] for i in range(0, len(filters), _FILTERS_PER_READ)]
        return by_time(e for part in await gather_bounded(self._read(c) for c in chunks) for e in part)

    async def tasks_of(self, domain: str, tasks: Iterable[str]) -> list[pb.Task]:
        """The tasks as their events tell them (see task_of_events), for
        those of `tasks` that received any. Read by direct gets of the last
        event of each (and of its execution event when that is not the
        last), indexed by subject: a consumer filtered on thousands of tasks
        would make the server scan the whole stream (seconds for a tree of
        10,000 running tasks in a stream of 20,000 other events)."""
        found = await gather_bounded(self._task_of(domain, t) for t in dict.fromkeys(tasks))
        return [task for task in found if task is not None]

    async def _task_of(self, domain: str, task: str) -> pb.Task | None:
        stream = self.subjects.events_stream
        last = await last_message(self._js, stream, self.subjects.task_events_filter(domain, task))
        if last is None:
            return None
        event, told = parse_bus_payload(last.data)
        execution: pb.Event | None = event
        if event.type != pb.EVENT_TYPE_EXECUTION:
            executed = await last_message(self._js, stream, self.subjects.task_events_filter(
                domain, task, event_type_name(pb.EVENT_TYPE_EXECUTION)))
            execution = parse_bus_payload(executed.data)[0] if executed is not None else None
        return task_of_events(event, told, execution)

    async def remove_tasks(self, domain: str, tasks: Iterable[str]) -> None:
        """Remove every event the tasks received."""
        stream = self.subjects.events_stream
        await gather_bounded(self._js.purge_stream(stream, subject=self.subjects.task_events_filter(domain, t)) for t in tasks)

    async def remove_domain(self, domain: str) -> None:
        await self._js.purge_stream(self.subjects.events_stream, subject=self.subjects.events_filter(domain))

    async def _read(self, filters: list[str]) -> list[pb.Event]:
        """The events on the filters, each once (a write retried after the
        duplicate window stores an event again)."""
        if not filters:
            return []
        events = await read_stream(self._js, self.subjects.events_stream, filters, api.DeliverPolicy.ALL,
                                   self._replicated, "the events stream", lambda m: parse_bus_payload(m.data)[0])
        first: dict[tuple[str, str], pb.Event] = {}
        for event in events:
            first.setdefault((event.task, event.uuid), event)
        return list(first.values())


# What a task's last event says of how it ended.
_ENDS = frozenset({pb.EVENT_TYPE_FAILURE, pb.EVENT_TYPE_TIMEOUT, pb.EVENT_TYPE_TERMINATION})


def task_of_events(last: pb.Event, task: pb.Task, execution: pb.Event | None) -> pb.Task:
    """A task with no record, as its events tell it: the task as its last
    event published it, created and started at its execution event (its
    first), updated at the last one. An instance task's record is written
    once, when it ends: until then its events are the store of its status
    (see dispatcher.run.tasks)."""
    task.created = execution.time if execution is not None else last.time
    task.started = execution.time if execution is not None else 0
    task.updated = last.time
    if last.type in _ENDS:
        task.error = last.comment
    return task


def by_time(events: Iterable[pb.Event]) -> list[pb.Event]:
    return sorted(events, key=lambda e: (e.time, e.uuid))
