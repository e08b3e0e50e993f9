"""`make chaos`: operator loops on a live suite while every process is
SIGKILLed or SIGSTOPped at random, then a check that nothing was lost,
duplicated or brought back.

Four operator loops (two solutions in each of two domains) go round deploy,
resize, version change, stop, start and remove, each change sent with a
`--request-id` and sent again whenever its reply is lost. Every 2-6 s one
fault strikes: SIGKILL of a dispatcher, the gateway, the monitor, the sim
controller or nats-server (`orch up` restarts its children; the second
dispatcher is restarted here), or SIGSTOP of a dispatcher for longer than its
lease, then SIGCONT. A seed makes the faults and the loops' choices
repeatable; it is printed, and `--seed` replays it.

At the end, from the sim controller's own operation log and the store:
every solution is at its target (or gone, when removed last); no instance
was created twice without a destroy between; no operation ran on the
instances of a removal after it ended; every request ended completed; the
last requests ended within 60 s of the last fault.

    python bench/chaos.py [--minutes 10] [--seed N] [--loops 4] [--size 40]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import grpc  # noqa: E402

from cli.embedded_nats import free_port  # noqa: E402
from models import component, domain, element  # noqa: E402
from suite import Suite, alive, cmdline, environment_of, running_suite  # noqa: E402

from orchestration.v1 import model_pb2 as pb  # noqa: E402

FINISHED = {pb.TASK_STATUS_COMPLETED: "completed", pb.TASK_STATUS_FAILED: "failed", pb.TASK_STATUS_TIMEOUT: "timeout",
            pb.TASK_STATUS_TERMINATED: "terminated"}
# A dispatcher stopped for longer than its lease (10 s): another takes its work over.
STOP_SECONDS = 13.0
# Seconds after the last fault by which every request must have ended.
RECOVERY_LIMIT = 60.0
STEPS = ("deploy", "resize", "upgrade", "stop", "start", "remove")


@dataclass
class Request:
    loop: str
    step: str
    request_id: str
    sent: float
    task: str = ""
    accepted: float = 0.0
    ended: float = 0.0
    status: str = ""
    attempts: int = 0


@dataclass
class Report:
    seed: int
    faults: Counter = field(default_factory=Counter)
    requests: list[Request] = field(default_factory=list)
    last_fault: float = 0.0
    problems: list[str] = field(default_factory=list)
    # Instances of each removal, and when it ended: nothing may run on them afterwards.
    removals: list[tuple[float, set[str], str]] = field(default_factory=list)

    def summary(self) -> dict[str, object]:
        done = [r for r in self.requests if r.ended]
        after = [r.ended - self.last_fault for r in done if r.ended > self.last_fault]
        return {
            "seed": self.seed,
            "faults": dict(sorted(self.faults.items())),
            "requests": len(self.requests),
            "completed": sum(r.status == "completed" for r in self.requests),
            "resent": sum(r.attempts > 1 for r in self.requests),
            "longest_request_s": round(max((r.ended - r.sent for r in done), default=0.0), 1),
            "last_request_after_last_fault_s": round(max(after, default=0.0), 1),
            "problems": self.problems,
        }


class Chaos:
    def __init__(self, suite: Suite, seed: int, seconds: float, loops: int, size: int, log=print) -> None:
        self.suite, self.seconds, self.size, self.log = suite, seconds, size, log
        self.rng = random.Random(seed)
        self.report = Report(seed)
        self.stop_faults = threading.Event()
        self.stop_loops = threading.Event()
        self.lock = threading.Lock()
        self.loops = [(f"chaos{i % 2}", f"s{i}") for i in range(loops)]
        self.second: subprocess.Popen | None = None
        self.second_argv: list[str] | None = None
        self.second_env: dict[str, str] = {}
        self.second_log = open(suite.home / "dispatcher-2.log", "ab")

    # ---- the suite -----------------------------------------------------------

    def prepare(self) -> None:
        parameters = {"sim_latency_ms": 5, "orch_siblings": "ignore"}
        for name in sorted({d for d, _ in self.loops}):
            # app V1 runs c0 V1; app V2 runs c0 V2 (a version change replaces every cluster).
            for version in ("V1", "V2"):
                self.suite.apply(domain(name, [component("c0", version)], "app", version, [
                    element(f"e{i}", "c0", self.size, version=version, maximum=self.size * 2, parameters=parameters)
                    for i in range(2)]))
        self.start_second_dispatcher()

    def start_second_dispatcher(self) -> None:
        """A second dispatcher beside `orch up`'s, started as it starts its own
        (the first time from that one's command line and environment)."""
        if self.second_argv is None:
            first = self.suite.services()["dispatcher"]
            self.second_argv = cmdline(first).split()
            self.second_argv[self.second_argv.index("--replica") + 1] = "dispatcher-2"
            self.second_argv[self.second_argv.index("--addr") + 1] = f"127.0.0.1:{free_port()}"
            self.second_env = {**environment_of(first), "ORCH_METRICS_ADDR": f"127.0.0.1:{free_port()}"}
        self.second = subprocess.Popen(self.second_argv, env=self.second_env, stdout=self.second_log, stderr=subprocess.STDOUT)

    def pids(self) -> dict[str, int]:
        found = {k: v for k, v in self.suite.services().items() if k in ("gateway", "dispatcher", "monitor", "sim-1", "nats-server")}
        if self.second is not None and self.second.poll() is None:
            found["dispatcher-2"] = self.second.pid
        return found

    # ---- faults ----------------------------------------------------------------

    def faults(self) -> None:
        while not self.stop_faults.wait(self.rng.uniform(2, 6)):
            try:
                self.fault()
            except Exception as err:  # noqa: BLE001 - a process gone meanwhile (restarting): the next fault
                self.log(f"fault not injected: {type(err).__name__}: {err}")

    def fault(self) -> None:
        """One fault, chosen at random among the processes running now."""
        pids = self.pids()
        kinds = [f"kill {name}" for name in sorted(pids)] + [f"stop {n}" for n in ("dispatcher", "dispatcher-2") if n in pids]
        kind = self.rng.choice(kinds)
        action, name = kind.split(" ", 1)
        pid = pids[name]
        self.log(f"{time.strftime('%H:%M:%S')} fault: {kind} (pid {pid})")
        with self.lock:
            self.report.faults[kind] += 1
        if action == "kill":
            os.kill(pid, signal.SIGKILL)
            while alive(pid):
                time.sleep(0.02)
            if name == "dispatcher-2":
                assert self.second is not None
                self.second.wait()
                self.start_second_dispatcher()
        else:
            os.kill(pid, signal.SIGSTOP)
            time.sleep(STOP_SECONDS)
            os.kill(pid, signal.SIGCONT)
        self.report.last_fault = time.time()

    # ---- operator loops -------------------------------------------------------

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        return self.suite.orch(*args, timeout=60)

    def change(self, domain: str, name: str, step: str, size: int) -> list[str]:
        return {
            "deploy": ["solution", "deploy", domain, "app", "V1", "--solution", name],
            "resize": ["cluster", "set", domain, name, "e0", "V1", "--size", str(size)],  # before the upgrade: V1
            "upgrade": ["solution", "deploy", domain, "app", "V2", "--solution", name],
            "stop": ["solution", "set", domain, name, "--state", "inactive"],
            "start": ["solution", "set", domain, name, "--state", "active"],
            "remove": ["solution", "delete", domain, name],
        }[step]

    def operator(self, domain: str, name: str, rng: random.Random) -> None:
        round_ = 0
        while not self.stop_loops.is_set():
            for step in STEPS:
                if self.stop_loops.is_set():
                    return
                size = rng.randint(1, self.size * 2)
                request = Request(f"{domain}/{name}", step, f"{name}-{round_}-{step}", time.time())
                with self.lock:
                    self.report.requests.append(request)
                instances = self.instances(domain, name) if step == "remove" else set()
                self.run(domain, name, request, self.change(domain, name, step, size))
                if step == "remove" and request.status == "completed":
                    with self.lock:
                        self.report.removals.append((request.ended, instances, request.loop))
            round_ += 1

    def run(self, domain: str, name: str, request: Request, args: list[str]) -> None:
        """Send the change until accepted (the same id each time), then follow its task to the end."""
        while not request.task:
            request.attempts += 1
            result = self.cli(*args, "--request-id", request.request_id, "-o", "json") if args[1] == "deploy" else \
                self.cli(*args, "--request-id", request.request_id)
            if result.returncode == 0:
                out = result.stdout.strip()
                request.task = json.loads(out)["task"] if out.startswith("{") else out.split()[0]
                request.accepted = time.time()
                break
            if time.time() - request.sent > 600:
                self.report.problems.append(f"{request.request_id}: not accepted in 600 s: {result.stderr.strip()}")
                return
            time.sleep(0.5)  # the gateway restarting, the solution busy (a compensation), ...
        while True:
            try:  # over gRPC: a CLI process per poll would take a core of its own
                status = FINISHED.get(self.suite.task(domain, request.task).task.status, "")
            except grpc.RpcError:
                status = ""  # the gateway or NATS restarting
            if status:
                request.status, request.ended = status, time.time()
                if status != "completed":
                    self.report.problems.append(f"{request.request_id} ({request.task}) ended {status}")
                    # As an operator would: end any hold, then go on with the loop.
                    self.run(domain, name, Request(request.loop, "resume", request.request_id + "-resume", time.time()),
                             ["solution", "resume", domain, name])
                return
            time.sleep(0.2)

    def instances(self, domain: str, name: str) -> set[str]:
        try:
            found = self.suite.solution(domain, name)
        except Exception:  # noqa: BLE001 - not there, or the gateway restarting: read again
            time.sleep(0.5)
            try:
                found = self.suite.solution(domain, name)
            except Exception:  # noqa: BLE001
                return set()
        return {i.uuid for e in found.elements for c in e.clusters for i in c.instances}

    # ---- the run and its checks -------------------------------------------------

    def run_all(self) -> Report:
        self.prepare()
        threads = [threading.Thread(target=self.operator, args=(d, n, random.Random(self.rng.random())), daemon=True)
                   for d, n in self.loops]
        faults = threading.Thread(target=self.faults, daemon=True)
        for thread in [*threads, faults]:
            thread.start()
        time.sleep(self.seconds)
        self.stop_faults.set()
        faults.join()
        self.stop_loops.set()
        for thread in threads:
            thread.join(timeout=RECOVERY_LIMIT + 120)
            if thread.is_alive():
                self.report.problems.append("an operator loop did not finish its last change")
        self.check()
        return self.report

    def check(self) -> None:
        report = self.report
        late = [r for r in report.requests if r.ended - report.last_fault > RECOVERY_LIMIT]
        report.problems += [f"{r.request_id} ended {r.ended - report.last_fault:.0f} s after the last fault" for r in late]
        report.problems += [f"{r.request_id} never ended" for r in report.requests if r.task and not r.ended]
        ops = self.suite.ops()
        creates: dict[str, set[str]] = defaultdict(set)
        for op in ops:
            if op["outcome"] != "ok":
                continue
            if op["operation"] == "create":
                creates[op["instance"]].add(op["operation_id"])
            elif op["operation"] == "destroy":
                creates.pop(op["instance"], None)
            twice = creates.get(op["instance"], set())
            if len(twice) > 1:
                report.problems.append(f"instance {op['instance']} created twice without a destroy: {sorted(twice)}")
                creates[op["instance"]] = {op["operation_id"]}
        for ended, instances, loop in report.removals:
            after = [op for op in ops if op["instance"] in instances and op["started"] > ended]
            if after:
                report.problems.append(f"{len(after)} operation(s) on {loop} after its removal ended: {after[0]}")
        for domain, name in self.loops:
            last = [r for r in report.requests if r.loop == f"{domain}/{name}" and r.status == "completed"]
            self.check_target(domain, name, last[-1].step if last else "remove")

    def check_target(self, domain: str, name: str, last_step: str) -> None:
        listed = json.loads(self.suite.ok("solution", "list", domain, "-o", "json"))
        present = name in [s["Solution"] for s in listed]
        if last_step == "remove":
            if present:
                self.report.problems.append(f"{domain}/{name} was removed last but is listed")
            return
        if not present:
            self.report.problems.append(f"{domain}/{name} is not listed (its last change was {last_step})")
            return
        found = self.suite.solution(domain, name)
        for element in found.elements:
            for cluster in element.clusters:
                wrong = [i.uuid for i in cluster.instances if i.state != i.target]
                if wrong or len(cluster.instances) != cluster.size:
                    self.report.problems.append(
                        f"{domain}/{name}/{element.name}/{cluster.version}: {len(cluster.instances)} instances for size "
                        f"{cluster.size}, {len(wrong)} not at their target ({pb.State.Name(cluster.target)})")


def run(home: Path, seconds: float, seed: int, loops: int = 4, size: int = 40, log=print) -> Report:
    """One chaos run on a fresh suite in `home`."""
    with running_suite(home, "--monitor-interval", "2", "--operation-timeout", "10") as suite:
        chaos = Chaos(suite, seed, seconds, loops, size, log)
        try:
            return chaos.run_all()
        finally:
            if chaos.second is not None and chaos.second.poll() is None:
                chaos.second.send_signal(signal.SIGCONT)
                chaos.second.terminate()
                chaos.second.wait(timeout=30)
            for name, pid in chaos.pids().items():
                if name != "dispatcher-2":
                    os.kill(pid, signal.SIGCONT)  # none stays stopped past the run
            chaos.second_log.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=None, help="Replay the run of this seed.")
    parser.add_argument("--loops", type=int, default=4)
    parser.add_argument("--size", type=int, default=40, help="Instances per element (two elements per solution).")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 31)
    print(f"chaos: seed {seed} (replay with --seed {seed}), {args.minutes} minutes, {args.loops} operator loops")
    home = Path(tempfile.mkdtemp(prefix="orch-chaos-"))
    report = run(home, args.minutes * 60, seed, args.loops, args.size)
    print(json.dumps(report.summary(), indent=2))
    print(f"logs in {home}")
    sys.exit(1 if report.problems else 0)


if __name__ == "__main__":
    main()
