"""The contracts the controller SDK ships: compiled by its own build step
(sdk/build_contracts.py) with imports pointed at the SDK, and one set of
message classes in a process that loads the engine's contracts too."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parent.parent


def _build_contracts() -> ModuleType:
    spec = importlib.util.spec_from_file_location("build_contracts", REPO / "sdk" / "build_contracts.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_imports_are_pointed_at_the_sdk() -> None:
    build = _build_contracts()
    text = "from orchestration.v1 import model_pb2 as orchestration_dot_v1_dot_model__pb2\nx = 1\n"
    assert build.rewrite(text) == "from orchestration_sdk.v1 import model_pb2 as orchestration_dot_v1_dot_model__pb2\nx = 1\n"
    # Any other form of an import of the engine's package stops the build rather than slipping through.
    for form in ("import orchestration.v1.model_pb2\n", "from orchestration.model import lifecycle\n"):
        with pytest.raises(RuntimeError, match="engine"):
            build.rewrite(form)


def test_the_build_step_compiles_the_three_contracts_and_rewrites_only_what_changed(tmp_path: Path) -> None:
    build = _build_contracts()
    written = build.generate(target=tmp_path)
    assert sorted(p.name for p in written) == sorted(
        ["model_pb2.py", "model_pb2.pyi", "controller_pb2.py", "controller_pb2.pyi", "controller_pb2_grpc.py",
         "dispatcher_pb2.py", "dispatcher_pb2.pyi", "dispatcher_pb2_grpc.py"])
    for path in written:
        text = path.read_text()
        assert "orchestration.v1 import" not in text, path.name
    assert "from orchestration_sdk.v1 import model_pb2" in (tmp_path / "controller_pb2.py").read_text()
    assert "from orchestration_sdk.v1 import controller_pb2" in (tmp_path / "controller_pb2_grpc.py").read_text()
    # Identical to what the SDK's build put into the package.
    for path in written:
        assert path.read_text() == (REPO / "sdk" / "src" / "orchestration_sdk" / "v1" / path.name).read_text(), path.name
    # A second run writes nothing (a process importing the modules meanwhile never sees a file being rewritten).
    for path in written:
        os.utime(path, ns=(1, 1))
    build.generate(target=tmp_path)
    assert {path.stat().st_mtime_ns for path in written} == {1}


def test_without_protos_a_source_distribution_keeps_its_generated_modules(tmp_path: Path) -> None:
    build = _build_contracts()
    with pytest.raises(RuntimeError, match="no contracts to build from"):
        build.generate(proto_root=tmp_path / "nothing", target=tmp_path)
    build.generate(target=tmp_path)
    assert len(build.generate(proto_root=tmp_path / "nothing", target=tmp_path)) == 8


def test_engine_and_sdk_contracts_are_one_set_of_classes() -> None:
    from google.protobuf import descriptor_pool

    from orchestration.v1 import controller_pb2, controller_pb2_grpc, dispatcher_pb2, gateway_pb2, model_pb2
    from orchestration_sdk.v1 import controller_pb2 as sdk_controller_pb2
    from orchestration_sdk.v1 import controller_pb2_grpc as sdk_controller_pb2_grpc
    from orchestration_sdk.v1 import dispatcher_pb2 as sdk_dispatcher_pb2
    from orchestration_sdk.v1 import model_pb2 as sdk_model_pb2

    assert model_pb2.Instance is sdk_model_pb2.Instance
    assert controller_pb2.Operation is sdk_controller_pb2.Operation
    assert dispatcher_pb2.RegisterControllerRequest is sdk_dispatcher_pb2.RegisterControllerRequest
    assert controller_pb2_grpc.ControllerServiceStub is sdk_controller_pb2_grpc.ControllerServiceStub
    # A message of the engine's own contracts holds the SDK's messages.
    solution = gateway_pb2.RetrieveSolutionResponse(solution=model_pb2.Solution(name="s")).solution
    assert isinstance(solution, sdk_model_pb2.Solution)
    parsed = sdk_model_pb2.Solution.FromString(model_pb2.Solution(name="s").SerializeToString())
    assert isinstance(parsed, model_pb2.Solution) and parsed.name == "s"
    assert model_pb2.State.STATE_ACTIVE == sdk_model_pb2.State.STATE_ACTIVE
    # The pool knows each file once, under the proto's own name.
    pool = descriptor_pool.Default()
    assert pool.FindFileByName("orchestration/v1/model.proto") is sdk_model_pb2.DESCRIPTOR
    assert pool.FindMessageTypeByName("orchestration.v1.Instance") is sdk_model_pb2.Instance.DESCRIPTOR
