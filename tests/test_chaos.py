"""A minute of chaos in `make test` (bench/chaos.py; `make chaos` runs ten):
operator loops while every process is SIGKILLed or SIGSTOPped at random.
Nothing may be lost, run twice, brought back after its removal, or left
unfinished 60 s after the last fault."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import chaos  # noqa: E402

pytestmark = pytest.mark.faults


def test_a_minute_of_random_faults_loses_nothing(tmp_path: Path) -> None:
    seed = int(os.environ.get("ORCH_CHAOS_SEED", "28"))
    report = chaos.run(tmp_path, 60, seed, loops=4, size=20, log=lambda line: None)
    summary = report.summary()
    # Every 2-6 s a fault, a SIGSTOP lasting 13 s of it: five at least in a minute, of several kinds.
    assert sum(report.faults.values()) >= 5 and len(report.faults) >= 3, summary
    assert len(report.requests) >= 20, summary
    assert not report.problems, f"replay with ORCH_CHAOS_SEED={seed}: {json.dumps(summary, indent=2)}"
