"""The extra variables of a playbook run: what the engine knows about the
instance, under names that start with `orch_`, over the configuration's
`vars`. Pure: no I/O."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from orchestration_sdk import OperationContext


def extra_vars(ctx: OperationContext, variables: Mapping[str, Any], endpoint: str, operation: str) -> dict[str, Any]:
    """The configuration's `vars`, then (winning over any of the same name):

    - `orch_instance`: uuid, domain, solution, element, cluster, component,
      component_version, operation (the playbook's operation: create, ...,
      adopt, status), operation_id, attempt, adopt (bool);
    - `orch_parameters`: the cluster's parameters (strings);
    - `orch_endpoint`: the instance's endpoint as last recorded ("" before one);
    - `orch_providers`: relationship -> {type, element, cluster, endpoints};
    - `orch_siblings`: the endpoints of the other active members of the cluster.
    """
    out: dict[str, Any] = dict(variables)
    out.update({
        "orch_instance": {
            "uuid": ctx.uuid, "domain": ctx.domain, "solution": ctx.solution, "element": ctx.element,
            "cluster": ctx.cluster, "component": ctx.component, "component_version": ctx.component_version,
            "operation": operation, "operation_id": ctx.operation_id, "attempt": ctx.attempt, "adopt": ctx.adopt,
        },
        "orch_parameters": dict(ctx.parameters),
        "orch_endpoint": endpoint,
        "orch_providers": {
            p.relationship: {"type": p.type, "element": p.element, "cluster": p.cluster, "endpoints": list(p.endpoints)}
            for p in ctx.providers
        },
        "orch_siblings": list(ctx.siblings),
    })
    return out


def status_vars(uuid: str, identity: Mapping[str, str], parameters: Mapping[str, str], endpoint: str,
                variables: Mapping[str, Any]) -> dict[str, Any]:
    """The extra variables of a status run, from the record (no operation runs): as `extra_vars`,
    with `orch_instance.operation` "status", no providers nor siblings."""
    out: dict[str, Any] = dict(variables)
    out.update({"orch_instance": {"uuid": uuid, **identity, "operation": "status"},
                "orch_parameters": dict(parameters), "orch_endpoint": endpoint,
                "orch_providers": {}, "orch_siblings": []})
    return out
