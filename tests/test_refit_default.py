"""Issue 22 item 3: an unset ``refit`` means every motif of the catalogue, whatever its size.

Before, ``catalogue_size = 2000`` alone (a config, or ``replay --catalogue 2000``) was refused
with "refit (10000) cannot exceed catalogue_size (2000)", naming a key the user never set.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from motex_stream.analysis.settings import LiveModelSettings, settings_for_run
from motex_stream.cli import build_parser
from motex_stream.stream.commands.replay import replay_settings
from motex_stream.stream.config import ConfigError, load_config
from tests.conftest import KEGGIN

XYZ = str(KEGGIN / "109725.xyz")
GR = str(KEGGIN / "DanMAX_AlphaKeggin.gr")


def _config(tmp_path: Path, extra: str) -> Path:
    path = tmp_path / "motex.toml"
    path.write_text(
        f'[service]\nstate_dir = "state"\n\n[[models]]\nname = "k"\n'
        f'starting_model = "{XYZ}"\n{extra}'
    )
    return path


def test_config_with_catalogue_size_alone_refits_the_whole_catalogue(tmp_path: Path) -> None:
    (model,) = load_config(_config(tmp_path, "catalogue_size = 2000\n")).models
    assert model.refit is None
    assert model.refit_count == 2000


def test_replay_catalogue_flag_alone_refits_the_whole_catalogue(tmp_path: Path) -> None:
    args = build_parser().parse_args(
        [
            "replay",
            "--frames",
            GR,
            "--model",
            XYZ,
            "--catalogue",
            "2000",
            "--out",
            str(tmp_path / "o.jsonl"),
        ]
    )
    settings = replay_settings(args)
    assert (settings.catalogue_size, settings.refit_count) == (2000, 2000)


def test_a_set_refit_is_kept_and_still_bounded_by_the_catalogue(tmp_path: Path) -> None:
    (model,) = load_config(_config(tmp_path, "catalogue_size = 2000\nrefit = 500\n")).models
    assert model.refit_count == 500
    with pytest.raises(ConfigError, match=r"refit \(5000\) cannot exceed catalogue_size"):
        load_config(_config(tmp_path, "catalogue_size = 2000\nrefit = 5000\n"))


def test_unset_refit_follows_a_changed_catalogue() -> None:
    base = LiveModelSettings(name="k", starting_model=Path(XYZ))
    assert base.refit_count == base.catalogue_size
    assert base.updated(catalogue_size=1500).refit_count == 1500
    run, rejected = settings_for_run(base.updated(catalogue_size=1500), {"refit": 100})
    assert not rejected and run.refit_count == 100


def test_demo_catalogue_flag_alone_refits_the_whole_catalogue() -> None:
    """``demo --catalogue 2000`` failed on the demo's own --refit default (4000)."""
    from motex_stream.stream.commands import demo

    args = build_parser().parse_args(["demo", "--catalogue", "2000"])
    demo.check_arguments(args)  # no "--refit must be between 1 and --catalogue"
    assert args.refit is None
    with pytest.raises(ValueError, match=r"--refit must be between 1 and --catalogue \(100\)"):
        demo.check_arguments(
            build_parser().parse_args(["demo", "--catalogue", "100", "--refit", "500"])
        )
