"""The libvirt controller without a suite: its settings, the domain XML it
builds, the state mapping, and its operations against libvirt's real test
driver (a private `test:///FILE.xml` node per test: its state lives in the
connection, so tests do not see each other's domains)."""

from __future__ import annotations

import logging
import uuid as uuidlib
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import pytest

from controllers.libvirt import LibvirtController
from controllers.libvirt.domainxml import (NAMESPACE, claim_in, digest_of, domain_name, domain_xml, lifecycle_state,
                                           parse_claim)
from controllers.libvirt.hypervisor import PASSWORD_ENV, USERNAME_ENV, Credentials, Hypervisor, shown_uri
from controllers.libvirt.settings import VmSettings, settings_of
from orchestration_sdk import UNKNOWN, InstanceRef, OperationContext, Permanent, Retryable

pytestmark = pytest.mark.integration  # the real libvirt test driver, in process

NODE = """<node>
  <domain type='test'><name>legacy-vm</name><memory unit='MiB'>128</memory><vcpu>1</vcpu><os><type>hvm</type></os></domain>
  <domain type='test'><name>legacy-db</name><memory unit='MiB'>128</memory><vcpu>1</vcpu><os><type>hvm</type></os></domain>
  {auth}
</node>
"""
PASSWORD = "pw-Libvirt-7d1c9e"


def context(uuid: str, transition: str = "create", parameters: Mapping[str, str] | None = None,
            adopt: bool = False, seconds: float = 30.0) -> OperationContext:
    import time
    return OperationContext(
        domain="lab", solution="vms", element="vm", cluster="V1.0.0", uuid=uuid, component="vm",
        component_version="V1.0.0", operation_id=f"op-{uuid}-{transition}", transition=transition, attempt=1,
        deadline=time.time() + seconds, configuration="", parameters=dict(parameters or {}), providers=(), siblings=(),
        logger=logging.LoggerAdapter(logging.getLogger("test"), {}), adopt=adopt)


def ref(uuid: str) -> InstanceRef:
    return context(uuid).instance


def fresh() -> str:
    return str(uuidlib.uuid4())


@pytest.fixture
def node(tmp_path: Path) -> Path:
    path = tmp_path / "node.xml"
    path.write_text(NODE.format(auth=""))
    return path


@pytest.fixture
async def controller(node: Path) -> AsyncIterator[LibvirtController]:
    built = LibvirtController(Hypervisor(f"test://{node}", Credentials(), concurrency=4, call_timeout=10))
    await built.open()
    try:
        yield built
    finally:
        await built.close()


# -- settings and XML ---------------------------------------------------------


def test_settings_defaults_and_bad_values_name_the_key() -> None:
    assert settings_of({}) == VmSettings()
    got = settings_of({"memory_mib": "1024", "vcpus": "2", "force_stop": "yes", "stop_timeout": "5", "orch_siblings": "x"})
    assert (got.memory_mib, got.vcpus, got.force_stop, got.stop_timeout) == (1024, 2, True, 5.0)
    for key, value in [("memory_mib", "lots"), ("vcpus", "0"), ("force_stop", "maybe"), ("stop_timeout", "-1"),
                       ("network", "a b"), ("disk", "relative.qcow2"), ("boot_timeout", "nan")]:
        with pytest.raises(Permanent, match=f"parameter {key}"):
            settings_of({key: value})


def test_domain_xml_names_the_instance_and_carries_its_metadata() -> None:
    uuid = fresh()
    text = domain_xml(ref(uuid), settings_of({"memory_mib": "256", "vcpus": "2", "network": "default"}), "kvm")
    root = ET.fromstring(text)
    assert root.get("type") == "kvm"
    assert root.findtext("name") == domain_name(uuid) == f"orch-{uuid}"
    assert root.findtext("uuid") == uuid
    assert (root.findtext("memory"), root.find("memory").get("unit"), root.findtext("vcpu")) == ("256", "MiB", "2")  # type: ignore[union-attr]
    assert root.find("devices/interface/source").get("network") == "default"  # type: ignore[union-attr]
    claim = claim_in(text)
    assert claim is not None and (claim.domain, claim.solution, claim.element, claim.uuid) == ("lab", "vms", "vm", uuid)
    # The digest follows what the configuration asks for, nothing else.
    assert digest_of(text) == digest_of(domain_xml(ref(uuid), settings_of({"memory_mib": "256", "vcpus": "2", "network": "default"}), "kvm"))
    assert digest_of(text) != digest_of(domain_xml(ref(uuid), settings_of({"memory_mib": "512", "vcpus": "2", "network": "default"}), "kvm"))


def test_a_template_is_rendered_and_its_name_and_metadata_are_the_instances() -> None:
    uuid = fresh()
    template = ("<domain type='test'><name>whatever</name><memory unit='MiB'>{{memory_mib}}</memory>"
                "<description>{{solution}}/{{element}} as {{name}}</description><os><type>hvm</type></os>"
                f"<metadata><orch:instance xmlns:orch='{NAMESPACE}'><orch:uuid>forged</orch:uuid></orch:instance>"
                "<other xmlns='urn:x'/></metadata></domain>")
    root = ET.fromstring(domain_xml(ref(uuid), settings_of({"domain_xml": template, "memory_mib": "64"}), "kvm"))
    assert root.get("type") == "test"
    assert root.findtext("name") == f"orch-{uuid}"
    assert root.findtext("description") == f"vms/vm as orch-{uuid}"
    assert root.findtext("memory") == "64"
    claims = root.findall(f"metadata/{{{NAMESPACE}}}instance")
    assert len(claims) == 1 and claims[0].findtext(f"{{{NAMESPACE}}}uuid") == uuid
    assert root.find("metadata/{urn:x}other") is not None
    with pytest.raises(Permanent, match=r"domain_xml: unknown placeholder \{\{nope\}\}"):
        domain_xml(ref(uuid), settings_of({"domain_xml": "<domain>{{nope}}</domain>"}), "kvm")
    with pytest.raises(Permanent, match="domain_xml: not XML"):
        domain_xml(ref(uuid), settings_of({"domain_xml": "<domain>"}), "kvm")
    with pytest.raises(Permanent, match="not <domain>"):
        domain_xml(ref(uuid), settings_of({"domain_xml": "<network/>"}), "kvm")
    assert parse_claim("<instance><uuid>u</uuid></instance>") is not None and parse_claim("<x/>") is None


def test_libvirt_states_map_to_lifecycle_states() -> None:
    # virDomainState: nostate, running, blocked, paused, shutdown, shutoff, crashed, pmsuspended
    assert [lifecycle_state(s) for s in range(8)] == [
        "inactive", "active", "active", "inactive", "active", "inactive", "failure", "inactive"]


def test_credentials_stay_out_of_reprs_uris_and_messages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert shown_uri(f"qemu+tcp://admin:{PASSWORD}@host:16509/system") == "qemu+tcp://admin@host:16509/system"
    assert shown_uri("qemu:///system") == "qemu:///system"
    monkeypatch.setenv(USERNAME_ENV, "orch")
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    loaded = Credentials.load(None)
    assert (loaded.username, loaded.password) == ("orch", PASSWORD) and PASSWORD not in repr(loaded)
    assert loaded.scrub(f"bad password {PASSWORD}") == "bad password ***"
    (tmp_path / "auth").write_text(f"# for the lab\nusername = lab\npassword={PASSWORD}x\n")
    assert Credentials.load(str(tmp_path / "auth")) == Credentials("lab", PASSWORD + "x")


# -- operations against the test driver ---------------------------------------


async def test_lifecycle_of_one_domain(controller: LibvirtController) -> None:
    uuid = fresh()
    name = f"orch-{uuid}"
    assert await controller.status(ref(uuid)) == UNKNOWN
    preview = await controller.preview(context(uuid))
    assert preview.startswith(f"would define {name}:\n<domain ") and 'type="test"' in preview.splitlines()[1]
    assert f"  <name>{name}</name>" in preview.splitlines()
    created = await controller.create(context(uuid, parameters={"memory_mib": "64"}))
    assert (created.endpoint, created.message) == (f"vm://{name}", f"defined {name}: 64 MiB, 1 vCPU")
    again = await controller.create(context(uuid, parameters={"memory_mib": "64"}))
    assert again.message == f"exists as {name} (shut off): nothing to do"
    assert (await controller.status(ref(uuid))).state == "inactive"
    same = await controller.configure(context(uuid, "configure", {"memory_mib": "64"}))
    assert same.message == f"{name} (shut off) already as configured: nothing to do"
    assert (await controller.preview(context(uuid, "configure", {"memory_mib": "96"}))).startswith(f"would redefine {name}")
    bigger = await controller.configure(context(uuid, "configure", {"memory_mib": "96"}))
    assert bigger.message == f"redefined {name}: 96 MiB, 1 vCPU"
    assert (await controller.preview(context(uuid, "start"))) == f"would boot {name} (shut off)"
    started = await controller.start(context(uuid, "start"))
    assert started.message == f"booted {name}"
    assert await controller.status(ref(uuid)) == type(UNKNOWN)("active", f"vm://{name}")
    assert (await controller.start(context(uuid, "start"))).message == f"{name} (running) already: nothing to do"
    assert "would shut down" in await controller.preview(context(uuid, "stop"))
    assert (await controller.stop(context(uuid, "stop"))).message == f"shut down {name}"
    assert (await controller.status(ref(uuid))).state == "inactive"
    assert (await controller.stop(context(uuid, "stop"))).message == f"{name} (shut off) already: nothing to do"
    assert (await controller.preview(context(uuid, "destroy"))) == f"would undefine {name} (shut off)"
    assert (await controller.destroy(context(uuid, "destroy"))).message == f"undefined {name}; its disks are kept"
    assert await controller.status(ref(uuid)) == UNKNOWN
    assert (await controller.destroy(context(uuid, "destroy"))).message == f"no domain {name}: nothing to undefine"


async def test_reset_powers_off_and_undefines_and_a_lost_domain_is_defined_again(controller: LibvirtController) -> None:
    uuid = fresh()
    await controller.create(context(uuid))
    await controller.start(context(uuid, "start"))
    assert (await controller.reset(context(uuid, "reset"))).message == f"undefined orch-{uuid} (powered off first); its disks are kept"
    # Gone behind the controller's back (or a test driver that started afresh): start defines it again.
    started = await controller.start(context(uuid, "start"))
    assert started.message.splitlines() == [f"domain was missing: defined orch-{uuid}: 512 MiB, 1 vCPU", f"booted orch-{uuid}"]
    assert (await controller.status(ref(uuid))).state == "active"


async def test_adopt_claims_an_existing_domain_by_name_or_pattern_once(controller: LibvirtController) -> None:
    first, second, third, plain = fresh(), fresh(), fresh(), fresh()
    by_name = {"adopt_name": "legacy-vm"}
    assert (await controller.preview(context(first, parameters=by_name, adopt=True))).startswith(
        "would adopt the first unclaimed domain named legacy-vm")
    adopted = await controller.create(context(first, parameters=by_name, adopt=True))
    assert (adopted.endpoint, adopted.message) == ("vm://legacy-vm", "adopted existing domain legacy-vm (running)")
    assert await controller.status(ref(first)) == type(UNKNOWN)("active", "vm://legacy-vm")
    # Claimed already: a second instance with the same rule gets a domain of its own.
    other = await controller.create(context(second, parameters=by_name, adopt=True))
    assert other.message == f"no unclaimed domain matched: defined orch-{second}: 512 MiB, 1 vCPU"
    # A glob: the first unclaimed domain by name.
    assert (await controller.create(context(third, parameters={"adopt_pattern": "legacy-*"}, adopt=True))).endpoint == "vm://legacy-db"
    # Without ctx.adopt nothing is claimed, whatever the configuration says.
    assert (await controller.create(context(plain, parameters={"adopt_pattern": "*"}))).endpoint == f"vm://orch-{plain}"
    # A restarted controller (same hypervisor, nothing in memory) finds the adopted domain by its metadata.
    restarted = LibvirtController(controller.hv)
    assert await restarted.status(ref(first)) == type(UNKNOWN)("active", "vm://legacy-vm")
    assert (await restarted.configure(context(first, "configure"))).message == "adopted domain legacy-vm: its definition is left as it is"
    assert (await restarted.destroy(context(first, "destroy"))).message == "undefined legacy-vm (powered off first); its disks are kept"
    assert await restarted.status(ref(first)) == UNKNOWN


async def test_bad_configuration_is_permanent_and_names_the_key(controller: LibvirtController) -> None:
    uuid = fresh()
    with pytest.raises(Permanent, match="parameter memory_mib"):
        await controller.create(context(uuid, parameters={"memory_mib": "a lot"}))
    with pytest.raises(Permanent, match="libvirt refused defineXML"):
        await controller.create(context(uuid, parameters={"domain_xml": "<domain type='nonsense'><name>x</name></domain>"}))
    assert await controller.status(ref(uuid)) == UNKNOWN


async def test_a_uri_that_asks_for_credentials_gets_them_from_the_environment(tmp_path: Path) -> None:
    node = tmp_path / "auth-node.xml"
    node.write_text(NODE.format(auth=f"<auth><user password='{PASSWORD}'>orch</user></auth>"))
    without = LibvirtController(Hypervisor(f"test://{node}", Credentials(), 2, 10))
    with pytest.raises(Retryable) as refused:
        await without.status(ref(fresh()))
    assert USERNAME_ENV in refused.value.message and PASSWORD not in refused.value.message
    await without.hv.close()
    wrong = LibvirtController(Hypervisor(f"test://{node}", Credentials("orch", "wrong"), 2, 10))
    with pytest.raises(Retryable, match="cannot authenticate|failed"):
        await wrong.status(ref(fresh()))
    await wrong.hv.close()
    right = LibvirtController(Hypervisor(f"test://{node}", Credentials("orch", PASSWORD), 2, 10))
    uuid = fresh()
    assert (await right.create(context(uuid))).message.startswith(f"defined orch-{uuid}")
    await right.hv.close()


# -- the connection: time-outs, the bound on concurrent calls, reconnecting -----


async def test_calls_time_out_retryable_and_run_at_most_concurrency_at_once(node: Path) -> None:
    import asyncio
    import threading
    import time

    short = Hypervisor(f"test://{node}", Credentials(), concurrency=2, call_timeout=0.3)
    release = threading.Event()
    try:
        with pytest.raises(Retryable, match=r"libvirt sleep of vm-1 did not answer within 0.3 s \(--call-timeout\)"):
            await short.call("sleep", lambda conn: release.wait(60), "vm-1")
    finally:
        release.set()  # the abandoned call ends; its worker is free again
        await short.close()
    # The bound on calls at once, with a time-out no queue on a loaded machine comes near.
    hv = Hypervisor(f"test://{node}", Credentials(), concurrency=2, call_timeout=30)
    try:
        running, most, lock = [0], [0], threading.Lock()

        def busy(conn: object) -> None:
            with lock:
                running[0] += 1
                most[0] = max(most[0], running[0])
            time.sleep(0.05)
            with lock:
                running[0] -= 1

        await asyncio.gather(*(hv.call("busy", busy) for _ in range(8)))
        assert most[0] == 2
    finally:
        await hv.close()


async def test_a_broken_connection_is_retryable_and_the_next_call_opens_a_new_one(controller: LibvirtController) -> None:
    uuid = fresh()
    await controller.create(context(uuid))
    conn = controller.hv._connection([])
    controller.hv._release(conn)
    conn.close()  # behind the controller's back
    with pytest.raises(Retryable):
        await controller.status(ref(uuid))
    # A new connection to a private test node starts from its file again: the domain is not there, legacy-vm is.
    assert await controller.status(ref(uuid)) == UNKNOWN
    assert (await controller.create(context(fresh(), parameters={"adopt_name": "legacy-vm"}, adopt=True))).endpoint == "vm://legacy-vm"
