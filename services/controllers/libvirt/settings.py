"""An instance's settings, from the cluster's parameters (the architecture,
element and cluster Configuration maps merged, values as strings).

Keys (all optional): `memory_mib`, `vcpus`, `domain_type`, `arch`, `disk`,
`disk_format`, `network`, `domain_xml` (a template of the whole domain),
`boot_timeout`, `boot_seconds`, `stop_timeout`, `force_stop`, `adopt_name`
(a template), `adopt_pattern` (a glob). Keys of other controllers are
ignored; a bad value is a `Permanent` error naming the key.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

from orchestration_sdk import Permanent

# A libvirt network or disk format name: letters, digits and a few marks.
_WORD = re.compile(r"[A-Za-z0-9_.+-]{1,64}")
_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
TRUE, FALSE = {"true", "yes", "on", "1"}, {"false", "no", "off", "0", ""}


@dataclass(frozen=True)
class VmSettings:
    """What one instance's domain is made of and how it is driven."""

    memory_mib: int = 512
    vcpus: int = 1
    domain_type: str = ""  # "" = the connection's own: "test" on the test driver, else "kvm"
    arch: str = ""  # "" = the hypervisor's default
    disk: str = ""  # path of a disk image the domain boots from ("" = none)
    disk_format: str = "qcow2"
    network: str = ""  # a libvirt network to attach ("" = none)
    domain_xml: str = ""  # a template of the whole <domain>, instead of the keys above
    boot_timeout: float = 60.0  # seconds from create() until the domain must be RUNNING
    boot_seconds: float = 0.0  # seconds a booted guest gets before it counts as active
    stop_timeout: float = 60.0  # seconds from shutdown() until the domain must be SHUTOFF
    force_stop: bool = False  # then destroy() (power off) instead of failing the stop
    adopt_name: str = ""  # on adopt: the name (a template) of the domain to claim
    adopt_pattern: str = ""  # on adopt: a glob; the first unclaimed domain (by name) is claimed


def _integer(parameters: Mapping[str, str], key: str, default: int, low: int, high: int) -> int:
    text = parameters.get(key, "").strip()
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        raise Permanent(f"parameter {key}: {text!r} is not a whole number") from None
    if not low <= value <= high:
        raise Permanent(f"parameter {key}: {value} is out of range {low}..{high}")
    return value


def _seconds(parameters: Mapping[str, str], key: str, default: float, high: float = 86400.0) -> float:
    text = parameters.get(key, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        raise Permanent(f"parameter {key}: {text!r} is not a number of seconds") from None
    if not (math.isfinite(value) and 0 <= value <= high):
        raise Permanent(f"parameter {key}: {text} is out of range 0..{high:g} seconds")
    return value


def _word(parameters: Mapping[str, str], key: str, default: str) -> str:
    text = parameters.get(key, "").strip()
    if text and not _WORD.fullmatch(text):
        raise Permanent(f"parameter {key}: {text!r} is not a name (letters, digits and _ . + -)")
    return text or default


def _flag(parameters: Mapping[str, str], key: str) -> bool:
    text = parameters.get(key, "").strip().lower()
    if text in TRUE:
        return True
    if text in FALSE:
        return False
    raise Permanent(f"parameter {key}: {text!r} is not true or false")


def settings_of(parameters: Mapping[str, str]) -> VmSettings:
    """The settings the parameters give (defaults for missing keys)."""
    disk = parameters.get("disk", "").strip()
    if disk and not disk.startswith("/"):
        raise Permanent(f"parameter disk: {disk!r} is not an absolute path")
    return VmSettings(
        memory_mib=_integer(parameters, "memory_mib", 512, 16, 16 * 1024 * 1024),
        vcpus=_integer(parameters, "vcpus", 1, 1, 4096),
        domain_type=_word(parameters, "domain_type", ""),
        arch=_word(parameters, "arch", ""),
        disk=disk,
        disk_format=_word(parameters, "disk_format", "qcow2"),
        network=_word(parameters, "network", ""),
        domain_xml=parameters.get("domain_xml", "").strip(),
        boot_timeout=_seconds(parameters, "boot_timeout", 60.0),
        boot_seconds=_seconds(parameters, "boot_seconds", 0.0),
        stop_timeout=_seconds(parameters, "stop_timeout", 60.0),
        force_stop=_flag(parameters, "force_stop"),
        adopt_name=parameters.get("adopt_name", "").strip(),
        adopt_pattern=parameters.get("adopt_pattern", "").strip(),
    )


def render(key: str, template: str, values: Mapping[str, str]) -> str:
    """`{{name}}` placeholders replaced by `values`; an unknown name is a
    Permanent error naming the key and the names there are."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            raise Permanent(f"parameter {key}: unknown placeholder {{{{{name}}}}} (known: {', '.join(sorted(values))})")
        return values[name]

    return _PLACEHOLDER.sub(value, template)
