"""python -m controllers.ansible: run the ansible controller."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click

from controllers.ansible import ALIASES, NAME, VERSION, AnsibleController
from controllers.ansible.playbook import RunnerSettings
from orchestration_sdk import run_controller

OPTIONS = [
    click.Option(["--playbook-dir"], type=click.Path(file_okay=False, exists=True), envvar="ORCH_ANSIBLE_PLAYBOOK_DIR",
                 required=True, help="The directory the playbooks named in component configurations are in."),
    click.Option(["--state-dir"], type=click.Path(file_okay=False), envvar="ORCH_ANSIBLE_STATE_DIR",
                 default="./.orch-ansible", show_default=True,
                 help="What ran, per instance, and Ansible's own temporary files and home. Keep it across restarts."),
    click.Option(["--concurrency"], type=click.IntRange(1, 256), envvar="ORCH_ANSIBLE_CONCURRENCY", default=4,
                 show_default=True, help="Playbook runs at once (each is an ansible-playbook process)."),
    click.Option(["--timeout"], type=click.FloatRange(1, 86400), envvar="ORCH_ANSIBLE_TIMEOUT", default=300.0,
                 show_default=True, help="Seconds one playbook run may take (also bounded by the operation's "
                                         "deadline); a run cut short is retryable."),
    click.Option(["--vault-password-file"], type=click.Path(dir_okay=False, exists=True),
                 envvar="ORCH_ANSIBLE_VAULT_PASSWORD_FILE", default=None,
                 help="Ansible vault password file (read by Ansible itself, never by the model)."),
    click.Option(["--become-password-file"], type=click.Path(dir_okay=False, exists=True),
                 envvar="ORCH_ANSIBLE_BECOME_PASSWORD_FILE", default=None,
                 help="File holding the become (sudo) password (read by Ansible itself)."),
]


def build(options: Mapping[str, Any]) -> AnsibleController:
    """The ansible controller configured from its command-line options."""
    settings = RunnerSettings(
        playbook_dir=Path(options["playbook_dir"]).resolve(),
        state_dir=Path(options["state_dir"]).resolve(),
        timeout=float(options["timeout"]),
        vault_password_file=str(Path(options["vault_password_file"]).resolve()) if options.get("vault_password_file") else "",
        become_password_file=str(Path(options["become_password_file"]).resolve()) if options.get("become_password_file") else "",
    )
    return AnsibleController(settings, int(options["concurrency"]))


def main() -> None:
    run_controller(build, name=NAME, version=VERSION, aliases=ALIASES, options=OPTIONS)


if __name__ == "__main__":
    main()
