"""python -m controllers.sim: run the sim controller process."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click

from controllers.sim import ALIASES, NAME, VERSION, SimController
from orchestration_sdk import run_controller

OPTIONS = [
    click.Option(["--state-file"], type=click.Path(dir_okay=False), default=None,
                 help="Journal of the instance table (kept across restarts); in memory when absent."),
    click.Option(["--op-log"], type=click.Path(dir_okay=False), default=None,
                 help="Append one JSON line per executed operation to this file."),
]


def build(options: Mapping[str, Any]) -> SimController:
    """The sim controller configured from its own command-line options."""
    state_file, op_log = options.get("state_file"), options.get("op_log")
    return SimController(Path(state_file) if state_file else None, Path(op_log) if op_log else None)


def main() -> None:
    run_controller(build, name=NAME, version=VERSION, aliases=ALIASES, options=OPTIONS)


if __name__ == "__main__":
    main()
