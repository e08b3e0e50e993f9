"""The libvirt controller when operations overlap, calls hang and deadlines
come, against libvirt's real test driver (a private `test:///FILE.xml` node
per test). A call can be held at a gate (a threading.Event) inside its
worker thread, before or after its real libvirt work, to order what would
otherwise be a race; nothing of libvirt is faked."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

import libvirt
import pytest

from controllers.libvirt import LibvirtController
from controllers.libvirt.domainxml import masked
from controllers.libvirt.hypervisor import Credentials, Hypervisor, shown_uri
from orchestration_sdk import Retryable
from test_libvirt_controller import NODE, context, fresh, ref

pytestmark = pytest.mark.integration  # the real libvirt test driver, in process
T = TypeVar("T")


class Gate:
    """Holds the next libvirt call of one kind in its worker thread until opened."""

    def __init__(self, after: bool = False) -> None:
        self.after = after  # hold it once its libvirt work is done (else before)
        self.entered, self.opened, self.left = threading.Event(), threading.Event(), threading.Event()

    def wrap(self, function: Callable[[Any], T]) -> Callable[[Any], T]:
        def gated(conn: Any) -> T:
            try:
                if not self.after:
                    self.entered.set()
                    assert self.opened.wait(60)
                result = function(conn)
                if self.after:
                    self.entered.set()
                    assert self.opened.wait(60)
                return result
            finally:
                self.left.set()
        return gated


class GatedHypervisor(Hypervisor):
    """A real Hypervisor whose next call of a kind waits at a gate."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gates: dict[str, Gate] = {}

    def gate(self, what: str, after: bool = False) -> Gate:
        self.gates[what] = gate = Gate(after)
        return gate

    async def call(self, what: str, function: Callable[[Any], T], domain: str = "") -> T:
        gate = self.gates.pop(what, None)
        return await super().call(what, gate.wrap(function) if gate else function, domain)


async def until(condition: Callable[[], object], timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "condition not met"
        await asyncio.sleep(0.01)


@pytest.fixture
async def gated(tmp_path: Path) -> AsyncIterator[LibvirtController]:
    node = tmp_path / "node.xml"
    node.write_text(NODE.format(auth=""))
    built = LibvirtController(GatedHypervisor(f"test://{node}", Credentials(), concurrency=6, call_timeout=30))
    await built.open()
    try:
        yield built
    finally:
        for gate in built.hv.gates.values():  # type: ignore[attr-defined]
            gate.opened.set()
        await built.close()


def gates(controller: LibvirtController) -> GatedHypervisor:
    assert isinstance(controller.hv, GatedHypervisor)
    return controller.hv


async def test_two_instances_never_adopt_one_domain_whatever_a_status_scan_saw(gated: LibvirtController) -> None:
    hv, a, b = gates(gated), fresh(), fresh()
    adopt = {"adopt_name": "legacy-vm"}
    claiming = hv.gate("setMetadata")
    first = asyncio.create_task(gated.create(context(a, parameters=adopt, adopt=True)))
    await until(claiming.entered.is_set)  # A chose legacy-vm and is claiming it
    second = asyncio.create_task(gated.create(context(b, parameters=adopt, adopt=True)))
    await until(lambda: len(gated._claiming._waiters or ()) >= 1)  # B waits for A's claim to end
    # A Status scan lists the domains before A's claim lands, and is slow to answer.
    stale = hv.gate("listAllDomains", after=True)
    status = asyncio.create_task(gated.status(ref(fresh())))
    await until(stale.entered.is_set)
    claiming.opened.set()
    assert (await first).endpoint == "vm://legacy-vm"
    await until(gated._claiming.locked)  # B's turn, while the stale scan is still under way
    stale.opened.set()
    other = await second
    assert other.endpoint == f"vm://orch-{b}" and other.message.startswith("no unclaimed domain matched"), other
    await status
    assert (await gated.status(ref(a))).endpoint == "vm://legacy-vm"
    assert (await gated.status(ref(b))).endpoint == f"vm://orch-{b}"


async def test_a_second_create_of_one_instance_claims_nothing_more(gated: LibvirtController) -> None:
    uuid = fresh()
    both = await asyncio.gather(*(gated.create(context(uuid, parameters={"adopt_pattern": "legacy-*"}, adopt=True))
                                  for _ in range(2)))
    assert [r.endpoint for r in both] == ["vm://legacy-db"] * 2
    assert both[1].message == "exists as legacy-db (running): nothing to do"
    # legacy-vm is still free for another instance.
    assert (await gated.create(context(fresh(), parameters={"adopt_name": "legacy-vm"}, adopt=True))).endpoint == "vm://legacy-vm"


async def test_a_retry_waits_for_the_call_its_cancelled_attempt_left_running(gated: LibvirtController) -> None:
    uuid = fresh()
    defining = gates(gated).gate("defineXML")
    attempt = asyncio.create_task(gated.create(context(uuid)))
    await until(defining.entered.is_set)
    attempt.cancel()  # as the SDK does at the deadline: the thread goes on with defineXML
    with pytest.raises(asyncio.CancelledError):
        await attempt
    retry = asyncio.create_task(gated.create(context(uuid)))
    done, _ = await asyncio.wait([retry], timeout=0.3)
    assert not done, "the retry went on while the first attempt's defineXML was under way"
    defining.opened.set()
    assert (await retry).message == f"exists as orch-{uuid} (shut off): nothing to do"


async def test_a_redefined_running_domain_is_as_configured_afterwards(gated: LibvirtController) -> None:
    uuid = fresh()
    await gated.create(context(uuid, parameters={"memory_mib": "64"}))
    await gated.start(context(uuid, "start", {"memory_mib": "64"}))
    bigger = await gated.configure(context(uuid, "reconfigure", {"memory_mib": "96"}))
    assert bigger.message == f"redefined orch-{uuid}: 96 MiB, 1 vCPU (the running guest gets it at its next boot)"
    # The live metadata still has the digest the domain booted with; the persistent definition has the new one.
    assert await gated.preview(context(uuid, "reconfigure", {"memory_mib": "96"})) == \
        f"orch-{uuid} (running) already as configured: nothing to do"
    again = await gated.reconfigure(context(uuid, "reconfigure", {"memory_mib": "96"}))
    assert again.message == f"orch-{uuid} (running) already as configured: nothing to do"


async def test_boot_seconds_past_the_deadline_are_retryable_and_the_retry_waits_the_rest(gated: LibvirtController) -> None:
    uuid, slow = fresh(), {"boot_seconds": "2.5"}
    await gated.create(context(uuid, parameters=slow))
    began = time.monotonic()
    # 2.5 s of boot_seconds do not fit in a deadline 2.2 s away: retryable at once, not cut short.
    with pytest.raises(Retryable, match=r"is booting: \d+ s of boot_seconds left"):
        await gated.start(context(uuid, "start", slow, seconds=2.2))
    # The retry (a new deadline) finds it running and waits what is left of boot_seconds, not nothing.
    assert (await gated.start(context(uuid, "start", slow))).message == f"booted orch-{uuid}"
    assert time.monotonic() - began >= 2.5
    assert (await gated.start(context(uuid, "start", slow))).message == f"orch-{uuid} (running) already: nothing to do"


async def test_calls_end_before_the_operations_deadline(gated: LibvirtController) -> None:
    uuid = fresh()
    await gated.create(context(uuid))
    hv = gates(gated)
    hung = hv.gate("create")
    began = time.monotonic()
    with pytest.raises(Retryable, match=r"libvirt create of orch-\S+ did not answer within [\d.]+ s \(the operation's deadline\)"):
        await gated.start(context(uuid, "start", seconds=2.0))
    assert time.monotonic() - began < 10, "the call ran to its 30 s --call-timeout"
    hung.opened.set()


async def test_a_domain_gone_during_an_operation_is_retryable(gated: LibvirtController) -> None:
    uuid = fresh()
    name = f"orch-{uuid}"
    await gated.create(context(uuid))
    await gated.start(context(uuid, "start"))
    shutting = gates(gated).gate("shutdown")
    stop = asyncio.create_task(gated.stop(context(uuid, "stop")))
    await until(shutting.entered.is_set)

    def gone(conn: Any) -> None:
        dom = conn.lookupByName(name)
        dom.destroy()
        dom.undefine()

    await gated.hv.call("undefine", gone, name)
    shutting.opened.set()
    with pytest.raises(Retryable, match=f"domain {name} went missing during the stop"):
        await stop


async def test_a_timed_out_call_retires_its_connection(tmp_path: Path) -> None:
    node = tmp_path / "node.xml"
    node.write_text(NODE.format(auth=""))
    hv = Hypervisor(f"test://{node}", Credentials(), concurrency=2, call_timeout=30)
    try:
        before = await hv.call("who", lambda conn: conn)
        hv.call_timeout = 0.3  # for the one call that hangs
        release, finished = threading.Event(), threading.Event()

        def hang(conn: Any) -> None:
            release.wait(60)
            finished.set()

        with pytest.raises(Retryable, match=r"libvirt hang of vm-1 did not answer within 0.3 s \(--call-timeout\)"):
            await hv.call("hang", hang, "vm-1")
        hv.call_timeout = 30
        after = await hv.call("who", lambda conn: conn)
        assert after is not before, "the next call took the connection the timed-out one hangs on"
        release.set()
        await until(lambda: before._o is None)  # closed once the abandoned call returned
    finally:
        await hv.close()


async def test_close_leaves_the_event_loop_free_while_the_connection_is_busy(tmp_path: Path) -> None:
    node = tmp_path / "node.xml"
    node.write_text(NODE.format(auth=""))
    hv = Hypervisor(f"test://{node}", Credentials(), concurrency=1, call_timeout=0.5)
    await hv.call("open", lambda conn: None)
    held, release = threading.Event(), threading.Event()

    def opening() -> None:  # as a worker in openAuth holds the connection's lock
        with hv._lock:
            held.set()
            release.wait(3.0)

    threading.Thread(target=opening, daemon=True).start()
    await until(held.is_set)
    ticks = [0]

    async def tick() -> None:
        while True:
            ticks[0] += 1
            await asyncio.sleep(0.01)

    ticking = asyncio.create_task(tick())
    began = time.monotonic()
    await hv.close()
    ticking.cancel()
    release.set()
    assert time.monotonic() - began < 2.0 and ticks[0] >= 5, "close held up the event loop"


def test_a_password_in_the_uri_is_shown_nowhere() -> None:
    secret = "uri-Pw%21-93be"
    assert shown_uri(f"qemu+tcp://:{secret}@[::1]:16509/system") == "qemu+tcp://[::1]:16509/system"
    assert shown_uri(f"qemu+ssh://root:{secret}@[fe80::1]/system?keyfile=/k") == "qemu+ssh://root@[fe80::1]/system?keyfile=/k"
    assert shown_uri("qemu+ssh://root@host/system") == "qemu+ssh://root@host/system"


async def test_a_libvirt_error_that_echoes_the_uri_password_is_masked(tmp_path: Path) -> None:
    node = tmp_path / "node.xml"
    node.write_text(NODE.format(auth=""))
    secret = "uri-Pw%21-93be"
    hv = Hypervisor(f"test://{node}", Credentials(), concurrency=1, call_timeout=10)
    hv._secrets = ("uri-Pw%21-93be", "uri-Pw!-93be")  # what a URI with that password gives (uri_secrets)
    try:
        def echo(conn: Any) -> None:
            libvirt.virResetLastError()  # the error below is this one alone
            raise libvirt.libvirtError(f"cannot connect to qemu+tcp://orch:{secret}@host/system (uri-Pw!-93be)")

        with pytest.raises(Retryable) as failed:
            await hv.call("echo", echo)
        assert "uri-Pw" not in failed.value.message and "qemu+tcp://orch:***@host" in failed.value.message
    finally:
        await hv.close()


def test_the_uri_password_is_a_secret_as_written_and_decoded() -> None:
    from controllers.libvirt.hypervisor import uri_secrets
    assert set(uri_secrets("qemu+tcp://orch:uri-Pw%21-93be@host/system")) == {"uri-Pw%21-93be", "uri-Pw!-93be"}
    assert uri_secrets("qemu:///system") == () and uri_secrets("qemu+ssh://root@h/system") == ()


async def test_preview_masks_console_passwords_and_says_resume_for_a_paused_domain(gated: LibvirtController) -> None:
    uuid = fresh()
    template = ("<domain type='test'><name>x</name><memory unit='MiB'>64</memory><os><type>hvm</type></os>"
                "<devices><graphics type='vnc' passwd='vnc-Secret-1'/></devices></domain>")
    shown = await gated.preview(context(uuid, parameters={"domain_xml": template}))
    assert "vnc-Secret-1" not in shown and 'passwd="***"' in shown
    assert masked("<graphics passwd='a' x='b'/>") == "<graphics passwd='***' x='b'/>"
    await gated.create(context(uuid))
    await gated.start(context(uuid, "start"))
    await gated.hv.call("suspend", lambda conn: conn.lookupByName(f"orch-{uuid}").suspend())
    assert await gated.preview(context(uuid, "start")) == f"would resume orch-{uuid} (paused)"
    assert (await gated.start(context(uuid, "start"))).message == f"resumed orch-{uuid}"
