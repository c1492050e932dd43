"""Sinks over real sockets and files: ZMQ PUB→SUB, JSON Lines, the derived Bluesky run."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import event_model
import msgpack
import msgpack_numpy
import numpy as np
import pytest
import zmq

from motex_stream.stream.config import parse_config
from motex_stream.stream.frames import Frame, RunStart, RunStop
from motex_stream.stream.live.analyzer_protocol import FrameResult
from motex_stream.stream.messages import (
    SCHEMA,
    PublishedFrame,
    build_message,
    encode,
    to_json,
    to_message,
)
from motex_stream.stream.publishers import Sink, make_sinks
from motex_stream.stream.publishers.bluesky_run import (
    BlueskyRunSink,
    derived_run_uid,
    zmq_publisher,
)
from motex_stream.stream.publishers.derived_run import SinkWriteError
from motex_stream.stream.publishers.jsonl import JsonlSink, read_jsonl
from motex_stream.stream.publishers.zmq_pub import Subscriber, ZmqPublisher, subscribe
from tests.stream.results import frame_result

LOOPBACK_ANY_PORT = "tcp://127.0.0.1:*"
RAW_UID = "0f6e7d3c-raw-run"


def make_frame(seq: int, source: str = RAW_UID) -> Frame:
    r = np.linspace(1.0, 10.0, 50)
    return Frame(source, seq, 1_700_000_000.0 + seq, r, np.sin(r * seq))


def make_result(seq: int, model: str = "keggin") -> FrameResult:
    return frame_result(
        model=model,
        contributions=[
            {"atom": i + 1, "element": "W", "value": 0.01 * seq - 0.02 * i, "spread": 0.001}
            for i in range(4)
        ],
        best={"mask": [1, 0, 1, 1], "rwp": 0.5 / seq},
        timing={"fit": 0.1, "explain": 0.05},
        model_quality={"mae": 0.003},
        n_refit=64,
    )


def make_published(seq: int, model: str = "keggin", source: str = RAW_UID) -> PublishedFrame:
    """What the service hands every sink for one analysed frame."""
    received = time.time()
    return PublishedFrame.of(
        make_result(seq, model),
        make_frame(seq, source),
        received_at=received,
        published_at=received + 0.25,
    )


# --- ZMQ ---------------------------------------------------------------------------------


def test_zmq_pub_sub_topics_and_order() -> None:
    with ZmqPublisher(LOOPBACK_ANY_PORT) as pub:
        assert pub.address.startswith("tcp://127.0.0.1:")
        with Subscriber(pub.address) as everything, Subscriber(pub.address, ["ga2o3"]) as one:
            assert pub.wait_for_subscribers(2, timeout=5)
            for seq in range(1, 6):
                pub.publish(make_published(seq, "keggin"))
            pub.publish(make_published(1, "ga2o3"))
            got = [everything.recv(timeout=5) for _ in range(6)]
            assert [(t, m["seq"]) for t, m in got if t == "keggin"] == [
                ("keggin", s) for s in range(1, 6)
            ]
            topic, msg = one.recv(timeout=5)  # type: ignore[misc]
            assert topic == "ga2o3" and msg["model"] == "ga2o3" and msg["schema"] == SCHEMA
            assert one.recv(timeout=0.2) is None  # keggin messages were filtered out
        assert pub.sent == 6


def test_subscribe_generator_and_invalid_messages_skipped() -> None:
    ctx = zmq.Context.instance()
    raw = ctx.socket(zmq.PUB)
    port = raw.bind_to_random_port("tcp://127.0.0.1")
    try:
        address = f"tcp://127.0.0.1:{port}"
        with Subscriber(address) as sub:
            deadline = time.monotonic() + 30
            got = None
            while got is None and time.monotonic() < deadline:  # slow joiner: retry
                raw.send_multipart([b"keggin", to_json(make_published(3))])
                got = sub.recv(timeout=0.1)
            assert got is not None and got[1]["seq"] == 3
            # joined now: garbage then a good message, in order on one PUB socket
            raw.send_multipart([b"keggin", b"not json"])
            raw.send_multipart([b"keggin", to_json(make_published(4))])
            seqs = []
            while not seqs or seqs[-1] != 4:  # copies of 3 sent while joining come first
                got = sub.recv(timeout=10)
                assert got is not None
                seqs.append(got[1]["seq"])
            assert set(seqs) <= {3, 4} and sub.invalid == 1
        gen = subscribe(address, timeout=0.3)
        assert list(gen) == []  # nothing published: ends after the timeout gap
    finally:
        raw.close(linger=0)


def test_subscribe_max_messages() -> None:
    with ZmqPublisher(LOOPBACK_ANY_PORT) as pub:
        gen = subscribe(pub.address, max_messages=2)
        received: list[int] = []

        import threading

        def consume() -> None:
            received.extend(m["seq"] for _, m in gen)

        t = threading.Thread(target=consume)
        t.start()
        assert pub.wait_for_subscribers(1, timeout=5)
        for seq in (1, 2, 3):
            pub.publish(make_published(seq))
        t.join(5)
        assert received == [1, 2]


def test_zmq_send_message_sends_a_prebuilt_message() -> None:
    with ZmqPublisher(LOOPBACK_ANY_PORT) as pub, Subscriber(pub.address) as sub:
        assert pub.wait_for_subscribers(1, timeout=5)
        pub.send_message(to_message(make_published(2, "ga2o3")))
        topic, msg = sub.recv(timeout=5)  # type: ignore[misc]
        assert topic == "ga2o3" and msg["seq"] == 2 and pub.sent == 1


# --- the message every JSON sink writes -------------------------------------------------


def test_wire_format_is_the_v1_message_unchanged() -> None:
    published = make_published(3)
    message = to_message(published)
    assert message == build_message(
        published.result,
        make_frame(3),
        received_at=published.received_at,
        published_at=published.published_at,
    )
    assert list(message) == [
        "schema",
        "model",
        "source",
        "seq",
        "time",
        "contributions",
        "best",
        "timing",
        "model_quality",
        "n_refit",
        "received_at",
        "published_at",
        "extra",
    ]
    assert (message["source"], message["seq"], message["time"]) == (RAW_UID, 3, 1_700_000_003.0)
    assert message["published_at"] - message["received_at"] == pytest.approx(0.25)
    assert to_json(published) == encode(message)


def test_non_finite_values_are_null_in_json_and_nan_in_the_bluesky_run(tmp_path: Path) -> None:
    from dataclasses import replace

    result = make_result(1)
    atoms = result.contributions
    value, spread = atoms.value.copy(), atoms.spread.copy()
    value[1], spread[2] = np.nan, np.nan  # NaN: no value (null in JSON)
    result = replace(result, contributions=replace(atoms, value=value, spread=spread))
    published = PublishedFrame.of(result, make_frame(1), received_at=None, published_at=5.0)
    sink = JsonlSink(tmp_path / "c.jsonl")
    sink.publish(published)
    sink.close()
    (line,) = read_jsonl(tmp_path / "c.jsonl")
    assert line["contributions"][1]["value"] is None and line["received_at"] is None
    docs: list[tuple[str, dict[str, Any]]] = []
    bluesky = BlueskyRunSink([lambda n, d: docs.append((n, d))])
    bluesky.publish(published)
    (event,) = [d for n, d in docs if n == "event"]
    assert math.isnan(event["data"]["contributions"][1])
    assert math.isnan(event["data"]["contribution_spread"][2])
    assert math.isnan(event["data"]["latency"])  # never received: no latency
    assert event["data"]["best_rwp"] == pytest.approx(0.5)


# --- JSON Lines --------------------------------------------------------------------------


def test_jsonl_appends_and_reads_back(tmp_path: Path) -> None:
    path = tmp_path / "out" / "c.jsonl"
    sink = JsonlSink(path)
    for seq in (1, 2):
        sink.publish(make_published(seq))
    # flushed per line: readable before close
    assert [m["seq"] for m in read_jsonl(path)] == [1, 2]
    sink.close()
    again = JsonlSink(path)  # a restarted service appends
    again.publish(make_published(3))
    again.close()
    assert [m["seq"] for m in read_jsonl(path)] == [1, 2, 3]


def test_jsonl_truncated_tail_is_skipped_but_corruption_raises(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    good = json.dumps(to_message(make_published(1)))
    path.write_text(good + "\n" + good[: len(good) // 2])
    assert len(list(read_jsonl(path))) == 1
    path.write_text(good + "\n{broken\n" + good + "\n")
    with pytest.raises(ValueError, match=r"c\.jsonl:2"):
        list(read_jsonl(path))


# --- derived Bluesky run -----------------------------------------------------------------


def validate_docs(docs: list[tuple[str, dict[str, Any]]]) -> None:
    for name, doc in docs:
        event_model.schema_validators[event_model.DocumentNames[name]].validate(doc)


def run_through(sink: BlueskyRunSink, seqs: list[int], stop: bool = True) -> None:
    sink.on_run_start(RunStart(RAW_UID, 1_700_000_000.0, {"sample_name": "keggin-sol"}))
    for seq in seqs:
        sink.publish(make_published(seq))
    if stop:
        sink.on_run_stop(RunStop(RAW_UID, 1_700_000_100.0, "success", len(seqs)))


def test_derived_run_documents_validate_and_keep_raw_times() -> None:
    docs: list[tuple[str, dict[str, Any]]] = []
    sink = BlueskyRunSink([lambda name, doc: docs.append((name, doc))], analysis_version="1.0")
    run_through(sink, [1, 2, 4])  # frame 3 was skipped upstream
    validate_docs(docs)
    names = [n for n, _ in docs]
    assert names == ["start", "descriptor", "event", "event", "event", "stop"]
    start = docs[0][1]
    assert start["uid"] == derived_run_uid(RAW_UID, "keggin", "1.0")
    assert start["original_run_uid"] == RAW_UID and start["analysis_stage"] == "motex"
    assert start["original_sample_name"] == "keggin-sol"
    descriptor = docs[1][1]
    assert descriptor["data_keys"]["contributions"]["shape"] == [4]
    assert descriptor["configuration"]["motex"]["data"]["atom"] == [1, 2, 3, 4]
    events = [d for n, d in docs if n == "event"]
    assert [e["seq_num"] for e in events] == [1, 2, 4]
    assert [e["time"] for e in events] == [make_frame(s).time for s in (1, 2, 4)]
    assert events[0]["data"]["contributions"] == pytest.approx([0.01, -0.01, -0.03, -0.05])
    assert events[1]["data"]["best_rwp"] == pytest.approx(0.25)
    stop = docs[-1][1]
    assert stop["exit_status"] == "success" and stop["num_events"] == {"primary": 3}
    # what stock clients need: plan fields, versions, units everywhere, times inside the run
    for field in ("plan_name", "plan_type", "scan_id", "versions"):
        assert field in start, field
    assert all("units" in key for key in descriptor["data_keys"].values())
    assert start["time"] <= descriptor["time"] <= min(e["time"] for e in events)
    assert stop["time"] >= max(e["time"] for e in events)


def test_derived_uid_is_one_per_analysis() -> None:
    """Same raw run + same analysis id → same uid; another analysis id → another uid."""
    from motex_stream.stream.messages import AnalysisIdentity

    def start_uid(analysis: AnalysisIdentity | None) -> str:
        docs: list[tuple[str, dict[str, Any]]] = []
        sink = BlueskyRunSink([lambda n, d: docs.append((n, d))])
        sink.on_run_start(RunStart(RAW_UID, 1_700_000_000.0))
        published = make_published(1)
        sink.publish(PublishedFrame(**{**published.__dict__, "analysis": analysis}))
        start = docs[0][1]
        if analysis is not None:
            assert start["motex_analysis_id"] == analysis.id
            assert start["motex_settings"] == dict(analysis.settings)
        return start["uid"]

    a = AnalysisIdentity("aaaa", {"seed": 0})
    assert start_uid(a) == start_uid(AnalysisIdentity("aaaa", {"seed": 0}))
    assert start_uid(a) != start_uid(AnalysisIdentity("bbbb", {"seed": 7}))
    assert start_uid(a) != start_uid(None)


def test_derived_run_is_deterministic_across_replays() -> None:
    first: list[tuple[str, dict[str, Any]]] = []
    second: list[tuple[str, dict[str, Any]]] = []
    run_through(BlueskyRunSink([lambda n, d: first.append((n, d))]), [1, 2])
    run_through(BlueskyRunSink([lambda n, d: second.append((n, d))]), [1, 2])
    assert [d["uid"] for _, d in first] == [d["uid"] for _, d in second]
    other: list[tuple[str, dict[str, Any]]] = []
    run_through(BlueskyRunSink([lambda n, d: other.append((n, d))], analysis_version="x"), [1])
    assert other[0][1]["uid"] != first[0][1]["uid"]


def test_close_aborts_unfinished_derived_runs_and_failing_callbacks_are_isolated() -> None:
    docs: list[tuple[str, dict[str, Any]]] = []

    def broken(name: str, doc: dict[str, Any]) -> None:
        raise RuntimeError("tiled is down")

    sink = BlueskyRunSink([broken, lambda n, d: docs.append((n, d))])
    # each failed write is reported to the service (which counts a sink error) ...
    with pytest.raises(SinkWriteError, match=r"failed on a start document.*tiled is down"):
        run_through(sink, [1], stop=False)
    with pytest.raises(SinkWriteError, match="failed on a stop document"):
        sink.close()
    # ... while the healthy callback still gets the whole run
    validate_docs(docs)
    assert [n for n, _ in docs] == ["start", "descriptor", "event", "stop"]
    assert docs[-1][1]["exit_status"] == "abort"


def test_derived_run_over_bluesky_0mq_publisher() -> None:
    """Bluesky's Publisher with prefix b'an' and msgpack, received on a real SUB socket."""
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"an ")
    port = sub.bind_to_random_port("tcp://127.0.0.1")
    publisher = zmq_publisher(f"127.0.0.1:{port}", prefix=b"an")
    sink = BlueskyRunSink([publisher])
    try:
        # Measured: a fresh PUB that *connects* drops its first message however long one
        # waits (libzmq reads the peer's subscription lazily), so probe until one arrives.
        while not sub.poll(100):
            publisher("probe", {})
        while sub.poll(200):
            sub.recv()
        run_through(sink, [1, 2])
        got = []
        while len(got) < 5 and sub.poll(5000):
            prefix, name, payload = sub.recv().split(b" ", 2)
            assert prefix == b"an"
            doc = msgpack.unpackb(payload, object_hook=msgpack_numpy.decode)
            got.append((name.decode(), doc))
        assert [n for n, _ in got] == ["start", "descriptor", "event", "event", "stop"]
        validate_docs(got)
        assert got[0][1]["original_run_uid"] == RAW_UID
    finally:
        sink.close()  # closes the Publisher too
        sub.close(linger=0)
        ctx.term()


# --- make_sinks --------------------------------------------------------------------------


def test_make_sinks_from_config(tmp_path: Path) -> None:
    cfg = parse_config(
        {
            "service": {"state_dir": "s"},
            "models": [{"name": "keggin", "starting_model": "a.xyz", "permute": ["W"]}],
            "sinks": [
                {"type": "zmq", "bind": LOOPBACK_ANY_PORT},
                {"type": "jsonl", "path": "out.jsonl", "fsync": True},
                {"type": "bluesky", "address": "127.0.0.1:1", "prefix": "an2"},
            ],
        },
        base_dir=tmp_path,
    )
    sinks = make_sinks(cfg)
    try:
        assert [type(s).__name__ for s in sinks] == ["ZmqPublisher", "JsonlSink", "BlueskyRunSink"]
        assert all(isinstance(s, Sink) for s in sinks)
        assert sinks[1]._fsync is True  # type: ignore[attr-defined]
        assert len(sinks[2].callbacks) == 1  # type: ignore[attr-defined]
        sinks[1].publish(make_published(1))
        assert next(read_jsonl(tmp_path / "out.jsonl"))["seq"] == 1
    finally:
        for s in sinks:
            s.close()


def test_make_sinks_closes_the_open_ones_when_one_fails(tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("a file where the jsonl folder should be")
    cfg = parse_config(
        {
            "service": {"state_dir": "s"},
            "models": [{"name": "keggin", "starting_model": "a.xyz"}],
            "sinks": [
                {"type": "zmq", "bind": LOOPBACK_ANY_PORT},
                {"type": "jsonl", "path": "taken/out.jsonl"},
            ],
        },
        base_dir=tmp_path,
    )
    with pytest.raises(OSError):
        make_sinks(cfg)
