"""Networks: an engine instance is a VPC with one subnet and one security
group, each tagged for the instance (created tagged, in the same call). A
network has no running or stopped of its own: its lifecycle state is the
VPC's orch:state tag (start sets active, stop inactive), and a network with
a part missing is inactive (start makes the part again). Its endpoint
`aws://VPC/SUBNET/GROUP` tells a server that depends on it where to go."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from controllers.ec2.api import ApiError, Ec2Api, Ec2Retryable, tag_list, tags_of
from controllers.ec2.lookup import Coalescing, by_owner
from controllers.ec2.settings import (TAG_ADOPTED, TAG_INSTANCE, TAG_STATE, NetworkSpec, Rule, Selector, name_tag,
                                      owned, owner_tags)
from orchestration_sdk import InstanceRef, InstanceState, OperationContext

_MISSING = {"InvalidVpcID.NotFound", "InvalidSubnetID.NotFound", "InvalidGroup.NotFound", "InvalidGroupId.Malformed"}
# What EC2 answers when a call repeated (its first answer lost) or a rule asked for twice finds it done.
_ALREADY_THERE, _ALREADY_GONE = "InvalidPermission.Duplicate", "InvalidPermission.NotFound"


@dataclass(frozen=True)
class Parts:
    """What of a network exists (each part its Describe* item, or None)."""

    vpc: dict[str, Any] | None
    subnet: dict[str, Any] | None
    group: dict[str, Any] | None
    spare: tuple[str, ...] = ()  # other VPCs tagged for the instance (a CreateVpc that outlived its attempt)

    @property
    def endpoint(self) -> str:
        if not (self.vpc and self.subnet and self.group):
            return ""
        return f"aws://{self.vpc['VpcId']}/{self.subnet['SubnetId']}/{self.group['GroupId']}"

    @property
    def state(self) -> str:
        if not (self.vpc and self.subnet and self.group):
            return "inactive"
        return "active" if tags_of(self.vpc).get(TAG_STATE) == "active" else "inactive"


def parse_endpoint(endpoint: str) -> tuple[str, str, str] | None:
    """(vpc, subnet, group) of a network's endpoint, or None when it is not one."""
    if not endpoint.startswith("aws://vpc-"):
        return None
    parts = endpoint.removeprefix("aws://").split("?", 1)[0].split("/")
    if len(parts) != 3 or not parts[1].startswith("subnet-") or not parts[2].startswith("sg-"):
        return None
    return parts[0], parts[1], parts[2]


def _ip_permission(rule: Rule) -> dict[str, Any]:
    permission: dict[str, Any] = {"IpProtocol": rule.protocol, "IpRanges": [{"CidrIp": rule.cidr}]}
    if rule.protocol != "-1":
        permission.update(FromPort=rule.from_port, ToPort=rule.to_port)
    return permission


def rule_changes(group: dict[str, Any], wanted: Iterable[Rule]) -> tuple[list[Rule], list[Rule]]:
    """The rules to authorize and to revoke to bring a group's rules to `wanted`."""
    have, wanted = rules_of(group), list(wanted)
    return [r for r in wanted if r not in have], sorted(have - set(wanted), key=str)


def rules_of(group: dict[str, Any]) -> set[Rule]:
    found = set()
    for permission in group.get("IpPermissions") or []:
        protocol = str(permission["IpProtocol"])
        ports = (0, 0) if protocol == "-1" else (int(permission.get("FromPort", 0) or 0), int(permission.get("ToPort", 0) or 0))
        for ip_range in permission.get("IpRanges") or []:
            found.add(Rule(protocol, *ports, str(ip_range["CidrIp"])))
    return found


def _choose(vpcs: list[dict[str, Any]], subnets: list[dict[str, Any]], groups: list[dict[str, Any]]) -> Parts:
    """An instance's parts, from the VPCs, subnets and groups tagged for it."""
    def inside(items: list[dict[str, Any]], vpc_id: str) -> list[dict[str, Any]]:
        return sorted((i for i in items if i.get("VpcId") == vpc_id), key=lambda i: str(i.get("SubnetId") or i.get("GroupId")))

    vpc = min(vpcs, key=lambda v: (-len(inside(subnets, v["VpcId"])) - len(inside(groups, v["VpcId"])), v["VpcId"]))
    mine_subnets, mine_groups = inside(subnets, vpc["VpcId"]), inside(groups, vpc["VpcId"])
    return Parts(vpc, mine_subnets[0] if mine_subnets else None, mine_groups[0] if mine_groups else None,
                 tuple(sorted(v["VpcId"] for v in vpcs if v is not vpc)))


class Networks:
    """The network operations, on one Ec2Api."""

    def __init__(self, api: Ec2Api) -> None:
        self.api = api
        self._claims = asyncio.Lock()
        self.lookup: Coalescing[Parts] = Coalescing(self._parts_of, Parts(None, None, None))

    async def parts(self, uuid: str) -> Parts:
        """The instance's VPC, subnet and group (three Describe calls at once)."""
        return (await self._parts_of([uuid], uuid)).get(uuid, Parts(None, None, None))

    async def _parts_of(self, uuids: list[str], uuid: str = "") -> dict[str, Parts]:
        """The parts of each of these instances, from three Describe calls made at once. Should several VPCs
        carry an instance's tag, the one with most of its parts counts, then the lowest id: every attempt
        picks the same."""
        mine = [{"Name": f"tag:{TAG_INSTANCE}", "Values": uuids}]
        vpcs, subnets, groups = (by_owner(found) for found in await asyncio.gather(
            self.api.describe("DescribeVpcs", "Vpcs", uuid, Filters=mine),
            self.api.describe("DescribeSubnets", "Subnets", uuid, Filters=mine),
            self.api.describe("DescribeSecurityGroups", "SecurityGroups", uuid, Filters=mine)))
        return {owner: _choose(vpcs[owner], subnets.get(owner, []), groups.get(owner, []))
                for owner in uuids if vpcs.get(owner)}

    async def status(self, ref: InstanceRef) -> InstanceState | None:
        """The network's state, or None when no VPC is tagged for the instance (the statuses
        asked together share their Describe calls)."""
        parts = await self.lookup.find(ref.uuid)
        if parts.vpc is None:
            return None
        return InstanceState("active" if parts.state == "active" else "inactive", parts.endpoint)

    async def ensure(self, ctx: OperationContext, spec: NetworkSpec, steps: list[str]) -> Parts:
        """Find, adopt or make each part; brings the group's rules to the configuration's."""
        parts = await self.parts(ctx.uuid)
        tags = {"Name": name_tag(ctx.solution, ctx.element, ctx.uuid), **spec.tags,
                **owner_tags(ctx.domain, ctx.solution, ctx.element, ctx.uuid)}
        await self._remove_spares(ctx, parts.spare, steps)
        vpc = parts.vpc
        if vpc is None and ctx.adopt and spec.adopt:
            vpc = await self._adopt(ctx, spec.adopt, steps)
        if vpc is None:
            vpc = (await self.api.call("CreateVpc", ctx.uuid, CidrBlock=spec.cidr, TagSpecifications=[
                {"ResourceType": "vpc", "Tags": tag_list({**tags, TAG_STATE: "inactive"})}]))["Vpc"]
            steps.append(f"CreateVpc {spec.cidr}: {vpc['VpcId']}")
        vpc_id = vpc["VpcId"]
        subnet = parts.subnet
        if subnet is None and tags_of(vpc).get(TAG_ADOPTED) == "true":
            subnet = await self._claim_first("DescribeSubnets", "Subnets", "SubnetId", ctx, vpc_id, tags, steps)
        if subnet is None:
            subnet = await self._make_subnet(ctx, vpc_id, spec.subnet_cidr, tags, steps)
        group = parts.group or await self._make_group(ctx, vpc_id, tags, steps)
        await self._sync_rules(ctx, group, spec.ingress, steps)
        return Parts(vpc, subnet, group)

    async def _remove_spares(self, ctx: OperationContext, spare: tuple[str, ...], steps: list[str]) -> None:
        """Delete the other VPCs tagged for the instance (made by a CreateVpc that outlived its attempt);
        one that is in use stays, for destroy."""
        for vpc_id in spare:
            try:
                await self.api.call("DeleteVpc", ctx.uuid, VpcId=vpc_id)
            except ApiError as err:
                ctx.logger.warning("a second VPC %s is tagged for this instance; not deleted: %s", vpc_id, err)
                continue
            steps.append(f"DeleteVpc {vpc_id} (a second VPC tagged for this instance)")

    async def _make_subnet(self, ctx: OperationContext, vpc_id: str, cidr: str, tags: dict[str, str],
                           steps: list[str]) -> dict[str, Any]:
        try:
            subnet: dict[str, Any] = (await self.api.call(
                "CreateSubnet", ctx.uuid, VpcId=vpc_id, CidrBlock=cidr,
                TagSpecifications=[{"ResourceType": "subnet", "Tags": tag_list(tags)}]))["Subnet"]
        except ApiError as err:
            if err.code != "InvalidSubnet.Conflict":
                raise
            # The block is taken in our own VPC: by an earlier attempt whose answer was lost (then tagged in
            # that call), or by hand (untagged). Take it; not another instance's (an adopted VPC's subnets).
            found = await self.api.describe("DescribeSubnets", "Subnets", ctx.uuid, Filters=[
                {"Name": "vpc-id", "Values": [vpc_id]}, {"Name": "cidr-block", "Values": [cidr]}])
            owner = tags_of(found[0]).get(TAG_INSTANCE, ctx.uuid) if found else ""
            if owner != ctx.uuid:
                raise  # no such subnet (the block overlaps another), or another instance's
            subnet = found[0]
            if TAG_INSTANCE not in tags_of(subnet):
                await self.api.call("CreateTags", ctx.uuid, Resources=[subnet["SubnetId"]], Tags=tag_list(tags))
            steps.append(f"found {subnet['SubnetId']} ({cidr}) in {vpc_id}")
            return subnet
        steps.append(f"CreateSubnet {cidr}: {subnet['SubnetId']}")
        return subnet

    async def adoptable(self, uuid: str, selector: Selector) -> list[dict[str, Any]]:
        """The VPCs the selector matches that no engine instance owns yet."""
        found = await self.api.describe("DescribeVpcs", "Vpcs", uuid, Filters=selector.ec2_filters())
        return [v for v in found if TAG_INSTANCE not in tags_of(v)]

    async def _adopt(self, ctx: OperationContext, selector: Selector, steps: list[str]) -> dict[str, Any] | None:
        async with self._claims:
            free = await self.adoptable(ctx.uuid, selector)
            if not free:
                return None
            vpc = free[0]
            tags = {**owner_tags(ctx.domain, ctx.solution, ctx.element, ctx.uuid), TAG_ADOPTED: "true",
                    TAG_STATE: "inactive"}
            await self.api.call("CreateTags", ctx.uuid, Resources=[vpc["VpcId"]], Tags=tag_list(tags))
            steps.append(f"adopted {vpc['VpcId']}, matching {selector.describe()}")
            return {**vpc, "Tags": [*vpc.get("Tags", []), *tag_list(tags)]}

    async def _claim_first(self, operation: str, key: str, id_key: str, ctx: OperationContext, vpc_id: str,
                           tags: dict[str, str], steps: list[str]) -> dict[str, Any] | None:
        """An adopted VPC's own subnet, claimed (tagged) for the instance."""
        found = await self.api.describe(operation, key, ctx.uuid, Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])
        free = [item for item in found if TAG_INSTANCE not in tags_of(item)]
        if not free:
            return None
        item = free[0]
        await self.api.call("CreateTags", ctx.uuid, Resources=[item[id_key]],
                            Tags=tag_list({k: v for k, v in tags.items() if k != "Name"}))
        steps.append(f"adopted {item[id_key]}")
        return item

    async def _make_group(self, ctx: OperationContext, vpc_id: str, tags: dict[str, str], steps: list[str]) -> dict[str, Any]:
        name = f"orch-{ctx.uuid}"
        try:
            answer = await self.api.call("CreateSecurityGroup", ctx.uuid, GroupName=name, VpcId=vpc_id,
                                         Description=f"{ctx.solution}/{ctx.element} (orchestration engine)",
                                         TagSpecifications=[{"ResourceType": "security-group", "Tags": tag_list(tags)}])
        except ApiError as err:
            if err.code != "InvalidGroup.Duplicate":
                raise
            # The name is taken in our VPC: by an earlier attempt whose answer was lost (then tagged in that
            # call, and maybe not visible yet to the Describe that looked), or by hand. Take it.
            groups = await self.api.describe("DescribeSecurityGroups", "SecurityGroups", ctx.uuid, Filters=[
                {"Name": "vpc-id", "Values": [vpc_id]}, {"Name": "group-name", "Values": [name]}])
            if not groups:
                raise Ec2Retryable(f"ec2: the group {name} exists but is not visible yet", err.code, after=2.0) from None
            if tags_of(groups[0]).get(TAG_INSTANCE) != ctx.uuid:
                await self.api.call("CreateTags", ctx.uuid, Resources=[groups[0]["GroupId"]], Tags=tag_list(tags))
            steps.append(f"found {groups[0]['GroupId']} ({name}) in {vpc_id}")
            return groups[0]
        steps.append(f"CreateSecurityGroup {name}: {answer['GroupId']}")
        return {"GroupId": answer["GroupId"], "IpPermissions": []}

    async def _sync_rules(self, ctx: OperationContext, group: dict[str, Any], wanted: tuple[Rule, ...],
                          steps: list[str]) -> None:
        missing, extra = rule_changes(group, wanted)
        for operation, rules, done in (("AuthorizeSecurityGroupIngress", missing, _ALREADY_THERE),
                                       ("RevokeSecurityGroupIngress", extra, _ALREADY_GONE)):
            if rules:
                await self._change_rules(ctx, operation, group["GroupId"], rules, done)
                steps.append(f"{operation} {group['GroupId']}: {len(rules)} rule(s)")

    async def _change_rules(self, ctx: OperationContext, operation: str, group_id: str, rules: list[Rule],
                            done: str) -> None:
        """Authorize or revoke rules; one already so (`done`: a repeated call whose first answer was lost,
        a rule changed by hand meanwhile) is success. EC2 refuses the whole batch then: one rule at a time."""
        try:
            await self.api.call(operation, ctx.uuid, GroupId=group_id, IpPermissions=[_ip_permission(r) for r in rules])
            return
        except ApiError as err:
            if err.code != done:
                raise
        for rule in rules:
            try:
                await self.api.call(operation, ctx.uuid, GroupId=group_id, IpPermissions=[_ip_permission(rule)])
            except ApiError as err:
                if err.code != done:
                    raise

    async def set_state(self, ctx: OperationContext, parts: Parts, state: str, steps: list[str]) -> None:
        if parts.vpc is not None and tags_of(parts.vpc).get(TAG_STATE) != state:
            await self.api.call("CreateTags", ctx.uuid, Resources=[parts.vpc["VpcId"]], Tags=tag_list({TAG_STATE: state}))
            steps.append(f"CreateTags {parts.vpc['VpcId']} {TAG_STATE}={state}")

    async def destroy(self, ctx: OperationContext) -> list[str]:
        """Delete the groups, subnets and VPCs tagged for the instance (missing is fine)."""
        steps: list[str] = []
        mine = [owned(ctx.uuid)]
        for operation, key, id_key, delete in (
                ("DescribeSecurityGroups", "SecurityGroups", "GroupId", "DeleteSecurityGroup"),
                ("DescribeSubnets", "Subnets", "SubnetId", "DeleteSubnet"),
                ("DescribeVpcs", "Vpcs", "VpcId", "DeleteVpc")):
            for item in await self.api.describe(operation, key, ctx.uuid, Filters=mine):
                try:
                    await self.api.call(delete, ctx.uuid, **{id_key: item[id_key]})
                except ApiError as err:
                    if err.code in _MISSING:
                        continue
                    if err.code == "DependencyViolation":
                        raise Ec2Retryable(f"ec2: {item[id_key]} is still in use (servers in the network?): {err}",
                                           err.code, after=5.0) from None
                    raise
                steps.append(f"{delete} {item[id_key]}")
        return steps or ["no network: nothing to delete"]
