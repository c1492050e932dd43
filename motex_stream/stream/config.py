"""The service's TOML configuration, validated into frozen dataclasses.

Why validate up front: a beamline service is started once and then left alone for a shift, so a
typo must fail at start-up with the offending key named (``models[2].rmax``), not hours later
when the first frame arrives. Every default below is documented on its field.

Layout (paths are relative to the folder holding the config file)::

    [service]
    state_dir = "state"          # required: where the service keeps its state
    metrics_port = 9464          # Prometheus /metrics; binds metrics_host (127.0.0.1)
    queue_size = 64
    policy = "all"               # "all" (never drop) or "latest" (skip stale frames)

    [[models]]
    name = "keggin"
    starting_model = "109725.xyz"
    permute = ["W"]
    reference = "DanMAX_AlphaKeggin.gr"   # optional: prepare on this, else on the first frame

    [[sources]]
    type = "zmq"
    address = "tcp://127.0.0.1:5578"

    [[sinks]]
    type = "jsonl"
    path = "out/contributions.jsonl"

Per-run settings come from the Bluesky start document (``motex_model``, ``motex_overrides``);
see :func:`resolve_run_overrides`. A Tiled API key is never read from this file: secrets in a
config file end up in version control and in logs, so only ``MOTEX_TILED_API_KEY`` or an
``api_key_file`` are accepted.
"""

from __future__ import annotations

import logging
import math
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

log = logging.getLogger(__name__)

API_KEY_ENV = "MOTEX_TILED_API_KEY"
DEFAULT_QMIN = 0.7
DEFAULT_QMAX = 20.0

Policy = Literal["all", "latest"]
Zoom = Literal["isotropic", "anisotropic"]
SOURCE_TYPES = ("zmq", "tiled", "tiled-replay", "files", "kafka")
SINK_TYPES = ("zmq", "jsonl", "bluesky")

#: Model settings a start document may change for one run. All others (starting model,
#: permutable elements, bond threshold, fit range, PDF settings, catalogue, reference) define
#: the prepared engine and catalogue fit, so changing them needs another configured model
#: (select it with ``motex_model``), not an override.
RUN_OVERRIDABLE = frozenset({"zoom", "refit"})


class ConfigError(ValueError):
    """A configuration value that cannot be used; the message names the key."""


@dataclass(frozen=True)
class ServiceConfig:
    """The ``[service]`` table."""

    state_dir: Path
    metrics_port: int = 9464  # Prometheus port; 0 turns the metrics server off
    metrics_host: str = "127.0.0.1"  # loopback unless the operator opens it on purpose
    queue_size: int = 64  # items waiting between the receivers and the analysis worker
    policy: Policy = "all"  # "all": every frame, back-pressure; "latest": skip stale frames


@dataclass(frozen=True)
class ModelConfig:
    """One ``[[models]]`` entry: a starting model prepared once and refitted per frame."""

    name: str
    starting_model: Path
    permute: tuple[str, ...]  # permutable elements, e.g. ("W",)
    threshold: float = 2.5  # Å; dependent atoms within it of a kept permutable atom are kept
    rmin: float = 1.6  # Å, fit range (paper: 1.6-10 Å)
    rmax: float = 10.0
    qmin: float = DEFAULT_QMIN  # Å⁻¹: from the reference .gr header if present, else 0.7
    qmax: float = DEFAULT_QMAX  # Å⁻¹: from the reference .gr header if present, else 20
    qdamp: float = 0.05
    qbroad: float = 0.01
    biso: float | Mapping[str, float] = 0.4  # Å², one value or a table per element
    zoom: Zoom = "isotropic"
    catalogue_size: int = 10000  # candidate motifs generated at preparation
    refit: int = 10000  # motifs refitted per frame
    rounds: int = 10  # boosting rounds added to the warm-started GBDT per frame (SHAP-capped)
    seed: int = 0
    reference: Path | None = None  # .gr to prepare on; None = prepare on the first frame

    def biso_for(self, element: str) -> float:
        """Biso for one element; a table without that element is a configuration error."""
        if isinstance(self.biso, Mapping):
            try:
                return float(self.biso[element])
            except KeyError:
                raise ConfigError(
                    f"models[{self.name}].biso has no value for element {element!r}"
                ) from None
        return float(self.biso)


@dataclass(frozen=True)
class SourceConfig:
    """One ``[[sources]]`` entry; which fields matter depends on ``type``."""

    type: str
    name: str = ""  # defaults to "<type>-<index>"
    address: str | None = None  # zmq: 0MQ proxy out-address; kafka: bootstrap servers
    prefix: str = "raw"  # zmq: Bluesky 0MQ prefix; kafka: topic
    data_key: str = "pdf_gr"
    r_key: str = "pdf_r"
    uri: str | None = None  # tiled / tiled-replay
    run: str | None = None  # tiled-replay: the run uid to replay
    glob: str | None = None  # files: pattern relative to the config folder
    speed: float = 1.0  # tiled-replay: 1 = original pacing, 10 = ten times faster, 0 = no wait
    allow_pickle: bool = False  # zmq: unpickling untrusted bytes runs code; opt in only
    api_key_file: Path | None = None  # tiled: file holding the key (else MOTEX_TILED_API_KEY)
    interval: float | None = None  # files: seconds between frames; None = as fast as possible

    def to_spec(self) -> dict[str, Any]:
        """The mapping ``motex_stream.stream.sources.make_source`` takes for this entry.

        The config speaks the beamline's words (``run``, ``speed``, ``glob``); the sources take
        their constructor's words. This is the one place they are translated.
        """
        docs = {"data_key": self.data_key, "r_key": self.r_key}
        key_file = None if self.api_key_file is None else str(self.api_key_file)
        if self.type == "zmq":
            return {
                "type": "zmq",
                "address": self.address,
                "prefix": self.prefix,
                "allow_pickle": self.allow_pickle,
                **docs,
            }
        if self.type == "tiled":
            return {"type": "tiled", "uri": self.uri, "key_file": key_file, **docs}
        if self.type == "tiled-replay":
            return {
                "type": "tiled-replay",
                "uri": self.uri,
                "run_uid": self.run,
                "pace": self.speed or None,
                "key_file": key_file,
                **docs,
            }
        if self.type == "files":
            return {"type": "files", "path": self.glob, "interval": self.interval}
        return {"type": "kafka", "topics": [self.prefix], "bootstrap_servers": self.address, **docs}


@dataclass(frozen=True)
class SinkConfig:
    """One ``[[sinks]]`` entry."""

    type: str
    bind: str = "tcp://127.0.0.1:5578"  # zmq: PUB bind address (loopback by default)
    path: Path | None = None  # jsonl: output file
    address: str | None = None  # bluesky: 0MQ proxy in-address for the derived documents
    prefix: str = "an"  # bluesky: 0MQ prefix of analysed documents (PDFstream convention)
    tiled_uri: str | None = None  # bluesky: also write the derived run to this Tiled server
    api_key_file: Path | None = None


@dataclass(frozen=True)
class Config:
    """The whole file."""

    service: ServiceConfig
    models: tuple[ModelConfig, ...]
    sources: tuple[SourceConfig, ...] = ()
    sinks: tuple[SinkConfig, ...] = ()
    path: Path | None = None

    @property
    def default_model(self) -> str:
        """The first model: used by runs whose start document names none."""
        return self.models[0].name

    def model(self, name: str) -> ModelConfig:
        for m in self.models:
            if m.name == name:
                return m
        raise KeyError(name)


# --- loading ---------------------------------------------------------------------------


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
    """Validate an already-parsed mapping (what :func:`load_config` does after reading)."""
    base = Path(base_dir)
    _reject_api_keys(data, "")
    _check_keys(data, {"service", "models", "sources", "sinks"}, "")
    if "service" not in data:
        raise ConfigError("missing [service] table (it needs at least state_dir)")
    service = _parse_service(_table(data["service"], "service"), base)
    raw_models = _array_of_tables(data.get("models"), "models")
    if not raw_models:
        raise ConfigError("models: at least one [[models]] entry is required")
    models = tuple(_parse_model(m, f"models[{i}]", base) for i, m in enumerate(raw_models))
    names = [m.name for m in models]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"models: duplicate model name(s) {dupes}")
    sources = tuple(
        _parse_source(s, i, base)
        for i, s in enumerate(_array_of_tables(data.get("sources"), "sources"))
    )
    sinks = tuple(
        _parse_sink(s, f"sinks[{i}]", base)
        for i, s in enumerate(_array_of_tables(data.get("sinks"), "sinks"))
    )
    return Config(service, models, sources, sinks, path)


def _parse_service(t: Mapping[str, Any], base: Path) -> ServiceConfig:
    _check_keys(t, {"state_dir", "metrics_port", "metrics_host", "queue_size", "policy"}, "service")
    if "state_dir" not in t:
        raise ConfigError("service.state_dir is required")
    port = _int(t, "metrics_port", "service", 9464, lo=0)
    if port > 65535:
        raise ConfigError(f"service.metrics_port must be a port number, got {port}")
    return ServiceConfig(
        state_dir=_path(t["state_dir"], "service.state_dir", base),
        metrics_port=port,
        metrics_host=_str(t, "metrics_host", "service", "127.0.0.1"),
        queue_size=_int(t, "queue_size", "service", 64, lo=1),
        policy=_choice(t, "policy", "service", ("all", "latest"), "all"),  # type: ignore[arg-type]
    )


_MODEL_KEYS = {
    "name",
    "starting_model",
    "permute",
    "threshold",
    "rmin",
    "rmax",
    "qmin",
    "qmax",
    "qdamp",
    "qbroad",
    "biso",
    "zoom",
    "catalogue_size",
    "refit",
    "rounds",
    "seed",
    "reference",
}


def _parse_model(t: Any, where: str, base: Path) -> ModelConfig:
    t = _table(t, where)
    _check_keys(t, _MODEL_KEYS, where)
    for key in ("name", "starting_model", "permute"):
        if key not in t:
            raise ConfigError(f"{where}.{key} is required")
    name = _str(t, "name", where, "")
    if not name or not re.fullmatch(r"[A-Za-z0-9_.\-]+", name):
        raise ConfigError(f"{where}.name must be letters, digits, '_', '.' or '-' (a ZMQ topic)")
    permute = t["permute"]
    if isinstance(permute, str):
        permute = [permute]
    if not isinstance(permute, list) or not permute or not all(isinstance(p, str) for p in permute):
        raise ConfigError(f"{where}.permute must be a non-empty list of element symbols")
    reference = _path(t["reference"], f"{where}.reference", base) if "reference" in t else None
    header_q = _q_from_gr_header(reference) if reference is not None else {}
    model = ModelConfig(
        name=name,
        starting_model=_path(t["starting_model"], f"{where}.starting_model", base),
        permute=tuple(p.strip().capitalize() for p in permute),
        threshold=_float(t, "threshold", where, 2.5, lo=0.0),
        rmin=_float(t, "rmin", where, 1.6, lo=0.0),
        rmax=_float(t, "rmax", where, 10.0, lo=0.0),
        qmin=_float(t, "qmin", where, header_q.get("qmin", DEFAULT_QMIN), lo=0.0),
        qmax=_float(t, "qmax", where, header_q.get("qmax", DEFAULT_QMAX), lo=0.0),
        qdamp=_float(t, "qdamp", where, 0.05, lo=0.0),
        qbroad=_float(t, "qbroad", where, 0.01, lo=0.0),
        biso=_biso(t.get("biso", 0.4), f"{where}.biso"),
        zoom=_choice(t, "zoom", where, ("isotropic", "anisotropic"), "isotropic"),  # type: ignore[arg-type]
        catalogue_size=_int(t, "catalogue_size", where, 10000, lo=1),
        refit=_int(t, "refit", where, 10000, lo=1),
        rounds=_int(t, "rounds", where, 10, lo=1),
        seed=_int(t, "seed", where, 0, lo=0),
        reference=reference,
    )
    _check_model_ranges(model, where)
    return model


def _check_model_ranges(m: ModelConfig, where: str) -> None:
    if m.rmin >= m.rmax:
        raise ConfigError(f"{where}.rmin ({m.rmin}) must be below rmax ({m.rmax})")
    if m.qmax <= 0 or m.qmin >= m.qmax:
        raise ConfigError(f"{where}.qmin ({m.qmin}) must be below qmax ({m.qmax})")
    if m.refit > m.catalogue_size:
        raise ConfigError(
            f"{where}.refit ({m.refit}) cannot exceed catalogue_size ({m.catalogue_size})"
        )


_SOURCE_REQUIRED = {
    "zmq": ("address",),
    "tiled": ("uri",),
    "tiled-replay": ("uri", "run"),
    "files": ("glob",),
    "kafka": ("address",),
}
_SOURCE_KEYS = {
    "interval",
    "type",
    "name",
    "address",
    "prefix",
    "data_key",
    "r_key",
    "uri",
    "run",
    "glob",
    "speed",
    "allow_pickle",
    "api_key_file",
}


def _parse_source(t: Any, index: int, base: Path) -> SourceConfig:
    where = f"sources[{index}]"
    t = _table(t, where)
    _check_keys(t, _SOURCE_KEYS, where)
    kind = _choice(t, "type", where, SOURCE_TYPES, None)
    for key in _SOURCE_REQUIRED[kind]:
        if key not in t:
            raise ConfigError(f"{where}.{key} is required for a {kind!r} source")
    glob = _str(t, "glob", where, None)
    if glob is not None and not Path(glob).is_absolute():
        glob = str(base / glob)
    return SourceConfig(
        type=kind,
        name=_str(t, "name", where, f"{kind}-{index}"),
        address=_str(t, "address", where, None),
        prefix=_str(t, "prefix", where, "raw"),
        data_key=_str(t, "data_key", where, "pdf_gr"),
        r_key=_str(t, "r_key", where, "pdf_r"),
        uri=_str(t, "uri", where, None),
        run=_str(t, "run", where, None),
        glob=glob,
        speed=_float(t, "speed", where, 1.0, lo=0.0),
        interval=_float(t, "interval", where, 0.0, lo=0.0) if "interval" in t else None,
        allow_pickle=_bool(t, "allow_pickle", where, False),
        api_key_file=_path(t["api_key_file"], f"{where}.api_key_file", base)
        if "api_key_file" in t
        else None,
    )


def _parse_sink(t: Any, where: str, base: Path) -> SinkConfig:
    t = _table(t, where)
    _check_keys(
        t, {"type", "bind", "path", "address", "prefix", "tiled_uri", "api_key_file"}, where
    )
    kind = _choice(t, "type", where, SINK_TYPES, None)
    if kind == "jsonl" and "path" not in t:
        raise ConfigError(f"{where}.path is required for a 'jsonl' sink")
    if kind == "bluesky" and "address" not in t and "tiled_uri" not in t:
        raise ConfigError(f"{where}: a 'bluesky' sink needs address (0MQ proxy) or tiled_uri")
    prefix = _str(t, "prefix", where, "an")
    if " " in prefix:
        raise ConfigError(f"{where}.prefix may not contain spaces (Bluesky 0MQ framing)")
    return SinkConfig(
        type=kind,
        bind=_str(t, "bind", where, "tcp://127.0.0.1:5578"),
        path=_path(t["path"], f"{where}.path", base) if "path" in t else None,
        address=_str(t, "address", where, None),
        prefix=prefix,
        tiled_uri=_str(t, "tiled_uri", where, None),
        api_key_file=_path(t["api_key_file"], f"{where}.api_key_file", base)
        if "api_key_file" in t
        else None,
    )


# --- per-run overrides -----------------------------------------------------------------


@dataclass(frozen=True)
class RunSettings:
    """What one run uses: the chosen model with its accepted overrides applied."""

    model: ModelConfig
    applied: Mapping[str, Any] = field(default_factory=dict)
    rejected: tuple[str, ...] = ()  # keys (or "motex_model") that were refused, for logs/UI


def resolve_run_overrides(config: Config, start_metadata: Mapping[str, Any]) -> RunSettings:
    """Pick the model named by ``motex_model`` and apply ``motex_overrides`` from a start doc.

    A start document is written by users at the beamline, so a bad entry must not stop the
    service: an unknown model falls back to the default, and each unknown or invalid override
    key is logged as an error and ignored while the valid ones still apply.
    """
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
    return RunSettings(replace(model, **applied), MappingProxyType(applied), tuple(rejected))


def validate_overrides(
    raw: Mapping[str, Any], model: ModelConfig | None = None
) -> tuple[dict[str, Any], list[str]]:
    """Accepted per-run overrides and the rejected keys (each rejection logged as an error)."""
    applied: dict[str, Any] = {}
    rejected: list[str] = []
    for key, value in raw.items():
        if key not in RUN_OVERRIDABLE:
            log.error(
                "motex_overrides.%s is not a per-run setting (allowed: %s); ignored",
                key,
                ", ".join(sorted(RUN_OVERRIDABLE)),
            )
            rejected.append(str(key))
            continue
        try:
            candidate = _override_value(key, value)
            if model is not None:
                _check_model_ranges(
                    replace(model, **applied, **{key: candidate}), "motex_overrides"
                )
        except ConfigError as exc:
            log.error("motex_overrides.%s=%r rejected: %s", key, value, exc)
            rejected.append(str(key))
            continue
        applied[key] = candidate
    return applied, rejected


def _override_value(key: str, value: Any) -> Any:
    where = "motex_overrides"
    t = {key: value}
    if key in {"refit", "rounds", "seed"}:
        return _int(t, key, where, 0, lo=0 if key == "seed" else 1)
    if key == "biso":
        return _biso(value, f"{where}.biso")
    if key == "zoom":
        return _choice(t, key, where, ("isotropic", "anisotropic"), None)
    return _float(t, key, where, 0.0, lo=0.0)


# --- secrets ---------------------------------------------------------------------------


def read_api_key(key_file: Path | None = None) -> str | None:
    """The Tiled API key: ``MOTEX_TILED_API_KEY`` first, else the first line of ``key_file``."""
    import os

    env = os.environ.get(API_KEY_ENV)
    if env:
        return env.strip()
    if key_file is not None:
        try:
            return key_file.read_text().strip().splitlines()[0].strip() or None
        except (OSError, IndexError) as exc:
            raise ConfigError(f"cannot read Tiled API key file {key_file}: {exc}") from exc
    return None


def _reject_api_keys(data: Any, where: str) -> None:
    if isinstance(data, Mapping):
        for key, value in data.items():
            here = f"{where}.{key}" if where else str(key)
            if key == "api_key":
                raise ConfigError(
                    f"{here}: API keys do not belong in the config file; set {API_KEY_ENV} or "
                    "point api_key_file at a file readable only by the service"
                )
            _reject_api_keys(value, here)
    elif isinstance(data, list):
        for i, value in enumerate(data):
            _reject_api_keys(value, f"{where}[{i}]")


# --- small typed readers ---------------------------------------------------------------


def _table(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where} must be a table")
    return value


def _array_of_tables(value: Any, where: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ConfigError(f"{where} must be an array of tables ([[{where}]])")
    return value


def _check_keys(t: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(t) - allowed)
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(
            f"unknown key {prefix}{unknown[0]} (allowed here: {', '.join(sorted(allowed))})"
        )


def _str(t: Mapping[str, Any], key: str, where: str, default: Any) -> Any:
    if key not in t:
        return default
    if not isinstance(t[key], str):
        raise ConfigError(f"{where}.{key} must be a string, got {t[key]!r}")
    return t[key]


def _bool(t: Mapping[str, Any], key: str, where: str, default: bool) -> bool:
    if key not in t:
        return default
    if not isinstance(t[key], bool):
        raise ConfigError(f"{where}.{key} must be true or false, got {t[key]!r}")
    return t[key]


def _int(t: Mapping[str, Any], key: str, where: str, default: int, lo: int | None = None) -> int:
    if key not in t:
        return default
    v = t[key]
    if isinstance(v, bool) or not isinstance(v, int):
        raise ConfigError(f"{where}.{key} must be an integer, got {v!r}")
    if lo is not None and v < lo:
        raise ConfigError(f"{where}.{key} must be >= {lo}, got {v}")
    return v


def _float(
    t: Mapping[str, Any], key: str, where: str, default: float, lo: float | None = None
) -> float:
    if key not in t:
        return float(default)
    v = t[key]
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise ConfigError(f"{where}.{key} must be a finite number, got {v!r}")
    if lo is not None and v < lo:
        raise ConfigError(f"{where}.{key} must be >= {lo}, got {v}")
    return float(v)


def _choice(
    t: Mapping[str, Any], key: str, where: str, options: tuple[str, ...], default: str | None
) -> str:
    if key not in t:
        if default is None:
            raise ConfigError(f"{where}.{key} is required (one of {', '.join(options)})")
        return default
    if t[key] not in options:
        raise ConfigError(f"{where}.{key} must be one of {', '.join(options)}, got {t[key]!r}")
    return t[key]


def _path(value: Any, where: str, base: Path) -> Path:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where} must be a non-empty path string")
    p = Path(value).expanduser()
    return p if p.is_absolute() else base / p


def _biso(value: Any, where: str) -> float | Mapping[str, float]:
    if isinstance(value, Mapping):
        table: dict[str, float] = {}
        for el, v in value.items():
            table[str(el).capitalize()] = _float({el: v}, str(el), where, 0.0, lo=0.0)
        if not table:
            raise ConfigError(f"{where} table is empty")
        return MappingProxyType(table)
    return _float({"biso": value}, "biso", where.rsplit(".", 1)[0], 0.0, lo=0.0)


_Q_LINE = re.compile(r"^\s*(qmin|qmax)\s*=\s*([-+0-9.eE]+)\s*$", re.IGNORECASE)


def _q_from_gr_header(path: Path) -> dict[str, float]:
    """qmin/qmax from an xPDFsuite/PDFgetX3 .gr header, so the fit uses the data's own Q range.

    A missing file is not an error here (the analyzer reports it when it prepares the model);
    the header is read only up to the data block.
    """
    found: dict[str, float] = {}
    try:
        with path.open(errors="replace") as fh:
            for line in fh:
                if line.startswith("#### start data") or line[:1].isdigit():
                    break
                m = _Q_LINE.match(line)
                if m:
                    found[m.group(1).lower()] = float(m.group(2))
    except (OSError, ValueError):
        return {}
    return found
