"""StreamService end to end: list sources → queue → deterministic analyzer → real sinks."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from motex_stream.stream.frames import Frame, RunStart, RunStop, StreamItem, regrid
from motex_stream.stream.live.analyzer_protocol import FrameAnalyzer, FrameResult
from motex_stream.stream.messages import PublishedFrame
from motex_stream.stream.metrics import StreamMetrics
from motex_stream.stream.publishers.base import Sink
from motex_stream.stream.publishers.jsonl import JsonlSink, read_jsonl
from motex_stream.stream.publishers.zmq_pub import Subscriber, ZmqPublisher
from motex_stream.stream.service import StreamService
from motex_stream.stream.sources.base import FrameSource, SourceStats
from tests.stream.results import frame_result


class ToyAnalyzer:
    """Deterministic stand-in for the ML-MotEx analyzer, obeying FrameAnalyzer exactly."""

    def __init__(self, name: str = "toy", n_atoms: int = 4, delay: float = 0.0) -> None:
        self.name = name
        self.n_atoms = n_atoms
        self.delay = delay
        self.fail_seqs: set[int] = set()
        self.seen: list[tuple[str, int]] = []
        self._r = np.linspace(2.0, 9.0, 36)

    @property
    def fit_r(self) -> np.ndarray:
        return self._r

    def analyze(self, frame: Frame) -> FrameResult:
        t0 = time.perf_counter()
        g = regrid(frame, self._r)  # FrameError for frames that do not cover the grid
        if frame.seq in self.fail_seqs:
            raise RuntimeError(f"toy failure on frame {frame.seq}")
        if self.delay:
            time.sleep(self.delay)
        self.seen.append((frame.source, frame.seq))
        level = float(np.mean(g))
        contributions = [
            {"atom": i + 1, "element": "W", "value": level * (i - 1.5), "spread": 0.01}
            for i in range(self.n_atoms)
        ]
        mask = [int(c["value"] < 0) for c in contributions]
        elapsed = time.perf_counter() - t0
        return frame_result(
            model=self.name,
            contributions=contributions,
            best={"mask": mask, "rwp": abs(level)},
            timing={"fit": elapsed * 0.8, "explain": elapsed * 0.2},
            model_quality={"mae": 0.001 * frame.seq},
            n_refit=32,
        )


class ListSource(FrameSource):
    """A FrameSource over a fixed list of items, optionally paced at ``rate`` items/s."""

    def __init__(
        self, items: Sequence[StreamItem], rate: float | None = None, name: str = "list"
    ) -> None:
        self.name = name
        self.stats = SourceStats()
        self._items = list(items)
        self._rate = rate

    def items(self, stop_event: threading.Event) -> Iterator[StreamItem]:
        t0 = time.monotonic()
        for i, item in enumerate(self._items):
            if self._rate:
                wait = t0 + i / self._rate - time.monotonic()
                if wait > 0 and stop_event.wait(wait):
                    return
            if stop_event.is_set():
                return
            if isinstance(item, Frame):
                self.stats.add("received")
            yield item


class EndlessSource(ListSource):
    """A live source with nothing to say: blocks until told to stop."""

    def items(self, stop_event: threading.Event) -> Iterator[StreamItem]:
        yield from super().items(stop_event)
        stop_event.wait()


class RecordingSink(Sink):
    """Keeps every call in order, to check what sinks see."""

    name = "RecordingSink"

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.closed = False

    def on_run_start(self, start: RunStart) -> None:
        self.calls.append(("start", start.uid))

    def publish(self, published: PublishedFrame) -> None:
        self.calls.append(("frame", (published.run_uid, published.seq, published.model)))

    def on_run_stop(self, stop: RunStop) -> None:
        self.calls.append(("stop", stop.uid))

    def close(self) -> None:
        self.closed = True

    @property
    def seqs(self) -> list[int]:
        return [c[1][1] for c in self.calls if c[0] == "frame"]


def make_frame(uid: str, seq: int, n: int = 80) -> Frame:
    r = np.linspace(1.0, 10.0, n)
    return Frame(uid, seq, 1_700_000_000.0 + seq, r, np.sin(r + 0.1 * seq) + 0.01 * seq)


def run_items(
    uid: str, n: int, metadata: dict[str, Any] | None = None, stop: bool = True
) -> list[StreamItem]:
    items: list[StreamItem] = [RunStart(uid, 1_700_000_000.0, metadata or {})]
    items += [make_frame(uid, s) for s in range(1, n + 1)]
    if stop:
        items.append(RunStop(uid, 1_700_000_100.0, "success", n))
    return items


def analyzers(*az: FrameAnalyzer) -> dict[str, FrameAnalyzer]:
    return {a.name: a for a in az}


def test_policy_all_processes_every_frame_in_order_with_back_pressure(tmp_path: Path) -> None:
    toy = ToyAnalyzer(delay=0.002)
    rec = RecordingSink()
    jsonl = JsonlSink(tmp_path / "c.jsonl")
    source = ListSource(run_items("run-a", 60) + run_items("run-b", 40))
    svc = StreamService(analyzers(toy), [source], [rec, jsonl], policy="all", queue_size=3)
    summary = svc.run()
    assert summary["received"] == summary["processed"] == 100
    assert summary["skipped"] == summary["failed"] == 0
    assert [c for c in rec.calls if c[0] != "frame"] == [
        ("start", "run-a"), ("stop", "run-a"), ("start", "run-b"), ("stop", "run-b"),
    ]  # fmt: skip
    assert rec.calls[0] == ("start", "run-a") and rec.calls[61] == ("stop", "run-a")
    assert rec.seqs == list(range(1, 61)) + list(range(1, 41))
    messages = list(read_jsonl(tmp_path / "c.jsonl"))
    assert [(m["source"], m["seq"]) for m in messages] == toy.seen
    assert all(m["published_at"] >= m["received_at"] for m in messages)
    assert summary["runs"]["run-a"] == {
        "model": "toy", "received": 60, "processed": 60, "skipped": 0, "failed": 0,
        "abandoned": 0, "stopped": True,
    }  # fmt: skip
    assert rec.closed and summary["latency_s"]["n"] == 100


@pytest.mark.slow
def test_policy_all_at_10_frames_per_second_over_zmq_loses_nothing() -> None:
    pub = ZmqPublisher("tcp://127.0.0.1:*")
    source = ListSource(run_items("run-live", 100), rate=10.0)
    with Subscriber(pub.address) as sub:
        assert pub.wait_for_subscribers(1, timeout=5)
        svc = StreamService(analyzers(ToyAnalyzer(delay=0.02)), [source], [pub], policy="all")
        got: list[int] = []
        with svc:
            while len(got) < 100:
                item = sub.recv(timeout=5)
                assert item is not None, f"stream stalled after {len(got)} messages"
                got.append(item[1]["seq"])
            assert svc.wait(5)
        summary = svc.summary()
    assert got == list(range(1, 101))
    assert summary["processed"] == 100 and summary["skipped"] == 0
    assert summary["latency_s"]["p99"] < 0.5  # analysis keeps up: no queueing


def test_policy_latest_skips_stale_frames_keeps_boundaries_and_bounds_latency() -> None:
    toy = ToyAnalyzer(delay=0.1)  # 10 frames/s of analysis against 50 frames/s of beam
    rec = RecordingSink()
    metrics = StreamMetrics()
    items = run_items("run-fast", 100)
    source = ListSource(items, rate=50.0)
    svc = StreamService(analyzers(toy), [source], [rec], policy="latest", metrics=metrics)
    summary = svc.run()
    assert rec.calls[0] == ("start", "run-fast") and rec.calls[-1] == ("stop", "run-fast")
    assert summary["skipped"] > 50
    assert summary["processed"] + summary["skipped"] == summary["received"] == 100
    assert summary["runs"]["run-fast"]["skipped"] == summary["skipped"]
    assert rec.seqs == sorted(rec.seqs) and rec.seqs[-1] == 100  # newest frame always analysed
    # at most one frame waits behind the one being analysed
    assert summary["latency_s"]["p99"] < 0.45 and summary["latency_s"]["max"] < 1.0
    skipped = metrics.registry.get_sample_value("motex_frames_skipped_total", {"model": "toy"})
    assert skipped == summary["skipped"]


def test_latest_never_drops_frames_of_another_source() -> None:
    slow = ToyAnalyzer(delay=0.05)
    a = ListSource(run_items("run-a", 30), rate=100.0, name="det-a")
    b = ListSource(run_items("run-b", 3), name="det-b")
    rec = RecordingSink()
    summary = StreamService(analyzers(slow), [a, b], [rec], policy="latest").run()
    runs = summary["runs"]
    assert runs["run-b"]["processed"] + runs["run-b"]["skipped"] == 3
    assert runs["run-a"]["skipped"] > 0
    assert ("start", "run-b") in rec.calls and ("stop", "run-b") in rec.calls


def test_bad_frames_are_counted_and_the_service_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    toy = ToyAnalyzer()
    toy.fail_seqs = {4}
    r = np.linspace(1.0, 10.0, 80)
    bad_nan = Frame("run-x", 2, 1.0, r, np.full(80, np.nan))
    bad_shape = Frame("run-x", 3, 1.0, r, np.zeros(50))
    short_grid = Frame("run-x", 5, 1.0, np.linspace(5.0, 6.0, 80), np.zeros(80))
    items: list[StreamItem] = [
        RunStart("run-x", 0.0),
        make_frame("run-x", 1),
        bad_nan,
        bad_shape,
        make_frame("run-x", 4),  # the analyzer raises RuntimeError
        short_grid,  # FrameError from regrid
        make_frame("run-x", 6),
        RunStop("run-x", 2.0),
    ]
    rec = RecordingSink()
    metrics = StreamMetrics()
    with caplog.at_level(logging.ERROR, logger="motex_stream.stream.service"):
        summary = StreamService(analyzers(toy), [ListSource(items)], [rec], metrics=metrics).run()
    assert rec.seqs == [1, 6]
    assert summary["failed"] == 4 and summary["processed"] == 2
    assert metrics.registry.get_sample_value("motex_frames_failed_total", {"model": "toy"}) == 4
    assert "NaN" in caplog.text and "toy failure" in caplog.text


def test_model_chosen_per_run_from_the_start_document(caplog: pytest.LogCaptureFixture) -> None:
    a, b = ToyAnalyzer("a"), ToyAnalyzer("b", n_atoms=2)
    items = (
        run_items("r1", 2)
        + run_items("r2", 2, {"motex_model": "b"})
        + run_items("r3", 1, {"motex_model": "zzz"})
    )
    rec = RecordingSink()
    with caplog.at_level(logging.ERROR):
        StreamService(analyzers(a, b), [ListSource(items)], [rec], default_model="a").run()
    models = [(c[1][0], c[1][2]) for c in rec.calls if c[0] == "frame"]
    assert models == [("r1", "a"), ("r1", "a"), ("r2", "b"), ("r2", "b"), ("r3", "a")]
    assert "zzz" in caplog.text


def test_seq_gaps_from_source_stats_reach_metrics() -> None:
    class GappySource(ListSource):
        def items(self, stop_event: threading.Event) -> Iterator[StreamItem]:
            for item in super().items(stop_event):
                if isinstance(item, Frame) and item.seq == 3:
                    self.stats.add("gaps", 2)  # what a source does when seq jumps 3 → 6
                yield item

    metrics = StreamMetrics()
    frames = [RunStart("g", 0.0)] + [make_frame("g", s) for s in (1, 2, 3, 6)] + [RunStop("g", 1)]
    summary = StreamService(
        analyzers(ToyAnalyzer()), [GappySource(frames, name="gappy")], [], metrics=metrics
    ).run()
    assert summary["gaps"] == 2
    assert metrics.registry.get_sample_value("motex_seq_gaps_total", {"source": "gappy"}) == 2


def test_failing_sink_does_not_starve_the_others() -> None:
    class Broken(RecordingSink):
        def publish(self, published: PublishedFrame) -> None:
            raise OSError("disk full")

    good = RecordingSink()
    summary = StreamService(
        analyzers(ToyAnalyzer()), [ListSource(run_items("s", 3))], [Broken(), good]
    ).run()
    assert good.seqs == [1, 2, 3] and summary["sink_errors"] == 3 and summary["processed"] == 3


def test_stop_returns_promptly_for_a_live_source_and_an_external_stop_event() -> None:
    source = EndlessSource(run_items("live", 2, stop=False))
    rec = RecordingSink()
    stop = threading.Event()
    svc = StreamService(analyzers(ToyAnalyzer()), [source], [rec])
    threading.Timer(0.5, stop.set).start()
    t0 = time.monotonic()
    summary = svc.run(stop)
    assert time.monotonic() - t0 < 3
    assert summary["processed"] == 2 and rec.closed


def test_a_source_that_raises_is_restarted() -> None:
    class Flaky(ListSource):
        calls = 0

        def items(self, stop_event: threading.Event) -> Iterator[StreamItem]:
            Flaky.calls += 1
            if Flaky.calls == 1:
                raise ConnectionError("proxy not up yet")
            yield from super().items(stop_event)

    svc = StreamService(analyzers(ToyAnalyzer()), [Flaky(run_items("f", 2))], [])
    summary = svc.run()
    assert Flaky.calls == 2 and summary["processed"] == 2


def test_constructor_validation() -> None:
    with pytest.raises(ValueError, match="analyzer"):
        StreamService({}, [], [])
    with pytest.raises(ValueError, match="policy"):
        StreamService(analyzers(ToyAnalyzer()), [], [], policy="some")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="default_model"):
        StreamService(analyzers(ToyAnalyzer()), [], [], default_model="x")
    svc = StreamService(analyzers(ToyAnalyzer()), [], [])  # no sources: ends at once
    assert svc.run()["processed"] == 0
    with pytest.raises(ValueError, match="distinct names; shared: twin"):
        StreamService(
            analyzers(ToyAnalyzer()), [ListSource([], name="twin"), ListSource([], name="twin")], []
        )


def test_sinks_get_the_typed_result_with_receipt_and_publish_times() -> None:
    class Keeping(RecordingSink):
        def __init__(self) -> None:
            super().__init__()
            self.published: list[PublishedFrame] = []

        def publish(self, published: PublishedFrame) -> None:
            self.published.append(published)

    sink = Keeping()
    before = time.time()
    StreamService(analyzers(ToyAnalyzer()), [ListSource(run_items("t", 2))], [sink]).run()
    first, second = sink.published
    assert (first.run_uid, first.seq, first.time) == ("t", 1, make_frame("t", 1).time)
    assert isinstance(first.result, FrameResult) and first.model == "toy"
    assert first.received_at is not None and before <= first.received_at <= first.published_at
    assert second.seq == 2


def test_a_configured_source_name_labels_its_metrics(tmp_path: Path) -> None:
    """[[sources]] name → built source → the ``source`` label of the service's metrics."""
    from motex_stream.stream.config import parse_config
    from motex_stream.stream.sources import make_source

    r = np.linspace(1.0, 10.0, 80)
    np.savetxt(tmp_path / "frame_1.gr", np.column_stack([r, np.sin(r)]))
    (tmp_path / "frame_2.gr").write_text("not a pdf\n")
    config = parse_config(
        {
            "service": {"state_dir": "state"},
            "models": [{"name": "toy", "starting_model": "toy.xyz"}],
            "sources": [{"type": "files", "name": "beamtime", "glob": "frame_*.gr"}],
        },
        base_dir=tmp_path,
    )
    metrics = StreamMetrics()
    rec = RecordingSink()
    summary = StreamService(
        analyzers(ToyAnalyzer()),
        [make_source(s) for s in config.sources],
        [rec],
        metrics=metrics,
    ).run()
    assert summary["processed"] == 1 and rec.seqs == [1]
    labels = {"source": "beamtime"}
    assert metrics.registry.get_sample_value("motex_source_malformed_total", labels) == 1
