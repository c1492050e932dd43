"""The one settings model: defaults, validation, Q-range resolution, CLI flags generated from it."""

from __future__ import annotations

import argparse
import math
import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from motex_stream.analysis.settings import (
    FALLBACK_QMAX,
    FALLBACK_QMIN,
    RUN_OVERRIDABLE,
    LiveModelSettings,
    ModelSettings,
    apply_run_overrides,
    settings_for_run,
)
from motex_stream.cli import build_parser
from motex_stream.cli_flags import flag_name
from tests.conftest import KEGGIN, ROOT

XYZ = KEGGIN / "109725.xyz"


def test_defaults_are_the_papers_run() -> None:
    s = ModelSettings(starting_model=XYZ)
    assert s.permute == ("W",)
    assert (s.threshold, s.rmin, s.rmax) == (2.5, 1.6, 10.0)
    assert (s.qmin, s.qmax) == (None, None)  # from the data header
    assert (s.qdamp, s.qbroad, s.biso, s.delta2) == (0.05, 0.01, 0.4, 0.0)
    assert (s.generator, s.catalogue_size, s.zoom, s.seed) == ("random", 10_000, "isotropic", 0)
    assert s.search_time_s is None  # deterministic unless the user opts in


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"qdamp": math.nan}, "finite"),
        ({"rmax": math.inf}, "finite"),
        ({"rmin": 10.0, "rmax": 5.0}, "rmin"),
        ({"qmin": 25.0, "qmax": 20.0}, "qmin"),
        ({"catalogue_size": 10**12}, "less than or equal"),
        ({"catalogue_size": 0}, "greater than or equal"),
        ({"threshold": -1.0}, "greater than"),
        ({"permute": ["Qq"]}, "unknown element"),
        ({"biso": {"W": -0.1}}, "greater than or equal"),
        ({"biso": {}}, "empty"),
        ({"lower": 5, "upper": 2}, "upper"),
        ({"zoom": "sideways"}, "isotropic"),
        ({"rmaxx": 10.0}, "Extra inputs"),
    ],
)
def test_bad_values_are_rejected_with_the_reason(changes: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        ModelSettings.model_validate({"starting_model": XYZ, **changes})


def test_elements_and_biso_table_are_normalised() -> None:
    s = ModelSettings(starting_model=XYZ, permute="w", biso={"w": 0.3, "o": 0.6})
    assert s.permute == ("W",)
    assert s.biso == {"W": 0.3, "O": 0.6}


def test_q_range_from_settings_else_header_else_fallback() -> None:
    s = ModelSettings(starting_model=XYZ)
    assert (s.with_q_range(0.9, 19.5).qmin, s.with_q_range(0.9, 19.5).qmax) == (0.9, 19.5)
    fallback = s.with_q_range(None, None)
    assert (fallback.qmin, fallback.qmax) == (FALLBACK_QMIN, FALLBACK_QMAX)
    given = s.updated(qmax=18.0).with_q_range(0.9, 19.5)
    assert (given.qmin, given.qmax) == (0.9, 18.0)


def test_fingerprint_ignores_only_per_frame_fields() -> None:
    live = LiveModelSettings(starting_model=XYZ, name="a", catalogue_size=2000, refit=500)
    assert live.fingerprint() == live.updated(name="b", refit=1000, rounds=3).fingerprint()
    assert live.fingerprint() != live.updated(delta2=1.0).fingerprint()
    assert live.fingerprint() != live.updated(generator="cookie").fingerprint()


def test_run_overrides_are_validated_by_the_same_model(caplog) -> None:
    live = LiveModelSettings(starting_model=XYZ, name="k", catalogue_size=2000, refit=500)
    assert {"zoom", "refit"} == RUN_OVERRIDABLE
    assert apply_run_overrides(live, {"refit": 100}).refit == 100
    with pytest.raises(ValueError, match="not a per-run setting"):
        apply_run_overrides(live, {"rmax": 5.0})
    with pytest.raises(ValueError, match="cannot exceed"):
        apply_run_overrides(live, {"refit": 5000})
    run, rejected = settings_for_run(live, {"refit": 5000, "zoom": "anisotropic", "rmax": 3})
    assert (run.refit, run.zoom) == (500, "anisotropic")
    assert sorted(rejected) == ["refit", "rmax"]
    assert "motex_overrides.refit" in caplog.text


def _subparser(name: str) -> argparse.ArgumentParser:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


@pytest.mark.parametrize("command", ["analyze", "fit", "replay"])
def test_cli_flags_are_generated_from_the_settings_model(command: str) -> None:
    """Each settings flag has no default of its own; its help quotes the model's default."""
    model = LiveModelSettings if command == "replay" else ModelSettings
    actions = {a.dest: a for a in _subparser(command)._actions}
    for name, info in model.model_fields.items():
        action = actions.get(name)
        if action is None:
            from motex_stream.stream.commands.replay import REPLAY_EXCLUDES

            offline_only = command == "replay" and name in REPLAY_EXCLUDES
            assert command == "fit" or offline_only, f"{command} has no flag for {name}"
            continue
        assert flag_name(name, info) in action.option_strings
        assert action.default is argparse.SUPPRESS, f"{command} {name} has its own default"
        if not info.is_required() and info.default is not None:
            shown = info.default if not isinstance(info.default, tuple) else info.default[0]
            assert f"default: {shown}" in action.help


def test_each_default_is_written_once() -> None:
    """Grep the package: the paper's defaults appear as literals only in the settings model."""
    names = r"\b(threshold|rmin|rmax|qdamp|qbroad|catalogue_size|refit)\b"
    values = r"\b(2\.5|1\.6|10\.0|0\.05|0\.01|10_?000)\b"
    pattern = re.compile(names + r"\s*[:=][^\n]*?" + values)
    offenders = []
    for path in (ROOT / "motex_stream").rglob("*.py"):
        if path.name == "settings.py" and path.parent.name == "analysis":
            continue
        for lineno, line in enumerate(path.read_text().splitlines(), 1):
            if pattern.search(line):
                offenders.append(f"{path.relative_to(ROOT)}:{lineno}: {line.strip()}")
    assert not offenders, "defaults written outside analysis/settings.py:\n" + "\n".join(offenders)


def test_settings_reach_the_report_resolved(tmp_path: Path) -> None:
    """What report.json records is the resolved model (Q range from the header)."""
    from motex_stream.analysis import steps

    data = steps.load_fit_data(KEGGIN / "DanMAX_AlphaKeggin.gr", ModelSettings(starting_model=XYZ))
    assert data.settings.qmax == pytest.approx(19.99898, abs=1e-5)
    assert data.pdf.qmax == data.settings.qmax
    assert data.r[0] == pytest.approx(1.6) and data.r[-1] == pytest.approx(10.0)
