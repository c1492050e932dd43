"""Command-line flags generated from the settings model, so a default is written only once.

Each field of :class:`~motex_stream.analysis.settings.ModelSettings` (or a subclass) becomes a
flag whose help text shows the model's own description and default. Flags default to
"not given", and only the flags a user typed reach the model, which then applies its defaults
and validates the values exactly as it does for a config file. A command that cannot honour a
field simply does not offer its flag, so argparse rejects it with a clear message.
"""

from __future__ import annotations

import argparse
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from motex_stream.validation_errors import format_errors


def flag_name(name: str, info: FieldInfo) -> str:
    """``--catalogue`` for a field that names its flag, else ``--field-name``."""
    extra = info.json_schema_extra
    if isinstance(extra, Mapping) and "flag" in extra:
        return str(extra["flag"])
    return "--" + name.replace("_", "-")


def _parse_biso(values: list[str]) -> float | dict[str, float]:
    """``0.4`` (every atom) or ``W=0.3 O=0.6`` (per element)."""
    if len(values) == 1 and "=" not in values[0]:
        return float(values[0])
    table: dict[str, float] = {}
    for item in values:
        element, sep, value = item.partition("=")
        if not sep:
            raise argparse.ArgumentTypeError(f"--biso: expected ELEMENT=VALUE, got {item!r}")
        table[element] = float(value)
    return table


def _argparse_options(name: str, info: FieldInfo) -> dict[str, Any]:
    annotation = info.annotation
    args = typing.get_args(annotation)
    optional = (
        typing.get_origin(annotation) in (typing.Union, types.UnionType) and type(None) in args
    )
    base = next((a for a in args if a is not type(None)), annotation) if optional else annotation
    default = "unset" if info.default is None else info.default
    if isinstance(default, tuple):
        default = " ".join(map(str, default))
    help_text = info.description or name
    if not info.is_required():
        help_text += f" (default: {default})"
    if name == "biso":
        return {"nargs": "+", "metavar": "BISO", "help": help_text}
    if typing.get_origin(base) is tuple:
        return {"nargs": "+", "help": help_text}
    if typing.get_origin(base) is Literal:
        return {"choices": list(typing.get_args(base)), "help": help_text}
    if base is Path:
        return {"type": Path, "help": help_text}
    if base in (int, float, str):
        return {"type": base, "help": help_text}
    raise TypeError(f"no flag type for settings field {name}: {annotation}")


def add_settings_flags(
    parser: argparse.ArgumentParser,
    model: type[BaseModel],
    *,
    exclude: Iterable[str] = (),
    required: Iterable[str] = (),
) -> None:
    """One flag per field of ``model`` (minus ``exclude``); none has an argparse default."""
    skip, need = set(exclude), set(required)
    for name, info in model.model_fields.items():
        if name in skip:
            continue
        options = _argparse_options(name, info)
        flag = flag_name(name, info)
        if "choices" not in options:
            options.setdefault("metavar", flag.lstrip("-").replace("-", "_").upper())
        parser.add_argument(
            flag,
            dest=name,
            default=argparse.SUPPRESS,
            required=name in need,
            **options,
        )


def given_settings(args: argparse.Namespace, model: type[BaseModel]) -> dict[str, Any]:
    """The settings fields the user actually typed, converted for the model."""
    given = {k: v for k, v in vars(args).items() if k in model.model_fields}
    if "biso" in given:
        given["biso"] = _parse_biso(given["biso"])
    return given


def settings_from_args(args: argparse.Namespace, model: type[BaseModel], **fixed: Any) -> BaseModel:
    """Validate the typed flags (plus ``fixed`` values) into ``model``; errors name the flag."""
    try:
        return model.model_validate({**given_settings(args, model), **fixed})
    except ValidationError as exc:
        raise ValueError(describe_validation_error(exc, model)) from None


def describe_validation_error(exc: ValidationError, model: type[BaseModel]) -> str:
    """One line per problem, naming the flag (``--rmax: should be a finite number``)."""

    def as_flag(field: str) -> str:
        info = model.model_fields.get(field)
        return flag_name(field, info) if info is not None else field

    return "; ".join(format_errors(exc, model=model, label=as_flag))
