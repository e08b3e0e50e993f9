"""The sim's per-cluster behaviour, read from the cluster's parameters
(strings; lists arrive comma-separated like "start,stop")."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from orchestration_sdk import Permanent

DEFAULT_ENDPOINT = "sim://{element}/{uuid}"


def _names(value: str) -> frozenset[str]:
    return frozenset(part.strip().lower() for part in value.split(",") if part.strip())


def _number(parameters: Mapping[str, str], key: str, default: int) -> int:
    raw = parameters.get(key, "").strip()
    if not raw:
        return default
    try:
        value = int(float(raw))
    except ValueError as err:
        raise Permanent(f"sim: parameter {key}={raw!r} is not a number") from err
    if value < 0:
        raise Permanent(f"sim: parameter {key}={raw!r} must not be negative")
    return value


@dataclass(frozen=True)
class SimSettings:
    """How the sim behaves for one cluster.

    `latency_ms`: sleep per operation. `fail`: operations that fail
    permanently. `fail_retryable`: operations whose attempts 1..`fail_times`
    fail retryably before one succeeds. `endpoint`: pattern with {uuid}
    {element} {cluster} {solution} {domain}.
    """

    latency_ms: int = 0
    fail: frozenset[str] = frozenset()
    fail_retryable: frozenset[str] = frozenset()
    fail_times: int = 1
    endpoint: str = DEFAULT_ENDPOINT

    @classmethod
    def parse(cls, parameters: Mapping[str, str]) -> SimSettings:
        """Settings from `sim_*` parameters; a malformed value fails permanently."""
        return cls(
            latency_ms=_number(parameters, "sim_latency_ms", 0),
            fail=_names(parameters.get("sim_fail", "")),
            fail_retryable=_names(parameters.get("sim_fail_retryable", "")),
            fail_times=_number(parameters, "sim_fail_times", 1),
            endpoint=parameters.get("sim_endpoint", "") or DEFAULT_ENDPOINT,
        )

    def endpoint_of(self, *, uuid: str, element: str, cluster: str, solution: str, domain: str) -> str:
        """The endpoint pattern filled in with the instance's identity."""
        identity = {"uuid": uuid, "element": element, "cluster": cluster, "solution": solution, "domain": domain}
        try:
            return self.endpoint.format_map(identity)
        except (KeyError, IndexError, ValueError, AttributeError) as err:
            allowed = " ".join("{" + k + "}" for k in identity)
            raise Permanent(f"sim: bad sim_endpoint {self.endpoint!r} (placeholders: {allowed})") from err
