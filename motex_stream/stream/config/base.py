"""What every table of the service configuration shares: strictness and readable errors.

Why this module: a beamline service is started once and left alone for a shift, so a typo must
stop it at start-up with the key named (``models[2].rmax: ...``), not hours later when the
first frame arrives. pydantic does the checking; :mod:`motex_stream.validation_errors`
words its errors, one line per problem, with keys named as in the TOML file.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, get_args

from pydantic import BaseModel, ConfigDict, ValidationError

from motex_stream.validation_errors import format_errors, key_path, toml_text

#: ``json_schema_extra`` marker of a string field that is a path relative to the config file
#: (for fields not typed ``Path``, such as a glob).
CONFIG_RELATIVE = "config_relative"
#: ``json_schema_extra`` key: how the reference page shows a default computed at load time.
DEFAULT_DOC = "default_doc"


class ConfigError(ValueError):
    """A configuration value that cannot be used; the message names the key."""


class ConfigModel(BaseModel):
    """Base of the service's own tables: unknown keys and non-finite numbers are errors."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, allow_inf_nan=False, validate_default=True
    )


def validate_table(
    model: type[BaseModel], raw: Any, where: str, problems: list[str]
) -> BaseModel | None:
    """``model`` validated from ``raw``; on failure the problems are appended and None returned.

    Collecting instead of raising lets one start-up report every mistake in the file at once.
    """
    if not isinstance(raw, Mapping):
        problems.append(f"{where}: must be a table, got {raw!r}")
        return None
    bad_bools = [
        key
        for key, value in raw.items()
        if isinstance(value, bool) and _is_number_field(model, key)
    ]
    for key in bad_bools:
        problems.append(f"{key_path([where, key])}: must be a number, got {toml_text(raw[key])}")
    try:
        validated = model.model_validate(dict(raw))
    except ValidationError as exc:
        problems.extend(format_errors(exc, where, model))
        return None
    return None if bad_bools else validated


def _is_number_field(model: type[BaseModel], key: str) -> bool:
    """pydantic's lax mode reads ``true`` as 1; in a config file that is always a slip."""
    field = model.model_fields.get(key)
    if field is None:
        return False
    kinds = get_args(field.annotation) or (field.annotation,)
    return any(k in (int, float) for k in kinds)


def path_fields(model: type[BaseModel]) -> list[str]:
    """Fields holding paths that are relative to the config file's folder."""
    names = []
    for name, field in model.model_fields.items():
        kinds = get_args(field.annotation) or (field.annotation,)
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        if Path in kinds or extra.get(CONFIG_RELATIVE):
            names.append(name)
    return names


def resolve_paths(
    model: type[BaseModel], raw: Mapping[str, Any], base: Path, where: str, problems: list[str]
) -> dict[str, Any]:
    """``raw`` with its path fields made absolute against ``base`` (``~`` expanded).

    Done before validation, so a model only ever holds the paths the service will open.
    Values that are not strings are left for validation to reject.
    """
    resolved = dict(raw)
    for name in path_fields(model):
        value = resolved.get(name)
        if not isinstance(value, str):
            continue
        if not value.strip():
            problems.append(f"{key_path([where, name])}: must be a non-empty path")
            continue
        path = Path(value).expanduser()
        resolved[name] = os.path.normpath(path if path.is_absolute() else base / path)
    return resolved


def check_keys(raw: Mapping[str, Any], allowed: Mapping[str, Any], where: str) -> list[str]:
    """Problems for keys of ``raw`` not in ``allowed`` (for tables that are not models)."""
    problems = []
    for key in raw:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), list(allowed), n=1)
            hint = f"did you mean {close[0]}?" if close else f"allowed: {', '.join(allowed)}"
            problems.append(f"{key_path([where, str(key)])}: unknown key ({hint})")
    return problems
