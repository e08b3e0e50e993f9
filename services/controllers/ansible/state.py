"""What the controller ran, per instance, on disk (`<state-dir>/instances/<uuid>.json`):
the state the last successful operation left, its endpoint, the operation
running now (left behind by a crash: the next delivery runs it again, the
playbooks being idempotent) and the last operations that finished, by id,
with a digest of what they were asked, so that a re-delivered operation that
already succeeded is answered from here instead of running again (the same
id asking something else runs). Written whole, through a rename."""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from collections.abc import Mapping
from typing import Any

KEEP_DONE = 20
_UUID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


@dataclass
class Done:
    """An operation that finished (`outcome` ok, or failed with `message`)."""

    operation_id: str
    transition: str
    playbook: str
    outcome: str
    message: str = ""
    endpoint: str = ""
    finished: float = 0.0
    # What it was asked (see digest); "" in records of an older version: never answered from them.
    asked: str = ""


@dataclass
class InstanceRecord:
    """One instance as the controller left it."""

    uuid: str
    state: str = "initial"
    endpoint: str = ""
    adopted: bool = False
    # The last configuration and parameters an operation ran with (a status playbook runs with them).
    configuration: str = ""
    parameters: dict[str, str] = field(default_factory=dict)
    identity: dict[str, str] = field(default_factory=dict)
    running: dict[str, Any] | None = None
    done: list[Done] = field(default_factory=list)

    def finished(self, operation_id: str, asked: str) -> Done | None:
        """The successful run of this operation id asking the same (`digest`), if it is recorded."""
        return next((d for d in self.done if d.operation_id == operation_id and d.outcome == "ok"
                     and asked and d.asked == asked), None)

    def record(self, done: Done) -> None:
        self.running = None
        self.done = [*(d for d in self.done if d.operation_id != done.operation_id), done][-KEEP_DONE:]


class StateStore:
    """Instance records in one directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def prepare(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)

    def path(self, uuid: str) -> Path:
        if not _UUID.match(uuid):
            raise ValueError(f"instance id {uuid!r} cannot name a state file")
        return self.directory / f"{uuid}.json"

    def load(self, uuid: str) -> InstanceRecord | None:
        try:
            data = json.loads(self.path(uuid).read_text())
        except FileNotFoundError:
            return None
        done = [Done(**d) for d in data.pop("done", [])]
        return InstanceRecord(**data, done=done)

    def save(self, record: InstanceRecord) -> None:
        path = self.path(record.uuid)
        partial = path.with_suffix(".json.partial")
        with open(partial, "w") as out:
            json.dump(asdict(record), out, sort_keys=True, indent=1)
            out.flush()
            os.fsync(out.fileno())
        os.replace(partial, path)

    def remove(self, uuid: str) -> None:
        self.path(uuid).unlink(missing_ok=True)


def digest(transition: str, configuration: str, parameters: Mapping[str, str], adopt: bool) -> str:
    """What an operation asks, as a SHA-256: its transition, configuration, parameters and adopt flag."""
    text = json.dumps([transition, configuration, dict(parameters), adopt], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def now() -> float:
    return round(time.time(), 3)
