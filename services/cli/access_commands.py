"""`orch token` (who may call the gateway) and `orch audit` (who changed what)."""

from __future__ import annotations

import json
import re

import click

from cli.output import emit, output_option, when
from cli.settings import Settings, pass_settings
from orchestration.v1 import gateway_pb2 as gw

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd]?)$")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def _token_fields(token: gw.Token) -> dict[str, object]:
    return {"Name": token.name, "Role": token.role, "Domains": list(token.domains), "Created": when(token.created_unix_ms),
            "CreatedBy": token.created_by, "LastUsed": when(token.last_used_unix_ms)}


def seconds_of(text: str) -> float:
    """"90s", "15m", "2h", "7d" (or plain seconds) as seconds."""
    found = _DURATION.fullmatch(text.strip())
    if not found:
        raise click.BadParameter(f"{text!r}: expected a number and a unit: 90s, 15m, 2h or 7d", param_hint="--since")
    return float(found.group(1)) * _UNIT_SECONDS[found.group(2)]


@click.group()
def token() -> None:
    """Tokens: who may call the gateway, with which role, in which domains."""


@token.command("create")
@click.argument("name")
@click.option("--role", type=click.Choice(["viewer", "approver", "operator", "admin"]), required=True,
              help="viewer reads; approver also approves changes that wait for approval; operator also changes "
                   "solutions; admin also changes the catalog and architectures.")
@click.option("--domain", "domains", multiple=True, help="A domain the token may act in (repeat); every domain when none.")
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table", show_default=True)
@pass_settings
def token_create(settings: Settings, name: str, role: str, domains: tuple[str, ...], output: str) -> None:
    """Create a token and print it (once: only its hash is kept)."""
    gateway = settings.gateway()
    reply = gateway.call(gateway.access.CreateToken, gw.CreateTokenRequest(name=name, role=role, domains=list(domains)))
    if output == "json":
        click.echo(json.dumps({"name": reply.token.name, "token": reply.secret}))
        return
    where = ", ".join(reply.token.domains) or "every domain"
    click.echo(f"token {reply.token.name!r} ({reply.token.role}, {where}); it is shown only now:", err=True)
    click.echo(reply.secret)


@token.command("list")
@output_option
@pass_settings
def token_list(settings: Settings, output: str) -> None:
    """Tokens with their role, domains, creation and last use (never the secret)."""
    gateway = settings.gateway()
    tokens = gateway.call(gateway.access.ListTokens, gw.ListTokensRequest()).tokens
    rows = [[t.name, t.role, ", ".join(t.domains) or "(all)", when(t.created_unix_ms), t.created_by,
             when(t.last_used_unix_ms)] for t in tokens]
    emit(output, [_token_fields(t) for t in tokens], ["NAME", "ROLE", "DOMAINS", "CREATED", "BY", "LAST USED"], rows)


@token.command("revoke")
@click.argument("name")
@pass_settings
def token_revoke(settings: Settings, name: str) -> None:
    """Revoke a token: every gateway refuses it within a second."""
    gateway = settings.gateway()
    gateway.call(gateway.access.RevokeToken, gw.RevokeTokenRequest(name=name))
    click.echo(f"token {name!r} revoked")


@click.group()
def audit() -> None:
    """The audit trail: every change made (or refused) through the gateway."""


@audit.command("list")
@click.option("--domain", default="", help="Only changes in this domain (every domain: global admins only).")
@click.option("--actor", default="", help="Only changes made with this token.")
@click.option("--since", default="", help="Only changes newer than this: 90s, 15m, 2h, 7d.")
@click.option("--limit", default=1000, show_default=True, type=click.IntRange(1, 100000), help="At most this many, newest last.")
@output_option
@pass_settings
def audit_list(settings: Settings, domain: str, actor: str, since: str, limit: int, output: str) -> None:
    """Audit entries, oldest first."""
    gateway = settings.gateway()
    request = gw.ListAuditRequest(domain=domain, actor=actor, since_seconds=seconds_of(since) if since else 0.0, limit=limit)
    entries = gateway.call(gateway.access.ListAudit, request).entries
    documents = [{"Time": when(e.time_unix_ms), "Actor": e.actor, "Channel": e.channel, "Method": e.method,
                  "Target": e.target, "Domain": e.domain, "RequestId": e.request_id, "TraceId": e.trace_id,
                  "Outcome": e.outcome, "Message": e.message, "Reason": e.reason} for e in entries]
    rows = [[when(e.time_unix_ms), e.actor, e.channel, e.method, e.target, e.outcome, e.reason or "-"] for e in entries]
    emit(output, documents, ["TIME", "ACTOR", "VIA", "METHOD", "TARGET", "OUTCOME", "REASON"], rows)


def register(cli: click.Group) -> None:
    cli.add_command(token)
    cli.add_command(audit)
