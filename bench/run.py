"""`make bench`: deploy synthetic architectures on a fresh `orch up` (default
settings: every transition durable, events published, monitor running) and
print what it cost. Writes bench/results.json.

Every instance goes create, configure, start: the sim components declare
`orch_siblings: ignore` (they do not use member lists), except in the one
run that shows the cost of telling every member of its siblings (each gets a
reconfigure once the cluster is up).

    python bench/run.py [--sizes 100,1000,10000] [--shapes flat,chain,fanout] [--latency-run N] [--siblings-run N]
                        [--large 50000] [--cli 100,1000] [--repeat K]

The CLI section times whole commands from the shell with default settings
(the sim's default sibling handling): `orch --help`, `orch info`, `orch
domain list` and `orch solution deploy --wait` of flat solutions.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import statistics
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import nats

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from models import chain, fan_out, flat  # noqa: E402
from suite import Suite, running_suite  # noqa: E402

from orchestration.v1 import gateway_pb2 as gw  # noqa: E402

CLOCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def model(shape: str, n: int, parameters: dict[str, object] | None = None) -> str:
    """A domain named "bench" with one architecture app/V1 of n sim instances."""
    if shape == "flat":
        per = min(n, 100)
        return flat("bench", per, parameters=parameters, elements=max(1, n // per))
    if shape == "chain":
        return chain("bench", [n // 5] * 5, parameters=parameters)
    if shape == "fanout":
        return fan_out("bench", n // 10, 9, n // 10, parameters=parameters)
    raise ValueError(shape)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def pss_mb(pid: int) -> float:
    """Proportional set size: the process's own pages, and its share of
    those it shares (the same Python and gRPC libraries mapped by every
    service are counted once over all of them, not once per process)."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


@contextmanager
def peak_pss(pids: list[int], peak: list[float], every: float = 0.25) -> Iterator[None]:
    """Sample the summed PSS of pids every `every` s while the block runs; the
    highest sum ends up in peak[0] (the kernel keeps no peak of it)."""
    done = threading.Event()

    def sample() -> None:
        while True:
            peak[0] = max(peak[0], sum(pss_mb(pid) for pid in pids))
            if done.wait(every):
                return

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield
    finally:
        done.set()
        sampler.join()


@dataclass
class Result:
    shape: str
    instances: int
    latency_ms: int
    # "ignore" (create, configure, start) or "reconfigure" (and a reconfigure
    # when the member list changed after the instance was told it).
    siblings: str
    accepted_to_active_s: float
    transitions: int
    transitions_per_s: float
    transition_median_ms: float
    transition_p99_ms: float
    first_operation_ms: float
    teardown_s: float
    cpu_s: dict[str, float] = field(default_factory=dict)
    peak_rss_mb: dict[str, float] = field(default_factory=dict)
    # The highest sum of every service's PSS seen during the deploy (sampled
    # every 0.25 s): the memory they take together, shared pages counted once.
    peak_pss_mb: float = 0.0
    floor_s: float = 0.0
    # The monitor's first poll of every instance after the deploy (which reads
    # every record the deploy wrote): duration and CPU seconds; and the next
    # poll, as every later one of a quiet system (nothing to read again).
    monitor_poll_s: float = 0.0
    monitor_poll_cpu_s: float = 0.0
    monitor_steady_poll_s: float = 0.0
    # With --repeat: accepted_to_active_s of every run (this result is the median one).
    runs_s: list[float] = field(default_factory=list)
    # Messages JetStream stored during the deploy (every stream's and bucket's
    # sequence advanced; a KV update is one), per instance brought to active.
    js_writes_per_instance: float = 0.0
    js_writes_by_stream: dict[str, int] = field(default_factory=dict)


async def stored_sequences(url: str) -> dict[str, int]:
    """The last sequence of every JetStream stream (KV buckets included):
    how many messages each has stored since it was made."""
    nc = await nats.connect(url)
    try:
        return {info.config.name: info.state.last_seq for info in await nc.jetstream().streams_info()}
    finally:
        await nc.close()


async def monitor_poll(url: str, instances: int, after_ns: int, timeout: float = 60) -> float:
    """Duration of the monitor's first poll that started after `after_ns` and saw every instance."""
    nc = await nats.connect(url)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                figures = json.loads((await nc.request("orch.monitor.figures", b"", timeout=2)).data)
                if figures.get("instances") == instances and figures.get("time", 0) >= after_ns:
                    return float(figures["duration_seconds"])
            except Exception:  # noqa: BLE001 - no poll yet
                pass
            await asyncio.sleep(0.5)
        return -1.0
    finally:
        await nc.close()


async def controllers_registered(url: str, count: int, timeout: float = 60) -> None:
    """Wait until `count` controller replicas have registered: the suite is up
    (a deploy sent earlier would measure their start-up, not the engine)."""
    nc = await nats.connect(url)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            info = await nc.jetstream().stream_info("KV_orch_controllers", subjects_filter=">")
            if len(info.state.subjects or {}) >= count:
                return
            await asyncio.sleep(0.1)
        raise SystemExit(f"fewer than {count} controllers registered after {timeout:.0f}s")
    finally:
        await nc.close()


async def root_done(url: str, task: str, timeout: float, domain: str = "bench") -> int:
    """Wait for the completion (or failure) event of a root task; its time (ns)."""
    nc = await nats.connect(url)
    js = nc.jetstream()
    done: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def on_event(msg) -> None:  # type: ignore[no-untyped-def]
        event = json.loads(msg.data)
        if event["task"] == task and event["type"] in ("completion", "failure", "termination", "timeout") and not done.done():
            done.set_result(event["time"] if event["type"] == "completion" else -1)

    subscription = await js.subscribe(f"orch.events.{domain}.solution.>", cb=on_event, ordered_consumer=True)
    try:
        return await asyncio.wait_for(done, timeout)
    finally:
        await subscription.unsubscribe()
        await nc.close()


def deploy_and_wait(suite: Suite, url: str, request: object, call) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    started = time.time()
    task = call(request, metadata=suite.metadata, timeout=60).task
    accepted = time.time()
    finished_ns = asyncio.run(root_done(url, task, timeout=900))
    if finished_ns < 0:
        raise SystemExit(f"task {task} did not complete: {suite.task('bench', task).task.error}")
    del started
    return accepted, finished_ns / 1e9


def measure(shape: str, n: int, latency_ms: int, concurrency: int, siblings: str = "ignore") -> Result:
    with tempfile.TemporaryDirectory(prefix="orch-bench-") as home:
        # Default settings: the monitor polls every 5 s, as under `make run`.
        with running_suite(Path(home), "--monitor-interval", "5") as suite:
            url = json.loads(suite.ok("info", "-o", "json", "--show-secrets"))["nats_url"]
            parameters: dict[str, object] = {"sim_latency_ms": latency_ms} if latency_ms else {}
            if siblings == "ignore":
                parameters["orch_siblings"] = "ignore"
            suite.apply(model(shape, n, parameters))
            asyncio.run(controllers_registered(url, 2))  # the sim and the process controller
            time.sleep(1.0)  # and the suite settled after its start-up
            pids = suite.services()
            before = {name: cpu_seconds(pid) for name, pid in pids.items()}
            request = gw.DeploySolutionRequest(domain="bench", architecture="app", version="V1")
            pss = [0.0]
            sequences = asyncio.run(stored_sequences(url))
            with peak_pss(list(pids.values()), pss):  # as the peak RSS: the deploy and the monitor's polls after it
                accepted, finished = deploy_and_wait(suite, url, request, suite.solutions.DeploySolution)
                cpu = {name: round(cpu_seconds(pid) - before[name], 2) for name, pid in pids.items()}
                writes = {name: seq - sequences.get(name, 0) for name, seq in asyncio.run(stored_sequences(url)).items()}
                poll = poll_cpu = steady = 0.0
                if shape == "flat" and n >= 10000 and not latency_ms and siblings == "ignore":
                    monitor_cpu = cpu_seconds(pids["monitor"])
                    poll = asyncio.run(monitor_poll(url, n, int(finished * 1e9)))
                    poll_cpu = cpu_seconds(pids["monitor"]) - monitor_cpu
                    steady = asyncio.run(monitor_poll(url, n, time.time_ns()))
            rss = {name: round(peak_rss_mb(pid), 1) for name, pid in pids.items()}
            ops = suite.ops("app")
            teardown_request = gw.RemoveSolutionRequest(domain="bench", solution="app")
            t_accepted, t_finished = deploy_and_wait(suite, url, teardown_request, suite.solutions.RemoveSolution)
    by_instance: dict[str, list[dict]] = defaultdict(list)
    for op in ops:
        by_instance[op["instance"]].append(op)
    durations = []
    for chain_ops in by_instance.values():
        previous = accepted
        for op in sorted(chain_ops, key=lambda o: o["started"]):
            durations.append(op["finished"] - previous)
            previous = op["finished"]
    durations.sort()
    wall = finished - accepted
    return Result(
        shape=shape, instances=n, latency_ms=latency_ms, siblings=siblings,
        accepted_to_active_s=round(wall, 3),
        transitions=len(ops),
        transitions_per_s=round(len(ops) / wall, 1),
        transition_median_ms=round(statistics.median(durations) * 1000, 1),
        transition_p99_ms=round(durations[int(len(durations) * 0.99)] * 1000, 1),
        first_operation_ms=round((min(o["started"] for o in ops) - accepted) * 1000, 1),
        teardown_s=round(t_finished - t_accepted, 3),
        cpu_s=cpu, peak_rss_mb=rss, peak_pss_mb=round(pss[0], 1),
        floor_s=round(3 * n * latency_ms / 1000 / concurrency, 3) if latency_ms else 0.0,
        monitor_poll_s=round(poll, 3), monitor_poll_cpu_s=round(poll_cpu, 2), monitor_steady_poll_s=round(steady, 3),
        js_writes_per_instance=round(sum(writes.values()) / n, 2), js_writes_by_stream={k: v for k, v in writes.items() if v},
    )


def measure_pair(n: int, dispatchers: int) -> dict[str, float]:
    """One flat solution of `n` alone, then two of `n` in two domains at once,
    on one suite of `dispatchers` dispatcher processes (seconds from the
    requests to the completion of the last)."""
    parameters: dict[str, object] = {"orch_siblings": "ignore"}
    with tempfile.TemporaryDirectory(prefix="orch-bench-") as home:
        with running_suite(Path(home), "--monitor-interval", "5", "--dispatchers", str(dispatchers)) as suite:
            url = json.loads(suite.ok("info", "-o", "json", "--show-secrets"))["nats_url"]
            for domain in ("pa", "pb"):
                suite.apply(flat(domain, 100, parameters=parameters, elements=n // 100))
            asyncio.run(controllers_registered(url, 2))
            time.sleep(1.0)

            async def deploy(pairs: list[tuple[str, str]]) -> float:
                started = time.time()
                tasks = [suite.solutions.DeploySolution(gw.DeploySolutionRequest(
                    domain=domain, architecture="app", version="V1", solution=name), metadata=suite.metadata, timeout=60).task
                    for domain, name in pairs]
                ends = await asyncio.gather(*(root_done(url, task, 900, domain) for (domain, _), task in zip(pairs, tasks)))
                if min(ends) < 0:
                    raise SystemExit("a deploy of the pair did not complete")
                return max(ends) / 1e9 - started

            alone = asyncio.run(deploy([("pa", "alone")]))
            pair = asyncio.run(deploy([("pa", "one"), ("pb", "two")]))
    return {"alone_s": round(alone, 3), "pair_s": round(pair, 3), "ratio": round(pair / alone, 2)}


def table(results: list[Result]) -> str:
    header = ["shape", "N", "lat ms", "siblings", "active s", "trans/s", "med ms", "p99 ms", "1st op ms", "teardown s",
              "cpu s (all)", "rss MB (all)", "pss MB (all)", "floor s", "writes/inst"]
    rows = [header]
    for r in results:
        rows.append([r.shape, str(r.instances), str(r.latency_ms), r.siblings, f"{r.accepted_to_active_s:.2f}", f"{r.transitions_per_s:.0f}",
                     f"{r.transition_median_ms:.0f}", f"{r.transition_p99_ms:.0f}", f"{r.first_operation_ms:.0f}",
                     f"{r.teardown_s:.2f}", f"{sum(r.cpu_s.values()):.1f}", f"{sum(r.peak_rss_mb.values()):.0f}",
                     f"{r.peak_pss_mb:.0f}", f"{r.floor_s:.2f}" if r.floor_s else "-", f"{r.js_writes_per_instance:.1f}"])
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in rows)


def cli_figures(repeat: int, sizes: list[int]) -> dict[str, float]:
    """From the shell, with default settings: medians (and, as `<name>_min`
    and `<name>_max`, the fastest and slowest) of `repeat` runs of
    `orch --help`, `orch info`, `orch domain list` (a read), `orch solution
    deploy --wait` of flat solutions and of trees (a root element with nine
    dependants) of each size and of a chain of 50 one-instance elements, and
    how long after its root task ended each deploy --wait returned."""
    import subprocess

    figures: dict[str, float] = {}
    after_end: list[float] = []
    with tempfile.TemporaryDirectory(prefix="orch-bench-cli-") as home, running_suite(Path(home), "--monitor-interval", "5") as suite:
        orch = str(Path(sys.executable).parent / "orch")
        env = {**os.environ, "ORCH_HOME": home}
        env.pop("ORCH_TOKEN", None)

        def timed(*args: str) -> float:
            started = time.perf_counter()
            subprocess.run([orch, *args], env=env, check=True, capture_output=True, timeout=900)
            return time.perf_counter() - started

        def deploy(domain: str, solution: str) -> float:
            started = time.perf_counter()
            out = subprocess.run([orch, "solution", "deploy", domain, "app", "V1", "--solution", solution, "--wait"],
                                 env=env, check=True, capture_output=True, timeout=900, text=True).stdout
            returned, wall = time.time(), time.perf_counter() - started
            after_end.append(returned - suite.task(domain, out.split()[0]).task.updated / 1e9)
            return wall

        suite.ok("apply", "-f", str(ROOT / "tests" / "data" / "demo2.yaml"))
        def record(name: str, runs: list[float]) -> None:
            figures[f"{name}_s"] = statistics.median(runs)
            figures[f"{name}_min"], figures[f"{name}_max"] = min(runs), max(runs)

        for name, args in (("help", ("--help",)), ("info", ("info",)), ("domain_list", ("domain", "list"))):
            timed(*args)  # warm the file cache
            record(name, [timed(*args) for _ in range(max(5, repeat))])
        cases = [(f"deploy_wait_{n}", f"cli{n}", flat(f"cli{n}", n)) for n in sizes]
        cases += [(f"deploy_wait_tree_{n}", f"tree{n}", fan_out(f"tree{n}", n // 10, 9, n // 10)) for n in sizes]
        cases.append(("deploy_wait_chain_50", "chain50", chain("chain50", [1] * 50)))
        for name, domain, document in cases:
            suite.apply(document)
            record(name, [deploy(domain, f"run-{i}") for i in range(max(1, repeat))])
    figures["wait_returns_after_root_end_ms"] = round(statistics.median(after_end) * 1000, 1)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100,1000,10000")
    parser.add_argument("--shapes", default="flat,chain,fanout")
    parser.add_argument("--latency-run", type=int, default=10000, help="N of the run with sim_latency_ms 50 (0: none)")
    parser.add_argument("--siblings-run", type=int, default=10000,
                        help="N of the flat run whose members are told of their siblings (0: none)")
    parser.add_argument("--concurrency", type=int, default=1000, help="the dispatcher's default limit (for the floor)")
    parser.add_argument("--output", default=str(ROOT / "bench" / "results.json"))
    parser.add_argument("--cli", default="100,1000", help="sizes of the deploy --wait runs from the shell ('': no CLI section)")
    parser.add_argument("--large", type=int, default=0,
                        help="N of one more flat run (50000 for the README's large row; 0: none)")
    parser.add_argument("--pair", type=int, default=10000,
                        help="N of each solution of the pair run: one alone, then two in two domains at once (0: none)")
    parser.add_argument("--dispatchers", type=int, default=os.cpu_count() or 1,
                        help="dispatcher processes in the pair run (orch up's default: one per core)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="runs of each case; the one with the median time is reported (runs vary by about 10 %%)")
    args = parser.parse_args()

    def median_of_runs(shape: str, n: int, latency_ms: int, siblings: str = "ignore") -> Result:
        runs = sorted((measure(shape, n, latency_ms, args.concurrency, siblings) for _ in range(max(1, args.repeat))),
                      key=lambda r: r.accepted_to_active_s)
        chosen = runs[len(runs) // 2]
        if len(runs) > 1:
            chosen.runs_s = [r.accepted_to_active_s for r in runs]
        return chosen

    def spread(result: Result) -> str:
        if not result.runs_s:
            return ""
        return f" (median of {', '.join(f'{s:.2f}' for s in result.runs_s)}; min {min(result.runs_s):.2f}, max {max(result.runs_s):.2f})"

    cli: dict[str, float] = {}
    if args.cli:
        cli = cli_figures(args.repeat, [int(n) for n in args.cli.split(",")])
        print("from the shell (medians, min-max): " + ", ".join(
            f"{k} {v:.3f} ({cli[k[:-2] + '_min']:.3f}-{cli[k[:-2] + '_max']:.3f})" if k.endswith("_s") else f"{k} {v:.1f}"
            for k, v in cli.items() if not k.endswith(("_min", "_max"))), flush=True)
    results: list[Result] = []
    for n in [int(s) for s in args.sizes.split(",") if s]:
        for shape in args.shapes.split(","):
            result = median_of_runs(shape, n, 0)
            results.append(result)
            print(f"{shape:>7} N={n:<6} active in {result.accepted_to_active_s:.2f}s{spread(result)}", flush=True)
    if args.large:
        result = median_of_runs("flat", args.large, 0)
        results.append(result)
        print(f"   flat N={args.large:<6} active in {result.accepted_to_active_s:.2f}s{spread(result)}", flush=True)
    if args.latency_run:
        result = median_of_runs("flat", args.latency_run, 50)
        results.append(result)
        print(f"latency run N={args.latency_run}: {result.accepted_to_active_s:.2f}s (floor {result.floor_s:.2f}s){spread(result)}",
              flush=True)
    if args.siblings_run:
        result = median_of_runs("flat", args.siblings_run, 0, siblings="reconfigure")
        results.append(result)
        print(f"siblings run N={args.siblings_run}: {result.accepted_to_active_s:.2f}s{spread(result)}", flush=True)
    pairs: dict[str, object] = {}
    if args.pair:
        for dispatchers in sorted({1, args.dispatchers}):
            runs = sorted((measure_pair(args.pair, dispatchers) for _ in range(max(1, args.repeat))), key=lambda r: r["ratio"])
            chosen = runs[len(runs) // 2]
            pairs[f"dispatchers_{dispatchers}"] = {**chosen, "ratios": [r["ratio"] for r in runs],
                                                   "alone_runs_s": [r["alone_s"] for r in runs], "pair_runs_s": [r["pair_s"] for r in runs]}
            print(f"pair run N={args.pair} x2, {dispatchers} dispatcher(s): alone {chosen['alone_s']:.2f}s, "
                  f"two at once {chosen['pair_s']:.2f}s, {chosen['ratio']:.2f}x (ratios: {[r['ratio'] for r in runs]})", flush=True)
    print()
    print(table(results))
    for r in results:
        if r.monitor_poll_s:
            print(f"monitor poll of {r.instances} instances: {r.monitor_poll_s:.2f}s after the deploy (monitor CPU while "
                  f"waiting for it: {r.monitor_poll_cpu_s:.2f}s), {r.monitor_steady_poll_s:.2f}s the next one")
    summary: dict[str, object] = {"cli": cli, "results": [asdict(r) for r in results], "pair": pairs}
    firsts = [r.first_operation_ms for r in results if r.siblings == "ignore"]
    if firsts:
        summary["first_operation_median_ms"] = statistics.median(firsts)
        print(f"request to first operation, median of the runs: {statistics.median(firsts):.0f} ms")
    for shape in args.shapes.split(","):
        pair = {r.instances: r.accepted_to_active_s for r in results
                if r.shape == shape and not r.latency_ms and r.siblings == "ignore"}
        for low, high in ((1000, 10000), (10000, 50000), (1000, 50000)):
            if low in pair and high in pair:
                exponent = math.log(pair[high] / pair[low]) / math.log(high / low)
                summary[f"scaling_exponent_{shape}_{low}_{high}"] = round(exponent, 3)
                print(f"scaling exponent {shape} ({low:,} -> {high:,}): {exponent:.2f}")
    Path(args.output).write_text(json.dumps(summary, indent=2) + "\n")
    print(f"written to {args.output}")


if __name__ == "__main__":
    main()
