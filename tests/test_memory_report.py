"""ORCH_TRACEMALLOC: a service writes its largest live allocations by line
when asked (SIGUSR2) and when it exits; without it nothing is traced."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SCRIPT = """
import os, pathlib, signal, tracemalloc
from orchestration_sdk.runtime.process import memory_report
memory_report("probe")
held = [bytes(1000) for _ in range(2000)]  # about 2 MB, allocated on one line
if os.environ.get("ORCH_TRACEMALLOC"):
    os.kill(os.getpid(), signal.SIGUSR2)
    print(len(list(pathlib.Path(os.environ["ORCH_TRACEMALLOC"]).glob("probe-*.txt"))))
print(tracemalloc.is_tracing())
"""


def run(directory: Path | None) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k != "ORCH_TRACEMALLOC"}
    if directory is not None:
        env["ORCH_TRACEMALLOC"] = str(directory)
    done = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=60, check=True)
    return done.stdout.split()


def test_a_service_writes_its_largest_allocations_on_sigusr2_and_at_exit(tmp_path: Path) -> None:
    assert run(tmp_path) == ["1", "True"]  # written on the signal, before the exit
    [report] = tmp_path.glob("probe-*.txt")
    lines = report.read_text().splitlines()
    assert lines[0].startswith("traced ") and "peak" in lines[0]
    assert "<string>:5: size=" in "\n".join(lines[1:5])  # the 2 MB line is among the largest


def test_without_the_setting_nothing_is_traced() -> None:
    assert run(None) == ["False"]
