"""The `ansible` controller (version V1.0.0): each lifecycle operation of an
instance runs the playbook its component's configuration names for it, with
ansible-runner, and the instance's identity, parameters, endpoint and
providers as extra variables. Run it with
`python -m controllers.ansible --playbook-dir DIR --state-dir DIR ...`.

Modules: `config` (the component configuration -> AnsibleConfig),
`variables` (the extra variables of a run), `events` (runner events ->
per-task lines, failures), `playbook` (one ansible-runner run, in a thread,
as a span), `state` (what ran, per instance, on disk), `controller` (the
operations).
"""

from controllers.ansible.controller import AnsibleController

NAME = "ansible"
VERSION = "V1.0.0"
ALIASES: tuple[str, ...] = ()

__all__ = ["ALIASES", "NAME", "VERSION", "AnsibleController"]
