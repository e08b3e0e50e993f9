"""The YAML model files (SolAr format) to and from the protobuf model. Pure: no I/O.

The mapping between YAML keys and proto fields is one table per message
(``orchestration.model.codec_fields``); parsing and dumping both walk those tables, so a
field is added in one place. Parsing is strict: unknown keys, wrong types,
unknown enum names and map keys that disagree with the entry they hold are
rejected with the path of the offending entry and key. Semantic checks
(references, cycles, sizes) are ``orchestration.model.validation``'s job.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from google.protobuf.message import Message

from orchestration.model.codec_fields import ARCHITECTURE, COMPONENT, DOMAIN, MODEL, SPECS, EnumCodec, Field, One, Spec
from orchestration.model.yamlsafe import MAX_DOCUMENT_BYTES, dump_yaml, load_yaml
from orchestration.v1 import model_pb2
from orchestration_sdk.status_errors import InvalidArgument

__all__ = [
    "MAX_DOCUMENT_BYTES",
    "Document",
    "dump_architecture",
    "dump_component",
    "dump_domain",
    "dump_model",
    "dump_yaml",
    "parse_document",
    "to_document",
]

INT32 = (-(2**31), 2**31 - 1)
INT64 = (-(2**63), 2**63 - 1)

# Top-level keys that make a document (without Domains, Component or Architecture) a domain.
_DOMAIN_KEYS = {"Name", "Components", "Architectures", "Solutions", "Tasks", "Events", "Controllers"}


@dataclass(frozen=True)
class Document:
    """A parsed YAML document: what it held, always as a whole Model."""

    kind: str  # "model" | "domain" | "component" | "architecture"
    model: model_pb2.Model


def parse_document(text: str | bytes, domain: str = "") -> Document:
    """Parse a model, domain, component or architecture document into a Model."""
    data = load_yaml(text)
    if data is None or data == {}:
        raise InvalidArgument("document: empty; expected a model, domain, component or architecture")
    if not isinstance(data, dict):
        raise InvalidArgument(f"document: expected a mapping at the top level, got {_type_name(data)}")
    if "Domains" in data:
        model = _parse(data, MODEL, "")
        assert isinstance(model, model_pb2.Model)
        return Document("model", model)
    if "Component" in data or "Architecture" in data:
        kind, spec, attr = ("component", COMPONENT, "components") if "Component" in data else ("architecture", ARCHITECTURE, "architectures")
        body = dict(data)
        name = _domain_name(body.pop("Domain", None), domain, "Domain")
        entry = _parse(body, spec, "")
        wrapper = model_pb2.Domain(name=name)
        getattr(wrapper, attr).append(entry)
        return Document(kind, model_pb2.Model(domains=[wrapper]))
    if _DOMAIN_KEYS & data.keys():
        parsed = _parse(data, DOMAIN, "")
        assert isinstance(parsed, model_pb2.Domain)
        parsed.name = _domain_name(parsed.name or None, domain, "Name")
        return Document("domain", model_pb2.Model(domains=[parsed]))
    shown = ", ".join(str(k) for k in list(data)[:5])
    raise InvalidArgument(
        f"document: cannot tell what it holds (top-level keys {shown}); expected Domains (model), "
        "Name or Components (domain), Component or Architecture"
    )


def _domain_name(in_document: Any, requested: str, key: str) -> str:
    """The domain of a partial document: from the document or the caller, never two different ones."""
    if in_document is not None and not isinstance(in_document, str):
        raise InvalidArgument(f"{key}: expected a string, got {_type_name(in_document)}")
    if in_document and requested and in_document != requested:
        raise InvalidArgument(f"{key}: the document names domain {in_document!r} but domain {requested!r} was given")
    name = in_document or requested
    if not name:
        raise InvalidArgument(f"{key}: the document does not name its domain; pass the domain")
    return name


def to_document(message: Message) -> dict[str, Any]:
    """A message as the plain structure of its YAML form (capitalised keys)."""
    spec = SPECS.get(message.DESCRIPTOR.full_name)
    if spec is None:
        raise TypeError(f"no YAML form for {message.DESCRIPTOR.full_name}")
    return _to_dict(message, spec)


def dump_model(model: model_pb2.Model) -> str:
    """YAML text of a whole model."""
    return dump_yaml(to_document(model))


def dump_domain(domain: model_pb2.Domain) -> str:
    """YAML text of a domain document."""
    return dump_yaml(to_document(domain))


def dump_component(component: model_pb2.Component, domain: str = "") -> str:
    """YAML text of a component document, naming its domain when given."""
    return dump_yaml(_with_domain(domain, to_document(component)))


def dump_architecture(architecture: model_pb2.Architecture, domain: str = "") -> str:
    """YAML text of an architecture document, naming its domain when given."""
    return dump_yaml(_with_domain(domain, to_document(architecture)))


def _with_domain(domain: str, document: dict[str, Any]) -> dict[str, Any]:
    return {"Domain": domain, **document} if domain else document


# ---- parsing ---------------------------------------------------------------


def _at(path: str, key: str) -> str:
    return f"{path}/{key}" if path else key


def _where(path: str) -> str:
    return path or "document"


def _type_name(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, bool):
        return f"boolean {value}"
    if isinstance(value, (int, float)):
        return f"{type(value).__name__} {value}"
    if isinstance(value, str):
        return f"string {value[:40]!r}"
    return type(value).__name__


def _mapping(value: Any, path: str) -> dict[str, Any]:
    """value as a mapping with string keys; null is an empty mapping (SolAr writes {} or nothing)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidArgument(f"{_where(path)}: expected a mapping, got {_type_name(value)}")
    for key in value:
        if not isinstance(key, str):
            raise InvalidArgument(f"{_at(path, str(key))}: keys must be strings, got {_type_name(key)} (quote it)")
    return value


def _parse(data: Any, spec: Spec, path: str) -> Message:
    """One message from its YAML mapping."""
    mapping = _mapping(data, path)
    message = spec.cls()
    fields = spec.by_key()
    for key, value in mapping.items():
        field = fields.get(key)
        if field is None:
            expected = ", ".join(f.key for f in spec.fields)
            raise InvalidArgument(f"{_at(path, key)}: unknown key (expected {expected})")
        _set(message, field, value, _at(path, key))
    if spec.fill is not None:
        spec.fill(message)
    return message


def _set(message: Message, field: Field, value: Any, path: str) -> None:
    kind = field.kind
    if isinstance(kind, Spec):
        target = getattr(message, field.attr)
        for key, entry in _mapping(value, path).items():
            child = _parse(entry, kind, _at(path, key))
            accepted = kind.keys(child)
            if key not in accepted:
                raise InvalidArgument(f"{_at(path, key)}: key must equal {kind.key_form} ({accepted[0]!r})")
            target.append(child)
    elif isinstance(kind, One):
        getattr(message, field.attr).CopyFrom(_parse(value, kind.spec, path))
    elif isinstance(kind, EnumCodec):
        setattr(message, field.attr, _enum(value, kind, path))
    elif kind == "str":
        setattr(message, field.attr, _string(value, path))
    elif kind == "amount":
        setattr(message, field.attr, _amount(value, path))
    elif kind == "int32":
        setattr(message, field.attr, _integer(value, INT32, "int32", path))
    elif kind == "int64":
        setattr(message, field.attr, _integer(value, INT64, "int64", path))
    elif kind == "strs":
        getattr(message, field.attr).extend(_strings(value, path))
    elif kind == "strmap":
        getattr(message, field.attr).update(_string_map(value, path))
    elif kind == "bool":
        if not isinstance(value, bool):
            raise InvalidArgument(f"{path}: expected true or false, got {type(value).__name__}")
        setattr(message, field.attr, value)
    else:  # pragma: no cover - the schema tables only use the kinds above
        raise AssertionError(f"unknown field kind {kind!r}")


def _amount(value: Any, path: str) -> str:
    """A count (3) or a share ("25%"), as text."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, str) and value.strip():
        return value.strip()
    raise InvalidArgument(f"{path}: expected a count (3) or a share (25%), got {_type_name(value)}")


def _string(value: Any, path: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidArgument(f"{path}: expected a string, got {_type_name(value)} (quote it)")
    return value


def _integer(value: Any, bounds: tuple[int, int], what: str, path: str) -> int:
    if value is None:
        return 0
    # bool is an int in Python, but `Min: yes` is a mistake, not 1.
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgument(f"{path}: expected an integer, got {_type_name(value)}")
    if not bounds[0] <= value <= bounds[1]:
        raise InvalidArgument(f"{path}: {value} is out of range for {what}")
    return value


def _strings(value: Any, path: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise InvalidArgument(f"{path}: expected a list of strings, got {_type_name(value)}")
    return [_string(item, f"{path}[{index}]") for index, item in enumerate(value)]


def _string_map(value: Any, path: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidArgument(f"{path}: expected a map of strings, got {_type_name(value)}")
    return {_string(key, f"{path} key"): _string(item, _at(path, str(key))) for key, item in value.items()}


def _enum(value: Any, codec: EnumCodec, path: str) -> int:
    # "" (and nothing) is unspecified: SolAr writes `State: ""` for a state not yet known.
    if value is None or value == "":
        return 0
    if not isinstance(value, str):
        raise InvalidArgument(f"{path}: expected a {codec.what} name, got {_type_name(value)}")
    if value not in codec.by_name:
        expected = ", ".join(codec.by_name)
        raise InvalidArgument(f"{path}: unknown {codec.what} {value!r} (expected {expected})")
    return codec.by_name[value]


# ---- dumping ---------------------------------------------------------------


def _to_dict(message: Message, spec: Spec) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for field in spec.fields:
        if isinstance(field.kind, One):
            if not field.optional or message.HasField(field.attr):
                out[field.key] = _to_dict(getattr(message, field.attr), field.kind.spec)
            continue
        value = getattr(message, field.attr)
        if field.optional and message.DESCRIPTOR.fields_by_name[field.attr].has_presence \
                and not isinstance(field.kind, Spec) and field.kind not in ("strs", "strmap"):
            if not message.HasField(field.attr):  # an optional field given, even as 0, is written
                continue
        elif field.optional and (not value or (field.default_from and value == getattr(message, field.default_from))):
            continue
        out[field.key] = _dump_value(value, field)
    return out


def _dump_value(value: Any, field: Field) -> Any:
    kind = field.kind
    if isinstance(kind, Spec):
        entries: dict[str, Any] = {}
        for child in value:
            key = kind.keys(child)[0]
            if key in entries:
                # A dict would silently keep only one of them.
                raise InvalidArgument(f"{field.key}/{key}: duplicate entry")
            entries[key] = _to_dict(child, kind)
        return entries
    if isinstance(kind, EnumCodec):
        return kind.names.get(value, "")
    if kind == "strs":
        return list(value)
    if kind == "strmap":
        return dict(sorted(value.items()))
    if kind in ("int32", "int64"):
        return int(value)
    if kind == "bool":
        return bool(value)
    return str(value)

