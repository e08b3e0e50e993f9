"""`make screenshots`: on a fresh `orch up`, walk the newcomer's path
through the console (tests/newcomer.py: sign in, deploy from the catalog,
watch, resize, plan and apply an upgrade, terminate, remove) and save a
picture of each step into docs/newcomer-*.png; then deploy the SolAr demo
and save the main views into docs/console-*.png (the README shows them)."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from playwright.sync_api import sync_playwright  # noqa: E402

from newcomer import apply_shop, walk  # noqa: E402
from suite import DATA, running_suite  # noqa: E402

VIEWS = {
    "overview": "",
    "architecture": "domains/demo/architectures/app/V0.0.0",
    "solution": "domains/demo/solutions/app",
    "task": "tasks/{task}",
    "events": "domains/demo/events",
}


def main() -> None:
    out = ROOT / "docs"
    with tempfile.TemporaryDirectory(prefix="orch-screenshots-") as home, running_suite(Path(home)) as suite:
        apply_shop(suite)
        suite.ok("apply", "-f", str(DATA / "demo2.yaml"))
        url = json.loads(suite.ok("info", "-o", "json"))["console"]
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1280, "height": 860})

            def shoot(name: str) -> None:
                page.wait_for_timeout(300)  # let the last live update paint
                page.screenshot(path=str(out / f"newcomer-{name}.png"), full_page=True)
                print(f"docs/newcomer-{name}.png")

            walk(page, suite, url.rstrip("/"), shoot)
            task = json.loads(suite.ok("solution", "deploy", "demo", "app", "V0.0.0", "-o", "json"))["task"]
            suite.wait_task("demo", task)
            for name, path in VIEWS.items():
                page.goto(url + path.format(task=task))
                page.wait_for_selector("main h1")
                page.wait_for_timeout(500)
                page.screenshot(path=str(out / f"console-{name}.png"))
                print(f"docs/console-{name}.png")
            browser.close()


if __name__ == "__main__":
    main()
