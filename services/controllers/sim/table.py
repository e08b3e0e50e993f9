"""The sim's instance table, kept across restarts in an append-only JSON-lines
journal: one short line per change, compacted when the table is opened (and
when the journal grows far beyond the table), never rewritten per operation."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from orchestration_sdk import StateName

log = logging.getLogger("controllers.sim.table")

# Rewrite the journal once it holds this many lines more than the table has
# records: bounded disk use at an amortised cost of one line per change.
COMPACT_SLACK = 50_000


@dataclass(frozen=True)
class Record:
    """One instance the sim has."""

    uuid: str
    state: StateName
    endpoint: str
    solution: str
    element: str
    cluster: str


def _put_entry(record: Record) -> dict[str, str]:
    # By hand: dataclasses.asdict deep-copies and costs several times more.
    return {
        "op": "put",
        "uuid": record.uuid,
        "state": record.state,
        "endpoint": record.endpoint,
        "solution": record.solution,
        "element": record.element,
        "cluster": record.cluster,
    }


class InstanceTable:
    """uuid -> Record, journaled to `path` (in memory only when path is None).

    Changes are buffered until flush() (the sim flushes once per message of
    results, before the engine hears of them); then they are on disk (in the
    OS page cache) and survive a SIGKILL of the process. Surviving power
    loss would need an fsync, which the simulator does not pay for.
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._records: dict[str, Record] = {}
        self._journal: IO[str] | None = None
        self._lines = 0

    def __len__(self) -> int:
        return len(self._records)

    def get(self, uuid: str) -> Record | None:
        """The record of an instance, or None when the sim has no such instance."""
        return self._records.get(uuid)

    def records(self) -> list[Record]:
        """Every record (a copy)."""
        return list(self._records.values())

    def open(self) -> None:
        """Load the journal, compact it, and keep it open for appending."""
        if self.path is None:
            return
        self._records = self._load(self.path)
        self._compact()
        log.info("instance table %s: %d instances", self.path, len(self._records))

    def close(self) -> None:
        if self._journal is not None:
            self._journal.close()
            self._journal = None

    def put(self, record: Record) -> None:
        """Insert or replace a record (no write when nothing changed)."""
        if self._records.get(record.uuid) == record:
            return
        self._records[record.uuid] = record
        self._append(_put_entry(record))

    def remove(self, uuid: str) -> bool:
        """Remove a record; False when there was none."""
        if self._records.pop(uuid, None) is None:
            return False
        self._append({"op": "del", "uuid": uuid})
        return True

    def _append(self, entry: dict[str, str]) -> None:
        if self._journal is None:
            return
        self._journal.write(json.dumps(entry, separators=(",", ":")) + "\n")
        self._lines += 1
        if self._lines > len(self._records) + COMPACT_SLACK:
            self._compact()

    def flush(self) -> None:
        """Write the buffered changes to the journal."""
        if self._journal is not None:
            self._journal.flush()

    @staticmethod
    def _load(path: Path) -> dict[str, Record]:
        records: dict[str, Record] = {}
        if not path.exists():
            return records
        skipped = 0
        with path.open("r", encoding="utf-8") as journal:
            for line in journal:
                try:
                    entry = json.loads(line)
                    if entry.pop("op") == "del":
                        records.pop(entry["uuid"], None)
                    else:
                        records[entry["uuid"]] = Record(**entry)
                except (ValueError, KeyError, TypeError):
                    # A line torn by a kill in mid-write, or damage: skip it.
                    skipped += 1
        if skipped:
            log.warning("instance table %s: skipped %d unreadable lines", path, skipped)
        return records

    def _compact(self) -> None:
        """Replace the journal by one line per record, atomically."""
        assert self.path is not None
        self.close()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".compact")
        with tmp.open("w", encoding="utf-8") as out:
            for record in self._records.values():
                out.write(json.dumps(_put_entry(record), separators=(",", ":")) + "\n")
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, self.path)
        self._lines = len(self._records)
        self._journal = self.path.open("a", encoding="utf-8")
