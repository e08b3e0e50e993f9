"""The process controller: instances are operating-system processes, one
work directory each, configured from the cluster's parameters (`settings`).

Every operation is idempotent and reads the real state (work dir, pid file,
/proc) before acting, never an in-memory belief, so that a repeated
operation, a controller restart or a process killed by hand all end right.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import replace
from pathlib import Path

from controllers.process.confine import DEFAULT_RUN_AS, DEFAULT_UIDS, Identity, Users, reachable, runnable, uid_range
from controllers.process.procs import Processes, kill_strays, tail
from controllers.process.readiness import Probe, check
from controllers.process.settings import ProcessSettings
from controllers.process.spec import LaunchSpec, environment, launch_spec, namespace, render_endpoint
from controllers.process.workdir import InstanceRecord, Ledger, ProcessRecord, WorkDir, allocate_ports
from orchestration_sdk import (
    InstanceLocks,
    UNKNOWN,
    Controller,
    InstanceRef,
    InstanceState,
    OperationContext,
    Permanent,
    Result,
    Retryable,
)

log = logging.getLogger("controllers.process")

# Leave this much of an operation's deadline to report "not ready yet" as a
# retryable outcome, rather than being cancelled by the SDK without a word.
DEADLINE_MARGIN = 1.0
READY_POLL = 0.1
# Reset kills: a failed instance gets a short SIGTERM grace, not its full stop_grace.
RESET_GRACE = 0.5


class ProcessController(Controller):
    """Runs each instance as a local process (controller `process`, V1.0.0).

    `work_dir` holds one directory per instance (see `workdir`); keep it
    outside the directory of the suite's secrets. `base_dir` is offered to
    templates as `{{base_dir}}` (where the example scripts are). When the
    controller runs as root, instance processes run as a uid of their
    domain's own from `uids` (`run_as` 'per-domain'), or all as the user
    `run_as` ('' for root itself); see `confine` for what is contained, and
    what is not when the controller is not root. ValueError: no such user,
    or a malformed range.
    """

    def __init__(self, work_dir: Path, base_dir: Path, run_as: str = DEFAULT_RUN_AS, uids: str = DEFAULT_UIDS) -> None:
        self.users = Users(run_as, uid_range(uids), Ledger(work_dir))
        self.dirs = WorkDir(work_dir)
        self.base_dir = base_dir
        self.procs = Processes()
        # One operation per instance at a time (status reads without waiting).
        self._locks = InstanceLocks()

    async def open(self) -> None:
        self.dirs.create()
        if self.users.per_domain:
            self.users.ledger.load(self.users.uids)  # a ledger not our own stops us here (ValueError)
        log.info("instances run as %s%s", self.users.describe(),
                 "" if os.geteuid() == 0 else ": the controller is not root, so instances can read what it can read")
        sample = self.users.shared or Identity("", self.users.uids.start, self.users.uids.start, switch=True)
        if sample.switch and not reachable(self.dirs.root, sample):
            log.warning("instances (%s) cannot reach the work dir %s (a directory above it is not searchable): "
                        "they start in their directories, but absolute paths to them fail",
                        self.users.describe(), self.dirs.root)
        running = 0
        for uuid in self.dirs.uuids():
            record = self.dirs.read_process(uuid)
            if record is not None and self.procs.running(record):
                running += 1
        # Adoption needs nothing more: the pid files are the truth, and every
        # operation and status checks them against /proc.
        log.info("work dir %s: %d instances, %d running processes adopted", self.dirs.root, len(self.dirs.uuids()), running)

    # ---- status ------------------------------------------------------------------

    async def status(self, ref: InstanceRef) -> InstanceState:
        """active: the process runs and passes its probe; inactive: the instance
        exists without a ready process; initial (unknown): no instance."""
        record = self.dirs.read_instance(ref.uuid) if self.dirs.exists(ref.uuid) else None
        if record is None:
            return UNKNOWN
        process = self.dirs.read_process(ref.uuid)
        if process is not None and self.procs.running(process):
            if await self._check(ref.uuid, self._runs_as(ref.uuid, record.domain), process.probe, time.time() - process.started):
                return InstanceState("active", record.endpoint)
        return InstanceState("inactive", record.endpoint)

    # ---- operations --------------------------------------------------------------

    async def create(self, ctx: OperationContext) -> Result:
        """The work dir and the ports, decided once and kept until destroy."""
        settings = ProcessSettings.parse(ctx.parameters)
        async with self._locks.held(ctx.uuid):
            record = self.dirs.read_instance(ctx.uuid)
            if record is not None:
                if (record.solution, record.element, record.cluster) != (ctx.solution, ctx.element, ctx.cluster):
                    raise Permanent(f"process: instance {ctx.uuid} already exists in "
                                    f"{record.solution}/{record.element}/{record.cluster}")
                return Result(endpoint=record.endpoint)
            # No await from here to the write: two creates cannot pick the same port.
            names = (["port"] if settings.port == "auto" else []) + [n for n in settings.ports if n != "port"]
            ports = allocate_ports(settings.host, names, self.dirs.taken_ports())
            if settings.port not in ("", "auto"):
                ports["port"] = int(settings.port)
            record = InstanceRecord(ctx.uuid, ctx.domain, ctx.solution, ctx.element, ctx.cluster, settings.host, ports)
            record = replace(record, endpoint=render_endpoint(settings, self._values(ctx, record)))
            self.dirs.write_instance(record, self.users.of(ctx.domain))
            ctx.logger.info("created %s (ports %s)", self.dirs.path(ctx.uuid), ports or "none")
            return Result(endpoint=record.endpoint)

    async def configure(self, ctx: OperationContext) -> Result:
        settings = ProcessSettings.parse(ctx.parameters)
        async with self._locks.held(ctx.uuid):
            spec = self._spec(ctx, settings, self._existing(ctx))
            self.dirs.write_files(ctx.uuid, spec.files, self.users.of(ctx.domain))
            return Result(endpoint=spec.endpoint)

    async def start(self, ctx: OperationContext) -> Result:
        """Spawn the process, or keep the one that runs with this very
        configuration, and wait until it is ready."""
        settings = ProcessSettings.parse(ctx.parameters)
        async with self._locks.held(ctx.uuid):
            spec = self._spec(ctx, settings, self._existing(ctx))
            self.dirs.write_files(ctx.uuid, spec.files, self.users.of(ctx.domain))
            process = self._running(ctx.uuid)
            if process is not None and (process.launch, process.files) != (spec.launch_digest, spec.files_digest):
                ctx.logger.info("process %d runs with another configuration: restarting it", process.pid)
                await self._stop(ctx.uuid, process, _grace(ctx))
                process = None
            await self._wait_ready(ctx, self._keep_or_spawn(ctx, spec, process), settings)
            return Result(endpoint=spec.endpoint)

    async def reconfigure(self, ctx: OperationContext) -> Result:
        """Render again; a running process takes changed files as `reconfigure`
        says (restart, a signal, or nothing); a changed command line or
        environment always restarts it; a process that is gone is started."""
        settings = ProcessSettings.parse(ctx.parameters)
        async with self._locks.held(ctx.uuid):
            spec = self._spec(ctx, settings, self._existing(ctx))
            self.dirs.write_files(ctx.uuid, spec.files, self.users.of(ctx.domain))
            process = self._running(ctx.uuid)
            how = settings.reconfigure
            if process is not None and process.launch == spec.launch_digest and process.files != spec.files_digest:
                if how.mode == "signal":
                    ctx.logger.info("files changed: signal %d to process %d", how.signal, process.pid)
                    if not self.procs.signal(process, how.signal):
                        process = None  # it ended just now: start it below
                if process is not None and how.mode in ("signal", "none"):
                    process = replace(process, files=spec.files_digest)
                    self.dirs.write_process(ctx.uuid, process)
            if process is not None and (process.launch, process.files) != (spec.launch_digest, spec.files_digest):
                ctx.logger.info("configuration changed: restarting process %d", process.pid)
                await self._stop(ctx.uuid, process, _grace(ctx))
                process = None
            await self._wait_ready(ctx, self._keep_or_spawn(ctx, spec, process), settings)
            return Result(endpoint=spec.endpoint)

    async def stop(self, ctx: OperationContext) -> Result:
        """SIGTERM the process group, SIGKILL after stop_grace; the work dir stays."""
        async with self._locks.held(ctx.uuid):
            record = self._existing(ctx)
            process = self.dirs.read_process(ctx.uuid)
            if process is not None:
                await self._stop(ctx.uuid, process, _grace(ctx))
            return Result(endpoint=record.endpoint)

    async def destroy(self, ctx: OperationContext) -> Result:
        """Remove the work dir (and whatever still runs there)."""
        async with self._locks.held(ctx.uuid):
            await self._remove(ctx, _grace(ctx))
        return Result()

    async def reset(self, ctx: OperationContext) -> Result:
        """Kill whatever is left of a failed instance, quickly, and remove it."""
        async with self._locks.held(ctx.uuid):
            await self._remove(ctx, min(RESET_GRACE, _grace(ctx)))
        return Result()

    # ---- helpers -----------------------------------------------------------------

    def _values(self, ctx: OperationContext, record: InstanceRecord) -> dict[str, str | list[str]]:
        return namespace(ctx, record, self.dirs.path(record.uuid), self.base_dir)

    def _spec(self, ctx: OperationContext, settings: ProcessSettings, record: InstanceRecord) -> LaunchSpec:
        user = self.users.of(ctx.domain)
        spec = launch_spec(settings, self._values(ctx, record), self.dirs.path(record.uuid), user.name)
        if spec.endpoint != record.endpoint:
            # The endpoint template changed since create: report the new one from now on.
            self.dirs.write_instance(replace(record, endpoint=spec.endpoint), user)
        return spec

    def _existing(self, ctx: OperationContext) -> InstanceRecord:
        record = self.dirs.read_instance(ctx.uuid)
        if record is None:
            raise Permanent(f"process: instance {ctx.uuid} of element {ctx.element} does not exist ({ctx.transition})")
        return record

    def _running(self, uuid: str) -> ProcessRecord | None:
        """The instance's live process; a pid file of a dead one is dropped."""
        process = self.dirs.read_process(uuid)
        if process is None:
            return None
        if self.procs.running(process):
            return process
        self.procs.forget(process)
        self.dirs.clear_process(uuid)
        return None

    def _keep_or_spawn(self, ctx: OperationContext, spec: LaunchSpec, process: ProcessRecord | None) -> ProcessRecord:
        """The running process (with the probe now configured), or a new one."""
        if process is None:
            return self._spawn(ctx, spec)
        if process.probe != spec.probe:
            process = replace(process, probe=spec.probe)
            self.dirs.write_process(ctx.uuid, process)
        return process

    def _spawn(self, ctx: OperationContext, spec: LaunchSpec) -> ProcessRecord:
        user = self.users.of(ctx.domain)
        runnable(spec.argv[0], user)
        directory = self.dirs.prepare(ctx.uuid, user)
        stdout, stderr = self.dirs.open_logs(ctx.uuid, user)
        try:
            process = self.procs.spawn(spec.argv, spec.env, directory, stdout, stderr, user)
        except OSError as err:
            raise Permanent(f"process: cannot run {spec.argv[0]} as user {user.name}: {err.strerror}"
                            + (f" ({err.filename})" if err.filename else "")) from err
        finally:
            os.close(stdout)
            os.close(stderr)
        process = replace(process, launch=spec.launch_digest, files=spec.files_digest, probe=spec.probe)
        self.dirs.write_process(ctx.uuid, process)
        ctx.logger.info("started process %d: %s", process.pid, " ".join(spec.argv))
        return process

    async def _stop(self, uuid: str, process: ProcessRecord, grace: float) -> None:
        await self.procs.stop(process, grace)
        self.dirs.clear_process(uuid)

    async def _remove(self, ctx: OperationContext, grace: float) -> None:
        if not self.dirs.exists(ctx.uuid):
            return
        process = self.dirs.read_process(ctx.uuid)
        if process is not None:
            await self.procs.stop(process, grace)
        strays = kill_strays(self.dirs.path(ctx.uuid))
        if strays:
            ctx.logger.warning("killed processes left in the work dir: %s", strays)
        self.procs.reap()
        self.dirs.remove(ctx.uuid)

    async def _wait_ready(self, ctx: OperationContext, process: ProcessRecord, settings: ProcessSettings) -> None:
        """Until the probe passes. A process that exits, or is not ready within
        `ready_timeout` of its spawn, fails permanently with its last output;
        running out of the operation's deadline first is retryable (the next
        start keeps waiting on the same process)."""
        ready_by = process.started + settings.ready_timeout
        give_up = ctx.deadline - DEADLINE_MARGIN
        while True:
            if not self.procs.running(process):
                code = self.procs.exit_code(process)
                self.procs.forget(process)
                self.dirs.clear_process(ctx.uuid)
                how = "exited" if code is None else f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
                raise Permanent(f"process: {process.argv[0]} {how} {time.time() - process.started:.1f}s after it "
                                f"started, before it was ready ({process.probe.describe()}); last output:\n"
                                f"{tail(self.dirs.log_paths(ctx.uuid))}")
            if await self._check(ctx.uuid, self._runs_as(ctx.uuid, ctx.domain), process.probe, time.time() - process.started):
                return
            now = time.time()
            if now >= ready_by:
                await self._stop(ctx.uuid, process, RESET_GRACE)
                raise Permanent(f"process: {process.argv[0]} was not ready within {settings.ready_timeout:g}s "
                                f"({process.probe.describe()}); stopped it; last output:\n"
                                f"{tail(self.dirs.log_paths(ctx.uuid))}")
            if now >= give_up:
                raise Retryable(f"process: {process.argv[0]} not ready yet after {now - process.started:.1f}s "
                                f"({process.probe.describe()}; ready_timeout {settings.ready_timeout:g}s); last output:\n"
                                f"{tail(self.dirs.log_paths(ctx.uuid))}", after=0.2)
            await asyncio.sleep(READY_POLL)


    def _runs_as(self, uuid: str, domain: str) -> Identity:
        """Who the instance's probes run as: its domain's user, or, for a
        process started before the users changed (its work dir still another
        user's, until its next start hands it over), that user."""
        user = self.users.of(domain)
        try:
            info = os.lstat(self.dirs.path(uuid))
        except OSError:
            return user
        if not user.switch or info.st_uid in (user.uid, os.geteuid()):
            return user
        return Identity(str(info.st_uid), info.st_uid, info.st_gid, switch=True)

    async def _check(self, uuid: str, user: Identity, probe: Probe, running_for: float) -> bool:
        """One readiness check; a probe command runs like the instance (user, work dir, environment)."""
        directory = self.dirs.path(uuid)
        return await check(probe, directory, running_for, environment(uuid, directory, user.name), user)


def _grace(ctx: OperationContext) -> float:
    """stop_grace of the cluster, cut short so that SIGKILL still comes within
    the operation's deadline; malformed settings must not keep an instance
    from stopping."""
    try:
        grace = ProcessSettings.parse(ctx.parameters).stop_grace
    except Permanent:
        grace = ProcessSettings.stop_grace
    return max(0.0, min(grace, ctx.deadline - time.time() - DEADLINE_MARGIN))
