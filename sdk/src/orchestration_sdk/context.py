"""What user code receives: the identity of an instance and everything the
dispatcher knows about the operation to apply to it."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

DependencyKind = Literal["context", "service"]


@dataclass(frozen=True)
class InstanceRef:
    """Names one instance and what it is (the argument of `Controller.status`)."""

    domain: str
    solution: str
    element: str
    cluster: str
    uuid: str
    component: str = ""
    component_version: str = ""


@dataclass(frozen=True)
class Provider:
    """Run-time view of an instance cluster this instance depends on.

    `type` is "context" (needed before create) or "service" (needed before
    start); `endpoints` are those of the provider's active instances.
    """

    relationship: str
    type: DependencyKind
    element: str
    cluster: str
    endpoints: tuple[str, ...]
    configuration: str


@dataclass(frozen=True)
class OperationContext:
    """The one argument of every operation method of a `Controller`.

    Identity: `domain, solution, element, cluster, uuid, component,
    component_version` (`instance` bundles them). `operation_id` is stable
    across retries and re-deliveries of the same step, so it makes a good
    idempotency key for a cloud API; `attempt` counts from 1. `deadline` is in
    `time.time()` seconds: the SDK cancels the operation when it passes.
    `configuration` is the rendered configuration text, `parameters` the
    cluster's design-time map (all values are strings). `providers` are the
    clusters this instance depends on, `siblings` the endpoints of the other
    members of its cluster. `logger` already carries the operation id and the
    instance; `traceparent` is the W3C trace context of the dispatcher's span.
    `adopt` (create only) asks to take over a resource that already exists and
    matches the instance, as the component's configuration says, making one
    only where nothing matches (`orch solution adopt`).

    Example::

        async def start(self, ctx: OperationContext) -> Result:
            ctx.logger.info("starting (attempt %d)", ctx.attempt)
            db = next(p for p in ctx.providers if p.relationship == "db")
            url = await self.api.start(ctx.uuid, db.endpoints[0], key=ctx.operation_id)
            return Result(endpoint=url)
    """

    domain: str
    solution: str
    element: str
    cluster: str
    uuid: str
    component: str
    component_version: str
    operation_id: str
    transition: str
    attempt: int
    deadline: float
    configuration: str
    parameters: Mapping[str, str]
    providers: tuple[Provider, ...]
    siblings: Sequence[str]  # read-only; a view shared with the other operations of a batch
    logger: logging.LoggerAdapter[logging.Logger]
    traceparent: str = ""
    adopt: bool = False

    @property
    def instance(self) -> InstanceRef:
        """The identity of the instance, as `Controller.status` receives it."""
        return InstanceRef(
            self.domain, self.solution, self.element, self.cluster, self.uuid, self.component, self.component_version
        )
