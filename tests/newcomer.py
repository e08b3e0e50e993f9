"""The newcomer's path through the web console, step by step, each step
checked against the store: sign in, deploy a new solution from the catalog,
watch it come up, resize it, plan and apply a version change, stop a change
half-way, remove the solution. `tests/test_newcomer.py` walks it;
`make screenshots` walks it too and saves a picture of each step into docs/."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc

from orchestration.v1 import model_pb2 as pb
from suite import Suite, wait_until

SHOP = Path(__file__).resolve().parent.parent / "examples" / "shop" / "shop.yaml"
DOMAIN, SOLUTION = "shop", "store"
Shoot = Callable[[str], None]


def cluster_rows(page: Any) -> dict[str, list[str]]:
    """The solution page's cluster table: "element/cluster" -> its cells."""
    rows = page.eval_on_selector_all("[data-cluster-row]", "rows => rows.map(r => [...r.cells].map(c => c.innerText.trim()))")
    return {f"{r[0]}/{r[1]}": r for r in rows}


def active_on_page(page: Any, key: str) -> int:
    row = cluster_rows(page).get(key)
    return int(row[5]) if row else -1


def instances_in_store(suite: Suite, element: str, cluster: str) -> list[pb.Instance]:
    found = suite.solution(DOMAIN, SOLUTION)
    return [i for e in found.elements if e.name == element for c in e.clusters if c.version == cluster for i in c.instances]


def walk(page: Any, suite: Suite, console: str, shoot: Shoot = lambda name: None) -> None:
    """The whole path; `console` is the console's URL (no trailing slash)."""
    # Sign in with the suite's first admin token.
    page.goto(console + "/signin")
    shoot("1-sign-in")
    page.fill("input[name=token]", (suite.home / "token").read_text().strip())
    page.click("button[type=submit]")
    page.wait_for_selector(f"[data-domain='{DOMAIN}']")
    shoot("2-overview")

    # From the catalog to an architecture, and from there a new solution: its name and sizes, a plan, the deploy.
    page.click(f"[data-domain='{DOMAIN}'] a:has-text('catalog and architectures')")
    page.wait_for_selector(f"h1:has-text('Catalog of {DOMAIN}')")
    page.click("tr:has(td:text-is('V1.0.0')) a:text-is('shop')")
    page.wait_for_selector("[data-deploy]")
    page.fill("[data-deploy] input[aria-label='solution name']", SOLUTION)
    page.fill("[data-deploy] input[aria-label='size of web V1.0.0']", "3")
    page.click("[data-deploy] button:has-text('Plan')")
    page.wait_for_selector(f"[data-deploy] h2:has-text('12 transitions for {SOLUTION}')")  # (1 + 3) x create, configure, start
    shoot("3-deploy-from-the-catalog")
    page.click("[data-deploy] button:has-text('Deploy')")

    # Its page: it comes up, live.
    page.wait_for_url(f"**/domains/{DOMAIN}/solutions/{SOLUTION}")
    wait_until(lambda: active_on_page(page, "web/V1.0.0") == 3 and active_on_page(page, "db/V1.0.0") == 1, timeout=60,
               what="the new solution active on its page")
    assert len(instances_in_store(suite, "web", "V1.0.0")) == 3
    assert all(i.state == pb.STATE_ACTIVE for i in instances_in_store(suite, "web", "V1.0.0"))
    assert cluster_rows(page)["web/V1.0.0"][2] == "active"
    shoot("4-up-and-running")

    # Resize the web tier from its row.
    page.fill("input[aria-label='size of web V1.0.0']", "5")
    page.click("[data-cluster-row='web/V1.0.0'] button:has-text('Resize')")
    wait_until(lambda: active_on_page(page, "web/V1.0.0") == 5, timeout=60, what="five web instances on the page")
    assert len(instances_in_store(suite, "web", "V1.0.0")) == 5
    # The graph says the size now, not the architecture's (2).
    assert "size 5" in (page.locator("svg [data-element='web'] text[data-cluster='V1.0.0']").text_content() or "")
    shoot("5-resized")

    # Plan the upgrade to V1.1.0, look at it, apply it.
    page.fill("input[aria-label=version]", "V1.1.0")
    page.click("button:has-text('Plan')")
    page.wait_for_selector("[data-plan] h2:has-text('to shop V1.1.0')")
    assert page.locator("[data-plan] tbody tr").count() == 3 * 3 + 5 * 2  # three new web instances; five old stop and go
    shoot("6-plan-the-upgrade")
    page.click("button:has-text('Deploy')")
    wait_until(lambda: active_on_page(page, "web/V1.1.0") == 3 and "web/V1.0.0" not in cluster_rows(page), timeout=90,
               what="the upgraded web tier on the page")
    assert suite.solution(DOMAIN, SOLUTION).version == "V1.1.0"
    assert len(instances_in_store(suite, "web", "V1.1.0")) == 3
    shoot("7-upgraded")

    # A change stopped half-way: grow to 10, terminate, and the page says the solution is held.
    page.fill("input[aria-label='size of web V1.1.0']", "10")
    page.click("[data-cluster-row='web/V1.1.0'] button:has-text('Resize')")
    resized = page.wait_for_selector("[data-cluster-row='web/V1.1.0'] .message.ok:has-text('task ')").inner_text()
    # The page shows the resize running (not a task that ended just before) before Terminate is pressed.
    page.wait_for_selector(f"[data-running^='{resized.split()[1]}']")
    page.click("button:has-text('Terminate')")
    page.wait_for_selector(".badge.held", timeout=30000)
    assert suite.solution(DOMAIN, SOLUTION).hold.kind == pb.HOLD_KIND_HELD
    wait_until(lambda: cluster_rows(page)["web/V1.1.0"][2] in ("in transition", "active"), what="the held cluster's state")
    shoot("8-terminated-and-held")

    # Remove it: the page then says it was removed, by whom, when.
    page.fill("input[aria-label='confirm delete']", SOLUTION)
    page.click("button:has-text('Delete')")
    page.wait_for_selector("[data-gone=removed]", timeout=60000)
    assert "was removed by bootstrap" in page.locator("[data-gone]").inner_text()
    try:
        suite.solution(DOMAIN, SOLUTION)
        raise AssertionError("the solution is still in the store")
    except grpc.RpcError as err:
        assert err.code() == grpc.StatusCode.NOT_FOUND
    shoot("9-removed")


def apply_shop(suite: Suite) -> None:
    suite.ok("apply", "-f", str(SHOP))

