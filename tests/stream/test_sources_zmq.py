"""End to end over real 0MQ: RunEngine → Publisher → bluesky-0MQ-proxy → ZmqSource."""

from __future__ import annotations

import pickle
import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterator

import msgpack
import numpy as np
import pytest
from bluesky import RunEngine
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from motex_stream.stream.frames import Frame, RunStart, RunStop
from motex_stream.stream.sim.simulate import PDFDetector, run_series
from motex_stream.stream.sources.wire import UnsafePayloadError
from motex_stream.stream.sources.zmq_source import (
    ZmqSource,
    make_publisher,
    msgpack_deserializer,
    msgpack_serializer,
)
from tests.stream.collector import Collector

TIMEOUT = 30.0


def handshake(publish: Callable[[str, dict], None], collector: Collector) -> None:
    """Beat the 0MQ slow joiner: re-send a throwaway start until the source has seen one."""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        uid = str(uuid.uuid4())
        publish("start", {"uid": uid, "time": time.time()})
        try:
            item = collector.next(timeout=0.3)
        except queue.Empty:
            continue
        if isinstance(item, RunStart):
            publish(
                "stop",
                {
                    "uid": str(uuid.uuid4()),
                    "run_start": uid,
                    "time": time.time(),
                    "exit_status": "success",
                    "num_events": {},
                },
            )
            # Drain whatever the handshake produced.
            time.sleep(0.3)
            while not collector.items.empty():
                collector.items.get_nowait()
            return
    pytest.fail("0MQ path never came up")


@pytest.fixture
def collector(zmq_proxy) -> Iterator[Collector]:  # type: ignore[no-untyped-def]
    with Collector(ZmqSource(zmq_proxy.outbound)) as c:
        yield c


def test_msgpack_roundtrip_keeps_arrays() -> None:
    doc = {"data": {"pdf_gr": np.arange(5, dtype="<f8")}, "seq_num": 3}
    back = msgpack_deserializer(msgpack_serializer(doc))
    assert back["seq_num"] == 3
    assert back["data"]["pdf_gr"].dtype == np.dtype("<f8")
    np.testing.assert_array_equal(back["data"]["pdf_gr"], np.arange(5.0))


# -- the decoder: numeric numpy values only, never pickle ----------------------------------

_ND_KEYS = [b"nd", b"type", b"kind", b"shape", b"data", b"complex"]
_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.binary(max_size=64)
    | st.text(max_size=16)
    | st.sampled_from(["<f8", "|O", "O", "|V8", "<U4", "<c16", "|b1", "<M8[s]", "f3", b"<i4"])
    | st.sampled_from([b"", b"O", b"V", "O"])
)
_values = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(_ND_KEYS) | st.text(max_size=6), inner, max_size=6)
    ),
    max_leaves=20,
)
_numpy_like = st.fixed_dictionaries(
    {b"nd": st.sampled_from([True, False, 1, None])},
    optional={
        b"type": _values,
        b"kind": _values,
        b"shape": st.lists(st.integers(-2, 2**40), max_size=4) | _values,
        b"data": st.binary(max_size=64) | _values,
    },
)


def _no_pickle(*args: object, **kwargs: object) -> None:
    raise AssertionError("pickle was called on network input")


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    field=st.one_of(_numpy_like, _values),
    name=st.sampled_from(["start", "descriptor", "event", "event_page", "stop"]),
)
def test_decoder_fuzz_never_raises_past_the_source_and_never_unpickles(
    field: object, name: str
) -> None:
    """Random msgpack maps, many in msgpack-numpy's format: decoding either gives numeric
    values or refuses with UnsafePayloadError; the source counts every refusal and never lets
    an exception out; pickle is never called."""
    doc = {"uid": "u", "time": 1.0, "run_start": "u", "descriptor": "d", "seq_num": 1}
    payload = msgpack.packb({**doc, "sample_name": field, "data": {"pdf_gr": field}})
    source = ZmqSource("tcp://127.0.0.1:1")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pickle, "loads", _no_pickle)
        mp.setattr(pickle, "load", _no_pickle)
        mp.setattr(pickle, "Unpickler", _no_pickle)
        try:
            decoded = msgpack_deserializer(payload)
        except UnsafePayloadError:
            decoded = None
        for value in _leaves(decoded):
            if isinstance(value, np.ndarray | np.generic):
                assert value.dtype.kind in "biufc"
        before = source.stats.malformed
        source.handle_message(b"raw " + name.encode() + b" " + payload)  # never raises
        if decoded is None:
            assert source.stats.kinds() == {"bad_document": before + 1}


def _leaves(value: object) -> list[object]:
    if isinstance(value, dict):
        return [leaf for v in value.values() for leaf in _leaves(v)]
    if isinstance(value, list):
        return [leaf for v in value for leaf in _leaves(v)]
    return [value]


@settings(max_examples=200, deadline=None)
@given(
    hnp.arrays(
        st.one_of(
            hnp.boolean_dtypes(),
            hnp.integer_dtypes(),
            hnp.unsigned_integer_dtypes(),
            hnp.floating_dtypes(),
            hnp.complex_number_dtypes(),
        ),
        hnp.array_shapes(min_dims=0, max_dims=3, max_side=5),
    )
)
def test_decoder_round_trips_numeric_arrays(array: np.ndarray) -> None:
    doc: dict[str, object] = {"a": array}
    if array.size:
        doc["s"] = array.reshape(-1)[0]  # a numpy scalar: msgpack-numpy's other form
    back = msgpack_deserializer(msgpack_serializer(doc))
    assert back["a"].dtype == array.dtype and back["a"].shape == array.shape
    np.testing.assert_array_equal(back["a"], array)
    if array.size:
        assert np.asarray(back["s"]).dtype.kind == array.dtype.kind
        np.testing.assert_array_equal(back["s"], array.reshape(-1)[0])


def test_run_engine_to_zmq_source(
    zmq_proxy,  # type: ignore[no-untyped-def]
    collector: Collector,
    run_engine: RunEngine,
    pdf_detector: PDFDetector,
    r_grid: np.ndarray,
    expected_gr: Callable[[int], np.ndarray],
) -> None:
    publisher = make_publisher(zmq_proxy.inbound)
    try:
        handshake(publisher, collector)
        docs: list[tuple[str, dict]] = []
        run_engine.subscribe(lambda name, doc: docs.append((name, doc)))
        run_engine.subscribe(publisher)
        n = 20
        uid = run_series(run_engine, pdf_detector, n, delay=0.01, md={"sample": "keggin"})
        got = collector.until_stop(uid)
    finally:
        publisher.close()

    assert isinstance(got[0], RunStart) and got[0].uid == uid
    assert got[0].metadata["sample"] == "keggin"
    frames = [item for item in got if isinstance(item, Frame)]
    assert [f.seq for f in frames] == list(range(1, n + 1))
    event_times = [doc["time"] for name, doc in docs if name == "event"]
    for i, frame in enumerate(frames):
        assert frame.source == uid
        assert frame.time == pytest.approx(event_times[i])
        np.testing.assert_allclose(frame.r, r_grid)
        np.testing.assert_allclose(frame.g, expected_gr(i))
    stop = got[-1]
    assert isinstance(stop, RunStop) and stop.exit_status == "success" and stop.num_events == n
    stats = collector.source.stats.as_dict()
    assert stats["received"] == n and stats["gaps"] == 0 and stats["malformed"] == 0


def test_garbage_and_pickle_are_not_decoded(zmq_proxy, collector: Collector) -> None:  # type: ignore[no-untyped-def]
    """A pickle payload is refused (counted malformed), not executed."""
    import pickle

    import zmq

    publisher = make_publisher(zmq_proxy.inbound)
    ctx = zmq.Context()
    raw = ctx.socket(zmq.PUB)
    raw.connect(zmq_proxy.inbound)
    try:
        handshake(publisher, collector)
        before = collector.source.stats.malformed
        deadline = time.monotonic() + TIMEOUT
        while collector.source.stats.malformed == before and time.monotonic() < deadline:
            raw.send(b"raw start " + pickle.dumps({"uid": "x", "time": 0.0}))
            time.sleep(0.2)
        assert collector.source.stats.malformed > before
        with pytest.raises(queue.Empty):
            collector.next(timeout=0.5)
    finally:
        raw.close()
        ctx.term()
        publisher.close()


def test_source_stops_without_traffic(zmq_proxy) -> None:  # type: ignore[no-untyped-def]
    source = ZmqSource(zmq_proxy.outbound)
    stop = threading.Event()
    with Collector(source) as c:
        stop = c.stop_event
        time.sleep(0.2)
    assert stop.is_set()
