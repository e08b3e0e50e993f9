"""Loading untrusted YAML text safely, and writing YAML in the model-file
style. Pure: no I/O.

The loader is a SafeLoader that also bounds the document size and nesting,
refuses aliases (model files never need them; they are the tool of alias
bombs), refuses duplicate keys (a later key would silently replace an earlier
component) and keeps dates as strings (a version such as ``2019-04-08`` is a
name, not a timestamp). Every failure is an InvalidArgument with the line and
column of the problem.
"""

from __future__ import annotations

from typing import Any

import yaml

from orchestration_sdk.status_errors import InvalidArgument

MAX_DOCUMENT_BYTES = 4 * 1024 * 1024
MAX_DEPTH = 64

_TIMESTAMP = "tag:yaml.org,2002:timestamp"
_MERGE = "tag:yaml.org,2002:merge"


class _Refused(yaml.MarkedYAMLError):
    """A well-formed construct this loader refuses; formatted like a syntax error."""


class ModelLoader(yaml.SafeLoader):
    """SafeLoader with bounded nesting, no aliases, no merge keys, no duplicate keys."""

    # Copied, not mutated: SafeLoader's table is shared by every yaml user in the process.
    yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag != _TIMESTAMP]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise _Refused(problem=f"aliases are not allowed (*{event.anchor})", problem_mark=event.start_mark)
        # The composer recurses once per level: bounding it here also bounds the Python stack.
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _Refused(problem=f"nesting deeper than {MAX_DEPTH} levels", problem_mark=self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except (ArithmeticError, LookupError, TypeError, ValueError) as exc:
            # A scalar its tag cannot hold: !!int abc, !!bool maybe, month 13, a 5000-digit integer.
            shown = str(node.value) if isinstance(node, yaml.ScalarNode) else node.id
            shown = shown if len(shown) <= 40 else shown[:37] + "..."
            kind = node.tag.rsplit(":", 1)[-1]
            raise _Refused(problem=f"{shown!r} is not a valid {kind} ({str(exc).split(';')[0]})",
                           problem_mark=node.start_mark) from None

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        # YAML 1.1 reads 1:30 as 90 (base 60); a long chain such as 1:1:1:... costs quadratic time.
        if ":" in str(node.value):
            shown = node.value if len(node.value) <= 20 else node.value[:17] + "..."
            raise _Refused(problem=f"base-60 integers such as {shown!r} are not allowed (quote the value)",
                           problem_mark=node.start_mark)
        return int(super().construct_yaml_int(node))

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == _MERGE:
                raise _Refused(problem="merge keys (<<) are not allowed", problem_mark=key_node.start_mark)
            if isinstance(key_node, yaml.ScalarNode):
                key = self.construct_object(key_node)
                if key in seen:
                    raise _Refused(problem=f"duplicate key {key!r}", problem_mark=key_node.start_mark)
                seen.add(key)
        return super().construct_mapping(node, deep)


ModelLoader.add_constructor("tag:yaml.org,2002:int", ModelLoader.construct_yaml_int)


def decode_document(text: str | bytes) -> str:
    """The document as text, refusing oversized or non-UTF-8 input."""
    if isinstance(text, (bytes, bytearray)):
        if len(text) > MAX_DOCUMENT_BYTES:
            raise InvalidArgument(f"document: {len(text)} bytes is larger than the limit of {MAX_DOCUMENT_BYTES} bytes")
        try:
            return bytes(text).decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise InvalidArgument(f"document: not valid UTF-8 (byte {exc.start})") from None
    if not isinstance(text, str):
        raise InvalidArgument(f"document: expected text, got {type(text).__name__}")
    # A character is at least one byte: only measure when the cheap bound is inconclusive.
    if len(text) > MAX_DOCUMENT_BYTES or len(text.encode("utf-8", "surrogatepass")) > MAX_DOCUMENT_BYTES:
        raise InvalidArgument(f"document: larger than the limit of {MAX_DOCUMENT_BYTES} bytes")
    return text


def load_yaml(text: str | bytes) -> Any:
    """Parse one YAML document from untrusted text; None when it is empty."""
    source = decode_document(text)
    loader: ModelLoader | None = None
    try:
        # The reader checks for unprintable characters while being constructed.
        loader = ModelLoader(source)
        return loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        raise InvalidArgument(_describe(exc)) from None
    except yaml.reader.ReaderError as exc:
        line, column = _position(source, exc.position)
        raise InvalidArgument(f"malformed YAML at line {line}, column {column}: {exc.reason}") from None
    except yaml.YAMLError as exc:
        raise InvalidArgument(f"malformed YAML: {exc}") from None
    finally:
        if loader is not None:
            loader.dispose()


def load_parameters(text: str) -> Any:
    """A configuration string read as YAML by the same loader as documents.

    None when it is not YAML at all (a template or free text holds no
    parameters, as in SolAr); InvalidArgument when it is YAML this loader
    refuses (aliases, merge keys, duplicate keys, too deep, too large), so
    that a few hundred bytes cannot expand into billions of items."""
    try:
        return load_yaml(text)
    except InvalidArgument as exc:
        if str(exc).startswith("malformed YAML"):
            return None
        raise


def _describe(exc: yaml.MarkedYAMLError) -> str:
    """'malformed YAML at line L, column C: problem (context)', 1-based."""
    mark = exc.problem_mark or exc.context_mark
    problem = exc.problem or exc.context or "syntax error"
    if exc.context and exc.problem:
        problem = f"{exc.problem} ({exc.context})"
    what = "YAML" if isinstance(exc, _Refused) else "malformed YAML"
    if mark is None:
        return f"{what}: {problem}"
    return f"{what} at line {mark.line + 1}, column {mark.column + 1}: {problem}"


def _position(source: str, offset: int) -> tuple[int, int]:
    """1-based line and column of a character offset."""
    before = source[:offset]
    return before.count("\n") + 1, offset - (before.rfind("\n") + 1) + 1


class _ModelDumper(yaml.SafeDumper):
    """SafeDumper writing multi-line strings as block scalars, never anchors."""

    def ignore_aliases(self, data: Any) -> bool:
        # Our own loader refuses aliases, so never write one.
        return True


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    if "\n" in value:
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|")
    if value == "" or ":" in value:
        # As SolAr writes them: "" for empty, quotes around controller names and URLs.
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style='"')
    return dumper.represent_scalar("tag:yaml.org,2002:str", value)


_ModelDumper.add_representer(str, _represent_str)


def dump_yaml(obj: Any) -> str:
    """YAML text of a plain dict/list/str/int structure, keys in their given order."""
    return yaml.dump(
        obj,
        Dumper=_ModelDumper,
        sort_keys=False,
        default_flow_style=False,
        allow_unicode=True,
        width=1 << 20,
        indent=2,
    )
