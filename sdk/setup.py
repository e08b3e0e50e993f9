"""The SDK's build: its contracts are compiled (build_contracts.py) before the package is built, in every kind of build."""

from __future__ import annotations

import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.sdist import sdist

sys.path.insert(0, str(Path(__file__).resolve().parent))
from build_contracts import generate  # noqa: E402


class BuildWithContracts(build_py):
    def run(self) -> None:
        generate()
        super().run()


class SdistWithContracts(sdist):
    """A source distribution carries the generated modules (and no protos)."""

    def run(self) -> None:
        generate()
        super().run()


setup(cmdclass={"build_py": BuildWithContracts, "sdist": SdistWithContracts})
