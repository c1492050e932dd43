"""Per-run settings from a Bluesky start document: ``motex_model`` and ``motex_overrides``.

A start document is written by users at the beamline, so a bad entry must not stop the
service: an unknown model falls back to the default one, and each unknown or invalid override
key is logged as an error and ignored while the valid ones still apply. The checking itself is
:func:`motex_stream.analysis.settings.apply_run_overrides`, the one per-run validator.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Annotated, Any

from pydantic import TypeAdapter, ValidationError

from motex_stream.analysis.settings import (
    RUN_OVERRIDABLE,
    LiveModelSettings,
    apply_run_overrides,
)
from motex_stream.stream.config.base import format_errors
from motex_stream.stream.config.loader import Config

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunSettings:
    """What one run uses: the chosen model with its accepted overrides applied."""

    model: LiveModelSettings
    applied: Mapping[str, Any] = field(default_factory=dict)
    rejected: tuple[str, ...] = ()  # keys (or "motex_model") that were refused, for logs/UI


def resolve_run_overrides(config: Config, start_metadata: Mapping[str, Any]) -> RunSettings:
    """Pick the model named by ``motex_model`` and apply ``motex_overrides`` from a start doc."""
    rejected: list[str] = []
    name = start_metadata.get("motex_model")
    model = config.models[0]
    if name is not None:
        try:
            model = config.model(str(name))
        except KeyError:
            log.error(
                "start document asks for motex_model=%r, which is not configured (known: %s); "
                "using %r",
                name,
                ", ".join(m.name for m in config.models),
                model.name,
            )
            rejected.append("motex_model")
    raw = start_metadata.get("motex_overrides") or {}
    if not isinstance(raw, Mapping):
        log.error(
            "motex_overrides must be a table of settings, got %s; ignored", type(raw).__name__
        )
        return RunSettings(model, MappingProxyType({}), (*rejected, "motex_overrides"))
    applied, bad = validate_overrides(raw, model)
    rejected.extend(bad)
    if applied:
        model = apply_run_overrides(model, applied)
    return RunSettings(model, MappingProxyType(applied), tuple(rejected))


def validate_overrides(
    raw: Mapping[str, Any], settings: LiveModelSettings | None = None
) -> tuple[dict[str, Any], list[str]]:
    """Accepted per-run overrides (validated values) and the rejected keys, each logged.

    Keys are applied one at a time, so one bad key does not take the good ones with it. With
    ``settings`` the whole model is re-validated (``refit`` against ``catalogue_size``);
    without, each value is checked against its field alone.
    """
    applied: dict[str, Any] = {}
    rejected: list[str] = []
    current = settings
    for key, value in raw.items():
        try:
            if current is not None:
                current = apply_run_overrides(current, {key: value})
                candidate = getattr(current, key)
            else:
                candidate = _check_alone(str(key), value)
        except ValueError as exc:
            log.error("motex_overrides.%s=%r rejected: %s", key, value, _one_line(exc))
            rejected.append(str(key))
            continue
        applied[str(key)] = candidate
    return applied, rejected


def _check_alone(key: str, value: Any) -> Any:
    """``value`` validated against the field ``key`` alone (no cross-field checks)."""
    if key not in RUN_OVERRIDABLE:
        raise ValueError(
            f"{key} is not a per-run setting (allowed: {', '.join(sorted(RUN_OVERRIDABLE))})"
        )
    info = LiveModelSettings.model_fields[key]
    return TypeAdapter(Annotated[info.annotation, info]).validate_python(value)


def _one_line(exc: ValueError) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(format_errors(exc))
    return str(exc)
