"""Weakness: `command: python` named the controller's own interpreter, which
often lives under a home directory (mode 0700) the instance's unprivileged
user cannot enter: the instance failed with a bare "Permission denied". A
program the instance's user cannot run is refused before it is started, with
the reason and what to do instead."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from controllers.process.confine import Identity, runnable
from orchestration_sdk import Permanent

NOBODY = Identity("nobody", 65534, 65534, switch=True)


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory every user may search (pytest's own temporary ones are closed)."""
    path = Path(tempfile.mkdtemp(dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def executable(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return path


def test_a_program_under_a_closed_directory_is_refused_with_the_reason(open_dir: Path) -> None:
    home = open_dir / "home"
    program = executable(home / "bin" / "python3")
    home.chmod(0o700)
    try:
        with pytest.raises(Permanent, match=re.escape(f"{home} is not searchable by it") + ".*/usr/bin/python3"):
            runnable(str(program), NOBODY)
    finally:
        home.chmod(0o755)


def test_a_program_not_executable_by_others_is_refused(open_dir: Path) -> None:
    program = executable(open_dir / "tool")
    program.chmod(0o700)
    with pytest.raises(Permanent, match="not executable by it"):
        runnable(str(program), NOBODY)


def test_an_open_program_and_one_run_as_the_controllers_own_user_pass(open_dir: Path) -> None:
    for parent in open_dir.parents:
        if not os.stat(parent).st_mode & 0o001:
            pytest.skip(f"{parent} is closed to other users on this machine")
    runnable(str(executable(open_dir / "tool")), NOBODY)
    runnable("/nonexistent/anything", Identity("me", os.getuid(), os.getgid(), switch=False))
