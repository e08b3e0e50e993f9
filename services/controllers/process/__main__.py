"""python -m controllers.process: run the process controller."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click

from controllers.process import ALIASES, NAME, VERSION, ProcessController
from controllers.sdk import run_controller

OPTIONS = [
    click.Option(["--work-dir"], type=click.Path(file_okay=False), envvar="ORCH_PROCESS_WORK_DIR",
                 default="./.orch/process", show_default=True,
                 help="One directory per instance: pid file, logs, rendered files. Keep it across restarts: "
                      "the controller adopts the processes recorded there."),
    click.Option(["--base-dir"], type=click.Path(file_okay=False), default=None,
                 help="Offered to templates as {{base_dir}} (default: the current directory)."),
]


def build(options: Mapping[str, Any]) -> ProcessController:
    """The process controller configured from its own command-line options."""
    base_dir = options.get("base_dir") or os.getcwd()
    return ProcessController(Path(options["work_dir"]).resolve(), Path(base_dir).resolve())


def main() -> None:
    run_controller(build, name=NAME, version=VERSION, aliases=ALIASES, options=OPTIONS)


if __name__ == "__main__":
    main()
