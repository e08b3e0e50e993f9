"""The operations of the libvirt controller: an instance is one libvirt
domain. create defines it (or, asked to adopt, claims an existing one), start
boots it, stop shuts it down, destroy and reset undefine it; status reads
its libvirt state. Every operation reads the domain's real state first, so a
repeated one changes nothing; the operations of one instance run one at a
time, after whatever calls an earlier attempt abandoned."""

from __future__ import annotations

import asyncio
import fnmatch
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import libvirt

from orchestration_sdk import (UNKNOWN, Controller, InstanceLocks, InstanceRef, InstanceState, OperationContext, Permanent,
                               Result, Retryable)
from orchestration_sdk.runtime.backoff import Backoff

from controllers.libvirt.domainxml import (CRASHED, NAMESPACE, PAUSED, PMSUSPENDED, PREFIX, RUNNING, BLOCKED, SHUTDOWN,
                                           SHUTOFF, STATE_NAMES, claim_of, digest_of, domain_name, domain_xml, endpoint,
                                           lifecycle_state, masked, metadata_xml, summary, template_values)
from controllers.libvirt.domains import Found, describe, describe_all, is_uuid, undefine
from controllers.libvirt.hypervisor import Hypervisor, Missing
from controllers.libvirt.settings import VmSettings, render, settings_of

log = logging.getLogger("controllers.libvirt")
POLL = Backoff(first=0.05, maximum=1.0)
UP = {RUNNING, BLOCKED}

class LibvirtController(Controller):
    """Instances are libvirt domains on one hypervisor (see the module doc)."""

    def __init__(self, hypervisor: Hypervisor) -> None:
        self.hv = hypervisor
        self._adopted: dict[str, str] = {}  # instance uuid -> name of a domain that keeps its own name
        self._claiming = asyncio.Lock()  # one adoption at a time (see _claim)
        self._locks = InstanceLocks()  # one operation per instance
        self._booted: dict[str, float] = {}  # instance uuid -> time.time() its start booted it (boot_seconds)
        self._scanning: asyncio.Future[list[Found]] | None = None
        self._type = ""

    async def open(self) -> None:
        try:
            domains = await self._scan()
        except (Retryable, Permanent) as err:
            log.warning("libvirt at %s not reachable yet (operations will retry): %s", self.hv.shown, err)
            return
        ours = sum(1 for found in domains if found.claim is not None)
        log.info("libvirt at %s: %d domains, %d of them orchestrated", self.hv.shown, len(domains), ours)

    async def close(self) -> None:
        await self.hv.close()

    @asynccontextmanager
    async def _exclusive(self, ctx: OperationContext) -> AsyncIterator[None]:
        """One operation of an instance at a time, its calls ending before its deadline; an attempt
        waits for the calls of an earlier one that were abandoned (they may still change the domain)."""
        async with self._locks.held(ctx.uuid):
            with self.hv.serving(ctx.uuid, ctx.deadline):
                await self.hv.settle(ctx.uuid)
                try:
                    yield
                except Missing as gone:
                    raise Retryable(f"domain {gone} went missing during the {ctx.transition}: the retry looks again",
                                    after=1.0) from None

    # -- reading ----------------------------------------------------------

    async def _scan(self) -> list[Found]:
        """Every domain with its state and claim; remembers the adopted ones.
        Lookups that miss at the same time (a Status of many instances) share one scan."""
        if self._scanning is None or self._scanning.done():
            self._scanning = asyncio.ensure_future(self._scan_now())
        return await asyncio.shield(self._scanning)

    async def _scan_now(self) -> list[Found]:
        found = await self.hv.call("listAllDomains", describe_all)
        for domain in found:
            if domain.claim is not None and domain.name != domain_name(domain.claim.uuid):
                self._adopted[domain.claim.uuid] = domain.name
        return found

    async def _lookup(self, name: str) -> Found | None:
        try:
            return await self.hv.call("lookupByName", lambda conn: describe(conn.lookupByName(name)), name)
        except Missing:
            return None

    async def _find(self, ref: InstanceRef) -> Found | None:
        """The instance's domain: `orch-<uuid>`, else the domain it adopted
        (remembered, or found by its metadata in a scan); None if none."""
        found = await self._lookup(domain_name(ref.uuid))
        if found is not None:
            return found
        name = self._adopted.get(ref.uuid)
        if name is not None:
            found = await self._lookup(name)
            if found is not None and found.claim is not None and found.claim.uuid == ref.uuid:
                return found
            self._adopted.pop(ref.uuid, None)
        for found in await self._scan():
            if found.claim is not None and found.claim.uuid == ref.uuid:
                return found
        return None

    async def _state(self, name: str) -> int:
        state: int = await self.hv.call("state", lambda conn: conn.lookupByName(name).state()[0], name)
        return state

    async def _domain_type(self, settings: VmSettings) -> str:
        if settings.domain_type or settings.domain_xml:
            return settings.domain_type
        if not self._type:
            driver = await self.hv.call("getType", lambda conn: str(conn.getType()))
            self._type = "test" if driver.lower() == "test" else "kvm"
        return self._type

    async def _xml(self, ref: InstanceRef, settings: VmSettings) -> str:
        return domain_xml(ref, settings, await self._domain_type(settings))

    # -- acting -----------------------------------------------------------

    async def _define(self, name: str, xml: str) -> str:
        await self.hv.call("defineXML", lambda conn: conn.defineXML(xml).name(), name)
        facts = summary(xml)
        return f"defined {name}: {facts['memory_mib'] or '?'} MiB, {facts['vcpus'] or '?'} vCPU"

    async def _ensure(self, ctx: OperationContext, settings: VmSettings) -> tuple[Found, list[str]]:
        """The domain, defined again from the configuration if it went missing."""
        found = await self._find(ctx.instance)
        if found is not None:
            return found, []
        name = domain_name(ctx.uuid)
        message = await self._define(name, await self._xml(ctx.instance, settings))
        ctx.logger.warning("domain %s was missing: defined again", name)
        return Found(name, SHUTOFF, claim_of(ctx.instance)), [f"domain was missing: {message}"]

    async def _wait(self, ctx: OperationContext, name: str, wanted: set[int], seconds: float) -> int:
        """Poll the domain's state until it is one of `wanted`, for at most
        `seconds` (and no later than a second before the operation's deadline)."""
        end = time.monotonic() + max(0.0, min(seconds, ctx.deadline - time.time() - 1.0))
        failures = 0
        while True:
            state = await self._state(name)
            now = time.monotonic()
            if state in wanted or now >= end:
                return state
            failures += 1
            await asyncio.sleep(min(POLL.delay(failures), end - now))

    async def _claim(self, ctx: OperationContext, settings: VmSettings) -> Found | None:
        """Adopt: claim the first unclaimed domain that adopt_name or adopt_pattern
        matches. One claim at a time, on a scan of its own (not one shared with a
        Status that began before an earlier claim landed); the worker reads the
        domain's metadata again and leaves a domain someone claimed meanwhile."""
        if not (settings.adopt_name or settings.adopt_pattern):
            ctx.logger.info("asked to adopt, but neither adopt_name nor adopt_pattern is set: defining a new domain")
            return None
        wanted = ""
        if settings.adopt_name:
            wanted = render("adopt_name", settings.adopt_name,
                            template_values(ctx.instance, settings, domain_name(ctx.uuid)))
        text = metadata_xml(claim_of(ctx.instance))
        async with self._claiming:
            mine = await self._find(ctx.instance)  # claimed by an earlier attempt of this create
            if mine is not None:
                return mine
            taken = set(self._adopted.values())
            candidates = sorted(
                (found for found in await self._scan_now() if found.claim is None and found.name not in taken
                 and (found.name == wanted if wanted else fnmatch.fnmatchcase(found.name, settings.adopt_pattern))),
                key=lambda found: found.name)
            for chosen in candidates:
                def claim(conn: Any, name: str = chosen.name) -> bool:
                    dom = conn.lookupByName(name)
                    if describe(dom).claim is not None:
                        return False  # claimed since the scan (by another controller, or by hand)
                    flags = (libvirt.VIR_DOMAIN_AFFECT_CONFIG if dom.isPersistent() else 0) | (
                        libvirt.VIR_DOMAIN_AFFECT_LIVE if dom.isActive() else 0)
                    dom.setMetadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, text, PREFIX, NAMESPACE, flags)
                    return True

                try:
                    claimed = await self.hv.call("setMetadata", claim, chosen.name)
                except Missing:
                    continue  # undefined since the scan
                if claimed:
                    self._adopted[ctx.uuid] = chosen.name
                    return Found(chosen.name, chosen.state, claim_of(ctx.instance))
            return None

    # -- operations -------------------------------------------------------

    async def create(self, ctx: OperationContext) -> Result:
        async with self._exclusive(ctx):
            return await self._create(ctx)

    async def configure(self, ctx: OperationContext) -> Result:
        async with self._exclusive(ctx):
            return await self._apply(ctx)

    async def reconfigure(self, ctx: OperationContext) -> Result:
        async with self._exclusive(ctx):
            return await self._apply(ctx)

    async def start(self, ctx: OperationContext) -> Result:
        async with self._exclusive(ctx):
            return await self._start(ctx)

    async def stop(self, ctx: OperationContext) -> Result:
        async with self._exclusive(ctx):
            return await self._stop(ctx)

    async def destroy(self, ctx: OperationContext) -> Result:
        async with self._exclusive(ctx):
            return await self._remove(ctx)

    async def reset(self, ctx: OperationContext) -> Result:
        async with self._exclusive(ctx):
            return await self._remove(ctx)

    async def _create(self, ctx: OperationContext) -> Result:
        settings = settings_of(ctx.parameters)
        found = await self._find(ctx.instance)
        if found is not None:
            return Result(endpoint(found.name), message=f"exists as {found.shown}: nothing to do")
        if ctx.adopt:
            adopted = await self._claim(ctx, settings)
            if adopted is not None:
                ctx.logger.info("adopted domain %s", adopted.name)
                return Result(endpoint(adopted.name), message=f"adopted existing domain {adopted.shown}")
        name = domain_name(ctx.uuid)
        message = await self._define(name, await self._xml(ctx.instance, settings))
        if ctx.adopt:
            message = f"no unclaimed domain matched: {message}"
        return Result(endpoint(name), message=message)

    async def _apply(self, ctx: OperationContext) -> Result:
        """configure and reconfigure: redefine the domain when what the
        configuration asks for changed (a running guest sees it at its next boot)."""
        settings = settings_of(ctx.parameters)
        found, done = await self._ensure(ctx, settings)
        if done:
            return Result(endpoint(found.name), message="\n".join(done))
        if found.name != domain_name(ctx.uuid):
            return Result(endpoint(found.name), message=f"adopted domain {found.name}: its definition is left as it is")
        xml = await self._xml(ctx.instance, settings)
        if found.claim is not None and found.claim.digest == digest_of(xml):
            return Result(endpoint(found.name), message=f"{found.shown} already as configured: nothing to do")
        message = (await self._define(found.name, xml)).replace("defined", "redefined", 1)
        if lifecycle_state(found.state) == "active":
            message += " (the running guest gets it at its next boot)"
        return Result(endpoint(found.name), message=message)

    async def _start(self, ctx: OperationContext) -> Result:
        settings = settings_of(ctx.parameters)
        found, done = await self._ensure(ctx, settings)
        name = found.name
        if found.state in UP:
            if await self._booting(ctx, name, settings):  # an earlier attempt booted it: boot_seconds are not over
                done.append(f"booted {name}")
            else:
                done.append(f"{found.shown} already: nothing to do")
            return Result(endpoint(name), message="\n".join(done))
        if found.state == SHUTDOWN:  # on its way down: let it get there, then boot it
            await self._wait(ctx, name, {SHUTOFF}, settings.stop_timeout)

        def boot(conn: Any) -> str:
            dom = conn.lookupByName(name)
            state = dom.state()[0]
            if state in UP:
                return "running already"
            if state == PAUSED:
                dom.resume()
                return "resumed"
            if state == PMSUSPENDED:
                dom.pMWakeup(0)
                return "woken up"
            if state == CRASHED:
                dom.destroy()
            dom.create()
            return "booted"

        how = await self.hv.call("create", boot, name)
        if how != "running already":
            self._booted[ctx.uuid] = time.time()
        state = await self._wait(ctx, name, UP, settings.boot_timeout)
        if state not in UP:
            raise Retryable(f"{name} is {STATE_NAMES.get(state, state)}, not running, {settings.boot_timeout:g} s "
                            f"after it was booted (boot_timeout)", after=1.0)
        await self._booting(ctx, name, settings)
        done.append(f"{how} {name}")
        return Result(endpoint(name), message="\n".join(done))

    async def _booting(self, ctx: OperationContext, name: str, settings: VmSettings) -> bool:
        """Wait out what is left of boot_seconds since this controller booted the
        domain (False: it did not, or long enough ago). Retryable if that ends
        past the operation's deadline: the retry waits for the rest."""
        booted = self._booted.get(ctx.uuid)
        if booted is None:
            return False
        left = booted + settings.boot_seconds - time.time()
        if left <= 0:
            self._booted.pop(ctx.uuid, None)
            return False
        if left > ctx.deadline - time.time() - 1.0:
            raise Retryable(f"{name} is booting: {left:.0f} s of boot_seconds left", after=min(left, 5.0))
        await asyncio.sleep(left)
        self._booted.pop(ctx.uuid, None)
        return True

    async def _stop(self, ctx: OperationContext) -> Result:
        settings = settings_of(ctx.parameters)
        found = await self._find(ctx.instance)
        if found is None:
            return Result(message=f"no domain {domain_name(ctx.uuid)}: nothing to stop")
        if lifecycle_state(found.state) != "active":
            return Result(endpoint(found.name), message=f"{found.shown} already: nothing to do")
        name = found.name
        self._booted.pop(ctx.uuid, None)
        if found.state != SHUTDOWN:
            await self.hv.call("shutdown", lambda conn: conn.lookupByName(name).shutdown(), name)
        state = await self._wait(ctx, name, {SHUTOFF}, settings.stop_timeout)
        if state == SHUTOFF:
            return Result(endpoint(name), message=f"shut down {name}")
        if not settings.force_stop:
            raise Retryable(f"{name} did not shut down within {settings.stop_timeout:g} s (stop_timeout); "
                            "set force_stop: true to power it off then", after=1.0)
        await self.hv.call("destroy", lambda conn: conn.lookupByName(name).destroy(), name)
        return Result(endpoint(name), message=f"{name} did not shut down within {settings.stop_timeout:g} s: powered off")

    async def _remove(self, ctx: OperationContext) -> Result:
        found = await self._find(ctx.instance)
        if found is None:
            return Result(message=f"no domain {domain_name(ctx.uuid)}: nothing to undefine")
        name = found.name

        def remove(conn: Any) -> bool:
            dom = conn.lookupByName(name)
            running = bool(dom.isActive())
            if running:
                dom.destroy()
            undefine(dom)
            return running

        try:
            forced = await self.hv.call("undefine", remove, name)
        except Missing:
            forced = False
        self._adopted.pop(ctx.uuid, None)
        self._booted.pop(ctx.uuid, None)
        return Result(message=f"undefined {name}" + (" (powered off first)" if forced else "") + "; its disks are kept")

    async def status(self, ref: InstanceRef) -> InstanceState:
        found = await self._find(ref)
        if found is None:
            return UNKNOWN
        return InstanceState(lifecycle_state(found.state), endpoint(found.name))  # type: ignore[arg-type]

    async def preview(self, ctx: OperationContext) -> str:
        with self.hv.serving("", ctx.deadline):  # read only: nothing for a later operation to wait for
            return await self._preview(ctx)

    async def _preview(self, ctx: OperationContext) -> str:
        settings = settings_of(ctx.parameters)
        found = await self._find(ctx.instance)
        name = found.name if found else domain_name(ctx.uuid)
        transition = ctx.transition
        if transition == "create":
            if found is not None:
                return f"exists as {found.shown}: nothing to do"
            if ctx.adopt and (settings.adopt_name or settings.adopt_pattern):
                how = f"named {settings.adopt_name}" if settings.adopt_name else f"matching {settings.adopt_pattern}"
                return f"would adopt the first unclaimed domain {how}, else define {name}:\n" + \
                    masked(await self._xml(ctx.instance, settings))
            return f"would define {name}:\n" + masked(await self._xml(ctx.instance, settings))
        if transition in ("destroy", "reset"):
            if found is None:
                return f"no domain {name}: nothing to undefine"
            return f"would undefine {found.shown}" + (", powering it off first" if found.state in UP else "")
        if found is None:
            if not is_uuid(ctx.uuid):  # an instance the plan makes (new-1): its create comes first
                return f"would {transition} the domain its create defines"
            return f"no domain {name}: would define it from the configuration first"
        if transition in ("configure", "reconfigure"):
            if found.name != domain_name(ctx.uuid):
                return f"adopted domain {found.name}: its definition is left as it is"
            xml = await self._xml(ctx.instance, settings)
            if found.claim is not None and found.claim.digest == digest_of(xml):
                return f"{found.shown} already as configured: nothing to do"
            return f"would redefine {found.name}:\n{masked(xml)}"
        if transition == "start":
            if found.state in UP:
                return f"{found.shown} already: nothing to do"
            verbs = {PAUSED: "resume", PMSUSPENDED: "wake up", CRASHED: "power off and boot", SHUTDOWN: "boot, once off,"}
            return f"would {verbs.get(found.state, 'boot')} {found.shown}"
        if transition == "stop":
            if lifecycle_state(found.state) != "active":
                return f"{found.shown} already: nothing to do"
            then = "power it off" if settings.force_stop else "fail, retryable"
            return f"would shut down {found.name}, and {then} if it is not off within {settings.stop_timeout:g} s"
        return ""
