"""The YAML codec: the SolAr demo files load, dump in their own format and
round-trip; hostile or wrong input is rejected with the path of the problem."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from google.protobuf import empty_pb2

from orchestration.model import codec
from orchestration.model.yamlsafe import MAX_DEPTH, load_yaml
from orchestration.v1 import model_pb2 as pb
from orchestration_sdk.status_errors import InvalidArgument

DATA = Path(__file__).parent / "data"


def demo(n: int) -> str:
    return (DATA / f"demo{n}.yaml").read_text(encoding="utf-8")


def replaced(text: str, old: str, new: str) -> str:
    """text with the first occurrence of old replaced; old must occur (else the test proves nothing)."""
    assert old in text, old
    return text.replace(old, new, 1)


def rejected(text: str | bytes, domain: str = "") -> str:
    with pytest.raises(InvalidArgument) as info:
        codec.parse_document(text, domain)
    return info.value.message


# ---- the demo files ------------------------------------------------------------


def test_demo1_is_a_catalog_of_four_components() -> None:
    document = codec.parse_document(demo(1))
    assert document.kind == "model"
    model = document.model
    assert (model.schema, model.name) == ("BT V1.0.0", "Model")
    [domain] = model.domains
    assert domain.name == "demo"
    assert [(c.name, c.version) for c in domain.components] == [
        ("application", "V1.0.0"), ("network", "V1.0.0"), ("server", "V1.0.0"), ("tenant", "V1.0.0"),
    ]
    application = domain.components[0]
    assert application.controller == "Internal:V1.0.0"
    assert application.configuration.startswith("# Ansible playbook") and not application.configuration.endswith("\n")
    server, service = application.dependencies
    assert (server.name, server.type, server.component, server.version) == ("server", pb.DEPENDENCY_TYPE_CONTEXT, "server", "V1.0.0")
    assert (service.name, service.type, service.component) == ("service", pb.DEPENDENCY_TYPE_SERVICE, "application")
    assert len(domain.components[3].dependencies) == 0
    assert not domain.architectures and not domain.solutions and not domain.tasks and not domain.events
    [controller] = domain.controllers
    assert (controller.name, controller.version, controller.image, controller.url, controller.status) == (
        "Internal", "V1.0.0", "", "", pb.STATE_ACTIVE,
    )


def test_demo2_has_an_architecture_of_eleven_elements() -> None:
    [domain] = codec.parse_document(demo(2)).model.domains
    assert len(domain.components) == 4
    [architecture] = domain.architectures
    assert (architecture.name, architecture.version, architecture.configuration) == ("app", "V0.0.0", "")
    assert len(architecture.elements) == 11
    app = architecture.elements[0]
    assert (app.name, app.component) == ("app", "application")
    [cluster] = app.clusters
    assert (cluster.version, cluster.state, cluster.min, cluster.max, cluster.size) == ("V1.0.0", pb.STATE_ACTIVE, 3, 3, 3)
    assert [(r.name, r.dependency, r.type, r.element, r.version) for r in cluster.relationships] == [
        ("db", "service", pb.DEPENDENCY_TYPE_SERVICE, "db", "V1.0.0"),
        ("server", "server", pb.DEPENDENCY_TYPE_CONTEXT, "app-server", "V1.0.0"),
    ]
    assert domain.controllers[0].url == "http://localhost/"


def test_demo3_has_a_deployed_solution_with_its_history() -> None:
    [domain] = codec.parse_document(demo(3)).model.domains
    [solution] = domain.solutions
    assert (solution.name, solution.version, solution.target, solution.state) == ("app", "V0.0.0", pb.STATE_ACTIVE, pb.STATE_INITIAL)
    assert solution.architecture == "app"  # defaulted to the solution's name
    assert len(solution.elements) == 11
    assert solution.elements[0].state == pb.STATE_UNSPECIFIED  # `State: ""`
    instances = [i for e in solution.elements for c in e.clusters for i in c.instances]
    assert len(instances) == 23
    assert all(i.target == pb.STATE_ACTIVE and i.state == pb.STATE_ACTIVE for i in instances)
    db = solution.elements[0].clusters[0].relationships[0]
    assert (db.name, db.domain, db.solution, db.element, db.target) == ("db", "demo", "app", "db", pb.STATE_INITIAL)
    assert len(domain.tasks) == 38
    task = next(t for t in domain.tasks if t.uuid == "0f7bec76-3252-41b0-a7c9-82b75abba9de")
    assert (task.type, task.status, task.element, task.cluster, task.phase) == (
        pb.TASK_TYPE_CLUSTER, pb.TASK_STATUS_COMPLETED, "app-server", "V1.0.0", 0,
    )
    assert task.parent == "ffab9264-8f18-4649-ac2d-3f5f8d17c726"
    assert len(task.subtasks) == 4
    assert len(task.events) == 12  # SolAr lists some events twice: kept as written
    assert len(domain.events) == 159
    event = next(e for e in domain.events if e.uuid == "02ed6397-c8fc-4334-983f-f40dd87475cf")
    assert (event.task, event.type, event.time) == ("24a27e99-9246-4d04-97b0-80354cc392f9", pb.EVENT_TYPE_EXECUTION, 1554733409142899536)
    assert {e.type for e in domain.events} == {pb.EVENT_TYPE_EXECUTION, pb.EVENT_TYPE_COMPLETION}


@pytest.mark.parametrize("n", [1, 2, 3])
def test_demo_files_round_trip(n: int) -> None:
    model = codec.parse_document(demo(n)).model
    again = codec.parse_document(codec.dump_model(model))
    assert again.kind == "model"
    assert again.model == model


@pytest.mark.parametrize("n", [1, 3])
def test_dump_writes_the_solar_format(n: int) -> None:
    # Same keys, key order, quoting and block scalars as SolAr itself wrote.
    assert codec.dump_model(codec.parse_document(demo(n)).model) == demo(n)


def test_bytes_are_decoded_as_utf8() -> None:
    assert codec.parse_document(demo(1).encode("utf-8")).model == codec.parse_document(demo(1)).model
    assert codec.parse_document(b"\xef\xbb\xbf" + demo(1).encode("utf-8")).kind == "model"


# ---- partial documents ---------------------------------------------------------


def test_domain_document_round_trips() -> None:
    [domain] = codec.parse_document(demo(2)).model.domains
    text = codec.dump_domain(domain)
    assert text.startswith("Name: demo\nComponents:\n")
    document = codec.parse_document(text)
    assert document.kind == "domain"
    assert list(document.model.domains) == [domain]


def test_domain_document_without_name_takes_the_given_domain() -> None:
    document = codec.parse_document("Components: {}\n", "lab")
    assert (document.kind, document.model.domains[0].name) == ("domain", "lab")
    assert "Name" in rejected("Components: {}\n") and "pass the domain" in rejected("Components: {}\n")
    assert "'demo'" in rejected("Name: demo\n", "lab")


@pytest.mark.parametrize("kind", ["component", "architecture"])
def test_component_and_architecture_documents(kind: str) -> None:
    [domain] = codec.parse_document(demo(2)).model.domains
    entry = domain.components[0] if kind == "component" else domain.architectures[0]
    dump = codec.dump_component if kind == "component" else codec.dump_architecture
    attr = "components" if kind == "component" else "architectures"

    named = codec.parse_document(dump(entry, "demo"))  # type: ignore[arg-type]
    assert named.kind == kind
    assert [d.name for d in named.model.domains] == ["demo"]
    assert list(getattr(named.model.domains[0], attr)) == [entry]

    unnamed = dump(entry)  # type: ignore[arg-type]
    assert "Domain" not in unnamed.splitlines()[0]
    assert codec.parse_document(unnamed, "lab").model.domains[0].name == "lab"
    assert "Domain: the document does not name its domain; pass the domain" == rejected(unnamed)
    assert "domain 'demo'" in rejected(dump(entry, "demo"), "lab")  # type: ignore[arg-type]


def test_to_document_covers_every_message_type() -> None:
    model = codec.parse_document(demo(3)).model
    domain = model.domains[0]
    solution = domain.solutions[0]
    element = solution.elements[0]
    cluster = element.clusters[0]
    expected_first_keys = [
        (model, "Schema"), (domain, "Name"), (domain.components[0], "Component"), (domain.architectures[0], "Architecture"),
        (solution, "Solution"), (element, "Element"), (cluster, "Version"), (cluster.instances[0], "UUID"),
        (domain.tasks[0], "Type"), (domain.events[0], "Domain"), (domain.controllers[0], "Controller"),
    ]
    for message, key in expected_first_keys:
        document = codec.to_document(message)
        assert next(iter(document)) == key, type(message).__name__
    assert codec.to_document(cluster.instances[0]) == {
        "UUID": "20957de0-194e-4f25-ba32-142e9e050280", "Target": "active", "State": "active", "Configuration": "", "Endpoint": "",
    }
    assert codec.to_document(element)["State"] == ""
    assert list(codec.to_document(domain)["Controllers"]) == ["Internal:V1.0.0"]
    assert json.loads(json.dumps(codec.to_document(model))) == codec.to_document(model)
    with pytest.raises(TypeError, match="google.protobuf.Empty"):
        codec.to_document(empty_pb2.Empty())


def test_extra_fields_are_written_only_when_set() -> None:
    task = pb.Task(uuid="t1", type=pb.TASK_TYPE_SOLUTION, status=pb.TASK_STATUS_FAILED)
    assert not {"Request", "Error", "Created", "Updated", "Transition"} & codec.to_document(task).keys()
    task.request, task.error, task.created, task.updated = "r1", "boom", 2**40, 2**62
    task.transition = pb.TRANSITION_START
    document = codec.to_document(task)
    assert (document["Request"], document["Error"], document["Created"], document["Transition"]) == ("r1", "boom", 2**40, "start")
    domain = pb.Domain(name="d", tasks=[task], solutions=[pb.Solution(name="s", architecture="other"), pb.Solution(name="t")])
    parsed = codec.parse_document(codec.dump_domain(domain)).model.domains[0]
    assert parsed.tasks[0] == task
    assert [s.architecture for s in parsed.solutions] == ["other", "t"]
    assert "Architecture" not in codec.to_document(parsed.solutions[1])


def test_dump_yaml_uses_block_scalars_and_double_quotes() -> None:
    text = codec.dump_yaml({"Configuration": "a: 1\nb: 2\n", "Trimmed": "x\ny", "Empty": "", "Items": []})
    assert text == 'Configuration: |\n  a: 1\n  b: 2\nTrimmed: |-\n  x\n  y\nEmpty: ""\nItems: []\n'
    assert load_yaml(text) == {"Configuration": "a: 1\nb: 2\n", "Trimmed": "x\ny", "Empty": "", "Items": []}


def test_controller_key_may_omit_the_version() -> None:
    text = replaced(demo(1), '      "Internal:V1.0.0":', "      Internal:")
    assert codec.parse_document(text).model.domains[0].controllers[0].version == "V1.0.0"


def test_dates_stay_strings() -> None:
    text = replaced(demo(1), "Schema: BT V1.0.0", "Schema: 2019-04-08")
    assert codec.parse_document(text).model.schema == "2019-04-08"


# ---- rejections: malformed and hostile input ----------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Domains:\n  demo:\n    Name: [demo\n", "malformed YAML at line 4, column 1: expected ',' or ']'"),
        ("Name: demo\nComponents:\n  a: b: c\n", "malformed YAML at line 3, column 7: mapping values are not allowed here"),
        ("Name: x\n\tComponents: {}\n", "malformed YAML at line 2, column 1: found character '\\t'"),
        ("Name: a\n---\nName: b\n", "malformed YAML at line 2, column 1: but found another document"),
        ("Name: d\x07\n", "malformed YAML at line 1, column 8: special characters are not allowed"),
    ],
)
def test_malformed_yaml_names_line_and_column(text: str, expected: str) -> None:
    assert rejected(text, "d").startswith(expected)


def test_malformed_demo_file_names_the_line() -> None:
    lines = demo(2).splitlines(keepends=True)
    assert lines[298] == "                Size: 3\n"
    lines[298] = "                Size: 3: 4\n"  # line 299
    assert rejected("".join(lines)) == "malformed YAML at line 299, column 24: mapping values are not allowed here"


@pytest.mark.parametrize("text", ["", "   \n", "# only a comment\n", "{}\n", "---\n"])
def test_empty_document_is_rejected(text: str) -> None:
    assert rejected(text, "d").startswith("document: empty")


def test_document_that_is_not_a_mapping() -> None:
    assert rejected("- Name: demo\n") == "document: expected a mapping at the top level, got a list"
    assert rejected("just text\n").startswith("document: expected a mapping at the top level, got string")


def test_document_of_unknown_kind() -> None:
    assert "cannot tell what it holds (top-level keys Colour)" in rejected("Colour: red\n")


def test_oversized_document_is_rejected() -> None:
    big = "Name: x\n#" + "x" * codec.MAX_DOCUMENT_BYTES
    assert "larger than the limit" in rejected(big)
    assert "larger than the limit" in rejected(big.encode("utf-8"))
    # Multi-byte characters count as bytes: fewer characters than the limit, more bytes.
    wide = "Name: x\n#" + "é" * (codec.MAX_DOCUMENT_BYTES // 2)
    assert len(wide) < codec.MAX_DOCUMENT_BYTES
    assert "larger than the limit" in rejected(wide)


def test_non_utf8_bytes_are_rejected() -> None:
    assert rejected(b"Name: \xff\xfe\n") == "document: not valid UTF-8 (byte 6)"


def test_nesting_is_bounded() -> None:
    assert load_yaml("[" * MAX_DEPTH + "]" * MAX_DEPTH) is not None
    too_deep = "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1)
    assert f"line 1, column {MAX_DEPTH + 1}: nesting deeper than {MAX_DEPTH} levels" in rejected(too_deep)
    # Far deeper than the Python stack: still our error, not a RecursionError.
    assert "nesting deeper" in rejected("Name: x\nComponents: " + "[" * 200_000 + "]" * 200_000)
    block = "".join(" " * i + f"k{i}:\n" for i in range(100))
    assert rejected(block) == f"YAML at line {MAX_DEPTH}, column {MAX_DEPTH}: nesting deeper than {MAX_DEPTH} levels"


def test_aliases_are_rejected() -> None:
    bomb = 'a: &a ["x","x"]\nb: &b [*a,*a]\nc: &c [*b,*b]\nName: x\n'
    assert rejected(bomb) == "YAML at line 2, column 8: aliases are not allowed (*a)"


def test_merge_keys_and_duplicate_keys_are_rejected() -> None:
    assert rejected("Name: x\n<<: {a: 1}\n") == "YAML at line 2, column 1: merge keys (<<) are not allowed"
    twice = replaced(demo(1), "      network - V1.0.0:", "      tenant - V1.0.0:")
    assert rejected(twice).startswith("YAML at line 122, column 7: duplicate key 'tenant - V1.0.0'")


# ---- rejections: structure, types and values -------------------------------------

ARCH = "Architectures/app - V0.0.0/Elements/app/Clusters/V1.0.0"


def domain_doc(n: int) -> str:
    """The demo's domain as a domain document, so that paths start at the domain."""
    return codec.dump_domain(codec.parse_document(demo(n)).model.domains[0])


def test_unknown_state_message_names_the_path() -> None:
    text = replaced(domain_doc(2), "State: active", "State: running")
    assert rejected(text) == f"{ARCH}/State: unknown state 'running' (expected initial, inactive, active, failure)"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Name: d\nComponents: many\n", "Components: expected a mapping, got string 'many'"),
        ("Schema: x\nDomains: [demo]\n", "Domains: expected a mapping, got a list"),
        ("Name: d\nComponents:\n  a - V1: 5\n", "Components/a - V1: expected a mapping, got int 5"),
        ("Name: d\nArchitectures:\n  a - V1:\n    Architecture: a\n    Version: V1\n    Elements: [a]\n",
         "Architectures/a - V1/Elements: expected a mapping, got a list"),
        ("Domains:\n  d:\n    Name: d\n    Tasks:\n      t1: [x]\n", "Domains/d/Tasks/t1: expected a mapping, got a list"),
    ],
)
def test_non_mapping_where_a_mapping_is_expected(text: str, expected: str) -> None:
    assert rejected(text) == expected


@pytest.mark.parametrize(
    ("n", "old", "new", "expected"),
    [
        (2, "                Min: 3", "                Min: \"3\"", f"Domains/demo/{ARCH}/Min: expected an integer, got string '3'"),
        (2, "                Max: 3", "                Max: 3.5", f"Domains/demo/{ARCH}/Max: expected an integer, got float 3.5"),
        (2, "                Size: 3", "                Size: yes", f"Domains/demo/{ARCH}/Size: expected an integer, got boolean True"),
        (2, "                Size: 3", "                Size: 2147483648", f"Domains/demo/{ARCH}/Size: 2147483648 is out of range for int32"),
        (1, "        Version: V1.0.0", "        Version: 1.0", "Domains/demo/Components/application - V1.0.0/Version: expected a string, got float 1.0 (quote it)"),
        (1, "    Name: demo", "    Name: [demo]", "Domains/demo/Name: expected a string, got a list"),
        (1, "        Controller: \"Internal:V1.0.0\"\n", "        Controller: \"Internal:V1.0.0\"\n        Colour: red\n",
         "Domains/demo/Components/application - V1.0.0/Colour: unknown key (expected Component, Version, Controller"),
        (1, "Schema: BT V1.0.0\n", "Schema: BT V1.0.0\nSchemas: x\n", "Schemas: unknown key (expected Schema, Name, Domains)"),
        (1, "            Type: context", "            Type: runtime", "Domains/demo/Components/application - V1.0.0/Dependencies/server/Type: unknown dependency type 'runtime' (expected context, service)"),
        (1, "        Status: active", "        Status: up", "Domains/demo/Controllers/Internal:V1.0.0/Status: unknown state 'up'"),
        (2, "    Components:\n", "    Components:\n      7: {}\n", "Domains/demo/Components/7: keys must be strings, got int 7 (quote it)"),
    ],
)
def test_wrong_type_or_value_names_the_path(n: int, old: str, new: str, expected: str) -> None:
    assert rejected(replaced(demo(n), old, new)).startswith(expected)


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("        Type: Cluster", "        Type: cluster", "/Type: unknown task type 'cluster' (expected Solution, Element, Cluster, Instance, Parallel, Sequential)"),
        ("        Status: completed", "        Status: done", "/Status: unknown task status 'done' (expected initial, executing, completed, failed, timeout, terminated)"),
        ("        Type: execution", "        Type: started", "/Type: unknown event type 'started' (expected execution, completion, failure, timeout, termination, drift, degraded, progress)"),
        ("        Phase: 0", "        Phase: -2147483649", "/Phase: -2147483649 is out of range for int32"),
        ("        Time: 1554733409142899536", "        Time: 9223372036854775808", "/Time: 9223372036854775808 is out of range for int64"),
        ("        Time: 1554733409142899536", "        Time: \"1554733409142899536\"", "/Time: expected an integer, got string"),
        ("        Subtasks:\n        - b51e", "        Subtasks: b51e\n        X:\n        - b51e", "/Subtasks: expected a list of strings, got string 'b51e'"),
        ("        Subtasks:\n        - b51e2ac5-5bf0-44c3-96cc-41de7dbdc7ff", "        Subtasks:\n        - 12", "/Subtasks[0]: expected a string, got int 12"),
        ("        Status: completed", "        Status: completed\n        Transition: jump", "/Transition: unknown transition 'jump'"),
        ("            Target: active", "            Target: up", "Solutions/app/Elements/app/Target: unknown state 'up'"),
    ],
)
def test_wrong_record_values_name_the_path(old: str, new: str, expected: str) -> None:
    message = rejected(replaced(demo(3), old, new))
    assert message.startswith("Domains/demo/") and expected in message


@pytest.mark.parametrize(
    ("n", "old", "new", "expected"),
    [
        (1, "  demo:\n", "  prod:\n", "Domains/prod: key must equal <Name> ('demo')"),
        (1, "      network - V1.0.0:", "      network - V2:", "Domains/demo/Components/network - V2: key must equal <Component> - <Version> ('network - V1.0.0')"),
        (1, "          service:", "          svc:", "Domains/demo/Components/application - V1.0.0/Dependencies/svc: key must equal <Dependency> ('service')"),
        (2, "      app - V0.0.0:", "      app - V1:", "Domains/demo/Architectures/app - V1: key must equal <Architecture> - <Version> ('app - V0.0.0')"),
        (2, "          app-server:", "          appserver:", "Domains/demo/Architectures/app - V0.0.0/Elements/appserver: key must equal <Element> ('app-server')"),
        (2, "              V1.0.0:", "              V1.0.1:", f"Domains/demo/{ARCH[:-6]}V1.0.1: key must equal <Version> ('V1.0.0')"),
        (2, "                  db:", "                  database:", f"Domains/demo/{ARCH}/Relationships/database: key must equal <Relationship> ('db')"),
        (2, '      "Internal:V1.0.0":', '      "Internal:V2":', "Domains/demo/Controllers/Internal:V2: key must equal <Controller>:<Version> or <Controller> ('Internal:V1.0.0')"),
        (3, "      app:\n        Solution: app", "      ap:\n        Solution: app", "Domains/demo/Solutions/ap: key must equal <Solution> ('app')"),
        (3, "                  20957de0-194e-4f25-ba32-142e9e050280:", "                  20957de0:", "/Instances/20957de0: key must equal <UUID> ('20957de0-194e-4f25-ba32-142e9e050280')"),
        (3, "      0f7bec76-3252-41b0-a7c9-82b75abba9de:", "      0f7bec76:", "Domains/demo/Tasks/0f7bec76: key must equal <UUID> ('0f7bec76-3252-41b0-a7c9-82b75abba9de')"),
        (3, "      02ed6397-c8fc-4334-983f-f40dd87475cf:", "      02ed6397:", "Domains/demo/Events/02ed6397: key must equal <UUID> ('02ed6397-c8fc-4334-983f-f40dd87475cf')"),
    ],
)
def test_map_key_must_match_its_entry(n: int, old: str, new: str, expected: str) -> None:
    message = rejected(replaced(demo(n), old, new))
    assert expected in message
    assert message.startswith("Domains/")


def test_run_time_fields_of_a_solution_round_trip_and_are_left_out_when_unset() -> None:
    solution = pb.Solution(name="s", architecture="s", version="V1")
    element = solution.elements.add(name="web", component="web")
    cluster = element.clusters.add(version="V1", controller="sim:V1", parameters={"tier": "gold", "orch_max_attempts": "2"})
    cluster.instances.add(uuid="u1", state=pb.STATE_FAILURE, error="boom", permanent=True)
    solution.hold.CopyFrom(pb.SolutionHold(kind=pb.HOLD_KIND_DEGRADED, reason="gave up", actor="monitor", since_unix_ms=5))
    document = codec.to_document(solution)
    assert document["Hold"] == {"Kind": "degraded", "Reason": "gave up", "Actor": "monitor", "Since": 5}
    assert document["Elements"]["web"]["Clusters"]["V1"]["Parameters"] == {"orch_max_attempts": "2", "tier": "gold"}
    parsed = codec.parse_document(codec.dump_domain(pb.Domain(name="d", solutions=[solution]))).model.domains[0]
    assert parsed.solutions[0] == solution
    plain = pb.Solution(name="t")
    plain.elements.add(name="e").clusters.add(version="V1").instances.add(uuid="u2")
    shown = codec.to_document(plain)
    assert "Hold" not in shown
    assert not {"Controller", "Parameters"} & shown["Elements"]["e"]["Clusters"]["V1"].keys()
    assert "Permanent" not in shown["Elements"]["e"]["Clusters"]["V1"]["Instances"]["u2"]


@pytest.mark.parametrize(("value", "expected"), [
    ("[a, b]", "expected a map of strings, got a list"),
    ("{a: 1}", "Parameters/a: expected a string, got int 1"),
])
def test_cluster_parameters_must_map_strings_to_strings(value: str, expected: str) -> None:
    text = f"""Name: d
Solutions:
  s:
    Solution: s
    Elements:
      e:
        Element: e
        Clusters:
          V1:
            Version: V1
            Parameters: {value}
"""
    with pytest.raises(InvalidArgument, match=expected):
        codec.parse_document(text)
