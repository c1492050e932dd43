"""A settings ValidationError said in the user's words: one line per problem, key named.

Why one module: the same pydantic models are filled from command-line flags, from the
service's TOML file and from a start document's ``motex_overrides``; each of those callers
used to word pydantic's errors its own way. Here the wording is written once, and a caller
only says how a field is named where the user typed it (``--rmax`` on the command line,
``models[0].rmax`` in the TOML file, ``refit`` in a start document).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails


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
        message += f" (got {toml_text(error['input'])})"
    return _SHOULD.sub("should", message).replace(" after validation", "")


def toml_text(value: Any) -> str:
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
    exc: ValidationError,
    where: str = "",
    model: type[BaseModel] | None = None,
    label: Callable[[str], str] | None = None,
) -> list[str]:
    """One line per problem, ``<key path>: <what is wrong>``, prefixed by ``where``.

    ``label`` names a top-level field as the user wrote it (a command-line flag, say).

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
        if label is not None and field and isinstance(field[0], str):
            field = [label(field[0]), *field[1:]]
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


def one_line(exc: ValueError) -> str:
    """Any ValueError as one line; a ValidationError worded as :func:`format_errors` does."""
    if isinstance(exc, ValidationError):
        return "; ".join(format_errors(exc))
    return str(exc)
