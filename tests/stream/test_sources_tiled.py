"""Real Tiled: RunEngine → TiledWriter → Tiled server → live subscription / replay."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator

import numpy as np
import pytest
from bluesky import RunEngine

from motex_stream.stream.frames import Frame, RunStart, RunStop, StreamItem
from motex_stream.stream.sim.simulate import PDFDetector, run_series
from motex_stream.stream.sources.tiled_source import (
    TiledLiveSource,
    TiledReplaySource,
    attach_tiled_writer,
    connect,
    load_api_key,
)

TIMEOUT = 60.0


def _collect(source: TiledLiveSource, stop: threading.Event, out: queue.Queue[StreamItem]) -> None:
    for item in source.items(stop):
        out.put(item)


@pytest.fixture
def stored_run(
    tiled_base_uri: str,
    tiled_api_key_env: str,
    run_engine: RunEngine,
    pdf_detector: PDFDetector,
) -> Iterator[tuple[str, list[dict]]]:
    """A 12-frame run written into Tiled; yields its uid and the original event documents."""
    client = connect(tiled_base_uri)
    events: list[dict] = []
    run_engine.subscribe(lambda name, doc: events.append(doc) if name == "event" else None)
    attach_tiled_writer(run_engine, client)
    uid = run_series(run_engine, pdf_detector, 12, delay=0.05, md={"sample": "replay"})
    yield uid, events


def test_api_key_from_env_and_file(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv("MOTEX_TILED_API_KEY", raising=False)
    monkeypatch.delenv("MOTEX_TILED_API_KEY_FILE", raising=False)
    assert load_api_key() is None
    key_file = tmp_path / "key"
    key_file.write_text("secret-from-file\n")
    assert load_api_key(key_file) == "secret-from-file"
    monkeypatch.setenv("MOTEX_TILED_API_KEY", "secret-from-env")
    assert load_api_key(key_file) == "secret-from-env"


@pytest.mark.slow
def test_live_subscription_yields_all_frames_in_order(
    tiled_base_uri: str,
    tiled_api_key_env: str,
    run_engine: RunEngine,
    pdf_detector: PDFDetector,
    r_grid: np.ndarray,
    expected_gr: Callable[[int], np.ndarray],
) -> None:
    source = TiledLiveSource(tiled_base_uri)
    stop = threading.Event()
    out: queue.Queue[StreamItem] = queue.Queue()
    thread = threading.Thread(target=_collect, args=(source, stop, out), daemon=True)
    thread.start()
    try:
        assert source.ready.wait(TIMEOUT)
        client = connect(tiled_base_uri)
        events: list[dict] = []
        run_engine.subscribe(lambda name, doc: events.append(doc) if name == "event" else None)
        attach_tiled_writer(run_engine, client)
        n = 15
        uid = run_series(run_engine, pdf_detector, n, delay=0.02, md={"sample": "live"})
        got: list[StreamItem] = []
        deadline = time.monotonic() + TIMEOUT
        while not (got and isinstance(got[-1], RunStop)) and time.monotonic() < deadline:
            got.append(out.get(timeout=TIMEOUT))
    finally:
        stop.set()
        thread.join(TIMEOUT)
    assert not thread.is_alive()

    assert isinstance(got[0], RunStart) and got[0].uid == uid
    assert got[0].metadata["sample"] == "live"
    frames = [item for item in got if isinstance(item, Frame)]
    assert [f.seq for f in frames] == list(range(1, n + 1))
    for i, frame in enumerate(frames):
        assert frame.source == uid
        assert frame.time == pytest.approx(events[i]["time"])
        np.testing.assert_allclose(frame.r, r_grid)
        np.testing.assert_allclose(frame.g, expected_gr(i))
    stop_item = got[-1]
    assert isinstance(stop_item, RunStop) and stop_item.uid == uid and stop_item.num_events == n
    assert source.stats.gaps == 0 and source.stats.malformed == 0


@pytest.mark.slow
def test_replay_reproduces_stored_run(
    tiled_base_uri: str,
    tiled_api_key_env: str,
    stored_run: tuple[str, list[dict]],
    r_grid: np.ndarray,
    expected_gr: Callable[[int], np.ndarray],
) -> None:
    uid, events = stored_run
    items = list(TiledReplaySource(tiled_base_uri, uid).items(threading.Event()))
    assert isinstance(items[0], RunStart) and items[0].metadata["sample"] == "replay"
    assert isinstance(items[-1], RunStop) and items[-1].num_events == len(events)
    frames = [item for item in items if isinstance(item, Frame)]
    assert [f.seq for f in frames] == [e["seq_num"] for e in events]
    for i, frame in enumerate(frames):
        assert frame.time == pytest.approx(events[i]["time"])
        np.testing.assert_allclose(frame.r, r_grid)
        np.testing.assert_allclose(frame.g, expected_gr(i))


@pytest.mark.slow
def test_replay_pacing(
    tiled_base_uri: str, tiled_api_key_env: str, stored_run: tuple[str, list[dict]]
) -> None:
    uid, events = stored_run
    span = events[-1]["time"] - events[0]["time"]
    speed = 2.0
    source = TiledReplaySource(tiled_base_uri, uid, pace=speed)
    arrivals: list[float] = []
    for item in source.items(threading.Event()):
        if isinstance(item, Frame):
            arrivals.append(time.monotonic())
    elapsed = arrivals[-1] - arrivals[0]
    # Generous bounds for a loaded 2-core machine: never faster than asked, not wildly slower.
    assert elapsed >= 0.9 * span / speed
    assert elapsed <= span / speed + 3.0


def test_replay_stops_when_asked(
    tiled_base_uri: str, tiled_api_key_env: str, stored_run: tuple[str, list[dict]]
) -> None:
    uid, _ = stored_run
    stop = threading.Event()
    seen = []
    for item in TiledReplaySource(tiled_base_uri, uid, pace=0.01).items(stop):
        seen.append(item)
        if isinstance(item, Frame):
            stop.set()
    assert sum(isinstance(i, Frame) for i in seen) == 1


class StockBeamlineWriter:
    """A beamline writing one run into Tiled with the stock ``TiledWriter`` (batch size 1)."""

    def __init__(self, uri: str, r: np.ndarray, gr: Callable[[int], np.ndarray]) -> None:
        import event_model
        from bluesky_tiled_plugins import TiledWriter

        self.writer = TiledWriter(connect(uri), batch_size=1)
        self.gr = gr
        self.run = event_model.compose_run(metadata={"sample": "resumed"})
        self.uid = self.run.start_doc["uid"]
        r_key = {"source": "sim", "dtype": "array", "shape": [r.size], "dtype_numpy": "<f8"}
        self.desc = self.run.compose_descriptor(
            name="primary",
            data_keys={"pdf_gr": {**r_key, "source": "sim"}},
            configuration={
                "det": {
                    "data": {"pdf_r": r.tolist()},
                    "timestamps": {"pdf_r": time.time()},
                    "data_keys": {"pdf_r": r_key},
                }
            },
        )

    def start(self) -> None:
        self.writer("start", self.run.start_doc)
        self.writer("descriptor", self.desc.descriptor_doc)

    def event(self, seq: int) -> None:
        g = self.gr(seq - 1).tolist()
        event = self.desc.compose_event(
            data={"pdf_gr": g}, timestamps={"pdf_gr": time.time()}, seq_num=seq
        )
        self.writer("event", event)

    def stop(self) -> None:
        self.writer("stop", self.run.compose_stop())


@pytest.mark.slow
def test_live_source_takes_up_a_run_in_progress_after_a_restart(
    tiled_base_uri: str,
    tiled_api_key_env: str,
    r_grid: np.ndarray,
    expected_gr: Callable[[int], np.ndarray],
    tmp_path,  # type: ignore[no-untyped-def]
) -> None:
    """Service stopped after 3 of 8 events, 3 more written while it is down, restarted with
    the same run journal: events 4-8 analysed once each (4-6 read back from Tiled, 7-8 live),
    the run's stop closes it, nothing counted as a gap."""
    from motex_stream.stream.journal import RunJournal
    from motex_stream.stream.publishers.jsonl import JsonlSink, read_jsonl
    from motex_stream.stream.service import StreamService
    from tests.stream.test_service import ToyAnalyzer

    journal_dir, out = tmp_path / "@runs", tmp_path / "out.jsonl"
    beamline = StockBeamlineWriter(tiled_base_uri, r_grid, expected_gr)

    def seqs() -> list[int]:
        if not out.exists():
            return []
        return [m["seq"] for m in read_jsonl(out, validate=False) if m["source"] == beamline.uid]

    def serve() -> tuple[StreamService, TiledLiveSource]:
        source = TiledLiveSource(tiled_base_uri)
        service = StreamService(
            {"toy": ToyAnalyzer()}, [source], [JsonlSink(out)], journal=RunJournal(journal_dir)
        )
        service.start()
        assert source.ready.wait(TIMEOUT)
        return service, source

    def wait_for(condition: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + TIMEOUT
        while not condition():
            assert time.monotonic() < deadline, what
            time.sleep(0.05)

    first, _ = serve()
    try:
        beamline.start()
        for seq in (1, 2, 3):
            beamline.event(seq)
        wait_for(lambda: seqs() == [1, 2, 3], f"first service: {seqs()}")
    finally:
        first.stop()
    for seq in (4, 5, 6):  # while no service runs: Tiled keeps them
        beamline.event(seq)

    second, source = serve()
    try:
        wait_for(lambda: seqs() == [1, 2, 3, 4, 5, 6], f"stored events: {seqs()}")
        beamline.event(7)
        beamline.event(8)
        beamline.stop()
        wait_for(lambda: not any(journal_dir.glob("*/start.json")), "the run never stopped")
    finally:
        second.stop()
    summary = second.summary()
    assert seqs() == list(range(1, 9))
    assert summary["processed"] == 5 and summary["duplicates"] == 0, summary
    assert summary["gaps"] == 0 and source.stats.malformed == 0, summary
    assert summary["runs"][beamline.uid]["stopped"]


def test_debug_logging_never_shows_the_api_key(
    tiled_base_uri: str,
    tiled_api_key_env: str,
    run_engine: RunEngine,
    pdf_detector: PDFDetector,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """``serve -vv`` logs DEBUG from every library; the websockets client dumps its request
    headers there, which carry the Tiled API key. (Before: the key was in the log.)"""
    import logging

    from motex_stream.cli import configure_logging

    configure_logging(2)  # what -vv does
    caplog.set_level(logging.DEBUG)
    source = TiledLiveSource(tiled_base_uri)
    stop = threading.Event()
    out: queue.Queue[StreamItem] = queue.Queue()
    thread = threading.Thread(target=_collect, args=(source, stop, out), daemon=True)
    thread.start()
    try:
        assert source.ready.wait(TIMEOUT)
        attach_tiled_writer(run_engine, connect(tiled_base_uri))
        uid = run_series(run_engine, pdf_detector, 2, delay=0.02)
        deadline = time.monotonic() + TIMEOUT
        while True:  # the run's stream and arrays: websockets opened with the key
            item = out.get(timeout=max(0.1, deadline - time.monotonic()))
            if isinstance(item, RunStop) and item.uid == uid:
                break
    finally:
        stop.set()
        thread.join(TIMEOUT)
        logging.getLogger("motex_stream").setLevel(logging.NOTSET)
    shown = [r for r in caplog.records if tiled_api_key_env in r.getMessage()]
    websockets_lines = [r for r in caplog.records if r.name.startswith("websockets")]
    assert websockets_lines, "no websockets DEBUG line was logged: the test shows nothing"
    assert not shown, f"the API key is in {len(shown)} log line(s), e.g. {shown[0].name}"
