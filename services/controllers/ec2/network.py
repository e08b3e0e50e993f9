"""Networks: an engine instance is a VPC with one subnet and one security
group, each tagged for the instance (created tagged, in the same call). A
network has no running or stopped of its own: its lifecycle state is the
VPC's orch:state tag (start sets active, stop inactive), and a network with
a part missing is inactive (start makes the part again). Its endpoint
`aws://VPC/SUBNET/GROUP` tells a server that depends on it where to go."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from controllers.ec2.api import ApiError, Ec2Api, Ec2Retryable, tag_list, tags_of
from controllers.ec2.settings import TAG_ADOPTED, TAG_INSTANCE, TAG_STATE, NetworkSpec, Rule, Selector, owner_tags
from orchestration_sdk import InstanceRef, InstanceState, OperationContext

_MISSING = {"InvalidVpcID.NotFound", "InvalidSubnetID.NotFound", "InvalidGroup.NotFound", "InvalidGroupId.Malformed"}


@dataclass(frozen=True)
class Parts:
    """What of a network exists (each part its Describe* item, or None)."""

    vpc: dict[str, Any] | None
    subnet: dict[str, Any] | None
    group: dict[str, Any] | None

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


def _owned(uuid: str) -> dict[str, Any]:
    return {"Name": f"tag:{TAG_INSTANCE}", "Values": [uuid]}


def _ip_permission(rule: Rule) -> dict[str, Any]:
    permission: dict[str, Any] = {"IpProtocol": rule.protocol, "IpRanges": [{"CidrIp": rule.cidr}]}
    if rule.protocol != "-1":
        permission.update(FromPort=rule.from_port, ToPort=rule.to_port)
    return permission


def rules_of(group: dict[str, Any]) -> set[Rule]:
    found = set()
    for permission in group.get("IpPermissions") or []:
        protocol = str(permission["IpProtocol"])
        ports = (0, 0) if protocol == "-1" else (int(permission.get("FromPort", 0) or 0), int(permission.get("ToPort", 0) or 0))
        for ip_range in permission.get("IpRanges") or []:
            found.add(Rule(protocol, *ports, str(ip_range["CidrIp"])))
    return found


class Networks:
    """The network operations, on one Ec2Api."""

    def __init__(self, api: Ec2Api) -> None:
        self.api = api
        self._claims = asyncio.Lock()

    async def parts(self, uuid: str) -> Parts:
        vpcs = await self.api.describe("DescribeVpcs", "Vpcs", uuid, Filters=[_owned(uuid)])
        if not vpcs:
            return Parts(None, None, None)
        vpc = vpcs[0]
        inside = {"Name": "vpc-id", "Values": [vpc["VpcId"]]}
        subnets = await self.api.describe("DescribeSubnets", "Subnets", uuid, Filters=[inside, _owned(uuid)])
        groups = await self.api.describe("DescribeSecurityGroups", "SecurityGroups", uuid, Filters=[inside, _owned(uuid)])
        return Parts(vpc, subnets[0] if subnets else None, groups[0] if groups else None)

    async def status(self, ref: InstanceRef) -> InstanceState | None:
        """The network's state, or None when no VPC is tagged for the instance."""
        parts = await self.parts(ref.uuid)
        if parts.vpc is None:
            return None
        return InstanceState("active" if parts.state == "active" else "inactive", parts.endpoint)

    async def ensure(self, ctx: OperationContext, spec: NetworkSpec, steps: list[str]) -> Parts:
        """Find, adopt or make each part; brings the group's rules to the configuration's."""
        parts = await self.parts(ctx.uuid)
        tags = {"Name": f"{ctx.solution}-{ctx.element}-{ctx.uuid[:8]}", **spec.tags,
                **owner_tags(ctx.domain, ctx.solution, ctx.element, ctx.uuid)}
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
            subnet = (await self.api.call("CreateSubnet", ctx.uuid, VpcId=vpc_id, CidrBlock=spec.subnet_cidr,
                                          TagSpecifications=[{"ResourceType": "subnet", "Tags": tag_list(tags)}]))["Subnet"]
            steps.append(f"CreateSubnet {spec.subnet_cidr}: {subnet['SubnetId']}")
        group = parts.group or await self._make_group(ctx, vpc_id, tags, steps)
        await self._sync_rules(ctx, group, spec.ingress, steps)
        return Parts(vpc, subnet, group)

    async def _adopt(self, ctx: OperationContext, selector: Selector, steps: list[str]) -> dict[str, Any] | None:
        async with self._claims:
            found = await self.api.describe("DescribeVpcs", "Vpcs", ctx.uuid, Filters=selector.ec2_filters())
            free = [v for v in found if TAG_INSTANCE not in tags_of(v)]
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
            # Made by an attempt that did not get to tag it: take it now.
            groups = await self.api.describe("DescribeSecurityGroups", "SecurityGroups", ctx.uuid, Filters=[
                {"Name": "vpc-id", "Values": [vpc_id]}, {"Name": "group-name", "Values": [name]}])
            await self.api.call("CreateTags", ctx.uuid, Resources=[groups[0]["GroupId"]], Tags=tag_list(tags))
            return groups[0]
        steps.append(f"CreateSecurityGroup {name}: {answer['GroupId']}")
        return {"GroupId": answer["GroupId"], "IpPermissions": []}

    async def _sync_rules(self, ctx: OperationContext, group: dict[str, Any], wanted: tuple[Rule, ...],
                          steps: list[str]) -> None:
        have = rules_of(group)
        missing = [r for r in wanted if r not in have]
        extra = [r for r in have if r not in set(wanted)]
        if missing:
            await self.api.call("AuthorizeSecurityGroupIngress", ctx.uuid, GroupId=group["GroupId"],
                                IpPermissions=[_ip_permission(r) for r in missing])
            steps.append(f"AuthorizeSecurityGroupIngress {group['GroupId']}: {len(missing)} rule(s)")
        if extra:
            await self.api.call("RevokeSecurityGroupIngress", ctx.uuid, GroupId=group["GroupId"],
                                IpPermissions=[_ip_permission(r) for r in extra])
            steps.append(f"RevokeSecurityGroupIngress {group['GroupId']}: {len(extra)} rule(s)")

    async def set_state(self, ctx: OperationContext, parts: Parts, state: str, steps: list[str]) -> None:
        if parts.vpc is not None and tags_of(parts.vpc).get(TAG_STATE) != state:
            await self.api.call("CreateTags", ctx.uuid, Resources=[parts.vpc["VpcId"]], Tags=tag_list({TAG_STATE: state}))
            steps.append(f"CreateTags {parts.vpc['VpcId']} {TAG_STATE}={state}")

    async def destroy(self, ctx: OperationContext) -> list[str]:
        """Delete the groups, subnets and VPCs tagged for the instance (missing is fine)."""
        steps: list[str] = []
        owned = [_owned(ctx.uuid)]
        for operation, key, id_key, delete in (
                ("DescribeSecurityGroups", "SecurityGroups", "GroupId", "DeleteSecurityGroup"),
                ("DescribeSubnets", "Subnets", "SubnetId", "DeleteSubnet"),
                ("DescribeVpcs", "Vpcs", "VpcId", "DeleteVpc")):
            for item in await self.api.describe(operation, key, ctx.uuid, Filters=owned):
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
