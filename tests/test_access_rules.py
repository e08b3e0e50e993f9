"""The rules of who may do what (orchestration.model.access), without NATS:
every gateway call has a right, roles nest, domains scope, and a refusal
names the role and domain the call would need."""

from __future__ import annotations

import pytest

from orchestration.model.access import (
    BOOTSTRAP,
    RIGHTS,
    Principal,
    Role,
    Scope,
    check,
    check_token_name,
    require_global_admin,
    split_token,
)
from orchestration.v1 import gateway_pb2 as gw
from orchestration_sdk.status_errors import InvalidArgument, PermissionDenied

VIEWER_A = Principal("v", Role.VIEWER, frozenset({"a"}))
OPERATOR_A = Principal("o", Role.OPERATOR, frozenset({"a"}))
ADMIN_A = Principal("d", Role.ADMIN, frozenset({"a"}))
ADMIN = Principal("root", Role.ADMIN)
VIEWER = Principal("all", Role.VIEWER)


def gateway_methods() -> list[str]:
    return [m.name for s in gw.DESCRIPTOR.services_by_name.values() for m in s.methods]


def test_every_gateway_call_has_a_right_and_no_right_is_for_a_call_that_does_not_exist() -> None:
    assert sorted(gateway_methods()) == sorted(RIGHTS)


def test_an_unknown_call_is_refused_to_everyone() -> None:
    with pytest.raises(PermissionDenied, match="no token may call it"):
        check(ADMIN, "DropEverything", "a")


@pytest.mark.parametrize("method", sorted(m for m, r in RIGHTS.items() if not r.changes and r.scope is Scope.DOMAIN
                                          and r.role is Role.VIEWER))
def test_a_viewer_reads_its_domain_and_nothing_else(method: str) -> None:
    check(VIEWER_A, method, "a")
    with pytest.raises(PermissionDenied, match=f"{method} needs the viewer role in domain 'b'; token 'v' is a viewer in a"):
        check(VIEWER_A, method, "b")


@pytest.mark.parametrize("method", sorted(m for m, r in RIGHTS.items() if r.changes))
def test_a_viewer_changes_nothing(method: str) -> None:
    with pytest.raises(PermissionDenied, match="needs the (operator|admin|approver or admin) role"):
        check(VIEWER_A, method, "a")
    with pytest.raises(PermissionDenied):
        check(VIEWER, method, "a")


def test_an_operator_changes_solutions_and_tasks_but_not_the_catalog() -> None:
    for method in ("DeploySolution", "UpdateSolution", "UpdateCluster", "UpdateInstance", "ResumeSolution",
                   "RemoveSolution", "TerminateTask", "PlanSolution", "ListSolutions"):
        check(OPERATOR_A, method, "a")
    for method in ("StoreComponent", "RemoveArchitecture", "Apply", "ListAudit"):
        with pytest.raises(PermissionDenied, match=f"{method} needs the admin role in domain 'a'; token 'o' is an operator in a"):
            check(OPERATOR_A, method, "a")
    with pytest.raises(PermissionDenied, match="in domain 'b'"):
        check(OPERATOR_A, "DeploySolution", "b")


def test_a_domain_admin_changes_its_catalog_but_only_a_global_admin_manages_domains_and_tokens() -> None:
    for method in ("StoreComponent", "StoreArchitecture", "RemoveComponent", "Apply", "ListAudit", "DeploySolution"):
        check(ADMIN_A, method, "a")
    for method in ("StoreDomain", "RemoveDomain", "ResetModel", "StoreModel", "CreateToken", "RevokeToken", "ListTokens"):
        with pytest.raises(PermissionDenied, match=f"{method} needs the admin role globally; token 'd' is an admin in a"):
            check(ADMIN_A, method, "a")
        check(ADMIN, method, "")
    with pytest.raises(PermissionDenied):
        require_global_admin(ADMIN_A, "Apply of a model document")
    require_global_admin(ADMIN, "Apply of a model document")


def test_a_call_for_all_domains_needs_a_global_token() -> None:
    with pytest.raises(PermissionDenied, match="for all domains"):
        check(VIEWER_A, "WatchStatus", "")
    check(VIEWER, "WatchStatus", "")
    check(VIEWER, "RetrieveModel", "")
    with pytest.raises(PermissionDenied, match="globally"):
        check(VIEWER_A, "RetrieveModel", "")


def test_listing_domains_is_open_to_every_token_and_each_sees_its_own() -> None:
    check(VIEWER_A, "ListDomains")
    assert VIEWER_A.sees("a") and not VIEWER_A.sees("b")
    assert VIEWER.sees("b")


def test_token_names_and_presented_tokens() -> None:
    assert check_token_name("ci-bot_1") == "ci-bot_1"
    for bad in ("", "Bob", "-x", "a.b", "a" * 64, "é", BOOTSTRAP):
        with pytest.raises(InvalidArgument):
            check_token_name(bad)
    assert split_token("ci.s3cr-et_") == ("ci", "s3cr-et_")
    assert split_token("plain-bootstrap-secret") is None
    assert split_token("ci.") is None
    assert split_token("Bad.secret") is None
    with pytest.raises(InvalidArgument, match="viewer, approver, operator, admin"):
        Role.parse("root")


@pytest.mark.parametrize("role, allowed", [(Role.VIEWER, False), (Role.APPROVER, True), (Role.OPERATOR, False),
                                           (Role.ADMIN, True)])
def test_only_approvers_and_admins_approve_or_reject(role: Role, allowed: bool) -> None:
    who = Principal("p", role, frozenset({"a"}))
    for method in ("ApproveSolution", "RejectSolution"):
        if allowed:
            check(who, method, "a")
        else:
            with pytest.raises(PermissionDenied, match=f"{method} needs the approver or admin role"):
                check(who, method, "a")
    # An approver changes nothing else.
    if role == Role.APPROVER:
        with pytest.raises(PermissionDenied):
            check(who, "DeploySolution", "a")
