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
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from urllib.parse import parse_qsl, urlsplit

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
    """Fill every placeholder of `template`; `where` names it in error messages."""
    out: list[str] = []
    pos = 0
    while True:
        start = template.find("{{", pos)
        if start < 0:
            out.append(template[pos:])
            return "".join(out)
        out.append(template[pos:start])
        end = _closing(template, start + 2, where)
        value = evaluate(template[start + 2:end], namespace, where)
        out.append(value if isinstance(value, str) else ",".join(value))
        pos = end + 2


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
        formatted = [_format(args[0], item, where) for item in items]
        return formatted if isinstance(value, list) else formatted[0]
    if name == "join":
        return args[0].join(items)
    if name == "first":
        return items[0] if items else ""
    if name == "count":
        return str(len(value)) if isinstance(value, list) else str(int(bool(value)))
    if name == "default":
        return value if value else args[0]
    return json.dumps(value)  # "json"


def _format(pattern: str, item: str, where: str) -> str:
    fields = endpoint_fields(item)
    try:
        return pattern.format_map(fields)
    except KeyError as err:
        known = ", ".join(f"{{{k}}}" for k in fields)
        raise TemplateError(f"{where}: endpoint {item!r} has no field {err} (fields: {known})") from err
    except (ValueError, IndexError) as err:
        raise TemplateError(f"{where}: bad format pattern {pattern!r}: {err}") from err


# Filter name -> number of quoted arguments.
FILTERS: dict[str, int] = {"format": 1, "join": 1, "first": 0, "count": 0, "default": 1, "json": 0}
