"""Typed frame results from the short literals the stream tests write them in."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from motex_stream.stream.live.analyzer_protocol import (
    AtomValues,
    BestFit,
    FitCurve,
    FrameResult,
    KeepSetChange,
    ModelDrawing,
    ModelQuality,
)


def atom_values(entries: Sequence[Mapping[str, Any]]) -> AtomValues:
    """``[{"atom", "element", "value", "spread"[, "ci_low", "ci_high"][, "label"]}, ...]``."""
    with_interval = any("ci_low" in c for c in entries)
    with_label = any("label" in c for c in entries)
    return AtomValues(
        atom=[c["atom"] for c in entries],
        element=[c.get("element", "") for c in entries],
        value=[c["value"] for c in entries],
        spread=[c.get("spread") for c in entries],
        interval=(
            ([c.get("ci_low") for c in entries], [c.get("ci_high") for c in entries])
            if with_interval
            else None
        ),
        label=[c.get("label") or "" for c in entries] if with_label else None,
    )


def keep_set_change(change: Mapping[str, Any]) -> KeepSetChange:
    return KeepSetChange(
        frame=int(change["frame"]),
        atoms_gained=tuple(change.get("atoms_gained", ())),
        atoms_lost=tuple(change.get("atoms_lost", ())),
        confidence=float(change.get("confidence", 1.0)),
    )


def frame_result(
    model: str,
    contributions: Sequence[Mapping[str, Any]],
    best: Mapping[str, Any],
    timing: Mapping[str, float],
    model_quality: Mapping[str, Any] | None = None,
    change: Mapping[str, Any] | None = None,
    fit: Mapping[str, Any] | None = None,
    structure: Mapping[str, Any] | None = None,
    **more: Any,
) -> FrameResult:
    """A :class:`FrameResult` from dict literals (counts and flags may be given as floats)."""
    quality = dict(model_quality or {})
    for key in ("n_trees", "generation"):
        if key in quality:
            quality[key] = int(quality[key])
    for key in ("rebuilt", "rebuild_started"):
        if key in quality:
            quality[key] = bool(quality[key])
    known = set(ModelQuality.__dataclass_fields__)
    return FrameResult(
        model=model,
        contributions=atom_values(contributions),
        best=BestFit(
            mask=best.get("mask", []),
            rwp=best["rwp"],
            scale=best.get("scale"),
            zoom=best.get("zoom"),
        ),
        timing=dict(timing),
        model_quality=ModelQuality(**{k: v for k, v in quality.items() if k in known}),
        change=None if change is None else keep_set_change(change),
        fit=None if fit is None else FitCurve(**fit),
        structure=None if structure is None else ModelDrawing(**structure),
        **more,
    )


def entries(atoms: AtomValues) -> list[dict[str, Any]]:
    """Per-atom dicts of typed values, as the message writes them (NaN kept as NaN)."""
    low, high = atoms.interval if atoms.interval is not None else (None, None)
    out = []
    for k in range(len(atoms)):
        entry: dict[str, Any] = {
            "atom": int(atoms.atom[k]),
            "element": atoms.element[k],
            "value": float(atoms.value[k]),
            "spread": float(atoms.spread[k]),
        }
        if low is not None and high is not None:
            entry["ci_low"], entry["ci_high"] = float(low[k]), float(high[k])
        if atoms.label is not None:
            entry["label"] = atoms.label[k]
        out.append(entry)
    return out
