"""The hand-written part of the hostile-input corpus (issue 6, item 3).

Every case is a request that must be refused: the expected status (gRPC code
or bus error code) and substrings the message must contain. The state the
cases run against is demo2.yaml plus the deployed solution of demo3.yaml in
domain ``demo``; nothing in this file may ever be stored.

Names: the name matrix puts every hostile name (``HOSTILE_NAMES``) into every
name position of a small, otherwise valid domain document (``name_document``)
and into the name fields of the gateway's requests.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import yaml

from orchestration.model import codec
from orchestration.v1 import gateway_pb2 as gw
from orchestration.v1 import model_pb2 as pb

DATA = Path(__file__).parent / "data"
INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND
EXISTS = grpc.StatusCode.ALREADY_EXISTS
TOO_LARGE = grpc.StatusCode.RESOURCE_EXHAUSTED  # gRPC's own message limit (8 MiB), before any handler runs

MiB = 1024 * 1024

# Things that exist in the base state (demo2 + demo3's solution).
DOMAIN = "demo"
SOLUTION = "app"
ELEMENT = "app"
CLUSTER = "V1.0.0"
INSTANCE = "20957de0-194e-4f25-ba32-142e9e050280"
ROOT_TASK = "ffab9264-8f18-4649-ac2d-3f5f8d17c726"


@dataclass(frozen=True)
class Case:
    """One gRPC request that must fail with `code` and a message containing every needle."""

    id: str
    method: str  # "<Service>/<Method>" under orchestration.v1
    request: Any  # a request message, or bytes sent as they are (raw wire format)
    code: grpc.StatusCode
    needles: tuple[str, ...]
    group: str = ""  # cases of one group run in one test
    streaming: bool = False  # a server-streaming call (the error comes with the first read)


@dataclass(frozen=True)
class BusCase:
    """One bus request on <prefix>.requests.<operation> that must get {"error": {"code": code}}."""

    id: str
    operation: str
    payload: bytes
    code: str
    needles: tuple[str, ...]
    # The Authorization header to send instead of the valid one ("": none).
    authorization: str | None = None


@dataclass(frozen=True)
class CliCase:
    """One file for `orch apply -f` that must give a one-line error and exit code 1."""

    id: str
    content: bytes
    needles: tuple[str, ...]


# ---- hostile names ----------------------------------------------------------

# Each breaks the name rule; together they cover what would break a NATS
# subject or KV key (. * > space / ..), control characters, look-alikes and length.
HOSTILE_NAMES: dict[str, str] = {
    "empty": "",
    "leading-dot": ".a",
    "dotdot": "a..b",
    "only-dotdot": "..",
    "star": "a*",
    "gt": "a>",
    "only-gt": ">",
    "wildcards": "a.*.>",
    "space": "a b",
    "slash": "a/b",
    "backslash": "a\\b",
    "tab": "a\tb",
    "newline": "a\nb",
    "trailing-newline": "ab\n",
    "nul": "a\x00b",
    "escape": "a\x1b[31mb",
    "del": "a\x7fb",
    "line-separator": "a\u2028b",
    "cyrillic-e": "d\u0435mo",
    "fullwidth": "\uff44emo",
    "zero-width": "de\u200bmo",
    "rtl-override": "de\u202emo",
    "long-129": "a" * 129,
    "leading-dash": "-a",
    "token-escape": "a=2Eb",
    "dollar": "$KV",
}

# Position -> the word its error message must name.
NAME_POSITIONS: dict[str, str] = {
    "domain": "omain",  # "Domains: domain name" or "Name: ..." (the document's own key)
    "component": "Component",
    "version": "Version",
    "element": "Element",
    "cluster": "Version",  # a cluster is keyed by its component version
    "relationship": "Relationship",
    "dependency": "Dependency",
    "architecture": "Architecture",
    "solution": "Solution",
    "uuid": "UUID",
}

VALID_NAMES = {
    "domain": "hostile-ok",
    "component": "widget",
    "version": "V1",
    "element": "web",
    "cluster": "V2",
    "relationship": "db",
    "dependency": "store",
    "architecture": "shop",
    "solution": "shop",
    "uuid": "0b7c1e4e-5a7e-4d1c-9d3e-7f00c0ffee00",
}


def name_document(**hostile: str) -> dict[str, Any]:
    """A valid domain document (catalog, architecture, solution with one
    instance) with some names replaced; every place a name appears uses it."""
    n = {**VALID_NAMES, **hostile}
    component, version, base_version = n["component"], n["version"], n["cluster"]
    return {
        "Name": n["domain"],
        "Components": {
            f"base - {base_version}": {
                "Component": "base", "Version": base_version, "Controller": "sim", "Configuration": "",
                "Dependencies": {},
            },
            f"{component} - {version}": {
                "Component": component, "Version": version, "Controller": "sim", "Configuration": "",
                "Dependencies": {
                    n["dependency"]: {
                        "Dependency": n["dependency"], "Type": "service", "Component": "base",
                        "Version": base_version, "Configuration": "",
                    },
                },
            },
        },
        "Architectures": {
            f"{n['architecture']} - V1": {
                "Architecture": n["architecture"], "Version": "V1", "Configuration": "",
                "Elements": {
                    n["element"]: {
                        "Element": n["element"], "Component": component, "Configuration": "",
                        "Clusters": {
                            version: {
                                "Version": version, "State": "active", "Min": 1, "Max": 1, "Size": 1,
                                "Configuration": "",
                                "Relationships": {
                                    n["relationship"]: {
                                        "Relationship": n["relationship"], "Dependency": n["dependency"],
                                        "Type": "service", "Element": "store", "Version": base_version,
                                        "Configuration": "",
                                    },
                                },
                            },
                        },
                    },
                    "store": {
                        "Element": "store", "Component": "base", "Configuration": "",
                        "Clusters": {
                            base_version: {
                                "Version": base_version, "State": "active", "Min": 1, "Max": 1, "Size": 1,
                                "Configuration": "", "Relationships": {},
                            },
                        },
                    },
                },
            },
        },
        "Solutions": {
            n["solution"]: {
                "Solution": n["solution"], "Version": "V1", "Target": "active", "State": "", "Configuration": "",
                "Elements": {
                    n["element"]: {
                        "Element": n["element"], "Component": component, "Target": "active", "State": "",
                        "Configuration": "", "Endpoint": "",
                        "Clusters": {
                            version: {
                                "Version": version, "Target": "active", "State": "", "Min": 1, "Max": 1, "Size": 1,
                                "Configuration": "", "Endpoint": "", "Relationships": {},
                                "Instances": {
                                    n["uuid"]: {
                                        "UUID": n["uuid"], "Target": "active", "State": "", "Configuration": "",
                                        "Endpoint": "",
                                    },
                                },
                            },
                        },
                    },
                },
            },
        },
    }


def to_yaml(data: Any) -> str:
    """YAML text of plain data; every unusual character escaped, so it reads back exactly."""
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    return yaml.dump(data, Dumper=dumper, allow_unicode=False, sort_keys=False, width=1 << 20)


def name_cases() -> list[Case]:
    """Every hostile name in every name position: as YAML through Apply, and as
    a protobuf model through StoreModel."""
    cases = []
    for position, word in NAME_POSITIONS.items():
        template = codec.parse_document(to_yaml(name_document(**{position: "x"}))).model
        for label, name in HOSTILE_NAMES.items():
            text = to_yaml(name_document(**{position: name}))
            cases.append(Case(f"apply-{position}-{label}", "AdministrationService/Apply",
                              gw.ApplyRequest(document=text), INVALID, (word,), f"apply-{position}"))
            # The same content as a message: the codec does not check names, validation must.
            model = pb.Model()
            model.CopyFrom(template)
            _rename(model.domains[0], position, name)
            cases.append(Case(f"store-{position}-{label}", "AdministrationService/StoreModel",
                              gw.StoreModelRequest(model=model), INVALID, (word,), f"store-{position}"))
    return cases


def _rename(domain: pb.Domain, position: str, name: str) -> None:
    """Put name into one position of a parsed name_document (protobuf form), everywhere it occurs."""
    if position == "domain":
        domain.name = name
        return
    renamed = 0
    for message, field in _name_fields(domain, position):
        if getattr(message, field) == "x":
            setattr(message, field, name)
            renamed += 1
    assert renamed, position


def _name_fields(domain: pb.Domain, position: str) -> list[tuple[Any, str]]:
    arch = domain.architectures[0]
    comps = list(domain.components)
    found: list[tuple[Any, str]] = []
    if position == "component":
        found += [(c, "name") for c in comps] + [(e, "component") for e in arch.elements]
        found += [(e, "component") for s in domain.solutions for e in s.elements]
    elif position in ("version", "cluster"):
        found += [(c, "version") for c in comps]
        found += [(d, "version") for c in comps for d in c.dependencies]
        found += [(cl, "version") for e in arch.elements for cl in e.clusters]
        found += [(r, "version") for e in arch.elements for cl in e.clusters for r in cl.relationships]
        found += [(cl, "version") for s in domain.solutions for e in s.elements for cl in e.clusters]
    elif position == "element":
        found += [(e, "name") for e in arch.elements] + [(e, "name") for s in domain.solutions for e in s.elements]
    elif position == "relationship":
        found += [(r, "name") for e in arch.elements for cl in e.clusters for r in cl.relationships]
    elif position == "dependency":
        found += [(d, "name") for c in comps for d in c.dependencies]
        found += [(r, "dependency") for e in arch.elements for cl in e.clusters for r in cl.relationships]
    elif position == "architecture":
        found += [(arch, "name")]
    elif position == "solution":
        found += [(s, "name") for s in domain.solutions] + [(s, "architecture") for s in domain.solutions]
    elif position == "uuid":
        found += [(i, "uuid") for s in domain.solutions for e in s.elements for cl in e.clusters for i in cl.instances]
    return found


# Requests with name fields, and valid values for all of them: (method, request type, values).
REQUEST_FIELDS: list[tuple[str, type, dict[str, str]]] = [
    ("CatalogService/RetrieveComponent", gw.RetrieveComponentRequest,
     {"domain": DOMAIN, "component": "server", "version": "V1.0.0"}),
    ("ArchitectureService/RetrieveArchitecture", gw.RetrieveArchitectureRequest,
     {"domain": DOMAIN, "architecture": "app", "version": "V0.0.0"}),
    ("SolutionService/PlanSolution", gw.PlanSolutionRequest,
     {"domain": DOMAIN, "architecture": "app", "version": "V0.0.0", "solution": "app"}),
    ("SolutionService/DeploySolution", gw.DeploySolutionRequest,
     {"domain": DOMAIN, "architecture": "app", "version": "V0.0.0", "solution": "app2"}),
    ("SolutionService/UpdateInstance", gw.UpdateInstanceRequest,
     {"domain": DOMAIN, "solution": SOLUTION, "element": ELEMENT, "cluster": CLUSTER, "instance": INSTANCE}),
    ("SolutionService/UpdateCluster", gw.UpdateClusterRequest,
     {"domain": DOMAIN, "solution": SOLUTION, "element": ELEMENT, "cluster": CLUSTER}),
    ("AutomationService/RetrieveTask", gw.RetrieveTaskRequest, {"domain": DOMAIN, "task": ROOT_TASK}),
]


def request_with(request_type: type, values: dict[str, Any]) -> Any:
    """The request, with what it needs besides names to get past the name checks."""
    if request_type is gw.UpdateInstanceRequest:
        values = {**values, "state": pb.STATE_INACTIVE}
    if request_type is gw.UpdateClusterRequest:
        values = {**values, "size": 3}
    return request_type(**values)


# Request fields go through one check each: a representative dozen of the names
# (every one of them reaches every model position above, and generated ones follow).
REQUEST_NAMES = ("empty", "dotdot", "wildcards", "only-gt", "space", "slash", "newline", "trailing-newline", "nul",
                 "escape", "cyrillic-e", "long-129")


def request_name_cases() -> list[Case]:
    """Hostile names in every name field of the requests above (the others valid)."""
    cases = []
    for method, request_type, valid in REQUEST_FIELDS:
        for field in valid:
            for label in REQUEST_NAMES:
                name = HOSTILE_NAMES[label]
                if name == "" and (request_type, field) in ((gw.DeploySolutionRequest, "solution"),
                                                          (gw.PlanSolutionRequest, "solution"),
                                                          (gw.RetrieveTaskRequest, "domain")):
                    continue  # empty means "the default" here, not a bad name
                short = method.split("/")[1]
                request = request_with(request_type, {**valid, field: name})
                cases.append(Case(f"{short}-{field}-{label}", method, request, INVALID, (field,), short))
    return cases


# ---- YAML documents ---------------------------------------------------------

DEMO2 = (DATA / "demo2.yaml").read_text()


def billion_laughs(levels: int = 9) -> str:
    lines = ['lol0: &lol0 "lol"']
    for level in range(1, levels + 1):
        refs = ", ".join([f"*lol{level - 1}"] * 10)
        lines.append(f"lol{level}: &lol{level} [{refs}]")
    return "\n".join(lines) + "\n"


def component(**changes: Any) -> dict[str, Any]:
    """A valid component document for domain demo (a new one: widget V1.0.0)."""
    doc = {"Component": "widget", "Version": "V1.0.0", "Controller": "sim", "Configuration": "size: {{size}}",
           "Dependencies": {"tenant": {"Dependency": "tenant", "Type": "context", "Component": "tenant",
                                       "Version": "V1.0.0", "Configuration": ""}}}
    doc.update(changes)
    return doc


def cluster(**changes: Any) -> dict[str, Any]:
    doc = {"Version": "V1.0.0", "State": "active", "Min": 1, "Max": 2, "Size": 1, "Configuration": "",
           "Relationships": {}}
    doc.update(changes)
    return doc


def architecture(elements: dict[str, Any] | None = None, version: str = "V9", **cluster_changes: Any) -> dict[str, Any]:
    """A valid architecture document for domain demo (tenant elements), one cluster changed."""
    if elements is None:
        elements = {"t": {"Element": "t", "Component": "tenant", "Configuration": "",
                          "Clusters": {"V1.0.0": cluster(**cluster_changes)}}}
    return {"Architecture": "hostile", "Version": version, "Configuration": "", "Elements": elements}


def chain(names: list[str], closed: bool) -> dict[str, Any]:
    """Application elements, each with a service relationship on the next one; the last
    on the first when closed (a cycle of len(names))."""
    elements = {}
    for index, name in enumerate(names):
        following = names[(index + 1) % len(names)]
        relationships = {}
        if closed or index + 1 < len(names):
            relationships["service"] = {"Relationship": "service", "Dependency": "service", "Type": "service",
                                        "Element": following, "Version": "V1.0.0", "Configuration": ""}
        relationships["server"] = {"Relationship": "server", "Dependency": "server", "Type": "context",
                                   "Element": "srv", "Version": "V1.0.0", "Configuration": ""}
        elements[name] = {"Element": name, "Component": "application", "Configuration": "",
                          "Clusters": {"V1.0.0": cluster(Relationships=relationships)}}
    # The server needs a network and a tenant: give it both, without cycles.
    elements["srv"] = {"Element": "srv", "Component": "server", "Configuration": "", "Clusters": {"V1.0.0": cluster(
        Relationships={
            "network": {"Relationship": "network", "Dependency": "network", "Type": "context", "Element": "net",
                        "Version": "V1.0.0", "Configuration": ""},
            "tenant": {"Relationship": "tenant", "Dependency": "tenant", "Type": "context", "Element": "ten",
                       "Version": "V1.0.0", "Configuration": ""}})}}
    elements["net"] = {"Element": "net", "Component": "network", "Configuration": "", "Clusters": {"V1.0.0": cluster(
        Relationships={"tenant": {"Relationship": "tenant", "Dependency": "tenant", "Type": "context",
                                  "Element": "ten", "Version": "V1.0.0", "Configuration": ""}})}}
    elements["ten"] = {"Element": "ten", "Component": "tenant", "Configuration": "", "Clusters": {"V1.0.0": cluster()}}
    return architecture(elements)


def _doc(data: dict[str, Any], domain: str = DOMAIN) -> gw.ApplyRequest:
    return gw.ApplyRequest(document=to_yaml(data), domain=domain)


def _text(text: str, domain: str = "") -> gw.ApplyRequest:
    return gw.ApplyRequest(document=text, domain=domain)


def _raw_apply(document: bytes, domain: bytes = b"") -> bytes:
    """An ApplyRequest in wire format, whatever the bytes (protobuf strings must be UTF-8)."""
    out = b""
    for number, value in ((1, document), (2, domain)):
        if value:
            out += bytes([number << 3 | 2]) + _varint(len(value)) + value
    return out


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _nested_string(path: list[int], value: bytes) -> bytes:
    """Wire format of nested messages along field numbers `path`, the last one a string of raw bytes."""
    body = value
    for number in reversed(path):
        body = bytes([number << 3 | 2]) + _varint(len(body)) + body
    return body


def _with(text: str, old: str, new: str) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


def _deep(levels: int, open_: str, close: str, leaf: str = "x") -> str:
    return open_ * levels + leaf + close * levels


APP_CLUSTER = "                Size: 3\n"  # the first cluster's Size line in demo2


def _demo2_cluster(line: str) -> str:
    """demo2 with the first Size line replaced (domain demo exists: a valid change would be a redefinition)."""
    return _with(DEMO2, APP_CLUSTER, line)


def apply_cases() -> list[Case]:
    A = "AdministrationService/Apply"
    c: list[tuple[str, Any, grpc.StatusCode, tuple[str, ...]]] = [
        # Alias bombs, anchors, merge keys.
        ("billion-laughs", _text(billion_laughs()), INVALID, ("alias", "line")),
        ("billion-laughs-into-configuration", _text(billion_laughs() + _with(to_yaml(component(Configuration="CONF")), "CONF", "*lol9"),
                                                  DOMAIN), INVALID, ("alias", "line")),
        ("recursive-alias-in-demo2", _text(DEMO2 + "    Bomb: &b [*b]\n"), INVALID, ("alias", "line")),
        ("alias-configuration", _text(_with(to_yaml(component(Configuration="CONF")), "Configuration: CONF", "Configuration: &c x")
                                      + "Extra: *c\n", DOMAIN), INVALID, ("alias", "line")),
        # The same bomb inside a configuration string: parsed again as parameters, refused at apply, naming the field.
        ("alias-bomb-in-cluster-configuration", _doc(architecture(Configuration=billion_laughs())), INVALID,
         ("Elements/t/Clusters/V1.0.0/Configuration", "alias")),
        ("alias-bomb-in-element-configuration",
         _doc(architecture({"t": {"Element": "t", "Component": "tenant", "Configuration": "a: &x [1]\nb: *x\n",
                                  "Clusters": {"V1.0.0": cluster()}}})), INVALID, ("Elements/t/Configuration", "alias")),
        ("nested-configuration", _doc(architecture(Configuration="k: " + _deep(100, "[", "]"))), INVALID,
         ("Clusters/V1.0.0/Configuration", "nesting")),
        ("merge-key", _text("Name: demo\n<<: {Components: {}}\n"), INVALID, ("merge", "line")),
        # Nesting.
        ("deep-flow-lists-1000", _text(_deep(1000, "[", "]")), INVALID, ("nesting", "line")),
        ("deep-flow-maps-1000", _text(_deep(1000, "{a: ", "}")), INVALID, ("nesting", "line")),
        ("deep-block-maps-1000", _text("".join(" " * i + f"k{i}:\n" for i in range(1000)) + " " * 1000 + "v\n"),
         INVALID, ("nesting", "line")),
        ("deep-block-lists-1000", _text("".join("  " * i + "-\n" for i in range(1000)) + "  " * 1000 + "x\n"),
         INVALID, ("nesting", "line")),
        ("deep-configuration", _text(_with(to_yaml(component(Configuration="CONF")), "CONF", _deep(1000, "[", "]")), DOMAIN),
         INVALID, ("nesting", "line")),
        ("deep-in-demo2", _text(_demo2_cluster("                Size: " + _deep(1000, "[", "]", "3") + "\n")),
         INVALID, ("nesting", "line")),
        # Size.
        ("document-over-4MiB", _text("Name: demo\n# " + "x" * (4 * MiB) + "\n"), INVALID, ("document", "limit")),
        ("configuration-over-4MiB", _text(_with(to_yaml(component(Configuration="CONF")), "CONF", "x" * (4 * MiB + 1)), DOMAIN),
         INVALID, ("document", "limit")),
        ("multibyte-over-4MiB", _text("Name: demo\n# " + "\u00e9" * (2 * MiB + 1) + "\n"), INVALID, ("document", "limit")),
        ("message-over-8MiB", _text("Name: demo\n# " + "x" * (8 * MiB) + "\n"), TOO_LARGE, ("larger than max",)),
        ("long-plain-key", _text("Name: demo\n" + "k" * (64 * 1024) + ": 1\n"), INVALID, ("line",)),
        # Messages echo names: a huge one must not make the status itself too large to deliver.
        ("huge-unknown-key", _text("Name: demo\n? " + "k" * MiB + "\n: 1\n"), INVALID, ("unknown key", "left out")),
        ("huge-entry-key", _text("Name: demo\nComponents:\n  ? " + "c" * MiB + "\n  : {Component: x}\n"),
         INVALID, ("key must equal", "left out")),
        ("huge-escaped-key", _text('Name: demo\n? "' + "\\x1b" * (MiB // 8) + '"\n: 1\n'), INVALID, ("unknown key",)),
        # Encoding and characters.
        ("invalid-utf8", _raw_apply(b"Name: demo\nComponents: {}\n# \xff\xfe\n"), INVALID, ("UTF-8",)),
        ("invalid-utf8-overlong", _raw_apply(b"Name: \xc0\xae\xc0\xae\n"), INVALID, ("UTF-8",)),
        ("invalid-utf8-surrogate", _raw_apply(b"Name: \xed\xa0\x80\n"), INVALID, ("UTF-8",)),
        ("invalid-utf8-domain", _raw_apply(to_yaml(component()).encode(), b"de\xffmo"), INVALID, ("UTF-8",)),
        ("truncated-wire", _raw_apply(b"Name: demo")[:-3] + b"", INVALID, ("ApplyRequest",)),
        ("garbage-wire", b"\xff\xff\xff\xff\xff", INVALID, ("ApplyRequest",)),
        ("nul-in-text", _text("Name: de\x00mo\nComponents: {}\n"), INVALID, ("line",)),
        ("escape-in-text", _text("Name: demo\nComponents: {}\n# \x1b[2J\n"), INVALID, ("line",)),
        ("bom-inside", _text("Name: demo\nComponents: {}\n\ufeffArchitectures: {}\n"), INVALID, ("Architectures",)),
        # Not a model at all.
        ("empty", _text(""), INVALID, ("empty",)),
        ("whitespace", _text("  \n\t\n"), INVALID, ("empty",)),
        ("comment-only", _text("# nothing\n"), INVALID, ("empty",)),
        ("null-document", _text("~\n"), INVALID, ("empty",)),
        ("top-level-list", _text("- Name: demo\n"), INVALID, ("mapping", "list")),
        ("top-level-scalar", _text("hello\n"), INVALID, ("mapping",)),
        ("top-level-unknown-keys", _text("Foo: 1\nBar: 2\n"), INVALID, ("Foo", "cannot tell")),
        ("two-documents", _text("Name: demo\n---\nName: other\n"), INVALID, ("line",)),
        ("unclosed-bracket", _text("Name: demo\nComponents: [\n"), INVALID, ("line",)),
        ("bad-indentation", _text("Name: demo\n  Components: {}\n x: 1\n"), INVALID, ("line",)),
        ("tab-indentation", _text("Name: demo\n\tComponents: {}\n"), INVALID, ("line",)),
        ("python-tag", _text("Name: !!python/object/apply:os.system ['true']\n"), INVALID, ("line", "python")),
        ("bad-int-tag", _text("Name: demo\nComponents: {}\nX: !!int abc\n"), INVALID, ("line", "abc")),
        ("bad-float-tag", _text("Name: !!float abc\n"), INVALID, ("line", "abc")),
        ("bad-timestamp-tag", _text("Name: !!timestamp 2001-13-45\n"), INVALID, ("line",)),
        ("binary-name", _text("Name: !!binary ZGVtbw==\n"), INVALID, ("Name", "string")),
        ("set-name", _text("Name: !!set {a, b}\n"), INVALID, ("Name", "string")),
        ("5000-digit-size", _text(_demo2_cluster("                Size: " + "9" * 5000 + "\n")), INVALID, ("line",)),
        ("sexagesimal-bomb", _text(_demo2_cluster("                Size: 1" + ":1" * 300_000 + "\n")),
         INVALID, ("line",)),
        ("sexagesimal-bomb-tagged", _text("Name: demo\nX: !!int 1" + ":1" * 300_000 + "\n"), INVALID, ("line",)),
        ("float-size", _text(_demo2_cluster("                Size: .inf\n")), INVALID, ("Size", "integer")),
        # Keys.
        ("duplicate-component", _text(to_yaml({"Name": "demo", "Components": {}}).replace(
            "Components: {}\n",
            "Components:\n  tenant - V1.0.0: {Component: tenant}\n  tenant - V1.0.0: {Component: tenant}\n")),
         INVALID, ("duplicate key", "tenant", "line")),
        ("duplicate-size", _text(_demo2_cluster("                Size: 3\n                Size: 4\n")),
         INVALID, ("duplicate key", "Size", "line")),
        ("duplicate-domain", _text("Domains:\n  demo: {Name: demo}\n  demo: {Name: demo}\n"),
         INVALID, ("duplicate key", "demo")),
        ("unknown-key-component", _doc(component(Colour="red")), INVALID, ("Colour", "unknown key")),
        ("unknown-key-cluster", _text(_demo2_cluster("                Size: 3\n                Replicas: 3\n")),
         INVALID, ("Replicas", "unknown key")),
        ("unknown-key-model", _text(DEMO2 + "Extra: 1\n"), INVALID, ("Extra", "unknown key")),
        ("lowercase-key", _doc({**{k: v for k, v in component().items() if k != "Version"}, "version": "V1.0.0"}),
         INVALID, ("version", "unknown key")),
        ("non-string-key", _text("Name: demo\nComponents:\n  1: {}\n"), INVALID, ("keys must be strings",)),
        ("null-key", _text("Name: demo\nComponents:\n  ~: {}\n"), INVALID, ("keys must be strings",)),
        ("complex-key", _text("Name: demo\nComponents:\n  ? [a, b]\n  : {}\n"), INVALID, ("line",)),
        ("key-mismatch", _text("Name: demo\nComponents:\n  tenant - V1.0.0:\n    Component: other\n    Version: V1.0.0\n"),
         INVALID, ("key must equal", "other")),
        # Wrong types.
        ("size-string", _text(_demo2_cluster("                Size: three\n")), INVALID, ("Size", "integer")),
        ("size-quoted-number", _text(_demo2_cluster('                Size: "3"\n')), INVALID, ("Size", "integer")),
        ("size-float", _text(_demo2_cluster("                Size: 3.5\n")), INVALID, ("Size", "integer")),
        ("size-bool", _text(_demo2_cluster("                Size: yes\n")), INVALID, ("Size", "integer")),
        ("size-list", _text(_demo2_cluster("                Size: [3]\n")), INVALID, ("Size", "integer")),
        ("min-map", _doc(architecture(Min={"a": 1})), INVALID, ("Min", "integer")),
        ("configuration-list", _doc(component(Configuration=["a", "b"])), INVALID, ("Configuration", "string")),
        ("configuration-map", _doc(component(Configuration={"a": "b"})), INVALID, ("Configuration", "string")),
        ("configuration-int", _doc(component(Configuration=7)), INVALID, ("Configuration", "string")),
        ("component-name-map", _doc(component(Component={"a": "b"})), INVALID, ("Component", "string")),
        ("version-list", _doc(component(Version=["V1"])), INVALID, ("Version", "string")),
        ("version-number", _doc(component(Version=1.0)), INVALID, ("Version", "string")),
        ("controller-bool", _doc(component(Controller=True)), INVALID, ("Controller", "string")),
        ("dependencies-list", _doc(component(Dependencies=["tenant"])), INVALID, ("Dependencies", "mapping")),
        ("dependencies-string", _doc(component(Dependencies="tenant")), INVALID, ("Dependencies", "mapping")),
        ("elements-string", _doc(architecture(elements="web")), INVALID, ("Elements", "mapping")),  # type: ignore[arg-type]
        ("element-name-map", _doc(architecture({"t": {"Element": {"t": 1}, "Component": "tenant"}})),
         INVALID, ("Element", "string")),
        ("relationships-list", _doc(architecture(Relationships=[1, 2])), INVALID, ("Relationships", "mapping")),
        ("domain-key-int", _text(to_yaml({"Domain": 7, **component()})), INVALID, ("Domain", "string")),
        ("domain-name-int", _text("Name: 12\nComponents: {}\n"), INVALID, ("Name", "string")),
        ("domains-list", _text("Domains: [demo]\n"), INVALID, ("Domains", "mapping")),
        ("state-int", _doc(architecture(State=7)), INVALID, ("State", "state")),
        ("state-list", _doc(architecture(State=["active"])), INVALID, ("State", "state")),
        ("type-bool", _doc(component(Dependencies={"tenant": {"Dependency": "tenant", "Type": True,
                                                               "Component": "tenant", "Version": "V1.0.0"}})),
         INVALID, ("Type", "dependency type")),
        ("remove-string", _text(to_yaml({"Name": "demo", "Solutions": {"s": {"Solution": "s", "Elements": {
            "e": {"Element": "e", "Component": "tenant", "Remove": "yes"}}}}})), INVALID, ("Remove", "true or false")),
        # Sizes.
        ("size-negative", _doc(architecture(Min=0, Size=-1)), INVALID, ("Size", "-1")),
        ("min-negative", _doc(architecture(Min=-1, Size=0)), INVALID, ("Min", "-1", "negative")),
        ("all-negative", _doc(architecture(Min=-5, Size=-3, Max=-1)), INVALID, ("Min", "negative")),
        ("size-2**31", _doc(architecture(Size=2**31)), INVALID, ("Size", "2147483648", "range")),
        ("max-2**31-1", _doc(architecture(Max=2**31 - 1)), INVALID, ("Max", "limit")),
        ("size-10**9", _doc(architecture(Size=10**9, Max=10**9)), INVALID, ("Max", "1000000000", "limit")),
        ("min-2**63", _doc(architecture(Min=2**63)), INVALID, ("Min", "range")),
        ("min-over-max", _doc(architecture(Min=3, Size=3, Max=2)), INVALID, ("Max", "less than Size")),
        ("min-over-size", _doc(architecture(Min=3, Size=2, Max=4)), INVALID, ("Size", "less than Min")),
        ("size-over-max", _doc(architecture(Min=1, Size=5, Max=4)), INVALID, ("Max", "less than Size 5")),
        ("runtime-min-over-max", _text(to_yaml({"Name": "demo", "Solutions": {"s": {"Solution": "s", "Elements": {
            "e": {"Element": "e", "Component": "tenant", "Clusters": {"V1.0.0": {
                "Version": "V1.0.0", "Min": 5, "Size": 1, "Max": 2}}}}}}})), INVALID, ("Min 5",)),
        # States and versions.
        ("state-unknown", _doc(architecture(State="running")), INVALID, ("State", "running")),
        ("state-capitalised", _doc(architecture(State="Active")), INVALID, ("State", "Active")),
        ("state-failure", _doc(architecture(State="failure")), INVALID, ("State", "initial, inactive or active")),
        ("state-empty", _doc(architecture(State="")), INVALID, ("State", "initial, inactive or active")),
        ("instance-state-unknown", _doc(_instance_state("exploded"), domain=""), INVALID, ("State", "exploded")),
        ("dependency-type-unknown", _doc(component(Dependencies={"tenant": {
            "Dependency": "tenant", "Type": "both", "Component": "tenant", "Version": "V1.0.0"}})),
         INVALID, ("Type", "both")),
        ("dependency-type-missing", _doc(component(Dependencies={"tenant": {
            "Dependency": "tenant", "Component": "tenant", "Version": "V1.0.0"}})), INVALID, ("Type", "context or service")),
        ("task-status-unknown", _text(to_yaml({"Name": "demo", "Tasks": {"t1": {"UUID": "t1", "Type": "Solution",
                                                                              "Status": "exploded"}}})),
         INVALID, ("Status", "exploded")),
        ("task-type-missing", _text(to_yaml({"Name": "demo", "Tasks": {"t1": {"UUID": "t1", "Status": "completed"}}})),
         INVALID, ("Type", "task type")),
        ("event-unknown-task", _text(to_yaml({"Name": "demo", "Events": {"e1": {"UUID": "e1", "Task": "nope",
                                                                              "Type": "execution"}}})),
         INVALID, ("Task", "nope")),
        ("transition-unknown", _text(to_yaml({"Name": "demo", "Tasks": {"t1": {"UUID": "t1", "Type": "Instance",
                                                                             "Status": "completed",
                                                                             "Transition": "explode"}}})),
         INVALID, ("Transition", "explode")),
        ("cluster-version-unknown", _doc(architecture({"t": {"Element": "t", "Component": "tenant",
                                                             "Clusters": {"V9.9.9": cluster(Version="V9.9.9")}}})),
         INVALID, ("V9.9.9", "no version")),
        ("element-component-unknown", _doc(architecture({"t": {"Element": "t", "Component": "gadget",
                                                               "Clusters": {"V1.0.0": cluster()}}})),
         INVALID, ("gadget", "unknown component")),
        ("dependency-component-unknown", _doc(component(Dependencies={"tenant": {
            "Dependency": "tenant", "Type": "context", "Component": "tenant", "Version": "V7"}})),
         INVALID, ("V7", "unknown component")),
        ("relationship-element-unknown", _doc(_with_relationship(Element="ghost")), INVALID, ("ghost", "unknown element")),
        ("relationship-version-unknown", _doc(_with_relationship(Version="V5")), INVALID, ("V5", "no cluster")),
        ("relationship-dependency-unknown", _doc(_with_relationship(Dependency="nope")), INVALID, ("nope", "no dependency")),
        ("relationship-type-mismatch", _doc(_with_relationship(Type="service")), INVALID, ("Type", "differs")),
        ("relationship-wrong-component", _doc(_with_relationship(Element="ten")), INVALID, ("ten", "needs a")),
        # Cycles.
        ("cycle-2", _doc(chain(["a", "b"], closed=True)), INVALID, ("cycle", "a -> b -> a")),
        ("cycle-5", _doc(chain(["a", "b", "c", "d", "e"], closed=True)), INVALID, ("cycle", "a -> b -> c -> d -> e -> a")),
        ("cycle-self", _doc(chain(["a"], closed=True)), INVALID, ("cycle", "a -> a")),
        # References to what is not there.
        ("component-unknown-domain", _doc(component(), domain="nowhere"), NOT_FOUND, ("nowhere",)),
        ("architecture-unknown-domain", _doc(architecture(), domain="nowhere"), NOT_FOUND, ("nowhere",)),
        ("component-no-domain", _doc(component(), domain=""), INVALID, ("domain",)),
        ("component-two-domains", _text(to_yaml({"Domain": "other", **component()}), DOMAIN), INVALID, ("other", "demo")),
        ("component-hostile-request-domain", _doc(component(), domain="demo.>"), INVALID, ("demo.>",)),
        ("controller-missing", _doc(component(Controller="")), INVALID, ("Controller", "required")),
        # Redefinition of immutable things (demo2 is stored).
        ("redefine-component", _doc({**component(Component="tenant", Dependencies={}), "Configuration": "other"}),
         EXISTS, ("tenant",)),
        ("redefine-architecture", _text(_with(DEMO2, "                Min: 3\n", "                Min: 2\n")), EXISTS, ("app",)),
        ("redefine-in-model-with-new", _text(DEMO2.replace("Configuration: \"\"\n        Elements:", "Configuration: \"x\"\n        Elements:", 1)
                                             .replace("Domains:\n", "Domains:\n  fresh:\n    Name: fresh\n", 1)),
         EXISTS, ("app",)),
        ("half-valid-model", _text("Domains:\n  fresh:\n    Name: fresh\n  bad:\n    Name: bad\n    Components:\n"
                                   "      x - V1:\n        Component: x\n        Version: V1\n"),
         INVALID, ("Controller",)),
    ]
    return [Case(f"apply-{name}", A, request, code, needles) for name, request, code, needles in c]


def _instance_state(state: str) -> dict[str, Any]:
    """name_document with its instance in this state."""
    doc = name_document()
    for solution in doc["Solutions"].values():
        for element in solution["Elements"].values():
            for cluster in element["Clusters"].values():
                for instance in cluster["Instances"].values():
                    instance["State"] = state
    return doc


def _with_relationship(**changes: str) -> dict[str, Any]:
    """server + network + tenant elements; the server's network relationship changed."""
    arch = chain(["a"], closed=False)
    relationship = arch["Elements"]["srv"]["Clusters"]["V1.0.0"]["Relationships"]["network"]
    relationship.update(changes)
    return arch


# ---- Store*, Retrieve*, Deploy, Update* -------------------------------------


def _demo2() -> pb.Domain:
    return codec.parse_document(DEMO2).model.domains[0]


def store_cases() -> list[Case]:
    d = _demo2()
    tenant = next(c for c in d.components if c.name == "tenant")
    app = d.architectures[0]

    def arch(change: Any, version: str = "V9") -> pb.Architecture:
        copy = pb.Architecture()
        copy.CopyFrom(app)
        copy.version = version
        change(copy)
        return copy

    def cluster_of(a: pb.Architecture, element: str = "app") -> pb.ClusterConfiguration:
        return next(e for e in a.elements if e.name == element).clusters[0]

    def setattrs(target: Any, **values: Any) -> None:
        for key, value in values.items():
            if isinstance(value, list):
                del getattr(target, key)[:]
                getattr(target, key).extend(value)
            else:
                setattr(target, key, value)

    def cyc(a: pb.Architecture) -> None:
        # db's server relationship now points back at app (app -> db -> app).
        db = next(e for e in a.elements if e.name == "db")
        db.clusters[0].relationships.add(name="back", dependency="service", type=pb.DEPENDENCY_TYPE_SERVICE,
                                         element="app", version="V1.0.0")

    def component(**changes: Any) -> pb.Component:
        copy = pb.Component()
        copy.CopyFrom(tenant)
        copy.version = "V9"
        setattrs(copy, **changes)
        return copy

    SC, SA = "CatalogService/StoreComponent", "ArchitectureService/StoreArchitecture"
    SD, SM = "AdministrationService/StoreDomain", "AdministrationService/StoreModel"
    bad_dep = component()
    bad_dep.dependencies.add(name="x", type=99, component="tenant", version="V1.0.0")
    self_dep_unknown = component()
    self_dep_unknown.dependencies.add(name="x", type=pb.DEPENDENCY_TYPE_SERVICE, component="tenant", version="V9.1")
    redefined = pb.Component()
    redefined.CopyFrom(tenant)
    redefined.configuration = "changed"
    two = pb.Model(domains=[pb.Domain(name="twin"), pb.Domain(name="twin")])
    solution = pb.Domain(name=DOMAIN, solutions=[pb.Solution(name="s2", elements=[pb.Element(
        name="e", component="tenant", clusters=[pb.Cluster(version="V1.0.0", min=1, size=1, max=1, instances=[
            pb.Instance(uuid="i1", state=99)])])])])
    negative = pb.Domain(name=DOMAIN, solutions=[pb.Solution(name="s3", elements=[pb.Element(
        name="e", component="tenant", clusters=[pb.Cluster(version="V1.0.0", min=-1, size=-1, max=-1)])])])
    c: list[tuple[str, str, Any, grpc.StatusCode, tuple[str, ...]]] = [
        ("component-unknown-domain", SC, gw.StoreComponentRequest(domain="nowhere", component=component()), NOT_FOUND, ("nowhere",)),
        ("component-all-empty", SC, gw.StoreComponentRequest(domain=DOMAIN, component=pb.Component()), INVALID, ("Component", "required")),
        ("component-no-domain", SC, gw.StoreComponentRequest(component=component()), INVALID, ("domain", "required")),
        ("component-hostile-domain", SC, gw.StoreComponentRequest(domain="de mo", component=component()), INVALID, ("de mo",)),
        ("component-dependency-type-99", SC, gw.StoreComponentRequest(domain=DOMAIN, component=bad_dep), INVALID, ("Type", "context or service")),
        ("component-dependency-unknown", SC, gw.StoreComponentRequest(domain=DOMAIN, component=self_dep_unknown), INVALID, ("V9.1",)),
        ("component-redefined", SC, gw.StoreComponentRequest(domain=DOMAIN, component=redefined), EXISTS, ("tenant",)),
        ("component-duplicate-dependency", SC, gw.StoreComponentRequest(domain=DOMAIN, component=component(dependencies=[
            pb.Dependency(name="x", type=1, component="tenant", version="V1.0.0")] * 2)), INVALID, ("duplicate dependency",)),
        ("architecture-unknown-domain", SA, gw.StoreArchitectureRequest(domain="nowhere", architecture=arch(lambda a: None)), NOT_FOUND, ("nowhere",)),
        ("architecture-state-99", SA, gw.StoreArchitectureRequest(domain=DOMAIN, architecture=arch(
            lambda a: setattrs(cluster_of(a), state=99))), INVALID, ("State",)),
        ("architecture-state-failure", SA, gw.StoreArchitectureRequest(domain=DOMAIN, architecture=arch(
            lambda a: setattrs(cluster_of(a), state=pb.STATE_FAILURE))), INVALID, ("State", "failure")),
        ("architecture-min-negative", SA, gw.StoreArchitectureRequest(domain=DOMAIN, architecture=arch(
            lambda a: setattrs(cluster_of(a), min=-1))), INVALID, ("Min", "negative")),
        ("architecture-size-int32-min", SA, gw.StoreArchitectureRequest(domain=DOMAIN, architecture=arch(
            lambda a: setattrs(cluster_of(a), min=-(2**31), size=-(2**31)))), INVALID, ("Min", "negative")),
        ("architecture-size-10**9", SA, gw.StoreArchitectureRequest(domain=DOMAIN, architecture=arch(
            lambda a: setattrs(cluster_of(a), size=10**9, max=10**9))), INVALID, ("Max", "limit")),
        ("architecture-max-int32", SA, gw.StoreArchitectureRequest(domain=DOMAIN, architecture=arch(
            lambda a: setattrs(cluster_of(a), max=2**31 - 1))), INVALID, ("Max", "limit")),
        ("architecture-min-over-max", SA, gw.StoreArchitectureRequest(domain=DOMAIN, architecture=arch(
            lambda a: setattrs(cluster_of(a), min=3, size=3, max=1))), INVALID, ("Max", "less than")),
        ("architecture-cycle", SA, gw.StoreArchitectureRequest(domain=DOMAIN, architecture=arch(cyc)), INVALID, ("cycle", "app")),
        ("architecture-relationship-type-7", SA, gw.StoreArchitectureRequest(domain=DOMAIN, architecture=arch(
            lambda a: setattrs(cluster_of(a).relationships[0], type=7))), INVALID, ("Type",)),
        ("architecture-unknown-version", SA, gw.StoreArchitectureRequest(domain=DOMAIN, architecture=arch(
            lambda a: setattrs(cluster_of(a), version="V2.0.0"))), INVALID, ("V2.0.0",)),
        ("architecture-redefined", SA, gw.StoreArchitectureRequest(domain=DOMAIN, architecture=arch(
            lambda a: setattrs(a, configuration="changed"), version="V0.0.0")), EXISTS, ("app",)),
        ("architecture-all-empty", SA, gw.StoreArchitectureRequest(domain=DOMAIN, architecture=pb.Architecture()),
         INVALID, ("Architecture", "required")),
        ("architecture-duplicate-element", SA, gw.StoreArchitectureRequest(domain=DOMAIN, architecture=arch(
            lambda a: a.elements.append(a.elements[0]))), INVALID, ("duplicate element",)),
        ("domain-empty-name", SD, gw.StoreDomainRequest(domain=pb.Domain()), INVALID, ("domain", "required")),
        ("domain-instance-state-99", SD, gw.StoreDomainRequest(domain=solution), INVALID, ("State", "99")),
        ("domain-runtime-negative", SD, gw.StoreDomainRequest(domain=negative), INVALID, ("Min -1",)),
        ("domain-task-type-missing", SD, gw.StoreDomainRequest(domain=pb.Domain(name=DOMAIN, tasks=[pb.Task(
            uuid="t1", status=pb.TASK_STATUS_COMPLETED)])), INVALID, ("task type",)),
        ("domain-task-other-domain", SD, gw.StoreDomainRequest(domain=pb.Domain(name=DOMAIN, tasks=[pb.Task(
            uuid="t1", domain="other", type=pb.TASK_TYPE_SOLUTION, status=pb.TASK_STATUS_COMPLETED)])), INVALID, ("other",)),
        ("domain-task-subtask-hostile", SD, gw.StoreDomainRequest(domain=pb.Domain(name=DOMAIN, tasks=[pb.Task(
            uuid="t1", type=pb.TASK_TYPE_SOLUTION, status=pb.TASK_STATUS_COMPLETED, subtasks=["a.>"])])), INVALID, ("Subtasks",)),
        ("model-huge-element-name", SM, gw.StoreModelRequest(model=pb.Model(domains=[pb.Domain(
            name=DOMAIN, architectures=[arch(lambda a: setattrs(a.elements[0], name="e" * (2 * MiB)))])])),
         INVALID, ("not a valid name", "left out")),
        ("model-duplicate-domain", SM, gw.StoreModelRequest(model=two), INVALID, ("duplicate domain", "twin")),
        ("model-empty-domain", SM, gw.StoreModelRequest(model=pb.Model(domains=[pb.Domain()])), INVALID, ("domain", "required")),
        ("model-invalid-utf8-domain", SM, _nested_string([1, 3, 1], b"d\xe9mo"), INVALID, ("UTF-8",)),
        ("model-truncated", SM, _nested_string([1, 3, 1], b"demo")[:-2], INVALID, ("StoreModelRequest",)),
    ]
    return [Case(f"store-{name}", method, request, code, needles) for name, method, request, code, needles in c]


SCALE = 30_000  # enough that any quadratic check would take minutes


def scale_cases() -> list[Case]:
    """Large, invalid models within the size limits, shaped so that a check that
    scans instead of looking up (or a round trip per entry) would take minutes.
    Each is invalid only at its very end."""
    n = SCALE
    SM, SD = "AdministrationService/StoreModel", "AdministrationService/StoreDomain"

    def cluster_(**fields: Any) -> pb.ClusterConfiguration:
        return pb.ClusterConfiguration(version="v", state=pb.STATE_ACTIVE, min=1, max=1, size=1, **fields)

    many_domains = pb.Model(domains=[pb.Domain(name=f"d{i}") for i in range(n)] + [pb.Domain(name="last>")])
    repeated_domain = pb.Model(domains=[pb.Domain(name=DOMAIN)] * (n * 10))
    # n components; n elements of the last one; the last element's size is wrong.
    components = [pb.Component(name=f"c{i}", version="v", controller="sim") for i in range(n)]
    elements = [pb.ElementConfiguration(name=f"e{i}", component=f"c{n - 1}", clusters=[cluster_()]) for i in range(n)]
    elements[-1].clusters[0].size = 7
    catalog_scan = pb.Domain(name="scale", components=components, architectures=[
        pb.Architecture(name="a", version="v", elements=elements)])
    # A component with n dependencies; n relationships on the last one; the last one of the wrong type.
    dependencies = [pb.Dependency(name=f"d{i}", type=pb.DEPENDENCY_TYPE_SERVICE, component="b", version="v")
                    for i in range(n)]
    relationships = [pb.RelationshipConfiguration(name=f"r{i}", dependency=f"d{n - 1}", type=pb.DEPENDENCY_TYPE_SERVICE,
                                                  element="eb", version="v") for i in range(n)]
    relationships[-1].type = pb.DEPENDENCY_TYPE_CONTEXT
    dependency_scan = pb.Domain(name="scale", components=[
        pb.Component(name="c", version="v", controller="sim", dependencies=dependencies),
        pb.Component(name="b", version="v", controller="sim")], architectures=[pb.Architecture(name="a", version="v", elements=[
            pb.ElementConfiguration(name="ec", component="c", clusters=[cluster_(relationships=relationships)]),
            pb.ElementConfiguration(name="eb", component="b", clusters=[cluster_()])])])
    # An element needing n others; the last of them needs it back (a cycle).
    fan = [pb.RelationshipConfiguration(name=f"r{i}", dependency="d", type=pb.DEPENDENCY_TYPE_SERVICE, element=f"e{i}",
                                        version="v") for i in range(n)]
    others = [pb.ElementConfiguration(name=f"e{i}", component="c", clusters=[cluster_()]) for i in range(n)]
    others[-1].clusters[0].relationships.add(name="back", dependency="d", type=pb.DEPENDENCY_TYPE_SERVICE, element="a",
                                             version="v")
    cycle_scan = pb.Domain(name="scale", components=[pb.Component(name="c", version="v", controller="sim", dependencies=[
        pb.Dependency(name="d", type=pb.DEPENDENCY_TYPE_SERVICE, component="c", version="v")])], architectures=[
        pb.Architecture(name="a", version="v", elements=[
            pb.ElementConfiguration(name="a", component="c", clusters=[cluster_(relationships=fan)]), *others])])
    c: list[tuple[str, str, Any, tuple[str, ...]]] = [
        ("many-domains-last-invalid", SM, gw.StoreModelRequest(model=many_domains), ("last>",)),
        ("one-domain-300000-times", SM, gw.StoreModelRequest(model=repeated_domain), ("duplicate domain",)),
        ("elements-times-catalog", SD, gw.StoreDomainRequest(domain=catalog_scan), (f"e{n - 1}", "Max")),
        ("relationships-times-dependencies", SD, gw.StoreDomainRequest(domain=dependency_scan), (f"r{n - 1}", "Type")),
        ("relationships-times-targets", SD, gw.StoreDomainRequest(domain=cycle_scan), ("cycle", f"a -> e{n - 1} -> a")),
    ]
    return [Case(f"scale-{name}", method, request, INVALID, needles) for name, method, request, needles in c]


def read_and_change_cases() -> list[Case]:
    RC, RA = "CatalogService/RetrieveComponent", "ArchitectureService/RetrieveArchitecture"
    RD, RS = "AdministrationService/RetrieveDomain", "SolutionService/RetrieveSolution"
    DS, US = "SolutionService/DeploySolution", "SolutionService/UpdateSolution"
    UC, UI = "SolutionService/UpdateCluster", "SolutionService/UpdateInstance"
    RT, RM = "AutomationService/RetrieveTask", "SolutionService/RemoveSolution"
    TT = "AutomationService/TerminateTask"
    cl = {"domain": DOMAIN, "solution": SOLUTION, "element": ELEMENT, "cluster": CLUSTER}
    inst = {**cl, "instance": INSTANCE}
    deploy = {"domain": DOMAIN, "architecture": "app", "version": "V0.0.0"}
    c: list[tuple[str, str, Any, grpc.StatusCode, tuple[str, ...]]] = [
        ("component-unknown", RC, gw.RetrieveComponentRequest(domain=DOMAIN, component="gadget", version="V1.0.0"), NOT_FOUND, ("gadget",)),
        ("component-unknown-version", RC, gw.RetrieveComponentRequest(domain=DOMAIN, component="tenant", version="V7"), NOT_FOUND, ("V7",)),
        ("architecture-unknown-version", RA, gw.RetrieveArchitectureRequest(domain=DOMAIN, architecture="app", version="V1"), NOT_FOUND, ("V1",)),
        ("domain-unknown", RD, gw.RetrieveDomainRequest(domain="nowhere"), NOT_FOUND, ("nowhere",)),
        ("domain-hostile", RD, gw.RetrieveDomainRequest(domain="demo.*"), INVALID, ("domain", "demo.*")),
        ("retrieve-solution-unknown", RS, gw.RetrieveSolutionRequest(domain=DOMAIN, solution="ghost"), NOT_FOUND, ("ghost",)),
        ("deploy-unknown-version", DS, gw.DeploySolutionRequest(**{**deploy, "version": "V9"}), NOT_FOUND, ("V9",)),
        ("deploy-unknown-architecture", DS, gw.DeploySolutionRequest(**{**deploy, "architecture": "shop"}), NOT_FOUND, ("shop",)),
        ("deploy-unknown-domain", DS, gw.DeploySolutionRequest(**{**deploy, "domain": "nowhere"}), NOT_FOUND, ("nowhere",)),
        ("deploy-empty", DS, gw.DeploySolutionRequest(), INVALID, ("domain", "required")),
        ("deploy-no-version", DS, gw.DeploySolutionRequest(**{**deploy, "version": ""}), INVALID, ("version", "required")),
        ("deploy-size-unknown-cluster", DS, gw.DeploySolutionRequest(**deploy, sizes={"ghost/V1": 2}), INVALID,
         ("sizes", "ghost/V1")),
        ("deploy-size-negative", DS, gw.DeploySolutionRequest(**deploy, sizes={"app/V1.0.0": -1}), INVALID,
         ("sizes", "-1", "min 3")),
        ("deploy-size-int32-max", DS, gw.DeploySolutionRequest(**deploy, sizes={"app/V1.0.0": 2**31 - 1}), INVALID,
         ("sizes", "2147483647")),
        ("plan-size-above-max", "SolutionService/PlanSolution", gw.PlanSolutionRequest(**deploy, sizes={"app/V1.0.0": 4}),
         INVALID, ("sizes", "max 3")),
        ("cluster-size-negative", UC, gw.UpdateClusterRequest(**cl, size=-1), INVALID, ("size", "-1")),
        ("cluster-size-int32-max", UC, gw.UpdateClusterRequest(**cl, size=2**31 - 1), INVALID, ("size", "2147483647")),
        ("cluster-size-int32-min", UC, gw.UpdateClusterRequest(**cl, size=-(2**31)), INVALID, ("size", "-2147483648")),
        ("cluster-size-10**9", UC, gw.UpdateClusterRequest(**cl, size=10**9), INVALID, ("size", "1000000000")),
        ("cluster-size-zero-below-min", UC, gw.UpdateClusterRequest(**cl, size=0), INVALID, ("size", "min 3")),
        ("cluster-nothing", UC, gw.UpdateClusterRequest(**cl), INVALID, ("nothing to change",)),
        ("cluster-state-99", UC, gw.UpdateClusterRequest(**cl, state=99), INVALID, ("state", "99")),
        ("cluster-state-failure", UC, gw.UpdateClusterRequest(**cl, state=pb.STATE_FAILURE), INVALID, ("state", "STATE_FAILURE")),
        ("cluster-unknown-element", UC, gw.UpdateClusterRequest(**{**cl, "element": "ghost"}, size=3), NOT_FOUND, ("ghost",)),
        ("cluster-unknown-cluster", UC, gw.UpdateClusterRequest(**{**cl, "cluster": "V9.9.9"}, size=3), NOT_FOUND, ("V9.9.9",)),
        ("cluster-unknown-solution", UC, gw.UpdateClusterRequest(**{**cl, "solution": "ghost"}, size=3), NOT_FOUND, ("ghost",)),
        ("instance-unknown", UI, gw.UpdateInstanceRequest(**{**inst, "instance": "ghost"}, state=pb.STATE_ACTIVE), NOT_FOUND, ("ghost",)),
        ("instance-state-unspecified", UI, gw.UpdateInstanceRequest(**inst), INVALID, ("state", "STATE_UNSPECIFIED")),
        ("instance-state-42", UI, gw.UpdateInstanceRequest(**inst, state=42), INVALID, ("state", "42")),
        ("instance-state-negative", UI, gw.UpdateInstanceRequest(**inst, state=-1), INVALID, ("state", "-1")),
        ("solution-state-failure", US, gw.UpdateSolutionRequest(domain=DOMAIN, solution=SOLUTION, state=pb.STATE_FAILURE), INVALID, ("state",)),
        ("solution-state-7", US, gw.UpdateSolutionRequest(domain=DOMAIN, solution=SOLUTION, state=7), INVALID, ("state", "7")),
        ("solution-unknown", US, gw.UpdateSolutionRequest(domain=DOMAIN, solution="ghost", state=pb.STATE_ACTIVE), NOT_FOUND, ("ghost",)),
        ("remove-unknown", RM, gw.RemoveSolutionRequest(domain=DOMAIN, solution="ghost"), NOT_FOUND, ("ghost",)),
        ("remove-hostile", RM, gw.RemoveSolutionRequest(domain=DOMAIN, solution="app.>"), INVALID, ("solution",)),
        ("task-unknown", RT, gw.RetrieveTaskRequest(domain=DOMAIN, task="ghost"), NOT_FOUND, ("ghost",)),
        ("task-unknown-any-domain", RT, gw.RetrieveTaskRequest(task="ghost"), NOT_FOUND, ("ghost",)),
        ("terminate-unknown", TT, gw.TerminateTaskRequest(domain=DOMAIN, task="ghost"), NOT_FOUND, ("ghost",)),
        ("events-latest-negative", "AutomationService/ListEvents", gw.ListEventsRequest(domain=DOMAIN, latest=-1), INVALID, ("latest",)),
        ("events-latest-huge", "AutomationService/ListEvents", gw.ListEventsRequest(domain=DOMAIN, latest=2**31 - 1), INVALID, ("latest",)),
        ("terminate-hostile", TT, gw.TerminateTaskRequest(domain=DOMAIN, task="*"), INVALID, ("task",)),
        ("terminate-finished", TT, gw.TerminateTaskRequest(domain=DOMAIN, task=ROOT_TASK),
         grpc.StatusCode.FAILED_PRECONDITION, ("already ended",)),
        ("cluster-invalid-utf8", UC, _nested_string([2], b"a\xffp"), INVALID, ("UTF-8",)),
    ]
    cases = [Case(f"call-{name}", method, request, code, needles) for name, method, request, code, needles in c]
    WE, WS = "AutomationService/WatchEvents", "SolutionService/WatchStatus"
    # A watch subscribes to a subject built from its names: a wildcard must never get that far.
    watches: list[tuple[str, str, Any, grpc.StatusCode, tuple[str, ...]]] = [
        ("watch-events-domain-wildcard", WE, gw.WatchEventsRequest(domain="demo.>"), INVALID, ("domain",)),
        ("watch-events-domain-star", WE, gw.WatchEventsRequest(domain="*"), INVALID, ("domain",)),
        ("watch-events-task-wildcard", WE, gw.WatchEventsRequest(domain=DOMAIN, task="a.*"), INVALID, ("task",)),
        ("watch-events-task-newline", WE, gw.WatchEventsRequest(domain=DOMAIN, task="a\nb"), INVALID, ("task",)),
        ("watch-events-unknown-domain", WE, gw.WatchEventsRequest(domain="nowhere"), NOT_FOUND, ("nowhere",)),
        ("watch-status-domain-gt", WS, gw.WatchStatusRequest(domain=">"), INVALID, ("domain",)),
        ("watch-status-solution-wildcard", WS, gw.WatchStatusRequest(domain=DOMAIN, solution="app.*"), INVALID, ("solution",)),
        ("watch-status-solution-space", WS, gw.WatchStatusRequest(domain=DOMAIN, solution="a b"), INVALID, ("solution",)),
        ("watch-status-unknown-domain", WS, gw.WatchStatusRequest(domain="nowhere"), NOT_FOUND, ("nowhere",)),
        ("watch-events-invalid-utf8", WE, _nested_string([1], b"de\xffmo"), INVALID, ("UTF-8",)),
    ]
    cases += [Case(f"call-{name}", method, request, code, needles, streaming=True)
              for name, method, request, code, needles in watches]
    return cases


def access_cases() -> list[Case]:
    """Tokens and the audit trail: hostile names, roles, domains and filters."""
    CT, RV, LA = "AccessService/CreateToken", "AccessService/RevokeToken", "AccessService/ListAudit"
    c: list[tuple[str, str, Any, grpc.StatusCode, tuple[str, ...]]] = [
        ("token-name-empty", CT, gw.CreateTokenRequest(name="", role="viewer"), INVALID, ("token name",)),
        ("token-name-dot", CT, gw.CreateTokenRequest(name="a.b", role="viewer"), INVALID, ("token name", "a.b")),
        ("token-name-wildcard", CT, gw.CreateTokenRequest(name="a>", role="viewer"), INVALID, ("token name",)),
        ("token-name-upper", CT, gw.CreateTokenRequest(name="Admin", role="admin"), INVALID, ("token name",)),
        ("token-name-newline", CT, gw.CreateTokenRequest(name="a\nb", role="viewer"), INVALID, ("token name",)),
        ("token-name-64", CT, gw.CreateTokenRequest(name="a" * 64, role="viewer"), INVALID, ("token name",)),
        ("token-name-bootstrap", CT, gw.CreateTokenRequest(name="bootstrap", role="admin"), INVALID, ("reserved",)),
        ("token-role-unknown", CT, gw.CreateTokenRequest(name="t", role="root"), INVALID, ("role", "root")),
        ("token-role-empty", CT, gw.CreateTokenRequest(name="t"), INVALID, ("role",)),
        ("token-domain-wildcard", CT, gw.CreateTokenRequest(name="t", role="viewer", domains=["demo.>"]), INVALID, ("domain",)),
        ("token-domain-empty", CT, gw.CreateTokenRequest(name="t", role="viewer", domains=[""]), INVALID, ("domain",)),
        ("revoke-unknown", RV, gw.RevokeTokenRequest(name="ghost"), NOT_FOUND, ("ghost",)),
        ("revoke-hostile", RV, gw.RevokeTokenRequest(name="*"), INVALID, ("token name",)),
        ("audit-domain-wildcard", LA, gw.ListAuditRequest(domain="demo.*"), INVALID, ("domain",)),
        ("audit-since-negative", LA, gw.ListAuditRequest(since_seconds=-1), INVALID, ("since",)),
        ("audit-since-nan", LA, gw.ListAuditRequest(since_seconds=float("nan")), INVALID, ("since",)),
        ("audit-limit-negative", LA, gw.ListAuditRequest(limit=-5), INVALID, ("limit",)),
    ]
    return [Case(f"access-{name}", method, request, code, needles) for name, method, request, code, needles in c]


def grpc_cases() -> list[Case]:
    """Every gRPC case: the hand-written ones first, then the name matrices (grouped)."""
    cases = (apply_cases() + store_cases() + scale_cases() + read_and_change_cases() + access_cases() + name_cases()
             + request_name_cases())
    ids = [case.id for case in cases]
    assert len(ids) == len(set(ids)), "case ids must be unique"
    return cases


# ---- the bus ------------------------------------------------------------------


def _j(**fields: Any) -> bytes:
    return json.dumps(fields).encode()


def bus_cases() -> list[BusCase]:
    cl = {"domain": DOMAIN, "solution": SOLUTION, "element": ELEMENT, "cluster": CLUSTER}
    dep = {"domain": DOMAIN, "architecture": "app", "version": "V0.0.0"}
    big = json.dumps({**dep, "solution": "x" * (MiB + 1)}).encode()
    c: list[tuple[str, str, bytes, str, tuple[str, ...]]] = [
        ("not-json", "deploy", b"{not json", "INVALID_ARGUMENT", ("JSON", "line")),
        ("empty", "deploy", b"", "INVALID_ARGUMENT", ("JSON",)),
        ("invalid-utf8", "deploy", b'{"domain": "de\xffmo"}', "INVALID_ARGUMENT", ("UTF-8",)),
        ("utf16", "deploy", json.dumps(dep).encode("utf-16"), "INVALID_ARGUMENT", ("UTF-8",)),
        ("list", "deploy", b"[1, 2]", "INVALID_ARGUMENT", ("object",)),
        ("null", "deploy", b"null", "INVALID_ARGUMENT", ("object",)),
        ("string", "deploy", b'"deploy"', "INVALID_ARGUMENT", ("object",)),
        ("deep-list-1000", "deploy", b'{"domain": ' + _deep(1000, "[", "]", "1").encode() + b"}", "INVALID_ARGUMENT", ("nest",)),
        ("deep-object-1000", "deploy", b'{"domain": ' + _deep(1000, '{"a": ', "}", "1").encode() + b"}", "INVALID_ARGUMENT", ("nest",)),
        ("deep-list-100000", "cluster", b"[" * 100_000, "INVALID_ARGUMENT", ("nest",)),
        ("over-1MiB", "deploy", big, "INVALID_ARGUMENT", ("limit",)),
        ("5000-digit-size", "cluster", b'{"domain": "demo", "size": ' + b"9" * 5000 + b"}", "INVALID_ARGUMENT", ("digits",)),
        ("duplicate-key", "deploy", b'{"domain": "demo", "domain": "x.>", "architecture": "app", "version": "V0.0.0"}',
         "INVALID_ARGUMENT", ("duplicate", "domain")),
        ("unknown-field", "deploy", _j(**dep, bogus=1), "INVALID_ARGUMENT", ("bogus",)),
        ("domain-list", "deploy", _j(**{**dep, "domain": ["demo"]}), "INVALID_ARGUMENT", ("domain",)),
        ("domain-object", "deploy", _j(**{**dep, "domain": {"a": 1}}), "INVALID_ARGUMENT", ("domain",)),
        ("version-number", "deploy", _j(**{**dep, "version": 7}), "INVALID_ARGUMENT", ("version",)),
        ("domain-wildcards", "deploy", _j(**{**dep, "domain": "demo.*"}), "INVALID_ARGUMENT", ("domain",)),
        ("architecture-gt", "deploy", _j(**{**dep, "architecture": ">"}), "INVALID_ARGUMENT", ("architecture",)),
        ("solution-space", "deploy", _j(**dep, solution="a b"), "INVALID_ARGUMENT", ("solution",)),
        ("version-dotdot", "deploy", _j(**{**dep, "version": ".."}), "INVALID_ARGUMENT", ("version",)),
        ("domain-nul", "deploy", _j(**{**dep, "domain": "de\x00mo"}), "INVALID_ARGUMENT", ("domain",)),
        ("domain-surrogate", "deploy", b'{"domain": "\\ud800", "architecture": "app", "version": "V0.0.0"}', "INVALID_ARGUMENT", ("domain",)),
        ("solution-129", "deploy", _j(**dep, solution="a" * 129), "INVALID_ARGUMENT", ("solution",)),
        ("domain-empty", "deploy", _j(**{**dep, "domain": ""}), "INVALID_ARGUMENT", ("domain",)),
        ("unknown-version", "deploy", _j(**{**dep, "version": "V9"}), "NOT_FOUND", ("V9",)),
        ("unknown-domain", "deploy", _j(**{**dep, "domain": "nowhere"}), "NOT_FOUND", ("nowhere",)),
        ("size-negative", "cluster", _j(**cl, size=-1), "INVALID_ARGUMENT", ("size", "-1")),
        ("size-2**31", "cluster", _j(**cl, size=2**31), "INVALID_ARGUMENT", ("size",)),
        ("size-10**9", "cluster", _j(**cl, size=10**9), "INVALID_ARGUMENT", ("size", "1000000000")),
        ("size-word", "cluster", _j(**cl, size="three"), "INVALID_ARGUMENT", ("size",)),
        ("size-nan", "cluster", b'{"domain": "demo", "solution": "app", "element": "app", "cluster": "V1.0.0", "size": NaN}',
         "INVALID_ARGUMENT", ("size",)),
        ("size-float", "cluster", _j(**cl, size=2.5), "INVALID_ARGUMENT", ("size",)),
        ("state-unknown", "cluster", _j(**cl, state="running"), "INVALID_ARGUMENT", ("state", "running")),
        ("state-99", "cluster", _j(**cl, state=99), "INVALID_ARGUMENT", ("state", "99")),
        ("cluster-unknown-element", "cluster", _j(**{**cl, "element": "ghost"}, size=3), "NOT_FOUND", ("ghost",)),
        ("cluster-unknown-solution", "cluster", _j(**{**cl, "solution": "ghost"}, size=3), "NOT_FOUND", ("ghost",)),
        ("instance-state-unknown", "instance", _j(**cl, instance=INSTANCE, state="exploded"), "INVALID_ARGUMENT", ("state", "exploded")),
        ("instance-unknown", "instance", _j(**cl, instance="ghost", state="active"), "NOT_FOUND", ("ghost",)),
        ("instance-slash", "instance", _j(**cl, instance="a/b", state="active"), "INVALID_ARGUMENT", ("instance",)),
        ("solution-state-failure", "solution", _j(domain=DOMAIN, solution=SOLUTION, state="failure"), "INVALID_ARGUMENT", ("state",)),
        ("solution-unknown", "solution", _j(domain=DOMAIN, solution="ghost", state="active"), "NOT_FOUND", ("ghost",)),
        ("remove-unknown", "remove", _j(domain=DOMAIN, solution="ghost"), "NOT_FOUND", ("ghost",)),
        ("remove-tab", "remove", _j(domain=DOMAIN, solution="a\tb"), "INVALID_ARGUMENT", ("solution",)),
        ("terminate-unknown", "terminate", _j(domain=DOMAIN, task="ghost"), "NOT_FOUND", ("ghost",)),
        ("terminate-finished", "terminate", _j(domain=DOMAIN, task=ROOT_TASK), "FAILED_PRECONDITION", ("already ended",)),
        ("task-gt", "task", _j(domain=DOMAIN, task=">"), "INVALID_ARGUMENT", ("task",)),
        ("task-unknown", "task", _j(domain=DOMAIN, task="ghost"), "NOT_FOUND", ("ghost",)),
        ("unknown-operation", "explode", b"{}", "INVALID_ARGUMENT", ("explode",)),
        ("token-field-number", "task", _j(domain=DOMAIN, task=ROOT_TASK, token=7), "INVALID_ARGUMENT", ("token",)),
        ("token-field-object", "task", _j(domain=DOMAIN, task=ROOT_TASK, token={"a": 1}), "INVALID_ARGUMENT", ("token",)),
    ]
    cases = [BusCase(f"bus-{name}", op, payload, code, needles) for name, op, payload, code, needles in c]
    task = _j(domain=DOMAIN, task=ROOT_TASK)
    headers: list[tuple[str, str, bytes]] = [
        ("no-token", "", task),
        ("header-basic", "Basic b3JjaDpvcmNo", task),
        ("header-bearer-empty", "Bearer ", task),
        ("header-lowercase-bearer", "bearer x", task),
        ("header-wildcard-token", "Bearer a.>", task),
        ("header-stored-token-form", "Bearer ghost.secret", task),
        ("header-64KiB-token", "Bearer " + "a" * 65536, task),
        ("header-newline-token", "Bearer a\tb", task),
        ("token-field-wrong", "", _j(domain=DOMAIN, task=ROOT_TASK, token="wrong")),
        ("token-field-empty", "", _j(domain=DOMAIN, task=ROOT_TASK, token="")),
    ]
    cases += [BusCase(f"bus-{name}", "task", payload, "UNAUTHENTICATED", ("token",), authorization)
              for name, authorization, payload in headers]
    return cases


# ---- the CLI ------------------------------------------------------------------


def cli_cases() -> list[CliCase]:
    return [
        CliCase("billion-laughs", billion_laughs().encode(), ("INVALID_ARGUMENT", "alias", "line")),
        CliCase("invalid-utf8", b"Name: demo\nComponents: {}\n# \xff\n", ("UTF-8",)),
        CliCase("deep-nesting", _deep(1000, "[", "]").encode(), ("INVALID_ARGUMENT", "nesting")),
        CliCase("over-4MiB", b"Name: demo\n# " + b"x" * (4 * MiB) + b"\n", ("INVALID_ARGUMENT", "limit")),
        CliCase("newline-in-name", to_yaml(name_document(element="a\nb")).encode(), ("INVALID_ARGUMENT", "Element")),
        CliCase("escape-in-key", to_yaml({"Name": "demo", "Components": {}, "\x1b[2J\x1b[Hx\ny": 1}).encode(),
                ("INVALID_ARGUMENT", "unknown key")),
        CliCase("duplicate-key", _demo2_cluster("                Size: 3\n                Size: 4\n").encode(),
                ("INVALID_ARGUMENT", "duplicate key")),
        CliCase("cycle", to_yaml({"Domain": DOMAIN, **chain(["a", "b"], closed=True)}).encode(),
                ("INVALID_ARGUMENT", "cycle")),
        CliCase("size-string", _demo2_cluster("                Size: three\n").encode(), ("INVALID_ARGUMENT", "Size")),
    ]
