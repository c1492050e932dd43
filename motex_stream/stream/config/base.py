"""What every table of the service configuration shares: strictness and readable errors.

Why this module: a beamline service is started once and left alone for a shift, so a typo must
stop it at start-up with the key named (``models[2].rmax: ...``), not hours later when the
first frame arrives. pydantic does the checking; this module turns its errors into one line per
problem, written in the words of the TOML file rather than pydantic's.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, get_args

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic_core import ErrorDetails

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


def key_path(loc: Iterable[str | int]) -> str:
    """``("models", 0, "rmax")`` → ``models[0].rmax``."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SHOULD = re.compile(r"^(Input|Tuple|List|String|Dictionary|Value) should")
_TYPE_LABELS = {"int", "float", "str", "bool", "list", "tuple", "dict", "none", "union"}


def _is_branch_label(part: str | int) -> bool:
    """True for the member label pydantic inserts into a location inside a union field."""
    return isinstance(part, str) and (not _IDENT.match(part) or part in _TYPE_LABELS)


def _describe(error: ErrorDetails, model: type[BaseModel] | None) -> str:
    """One error's message, in the config's words."""
    kind = error["type"]
    if kind == "missing":
        return "is required"
    if kind == "extra_forbidden":
        return "unknown key" + _suggestion(str(error["loc"][-1]), model)
    message = str(error["msg"])
    for prefix in ("Value error, ", "Assertion failed, "):
        message = message.removeprefix(prefix)
    if message.startswith("Input should"):
        message += f" (got {_toml(error['input'])})"
    return _SHOULD.sub("should", message).replace(" after validation", "")


def _toml(value: Any) -> str:
    """A value as the user wrote it in TOML (``true``, not ``True``)."""
    return str(value).lower() if isinstance(value, bool) else repr(value)


def _suggestion(key: str, model: type[BaseModel] | None) -> str:
    if model is None:
        return ""
    known = list(model.model_fields)
    close = difflib.get_close_matches(key, known, n=1)
    if close:
        return f" (did you mean {close[0]}?)"
    return f" (allowed here: {', '.join(sorted(known))})"


def format_errors(
    exc: ValidationError, where: str = "", model: type[BaseModel] | None = None
) -> list[str]:
    """One line per problem, ``<key path>: <what is wrong>``, prefixed by ``where``.

    A value that fits no member of a union (``biso``: a number or a table) produces one error
    per member from pydantic; the member whose structure matched (its error lies deeper) is
    the one the user meant, otherwise the members' complaints are joined with "or".
    """
    groups: dict[str, list[tuple[int, str, str]]] = {}
    prefix = [where] if where else []
    for error in exc.errors():
        loc = list(error["loc"])
        branch = next((i for i, p in enumerate(loc) if _is_branch_label(p)), None)
        field = loc if branch is None else loc[:branch]
        depth = 0 if branch is None else len(loc) - branch - 1
        shown = field + ([] if branch is None else loc[branch + 1 :])
        entry = (depth, key_path(prefix + shown), _describe(error, model))
        groups.setdefault(key_path(prefix + field), []).append(entry)
    lines = []
    for found in groups.values():
        deepest = max(depth for depth, _, _ in found)
        by_path: dict[str, list[str]] = {}
        for depth, path, message in found:
            if depth == deepest and message not in by_path.setdefault(path, []):
                by_path[path].append(message)
        for path, messages in by_path.items():
            text = " or ".join(messages)
            lines.append(f"{path}: {text}" if path else text)
    return lines


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
        problems.append(f"{key_path([where, key])}: must be a number, got {_toml(raw[key])}")
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
