"""The v1 wire format: built from a FrameResult, JSON-safe, validated on receipt."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from motex_stream.stream.frames import Frame
from motex_stream.stream.live.analyzer_protocol import FrameResult, KeepSetChange, ModelQuality
from motex_stream.stream.messages import (
    SCHEMA,
    build_message,
    decode,
    encode,
    validate_message,
)
from tests.stream.results import frame_result


def numpy_result() -> FrameResult:
    """What an analyzer built on numpy naturally returns: numpy scalars and arrays."""
    return frame_result(
        model="keggin",
        contributions=[
            {"atom": np.int64(1), "element": "W", "value": np.float64(-0.02), "spread": 0.01},
            {"atom": 2, "element": "W", "value": np.float32(0.5), "spread": np.nan},
        ],
        best={
            "mask": np.array([1, 0]),
            "rwp": np.float64(0.31),
            "scale": np.float64(0.9),
            "zoom": np.float64(1.01),
        },
        timing={"regrid": np.float64(0.001), "fit": 1.5, "train": 0.25},
        # the live analyzer hands counts and flags as floats: they must leave as int/bool
        model_quality={"mae": np.float64(0.004), "mse": 3e-5, "n_trees": 40.0, "rebuilt": 0.0},
        n_refit=np.int64(100),  # type: ignore[arg-type]
        extra={"size_shap": np.arange(3)},
    )


def frame() -> Frame:
    r = np.linspace(1, 10, 20)
    return Frame("run-uid", 7, 1700000000.5, r, np.sin(r))


def test_build_message_has_the_v1_fields_and_is_strict_json() -> None:
    msg = build_message(numpy_result(), frame(), received_at=1700000001.0, published_at=1.7e9 + 2)
    assert msg["schema"] == SCHEMA
    assert (msg["model"], msg["source"], msg["seq"], msg["time"]) == (
        "keggin",
        "run-uid",
        7,
        1700000000.5,
    )
    assert msg["contributions"][0] == {"atom": 1, "element": "W", "value": -0.02, "spread": 0.01}
    assert msg["contributions"][1]["spread"] is None  # NaN → null
    assert "label" not in msg["contributions"][0]  # the interval fields are optional
    assert msg["best"] == {"mask": [1, 0], "rwp": 0.31, "scale": 0.9, "zoom": [1.01]}
    quality = msg["model_quality"]
    assert quality["n_trees"] == 40 and type(quality["n_trees"]) is int
    assert quality["rebuilt"] is False
    assert msg["timing"]["total"] == pytest.approx(1.751)
    assert msg["model_quality"]["mae"] == 0.004
    assert msg["n_refit"] == 100 and msg["extra"] == {"size_shap": [0, 1, 2]}
    assert msg["received_at"] == 1700000001.0 and msg["published_at"] == 1.7e9 + 2
    text = json.dumps(msg, allow_nan=False)  # would raise on numpy types or NaN
    assert json.loads(text) == msg
    validate_message(msg)


def test_given_total_is_kept_and_published_at_defaults_to_now() -> None:
    result = numpy_result()
    result.timing["total"] = 9.0
    msg = build_message(result, frame())
    assert msg["timing"]["total"] == 9.0
    assert msg["published_at"] > 1.7e9 and msg["received_at"] is None


def test_encode_decode_round_trip() -> None:
    msg = build_message(numpy_result(), frame())
    assert decode(encode(msg)) == msg


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"schema": "motex-stream/contributions/v2"}, "unsupported message schema"),
        ({"seq": 0}, "/seq: 0 is less than the minimum of 1"),
        ({"seq": "7"}, "/seq: '7' is not of type 'integer'"),
        ({"contributions": [{"atom": 1}]}, "/contributions/0"),
        ({"best": {"rwp": 0.3}}, "mask"),
        # accepted by the looser reader check that sat beside the schema until issue 24's
        # follow-up; the agent and the dashboard re-checked with the schema, `watch` and a
        # resuming replay did not
        ({"change": {"frame": "abc", "atoms_gained": [], "atoms_lost": []}}, "/change"),
        ({"contributions": [{"atom": 0, "element": "W", "value": 0.1, "spread": 0.0}]}, "/0/atom"),
        ({"time": float("nan")}, "/time: not a finite number"),
        ({"model": ""}, "/model"),
    ],
)
def test_validate_rejects_bad_messages(change: dict, match: str) -> None:
    """validate_message is the published schema (one check for every reader of the wire)."""
    msg = build_message(numpy_result(), frame()) | change
    with pytest.raises(ValueError, match=match):
        validate_message(msg)


def test_validate_rejects_missing_fields_and_non_objects() -> None:
    msg = build_message(numpy_result(), frame())
    del msg["model_quality"]
    with pytest.raises(ValueError, match="model_quality"):
        validate_message(msg)
    with pytest.raises(ValueError, match="JSON object"):
        validate_message([1, 2])  # type: ignore[arg-type]


def test_rebuild_flags_leave_as_json_types_and_match_the_schema() -> None:
    """Issue 20: a live message says whether the frame's surrogate was rebuilt (and which
    generation serves it, and whether a rebuild is on its way), and the structure names the
    symmetry-equivalent sites; the schema in docs/schema specifies all of it."""
    from dataclasses import replace

    from tests.stream.test_message_schema import validator

    result = replace(
        numpy_result(),
        model_quality=ModelQuality(
            mae=0.004, n_trees=40, rebuilt=True, generation=3, rebuild_started=False
        ),
        structure={
            "elements": ["W", "W"],
            "xyz": [[0, 0, 0], [1, 0, 0]],
            "permutable": [1, 2],
            "bonded": [[1], [2]],
            "equivalent": [[1, 2]],
        },
    )
    message = build_message(result, Frame("run", 1, 0.0, np.arange(3.0), np.ones(3)))
    quality = message["model_quality"]
    assert quality["rebuilt"] is True and quality["rebuild_started"] is False
    assert quality["generation"] == 3 and isinstance(quality["generation"], int)
    validator().validate(message)
    with pytest.raises(Exception, match=r"integer"):
        validator().validate(message | {"model_quality": {**quality, "generation": 1.5}})


def test_a_keep_set_change_round_trips_through_json() -> None:
    """One definition of a change as JSON (``KeepSetChange.to_json``), shared by the message
    and the change detector's saved state; non-finite confidence is null on the wire."""
    change = KeepSetChange(frame=16, atoms_gained=(3, 7), atoms_lost=(1,), confidence=0.97)
    wire = json.loads(json.dumps(change.to_json(), allow_nan=False))
    assert wire == {"frame": 16, "atoms_gained": [3, 7], "atoms_lost": [1], "confidence": 0.97}
    assert KeepSetChange.from_json(wire) == change
    for bad in (math.nan, math.inf):
        odd = KeepSetChange(frame=2, atoms_gained=(), atoms_lost=(5,), confidence=bad)
        assert odd.to_json()["confidence"] is None
        back = KeepSetChange.from_json(json.loads(json.dumps(odd.to_json(), allow_nan=False)))
        assert math.isnan(back.confidence) and back.atoms_lost == (5,)
