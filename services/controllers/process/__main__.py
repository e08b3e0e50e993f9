"""python -m controllers.process: run the process controller."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click

from controllers.process import ALIASES, NAME, VERSION, ProcessController
from controllers.process.confine import DEFAULT_RUN_AS, RUN_AS_ENV
from controllers.sdk import run_controller

OPTIONS = [
    click.Option(["--work-dir"], type=click.Path(file_okay=False), envvar="ORCH_PROCESS_WORK_DIR",
                 default="./.orch-process", show_default=True,
                 help="One directory per instance: pid file, logs, rendered files. Keep it across restarts: "
                      "the controller adopts the processes recorded there. Keep it out of $ORCH_HOME (orch up "
                      "uses $ORCH_HOME-process): instances must reach it, and must not reach the secrets."),
    click.Option(["--base-dir"], type=click.Path(file_okay=False), default=None,
                 help="Offered to templates as {{base_dir}} (default: the current directory)."),
    # Not click's envvar: click takes an empty variable for an unset one, and '' means something here.
    click.Option(["--run-as"], metavar="USER", default=None,
                 help=f"When the controller runs as root: the user instance processes run as (default: "
                      f"${RUN_AS_ENV}, else {DEFAULT_RUN_AS}; '' for root itself). Ignored when not root: "
                      "instances then run as the controller's user."),
]


def build(options: Mapping[str, Any]) -> ProcessController:
    """The process controller configured from its own command-line options."""
    base_dir = options.get("base_dir") or os.getcwd()
    run_as = options.get("run_as")
    if run_as is None:
        run_as = os.environ.get(RUN_AS_ENV, DEFAULT_RUN_AS)
    try:
        return ProcessController(Path(options["work_dir"]).resolve(), Path(base_dir).resolve(), run_as)
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint="--run-as") from err


def main() -> None:
    run_controller(build, name=NAME, version=VERSION, aliases=ALIASES, options=OPTIONS)


if __name__ == "__main__":
    main()
