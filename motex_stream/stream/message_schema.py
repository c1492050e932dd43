"""The one check of a received message: the published JSON Schema, nothing looser.

Why one check: every reader of the wire (``watch``, the dashboard, the closed-loop agent, a
replay resuming into its JSON Lines output) subscribes to, or reads, what anyone on the
beamline network may have written, and the dashboard's page and the agent's queue act on it.
What they accept must be exactly what the service publishes, as the schema (``docs/schema/``,
shipped in this package as ``schema/``) defines it. A looser quick check used to sit beside
this one and accepted messages the schema rejects (a string frame number in a change, atom 0);
:func:`~motex_stream.stream.messages.validate_message` now raises on :func:`problem`. The schema
cannot make strings harmless (an element symbol is any string): the page puts every string in
as text, never as HTML.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Mapping
from importlib import resources
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match

SCHEMA_FILE = "contributions-v1.schema.json"


def schema_text() -> str:
    """The packaged copy of ``docs/schema/contributions-v1.schema.json`` (a test keeps the
    two identical)."""
    files = resources.files("motex_stream.stream").joinpath("schema", SCHEMA_FILE)
    return files.read_text(encoding="utf-8")


@functools.cache
def validator() -> Draft202012Validator:
    """The schema's validator, built once (the schema itself is checked on the way)."""
    schema = json.loads(schema_text())
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def _non_finite(value: Any, path: str = "") -> str | None:
    """The path of a NaN or infinity in ``value``: JSON has none (the service sends null),
    but Python's parser accepts them, and the schema's ``number`` does too."""
    if isinstance(value, float):
        return None if math.isfinite(value) else (path or "/")
    if isinstance(value, Mapping):
        for k, v in value.items():
            found = _non_finite(v, f"{path}/{k}")
            if found is not None:
                return found
    elif isinstance(value, list):
        for i, v in enumerate(value):
            found = _non_finite(v, f"{path}/{i}")
            if found is not None:
                return found
    return None


def problem(message: Any) -> str | None:
    """Why ``message`` is not a v1 message as published (one line), or None when it is."""
    error = best_match(validator().iter_errors(message))
    if error is not None:
        where = "/" + "/".join(str(p) for p in error.absolute_path)
        text = error.message if len(error.message) <= 200 else error.message[:200] + "…"
        return f"{where}: {text}"
    bad = _non_finite(message)
    if bad is not None:
        return f"{bad}: not a finite number (the schema's numbers are finite or null)"
    return None
