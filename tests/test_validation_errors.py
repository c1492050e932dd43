"""One wording of settings errors for flags, TOML keys and start-document overrides."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from motex_stream.analysis.settings import ModelSettings
from motex_stream.validation_errors import format_errors, key_path, one_line
from tests.conftest import KEGGIN

XYZ = KEGGIN / "109725.xyz"


def _error(**values: object) -> ValidationError:
    with pytest.raises(ValidationError) as info:
        ModelSettings(starting_model=XYZ, **values)
    return info.value


def test_key_path_reads_like_the_toml_file() -> None:
    assert key_path(["models", 0, "rmax"]) == "models[0].rmax"
    assert key_path([]) == ""


def test_each_caller_names_the_key_its_own_way() -> None:
    exc = _error(qdamp=float("nan"), catalogue_size=0)
    assert format_errors(exc) == [
        "qdamp: should be a finite number (got nan)",
        "catalogue_size: should be greater than or equal to 1 (got 0)",
    ]
    assert (
        format_errors(exc, where="models[2]")[0]
        == "models[2].qdamp: should be a finite number (got nan)"
    )
    as_flag = {"qdamp": "--qdamp", "catalogue_size": "--catalogue"}.__getitem__
    assert format_errors(exc, label=as_flag)[1].startswith("--catalogue: should be greater")


def test_unknown_key_gets_a_suggestion_and_one_line_joins() -> None:
    exc = _error(qdmap=0.04)
    assert format_errors(exc, model=ModelSettings) == ["qdmap: unknown key (did you mean qdamp?)"]
    assert one_line(_error(qdamp=float("inf"), rmax=float("nan"))).count(";") == 1
    assert one_line(ValueError("plain")) == "plain"
