"""Attack: change things without leaving a trace. A console change refused
for a missing or forged CSRF token was not audited, and a deploy's audit
entry did not say which solution and version. Every accepted and refused
change is audited with actor, domain, full target and outcome."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

import models
from suite import Suite, console_session, running_suite


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Suite]:
    with running_suite(tmp_path_factory.mktemp("audit")) as running:
        running.apply(models.flat("aud", 1))
        yield running


def audit_of(suite: Suite, actor: str) -> list[tuple[str, str, str, str, str]]:
    entries = json.loads(suite.ok("audit", "list", "--actor", actor, "-o", "json"))
    return [(e["Channel"], e["Method"], e["Domain"], e["Target"], e["Outcome"]) for e in entries]


def test_a_console_change_with_a_forged_csrf_token_is_refused_and_audited(suite: Suite) -> None:
    token = json.loads(suite.ok("token", "create", "forger", "--role", "operator", "--domain=aud", "-o", "json"))["token"]
    console, opener, cookie = console_session(suite, token)
    forged = urllib.request.Request(console + "/api/domains/aud/solutions/app/delete",
                                    data=json.dumps({"confirm": "app"}).encode(),
                                    headers={"Content-Type": "application/json", "Cookie": cookie,
                                             "X-CSRF-Token": "forged"}, method="POST")
    with pytest.raises(urllib.error.HTTPError) as refused:
        opener.open(forged, timeout=30)
    assert refused.value.code == 403
    assert audit_of(suite, "forger") == [("console", "RemoveSolution", "aud", "aud/app", "PERMISSION_DENIED")]


def test_a_deploy_is_audited_with_its_solution_architecture_and_version(suite: Suite) -> None:
    suite.ok("solution", "deploy", "aud", "app", "V1", "--solution", "named")
    suite.ok("solution", "deploy", "aud", "app", "V1")
    entries = json.loads(suite.ok("audit", "list", "--domain", "aud", "-o", "json"))
    deploys = [(e["Target"], e["Outcome"]) for e in entries if e["Method"] == "DeploySolution"]
    assert ("aud/named from app V1", "OK") in deploys and ("aud/app from app V1", "OK") in deploys
