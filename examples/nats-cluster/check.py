"""Check the deployed nats-cluster example: every NATS node has a route to
every other one (one cluster), and every web instance can publish through it.

    python examples/nats-cluster/check.py [DOMAIN [SOLUTION]]

Reads the solution with the `orch` CLI (same ORCH_HOME as `orch up`), asks
each NATS node's monitoring endpoint (/routez) and each web instance (GET /).
Prints one line per instance; exits 0 when all is well, 1 otherwise.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def orch(*args: str) -> str:
    beside = Path(sys.executable).parent / "orch"
    program = str(beside) if beside.exists() else shutil.which("orch") or "orch"
    return subprocess.run([program, *args], check=True, capture_output=True, text=True).stdout


def get_json(url: str) -> tuple[int, Any]:
    try:
        with _NO_PROXY.open(url, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")
    except OSError as err:
        return 0, {"error": str(err)}


def instances(solution: dict[str, Any], element: str) -> dict[str, dict[str, Any]]:
    clusters = solution["Elements"].get(element, {}).get("Clusters", {})
    return {uuid: i for cluster in clusters.values() for uuid, i in (cluster.get("Instances") or {}).items()}


def main(domain: str = "examples", name: str = "nats-cluster") -> int:
    solution = json.loads(orch("solution", "get", domain, name, "-o", "json"))
    nodes, web = instances(solution, "nats"), instances(solution, "web")
    healthy = bool(nodes) and bool(web)
    names = {f"nats-{uuid}" for uuid in nodes}
    for uuid, node in sorted(nodes.items()):
        monitor = parse_qs(urlsplit(node["Endpoint"]).query).get("monitor", ["?"])[0]
        _, routez = get_json(f"http://127.0.0.1:{monitor}/routez")
        routes = {r["remote_name"] for r in routez.get("routes") or []}
        ok = node["State"] == "active" and routes == names - {f"nats-{uuid}"}
        healthy &= ok
        print(f"{'ok  ' if ok else 'FAIL'} nats {uuid} {node['State']} {node['Endpoint']}: "
              f"routes to {len(routes)} of {len(names) - 1} other nodes")
    for uuid, instance in sorted(web.items()):
        code, report = get_json(instance["Endpoint"] + "/")
        ok = code == 200 and report.get("can_publish") is True
        healthy &= ok
        print(f"{'ok  ' if ok else 'FAIL'} web  {uuid} {instance['State']} {instance['Endpoint']}: {json.dumps(report)}")
    print("the example is healthy" if healthy else "the example is NOT healthy")
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
