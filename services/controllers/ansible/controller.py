"""The operations of the ansible controller: each runs the playbook the
component's configuration names for it (an operation without one succeeds
doing nothing), records what ran, and says whether a failure is worth a
retry (an unreachable host, a time-out) or not (a failed task, a bad
configuration). One operation per instance at a time; an operation delivered
again after it succeeded, with the same configuration, is answered from the
record."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from controllers.ansible.config import AnsibleConfig, ConfigError, parse_config
from controllers.ansible.events import failure_text, unreachable_text
from controllers.ansible.playbook import (
    PERMANENT_EXIT_CODES,
    PlaybookRun,
    PlaybookRunner,
    RunnerSettings,
)
from controllers.ansible.state import Done, InstanceRecord, StateStore, digest, now
from controllers.ansible.variables import extra_vars, status_vars
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

# The state an instance is in after each operation succeeded.
AFTER = {"create": "inactive", "configure": "inactive", "start": "active", "reconfigure": "active",
         "stop": "inactive", "destroy": "initial", "reset": "initial"}
STATES = ("initial", "inactive", "active")
# Seconds kept back from an operation's deadline for recording the outcome.
MARGIN = 1.0

log = logging.getLogger("controllers.ansible")


class AnsibleController(Controller):
    """Instances whose lifecycle operations are playbooks (see controllers.ansible.config)."""

    def __init__(self, settings: RunnerSettings, concurrency: int = 4) -> None:
        self.runner = PlaybookRunner(settings, concurrency)
        self.store = StateStore(settings.state_dir / "instances")
        # One operation per instance at a time (status and preview do not wait).
        self._locks = InstanceLocks()

    async def open(self) -> None:
        ended = await asyncio.to_thread(self.runner.prepare)  # it waits for what it ends
        if ended:
            log.warning("ended %d ansible-playbook run(s) a killed controller left: %s", len(ended),
                        ", ".join(map(str, ended)))
        self.store.prepare()

    async def create(self, ctx: OperationContext) -> Result:
        return await self._operate(ctx, "create")

    async def configure(self, ctx: OperationContext) -> Result:
        return await self._operate(ctx, "configure")

    async def start(self, ctx: OperationContext) -> Result:
        return await self._operate(ctx, "start")

    async def reconfigure(self, ctx: OperationContext) -> Result:
        return await self._operate(ctx, "reconfigure")

    async def stop(self, ctx: OperationContext) -> Result:
        return await self._operate(ctx, "stop")

    async def destroy(self, ctx: OperationContext) -> Result:
        return await self._operate(ctx, "destroy")

    async def reset(self, ctx: OperationContext) -> Result:
        return await self._operate(ctx, "reset")

    async def status(self, ref: InstanceRef) -> InstanceState:
        """The recorded state; with a `status` playbook, what it reports (set_stats `orch_state`)."""
        record = self.store.load(ref.uuid)
        if record is None or record.state == "initial":
            return UNKNOWN
        if self._locks.busy(ref.uuid):
            # An operation runs on it: its status playbook would race it; the record answers.
            return InstanceState(record.state, record.endpoint)  # type: ignore[arg-type]
        try:
            config = parse_config(record.configuration)
        except ConfigError:
            return InstanceState(record.state, record.endpoint)  # type: ignore[arg-type]
        playbook = config.playbook("status")
        if not playbook:
            return InstanceState(record.state, record.endpoint)  # type: ignore[arg-type]
        variables = status_vars(record.uuid, record.identity, record.parameters, record.endpoint, config.vars)
        try:
            run = await self.runner.run(playbook, "status", config.inventory, variables)
        except ConfigError as err:
            raise Permanent(str(err)) from err
        if not run.ok:
            raise Retryable(f"status playbook {playbook}: {run.status}: {run.last_error()}")
        reported = str(run.summary.stats.get("orch_state", "") or record.state)
        if reported not in STATES:
            raise Permanent(f"status playbook {playbook} reported orch_state {reported!r}, not one of {', '.join(STATES)}")
        if reported == "initial":
            return UNKNOWN
        return InstanceState(reported, str(run.summary.stats.get("orch_endpoint") or record.endpoint))  # type: ignore[arg-type]

    async def preview(self, ctx: OperationContext) -> str:
        """The operation's playbook run with --check --diff: Ansible's output."""
        config = self._config(ctx)
        operation = ctx.transition
        playbook = config.playbook_of(operation)
        if not playbook:
            return f"{operation}: no playbook, nothing to do"
        try:
            record = self.store.load(ctx.uuid)
        except ValueError:  # a planned instance without an id yet
            record = None
        variables = extra_vars(ctx, config.vars, record.endpoint if record else "", operation)
        try:
            run = await self.runner.run(playbook, operation, config.inventory, variables, check=True,
                                        deadline=ctx.deadline - MARGIN)
        except ConfigError as err:
            raise Permanent(str(err)) from err
        if run.summary.unreachable:
            raise Retryable(unreachable_text(run.summary, playbook))
        lines = [line for line in run.output.splitlines() if line.strip()]
        verdict = "" if run.ok else f"\n(check run {run.status}: {failure_text(run.summary, playbook) if run.summary.failed else run.last_error()})"
        return f"ansible-playbook {playbook} --check --diff\n" + "\n".join(lines) + verdict

    def _config(self, ctx: OperationContext) -> AnsibleConfig:
        try:
            return parse_config(ctx.configuration)
        except ConfigError as err:
            raise Permanent(f"component {ctx.component} {ctx.component_version}: {err}") from err

    async def _operate(self, ctx: OperationContext, operation: str) -> Result:
        config = self._config(ctx)
        try:
            self.store.path(ctx.uuid)
        except ValueError as err:
            raise Permanent(str(err)) from err
        async with self._locks.held(ctx.uuid, ctx.deadline - MARGIN):
            return await self._operate_alone(ctx, operation, config)

    async def _operate_alone(self, ctx: OperationContext, operation: str, config: AnsibleConfig) -> Result:
        record = self.store.load(ctx.uuid) or InstanceRecord(ctx.uuid)
        asked = digest(operation, ctx.configuration, ctx.parameters, ctx.adopt)
        finished = record.finished(ctx.operation_id, asked)
        if finished is not None:
            # Delivered again after it succeeded (a crash before the result reached the engine).
            ctx.logger.info("%s %s already ran: answered from the record", operation, ctx.operation_id)
            return Result(endpoint=finished.endpoint or record.endpoint, message=finished.message)
        if record.running and record.running.get("operation_id") != ctx.operation_id:
            ctx.logger.warning("an earlier %s did not finish (controller stopped?): running %s",
                               record.running.get("transition"), operation)
        record.configuration, record.parameters = ctx.configuration, dict(ctx.parameters)
        record.identity = {"domain": ctx.domain, "solution": ctx.solution, "element": ctx.element,
                           "cluster": ctx.cluster, "component": ctx.component,
                           "component_version": ctx.component_version}
        notes: list[str] = []
        stats: dict[str, Any] = {}
        playbook, adopted = "", False
        if operation == "create" and ctx.adopt:
            adopted, playbook, stats, lines = await self._adopt(ctx, config, record)
            notes.extend(lines)
            record.adopted = adopted
        if not adopted:
            playbook = config.playbook_of(operation)
            if playbook:
                run = await self._run(ctx, config, record, operation, playbook)
                stats = dict(run.summary.stats)
                if run.summary.text():
                    notes.append(run.summary.text())
            elif not notes:
                notes.append(f"no playbook for {operation}: nothing to do")
        endpoint = str(stats.get("orch_endpoint") or record.endpoint or config.endpoint)
        message = "\n".join(notes)
        if AFTER[operation] == "initial":
            await asyncio.to_thread(self.store.remove, ctx.uuid)
            return Result(message=message)
        record.state, record.endpoint = AFTER[operation], endpoint
        record.record(Done(ctx.operation_id, operation, playbook, "ok", message, endpoint, now(), asked))
        await asyncio.to_thread(self.store.save, record)
        return Result(endpoint=endpoint, message=message)

    async def _adopt(self, ctx: OperationContext, config: AnsibleConfig,
                     record: InstanceRecord) -> tuple[bool, str, dict[str, Any], list[str]]:
        """Run the `adopt` playbook; it reports `orch_adopted: true` (set_stats) when it found the instance."""
        playbook = config.playbook("adopt")
        if not playbook:
            return False, "", {}, ["no adopt playbook: creating"]
        run = await self._run(ctx, config, record, "adopt", playbook)
        stats = dict(run.summary.stats)
        adopted = stats.get("orch_adopted") in (True, "true", "True", "yes")
        lines = [run.summary.text()] if run.summary.text() else []
        lines.append("adopted what already runs" if adopted else "nothing to adopt: creating")
        return adopted, playbook, stats, lines

    async def _run(self, ctx: OperationContext, config: AnsibleConfig, record: InstanceRecord, operation: str,
                   playbook: str) -> PlaybookRun:
        record.running = {"operation_id": ctx.operation_id, "transition": operation, "playbook": playbook,
                          "started": now()}
        await asyncio.to_thread(self.store.save, record)
        variables = extra_vars(ctx, config.vars, record.endpoint, operation)
        ctx.logger.info("%s: running %s (attempt %d)", operation, playbook, ctx.attempt)
        try:
            run = await self.runner.run(playbook, operation, config.inventory, variables, deadline=ctx.deadline - MARGIN)
        except ConfigError as err:
            raise Permanent(str(err)) from err
        ctx.logger.info("%s: %s %s (%d tasks)", operation, playbook, run.status, len(run.summary.lines))
        if run.ok:
            return run
        error = self._error(run, playbook)
        record.record(Done(ctx.operation_id, operation, playbook, "failed", error.message, "", now()))
        await asyncio.to_thread(self.store.save, record)
        raise error

    def _error(self, run: PlaybookRun, playbook: str) -> Retryable | Permanent:
        """Whether a failed run is worth a retry: an unreachable host or a run cut short is; a failed task,
        a playbook Ansible cannot read or a missing vault password is not."""
        if run.summary.unreachable:
            return Retryable(unreachable_text(run.summary, playbook), after=5.0)
        if run.summary.failed:
            return Permanent(failure_text(run.summary, playbook) + _progress(run))
        if run.status in ("timeout", "canceled"):
            return Retryable(f"{playbook}: {run.status} (time-out {self.runner.settings.timeout:.0f} s or the "
                             "operation's deadline)", after=1.0)
        if run.rc in PERMANENT_EXIT_CODES:
            return Permanent(f"{playbook}: ansible-playbook exited {run.rc}: {run.last_error()}")
        return Retryable(f"{playbook}: ansible-playbook {run.status} (exit code {run.rc}): {run.last_error()}")


def _progress(run: PlaybookRun) -> str:
    done = run.summary.text()
    return f"\n{done}" if done else ""
