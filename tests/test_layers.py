"""The layers hold: the controller SDK (sdk/) imports nothing of the engine,
the model is pure, controllers import only the SDK and the contracts,
services never import each other."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

SERVICES = Path(__file__).resolve().parent.parent / "services"
SDK = Path(__file__).resolve().parent.parent / "sdk" / "src" / "orchestration_sdk"
SERVICE_PACKAGES = ("gateway", "dispatcher", "controllers", "monitor", "cli")
# What the SDK must never import: the engine's packages, and NATS (controllers do not use it).
ENGINE_PACKAGES = frozenset({"orchestration", *SERVICE_PACKAGES, "nats"})

# Importing the model package with NATS and gRPC made unimportable: a module of
# the model that imports either (or the store, or the runtime) fails here.
_PURE_IMPORT = """
import importlib, pkgutil, sys

class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"nats", "grpc"} or name.startswith(("orchestration.store", "orchestration.runtime", "orchestration_sdk.runtime")):
            raise ImportError(f"the model must not import {name}")
        return None

sys.meta_path.insert(0, Refuse())
import orchestration.model as model
for info in pkgutil.iter_modules(model.__path__):
    importlib.import_module(f"orchestration.model.{info.name}")
print(sorted(m for m in sys.modules if m.split(".")[0] in {"nats", "grpc"}))
"""


def test_the_model_imports_neither_nats_nor_grpc_nor_the_store() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _PURE_IMPORT], cwd=SERVICES, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def _imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def test_services_never_import_each_other_and_the_core_imports_no_service() -> None:
    offenders = []
    for package in (*SERVICE_PACKAGES, "orchestration"):
        for path in (SERVICES / package).rglob("*.py"):
            if "v1" in path.relative_to(SERVICES).parts:
                continue
            others = _imported_packages(path) & (set(SERVICE_PACKAGES) - {package})
            if others:
                offenders.append(f"{path.relative_to(SERVICES)} imports {sorted(others)}")
    assert offenders == []


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def test_running_a_solution_never_reaches_into_who_owns_it() -> None:
    """dispatcher.run (a solution's run) imports nothing of dispatcher.ownership
    (intake, leases, recovery, registration): ownership starts runs and tells
    them when they lost their lease, never the other way round."""
    offenders = [f"{path.relative_to(SERVICES)} imports {sorted(m for m in _imported_modules(path) if m.startswith('dispatcher.ownership'))}"
                 for path in (SERVICES / "dispatcher" / "run").rglob("*.py")
                 if any(m.startswith("dispatcher.ownership") for m in _imported_modules(path))]
    assert offenders == []
    assert (SERVICES / "dispatcher" / "ownership" / "replica.py").exists()


def test_the_sdk_imports_nothing_of_the_engine() -> None:
    """Every module of the SDK, the generated contracts included: no import
    of the engine's packages or of nats, not even inside a function."""
    sources = sorted(SDK.rglob("*.py"))
    assert {"__init__.py", "runner.py", "grpcserver.py", "status_errors.py", "lifecycle.py", "model_pb2.py",
            "controller_pb2_grpc.py"} <= {path.name for path in sources}
    offenders = [f"{path.relative_to(SDK.parent)} imports {sorted(found)}"
                 for path in sources if (found := _imported_packages(path) & ENGINE_PACKAGES)]
    assert offenders == []
    relative = [str(path.relative_to(SDK.parent)) for path in sources
                if any(isinstance(node, ast.ImportFrom) and node.level for node in ast.walk(ast.parse(path.read_text())))]
    assert relative == [], "absolute imports only: the scan above reads them"


# Importing every module of the SDK with the engine and nats made unimportable
# (the SDK's package on the path, the engine's packages refused by name).
_SDK_ALONE = """
import importlib, pkgutil, sys

ENGINE = {"orchestration", "gateway", "dispatcher", "controllers", "monitor", "cli", "nats"}

class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ENGINE:
            raise ImportError(f"the SDK must not import {name}")
        return None

sys.meta_path.insert(0, Refuse())
import orchestration_sdk
names = [info.name for info in pkgutil.walk_packages(orchestration_sdk.__path__, "orchestration_sdk.")]
for name in names:
    importlib.import_module(name)
for name in orchestration_sdk.__all__:
    getattr(orchestration_sdk, name)
print(len(names), sorted({m.split(".")[0] for m in sys.modules} & ENGINE))
"""


def test_every_module_of_the_sdk_imports_with_the_engine_unimportable() -> None:
    done = subprocess.run([sys.executable, "-c", _SDK_ALONE], cwd=SDK.parent, capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    count, engine = done.stdout.split(" ", 1)
    assert int(count) >= 20 and engine.strip() == "[]"


def test_controllers_import_only_the_sdk_and_the_contracts() -> None:
    """The sim and process controllers are built on the SDK alone: of the
    engine's core they may import the generated contracts, nothing else."""
    offenders = []
    for path in (SERVICES / "controllers").rglob("*.py"):
        core = sorted(m for m in _imported_modules(path)
                      if m.split(".")[0] == "orchestration" and not m.startswith("orchestration.v1"))
        if core:
            offenders.append(f"{path.relative_to(SERVICES)} imports {core}")
    assert offenders == []
