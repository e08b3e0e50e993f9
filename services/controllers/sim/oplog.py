"""The sim's operation log: one JSON line per operation it executed, for
tests and demos that check what the engine asked for, in which order."""

from __future__ import annotations

import json
from pathlib import Path
from typing import IO

OUTCOMES = ("ok", "retryable", "permanent")


class OpLog:
    """Appends to `path` (opened once, buffered until flush()); a no-op without a path."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._file: IO[str] | None = None

    def open(self) -> None:
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("a", encoding="utf-8")

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def write(
        self,
        *,
        solution: str,
        element: str,
        cluster: str,
        instance: str,
        operation: str,
        operation_id: str,
        outcome: str,
        started: float,
        finished: float,
        deadline: float = 0.0,
    ) -> None:
        """Append one operation (outcome is one of OUTCOMES; `deadline`, in
        time.time() seconds, is the engine's: it sent the operation its
        operation time-out before)."""
        if self._file is None:
            return
        line = {
            "solution": solution,
            "element": element,
            "cluster": cluster,
            "instance": instance,
            "operation": operation,
            "operation_id": operation_id,
            "outcome": outcome,
            "started": started,
            "finished": finished,
            "deadline": deadline,
        }
        self._file.write(json.dumps(line) + "\n")

    def flush(self) -> None:
        """Write the buffered lines to the file."""
        if self._file is not None:
            self._file.flush()
