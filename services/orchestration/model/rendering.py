"""Configuration rendering (as SolAr does it): templates with ``{{name}}``
placeholders filled from parameter maps. Pure: no I/O."""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Mapping

from orchestration.model.yamlsafe import load_parameters

_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z0-9_.:-]+)\s*\}\}")


def parse_parameters(text: str) -> dict[str, str]:
    """A configuration text read as a flat parameter map.

    A YAML mapping gives its keys; scalar values become strings, lists are
    joined with commas, mappings become JSON. Anything else (empty text, a
    template, a list) holds no parameters. Read by the documents' safe
    loader: YAML it refuses (aliases, ...) is an InvalidArgument.
    """
    if not text.strip():
        return {}
    return dict(_parameters(text))


@functools.lru_cache(maxsize=256)
def _parameters(text: str) -> tuple[tuple[str, str], ...]:
    """parse_parameters' work, remembered: planning a solution reads the
    same texts (its architecture's, elements alike) once per cluster."""
    data = load_parameters(text)
    if not isinstance(data, dict):
        return ()
    params: dict[str, str] = {}
    for key, value in data.items():
        if isinstance(value, list):
            params[str(key)] = ",".join("" if v is None else str(v) for v in value)
        elif isinstance(value, dict):
            params[str(key)] = json.dumps(value, sort_keys=True, default=str)
        elif isinstance(value, bool):
            params[str(key)] = "true" if value else "false"
        else:
            params[str(key)] = "" if value is None else str(value)
    return tuple(params.items())


def render(template: str, parameters: Mapping[str, str]) -> str:
    """Fill ``{{name}}`` placeholders; unknown ones stay as they are."""
    return _PLACEHOLDER.sub(lambda m: parameters.get(m.group(1), m.group(0)), template)


def digest(*parts: str) -> str:
    """A short stable digest of configuration texts (to detect a change)."""
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()[:16]
