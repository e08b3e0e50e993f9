"""`make soak`: deploy and delete a 1,000-instance solution again and again on
a fresh `orch up`, and show that storage is held by the retention settings and
that no service grows: NATS data on disk and every service's resident memory
are printed every 10 cycles, and the growth from cycle 20 to the last.

The store is bounded by size, not by age: history is kept for 30 days (as
in a real suite) and the buckets that grow with history get small caps
(`--cap-mb`, default 16 MB each for the tasks bucket, the events stream and
the solutions bucket), which the run must hold on disk while nothing a live
solution needs is lost. `--history-days 0.0002` (17 s) shows retention by age
instead.

    python bench/soak.py [--cycles 60] [--size 1000] [--cap-mb 16] [--history-days 30]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from models import flat  # noqa: E402
from suite import Suite, running_suite  # noqa: E402

from orchestration.store.streams import CAPS  # noqa: E402

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_mb(pid: int) -> float:
    """Resident memory now (not the peak)."""
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE / 2**20


def disk_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def cycle(suite: Suite) -> float:
    """Deploy and delete the solution once; seconds taken."""
    started = time.monotonic()
    suite.ok("solution", "deploy", "soak", "app", "V1", "--solution", "app", "--wait", timeout=300)
    suite.ok("solution", "delete", "soak", "app", "--wait", timeout=300)
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cycles", type=int, default=60)
    parser.add_argument("--size", type=int, default=1000)
    parser.add_argument("--cap-mb", type=int, default=16)
    parser.add_argument("--history-days", type=float, default=30)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="orch-soak-"))
    capped = {f"ORCH_{name}_MAX_MB": str(args.cap_mb) for name in ("TASKS", "EVENTS", "SOLUTIONS")}
    env = {"ORCH_HISTORY_DAYS": str(args.history_days), **capped}
    caps_mb = sum(int(capped.get(setting, default)) for setting, default in CAPS.values())
    rows = []
    # The monitor at its default interval: it keeps the tasks bucket below its cap.
    with running_suite(home, "--monitor-interval", "5", env=env) as suite:
        per = min(args.size, 100)
        suite.apply(flat("soak", per, parameters={"orch_siblings": "ignore"}, elements=max(1, args.size // per)))
        services = suite.services()
        print(f"soak: {args.cycles} cycles of deploy + delete of {args.size} instances, history {args.history_days} days, "
              f"caps {' '.join(f'{k}={v}' for k, v in capped.items())} (every cap: {caps_mb} MB)")
        for n in range(1, args.cycles + 1):
            took = cycle(suite)
            if n % 10 == 0 or n == 1:
                row = {"cycle": n, "seconds": round(took, 2), "nats_data_mb": round(disk_mb(home / "nats"), 1),
                       **{f"{name}_mb": round(rss_mb(pid), 1) for name, pid in sorted(services.items())}}
                rows.append(row)
                print("  " + "  ".join(f"{k} {v}" for k, v in row.items()), flush=True)
    print(f"NATS data at most {max(r['nats_data_mb'] for r in rows):.1f} MB on disk (every cap: {caps_mb} MB)")
    first = next((r for r in rows if r["cycle"] >= 20), rows[0])
    last = rows[-1]
    print(f"from cycle {first['cycle']} to {last['cycle']}:")
    for key in first:
        if key.endswith("_mb"):
            growth = (last[key] - first[key]) / first[key] * 100 if first[key] else 0.0
            print(f"  {key[:-3]:12} {first[key]:7.1f} -> {last[key]:7.1f} MB ({growth:+.0f} %)")
    (ROOT / "bench" / "soak.json").write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
