"""The simulated controller: a real instance table, truthful status, and
per-cluster latency, failures and endpoints chosen by `sim_*` parameters."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import get_args

from orchestration_sdk import (
    UNKNOWN,
    Controller,
    ExtraService,
    InstanceRef,
    InstanceState,
    OperationContext,
    Permanent,
    Result,
    Retryable,
    StateName,
)
from controllers.sim.admin import SIMULATOR_SERVICE_NAME, add_simulator
from controllers.sim.oplog import OpLog
from controllers.sim.settings import SimSettings
from controllers.sim.table import InstanceTable, Record

STATES: tuple[str, ...] = get_args(StateName)

Apply = Callable[[OperationContext, SimSettings], Result]


class SimController(Controller):
    """Simulates instances of any component type (controller "Internal", alias "sim").

    Operations are idempotent: create of an existing instance succeeds without
    a second one, start of an active one and destroy of a missing one succeed;
    configure, reconfigure, start and stop need the instance to exist.
    """

    def __init__(self, state_file: Path | None = None, op_log: Path | None = None) -> None:
        self.table = InstanceTable(state_file)
        self.op_log = OpLog(op_log)

    async def open(self) -> None:
        self.table.open()
        self.op_log.open()

    async def close(self) -> None:
        self.table.close()
        self.op_log.close()

    async def sync(self) -> None:
        """Flush the journal and the op log (before each message of results, and each single-operation answer)."""
        self.table.flush()
        self.op_log.flush()

    async def status(self, ref: InstanceRef) -> InstanceState:
        record = self.table.get(ref.uuid)
        if record is None:
            return UNKNOWN
        return InstanceState(record.state, record.endpoint, True)

    async def preview(self, ctx: OperationContext) -> str:
        """What the operation would do to the simulated instance (its dry run)."""
        record = self.table.get(ctx.uuid)
        now = record.state if record is not None else "initial (not there)"
        settings = SimSettings.parse(ctx.parameters)
        after = "" if settings.latency_ms == 0 else f", taking {settings.latency_ms} ms"
        return f"sim: {ctx.transition} {ctx.uuid}, now {now}{after}; configuration {ctx.configuration!r}"

    def extra_services(self) -> Sequence[ExtraService]:
        """SimulatorService, for drift behind the orchestrator's back."""
        return [ExtraService(SIMULATOR_SERVICE_NAME, add_simulator(self.set_state, lambda uuid: self.table.get(uuid) is not None))]

    def set_state(self, uuid: str, state: str) -> None:
        """Force the state of an instance, to simulate drift ("initial" removes it).

        Raises ValueError for an unknown state name, KeyError for an unknown
        instance.
        """
        if state not in STATES:
            raise ValueError(f"unknown state {state!r}: one of {', '.join(STATES)}")
        if state == "initial":
            self.table.remove(uuid)
        else:
            record = self.table.get(uuid)
            if record is None:
                raise KeyError(f"sim has no instance {uuid}")
            self.table.put(replace(record, state=state))  # type: ignore[arg-type]  # checked against STATES
        self.table.flush()

    async def create(self, ctx: OperationContext) -> Result:
        return await self._operate(ctx, self._create)

    async def configure(self, ctx: OperationContext) -> Result:
        return await self._operate(ctx, self._keep)

    async def start(self, ctx: OperationContext) -> Result:
        return await self._operate(ctx, self._start)

    async def reconfigure(self, ctx: OperationContext) -> Result:
        return await self._operate(ctx, self._keep)

    async def stop(self, ctx: OperationContext) -> Result:
        return await self._operate(ctx, self._stop)

    async def destroy(self, ctx: OperationContext) -> Result:
        return await self._operate(ctx, self._remove)

    async def reset(self, ctx: OperationContext) -> Result:
        return await self._operate(ctx, self._remove)

    async def _operate(self, ctx: OperationContext, apply: Apply) -> Result:
        """Latency, injected failures, then the change; logged whatever happens."""
        started = time.time()
        # Until proven otherwise: a cancelled (deadline) or crashed run is retryable.
        outcome = "retryable"
        try:
            settings = SimSettings.parse(ctx.parameters)
            if settings.latency_ms:
                await asyncio.sleep(settings.latency_ms / 1000.0)
            self._inject_failure(ctx, settings)
            result = apply(ctx, settings)
            outcome = "ok"
            return result
        except Permanent:
            outcome = "permanent"
            raise
        finally:
            self.op_log.write(
                solution=ctx.solution,
                element=ctx.element,
                cluster=ctx.cluster,
                instance=ctx.uuid,
                operation=ctx.transition,
                operation_id=ctx.operation_id,
                outcome=outcome,
                started=started,
                finished=time.time(),
                deadline=ctx.deadline,
            )

    @staticmethod
    def _inject_failure(ctx: OperationContext, settings: SimSettings) -> None:
        if ctx.transition in settings.fail:
            raise Permanent(f"sim: {ctx.transition} fails permanently (sim_fail)")
        if ctx.transition in settings.fail_retryable and ctx.attempt <= settings.fail_times:
            raise Retryable(
                f"sim: {ctx.transition} fails, attempt {ctx.attempt} of {settings.fail_times} (sim_fail_retryable)"
            )

    def _existing(self, ctx: OperationContext) -> Record:
        record = self.table.get(ctx.uuid)
        if record is None:
            raise Permanent(f"sim: instance {ctx.uuid} of element {ctx.element} does not exist ({ctx.transition})")
        return record

    def _create(self, ctx: OperationContext, settings: SimSettings) -> Result:
        record = self.table.get(ctx.uuid)
        if record is not None:
            if (record.solution, record.element, record.cluster) != (ctx.solution, ctx.element, ctx.cluster):
                raise Permanent(
                    f"sim: instance {ctx.uuid} already exists in {record.solution}/{record.element}/{record.cluster}"
                )
            return Result(endpoint=record.endpoint)
        endpoint = settings.endpoint_of(
            uuid=ctx.uuid, element=ctx.element, cluster=ctx.cluster, solution=ctx.solution, domain=ctx.domain
        )
        self.table.put(Record(ctx.uuid, "inactive", endpoint, ctx.solution, ctx.element, ctx.cluster))
        return Result(endpoint=endpoint)

    def _keep(self, ctx: OperationContext, settings: SimSettings) -> Result:
        return Result(endpoint=self._existing(ctx).endpoint)

    def _start(self, ctx: OperationContext, settings: SimSettings) -> Result:
        record = self._existing(ctx)
        self.table.put(replace(record, state="active"))
        return Result(endpoint=record.endpoint)

    def _stop(self, ctx: OperationContext, settings: SimSettings) -> Result:
        record = self._existing(ctx)
        self.table.put(replace(record, state="inactive"))
        return Result(endpoint=record.endpoint)

    def _remove(self, ctx: OperationContext, settings: SimSettings) -> Result:
        self.table.remove(ctx.uuid)
        return Result()
