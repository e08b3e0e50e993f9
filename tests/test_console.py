"""The web console in a real browser (Playwright driving Debian's Chromium)
against a real suite: sign-in, the architecture graph, a solution's live
state, acting from the page, the task timeline, and the rights of a viewer
(no actions shown, forged changes refused, CSRF required)."""

from __future__ import annotations

import json
import os
import re
import signal
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

import models
from orchestration.v1 import gateway_pb2 as gw
from orchestration.v1 import model_pb2 as pb
from suite import DATA, Suite, console_url, needs_chromium, running_suite, signed_in, wait_until

pytestmark = needs_chromium


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Suite]:
    home = tmp_path_factory.mktemp("console")
    with running_suite(home) as running:
        running.ok("apply", "-f", str(DATA / "demo2.yaml"))
        yield running
    # The pages' live streams end with the console: the gateway stopped without being killed.
    assert "did not stop" not in (home / "up.log").read_text()


def test_sign_in_refuses_a_wrong_token_and_sets_no_cookie(browser: Any, suite: Suite) -> None:
    page = browser.new_page()
    page.goto(console_url(suite) + "/")
    page.wait_for_url("**/signin")
    page.fill("input[name=token]", "not-a-token")
    page.click("button[type=submit]")
    page.wait_for_selector("[role=alert]:has-text('not valid')")
    assert page.context.cookies() == []
    response = page.request.get(console_url(suite) + "/api/overview")
    assert response.status == 401
    # A good token: an HttpOnly, SameSite=Strict session cookie, and the overview.
    page.fill("input[name=token]", (suite.home / "token").read_text().strip())
    page.click("button[type=submit]")
    page.wait_for_selector("h1:has-text('Overview')")
    (cookie,) = page.context.cookies()
    assert cookie["name"] == "orch_session" and cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    headers = page.request.get(console_url(suite) + "/").headers
    assert "script-src 'self'" in headers["content-security-policy"]
    page.close()


def test_the_architecture_graph_shows_every_element_and_relationship(browser: Any, suite: Suite) -> None:
    page = signed_in(browser, suite)
    page.goto(console_url(suite) + "/domains/demo/architectures/app/V0.0.0")
    page.wait_for_selector("svg [data-element]")
    elements = page.eval_on_selector_all("svg [data-element]", "nodes => nodes.map(n => n.dataset.element)")
    assert sorted(elements) == ["app", "app-server", "db", "db-server", "ext", "fw", "fw-server", "m2m", "oam", "pub", "tenant"]
    edges = page.eval_on_selector_all("svg [data-edge]", "nodes => nodes.map(n => n.dataset.edge + ' ' + n.dataset.type)")
    architecture = suite.architectures.RetrieveArchitecture(
        gw.RetrieveArchitectureRequest(domain="demo", architecture="app", version="V0.0.0"), metadata=suite.metadata,
        timeout=30).architecture
    expected = {f"{e.name}->{r.element} {pb.DependencyType.Name(r.type).removeprefix('DEPENDENCY_TYPE_').lower()}"
                for e in architecture.elements for c in e.clusters for r in c.relationships}
    assert sorted(edges) == sorted(expected) and len(expected) == 20
    assert "app->db service" in edges and "app->app-server context" in edges
    # Text as well as colour: every element's name is in the page as text.
    for name in elements:
        assert page.locator(f"svg [data-element='{name}'] text").first.text_content() == name
    assert page.errors == []
    page.close()


def test_after_a_deploy_the_solution_view_shows_all_23_instances_active(browser: Any, suite: Suite) -> None:
    task = json.loads(suite.ok("solution", "deploy", "demo", "app", "V0.0.0", "-o", "json"))["task"]
    suite.wait_task("demo", task)
    # The overview's latest events come from the end of the events stream: the root's completion is among them.
    latest = suite.automation.ListEvents(gw.ListEventsRequest(domain="demo", latest=200), metadata=suite.metadata, timeout=30)
    assert any(e.task == task and e.type == pb.EVENT_TYPE_COMPLETION for e in latest.events)
    page = signed_in(browser, suite)
    page.goto(console_url(suite) + "/domains/demo/solutions/app")
    page.wait_for_selector("[data-cluster-row]")
    rows = page.eval_on_selector_all("[data-cluster-row]", "rows => rows.map(r => [...r.cells].map(c => c.innerText))")
    assert len(rows) == 11
    assert sum(int(r[4]) for r in rows) == 23  # instances
    assert sum(int(r[5]) for r in rows) == 23  # active
    # A cluster's instances, paginated.
    page.click("[data-cluster-row='app/V1.0.0']")
    page.wait_for_selector("[data-instances='app/V1.0.0'] tbody tr")
    assert page.locator("[data-instances='app/V1.0.0'] tbody tr").count() == 3
    assert page.errors == []
    page.close()


def test_a_running_deploy_is_live_and_terminate_from_the_console_stops_it(browser: Any, suite: Suite) -> None:
    suite.apply(models.chain("live", [1] * 8, parameters={"sim_latency_ms": 250}))
    page = signed_in(browser, suite)
    task = json.loads(suite.ok("solution", "deploy", "live", "app", "V1", "-o", "json"))["task"]
    page.goto(console_url(suite) + "/domains/live/solutions/app")
    page.wait_for_selector(f"[data-running='{task}']")
    page.wait_for_selector("#live:has-text('live')")

    def active() -> int:
        rows = page.eval_on_selector_all("[data-cluster-row]", "rows => rows.map(r => r.cells[5].innerText)")
        return sum(int(x) for x in rows)

    first = active()
    # The page changes without a reload: more instances become active while we watch.
    wait_until(lambda: active() >= first + 2, timeout=30, what="the page to show more active instances", interval=0.1)
    page.click("button:has-text('Terminate')")
    page.wait_for_selector("text=terminated")
    assert suite.wait_task("live", task).status == pb.TASK_STATUS_TERMINATED
    wait_until(lambda: suite.solution("live", "app").hold.kind == pb.HOLD_KIND_HELD, what="the solution held")
    page.wait_for_selector(".badge.held", timeout=15000)  # live, without a reload
    # Held half-way: each cluster's state says what its counts say, as the CLI and the gateway say it. An
    # operation under way when the task was terminated still finishes: compare once the counts stand still.
    row = re.compile(r"^(\S+)\s+(\S+)\s+\d+\s+\S+\s+(in transition|\S+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)$")

    def counts() -> tuple[gw.SummarizeSolutionResponse, dict[tuple[str, str], list[object]]]:
        found = suite.solutions.SummarizeSolution(gw.SummarizeSolutionRequest(domain="live", solution="app"),
                                                  metadata=suite.metadata, timeout=30)
        return found, {(c.element, c.cluster): [c.label.replace("_", " "), c.instances, c.active, c.inactive, c.initial,
                                                c.failed, c.in_transition] for c in found.clusters}

    def settled() -> tuple[gw.SummarizeSolutionResponse, dict[tuple[str, str], list[object]], str] | None:
        _, before = counts()
        cli = suite.ok("solution", "status", "live", "app")
        summary, after = counts()
        printed = {(m[1], m[2]): [m[3], *map(int, m.groups()[3:])] for line in cli.splitlines()[1:] if (m := row.match(line))}
        return (summary, after, cli) if before == after == printed else None

    summary, expected, cli = wait_until(settled, timeout=30, what="the CLI and the gateway to agree on still counts")

    def shown() -> dict[tuple[str, str], list[object]]:
        rows = page.eval_on_selector_all("[data-cluster-row]", "rows => rows.map(r => [...r.cells].map(c => c.innerText))")
        return {(r[0], r[1]): [r[2].strip(), *map(int, r[4:10])] for r in rows}

    wait_until(lambda: shown() == expected, timeout=15, what=f"the page to agree with the gateway: {expected}")
    assert "held since" in cli
    for label, instances, *columns in expected.values():
        assert sum(columns) == instances, "each instance counted once"
        assert label != "active" or columns[0] == instances
    assert summary.total.label in ("in_transition", "inactive", "initial", "active") and summary.total.instances == 8
    entries = json.loads(suite.ok("audit", "list", "--domain", "live", "-o", "json"))
    assert ("bootstrap", "console", "TerminateTask", "OK") in {(e["Actor"], e["Channel"], e["Method"], e["Outcome"]) for e in entries}
    assert page.errors == []
    page.close()


def test_the_task_view_has_a_timeline_bar_per_instance_transition(browser: Any, suite: Suite) -> None:
    task = json.loads(suite.ok("solution", "deploy", "demo", "app", "V0.0.0", "--solution", "timed", "-o", "json"))["task"]
    assert suite.wait_task("demo", task).status == pb.TASK_STATUS_COMPLETED
    tree = suite.task("demo", task, tree=True)
    transitions = [t for t in tree.subtasks if t.instance and t.transition]
    page = signed_in(browser, suite)
    page.goto(console_url(suite) + f"/tasks/{task}")
    page.wait_for_selector("[data-bar]")
    bars = page.eval_on_selector_all("[data-bar]", "bars => bars.map(b => b.dataset.bar)")
    assert sorted(bars) == sorted(t.uuid for t in transitions) and len(bars) == 23
    assert page.locator("h2:has-text('Tree: ')").inner_text() == f"Tree: {1 + len(tree.subtasks)} tasks"
    page.close()


def test_a_big_task_view_draws_a_timeline_row_per_cluster_and_lists_the_first_2000_tasks(browser: Any, suite: Suite) -> None:
    """2,100 instances in 21 clusters: beyond 400 instance tasks, one row per
    cluster (every cluster shown, not the first 400 instances of one), and
    the tree listed up to its first 2,000 tasks, root, elements and clusters first."""
    suite.apply(models.flat("wide", 100, parameters={"orch_siblings": "ignore"}, elements=21))
    task = json.loads(suite.ok("solution", "deploy", "wide", "app", "V1", "-o", "json"))["task"]
    assert suite.wait_task("wide", task, timeout=300).status == pb.TASK_STATUS_COMPLETED
    tree = suite.task("wide", task, tree=True)
    assert len(tree.subtasks) == 21 + 21 + 2100
    page = signed_in(browser, suite)
    page.goto(console_url(suite) + f"/tasks/{task}")
    page.wait_for_selector("[data-cluster-bar]")
    clusters = page.eval_on_selector_all("[data-cluster-bar]", "bars => bars.map(b => b.dataset.clusterBar)")
    assert clusters == [f"e{i} V1" for i in range(21)]  # as the tree lists them, not sorted by name
    assert page.locator("[data-bar]").count() == 0
    title = page.locator("[data-cluster-bar='e7 V1'] title").text_content()
    assert title.startswith("e7 V1: 100 instance tasks (100 completed)")
    assert page.locator("h2:has-text('Timeline: ')").inner_text() == "Timeline: 2100 instance tasks in 21 clusters"
    assert page.locator("h2:has-text('Tree: ')").inner_text() == f"Tree: {1 + len(tree.subtasks)} tasks"
    rows = page.locator(".tree tbody tr")
    assert rows.count() == 2000
    listed = rows.evaluate_all("rows => rows.slice(0, 43).map(r => r.cells[1].textContent)")
    assert listed == ["solution"] + ["element"] * 21 + ["cluster"] * 21
    assert not page.errors
    page.close()


def test_a_viewer_sees_no_action_and_its_forged_changes_are_refused(browser: Any, suite: Suite) -> None:
    viewer = json.loads(suite.ok("token", "create", "console-viewer", "--role", "viewer", "--domain", "demo", "-o", "json"))["token"]
    page = signed_in(browser, suite, viewer)
    page.goto(console_url(suite) + "/domains/demo/solutions/app")
    page.wait_for_selector("[data-cluster-row]")
    assert page.locator("h2:has-text('Actions')").count() == 0
    assert page.locator("button:has-text('Resize')").count() == 0
    csrf = page.evaluate("fetch('/api/session').then(r => r.json()).then(s => s.csrf)")
    forged = page.evaluate("""csrf => fetch('/api/domains/demo/solutions/app/state', {method: 'POST',
        headers: {'Content-Type': 'application/json', 'X-CSRF-Token': csrf}, body: JSON.stringify({state: 'inactive'})})
        .then(async r => [r.status, (await r.json()).error.message])""", csrf)
    assert forged[0] == 403 and "UpdateSolution needs the operator role in domain 'demo'" in forged[1]
    # Another domain is not even readable.
    other = page.evaluate("fetch('/api/domains/live/solutions/app').then(r => r.status)")
    assert other == 403
    page.close()
    # An operator's change without the CSRF token is refused too, and changes nothing.
    page = signed_in(browser, suite)
    status = page.evaluate("""fetch('/api/domains/demo/solutions/app/state', {method: 'POST',
        headers: {'Content-Type': 'application/json'}, body: JSON.stringify({state: 'inactive'})}).then(r => r.status)""")
    assert status == 403
    assert suite.solution("demo", "app").target == pb.STATE_ACTIVE
    page.close()


def test_the_console_says_reconnecting_while_nats_is_away_and_resumes(browser: Any, suite: Suite) -> None:
    page = signed_in(browser, suite)
    page.goto(console_url(suite) + "/domains/demo/solutions/app")
    page.wait_for_selector("#live:has-text('live')")
    os.kill(suite.services()["nats-server"], signal.SIGKILL)
    page.wait_for_selector("#live:has-text('reconnecting')", timeout=15000)
    # `orch up` restarts nats-server; the gateway reconnects, and so does the page.
    page.wait_for_selector("#live:text-is('live')", timeout=60000)
    page.reload()
    page.wait_for_selector("[data-cluster-row]", timeout=30000)
    assert page.errors == []
    page.close()


def test_sign_in_takes_json_from_this_origin_only(browser: Any, suite: Suite) -> None:
    page = browser.new_page()
    url = console_url(suite) + "/api/signin"
    token = (suite.home / "token").read_text().strip()
    form = page.request.post(url, data=json.dumps({"token": token}), headers={"Content-Type": "text/plain"})
    assert form.status == 400 and "JSON" in form.json()["error"]["message"]
    other = page.request.post(url, data=json.dumps({"token": token}),
                              headers={"Content-Type": "application/json", "Origin": "https://evil.example"})
    assert other.status == 403
    assert page.context.cookies() == []
    page.close()


def test_a_revoked_token_ends_its_live_stream(browser: Any, suite: Suite) -> None:
    token = json.loads(suite.ok("token", "create", "short-stream", "--role", "viewer", "-o", "json"))["token"]
    page = browser.new_page()
    signed = page.request.post(console_url(suite) + "/api/signin", data=json.dumps({"token": token}),
                               headers={"Content-Type": "application/json"})
    assert signed.status == 200
    cookie = "; ".join(f"{c['name']}={c['value']}" for c in page.context.cookies())
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    stream = opener.open(urllib.request.Request(console_url(suite) + "/api/live?domain=demo", headers={"Cookie": cookie}),
                         timeout=30)
    assert stream.readline().startswith(b"event: status")
    suite.ok("token", "revoke", "short-stream")
    revoked = time.monotonic()
    # Changes keep coming (a deploy elsewhere in the domain); the stream ends instead of carrying them.
    suite.ok("solution", "deploy", "demo", "app", "V0.0.0", "--solution", "after-revoke")
    while stream.readline():
        assert time.monotonic() - revoked < 20, "the stream went on after its token was revoked"
    page.close()


def test_what_a_person_typed_survives_live_updates_and_plan_then_deploy_works(browser: Any, suite: Suite) -> None:
    suite.apply(models.flat("forms", 3, maximum=10, parameters={"sim_latency_ms": 100}))
    suite.apply(models.architecture_only(models.flat("forms", 5, maximum=10, version="V2")))
    suite.ok("solution", "deploy", "forms", "app", "V1", "--wait")
    page = signed_in(browser, suite)
    page.goto(console_url(suite) + "/domains/forms/solutions/app")
    page.wait_for_selector("[data-cluster-row='e0/V1']")
    page.wait_for_selector("#live:has-text('live')")
    version, state = page.locator("input[aria-label=version]"), page.locator("select[aria-label=state]")
    size, confirm = page.locator("input[aria-label='size of e0 V1']"), page.locator("input[aria-label='confirm delete']")
    version.fill("V2")
    state.select_option("inactive")
    size.fill("7")
    confirm.fill("not-yet")
    confirm.click()
    page.keyboard.type("-typing")

    def renders() -> int:
        return int(page.eval_on_selector("#main", "m => m.dataset.renders || 0"))

    # Changes made elsewhere redraw the page several times while the person is at it.
    before = renders()
    for n in (4, 3, 4):
        suite.ok("cluster", "set", "forms", "app", "e0", "V1", "--size", str(n), "--wait")
    wait_until(lambda: renders() >= before + 3, timeout=30, what="three live updates")
    page.keyboard.type("!")  # the focus stayed in the field being typed into
    assert (version.input_value(), state.input_value(), size.input_value(), confirm.input_value()) == (
        "V2", "inactive", "7", "not-yet-typing!")

    # Plan, then live updates, then the plan is still there to be applied.
    page.click("button:has-text('Plan')")
    page.wait_for_selector("[data-plan] h2:has-text('to app V2')")
    planned = page.locator("[data-plan] tbody tr").count()
    assert planned == 3  # one more instance: create, configure, start
    before = renders()
    for n in (3, 4):
        suite.ok("cluster", "set", "forms", "app", "e0", "V1", "--size", str(n), "--wait")
    wait_until(lambda: renders() >= before + 2, timeout=30, what="two more live updates")
    assert page.locator("[data-plan] tbody tr").count() == planned
    page.click("button:has-text('Deploy')")
    page.wait_for_selector("text=/task [0-9a-f]{8}/")

    def deployed() -> bool:
        found = suite.solution("forms", "app")
        instances = found.elements[0].clusters[0].instances
        return found.version == "V2" and len(instances) == 5 and all(i.state == pb.STATE_ACTIVE for i in instances)

    wait_until(deployed, timeout=60, what="the deploy of V2 to finish")
    wait_until(lambda: page.locator("button:has-text('Terminate')").is_hidden(), timeout=30, what="its task to end")
    assert suite.solution("forms", "app").version == "V2"
    # The state chosen before all those updates is the one sent.
    page.click("button:has-text('Set state')")
    wait_until(lambda: suite.solution("forms", "app").target == pb.STATE_INACTIVE, timeout=30, what="target inactive")
    assert page.errors == []
    page.close()


def test_the_timeline_shows_each_task_at_its_real_start_and_end_so_the_waves_show(browser: Any, suite: Suite) -> None:
    suite.apply(models.chain("waves", [2, 2, 2], parameters={"sim_latency_ms": 150}))
    task = json.loads(suite.ok("solution", "deploy", "waves", "app", "V1", "--wait", "-o", "json"))["task"]
    tree = suite.task("waves", task, tree=True)
    root = tree.task
    # The root is marked executing as its first operations start (concurrently).
    assert root.started and root.started <= min(t.started for t in tree.subtasks if t.started) + 50_000_000
    page = signed_in(browser, suite)
    page.goto(console_url(suite) + f"/tasks/{task}")
    page.wait_for_selector("[data-bar]")
    # e1 depends on e0 and e2 on e1: their bars begin in three waves, left to right (not all at 0).
    boxes = page.eval_on_selector_all("[data-bar]", """bars => bars.map(b => [b.dataset.bar, Number(b.getAttribute('x')),
        Number(b.getAttribute('x')) + Number(b.getAttribute('width'))])""")
    element_of = {t.uuid: t.element for t in tree.subtasks}
    spans = {e: (min(x for u, x, _ in boxes if element_of[u] == e), max(r for u, _, r in boxes if element_of[u] == e))
             for e in ("e0", "e1", "e2")}
    assert spans["e0"][0] + 100 < spans["e1"][0] and spans["e1"][0] + 100 < spans["e2"][0], spans
    assert spans["e0"][1] < spans["e1"][1] < spans["e2"][1], spans
    # The root's duration is the deploy's: from its start to its end, at least three waves of sim latency.
    took = page.locator("p:has-text('by bootstrap')").inner_text()
    seconds = float(re.search(r"· ([0-9.]+) s ·", took)[1])  # type: ignore[index]
    assert abs(seconds - (root.updated - root.started) / 1e9) < 0.011 and seconds >= 3 * 3 * 0.15, took
    page.close()


def test_events_say_what_they_are_about_and_filter_by_it(browser: Any, suite: Suite) -> None:
    suite.apply(models.chain("told", [2, 1]))
    task = json.loads(suite.ok("solution", "deploy", "told", "app", "V1", "--wait", "-o", "json"))["task"]
    stored = suite.automation.ListEvents(gw.ListEventsRequest(domain="told", latest=1000), metadata=suite.metadata, timeout=30).events
    # An instance's task: one execution event as it begins (create, from initial), one completion (active).
    done = [e for e in stored if e.element == "e0" and e.instance and e.type == pb.EVENT_TYPE_COMPLETION]
    assert len(done) == 2 and all(e.solution == "app" and e.state == pb.STATE_ACTIVE and e.actor == "bootstrap" for e in done), [(e.state, e.transition, e.actor, e.solution) for e in done]
    page = signed_in(browser, suite)
    page.goto(console_url(suite) + "/domains/told/events")
    page.wait_for_selector("[data-event]")

    def rows() -> list[list[str]]:
        return page.eval_on_selector_all("[data-event]", "rows => rows.map(r => [...r.cells].map(c => c.innerText.trim()))")

    assert len(rows()) == len(stored) and {r[2] for r in rows()} == {"app"}
    page.fill("[data-filters] input[name=element]", "e0")
    page.select_option("[data-filters] select[name=type]", "completion")
    page.select_option("[data-filters] select[name=state]", "active")
    page.click("[data-filters] button[type=submit]")
    wait_until(lambda: len(rows()) == 2, timeout=15, what="the completions of e0's two instances")
    assert all(r[3] == "e0" and r[1] == "completion" and r[5] != "-" and r[7] == "active" for r in rows())
    assert page.url.endswith("/domains/told/events?element=e0&type=completion&state=active")
    # A value in the list narrows to it: one instance's events.
    instance = next(r[5] for r in rows() if r[5] != "-")
    page.click("[data-filters] a:text-is('clear')")
    page.wait_for_function("() => !location.search")
    page.wait_for_selector("[data-event]")
    page.click(f"[data-event] a:text-is('{instance}')")
    wait_until(lambda: len(rows()) == 2 and all(r[5] == instance for r in rows()), timeout=15,
               what="that instance's execution and completion")
    # It completes on start, or on the reconfigure its dependant's arrival may add to the same task.
    assert [r[1] for r in rows()] == ["completion", "execution"] and rows()[1][6] == "create"
    assert rows()[0][6] in ("start", "reconfigure")
    assert all(r[9] != task[:8] for r in rows())  # its own task, not the root
    assert page.errors == []
    page.close()
