"""`--wait` reads a change's progress every 0.5 s, less often when a read
takes long (a large solution's), so that following a change does not slow
it: the reads take at most a tenth of the time."""

from __future__ import annotations

import pytest

from cli.engine_commands import READ_SHARE, next_read

pytestmark = pytest.mark.unit


def test_progress_is_read_every_interval_while_reads_are_quick() -> None:
    assert next_read(0.5, 0.0) == 0.5
    assert next_read(0.5, 0.03) == 0.5  # 1,000 instances


def test_a_slow_read_is_followed_by_a_longer_wait() -> None:
    took = 0.28  # 10,000 instances
    assert next_read(0.5, took) == pytest.approx(2.8)
    assert took / (took + next_read(0.5, took)) <= READ_SHARE
