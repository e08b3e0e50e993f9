"""Attack: use an instance's readiness probe to reach what it should not. The
process controller may run as root; a probe (`ready_http`, `ready_tcp`) that
could name any host and port would let a model author scan or call other
hosts and services from it. A probe reaches only the instance's own ports
on loopback, and a redirect is never followed."""

from __future__ import annotations

import http.server
import re
import threading
from pathlib import Path

import pytest

from controllers.process.readiness import _http
from controllers.process.settings import ProcessSettings
from controllers.process.spec import launch_spec
from orchestration_sdk import Permanent


def spec_of(probe: str, target: str, ports: str = "", tmp: Path = Path("/tmp")) -> str:
    parameters = {"command": "sleep 1", "port": "auto", probe: target}
    if ports:
        parameters["ports"] = ports
    values = {"uuid": "u-1", "host": "127.0.0.1", "port": "4100", "ports.admin": "4101"}
    return launch_spec(ProcessSettings.parse(parameters), values, tmp, "nobody").probe.target


def test_a_probe_of_the_instances_own_port_on_loopback_is_allowed() -> None:
    assert spec_of("ready_http", "http://{{host}}:{{port}}/healthz") == "http://127.0.0.1:4100/healthz"
    assert spec_of("ready_tcp", "localhost:{{ports.admin}}", ports="admin") == "localhost:4101"


@pytest.mark.parametrize(("probe", "target"), [
    ("ready_http", "http://169.254.169.254/latest/meta-data/"),  # a cloud metadata service
    ("ready_http", "http://10.0.0.7:{{port}}/"),  # another host
    ("ready_http", "http://127.0.0.1:22/"),  # a port of the machine that is not the instance's
    ("ready_http", "file:///etc/shadow"),
    ("ready_http", "http://127.0.0.1:{{port}}@10.0.0.7/"),  # user-info trick: the host is 10.0.0.7
    ("ready_tcp", "db.internal:5432"),
    ("ready_tcp", "127.0.0.1:4222"),  # the suite's NATS
])
def test_a_probe_of_anything_else_is_refused_at_start_with_the_reason(probe: str, target: str) -> None:
    with pytest.raises(Permanent, match=re.escape(f"{probe}=") + ".*may reach only the instance's own ports on loopback|"
                       "must be an http"):
        spec_of(probe, target)


def test_a_redirect_to_elsewhere_is_not_followed() -> None:
    hits: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the http.server API
            hits.append(self.path)
            self.send_response(302)
            self.send_header("Location", "/elsewhere")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        assert _http(f"http://127.0.0.1:{server.server_port}/healthz") is True  # a 3xx answers: ready
        assert hits == ["/healthz"], "the redirect was followed"
    finally:
        server.shutdown()
