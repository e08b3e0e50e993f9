"""`make bench-console`: what the web console costs, in a real browser
(Debian's Chromium) against a fresh `orch up`:

- the time from navigation to a solution view showing every cluster, at
  1,000 and 10,000 instances (median of --repeat loads);
- the same view opened while a deploy of that size runs (and left open,
  live, until it ends), the deploy's duration with it open, and the live
  updates a browser receives per second meanwhile (server-sent "change"
  messages);
- the bytes the browser downloads for the page (HTML, script, style).

Writes bench/console.json.

    python bench/console.py [--sizes 1000,10000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from playwright.sync_api import sync_playwright  # noqa: E402

from models import flat  # noqa: E402
from suite import running_suite  # noqa: E402

STATIC = ROOT / "services" / "gateway" / "console" / "static"


def count_changes(url: str, cookie: str, stop: threading.Event, seen: list[float]) -> None:
    """Read the live stream of the bench domain; note the time of every change message."""
    request = urllib.request.Request(f"{url}api/live?domain=bench&solution=app", headers={"Cookie": cookie})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=600) as stream:
        while not stop.is_set():
            line = stream.readline()
            if not line:
                return
            if line.startswith(b"event: change"):
                seen.append(time.monotonic())


def measure(n: int, repeat: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="orch-console-bench-") as home, running_suite(Path(home)) as suite:
        url = json.loads(suite.ok("info", "-o", "json", "--show-secrets"))["console"]
        suite.apply(flat("bench", n // 10, parameters={"orch_siblings": "ignore"}, elements=10))
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(url + "signin")
            page.fill("input[name=token]", (suite.home / "token").read_text().strip())
            page.click("button[type=submit]")
            page.wait_for_selector("h1:has-text('Overview')")
            cookie = "; ".join(f"{c['name']}={c['value']}" for c in page.context.cookies())
            # Live updates during the deploy.
            stop, seen = threading.Event(), []  # type: ignore[var-annotated]
            reader = threading.Thread(target=count_changes, args=(url, cookie, stop, seen), daemon=True)
            reader.start()
            time.sleep(0.5)
            started = time.monotonic()
            task = json.loads(suite.ok("solution", "deploy", "bench", "app", "V1", "-o", "json"))["task"]
            # The solution view, opened while the deploy runs, stays open (and live) until it ends.
            begin = time.monotonic()
            page.goto(url + "domains/bench/solutions/app")
            page.wait_for_selector("[data-cluster-row]")
            during_s = time.monotonic() - begin
            suite.wait_task("bench", task, timeout=900)
            deploy_s = time.monotonic() - started
            stop.set()
            updates = [t for t in seen if t >= started]
            # Page loads of the finished solution.
            loads = []
            for _ in range(repeat):
                begin = time.monotonic()
                page.goto(url + "domains/bench/solutions/app")
                page.wait_for_selector("[data-cluster-row]")
                loads.append(time.monotonic() - begin)
            browser.close()
    return {"instances": n, "page_load_s": round(statistics.median(loads), 3), "loads_s": [round(x, 3) for x in loads],
            "page_load_during_deploy_s": round(during_s, 3),
            "deploy_s": round(deploy_s, 2), "live_updates": len(updates),
            "live_updates_per_s": round(len(updates) / deploy_s, 2) if deploy_s else 0.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000,10000")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--output", default=str(ROOT / "bench" / "console.json"))
    args = parser.parse_args()
    download = {path.name: path.stat().st_size for path in sorted(STATIC.iterdir()) if path.is_file()}
    results = {"download_bytes": download, "download_total_bytes": sum(download.values()),
               "sizes": [measure(int(n), args.repeat) for n in args.sizes.split(",")]}
    print(f"the browser downloads {results['download_total_bytes']} bytes: {download}")
    print(f"{'instances':>10} {'page load (median)':>20} {'during deploy':>14} {'deploy':>10} {'live updates':>14} "
          f"{'per second':>12}")
    for r in results["sizes"]:  # type: ignore[union-attr]
        print(f"{r['instances']:>10} {r['page_load_s']:>18.3f} s {r['page_load_during_deploy_s']:>12.3f} s "
              f"{r['deploy_s']:>8.2f} s {r['live_updates']:>14} {r['live_updates_per_s']:>12.2f}")
    Path(args.output).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
