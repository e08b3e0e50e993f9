"""python -m controllers.process: run the process controller."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click

from controllers.process import ALIASES, NAME, VERSION, ProcessController
from controllers.process.confine import DEFAULT_RUN_AS, DEFAULT_UIDS, PER_DOMAIN, RUN_AS_ENV, UIDS_ENV
from orchestration_sdk import run_controller

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
                 help=f"When the controller runs as root: who instance processes run as (default: ${RUN_AS_ENV}, "
                      f"else {DEFAULT_RUN_AS}): '{PER_DOMAIN}' for a uid of each domain's own (see --uids), a user "
                      "name or uid for that one user, '' for root itself. Ignored when not root: instances then "
                      "run as the controller's user."),
    click.Option(["--uids"], metavar="FIRST-LAST", envvar=UIDS_ENV, default=DEFAULT_UIDS, show_default=True,
                 help="The uids handed to domains, one each, for good (gid of the same number); the numbers must "
                      "not be used on this host, and each controller on a host needs its own range."),
]


def build(options: Mapping[str, Any]) -> ProcessController:
    """The process controller configured from its own command-line options."""
    base_dir = options.get("base_dir") or os.getcwd()
    run_as = options.get("run_as")
    if run_as is None:
        run_as = os.environ.get(RUN_AS_ENV, DEFAULT_RUN_AS)
    try:
        return ProcessController(Path(options["work_dir"]).resolve(), Path(base_dir).resolve(), run_as,
                                 options.get("uids") or DEFAULT_UIDS)
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint="--run-as or --uids") from err


def main() -> None:
    run_controller(build, name=NAME, version=VERSION, aliases=ALIASES, options=OPTIONS)


if __name__ == "__main__":
    main()
