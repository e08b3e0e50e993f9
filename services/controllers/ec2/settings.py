"""What the ec2 controller reads: its own settings (command-line options,
see `__main__`) and a cluster's parameters (the architecture, element and
cluster Configuration maps merged, values as strings: YAML lists arrive
comma-joined, maps as JSON). Pure: no I/O.

| key | kind | default | meaning |
|---|---|---|---|
| `kind` | both | (required) | `network` (a VPC, a subnet and a security group) or `server` (an EC2 instance) |
| `tags` | both | none | more tags for what the instance makes, a map |
| `adopt` | both | none | what `orch solution adopt` may take over: `{tag: {KEY: VALUE, ...}}`, `{name: NAME}` (the Name tag) and/or `{filters: [{Name: ..., Values: [...]}]}` (DescribeInstances / DescribeVpcs filters) |
| `cidr` | network | `10.0.0.0/16` | the VPC's address block |
| `subnet_cidr` | network | the first /24 of `cidr` | the subnet's address block |
| `ingress` | network | none | rules of the security group: `PROTOCOL:PORT[-PORT]:CIDR` items (`tcp:22:10.0.0.0/8`) |
| `image_id` | server | (required) | the AMI |
| `instance_type` | server | `t3.micro` | the instance type; a change is applied by configure (stopped) or reconfigure (stop, change, and end running); an adopted instance keeps its own unless this is given |
| `network` | server | the one context provider that is an ec2 network | the relationship whose endpoint names the subnet and group |
| `subnet_id`, `security_group_ids` | server | from `network` | instead of a network in the model |
| `key_name` | server | none | an EC2 key pair |
| `first_boot` | server | `0` | seconds a new instance runs after launch (its first boot: user data, cloud-init) before create stops it |
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from orchestration_sdk import Permanent

Kind = Literal["network", "server"]
DEFAULT_TYPE = "t3.micro"

# Tags that make a resource ours: a restarted controller finds it by them instead of making it twice.
TAG_DOMAIN, TAG_SOLUTION, TAG_ELEMENT, TAG_INSTANCE = "orch:domain", "orch:solution", "orch:element", "orch:instance"
TAG_STATE = "orch:state"  # a network's lifecycle state (it has no running or stopped of its own)
TAG_ADOPTED = "orch:adopted"  # taken over by `orch solution adopt`, not launched by us
_CREDENTIAL_KEYS = {"aws_access_key_id", "aws_secret_access_key", "aws_session_token", "access_key", "secret_key",
                    "credentials", "password"}
_TAG_KEY = re.compile(r"^[^\s].{0,127}$")
_RULE = re.compile(r"^(tcp|udp|icmp|-1|all):(\d{1,5})(?:-(\d{1,5}))?:(.+)$")


@dataclass(frozen=True)
class ClientSettings:
    """The controller's own settings: where EC2 is, whose credentials, how many calls at once, how long each."""

    region: str = "us-east-1"
    endpoint_url: str = ""
    credentials_file: str = ""
    profile: str = ""
    concurrency: int = 8
    connect_timeout: float = 5.0
    call_timeout: float = 20.0
    max_attempts: int = 3
    poll_max: float = 5.0


@dataclass(frozen=True)
class Selector:
    """What an instance may adopt: resources whose tags, Name or filters match."""

    tags: Mapping[str, str] = field(default_factory=dict)
    filters: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def __bool__(self) -> bool:
        return bool(self.tags or self.filters)

    def ec2_filters(self) -> list[dict[str, Any]]:
        """The selector as EC2 Describe* filters."""
        found: list[dict[str, Any]] = [{"Name": f"tag:{k}", "Values": [v]} for k, v in self.tags.items()]
        found += [{"Name": name, "Values": list(values)} for name, values in self.filters]
        return found

    def describe(self) -> str:
        parts = [f"{k}={v}" for k, v in self.tags.items()] + [f"{n} in {','.join(v)}" for n, v in self.filters]
        return ", ".join(parts)


@dataclass(frozen=True)
class Rule:
    """One ingress rule of a network's security group."""

    protocol: str
    from_port: int
    to_port: int
    cidr: str


@dataclass(frozen=True)
class NetworkSpec:
    cidr: str = "10.0.0.0/16"
    subnet_cidr: str = "10.0.0.0/24"
    ingress: tuple[Rule, ...] = ()
    tags: Mapping[str, str] = field(default_factory=dict)
    adopt: Selector = Selector()


@dataclass(frozen=True)
class ServerSpec:
    image_id: str
    instance_type: str = ""  # "" launches DEFAULT_TYPE and leaves an adopted instance's type alone
    network: str = ""
    subnet_id: str = ""
    security_group_ids: tuple[str, ...] = ()
    key_name: str = ""
    first_boot: float = 0.0
    tags: Mapping[str, str] = field(default_factory=dict)
    adopt: Selector = Selector()


def kind_of(parameters: Mapping[str, str]) -> Kind:
    """The kind of component a cluster's parameters describe (and credentials refused: never in the model,
    at the top level or as a key inside a value that is a map or list, like `tags`)."""
    secret = sorted(set(_credential_keys(parameters)))
    if secret:
        raise Permanent(f"ec2: {', '.join(secret)} in the model: AWS credentials are never part of a model; give them "
                        "to the controller (its environment, or --credentials-file) and remove them from the Configuration")
    kind = parameters.get("kind", "").strip().lower()
    if kind == "network":
        return "network"
    if kind == "server":
        return "server"
    shown = f"kind={kind!r}" if kind else "no 'kind'"
    raise Permanent(f"ec2: {shown} in the Configuration: say kind: network (a VPC, subnet and security group) "
                    "or kind: server (an EC2 instance)")


def network_spec(parameters: Mapping[str, str]) -> NetworkSpec:
    cidr = _network(parameters, "cidr", "10.0.0.0/16")
    default_subnet = next(cidr.subnets(new_prefix=24)) if cidr.prefixlen <= 24 else cidr
    subnet = _network(parameters, "subnet_cidr", str(default_subnet))
    if not subnet.subnet_of(cidr):  # type: ignore[arg-type]
        raise Permanent(f"ec2: subnet_cidr {subnet} is not inside cidr {cidr}")
    return NetworkSpec(str(cidr), str(subnet), _rules(_list(parameters, "ingress")), _tags(parameters),
                       _selector(parameters))


def server_spec(parameters: Mapping[str, str]) -> ServerSpec:
    image = parameters.get("image_id", "").strip()
    if not re.fullmatch(r"ami-[0-9a-zA-Z]{1,32}", image):
        shown = f"image_id={image!r} is not an AMI id (ami-...)" if image else "image_id is required (an AMI id, ami-...)"
        raise Permanent(f"ec2: {shown}, in the server's Configuration")
    instance_type = parameters.get("instance_type", "").strip()
    if instance_type and not re.fullmatch(r"[a-z0-9-]+\.[a-z0-9-]+", instance_type):
        raise Permanent(f"ec2: instance_type={instance_type!r} is not an instance type (like t3.micro)")
    groups = tuple(g.strip() for g in _list(parameters, "security_group_ids") if g.strip())
    return ServerSpec(
        image_id=image, instance_type=instance_type, network=parameters.get("network", "").strip(),
        subnet_id=parameters.get("subnet_id", "").strip(), security_group_ids=groups,
        key_name=parameters.get("key_name", "").strip(), first_boot=_seconds(parameters, "first_boot"),
        tags=_tags(parameters), adopt=_selector(parameters),
    )


def _credential_keys(value: Any, path: str = "") -> list[str]:
    """The keys, anywhere in the parameters (values that are JSON maps or lists included), that name a credential."""
    found: list[str] = []
    if isinstance(value, Mapping):
        for key, inner in value.items():
            where = f"{path}.{key}" if path else str(key)
            if str(key).strip().lower() in _CREDENTIAL_KEYS:
                found.append(where)
            found += _credential_keys(inner, where)
    elif isinstance(value, list):
        for inner in value:
            found += _credential_keys(inner, path)
    elif isinstance(value, str) and path and value.strip()[:1] in ("{", "["):
        try:
            found += _credential_keys(json.loads(value), path)
        except ValueError:
            pass
    return found


def name_tag(solution: str, element: str, uuid: str) -> str:
    """The Name tag of what an instance makes (the console shows it)."""
    return f"{solution}-{element}-{uuid[:8]}"


def owned(uuid: str) -> dict[str, Any]:
    """The Describe* filter of what an engine instance owns: its orch:instance tag."""
    return {"Name": f"tag:{TAG_INSTANCE}", "Values": [uuid]}


def owner_tags(domain: str, solution: str, element: str, uuid: str) -> dict[str, str]:
    """The tags every resource of an instance carries."""
    return {TAG_DOMAIN: domain, TAG_SOLUTION: solution, TAG_ELEMENT: element, TAG_INSTANCE: uuid}


def _network(parameters: Mapping[str, str], key: str, default: str) -> ipaddress.IPv4Network:
    raw = parameters.get(key, "").strip() or default
    try:
        return ipaddress.IPv4Network(raw, strict=True)
    except ValueError as err:
        raise Permanent(f"ec2: {key}={raw!r} is not an IPv4 address block (like 10.0.0.0/16)") from err


def _list(parameters: Mapping[str, str], key: str) -> list[str]:
    raw = parameters.get(key, "").strip()
    if not raw:
        return []
    if raw.startswith("["):
        try:
            value = json.loads(raw)
        except ValueError as err:
            raise Permanent(f"ec2: {key} is not a JSON list") from err
        if not isinstance(value, list):
            raise Permanent(f"ec2: {key} must be a list")
        return [str(v) for v in value]
    return raw.split(",")  # a YAML list arrives comma-joined


def _map(parameters: Mapping[str, str], key: str) -> dict[str, Any]:
    raw = parameters.get(key, "").strip()
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except ValueError as err:
        raise Permanent(f"ec2: {key} must be a map (YAML) or a JSON object") from err
    if not isinstance(value, dict):
        raise Permanent(f"ec2: {key} must be a map, not {type(value).__name__}")
    return value


def _tags(parameters: Mapping[str, str]) -> dict[str, str]:
    tags = {str(k): "" if v is None else str(v) for k, v in _map(parameters, "tags").items()}
    for key in tags:
        if key.startswith(("orch:", "aws:")) or not _TAG_KEY.match(key):
            raise Permanent(f"ec2: tag {key!r} in tags is not allowed (orch: and aws: are reserved; at most 128 characters)")
    return tags


def _selector(parameters: Mapping[str, str]) -> Selector:
    raw = _map(parameters, "adopt")
    unknown = set(raw) - {"tag", "tags", "name", "filters"}
    if unknown:
        raise Permanent(f"ec2: adopt has unknown keys {sorted(unknown)}: use tag, name or filters")
    tags = raw.get("tag") or raw.get("tags") or {}
    if not isinstance(tags, dict):
        raise Permanent("ec2: adopt.tag must be a map of tag key to value")
    selected = {str(k): str(v) for k, v in tags.items()}
    if raw.get("name"):
        selected["Name"] = str(raw["name"])
    filters = []
    for item in raw.get("filters") or []:
        if not isinstance(item, dict) or not isinstance(item.get("Name"), str) or not isinstance(item.get("Values"), list):
            raise Permanent("ec2: each of adopt.filters must be {Name: FILTER, Values: [...]}, as EC2's Describe* filters")
        filters.append((item["Name"], tuple(str(v) for v in item["Values"])))
    return Selector(selected, tuple(filters))


def _rules(items: list[str]) -> tuple[Rule, ...]:
    """The rules, each once (EC2 refuses a rule twice: InvalidPermission.Duplicate), blocks normalised as EC2 keeps them."""
    rules: list[Rule] = []
    for item in items:
        match = _RULE.match(str(item).strip())
        if not match:
            raise Permanent(f"ec2: ingress rule {item!r} must be PROTOCOL:PORT[-PORT]:CIDR, like tcp:22:10.0.0.0/8")
        protocol, first, last, cidr = match.groups()
        try:
            cidr = str(ipaddress.IPv4Network(cidr.strip(), strict=False))
        except ValueError as err:
            raise Permanent(f"ec2: ingress rule {item!r}: {cidr!r} is not an address block") from err
        low, high = int(first), int(last or first)
        if high > 65535 or low > high:
            raise Permanent(f"ec2: ingress rule {item!r}: ports must be 0-65535, low to high")
        # Protocol -1 is every protocol and port: EC2 keeps no ports for it.
        rule = Rule("-1", 0, 0, cidr) if protocol in ("-1", "all") else Rule(protocol, low, high, cidr)
        if rule not in rules:
            rules.append(rule)
    return tuple(rules)


def _seconds(parameters: Mapping[str, str], key: str) -> float:
    raw = parameters.get(key, "").strip()
    if not raw:
        return 0.0
    try:
        value = float(raw)
    except ValueError as err:
        raise Permanent(f"ec2: {key}={raw!r} is not a number of seconds") from err
    if not 0 <= value <= 3600:
        raise Permanent(f"ec2: {key}={raw!r} must be 0 to 3600 seconds")
    return value
