"""Compile the contracts the SDK ships into ``orchestration_sdk/v1``.

The SDK carries three of the engine's contracts: ``model.proto`` (states,
transitions, the information model), ``controller.proto`` (the service every
controller serves) and ``dispatcher.proto`` (registration). protoc writes
their messages, type stubs and gRPC stubs; the imports it generates
(``from orchestration.v1 import model_pb2``) are pointed at this package, so
that the SDK imports nothing of the engine. The proto file names stay
``orchestration/v1/*.proto``: the protobuf descriptor pool knows a file by
that name, and the engine's own contracts, which import ``model.proto``,
build on these modules (the engine's ``orchestration.v1.model_pb2`` and its
two siblings re-export them).

Run by the SDK's build (``setup.py``, so ``pip install sdk/`` compiles them)
and by ``make setup``. From a source distribution, which carries the
generated modules and no protos, it keeps what is there.

    python sdk/build_contracts.py
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROTO_ROOT = HERE.parent / "proto"
TARGET = HERE / "src" / "orchestration_sdk" / "v1"
PROTOS = ("model", "controller", "dispatcher")
# What protoc writes for each proto: messages, type stubs, gRPC stubs (none for model.proto, which has no service).
SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")
GENERATED_IMPORT = re.compile(r"^from orchestration\.v1 import ", re.MULTILINE)
SDK_IMPORT = "from orchestration_sdk.v1 import "


def generated_names() -> list[str]:
    """File names of the generated modules (relative to orchestration_sdk/v1)."""
    return [f"{proto}{suffix}" for proto in PROTOS for suffix in SUFFIXES if not (proto == "model" and suffix == "_pb2_grpc.py")]


def rewrite(text: str) -> str:
    """Generated code with its imports of sibling contracts pointed at the SDK's package."""
    text = GENERATED_IMPORT.sub(SDK_IMPORT, text)
    if re.search(r"^\s*(from|import) orchestration(\.|\s)", text, re.MULTILINE):
        raise RuntimeError("generated code imports the engine's orchestration package in a form this build does not rewrite")
    return text


def compile_protos(proto_root: Path, out: Path) -> None:
    """Run protoc (from grpcio-tools) on the SDK's protos, writing under `out`."""
    from importlib import resources

    from grpc_tools import protoc

    include = resources.files("grpc_tools") / "_proto"
    files = [str(proto_root / "orchestration" / "v1" / f"{proto}.proto") for proto in PROTOS]
    args = ["protoc", f"-I{proto_root}", f"-I{include}", f"--python_out={out}", f"--pyi_out={out}",
            f"--grpc_python_out={out}", *files]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed on {', '.join(files)}")


def write_if_changed(path: Path, text: str) -> None:
    """Replace a file atomically, and only when its text changes (a process importing it never reads half a file)."""
    if path.exists() and path.read_text() == text:
        return
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def generate(proto_root: Path = PROTO_ROOT, target: Path = TARGET) -> list[Path]:
    """Compile the protos into `target`; returns the files there. Without the
    protos (a source distribution), the modules already generated are kept."""
    names = generated_names()
    if not (proto_root / "orchestration" / "v1" / "model.proto").exists():
        missing = [name for name in names if not (target / name).exists()]
        if missing:
            raise RuntimeError(f"no contracts to build from: {proto_root} has no orchestration/v1/*.proto "
                               f"and {target} lacks {', '.join(missing)}")
        return [target / name for name in names]
    with tempfile.TemporaryDirectory() as tmp:
        compile_protos(proto_root, Path(tmp))
        produced = Path(tmp) / "orchestration" / "v1"
        for name in names:
            write_if_changed(target / name, rewrite((produced / name).read_text()))
    return [target / name for name in names]


if __name__ == "__main__":
    generate()
