"""Printing results: tables for people, YAML and JSON (the model-file
structure, capitalised keys) for scripts."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

import click

FORMATS = ("table", "yaml", "json")


def output_option(func: Any) -> Any:
    """The -o/--output option of every read command."""
    return click.option("-o", "--output", type=click.Choice(FORMATS), default="table", show_default=True, help="Output format.")(func)


def as_document(value: Any) -> Any:
    """Messages (or lists of them) as model-file structures."""
    from google.protobuf.message import Message

    from orchestration.model import codec

    if isinstance(value, Message):
        return codec.to_document(value)
    if isinstance(value, (list, tuple)):
        return [as_document(v) for v in value]
    if isinstance(value, dict):
        return {k: as_document(v) for k, v in value.items()}
    return value


def when(unix_ms: int) -> str:
    """A moment for people: local date and time to the second ("-" when unknown)."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(unix_ms / 1000)) if unix_ms else "-"


def emit(fmt: str, data: Any, headers: Sequence[str] = (), rows: Sequence[Sequence[Any]] = ()) -> None:
    """Print data as yaml/json, or the given rows as a table."""
    if fmt == "json":
        click.echo(json.dumps(as_document(data), indent=2))
    elif fmt == "yaml":
        from orchestration.model.yamlsafe import dump_yaml

        click.echo(dump_yaml(as_document(data)), nl=False)
    else:
        click.echo(table(headers, rows), nl=False)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain aligned text table."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    if not rows:
        return "(none)\n"
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    return "\n".join(lines) + "\n"
