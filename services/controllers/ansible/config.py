"""The component configuration of an Ansible-driven component: YAML text
naming a playbook per lifecycle operation, variables and an inventory.
Pure: no I/O. Mistakes raise ConfigError with a message a person can act on
(the controller turns it into a Permanent failure)."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

import yaml

OPERATIONS = ("create", "configure", "start", "reconfigure", "stop", "destroy", "reset")
# Playbooks that are not lifecycle operations: adopt (create with ctx.adopt) and status.
EXTRA_PLAYBOOKS = ("adopt", "status")
KEYS = ("playbooks", "vars", "inventory", "endpoint")
# Inventory or vars keys that hold a secret: those come from the controller's
# settings (--become-password-file, --vault-password-file), never from the model.
SECRET_KEYS = frozenset({
    "ansible_password", "ansible_ssh_pass", "ansible_ssh_password", "ansible_become_password",
    "ansible_become_pass", "ansible_sudo_pass", "ansible_sudo_password", "ansible_ssh_private_key",
    "ansible_vault_password",
})
MAX_TEXT = 256 * 1024


class ConfigError(ValueError):
    """The component configuration cannot be used as it is."""


def default_inventory() -> dict[str, Any]:
    """localhost over the local connection, with the controller's own Python."""
    return {"all": {"hosts": {"localhost": {"ansible_connection": "local",
                                            "ansible_python_interpreter": sys.executable}}}}


@dataclass(frozen=True)
class AnsibleConfig:
    """What a component's configuration says: a playbook per operation
    (relative to the controller's playbook directory), variables, inventory,
    and an endpoint to report when no playbook sets one."""

    playbooks: Mapping[str, str] = field(default_factory=dict)
    vars: Mapping[str, Any] = field(default_factory=dict)
    inventory: Mapping[str, Any] = field(default_factory=default_inventory)
    endpoint: str = ""

    def playbook(self, operation: str) -> str:
        """The playbook of an operation, "" when it has none (then it succeeds doing nothing)."""
        return self.playbooks.get(operation, "")

    def playbook_of(self, operation: str) -> str:
        """The playbook a lifecycle operation runs: its own; for reset without one, destroy's."""
        return self.playbook(operation) or (self.playbook("destroy") if operation == "reset" else "")


def parse_config(text: str) -> AnsibleConfig:
    """The configuration text (YAML) read and checked."""
    if len(text) > MAX_TEXT:
        raise ConfigError(f"the configuration is {len(text)} characters long, over {MAX_TEXT}")
    if not text.strip():
        raise ConfigError("the component's Configuration is empty: it must name playbooks, "
                          "e.g. 'playbooks: {create: install.yml, start: start.yml}'")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"the configuration is not YAML: {err}") from err
    if not isinstance(data, dict):
        raise ConfigError(f"the configuration must be a YAML mapping with keys {', '.join(KEYS)}, "
                          f"not {type(data).__name__}")
    unknown = sorted(str(k) for k in data if k not in KEYS)
    if unknown:
        raise ConfigError(f"unknown configuration key(s) {', '.join(unknown)}; known: {', '.join(KEYS)}")
    playbooks = _playbooks(data.get("playbooks"))
    variables = data.get("vars") or {}
    if not isinstance(variables, dict):
        raise ConfigError("'vars' must be a mapping of variable names to values")
    _no_secrets(variables, "vars")
    inventory = data.get("inventory")
    if inventory is None:
        inventory = default_inventory()
    elif not isinstance(inventory, dict) or not inventory:
        raise ConfigError("'inventory' must be a YAML inventory mapping, e.g. "
                          "'{all: {hosts: {web1: {ansible_host: 10.0.0.5}}}}'")
    _no_secrets(inventory, "inventory")
    if host_count(inventory) == 0:
        raise ConfigError("the inventory names no host")
    endpoint = data.get("endpoint") or ""
    if not isinstance(endpoint, str):
        raise ConfigError("'endpoint' must be a string")
    return AnsibleConfig(playbooks, variables, inventory, endpoint)


def _playbooks(value: object) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError("'playbooks' must map operations to playbook files, e.g. '{create: install.yml}'")
    known = (*OPERATIONS, *EXTRA_PLAYBOOKS)
    out: dict[str, str] = {}
    for operation, path in value.items():
        if operation not in known:
            raise ConfigError(f"'playbooks' names {operation!r}, which is not one of {', '.join(known)}")
        if not isinstance(path, str) or not path.strip():
            raise ConfigError(f"the playbook of {operation} must be a file name")
        out[str(operation)] = safe_relative(path.strip(), f"the playbook of {operation}")
    return out


def safe_relative(path: str, what: str) -> str:
    """A path inside the playbook directory: relative, without '..'."""
    pure = PurePosixPath(path)
    if pure.is_absolute() or ".." in pure.parts or "\\" in path:
        raise ConfigError(f"{what} ({path}) must be a path relative to the controller's playbook directory, "
                          "without '..'")
    return str(pure)


def _no_secrets(value: object, where: str) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            if str(key).lower() in SECRET_KEYS:
                raise ConfigError(f"{where} sets {key}: secrets never go in the model; give the controller "
                                  "--become-password-file or --vault-password-file, or keep it in a vault file")
            _no_secrets(item, where)
    elif isinstance(value, list):
        for item in value:
            _no_secrets(item, where)


def host_count(inventory: Mapping[str, Any]) -> int:
    """How many distinct hosts a YAML inventory names (in every group)."""
    hosts: set[str] = set()

    def walk(group: object) -> None:
        if not isinstance(group, dict):
            return
        found = group.get("hosts")
        if isinstance(found, dict):
            hosts.update(str(h) for h in found)
        elif isinstance(found, list):
            hosts.update(str(h) for h in found)
        children = group.get("children")
        if isinstance(children, dict):
            for child in children.values():
                walk(child)

    for group in inventory.values():
        walk(group)
    return len(hosts)
