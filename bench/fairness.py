"""`make bench-fairness`: one domain's storm against another domain's small deploy.

On a fresh `orch up` (default settings, the monitor polling every 5 s):

1. B alone: domain "beta" deploys `quick` (10 sim instances) on the idle suite.
2. The storm: domain "alpha" deploys `storm` (--storm instances, default 20,000);
   --delay s (default 1) after its request was accepted, "beta" deploys
   `quick2` (the same 10 instances under another name).
3. --terminate-after s (default 4) after the storm's request, its root task is
   terminated (`orch task terminate --wait`).

All components say `orch_siblings: ignore` and the sim answers at once.
Figures, from the sim's op log (`started` of every operation) and the
engine's completion events:

- B's first operation after: accepted request -> first operation the sim starts
  (and -> the first event of its root task: its run has begun);
- B's completion: accepted request -> completion event, alone and in the storm;
- the terminate's effect: request -> the last operation of the storm the sim
  starts (nothing of it starts later), and how long `--wait` took.

    python bench/fairness.py [--runs 3] [--storm 20000] [--small 10] [--delay 1] [--terminate-after 4] [-- orch up flags]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import nats
import nats.js.api

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from models import flat  # noqa: E402
from run import controllers_registered  # noqa: E402
from suite import Suite, running_suite  # noqa: E402

from orchestration.v1 import gateway_pb2 as gw  # noqa: E402

PARAMETERS: dict[str, object] = {"orch_siblings": "ignore"}


class Events:
    """Completion times (s) of root tasks, from the engine's events, read on a thread of its own."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.ended: dict[str, float] = {}
        self.first: dict[str, float] = {}  # the first event of each root task (its run has started)
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self._thread.start()
        self._ready.wait(10)

    async def _run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        nc = await nats.connect(self.url)

        async def on_event(msg) -> None:  # type: ignore[no-untyped-def]
            event = json.loads(msg.data)
            with self._lock:
                self.first.setdefault(event["task"], event["time"] / 1e9)
            if event["type"] in ("completion", "failure", "termination", "timeout"):
                with self._lock:
                    self.ended.setdefault(event["task"], event["time"] / 1e9 if event["type"] == "completion" else -1.0)

        subscription = await nc.jetstream().subscribe("orch.events.*.solution.>", cb=on_event, ordered_consumer=True,
                                                      deliver_policy=nats.js.api.DeliverPolicy.NEW)
        self._ready.set()
        await self._stop.wait()
        await subscription.unsubscribe()
        await nc.close()

    def wait(self, task: str, timeout: float) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if task in self.ended:
                    if self.ended[task] < 0:
                        raise SystemExit(f"task {task} did not complete")
                    return self.ended[task]
            time.sleep(0.01)
        raise SystemExit(f"task {task} did not end in {timeout:.0f}s")

    def close(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(5)


def deploy(suite: Suite, domain: str, architecture: str, solution: str) -> tuple[str, float]:
    request = gw.DeploySolutionRequest(domain=domain, architecture=architecture, version="V1", solution=solution)
    task = suite.solutions.DeploySolution(request, metadata=suite.metadata, timeout=60).task
    return task, time.time()


def ops_of(suite: Suite, solution: str, after: float = 0.0, settle: float = 0.0) -> list[dict]:
    """The sim's operations of a solution (waiting `settle` s for its op log to be written)."""
    time.sleep(settle)
    return [op for op in suite.ops(solution) if op["started"] >= after]


def one_run(storm: int, small: int, delay: float, terminate_after: float, flags: list[str]) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="orch-fair-") as home, \
            running_suite(Path(home), "--monitor-interval", "5", *flags) as suite:
        url = json.loads(suite.ok("info", "-o", "json", "--show-secrets"))["nats_url"]
        suite.apply(flat("alpha", 100, parameters=PARAMETERS, elements=max(1, storm // 100), architecture="storm"))
        suite.apply(flat("beta", small, parameters=PARAMETERS, architecture="quick"))
        asyncio.run(controllers_registered(url, 2))
        time.sleep(1.0)
        events = Events(url)
        try:
            # B alone.
            task, accepted = deploy(suite, "beta", "quick", "quick")
            alone_done = events.wait(task, 120)
            alone_ops = ops_of(suite, "quick", settle=0.3)
            alone_first = min(op["started"] for op in alone_ops) - accepted
            alone = alone_done - accepted
            # The storm, and B 1 s into it.
            storm_task, storm_accepted = deploy(suite, "alpha", "storm", "storm")
            time.sleep(max(0.0, storm_accepted + delay - time.time()))
            task, accepted = deploy(suite, "beta", "quick", "quick2")
            b_done = events.wait(task, 300)
            # Terminate the storm's root task while it runs.
            time.sleep(max(0.0, storm_accepted + terminate_after - time.time()))
            asked = time.time()
            result = suite.orch("task", "terminate", storm_task, "--domain", "alpha", "--wait", timeout=300)
            if result.returncode != 0:
                raise SystemExit(f"the storm was not terminated (a shorter --terminate-after?): {result.stderr}")
            returned = time.time()
            b_ops = ops_of(suite, "quick2", settle=1.0)
            storm_ops = suite.ops("storm")
        finally:
            events.close()
    first = min(op["started"] for op in b_ops) - accepted
    run_started = events.first.get(task, accepted) - accepted
    last_storm_start = max(op["started"] for op in storm_ops)
    storm_before_b = sum(1 for op in storm_ops if op["started"] < accepted)
    return {
        "b_alone_first_op_s": round(alone_first, 4),
        "b_alone_s": round(alone, 4),
        "b_first_event_s": round(run_started, 4),
        "b_first_op_s": round(first, 4),
        "b_s": round(b_done - accepted, 4),
        "b_ratio": round((b_done - accepted) / alone, 2),
        "terminate_effect_s": round(max(0.0, last_storm_start - asked), 4),
        "terminate_wait_s": round(returned - asked, 3),
        "storm_ops_before_b": storm_before_b,
        "storm_ops": len(storm_ops),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--storm", type=int, default=20000, help="instances of domain A's deploy")
    parser.add_argument("--small", type=int, default=10, help="instances of domain B's deploy")
    parser.add_argument("--delay", type=float, default=1.0, help="s from A's accepted request to B's")
    parser.add_argument("--terminate-after", type=float, default=4.0, help="s from A's request to its terminate")
    parser.add_argument("--output", default=str(ROOT / "bench" / "fairness.json"))
    parser.add_argument("flags", nargs="*", help="more `orch up` flags (after --)")
    args = parser.parse_args()
    runs = []
    for i in range(args.runs):
        figures = one_run(args.storm, args.small, args.delay, args.terminate_after, args.flags)
        runs.append(figures)
        print(f"run {i + 1}: " + ", ".join(f"{k} {v}" for k, v in figures.items()), flush=True)
    summary: dict[str, object] = {"runs": runs, "storm": args.storm, "small": args.small, "flags": args.flags}
    print(f"\nmedians of {len(runs)} runs (range):")
    for key in runs[0]:
        values = [r[key] for r in runs]
        summary[f"median_{key}"] = statistics.median(values)
        print(f"  {key}: {statistics.median(values)} ({min(values)} - {max(values)})")
    Path(args.output).write_text(json.dumps(summary, indent=2) + "\n")
    print(f"written to {args.output}")


if __name__ == "__main__":
    main()
