"""`make screenshots`: deploy the demo on a fresh `orch up` and render the
console's main views with headless Chromium into docs/console-*.png (the
README shows them)."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from playwright.sync_api import sync_playwright  # noqa: E402

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
        suite.ok("apply", "-f", str(DATA / "demo2.yaml"))
        task = json.loads(suite.ok("solution", "deploy", "demo", "app", "V0.0.0", "-o", "json"))["task"]
        suite.wait_task("demo", task)
        url = json.loads(suite.ok("info", "-o", "json"))["console"]
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1280, "height": 860})
            page.goto(url + "signin")
            page.screenshot(path=str(out / "console-signin.png"))
            page.fill("input[name=token]", (suite.home / "token").read_text().strip())
            page.click("button[type=submit]")
            page.wait_for_selector("h1:has-text('Overview')")
            for name, path in VIEWS.items():
                page.goto(url + path.format(task=task))
                page.wait_for_selector("main h1")
                page.wait_for_timeout(500)
                page.screenshot(path=str(out / f"console-{name}.png"))
                print(f"docs/console-{name}.png")
            browser.close()


if __name__ == "__main__":
    main()
