"""The wire format of one analysed frame: ``motex-stream/contributions/v1``.

The ZMQ and JSON Lines sinks send this JSON object (defined once, by :func:`to_message`, from
the :class:`PublishedFrame` every sink receives), so a consumer written against this docstring
works with either; the derived Bluesky run carries the same numbers as event data. The
``schema`` field is versioned: a consumer checks it and refuses a version it does not know
instead of misreading fields. Adding optional fields keeps ``v1``; renaming or changing meaning
bumps it.

Example (values shortened)::

    {
      "schema": "motex-stream/contributions/v1",
      "model": "keggin-109725",            # model name; also the ZMQ topic
      "source": "4b0c…-run-uid",           # raw Bluesky run uid, or the .gr file path
      "seq": 17,                           # 1-based frame number within that run
      "time": 1732600000.25,               # when the frame was measured (raw event time)
      "contributions": [                   # one per permutable atom, file order
        {"atom": 1, "element": "W", "value": -0.0123, "spread": 0.004,
         "ci_low": -0.0131, "ci_high": -0.0115,  # optional: confidence interval of value
         "label": "keep"},                        # optional: keep / remove / uncertain
        ...
      ],
      "best": {"mask": [1, 0, 1, ...],     # best refitted motif this frame
               "rwp": 0.318, "scale": 0.92, "zoom": [1.003]},  # zoom: 1 or 3 factors
      "timing": {"regrid": 0.001, "fit": 1.9, "train": 0.3, "explain": 0.2, "total": 2.401},
      "model_quality": {"mae": 0.0041,     # GBDT error on held-out refits of this frame
                        "n_trees": 40,
                        "rebuilt": false,   # a freshly rebuilt surrogate serves this frame
                        "generation": 2,    #   (optional) rebuilds since preparation
                        "rebuild_started": false},  # (optional) always false: rebuilds are in line
      "n_refit": 10000,
      "received_at": 1732600000.31,        # when the service received the frame (unix s)
      "published_at": 1732600002.74,       # when the message left the service (unix s)
      "extra": {},                         # analyzer-specific, optional
      "fit": {"r": [...], "g": [...],      # optional: data and best motif's G on the fit
              "g_calc": [...]},            #   grid, decimated to <= 500 points
      "change": {"frame": 12,              # optional, only on the frame that confirms a
                 "atoms_gained": [5],      #   persistent change of the keep atoms (absent
                 "atoms_lost": [3],        #   or null: no change)
                 "confidence": 0.97},
      "structure": {"elements": ["W", ...],  # optional, first frame of each run: the
                    "xyz": [[x, y, z], ...],  #   starting model (Å, file order), permutable
                    "permutable": [1, ...],   #   atoms (1-based) and, per other atom, the
                    "bonded": [[1, 5], ...],  #   permutable atoms it goes with; optional:
                    "equivalent": [[1, 3, 5, 7], ...]}  # symmetry-equivalent sites
    }

The message is specified by the JSON Schema ``docs/schema/contributions-v1.schema.json``
(tests validate replay output against it). Units: times are Unix seconds (float);
``value``/``spread`` are in Rwp units (fraction); ``timing`` in seconds. Non-finite floats
are sent as ``null`` (strict JSON has no NaN).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any, TypeVar

from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match

from motex_stream.analysis.jsonable import to_jsonable
from motex_stream.stream.frames import Frame
from motex_stream.stream.live.analyzer_protocol import (
    AtomValues,
    BestFit,
    FitCurve,
    FrameResult,
    KeepSetChange,
    ModelDrawing,
    ModelQuality,
)

SCHEMA = "motex-stream/contributions/v1"

T = TypeVar("T")


@dataclass(frozen=True)
class AnalysisIdentity:
    """What makes one analysis of a raw run distinct from another.

    ``id`` hashes the prepared state (catalogue, fit grid) and every setting the frame was
    analysed with (per-run overrides included); ``settings`` are those settings as JSON. The
    derived run's uid is built from it: a restart or replay with the same state reuses the
    uid (no duplicate run), another state or other settings give a new one.
    """

    id: str
    settings: Mapping[str, Any]


@dataclass(frozen=True)
class PublishedFrame:
    """One analysed frame as the service hands it to every sink.

    Why not the JSON message itself: sinks that are not JSON (the derived Bluesky run) would
    have to turn ``null`` back into NaN; with the typed result each sink takes what it needs,
    and the JSON ones share :func:`to_message`, so the wire format has one definition.
    """

    result: FrameResult
    run_uid: str  # raw Bluesky run uid, or the .gr file glob (the frame's ``source``)
    seq: int  # 1-based frame number within that run
    time: float  # when the frame was measured (unix s)
    received_at: float | None  # when the service received the frame (unix s)
    published_at: float  # when the service handed it to the sinks (unix s)
    # which analysis produced it (prepared state + settings); keys the derived run's uid
    analysis: AnalysisIdentity | None = None

    @classmethod
    def of(
        cls,
        result: FrameResult,
        frame: Frame,
        *,
        received_at: float | None = None,
        published_at: float | None = None,
        analysis: AnalysisIdentity | None = None,
    ) -> PublishedFrame:
        """The published form of ``result`` for ``frame``; ``published_at`` defaults to now."""
        return cls(
            result=result,
            run_uid=str(frame.source),
            seq=int(frame.seq),
            time=float(frame.time),
            received_at=received_at,
            published_at=time.time() if published_at is None else published_at,
            analysis=analysis,
        )

    @property
    def model(self) -> str:
        """The model name: the ZMQ topic and part of the derived run's identity."""
        return str(self.result.model)


def to_message(published: PublishedFrame) -> dict[str, Any]:
    """The v1 message for one analysed frame; JSON-safe (plain types, NaN → ``None``).

    The one place a result becomes JSON: every JSON sink sends this, and nothing else reads
    the result by JSON keys.
    """
    result = published.result
    timing = {str(k): float(v) for k, v in result.timing.items()}
    timing.setdefault("total", float(sum(v for k, v in timing.items() if k != "total")))
    message = {
        "schema": SCHEMA,
        "model": published.model,
        "source": published.run_uid,
        "seq": published.seq,
        "time": published.time,
        "contributions": _contributions(result.contributions),
        "best": {
            "mask": result.best.mask,
            "rwp": result.best.rwp,
            "scale": result.best.scale,
            "zoom": result.best.zoom,
        },
        "timing": timing,
        "model_quality": _quality(result.model_quality),
        "n_refit": int(result.n_refit),
        "received_at": published.received_at,
        "published_at": published.published_at,
        "extra": dict(result.extra),
    }
    # optional fields for live views (absent unless the analyzer provides them)
    if result.fit is not None:
        message["fit"] = to_jsonable(result.fit)
    if result.structure is not None:
        message["structure"] = to_jsonable(result.structure)
    # optional: the persistent keep-set change this frame confirmed (absent: none)
    if result.change is not None:
        message["change"] = result.change.to_json()
    safe = to_jsonable(message)
    assert isinstance(safe, dict)
    return safe


def _contributions(atoms: AtomValues) -> list[dict[str, Any]]:
    """One entry per permutable atom; ``ci_low``/``ci_high``/``label`` only where computed."""
    out: list[dict[str, Any]] = []
    for k in range(len(atoms)):
        entry: dict[str, Any] = {
            "atom": atoms.atom[k],
            "element": atoms.element[k],
            "value": atoms.value[k],
            "spread": atoms.spread[k],
        }
        if atoms.interval is not None:
            entry["ci_low"], entry["ci_high"] = atoms.interval[0][k], atoms.interval[1][k]
        if atoms.label is not None:
            entry["label"] = atoms.label[k]
        out.append(entry)
    return out


def _quality(quality: ModelQuality) -> dict[str, Any]:
    """``model_quality``: the measures the analyzer gave (``rebuilt`` always)."""
    fields = {
        "mae": quality.mae,
        "n_trees": quality.n_trees,
        "rebuilt": quality.rebuilt,
        "generation": quality.generation,
        "rebuild_started": quality.rebuild_started,
        "fits_per_s": quality.fits_per_s,
    }
    return {k: v for k, v in fields.items() if v is not None}


def to_json(published: PublishedFrame) -> bytes:
    """The v1 message as strict UTF-8 JSON bytes: what the ZMQ and JSON Lines sinks send."""
    return encode(to_message(published))


def build_message(
    result: FrameResult,
    frame: Frame,
    *,
    received_at: float | None = None,
    published_at: float | None = None,
) -> dict[str, Any]:
    """The v1 message for ``result`` on ``frame`` (shorthand for tests and tools)."""
    return to_message(
        PublishedFrame.of(result, frame, received_at=received_at, published_at=published_at)
    )


def from_message(message: Mapping[str, Any]) -> PublishedFrame:
    """The typed frame a v1 message carries: the inverse of :func:`to_message` (``null`` →
    NaN), so a consumer of the wire reads fields as the sinks do. Raises ValueError (see
    :func:`validate_message`) for a message that is not v1 or is malformed."""
    validate_message(message)
    entries = message["contributions"]
    with_interval = any("ci_low" in c or "ci_high" in c for c in entries)
    with_label = any("label" in c for c in entries)
    atoms = AtomValues(
        atom=[c["atom"] for c in entries],
        element=[c["element"] for c in entries],
        value=[c["value"] for c in entries],
        spread=[c["spread"] for c in entries],
        interval=(
            ([c.get("ci_low") for c in entries], [c.get("ci_high") for c in entries])
            if with_interval
            else None
        ),
        label=[c.get("label") or "" for c in entries] if with_label else None,
    )
    best = message["best"]
    quality = message["model_quality"]
    change = message.get("change")
    result = FrameResult(
        model=str(message["model"]),
        contributions=atoms,
        best=BestFit(
            mask=best["mask"],
            rwp=math.nan if best["rwp"] is None else float(best["rwp"]),
            scale=best.get("scale"),
            zoom=best.get("zoom"),
        ),
        timing={str(k): float(v) for k, v in message["timing"].items() if v is not None},
        model_quality=ModelQuality(
            **{k: quality[k] for k in ModelQuality.__dataclass_fields__ if k in quality}
        ),
        n_refit=int(message.get("n_refit") or 0),
        extra=dict(message.get("extra") or {}),
        fit=_fields_of(FitCurve, message.get("fit")),
        structure=_fields_of(ModelDrawing, message.get("structure")),
        change=KeepSetChange.from_json(change) if isinstance(change, Mapping) else None,
    )
    return PublishedFrame(
        result=result,
        run_uid=str(message["source"]),
        seq=int(message["seq"]),
        time=float(message["time"]),
        received_at=message.get("received_at"),
        published_at=float(message.get("published_at") or math.nan),  # NaN: not sent
    )


def _fields_of(kind: type[T], value: Any) -> T | None:
    """The typed optional field a message carries (its keys already checked by the schema)."""
    if not isinstance(value, Mapping):
        return None
    return kind(**{f.name: value[f.name] for f in dataclasses.fields(kind) if f.name in value})


def validate_message(message: Mapping[str, Any]) -> Mapping[str, Any]:
    """Check a received message is a v1 message as published; raise ValueError saying what is
    wrong (the JSON Pointer of the first problem). The one check: :func:`problem`, the
    published schema plus finite numbers."""
    if not isinstance(message, Mapping):
        raise ValueError(f"message must be a JSON object, got {type(message).__name__}")
    schema = message.get("schema")
    if schema != SCHEMA:
        raise ValueError(f"unsupported message schema {schema!r}; this reader knows {SCHEMA!r}")
    why = problem(message)
    if why is not None:
        raise ValueError(f"not a {SCHEMA} message: {why}")
    return message


def encode(message: Mapping[str, Any]) -> bytes:
    """UTF-8 JSON bytes, strict (``allow_nan=False``) so every JSON parser can read them."""
    return json.dumps(message, separators=(",", ":"), allow_nan=False).encode()


def decode(payload: bytes | str) -> dict[str, Any]:
    """Parse and validate one message."""
    message = json.loads(payload)
    validate_message(message)
    return message


# -- the one check of a received message ---------------------------------------------------
# Every reader of the wire (``watch``, the dashboard, the closed-loop agent, a replay resuming
# into its JSON Lines output) reads what anyone on the beamline network may have written, and
# the dashboard's page and the agent's queue act on it: what they accept must be exactly what
# the service publishes, as the published schema (``docs/schema/``, shipped beside this module)
# defines it. A looser quick check used to sit beside it and accepted messages the schema
# rejects (a string frame number in a change, atom 0). The schema cannot make strings harmless
# (an element symbol is any string): the page puts every string in as text, never as HTML.

SCHEMA_FILE = "contributions-v1.schema.json"


def schema_text() -> str:
    """The packaged copy of ``docs/schema/contributions-v1.schema.json`` (a test keeps the
    two identical)."""
    files = resources.files("motex_stream.stream").joinpath(SCHEMA_FILE)
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
