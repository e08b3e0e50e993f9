"""The process controller's template language: ``{{ name | filter 'arg' }}``
placeholders over a flat namespace of strings and lists of endpoints. Pure:
no I/O.

Syntax (inside ``{{ }}``, spaces optional)::

    {{port}}                                  a value
    {{ports.client}}                          names may contain . : @ -
    {{siblings}}                              a list, joined with ","
    {{siblings | join ' '}}                   joined with a separator
    {{siblings | format 'nats-route://{host}:{cluster}' | join ', '}}
    {{providers.nats | format '{url}' | first}}
    {{args_extra | default '--verbose'}}      when empty
    {{siblings | count}}  {{env | json}}  {{'{{'}} (a literal)

`format` applies a Python `str.format` pattern to each endpoint of a list
(or to a single value), with the endpoint's parts as fields (see
`endpoint_fields`). An unknown name, filter or field is an error, never
silently left in the output: a typo must not reach a running process.

Expansion is bounded, since a template (or an endpoint it formats) must not
make the controller allocate gigabytes: a format spec's width and precision
are at most `MAX_FORMAT_WIDTH`, also when they come from a nested field
(``{host:>{port}}``); fields are plain names (no ``.attr`` or ``[index]``);
and no value, from one filter or from the whole template, may exceed
`MAX_RENDERED` characters.
"""

from __future__ import annotations

import json
import re
import string
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import parse_qsl, urlsplit

# The widest `format` field (width or precision of a format spec).
MAX_FORMAT_WIDTH = 1000
# The most characters a placeholder, a filter's result or a whole rendered template may hold.
MAX_RENDERED = 1024 * 1024

Value = str | list[str]
Namespace = Mapping[str, Value]


class TemplateError(ValueError):
    """A template that cannot be rendered (syntax, unknown name, filter or field)."""


def endpoint_fields(endpoint: str) -> dict[str, str]:
    """The parts of an endpoint, for `format`.

    ``nats://127.0.0.1:4222?cluster=6222&monitor=8222`` gives `endpoint` (the
    whole text), `scheme` (nats), `host`, `port` (4222), `address`
    (127.0.0.1:4222), `url` (nats://127.0.0.1:4222, without the query),
    `path`, and one field per query parameter (`cluster`, `monitor`). A bare
    ``host:port`` has no scheme; it is also its own `url`.
    """
    fields = {"endpoint": endpoint, "scheme": "", "host": "", "port": "", "address": "", "url": endpoint, "path": ""}
    text = endpoint if "://" in endpoint else f"//{endpoint}"
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        return fields
    host = parts.hostname or ""
    fields.update(scheme=parts.scheme, host=host, port="" if port is None else str(port), path=parts.path)
    fields["address"] = f"{host}:{port}" if port is not None else host
    netloc = parts.netloc
    fields["url"] = f"{parts.scheme}://{netloc}{parts.path}" if parts.scheme else f"{netloc}{parts.path}"
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        fields.setdefault(key, value)
    return fields


def render(template: str, namespace: Namespace, where: str = "template") -> str:
    """Fill every placeholder of `template`; `where` names it in error messages.

    The result holds at most `MAX_RENDERED` characters (TemplateError beyond)."""
    out: list[str] = []
    size = 0
    pos = 0
    while True:
        start = template.find("{{", pos)
        piece = template[pos:] if start < 0 else template[pos:start]
        if start >= 0:
            end = _closing(template, start + 2, where)
            value = evaluate(template[start + 2:end], namespace, where)
            piece += value if isinstance(value, str) else _join(",", value, where)
            pos = end + 2
        size += len(piece)
        _check_size(size, where)
        out.append(piece)
        if start < 0:
            return "".join(out)


def _check_size(size: int, where: str) -> None:
    if size > MAX_RENDERED:
        raise TemplateError(f"{where}: the rendered text would exceed the limit of {MAX_RENDERED} characters "
                            f"(MAX_RENDERED, 1 MiB)")


def _join(separator: str, items: Sequence[str], where: str) -> str:
    """`separator.join(items)`, refused before it is built when it would be too long."""
    _check_size(sum(map(len, items)) + len(separator) * max(0, len(items) - 1), where)
    return separator.join(items)


def _closing(template: str, pos: int, where: str) -> int:
    """Index of the ``}}`` that closes a placeholder (quotes may hold braces)."""
    quote = ""
    while pos < len(template):
        char = template[pos]
        if quote:
            if char == quote:
                quote = ""
        elif char in "'\"":
            quote = char
        elif template.startswith("}}", pos):
            return pos
        pos += 1
    raise TemplateError(f"{where}: a placeholder opened with '{{{{' is never closed")


def _tokens(expression: str, where: str) -> list[tuple[str, str]]:
    """("name"|"text"|"pipe", token) pairs of a placeholder's inside."""
    tokens: list[tuple[str, str]] = []
    pos = 0
    while pos < len(expression):
        char = expression[pos]
        if char.isspace():
            pos += 1
        elif char == "|":
            tokens.append(("pipe", "|"))
            pos += 1
        elif char in "'\"":
            end = expression.find(char, pos + 1)
            if end < 0:
                raise TemplateError(f"{where}: unterminated quote in {{{{{expression}}}}}")
            tokens.append(("text", expression[pos + 1:end]))
            pos = end + 1
        else:
            end = pos
            while end < len(expression) and not expression[end].isspace() and expression[end] not in "|'\"":
                end += 1
            tokens.append(("name", expression[pos:end]))
            pos = end
    return tokens


def evaluate(expression: str, namespace: Namespace, where: str = "template") -> Value:
    """The value of one placeholder's inside (``name | filter 'arg' | ...``)."""
    stages: list[list[tuple[str, str]]] = [[]]
    for kind, text in _tokens(expression, where):
        if kind == "pipe":
            stages.append([])
        else:
            stages[-1].append((kind, text))
    head, *filters = stages
    if len(head) != 1:
        raise TemplateError(f"{where}: {{{{{expression}}}}} must start with one name or quoted text")
    kind, name = head[0]
    if kind == "text":
        value: Value = name
    elif name in namespace:
        value = namespace[name]
    else:
        raise TemplateError(f"{where}: unknown name '{name}' (known: {', '.join(sorted(namespace))})")
    for stage in filters:
        value = _apply(stage, value, where)
    return value


def _apply(stage: list[tuple[str, str]], value: Value, where: str) -> Value:
    if not stage or stage[0][0] != "name":
        raise TemplateError(f"{where}: a '|' must be followed by a filter name ({', '.join(FILTERS)})")
    name, args = stage[0][1], [text for kind, text in stage[1:] if kind == "text"]
    if len(args) != len(stage) - 1:
        raise TemplateError(f"{where}: arguments of filter '{name}' must be quoted")
    arity = FILTERS.get(name)
    if arity is None:
        raise TemplateError(f"{where}: unknown filter '{name}' (known: {', '.join(FILTERS)})")
    if len(args) != arity:
        raise TemplateError(f"{where}: filter '{name}' takes {arity} quoted argument(s), got {len(args)}")
    items = value if isinstance(value, list) else [value]
    if name == "format":
        formatted = list(_format_all(args[0], items, where))
        return formatted if isinstance(value, list) else formatted[0]
    if name == "join":
        return _join(args[0], items, where)
    if name == "first":
        return items[0] if items else ""
    if name == "count":
        return str(len(value)) if isinstance(value, list) else str(int(bool(value)))
    if name == "default":
        return value if value else args[0]
    text = json.dumps(value)  # "json"
    _check_size(len(text), where)
    return text


def _format_all(pattern: str, items: Iterable[str], where: str) -> Iterable[str]:
    """`pattern` applied to each item, stopping once their total would be too long."""
    size = 0
    for item in items:
        text = _format(pattern, item, where)
        size += len(text)
        _check_size(size, where)
        yield text


class _BoundedFormatter(string.Formatter):
    """`str.format_map` over plain field names, with bounded widths and
    precisions, and at most `MAX_RENDERED` characters of fields in all.

    `format_field` receives the spec with its nested fields already filled
    in, so ``{host:>{port}}`` is checked with the port's value as the width.
    """

    def __init__(self, where: str) -> None:
        self.where = where
        self.budget = MAX_RENDERED

    def get_field(self, field_name: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> tuple[Any, str]:
        if not field_name or "." in field_name or "[" in field_name:
            raise ValueError(f"field {{{field_name}}} must be a plain name (no .attribute or [index])")
        return kwargs[field_name], field_name

    def format_field(self, value: Any, format_spec: str) -> Any:
        # Every number in a spec is a width or a precision (a digit as fill is
        # followed by an alignment character, so it never joins one).
        for number in re.findall(r"\d+", format_spec):
            digits = number.lstrip("0")
            if len(digits) > len(str(MAX_FORMAT_WIDTH)) or int(digits or "0") > MAX_FORMAT_WIDTH:
                shown = number if len(number) <= 20 else f"{number[:20]}..."
                raise ValueError(f"width or precision {shown} in format spec {format_spec[:40]!r} exceeds the limit "
                                 f"of {MAX_FORMAT_WIDTH} (MAX_FORMAT_WIDTH)")
        text = super().format_field(value, format_spec)
        self.budget -= len(text)
        if self.budget < 0:
            _check_size(MAX_RENDERED + 1, self.where)
        return text


def _format(pattern: str, item: str, where: str) -> str:
    fields = endpoint_fields(item)
    try:
        return _BoundedFormatter(where).vformat(pattern, (), fields)
    except TemplateError:
        raise
    except KeyError as err:
        known = ", ".join(f"{{{k}}}" for k in fields)
        raise TemplateError(f"{where}: endpoint {item!r} has no field {err} (fields: {known})") from err
    except (ValueError, IndexError) as err:
        shown = pattern if len(pattern) <= 80 else f"{pattern[:80]}..."
        raise TemplateError(f"{where}: bad format pattern {shown!r}: {err}") from err


# Filter name -> number of quoted arguments.
FILTERS: dict[str, int] = {"format": 1, "join": 1, "first": 0, "count": 0, "default": 1, "json": 0}
