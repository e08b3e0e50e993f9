"""The ec2 controller's dry run: what an operation would call, from what
exists now (Describe* calls, and DryRun for RunInstances, StartInstances
and StopInstances: EC2's own check of the request and its permissions); it
changes nothing."""

from __future__ import annotations

from controllers.ec2.api import DryRunOk, tags_of
from controllers.ec2.network import Networks, rule_changes
from controllers.ec2.server import Servers, placement, state_of
from controllers.ec2.settings import DEFAULT_TYPE, TAG_STATE, kind_of, network_spec, server_spec
from orchestration_sdk import OperationContext, Permanent, Retryable


async def preview(servers: Servers, networks: Networks, ctx: OperationContext) -> str:
    """One line per call the operation `ctx.transition` would make, or why it would make none."""
    if ctx.transition in ("destroy", "reset"):
        return await _removal(servers, networks, ctx)
    if kind_of(ctx.parameters) == "network":
        return await _network(networks, ctx)
    return await _server(servers, ctx)


async def _removal(servers: Servers, networks: Networks, ctx: OperationContext) -> str:
    instance = await servers.find(ctx.uuid)
    if instance is not None:
        return f"TerminateInstances {instance['InstanceId']} ({state_of(instance)})"
    parts = await networks.parts(ctx.uuid)
    lines = [f"{call} {item[key]}" for call, key, item in (("DeleteSecurityGroup", "GroupId", parts.group),
                                                             ("DeleteSubnet", "SubnetId", parts.subnet),
                                                             ("DeleteVpc", "VpcId", parts.vpc)) if item]
    return "\n".join(lines) or "nothing: no instance or network is tagged for it"


async def _network(networks: Networks, ctx: OperationContext) -> str:
    spec = network_spec(ctx.parameters)
    parts = await networks.parts(ctx.uuid)
    lines: list[str] = []
    if parts.vpc is None:
        if ctx.transition != "create":
            return f"nothing to {ctx.transition}: no network is tagged for it (create makes one)"
        if ctx.adopt and spec.adopt:
            free = await networks.adoptable(ctx.uuid, spec.adopt)
            if free:
                return f"adopt {free[0]['VpcId']} (matching {spec.adopt.describe()}): CreateTags, and a subnet and group if it lacks them"
        # No DryRun here: moto's CreateVpc does not honour it (it made a VPC).
        rules = f" with {len(spec.ingress)} ingress rule(s)" if spec.ingress else ""
        return (f"CreateVpc {spec.cidr}\nCreateSubnet {spec.subnet_cidr}\n"
                f"CreateSecurityGroup orch-{ctx.uuid}{rules}")
    lines.append(f"exists as {parts.endpoint or parts.vpc['VpcId']}")
    if parts.subnet is None:
        lines.append(f"CreateSubnet {spec.subnet_cidr} (missing)")
    if parts.group is None:
        lines.append(f"CreateSecurityGroup orch-{ctx.uuid} (missing)")
    else:
        missing, extra = rule_changes(parts.group, spec.ingress)
        if missing:
            lines.append(f"AuthorizeSecurityGroupIngress {len(missing)} rule(s)")
        if extra:
            lines.append(f"RevokeSecurityGroupIngress {len(extra)} rule(s)")
    state = {"start": "active", "stop": "inactive"}.get(ctx.transition)
    if state and tags_of(parts.vpc).get(TAG_STATE) != state:
        lines.append(f"CreateTags {parts.vpc['VpcId']} {TAG_STATE}={state}")
    return "\n".join(lines) if len(lines) > 1 else f"nothing: {lines[0]}"


async def _server(servers: Servers, ctx: OperationContext) -> str:
    spec = server_spec(ctx.parameters)
    instance = await servers.find(ctx.uuid)
    if ctx.transition == "create":
        if instance is not None:
            return f"nothing: exists as {instance['InstanceId']} ({state_of(instance)})"
        if ctx.adopt and spec.adopt:
            free = await servers.adoptable(ctx.uuid, spec.adopt)
            if free:
                return f"adopt {free[0]['InstanceId']} ({state_of(free[0])}, matching {spec.adopt.describe()}): CreateTags"
        launch = f"RunInstances ImageId={spec.image_id} InstanceType={spec.instance_type or DEFAULT_TYPE}"
        try:
            where = placement(ctx, spec)
        except (Retryable, Permanent) as err:
            return f"{launch} in the network's subnet, once there is one ({err})\nStopInstances"
        refused = await servers.dry_run(ctx, spec, where)
        if refused:
            return f"{launch} would fail: {refused}"
        groups = f" with {' '.join(where.security_group_ids)}" if where.security_group_ids else ""
        return f"{launch} in {where.subnet_id}{groups}\nStopInstances"
    if instance is None:
        return f"nothing to {ctx.transition}: no instance is tagged for it"
    iid, state = instance["InstanceId"], state_of(instance)
    if ctx.transition in ("start", "stop"):
        return await _start_stop(servers, ctx, iid, state)
    lines = []
    missing = sorted(k for k, v in spec.tags.items() if tags_of(instance).get(k) != v)
    if missing:
        lines.append(f"CreateTags {iid} {', '.join(missing)}")
    current = instance.get("InstanceType")
    resize = bool(spec.instance_type and current and current != spec.instance_type)
    if resize and state in ("pending", "running"):
        lines.append(f"StopInstances {iid}")
    if resize:
        lines.append(f"ModifyInstanceAttribute {iid} InstanceType {current} -> {spec.instance_type}")
    if ctx.transition == "reconfigure" and (state not in ("running", "pending") or resize):
        # reconfigure leaves the server running (also after an attempt that stopped it and got no further)
        lines.append(f"StartInstances {iid}" + ("" if resize or state == "stopped" else f" (once {state} ends)"))
    return "\n".join(lines) or f"nothing: {iid} matches the configuration"


async def _start_stop(servers: Servers, ctx: OperationContext, iid: str, state: str) -> str:
    """What start or stop does: wait out a change under way, then call (DryRun first: EC2's own check)."""
    start = ctx.transition == "start"
    wanted, call = ("running", "StartInstances") if start else ("stopped", "StopInstances")
    if state == wanted:
        return f"nothing: {iid} is {state}"
    if state == ("pending" if start else "stopping"):
        return f"nothing: {iid} is {state}; {ctx.transition} waits until it is {wanted}"
    if state == ("stopping" if start else "pending"):
        # EC2 refuses the call in this state (a DryRun would say so): the operation waits first.
        before = "stopped" if start else "running"
        return f"wait until {iid} is {before} (it is {state}), then {call} {iid}"
    try:
        await servers.api.call(call, ctx.uuid, InstanceIds=[iid], DryRun=True)
    except DryRunOk:
        pass
    except (Retryable, Permanent) as err:
        return f"{call} {iid} would fail: {err}"
    return f"{call} {iid} ({state})"
