"""The message contract: docs/schema/contributions-v1.schema.json, checked with jsonschema.

The schema is the specification a facility's own consumer is written against. These tests
hold three things to it: what the service really sends (built messages, and a replay's JSON
Lines output in the slow test), the reader's own ``validate_message``, and the message section
of docs/streaming.md, which is generated from the schema (regenerate with
``python tests/stream/test_message_schema.py --write``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest
import zmq

from motex_stream.stream.frames import Frame
from motex_stream.stream.live.analyzer_protocol import FrameResult
from motex_stream.stream.messages import SCHEMA, build_message, encode, validate_message
from motex_stream.stream.publishers.zmq_pub import Subscriber, ZmqPublisher
from tests.stream.results import frame_result, keep_set_change

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_PATH = ROOT / "docs" / "schema" / "contributions-v1.schema.json"
STREAMING_MD = ROOT / "docs" / "streaming.md"
BEGIN = "<!-- message-schema:begin (generated from docs/schema; do not edit) -->"
END = "<!-- message-schema:end -->"


def load_schema() -> dict[str, Any]:
    return json.loads(SCHEMA_PATH.read_text())


def validator() -> jsonschema.Draft202012Validator:
    schema = load_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def _type(spec: dict[str, Any]) -> str:
    if "const" in spec:
        return f'`"{spec["const"]}"`'
    kinds = spec.get("type", "object")
    kinds = [kinds] if isinstance(kinds, str) else kinds
    if "array" in kinds and "items" in spec:
        inner = spec["items"].get("type", "object")
        kinds = [f"array of {inner}" if k == "array" else k for k in kinds]
    return " or ".join(kinds)


def render_section(schema: dict[str, Any]) -> str:
    """The message section of docs/streaming.md: an example and one row per field."""
    lines = [BEGIN, "```json", json.dumps(schema["examples"][0], indent=1), "```", ""]
    lines += ["| field | type | required | meaning |", "|---|---|---|---|"]

    def rows(props: dict[str, Any], required: list[str], prefix: str) -> None:
        for name, spec in props.items():
            need = "yes" if name in required else "no"
            lines.append(f"| `{prefix}{name}` | {_type(spec)} | {need} | {spec['description']} |")
            if "properties" in spec:
                rows(spec["properties"], spec.get("required", []), f"{prefix}{name}.")
            items = spec.get("items", {})
            if "properties" in items:
                rows(items["properties"], items.get("required", []), f"{prefix}{name}[].")

    rows(schema["properties"], schema["required"], "")
    lines.append(END)
    return "\n".join(lines)


def numpy_result(n_atoms: int = 3) -> FrameResult:
    """What the live analyzer returns: numpy scalars, counts and flags as floats."""
    return frame_result(
        model="keggin-109725",
        contributions=[
            {"atom": np.int64(i + 1), "element": "W", "value": np.float64(-0.01 * i), "spread": 0.0}
            for i in range(n_atoms)
        ],
        best={
            "mask": np.ones(n_atoms, dtype=np.int64),
            "rwp": np.float64(0.3),
            "scale": np.float64(1.2),
            "zoom": np.array([0.99, 1.0, 1.01]),
        },
        timing={"regrid": 0.001, "fit": 0.2, "train": 0.03, "explain": 0.04},
        model_quality={"mae": 0.004, "n_trees": 40.0, "rebuilt": 1.0, "fits_per_s": 1e4},
        n_refit=np.int64(100),  # type: ignore[arg-type]
    )


def frame() -> Frame:
    r = np.linspace(1, 10, 20)
    return Frame("run-uid", 3, 1.7e9, r, np.sin(r))


def test_schema_is_valid_and_its_example_validates() -> None:
    assert load_schema()["title"] == SCHEMA
    v = validator()
    example = load_schema()["examples"][0]
    v.validate(example)
    validate_message(example)  # the package's own reader agrees


def test_built_messages_validate_and_keep_integers() -> None:
    message = build_message(numpy_result(), frame(), received_at=1.7e9 + 1, published_at=1.7e9 + 2)
    validator().validate(message)
    assert message["model_quality"]["n_trees"] == 40 and message["model_quality"]["rebuilt"] is True
    # JSON Schema counts 40.0 as an integer; a typed consumer does not: check the wire text
    wire = encode(message).decode()
    for text in ('"n_trees":40,', '"rebuilt":true', '"seq":3,', '"n_refit":100,', '"atom":1,'):
        assert text in wire, text
    assert message["best"]["zoom"] == [0.99, 1.0, 1.01] and message["best"]["scale"] == 1.2


def test_interval_fields_are_optional_and_checked() -> None:
    """ci_low/ci_high/label pass through to the message and validate; a v1 message without
    them still validates; an unknown label does not."""
    from dataclasses import replace

    result = numpy_result()
    n = len(result.contributions)
    atoms = replace(
        result.contributions,
        interval=(np.full(n, -0.03), np.full(n, np.nan)),
        label=("uncertain",) * n,
    )
    message = build_message(
        replace(result, contributions=atoms), frame(), received_at=None, published_at=1.7e9
    )
    validator().validate(message)
    entry = message["contributions"][0]
    assert (entry["ci_low"], entry["ci_high"], entry["label"]) == (-0.03, None, "uncertain")
    entry["label"] = "maybe"
    with pytest.raises(jsonschema.ValidationError):
        validator().validate(message)


@pytest.mark.parametrize(
    ("change", "where"),
    [
        ({"seq": 0}, "seq"),
        ({"schema": "motex-stream/contributions/v2"}, "schema"),
        ({"model_quality": {"rebuilt": 1}}, "rebuilt"),
        ({"best": {"mask": [1], "rwp": 0.1}}, "best"),
        ({"contributions": []}, "contributions"),
    ],
)
def test_schema_rejects_what_a_consumer_must_not_accept(change: dict, where: str) -> None:
    message = build_message(numpy_result(), frame(), received_at=None, published_at=1.7e9)
    with pytest.raises(jsonschema.ValidationError) as err:
        validator().validate(message | change)
    assert where in str(err.value.json_path) + str(err.value.message)


def test_streaming_docs_are_generated_from_the_schema() -> None:
    text = STREAMING_MD.read_text()
    assert BEGIN in text and END in text, "docs/streaming.md lacks the generated message section"
    current = text[text.index(BEGIN) : text.index(END) + len(END)]
    assert current == render_section(load_schema()), (
        "docs/streaming.md is out of date: python tests/stream/test_message_schema.py --write"
    )


def test_topic_is_terminated_so_prefixes_do_not_mix_models() -> None:
    """A subscriber to ``keggin`` gets keggin's messages, not ``keggin-109725``'s."""
    ctx = zmq.Context()
    publisher = ZmqPublisher("tcp://127.0.0.1:*", context=ctx)
    short = Subscriber(publisher.address, ["keggin"], context=ctx)
    everything = Subscriber(publisher.address, [], context=ctx)
    try:
        assert publisher.wait_for_subscribers(2, timeout=5)
        long_msg = build_message(numpy_result(), frame(), published_at=1.7e9)
        short_msg = long_msg | {"model": "keggin"}
        publisher.send_message(long_msg)
        publisher.send_message(short_msg)
        got = short.recv(timeout=5)
        assert got is not None and got[0] == "keggin" and got[1]["model"] == "keggin"
        assert short.recv(timeout=0.3) is None
        models = [everything.recv(timeout=5), everything.recv(timeout=5)]
        assert [m[0] for m in models if m] == ["keggin-109725", "keggin"]
    finally:
        short.close()
        everything.close()
        publisher.close()
        ctx.term()


def write_docs() -> None:
    text = STREAMING_MD.read_text()
    section = render_section(load_schema())
    if BEGIN in text:
        text = text[: text.index(BEGIN)] + section + text[text.index(END) + len(END) :]
    else:
        raise SystemExit(f"add the two marker lines to {STREAMING_MD} first")
    STREAMING_MD.write_text(text)


if __name__ == "__main__":
    if "--write" in sys.argv:
        write_docs()
    else:
        print(render_section(load_schema()))


def test_change_is_optional_and_checked() -> None:
    """A frame that confirms a keep-set change carries it; others do not; bad ones fail."""
    from dataclasses import replace

    plain = build_message(numpy_result(), frame(), received_at=None, published_at=1.7e9)
    assert "change" not in plain
    change = {"frame": 3, "atoms_gained": [2], "atoms_lost": [], "confidence": 0.97}
    result = replace(numpy_result(), change=keep_set_change(change))
    message = build_message(result, frame(), received_at=None, published_at=1.7e9)
    validator().validate(message)
    assert message["change"] == change
    with pytest.raises(jsonschema.ValidationError):
        validator().validate(message | {"change": {"frame": 3}})
