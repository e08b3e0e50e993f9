"""What libvirt has: a domain's name, state and claim, read (and a domain
undefined) inside a worker thread, with the connection the call got."""

from __future__ import annotations

import uuid as uuidlib
from dataclasses import dataclass
from typing import Any

import libvirt

from controllers.libvirt.domainxml import NAMESPACE, STATE_NAMES, Claim, parse_claim

# Undefine what libvirt keeps beside a definition; the test driver knows only the first two flags.
UNDEFINE_ALL = (libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
                | libvirt.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)
UNDEFINE_BASIC = libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA


@dataclass(frozen=True)
class Found:
    """A domain as libvirt has it: name, state and whose it says it is."""

    name: str
    state: int
    claim: Claim | None

    @property
    def shown(self) -> str:
        return f"{self.name} ({STATE_NAMES.get(self.state, f'state {self.state}')})"


def describe(dom: Any) -> Found:
    # The persistent definition's metadata, where there is one: that is what defineXML replaces
    # (a running domain's live copy keeps the claim it booted with).
    flags = libvirt.VIR_DOMAIN_AFFECT_CONFIG if dom.isPersistent() else 0
    try:
        claim = parse_claim(dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, NAMESPACE, flags))
    except libvirt.libvirtError as err:
        if err.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN_METADATA:
            raise
        claim = None
    return Found(dom.name(), dom.state()[0], claim)


def describe_all(conn: Any) -> list[Found]:
    found = []
    for dom in conn.listAllDomains():
        try:
            found.append(describe(dom))
        except libvirt.libvirtError as err:
            if err.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:  # undefined since it was listed
                raise
    return found


def is_uuid(text: str) -> bool:
    try:
        uuidlib.UUID(text)
    except ValueError:
        return False
    return True


def undefine(dom: Any) -> None:
    try:
        dom.undefineFlags(UNDEFINE_ALL)
    except libvirt.libvirtError as err:
        if err.get_error_code() != libvirt.VIR_ERR_INVALID_ARG:  # flags this driver does not know
            raise
        dom.undefineFlags(UNDEFINE_BASIC)
