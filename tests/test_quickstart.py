"""The README's quick start runs as shown: every `$ ` command of it, in one
shell, against a fresh suite; each exits as the README says (the last one
reports the solution removed), and the tables it shows (the solution's
status at each step) are the ones printed."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from suite import BIN, Suite, running_suite

README = Path(__file__).resolve().parent.parent / "README.md"
MARK = "@@@"


def quick_start() -> list[tuple[str, list[str]]]:
    """(command, the output lines shown under it) of the README's quick start."""
    text = README.read_text()
    section = text[text.index("## Quick start"):]
    opened = section.index("```console\n") + len("```console\n")
    block = section[opened:section.index("\n```", opened)]
    steps: list[tuple[str, list[str]]] = []
    for line in block.splitlines():
        if line.startswith("$ "):
            steps.append((line[2:], []))
        else:
            steps[-1][1].append(line)
    return steps


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Suite]:
    with running_suite(tmp_path_factory.mktemp("quickstart")) as running:
        yield running


def _table(lines: list[str]) -> list[str]:
    """The rows of a status table (no time stamps or task ids in them)."""
    return [line for line in lines if re.match(r"^(ELEMENT|db|web|\(solution\)) ", line)]


def test_the_quick_start_runs_as_the_readme_shows_it(suite: Suite) -> None:
    steps = quick_start()
    assert [c.split()[:3] for c, _ in steps if c.startswith("orch")][:2] == [["orch", "apply", "-f"], ["orch", "solution", "deploy"]]
    script = ["cd " + str(README.parent)]
    for i, (command, _) in enumerate(steps):
        script += [f"echo '{MARK} {i}'", command + " 2>&1", f"echo '{MARK} rc' $?"]
    env = {**os.environ, "ORCH_HOME": str(suite.home), "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    env.pop("ORCH_TOKEN", None)
    done = subprocess.run(["bash", "-c", "\n".join(script)], env=env, capture_output=True, text=True, timeout=300)
    outputs: dict[int, list[str]] = {}
    codes: dict[int, int] = {}
    current = -1
    for line in done.stdout.splitlines():
        if line.startswith(f"{MARK} rc "):
            codes[current] = int(line.split()[-1])
        elif line.startswith(MARK):
            current = int(line.split()[-1])
            outputs[current] = []
        else:
            outputs[current].append(line)
    assert len(codes) == len(steps), done.stdout[-3000:] + done.stderr[-2000:]
    for i, (command, shown) in enumerate(steps):
        fails = bool(shown) and shown[0].startswith("error:")
        assert (codes[i] != 0) == fails, f"$ {command} exited {codes[i]}:\n" + "\n".join(outputs[i])
        if command.startswith("orch solution status"):
            assert _table(outputs[i]) == _table(shown), f"$ {command}:\n" + "\n".join(outputs[i])
        if shown and shown[0].startswith("error:"):
            assert re.sub(r" at [^(]+\(task [^)]+\)", "", outputs[i][0]) == re.sub(r" at [^(]+\(task [^)]+\)", "", shown[0])
        if command.startswith("orch solution plan"):
            assert len(outputs[i]) == len(shown), "\n".join(outputs[i])


USER_GUIDE = README.parent / "docs" / "user.md"


def shell_blocks(path: Path) -> list[str]:
    """The commands of every ```sh block of a page, continuation lines joined."""
    commands: list[str] = []
    inside = False
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            inside = line.strip() in ("```sh", "```bash") and not inside
            continue
        if inside and line.strip() and not line.lstrip().startswith("#"):
            if commands and commands[-1].endswith("\\"):
                commands[-1] = commands[-1][:-1] + " " + line.strip()
            else:
                commands.append(line.strip())
    return commands


def test_every_shell_command_of_the_user_guide_runs(suite: Suite) -> None:
    commands = shell_blocks(USER_GUIDE)
    assert commands, "the user guide shows shell commands"
    env = {**os.environ, "ORCH_HOME": str(suite.home), "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    env.pop("ORCH_TOKEN", None)
    for command in commands:
        # The guide speaks of the default suite: its gateway address and its home.
        concrete = command.replace("127.0.0.1:50051", suite.gateway).replace(".orch/token", str(suite.home / "token"))
        done = subprocess.run(["bash", "-c", concrete], env=env, cwd=README.parent, capture_output=True, text=True,
                              timeout=120)
        # A command shown failing says so ("# exits 1", as an upgrade that rolls back).
        expected = int(command.rsplit("# exits ", 1)[1]) if "# exits " in command else 0
        assert done.returncode == expected, f"$ {command}\n{done.stdout[-1000:]}{done.stderr[-1000:]}"
