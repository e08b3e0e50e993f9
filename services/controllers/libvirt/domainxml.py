"""The domain XML of an instance, and the metadata that ties a domain to it.

A domain the controller defines is named `orch-<uuid>`, takes the instance's
uuid as its libvirt uuid, and carries in its `<metadata>` an
`<orch:instance>` element (namespace `NAMESPACE`) naming domain, solution,
element, cluster and uuid, plus a digest of what the configuration asked for:
a restarted controller finds its domains (and adopted ones, which keep their
names) by it, and configure redefines a domain only when that digest changed.
"""

from __future__ import annotations

import hashlib
import re
import uuid as uuidlib
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass
from xml.sax.saxutils import escape

from orchestration_sdk import InstanceRef, Permanent

from controllers.libvirt.settings import VmSettings, render

NAMESPACE = "urn:orchestration:libvirt:instance:1"
PREFIX = "orch"
NAME_PREFIX = "orch-"
ET.register_namespace(PREFIX, NAMESPACE)

# libvirt domain states (virDomainState) -> lifecycle state.
NOSTATE, RUNNING, BLOCKED, PAUSED, SHUTDOWN, SHUTOFF, CRASHED, PMSUSPENDED = range(8)
STATE_NAMES = {NOSTATE: "no state", RUNNING: "running", BLOCKED: "blocked", PAUSED: "paused", SHUTDOWN: "shutting down",
               SHUTOFF: "shut off", CRASHED: "crashed", PMSUSPENDED: "suspended by the guest"}


def lifecycle_state(libvirt_state: int) -> str:
    """The instance state a domain in this libvirt state is in: running (or
    blocked, or shutting down: still up) -> active; shut off, paused,
    suspended, no state -> inactive (not serving; start boots or resumes it);
    crashed -> failure."""
    if libvirt_state in (RUNNING, BLOCKED, SHUTDOWN):
        return "active"
    if libvirt_state == CRASHED:
        return "failure"
    return "inactive"


def domain_name(uuid: str) -> str:
    """The name of the domain the controller defines for an instance."""
    return NAME_PREFIX + uuid


def endpoint(name: str) -> str:
    return f"vm://{name}"


@dataclass(frozen=True)
class Claim:
    """What a domain's orchestration metadata says: whose it is."""

    domain: str
    solution: str
    element: str
    cluster: str
    uuid: str
    digest: str = ""


def claim_of(ref: InstanceRef, digest: str = "") -> Claim:
    return Claim(ref.domain, ref.solution, ref.element, ref.cluster, ref.uuid, digest)


def metadata_xml(claim: Claim) -> str:
    """The `<orch:instance>` element, as setMetadata takes it (without prefix: libvirt adds it)."""
    fields = "".join(f"<{key}>{escape(getattr(claim, key))}</{key}>"
                     for key in ("domain", "solution", "element", "cluster", "uuid", "digest"))
    return f"<instance>{fields}</instance>"


def parse_claim(text: str) -> Claim | None:
    """The claim in metadata text as libvirt returns it (None if it is not one)."""
    try:
        root = ET.fromstring(text)
    except ET.ParseError:
        return None
    values = {child.tag.rsplit("}", 1)[-1]: (child.text or "") for child in root}
    if not values.get("uuid"):
        return None
    return Claim(values.get("domain", ""), values.get("solution", ""), values.get("element", ""),
                 values.get("cluster", ""), values["uuid"], values.get("digest", ""))


def template_values(ref: InstanceRef, settings: VmSettings, name: str) -> dict[str, str]:
    """What `{{...}}` may name in domain_xml and adopt_name (XML-escaped)."""
    raw = {"name": name, "uuid": ref.uuid, "domain": ref.domain, "solution": ref.solution, "element": ref.element,
           "cluster": ref.cluster, "memory_mib": str(settings.memory_mib), "vcpus": str(settings.vcpus),
           "disk": settings.disk, "network": settings.network}
    return {key: escape(value, {"'": "&apos;", '"': "&quot;"}) for key, value in raw.items()}


def _plain_xml(settings: VmSettings, domain_type: str) -> str:
    arch = f" arch='{settings.arch}'" if settings.arch else ""
    devices = []
    if settings.disk:
        devices.append(f"<disk type='file' device='disk'><driver name='qemu' type='{settings.disk_format}'/>"
                       f"<source file='{escape(settings.disk, {chr(39): '&apos;'})}'/><target dev='vda' bus='virtio'/></disk>")
    if settings.network:
        devices.append(f"<interface type='network'><source network='{settings.network}'/><model type='virtio'/></interface>")
    return (f"<domain type='{domain_type}'><name>{{{{name}}}}</name>"
            f"<memory unit='MiB'>{settings.memory_mib}</memory><vcpu>{settings.vcpus}</vcpu>"
            f"<os><type{arch}>hvm</type><boot dev='hd'/></os>"
            f"<on_poweroff>destroy</on_poweroff><on_reboot>restart</on_reboot><on_crash>preserve</on_crash>"
            f"<devices>{''.join(devices)}</devices></domain>")


def domain_xml(ref: InstanceRef, settings: VmSettings, domain_type: str) -> str:
    """The XML to define for an instance: `domain_xml` rendered, or one made
    from the keys; named `orch-<uuid>` with the instance's uuid (when it is
    one) and the instance's metadata, whatever the template says there."""
    name = domain_name(ref.uuid)
    source = settings.domain_xml or _plain_xml(settings, settings.domain_type or domain_type)
    text = render("domain_xml", source, template_values(ref, settings, name))
    try:
        root = ET.fromstring(text)
    except ET.ParseError as err:
        raise Permanent(f"parameter domain_xml: not XML once rendered ({err})") from None
    if root.tag != "domain":
        raise Permanent(f"parameter domain_xml: the root element is <{root.tag}>, not <domain>")
    _set_child(root, "name", name)
    try:
        _set_child(root, "uuid", str(uuidlib.UUID(ref.uuid)))
    except ValueError:
        for old in root.findall("uuid"):
            root.remove(old)  # libvirt makes one
    for old in root.findall("metadata"):
        for child in list(old):
            if child.tag.startswith("{" + NAMESPACE + "}"):
                old.remove(child)
    metadata = root.find("metadata")
    if metadata is None:
        metadata = ET.SubElement(root, "metadata")
    unsigned = ET.tostring(root, encoding="unicode")
    digest = hashlib.sha256(unsigned.encode()).hexdigest()[:16]
    instance = ET.fromstring(metadata_xml(claim_of(ref, digest)))
    metadata.append(_namespaced(instance))
    ET.indent(root)
    return ET.tostring(root, encoding="unicode")


def digest_of(xml_text: str) -> str:
    """The digest domain_xml recorded in an XML it made ("" if none)."""
    claim = claim_in(xml_text)
    return claim.digest if claim else ""


def claim_in(xml_text: str) -> Claim | None:
    """The claim inside a whole domain XML (None if none)."""
    try:
        root = ET.fromstring(xml_text)
    except ET.ParseError:
        return None
    found = root.find(f"metadata/{{{NAMESPACE}}}instance")
    return parse_claim(ET.tostring(found, encoding="unicode")) if found is not None else None


def summary(xml_text: str) -> Mapping[str, str]:
    """Memory (MiB) and vCPUs of a domain XML, for messages."""
    root = ET.fromstring(xml_text)
    memory = root.find("memory")
    mib = ""
    if memory is not None and (memory.text or "").strip().isdigit():
        factor = {"KiB": 1 / 1024, "k": 1 / 1024, "MiB": 1, "M": 1, "GiB": 1024, "G": 1024}.get(memory.get("unit", "KiB"), 0)
        mib = f"{int(int(memory.text or 0) * factor)}" if factor else ""
    vcpu = root.find("vcpu")
    return {"memory_mib": mib, "vcpus": (vcpu.text or "").strip() if vcpu is not None else ""}


def _set_child(root: ET.Element, tag: str, text: str) -> None:
    found = root.find(tag)
    if found is None:
        found = ET.Element(tag)
        root.insert(0 if tag == "name" else 1, found)
    found.text = text


def _namespaced(element: ET.Element) -> ET.Element:
    element.tag = f"{{{NAMESPACE}}}{element.tag}"
    for child in element:
        _namespaced(child)
    return element


_PASSWD = re.compile(r"""(\spasswd\s*=\s*)(["'])(.*?)\2""", re.DOTALL)


def masked(xml_text: str) -> str:
    """A domain XML to show people: the values of `passwd` attributes (a
    `<graphics>` console password from domain_xml) replaced by ***."""
    return _PASSWD.sub(lambda match: f"{match.group(1)}{match.group(2)}***{match.group(2)}", xml_text)
