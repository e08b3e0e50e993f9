"""Servers: an engine instance is one EC2 instance, found by its
orch:instance tag. The engine's states map onto EC2's: inactive = stopped,
active = running (pending on its way there), initial = none or terminated.
Create launches it tagged in the same call (RunInstances with
TagSpecifications and a ClientToken made from the operation id), so a
controller that crashed after the launch finds it instead of launching
another."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from controllers.ec2.api import DryRunOk, Ec2Api, tag_list, tags_of
from controllers.ec2.lookup import LIVE, InstanceLookup, live_owned, newest_live
from controllers.ec2.network import parse_endpoint
from controllers.ec2.settings import DEFAULT_TYPE, TAG_ADOPTED, TAG_INSTANCE, ServerSpec, Selector, name_tag, owner_tags
from orchestration_sdk import UNKNOWN, InstanceRef, InstanceState, OperationContext, Permanent, Retryable, StateName

STATES: dict[str, StateName] = {"pending": "active", "running": "active", "stopping": "inactive", "stopped": "inactive"}


@dataclass(frozen=True)
class Placement:
    """Where a server goes: a subnet and its security groups (from a network, or given)."""

    subnet_id: str
    security_group_ids: tuple[str, ...]
    source: str  # for messages: the network relationship or "configuration"


def endpoint_of(instance: dict[str, Any]) -> str:
    address = instance.get("PrivateIpAddress") or ""
    return f"aws://{instance['InstanceId']}" + (f"?ip={address}" if address else "")


def state_of(instance: dict[str, Any] | None) -> str:
    return str(instance["State"]["Name"]) if instance else "none"


def client_token(operation_id: str) -> str:
    """RunInstances' idempotency key: the same for every attempt of one create (at most 64 characters)."""
    return hashlib.sha256(operation_id.encode()).hexdigest()[:64]


class Servers:
    """The server operations, on one Ec2Api."""

    def __init__(self, api: Ec2Api) -> None:
        self.api = api
        self.lookup = InstanceLookup(api)
        # Claims of adopted instances, one at a time: two instances of a cluster must not claim the same one.
        self._claims = asyncio.Lock()

    async def find(self, uuid: str) -> dict[str, Any] | None:
        """The live instance tagged for this engine instance (the newest if, against all care, several)."""
        return newest_live(await self.api.instances(live_owned([uuid]), uuid))

    async def status(self, ref: InstanceRef) -> InstanceState:
        instance = await self.lookup.find(ref.uuid)
        state = STATES.get(state_of(instance))
        if instance is None or state is None:
            return UNKNOWN
        return InstanceState(state, endpoint_of(instance))

    async def create(self, ctx: OperationContext, spec: ServerSpec, placement: Placement) -> tuple[dict[str, Any], list[str]]:
        """Find, adopt or launch the instance; leave it stopped (unless adopted
        running: adopting does not stop what serves). Returns it and the steps taken."""
        steps: list[str] = []
        instance = await self.find(ctx.uuid)
        if instance is not None:
            steps.append(f"found {instance['InstanceId']} ({state_of(instance)}), tagged for this instance")
        elif ctx.adopt and spec.adopt:
            instance = await self._adopt(ctx, spec.adopt, spec.tags)
            if instance is not None:
                steps.append(f"adopted {instance['InstanceId']} ({state_of(instance)}), matching {spec.adopt.describe()}")
        if instance is None:
            instance = await self._launch(ctx, spec, placement)
            steps.append(f"RunInstances {spec.image_id} {spec.instance_type or DEFAULT_TYPE} in {placement.subnet_id}: "
                         f"{instance['InstanceId']}")
        if tags_of(instance).get(TAG_ADOPTED) == "true":
            return instance, steps
        instance = await self._first_boot(ctx, instance, spec.first_boot)
        instance = await self.stop(ctx, instance, steps)
        return instance, steps

    async def _launch(self, ctx: OperationContext, spec: ServerSpec, placement: Placement) -> dict[str, Any]:
        tags = {"Name": name_tag(ctx.solution, ctx.element, ctx.uuid), **spec.tags,
                **owner_tags(ctx.domain, ctx.solution, ctx.element, ctx.uuid)}
        answer = await self.api.call("RunInstances", ctx.uuid, **self._run_params(ctx, spec, placement),
                                     ClientToken=client_token(ctx.operation_id),
                                     TagSpecifications=[{"ResourceType": "instance", "Tags": tag_list(tags)},
                                                        {"ResourceType": "volume", "Tags": tag_list(tags)}])
        instance: dict[str, Any] = answer["Instances"][0]
        if state_of(instance) in ("shutting-down", "terminated"):
            # The ClientToken names an instance someone terminated since: a retry would get the same answer.
            raise Permanent(f"ec2: {instance['InstanceId']}, launched by this create, was terminated; reset the instance")
        ctx.logger.info("launched %s (%s)", instance["InstanceId"], state_of(instance))
        return instance

    @staticmethod
    def _run_params(ctx: OperationContext, spec: ServerSpec, placement: Placement) -> dict[str, Any]:
        params: dict[str, Any] = {"ImageId": spec.image_id, "InstanceType": spec.instance_type or DEFAULT_TYPE, "MinCount": 1,
                                  "MaxCount": 1, "SubnetId": placement.subnet_id}
        if placement.security_group_ids:
            params["SecurityGroupIds"] = list(placement.security_group_ids)
        if spec.key_name:
            params["KeyName"] = spec.key_name
        return params

    async def adoptable(self, uuid: str, selector: Selector) -> list[dict[str, Any]]:
        """The live instances (not on their way out) the selector matches that no engine instance owns, oldest first."""
        found = await self.api.instances([*selector.ec2_filters(), {"Name": "instance-state-name", "Values": LIVE[:4]}], uuid)
        return [i for i in found if TAG_INSTANCE not in tags_of(i)]

    async def _adopt(self, ctx: OperationContext, selector: Selector, extra: Mapping[str, str]) -> dict[str, Any] | None:
        """Claim the oldest live instance the selector matches that no other engine instance owns."""
        async with self._claims:
            free = await self.adoptable(ctx.uuid, selector)
            if not free:
                ctx.logger.info("adopt: nothing free matches %s; launching a new instance", selector.describe())
                return None
            instance = free[0]
            tags = {**extra, **owner_tags(ctx.domain, ctx.solution, ctx.element, ctx.uuid), TAG_ADOPTED: "true"}
            await self.api.call("CreateTags", ctx.uuid, Resources=[instance["InstanceId"]], Tags=tag_list(tags))
            ctx.logger.info("adopted %s", instance["InstanceId"])
            return {**instance, "Tags": [*instance.get("Tags", []), *tag_list(tags)]}

    async def _first_boot(self, ctx: OperationContext, instance: dict[str, Any], seconds: float) -> dict[str, Any]:
        """Wait until the new instance runs and has run `seconds` since its launch (its first boot)."""
        if state_of(instance) not in ("pending", "running"):
            return instance
        instance = await self._wait(ctx, instance["InstanceId"], {"running"}, "running")
        launched = instance.get("LaunchTime")
        if seconds and isinstance(launched, datetime):
            remaining = launched.timestamp() + seconds - time.time()
            if remaining > ctx.deadline - time.time() - 1:
                raise Retryable(f"ec2: {instance['InstanceId']} is in its first boot for {remaining:.0f} s more", after=1.0)
            if remaining > 0:
                ctx.logger.info("%s: first boot, %.1f s more", instance["InstanceId"], remaining)
                await asyncio.sleep(remaining)
        return instance

    async def start(self, ctx: OperationContext, instance: dict[str, Any], steps: list[str]) -> dict[str, Any]:
        state, iid = state_of(instance), instance["InstanceId"]
        if state in ("stopping",):
            instance = await self._wait(ctx, iid, {"stopped"}, "stopped")
            state = "stopped"
        if state == "stopped":
            await self.api.call("StartInstances", ctx.uuid, InstanceIds=[iid])
            steps.append(f"StartInstances {iid}")
        elif state == "running":
            steps.append(f"{iid} is running")
        return await self._wait(ctx, iid, {"running"}, "running")

    async def stop(self, ctx: OperationContext, instance: dict[str, Any], steps: list[str]) -> dict[str, Any]:
        state, iid = state_of(instance), instance["InstanceId"]
        if state == "pending":
            instance = await self._wait(ctx, iid, {"running"}, "running")
            state = "running"
        if state == "running":
            await self.api.call("StopInstances", ctx.uuid, InstanceIds=[iid])
            steps.append(f"StopInstances {iid}")
        elif state == "stopped":
            steps.append(f"{iid} is stopped")
        return await self._wait(ctx, iid, {"stopped"}, "stopped")

    async def destroy(self, ctx: OperationContext) -> list[str]:
        """Terminate every live instance tagged for this engine instance, and wait until they are gone."""
        found = await self.api.instances(live_owned([ctx.uuid]), ctx.uuid)
        if not found:
            return ["no instance: nothing to terminate"]
        ids = [i["InstanceId"] for i in found]
        await self.api.call("TerminateInstances", ctx.uuid, InstanceIds=ids)
        for iid in ids:
            await self._wait(ctx, iid, {"terminated"}, "terminated")
        return [f"TerminateInstances {' '.join(ids)}"]

    async def resize(self, ctx: OperationContext, instance: dict[str, Any], spec: ServerSpec,
                     steps: list[str]) -> dict[str, Any]:
        """Apply a changed instance type (EC2 changes it only while stopped: a running one is stopped and started)."""
        current, iid = instance.get("InstanceType"), instance["InstanceId"]
        if not spec.instance_type or not current or current == spec.instance_type:
            return instance
        running = state_of(instance) in ("pending", "running")
        if running:
            instance = await self.stop(ctx, instance, steps)
        await self.api.call("ModifyInstanceAttribute", ctx.uuid, InstanceId=iid, InstanceType={"Value": spec.instance_type})
        steps.append(f"ModifyInstanceAttribute {iid} InstanceType {current} -> {spec.instance_type}")
        if running:
            instance = await self.start(ctx, instance, steps)
        return instance

    async def retag(self, ctx: OperationContext, instance: dict[str, Any], spec: ServerSpec, steps: list[str]) -> None:
        """Bring the configuration's extra tags onto the instance."""
        have = tags_of(instance)
        missing = {k: v for k, v in spec.tags.items() if have.get(k) != v}
        if missing:
            await self.api.call("CreateTags", ctx.uuid, Resources=[instance["InstanceId"]], Tags=tag_list(missing))
            steps.append(f"CreateTags {instance['InstanceId']} {', '.join(sorted(missing))}")

    async def dry_run(self, ctx: OperationContext, spec: ServerSpec, placement: Placement) -> str:
        """What RunInstances would answer (DryRun): "" when it would succeed, else EC2's reason."""
        try:
            await self.api.call("RunInstances", ctx.uuid, **self._run_params(ctx, spec, placement), DryRun=True)
        except DryRunOk:
            return ""
        except (Retryable, Permanent) as err:
            return str(err)
        return ""

    async def _wait(self, ctx: OperationContext, iid: str, states: set[str], what: str) -> dict[str, Any]:
        async def read() -> dict[str, Any] | None:
            found = await self.api.instances([{"Name": "instance-id", "Values": [iid]}], ctx.uuid)
            return found[0] if found else None

        def done(instance: dict[str, Any] | None) -> bool:
            if instance is None:
                return "terminated" in states
            state = state_of(instance)
            if state == "terminated" and "terminated" not in states:
                raise Permanent(f"ec2: {iid} was terminated while waiting for it to be {what}")
            return state in states

        instance = await self.api.wait(read, done, ctx.deadline, f"ec2: {iid} {what}")
        return instance or {"InstanceId": iid, "State": {"Name": "terminated"}}


def placement(ctx: OperationContext, spec: ServerSpec) -> Placement:
    """The subnet and groups a server goes in: the configuration's, or its network provider's."""
    if spec.subnet_id:
        return Placement(spec.subnet_id, spec.security_group_ids, "configuration")
    providers = [p for p in ctx.providers if not spec.network or p.relationship == spec.network]
    if spec.network and not providers:
        named = ", ".join(p.relationship for p in ctx.providers) or "none"
        raise Permanent(f"ec2: network={spec.network!r} names no relationship of this element (it has: {named})")
    networks = {p.relationship: sorted(e for e in p.endpoints if parse_endpoint(e)) for p in providers}
    ready = {name: endpoints for name, endpoints in networks.items() if endpoints}
    if len(ready) > 1:
        raise Permanent(f"ec2: several networks ({', '.join(sorted(ready))}): say which with network: RELATIONSHIP")
    if not ready:
        if any(p.type == "context" and not p.endpoints for p in providers):
            raise Retryable("ec2: the network has no active instance yet", after=2.0)
        raise Permanent("ec2: a server needs a network: a context dependency on an element of kind network, "
                        "or subnet_id (and security_group_ids) in its Configuration")
    name, endpoints = next(iter(ready.items()))
    # Instances of a server cluster spread over the network's instances, each always on the same one.
    vpc_subnet_group = parse_endpoint(endpoints[int(hashlib.sha256(ctx.uuid.encode()).hexdigest(), 16) % len(endpoints)])
    assert vpc_subnet_group is not None
    _, subnet, group = vpc_subnet_group
    return Placement(subnet, (group, *spec.security_group_ids), name)
