"""Who may do what: roles, the scope of a token and the right each call
needs. Pure rules without I/O; the gateway's gRPC gate, its bus and its
console apply the same table.

A token has one role and names its domains, or none (a global token):

- ``viewer`` reads everything in its domains (model, solutions, tasks,
  events, watches, plans);
- ``approver`` is a viewer that also approves or rejects the changes that
  wait for approval (never one it asked for itself);
- ``operator`` is a viewer that also changes solutions (deploy, state,
  size, terminate, resume, delete);
- ``admin`` is an operator that also changes the catalog, architectures
  and its domains' audit trail; only a *global* admin manages domains, the
  whole model and tokens.

A domain outside a token's scope is always answered PERMISSION_DENIED,
whether it exists or not, so a token learns nothing of other domains.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum, IntEnum

from orchestration_sdk.status_errors import InvalidArgument, PermissionDenied


class Role(IntEnum):
    VIEWER = 1
    APPROVER = 2
    OPERATOR = 3
    ADMIN = 4

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> Role:
        try:
            return cls[text.strip().upper()]
        except KeyError:
            raise InvalidArgument(f"role: {text!r} is not one of viewer, approver, operator, admin") from None


class Scope(Enum):
    DOMAIN = "domain"  # the request's domain (all domains when it names none)
    GLOBAL = "global"  # the whole suite: a global token
    ANY = "any"  # any token; the answer holds only what it may see


@dataclass(frozen=True)
class Right:
    role: Role
    scope: Scope
    changes: bool  # a change is audited; a read is not
    only: frozenset[Role] = frozenset()  # when given: these roles alone (not every role above `role`)


def _read(scope: Scope = Scope.DOMAIN) -> Right:
    return Right(Role.VIEWER, scope, False)


def _change(role: Role, scope: Scope = Scope.DOMAIN) -> Right:
    return Right(role, scope, True)


OPERATE = _change(Role.OPERATOR)
# Approving a change: approvers and admins, not operators (who ask for changes).
APPROVE = Right(Role.APPROVER, Scope.DOMAIN, True, frozenset({Role.APPROVER, Role.ADMIN}))
ADMINISTER = _change(Role.ADMIN)
MANAGE = _change(Role.ADMIN, Scope.GLOBAL)

# The right each call of the gateway needs, by method name (the same name
# on the bus and in the console).
RIGHTS: dict[str, Right] = {
    # Administration.
    "Apply": ADMINISTER,  # a model or domain document needs MANAGE (checked once its kind is known)
    "ResetModel": MANAGE,
    "StoreModel": MANAGE,
    "RetrieveModel": _read(Scope.GLOBAL),
    "ListDomains": _read(Scope.ANY),
    "StoreDomain": MANAGE,
    "RetrieveDomain": _read(),
    "RemoveDomain": MANAGE,
    # Catalog and architectures.
    **{m: _read() for m in ("ListComponents", "ListComponentVersions", "RetrieveComponent",
                            "ListArchitectures", "ListArchitectureVersions", "RetrieveArchitecture")},
    **{m: ADMINISTER for m in ("StoreComponent", "RemoveComponent", "StoreArchitecture", "RemoveArchitecture")},
    # Solutions.
    **{m: _read() for m in ("ListSolutions", "RetrieveSolution", "ReadSolution", "SummarizeSolution", "PlanSolution",
                            "ListElements", "RetrieveElement", "ListClusters", "RetrieveCluster", "ListInstances",
                            "RetrieveInstance", "WatchStatus", "ListRevisions", "DiffRevisions")},
    **{m: OPERATE for m in ("RemoveSolution", "DeploySolution", "UpdateSolution", "ResumeSolution", "UpdateCluster",
                            "UpdateInstance", "RollbackSolution", "SetFailurePolicy", "PauseSolution")},
    **{m: APPROVE for m in ("ApproveSolution", "RejectSolution")},
    # Tasks and events.
    **{m: _read() for m in ("ListTasks", "RetrieveTask", "ListEvents", "RetrieveEvent", "WatchEvents")},
    "TerminateTask": OPERATE,
    # Access.
    "CreateToken": MANAGE,
    "ListTokens": Right(Role.ADMIN, Scope.GLOBAL, False),
    "RevokeToken": MANAGE,
    "ListAudit": Right(Role.ADMIN, Scope.DOMAIN, False),
    "SetDomainPolicy": ADMINISTER,
    "GetDomainPolicy": _read(),
}


@dataclass(frozen=True)
class Principal:
    """Who is calling: a token's name, role and domains (empty: global)."""

    name: str
    role: Role
    domains: frozenset[str] = frozenset()

    @property
    def is_global(self) -> bool:
        return not self.domains

    def sees(self, domain: str) -> bool:
        return self.is_global or domain in self.domains

    def describe(self) -> str:
        where = "globally" if self.is_global else "in " + ", ".join(sorted(self.domains))
        return f"token {self.name!r} is {_article(self.role)} {self.role.label} {where}"


def _article(role: Role) -> str:
    return "an" if role.label[0] in "aeiou" else "a"


def check(principal: Principal, method: str, domain: str = "") -> Right:
    """The right `method` needs, if `principal` holds it for `domain`
    (empty: all domains); else PermissionDenied naming what it would need."""
    right = RIGHTS.get(method)
    if right is None:
        raise PermissionDenied(f"{method}: no token may call it")
    if right.scope is Scope.ANY:
        return right
    needs_global = right.scope is Scope.GLOBAL or not domain
    in_scope = principal.is_global or (not needs_global and domain in principal.domains)
    if (principal.role in right.only if right.only else principal.role >= right.role) and in_scope:
        return right
    where = (f"in domain {domain!r}" if not needs_global else "globally" if right.scope is Scope.GLOBAL
             else "for all domains (name one of the token's domains)")
    roles = " or ".join(r.label for r in sorted(right.only)) if right.only else right.role.label
    raise PermissionDenied(f"{method} needs the {roles} role {where}; {principal.describe()}")


def require_global_admin(principal: Principal, what: str) -> None:
    """For a call whose right depends on its content (Apply of a whole model or a domain)."""
    if principal.role < Role.ADMIN or not principal.is_global:
        raise PermissionDenied(f"{what} needs the admin role globally; {principal.describe()}")


TOKEN_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
# The name of the token kept in $ORCH_HOME/token (a global admin); no stored token may take it.
BOOTSTRAP = "bootstrap"


def check_token_name(name: str) -> str:
    if not TOKEN_NAME.fullmatch(name):
        raise InvalidArgument(f"token name {name!r}: use 1-63 of a-z, 0-9, '_' and '-', starting with a letter or digit")
    if name == BOOTSTRAP:
        raise InvalidArgument(f"token name {name!r} is reserved for the token in $ORCH_HOME/token")
    return name


def split_token(token: str) -> tuple[str, str] | None:
    """A stored token's name and secret (``<name>.<secret>``); None for any other text."""
    name, dot, secret = token.partition(".")
    if not dot or not secret or not TOKEN_NAME.fullmatch(name):
        return None
    return name, secret
