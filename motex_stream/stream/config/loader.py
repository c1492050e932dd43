"""Reading the service's TOML file into one validated :class:`Config`.

Layout (every key, its default and its range: ``docs/configuration.md``)::

    [service]              # state_dir (required), metrics, queue
    [[models]]             # one or more: motex_stream.analysis.settings.LiveModelSettings
    [[sources]]            # zero or more, chosen by type
    [[sinks]]              # zero or more, chosen by type

Paths (starting_model, reference, state_dir, a jsonl path, api_key_file, a files glob) are
made absolute against the config file's folder before validation, so the service opens the
same files whatever directory it was started from. Every problem in the file is reported at
once, one line each, naming the key.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, PrivateAttr, field_validator

from motex_stream.analysis.settings import LiveModelSettings
from motex_stream.stream.config.base import (
    ConfigError,
    ConfigModel,
    check_keys,
    resolve_paths,
    validate_table,
)
from motex_stream.stream.config.secrets import api_key_entries
from motex_stream.stream.config.service import ServiceConfig
from motex_stream.stream.config.sinks import SINK_TYPES, SinkConfig
from motex_stream.stream.config.sources import SOURCE_TYPES, SourceConfig


class Config(ConfigModel):
    """The whole file: one service, one or more models, its sources and sinks."""

    service: ServiceConfig
    models: tuple[LiveModelSettings, ...] = Field(min_length=1)
    sources: tuple[SourceConfig, ...] = ()
    sinks: tuple[SinkConfig, ...] = ()
    _path: Path | None = PrivateAttr(None)

    @field_validator("models")
    @classmethod
    def _unique_model_names(
        cls, models: tuple[LiveModelSettings, ...]
    ) -> tuple[LiveModelSettings, ...]:
        _reject_duplicates([m.name for m in models], "model")
        return models

    @field_validator("sources")
    @classmethod
    def _unique_source_names(cls, sources: tuple[Any, ...]) -> tuple[Any, ...]:
        # Two sources with one name would share metric series and be told apart by nobody.
        _reject_duplicates([s.name for s in sources], "source")
        return sources

    @field_validator("sinks")
    @classmethod
    def _unique_sink_names(cls, sinks: tuple[Any, ...]) -> tuple[Any, ...]:
        # the same for sinks: their errors are labelled by name (sink=...)
        _reject_duplicates([s.name for s in sinks], "sink")
        return sinks

    @property
    def path(self) -> Path | None:
        """The file this config was read from (None when parsed from a mapping)."""
        return self._path

    @property
    def default_model(self) -> str:
        """The first model: used by runs whose start document names none."""
        return self.models[0].name

    def model(self, name: str) -> LiveModelSettings:
        """The model called ``name``; KeyError if none is."""
        for m in self.models:
            if m.name == name:
                return m
        raise KeyError(name)


def _reject_duplicates(names: list[str], what: str) -> None:
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"duplicate {what} name(s) {', '.join(dupes)}")


_TABLES = {"service": "table", "models": "array", "sources": "array", "sinks": "array"}


def load_config(path: str | Path) -> Config:
    """Read and validate a TOML config; relative paths resolve against its folder."""
    path = Path(path)
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    return parse_config(data, base_dir=path.resolve().parent, path=path)


def parse_config(
    data: Mapping[str, Any], base_dir: str | Path = ".", path: Path | None = None
) -> Config:
    """Validate an already-parsed mapping (what :func:`load_config` does after reading).

    Raises :class:`ConfigError` listing every problem, one ``key.path: reason`` per line.
    """
    base = Path(base_dir)
    problems = api_key_entries(data)
    if problems:  # refuse before anything else is read, and never echo the value
        raise _error(problems, path)
    problems = check_keys(data, _TABLES, "")
    service = None
    if "service" not in data:
        problems.append("service: missing [service] table (it needs at least state_dir)")
    else:
        raw = data["service"]
        if isinstance(raw, Mapping):
            raw = resolve_paths(ServiceConfig, raw, base, "service", problems)
        service = validate_table(ServiceConfig, raw, "service", problems)
    raw_models = _array_of_tables(data, "models", problems)
    if not raw_models and isinstance(data.get("models", []), list):
        problems.append("models: at least one [[models]] entry is required")
    models = [
        validate_table(
            LiveModelSettings,
            _resolved(LiveModelSettings, raw, base, f"models[{i}]", problems),
            f"models[{i}]",
            problems,
        )
        for i, raw in enumerate(raw_models)
    ]
    sources = [
        _typed_entry(SOURCE_TYPES, raw, base, "sources", i, problems)
        for i, raw in enumerate(_array_of_tables(data, "sources", problems))
    ]
    sinks = [
        _typed_entry(SINK_TYPES, raw, base, "sinks", i, problems)
        for i, raw in enumerate(_array_of_tables(data, "sinks", problems))
    ]
    if problems:
        raise _error(problems, path)
    fields = {"service": service, "models": models, "sources": sources, "sinks": sinks}
    config = validate_table(Config, fields, "", problems)
    if config is None:
        raise _error(problems, path)
    assert isinstance(config, Config)
    config._path = path
    return config


def _typed_entry(
    types: Mapping[str, type[ConfigModel]],
    raw: Any,
    base: Path,
    table: str,
    index: int,
    problems: list[str],
) -> BaseModel | None:
    """One ``[[sources]]``/``[[sinks]]`` entry validated by the model its ``type`` names."""
    where = f"{table}[{index}]"
    if not isinstance(raw, Mapping):
        problems.append(f"{where}: must be a table, got {raw!r}")
        return None
    kind = raw.get("type")
    model = types.get(kind) if isinstance(kind, str) else None
    if model is None:
        choices = ", ".join(types)
        got = "missing" if kind is None else f"got {kind!r}"
        problems.append(f"{where}.type: must be one of {choices} ({got})")
        return None
    raw = dict(raw)
    if "name" in model.model_fields:
        raw.setdefault("name", f"{kind}-{index}")
    return validate_table(model, _resolved(model, raw, base, where, problems), where, problems)


def _resolved(model: type[BaseModel], raw: Any, base: Path, where: str, problems: list[str]) -> Any:
    return resolve_paths(model, raw, base, where, problems) if isinstance(raw, Mapping) else raw


def _array_of_tables(data: Mapping[str, Any], key: str, problems: list[str]) -> list[Any]:
    value = data.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        problems.append(f"{key}: must be an array of tables ([[{key}]])")
        return []
    return value


def _error(problems: list[str], path: Path | None) -> ConfigError:
    where = f"{path}: " if path is not None else ""
    if len(problems) == 1:
        return ConfigError(f"{where}{problems[0]}")
    lines = "\n".join(f"  {p}" for p in problems)
    return ConfigError(f"{where}{len(problems)} problems:\n{lines}")
