"""A controller whose instances are files: instance <uuid> is <dir>/<uuid>.json,
holding its rendered configuration and whether it is started. The smallest
complete controller, built on the controller SDK alone (`pip install ./sdk`,
no engine): see README.md beside it.

    python files_controller.py --dir /tmp/files --dispatcher 127.0.0.1:50052 \\
        --credential-file files.credential --engine-credential-sha256 HEX
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click

from orchestration_sdk import (
    UNKNOWN,
    Controller,
    InstanceRef,
    InstanceState,
    OperationContext,
    Permanent,
    Result,
    Retryable,
    run_controller,
)


class FilesController(Controller):
    """Instances are JSON files in one directory. Every operation reads the
    file (the real state) before it writes, so a repeated one changes nothing."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    async def open(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)

    def _path(self, uuid: str) -> Path:
        return self.directory / f"{uuid}.json"

    def _endpoint(self, uuid: str) -> str:
        return self._path(uuid).as_uri()

    def _read(self, uuid: str) -> dict[str, Any] | None:
        try:
            return dict(json.loads(self._path(uuid).read_text()))
        except FileNotFoundError:
            return None
        except ValueError as err:
            raise Permanent(f"{self._path(uuid)} is not an instance file: {err}") from err

    def _write(self, uuid: str, record: dict[str, Any]) -> Result:
        path = self._path(uuid)
        partial = path.with_suffix(".json.partial")
        try:
            partial.write_text(json.dumps(record, sort_keys=True) + "\n")
            os.replace(partial, path)  # a crash leaves the old file or the new one, never half of one
        except OSError as err:
            raise Retryable(f"cannot write {path}: {err.strerror}", after=1.0) from err
        return Result(endpoint=self._endpoint(uuid))

    def _record(self, ctx: OperationContext, active: bool) -> dict[str, Any]:
        return {"uuid": ctx.uuid, "solution": f"{ctx.domain}/{ctx.solution}", "element": ctx.element,
                "cluster": ctx.cluster, "configuration": ctx.configuration, "active": active}

    async def create(self, ctx: OperationContext) -> Result:
        found = self._read(ctx.uuid)
        if found is not None:
            return Result(endpoint=self._endpoint(ctx.uuid))  # made already: by this operation's first delivery
        return self._write(ctx.uuid, self._record(ctx, active=False))

    async def configure(self, ctx: OperationContext) -> Result:
        return self._write(ctx.uuid, self._record(ctx, active=False))

    async def start(self, ctx: OperationContext) -> Result:
        if self._read(ctx.uuid) is None:
            raise Permanent(f"no instance file {self._path(ctx.uuid)} to start")
        return self._write(ctx.uuid, self._record(ctx, active=True))

    async def reconfigure(self, ctx: OperationContext) -> Result:
        return self._write(ctx.uuid, self._record(ctx, active=True))

    async def stop(self, ctx: OperationContext) -> Result:
        if self._read(ctx.uuid) is None:
            raise Permanent(f"no instance file {self._path(ctx.uuid)} to stop")
        return self._write(ctx.uuid, self._record(ctx, active=False))

    async def destroy(self, ctx: OperationContext) -> None:
        self._path(ctx.uuid).unlink(missing_ok=True)  # a missing file is destroyed already

    async def reset(self, ctx: OperationContext) -> None:
        self._path(ctx.uuid).unlink(missing_ok=True)

    async def status(self, ref: InstanceRef) -> InstanceState:
        found = self._read(ref.uuid)
        if found is None:
            return UNKNOWN
        return InstanceState("active" if found.get("active") else "inactive", self._endpoint(ref.uuid))


def make(options: Mapping[str, Any]) -> FilesController:
    return FilesController(Path(options["dir"]).absolute())


if __name__ == "__main__":
    run_controller(make, name="files", version="V1.0.0",
                   options=[click.Option(["--dir"], required=True, help="Directory of the instance files.")])
