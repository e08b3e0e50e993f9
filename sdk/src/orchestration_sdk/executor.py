"""The one executor: runs one operation of user code and turns every outcome
(result, Retryable, Permanent, unexpected exception, deadline) into an
OperationResult. Scheduling, retry counting and back-off are the
dispatcher's job; this only reports."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import cast

from opentelemetry.trace import SpanKind

from orchestration_sdk.context import OperationContext
from orchestration_sdk.controller import Controller, Result
from orchestration_sdk.convert import TRANSITION_NAMES, Views, deadline_of, operation_context
from orchestration_sdk.errors import Permanent, Retryable
from orchestration_sdk.lifecycle import EDGES
from orchestration_sdk.runtime import telemetry
from orchestration_sdk.runtime.metrics import OPERATION_SECONDS, OPERATIONS, labelled
from orchestration_sdk.v1 import controller_pb2 as pb
from orchestration_sdk.v1.model_pb2 import State, Transition

log = logging.getLogger("orchestration_sdk")
_tracer = telemetry.tracer("orchestration_sdk")

OK = pb.Outcome.OUTCOME_OK
RETRYABLE = pb.Outcome.OUTCOME_RETRYABLE
PERMANENT = pb.Outcome.OUTCOME_PERMANENT

# A result's message is for people, in an event: kept short, whatever the controller sends.
MESSAGE_LIMIT = 8192

# The state an instance is in after a successful transition (DESIGN.md section 3).
RESULT_STATES: dict[int, State] = {transition: cast(State, to) for transition, (_, to) in EDGES.items()}


def _method(controller: Controller, transition: Transition) -> Callable[[OperationContext], Awaitable[Result | None]]:
    method: Callable[[OperationContext], Awaitable[Result | None]] = getattr(controller, TRANSITION_NAMES[transition])
    return method


def retryable(operation_id: str, message: str, after: float | None = None) -> pb.OperationResult:
    """A retryable result. The state is left unspecified: after a failed
    attempt nobody knows it, and the dispatcher asks Status if it must."""
    after_ms = 0 if after is None else max(0, min(int(after * 1000), 2**31 - 1))
    return pb.OperationResult(operation_id=operation_id, outcome=RETRYABLE, message=message, retry_after_ms=after_ms)


def permanent(operation_id: str, message: str) -> pb.OperationResult:
    """A permanent failure: the instance is in failure."""
    return pb.OperationResult(operation_id=operation_id, outcome=PERMANENT, state=State.STATE_FAILURE, message=message)


async def execute(controller: Controller, operation: pb.Operation, logger: logging.Logger = log,
                  views: Views | None = None) -> pb.OperationResult:
    """Run one operation of `controller` and report how it ended; never raises
    (except CancelledError when the caller itself is cancelled).

    Each operation is a span, a child of the dispatcher's span for it (when spans are recorded)."""
    name = TRANSITION_NAMES.get(operation.transition, "operation")
    parent = telemetry.context_of(operation.traceparent)
    started = time.perf_counter()
    attributes = {"orch.operation_id": operation.operation_id, "orch.transition": name, "orch.instance": operation.instance.uuid,
                  "orch.element": operation.instance.element, "orch.cluster": operation.instance.cluster}
    with telemetry.hot_span(_tracer, f"{name} {operation.instance.uuid}", parent, SpanKind.SERVER, attributes) as span:
        result = await _execute(controller, operation, logger, views)
        if result.outcome != OK:
            telemetry.fail(span, result.message)
    outcome = pb.Outcome.Name(result.outcome).removeprefix("OUTCOME_").lower()
    labelled(OPERATIONS, name, outcome).inc()
    labelled(OPERATION_SECONDS, name).observe(time.perf_counter() - started)
    return result


async def _execute(controller: Controller, operation: pb.Operation, logger: logging.Logger,
                   views: Views | None) -> pb.OperationResult:
    op_id = operation.operation_id
    if operation.transition not in RESULT_STATES:
        return permanent(op_id, f"unknown transition {operation.transition}")
    now = time.time()
    budget = deadline_of(operation, now) - now
    if budget <= 0:
        # Running now could only be cut short: say so without touching anything.
        return retryable(op_id, f"deadline passed {-budget:.1f} s before the operation started")
    ctx = operation_context(operation, logger, now, views)
    loop = asyncio.get_running_loop()
    timeout = asyncio.timeout_at(loop.time() + budget)
    try:
        async with timeout:
            result = await _method(controller, operation.transition)(ctx)
    except TimeoutError as err:
        if timeout.expired():
            ctx.logger.warning("%s cancelled: deadline exceeded after %.1f s", ctx.transition, budget)
            return retryable(op_id, f"deadline exceeded after {budget:.1f} s")
        return _unexpected(ctx, err)
    except Retryable as err:
        ctx.logger.info("%s failed, retryable: %s", ctx.transition, err.message)
        return retryable(op_id, err.message, err.after)
    except Permanent as err:
        ctx.logger.warning("%s failed permanently: %s", ctx.transition, err.message)
        return permanent(op_id, err.message)
    except Exception as err:  # noqa: BLE001 - every outcome of user code becomes a value
        return _unexpected(ctx, err)
    result = result or Result()
    ctx.logger.debug("%s done", ctx.transition)
    return pb.OperationResult(
        operation_id=op_id,
        outcome=OK,
        state=RESULT_STATES[operation.transition],
        endpoint=result.endpoint,
        configuration=result.configuration,
        message=result.message[:MESSAGE_LIMIT],
    )


def _unexpected(ctx: OperationContext, err: Exception) -> pb.OperationResult:
    # A bug or an unforeseen failure: retried within the dispatcher's limits.
    ctx.logger.warning("%s raised %s", ctx.transition, type(err).__name__, exc_info=err)
    text = str(err)
    return retryable(ctx.operation_id, f"{type(err).__name__}: {text}" if text else type(err).__name__)
