"""The core's layers hold: the model is pure, services never import each other."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

SERVICES = Path(__file__).resolve().parent.parent / "services"
SERVICE_PACKAGES = ("gateway", "dispatcher", "controllers", "monitor", "cli")

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
