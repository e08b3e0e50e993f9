"""The operation path: build the operation for an instance's next transition,
send it to a controller, and turn whatever happened into one Outcome value;
the one retry policy decides what an outcome means for the instance."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import Enum

from dispatcher.controllers import ControllerPool, LinkLost, NoController, Views
from dispatcher.settings import EngineSettings
from dispatcher.run.state import ClusterSlot, InstanceSlot, SolutionState
from orchestration.model.lifecycle import TRANSITION_NAMES
from orchestration.v1 import controller_pb2 as cpb
from orchestration.v1.model_pb2 import Transition
from orchestration_sdk.runtime.backoff import Backoff, Jitter

# Transitions that tell a controller the endpoints of the instance's siblings.
SIBLING_AWARE = (Transition.TRANSITION_CONFIGURE, Transition.TRANSITION_START, Transition.TRANSITION_RECONFIGURE)
# A replica that goes away mid-operation is replaced this many times at most.
MAX_LINK_LOSSES = 50
LINK_LOST_PAUSE = 0.2


class Verdict(Enum):
    OK = "ok"
    RETRY = "retry"
    FAIL = "fail"


@dataclass(frozen=True)
class Outcome:
    """What came of one operation."""

    verdict: Verdict
    message: str = ""
    # RETRY: seconds to wait first (None: the back-off decides).
    delay: float | None = None
    result: cpb.OperationResult | None = None
    # For the operations metric: ok, retryable, permanent, timeout, no controller, link lost.
    label: str = "ok"


def build_operation(state: SolutionState, slot: InstanceSlot, cluster: ClusterSlot, transition: Transition,
                    domain: str, solution: str, timeout: float, now_unix: float) -> tuple[cpb.Operation, Views]:
    """The operation to send, and the member lists it refers to."""
    record = slot.record
    views: Views = {}
    for rel in cluster.record.relationships:
        provider = state.clusters.get((rel.element, rel.version))
        views[f"{rel.element}/{rel.version}"] = state.endpoints(provider) if provider else ()
    operation = cpb.Operation()
    operation.CopyFrom(template(cluster, domain, solution))
    if transition in SIBLING_AWARE and not cluster.ignores_siblings:
        operation.members = f"{slot.element}/{slot.cluster}"
        views[operation.members] = state.endpoints(cluster)
        slot.sent_siblings = state.others(cluster, slot)
    operation.operation_id = f"{record.uuid}-{record.sequence + 1}-{TRANSITION_NAMES[transition]}"
    operation.transition = transition
    operation.instance.uuid = record.uuid
    operation.endpoint = record.endpoint
    operation.attempt = slot.attempt
    operation.deadline_unix_ms = int((now_unix + timeout) * 1000)
    return operation, views


def template(cluster: ClusterSlot, domain: str, solution: str) -> cpb.Operation:
    """What every operation of a cluster has in common (made once, copied per operation)."""
    if cluster.template is None:
        cluster.template = cpb.Operation(
            instance=cpb.InstanceReference(
                domain=domain, solution=solution, element=cluster.element, cluster=cluster.record.version,
                component=cluster.component, component_version=cluster.record.version,
            ),
            configuration=cluster.record.configuration,
            parameters=cluster.parameters,
            providers=[cpb.Provider(
                relationship=rel.name, type=rel.type, element=rel.element, cluster=rel.version,
                configuration=rel.configuration, members=f"{rel.element}/{rel.version}",
            ) for rel in cluster.record.relationships],
        )
    return cluster.template


def outcome_of(result: cpb.OperationResult, name: str) -> Outcome:
    """The outcome a controller reported."""
    if result.outcome == cpb.OUTCOME_OK:
        return Outcome(Verdict.OK, result=result)
    if result.outcome == cpb.OUTCOME_PERMANENT:
        return Outcome(Verdict.FAIL, f"{name} failed: {result.message}", result=result, label="permanent")
    delay = result.retry_after_ms / 1000 if result.retry_after_ms else None
    return Outcome(Verdict.RETRY, result.message or "retryable failure", delay, result, label="retryable")


async def send(pool: ControllerPool, cluster: ClusterSlot, operation: cpb.Operation, views: Views, timeout: float,
               stopping: Callable[[], bool], pause: float = LINK_LOST_PAUSE, sent: asyncio.Future[None] | None = None,
               urgent: bool = False) -> Outcome:
    """Send to a replica of the cluster's controller and wait for the outcome
    (`sent`: resolved once the operation is written to a replica's stream;
    `urgent`: in the priority lane).
    A replica that goes away mid-operation is replaced (same operation id:
    its outcome was unknown) until the run stops or MAX_LINK_LOSSES."""
    name = TRANSITION_NAMES[operation.transition]
    losses = 0
    while True:
        try:
            result = await pool.execute(cluster.controller or "?", operation, timeout + 1.0, views, budget=timeout,
                                        sent=sent, urgent=urgent)
            return outcome_of(result, name)
        except asyncio.TimeoutError:
            return Outcome(Verdict.RETRY, f"{name} timed out after {timeout:g}s", label="timeout")
        except NoController as err:
            message = f"component '{cluster.component}' version '{cluster.record.version}': {err}"
            return Outcome(Verdict.FAIL, message, label="no controller")
        except LinkLost as err:
            losses += 1
            if losses > MAX_LINK_LOSSES or stopping():
                return Outcome(Verdict.FAIL, f"{name}: {err}", label="link lost")
            await asyncio.sleep(pause)


class RetryPolicy:
    """The one retry policy of operations: a cluster's own limits (its
    parameters orch_operation_timeout and orch_max_attempts) over the
    engine's settings, and the engine's back-off with full jitter."""

    def __init__(self, settings: EngineSettings, uniform: Callable[[float, float], float] = random.uniform) -> None:
        self.settings = settings
        self.backoff = Backoff(settings.backoff_base, settings.backoff_max, jitter=Jitter.FULL)
        self._uniform = uniform

    def timeout_of(self, cluster: ClusterSlot) -> float:
        try:
            return float(cluster.parameters.get("orch_operation_timeout", self.settings.operation_timeout))
        except ValueError:
            return self.settings.operation_timeout

    def attempts_of(self, cluster: ClusterSlot) -> int:
        try:
            return int(cluster.parameters.get("orch_max_attempts", self.settings.max_attempts))
        except ValueError:
            return self.settings.max_attempts

    def decide(self, outcome: Outcome, slot: InstanceSlot, cluster: ClusterSlot, transition: Transition) -> Outcome:
        """A RETRY outcome with its delay, or FAIL once the attempts are used up."""
        if outcome.verdict is not Verdict.RETRY:
            return outcome
        if slot.attempt >= self.attempts_of(cluster):
            message = f"{TRANSITION_NAMES[transition]} failed after {slot.attempt} attempts: {outcome.message}"
            return replace(outcome, verdict=Verdict.FAIL, message=message)
        if outcome.delay is not None:
            return outcome
        return replace(outcome, delay=self.backoff.delay(slot.attempt, self._uniform))
