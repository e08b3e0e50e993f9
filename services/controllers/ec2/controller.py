"""The ec2 controller's operations: each reads the cluster's parameters
(`kind: network` or `kind: server`, see `settings`), finds what exists by
its orch:instance tag, and does only what is missing. Every result's
message lists the API calls it made (or what it found). The operations of
one instance run one at a time, each after the calls of an earlier attempt
that still run in their threads have ended, and no call outlives the
operation's deadline."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from controllers.ec2.api import Ec2Api
from controllers.ec2.network import Networks
from controllers.ec2.preview import preview
from controllers.ec2.server import Servers, endpoint_of, placement, state_of
from controllers.ec2.settings import ClientSettings, Kind, kind_of, network_spec, server_spec
from orchestration_sdk import (UNKNOWN, Controller, InstanceLocks, InstanceRef, InstanceState, OperationContext, Permanent,
                               Result)


class Ec2Controller(Controller):
    """Networks (VPC, subnet, security group) and servers (EC2 instances) in one region."""

    def __init__(self, settings: ClientSettings) -> None:
        self.api = Ec2Api(settings)
        self.servers = Servers(self.api)
        self.networks = Networks(self.api)
        # What each instance is, as its operations said: status then asks the right API first.
        self._kinds: dict[str, Kind] = {}
        # One operation at a time per instance (an attempt and its retry, a stop and a destroy).
        self._locks = InstanceLocks()

    async def open(self) -> None:
        await asyncio.to_thread(self.api.open)  # botocore loads its models: not on the event loop

    @asynccontextmanager
    async def _exclusive(self, ctx: OperationContext) -> AsyncIterator[None]:
        """The instance's own turn: after its other operations, and after the calls of an earlier attempt
        that still run; every call inside ends by the operation's deadline."""
        async with self._locks.held(ctx.uuid):
            with self.api.deadline(ctx.deadline):
                await self.api.settle(ctx.uuid, ctx.deadline)
                yield

    async def close(self) -> None:
        self.api.close()

    def _kind(self, ctx: OperationContext) -> Kind:
        kind = kind_of(ctx.parameters)
        self._kinds[ctx.uuid] = kind
        return kind

    async def create(self, ctx: OperationContext) -> Result:
        async with self._exclusive(ctx):
            return await self._create(ctx)

    async def configure(self, ctx: OperationContext) -> Result:
        async with self._exclusive(ctx):
            return await self._apply(ctx, running=False)

    async def reconfigure(self, ctx: OperationContext) -> Result:
        async with self._exclusive(ctx):
            return await self._apply(ctx, running=True)

    async def start(self, ctx: OperationContext) -> Result:
        async with self._exclusive(ctx):
            return await self._start(ctx)

    async def stop(self, ctx: OperationContext) -> Result:
        async with self._exclusive(ctx):
            return await self._stop(ctx)

    async def destroy(self, ctx: OperationContext) -> Result:
        async with self._exclusive(ctx):
            return await self._destroy(ctx)

    async def reset(self, ctx: OperationContext) -> Result:
        return await self.destroy(ctx)

    async def _create(self, ctx: OperationContext) -> Result:
        if self._kind(ctx) == "network":
            steps: list[str] = []
            parts = await self.networks.ensure(ctx, network_spec(ctx.parameters), steps)
            return _result(parts.endpoint, steps)
        spec = server_spec(ctx.parameters)
        instance, steps = await self.servers.create(ctx, spec, placement(ctx, spec))
        return _result(endpoint_of(instance), steps)

    async def _apply(self, ctx: OperationContext, running: bool) -> Result:
        """A changed configuration: the network's rules and parts, the server's tags and type. `running`
        (reconfigure: the instance is active) ends with the server running, also when an earlier attempt
        stopped it to change its type and got no further."""
        steps: list[str] = []
        if self._kind(ctx) == "network":
            parts = await self.networks.ensure(ctx, network_spec(ctx.parameters), steps)
            return _result(parts.endpoint, steps or ["nothing to change"])
        spec = server_spec(ctx.parameters)
        instance = await self._server(ctx)
        await self.servers.retag(ctx, instance, spec, steps)
        instance = await self.servers.resize(ctx, instance, spec, steps)
        if running and state_of(instance) != "running":
            instance = await self.servers.start(ctx, instance, steps)
        return _result(endpoint_of(instance), steps or ["nothing to change"])

    async def _start(self, ctx: OperationContext) -> Result:
        steps: list[str] = []
        if self._kind(ctx) == "network":
            parts = await self.networks.ensure(ctx, network_spec(ctx.parameters), steps)
            await self.networks.set_state(ctx, parts, "active", steps)
            return _result(parts.endpoint, steps)
        instance = await self.servers.start(ctx, await self._server(ctx), steps)
        return _result(endpoint_of(instance), steps)

    async def _stop(self, ctx: OperationContext) -> Result:
        steps: list[str] = []
        if self._kind(ctx) == "network":
            parts = await self.networks.parts(ctx.uuid)
            await self.networks.set_state(ctx, parts, "inactive", steps)
            return _result(parts.endpoint, steps or ["no network: nothing to stop"])
        found = await self.servers.find(ctx.uuid)
        if found is None:
            return Result(message="no instance: nothing to stop")
        instance = await self.servers.stop(ctx, found, steps)
        return _result(endpoint_of(instance), steps)

    async def _destroy(self, ctx: OperationContext) -> Result:
        try:
            kind: Kind | None = self._kind(ctx)
        except Permanent:
            kind = None  # a broken configuration must not keep what was made: remove both kinds
        steps: list[str] = []
        if kind != "network":
            steps += await self.servers.destroy(ctx)
        if kind != "server":
            steps += await self.networks.destroy(ctx)
        self._kinds.pop(ctx.uuid, None)
        return Result(message="\n".join(steps))

    async def status(self, ref: InstanceRef) -> InstanceState:
        hint = self._kinds.get(ref.uuid)
        if hint != "network":
            state = await self.servers.status(ref)
            if state.known:
                self._kinds[ref.uuid] = "server"
            if state.known or hint == "server":
                return state
        network = await self.networks.status(ref)
        if network is None:
            return UNKNOWN
        self._kinds[ref.uuid] = "network"
        return network

    async def preview(self, ctx: OperationContext) -> str:
        with self.api.deadline(ctx.deadline):
            return await preview(self.servers, self.networks, ctx)

    async def _server(self, ctx: OperationContext) -> dict:  # type: ignore[type-arg]
        instance = await self.servers.find(ctx.uuid)
        if instance is None:
            raise Permanent(f"ec2: no instance is tagged {ctx.uuid} (terminated outside the engine?); "
                            "the engine makes a new one after a reset")
        return instance


def _result(endpoint: str, steps: list[str]) -> Result:
    return Result(endpoint=endpoint, message="\n".join(steps))

