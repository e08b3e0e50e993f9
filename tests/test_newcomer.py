"""A newcomer does the whole job in the web console (tests/newcomer.py):
sign in, deploy from the catalog, watch, resize, plan and apply a version
change, terminate, remove; each step checked against the store."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from newcomer import apply_shop, walk
from suite import Suite, needs_chromium, running_suite

pytestmark = needs_chromium


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Suite]:
    home = tmp_path_factory.mktemp("newcomer")
    with running_suite(home) as running:
        apply_shop(running)
        yield running
    # The page's live stream ends with the console: the gateway stopped without being killed.
    assert "did not stop" not in (home / "up.log").read_text()


def test_a_newcomer_does_the_whole_job_in_the_console(browser: Any, suite: Suite) -> None:
    console = json.loads(suite.ok("info", "-o", "json"))["console"].rstrip("/")
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        walk(page, suite, console)
    finally:
        page.close()
    assert errors == []
