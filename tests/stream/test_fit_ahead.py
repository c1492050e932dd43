"""The next frame's refit, done beside this frame's analysis, changes no published number
(issue 23: use both cores on the live path).

With the fit ahead on, every frame's results are those with it off, bit for bit, through a
rebuilt frame (which refits the whole catalogue, so a subset fitted ahead for it is redone),
a bad frame in the middle and a frame announced but not analysed (its fit is dropped,
counted); the service announces only a frame already waiting in its queue, for the model
that will analyse it, and a failing announcement never costs a frame.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from motex_stream.stream.frames import Frame, FrameError, RunStart, RunStop, StreamItem
from motex_stream.stream.live.analyzer import MotexFrameAnalyzer
from motex_stream.stream.live.analyzer_protocol import FrameResult
from motex_stream.stream.publishers.jsonl import JsonlSink, read_jsonl
from motex_stream.stream.service import StreamService
from motex_stream.stream.sources.base import FrameSource, SourceStats
from tests.stream.test_service import ToyAnalyzer
from tests.stream.test_warm_restart import assert_same_result
from tests.stream.two_motifs import PreparedState

#: refit part of the catalogue (200 of 300 motifs), so a rebuilt frame (every third frame
#: at the small model's tree cap) needs more rows than were fitted ahead for it
CHANGES = {"refit": 200}
BAD = 5  # the seq of a frame whose G is zero everywhere: FrameError in its analyze


def _frame(series, seq: int) -> Frame:  # type: ignore[no-untyped-def]
    """Frames close to frame 1; frame :data:`BAD` has no signal."""
    g = series.frame(0) * (1 + 0.001 * seq)
    return Frame("run", seq, float(seq), series.r, np.zeros_like(g) if seq == BAD else g)


def _results(analyzer: MotexFrameAnalyzer, frames: list[Frame], announced: list[Frame | None]):  # type: ignore[no-untyped-def]
    """Each frame analysed in turn, the frame ``announced`` for it told first (None: none)."""
    out: list[FrameResult | str] = []
    for frame, ahead in zip(frames, announced, strict=True):
        if ahead is not None:
            analyzer.fit_ahead(ahead)
        try:
            out.append(analyzer.analyze(frame))
        except FrameError as exc:
            out.append(f"FrameError: {exc}")
    return out


def _same(want: FrameResult | str, got: FrameResult | str) -> None:
    if isinstance(want, str) or isinstance(got, str):
        assert want == got
        return
    assert_same_result(want, got)
    assert want.n_refit == got.n_refit
    assert want.contributions.interval is not None and got.contributions.interval is not None
    for a, b in zip(want.contributions.interval, got.contributions.interval, strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(want.best.zoom, got.best.zoom)
    assert want.fit is not None and got.fit is not None
    np.testing.assert_array_equal(want.fit.g_calc, got.fit.g_calc)
    assert want.extra == got.extra


def test_frames_fitted_ahead_are_published_bit_for_bit_as_without(
    small_state: PreparedState, tmp_path: Path
) -> None:
    series = small_state.series
    off = small_state.analyzer(tmp_path / "off", **CHANGES)
    on = small_state.analyzer(tmp_path / "on", **CHANGES)
    # frame 8 is announced (as the queue's next) before frame 7, then not analysed (a
    # 'latest' policy replaced it): its fit is dropped; frame BAD fails in both
    seqs = [1, 2, 3, 4, BAD, 6, 7, 9, 10, 11, 12]
    frames = [_frame(series, s) for s in seqs]
    announced: list[Frame | None] = [*frames[1:], None]
    announced[seqs.index(7)] = _frame(series, 8)
    want = _results(off, frames, [None] * len(frames))
    got = _results(on, frames, announced)
    for w, g in zip(want, got, strict=True):
        _same(w, g)
    rebuilt = [not isinstance(r, str) and r.model_quality.rebuilt for r in want]
    assert any(rebuilt) and not all(rebuilt), "rebuilt and warm-start frames are compared"
    assert isinstance(want[seqs.index(BAD)], str), "the bad frame fails"
    counts = on.ahead.counts()
    # fits started: after each good frame's own fit, for the frame announced (not for BAD,
    # whose G cannot be fitted, nor after BAD, which fails before its fit, nor after 12)
    assert counts["dropped"] == 1, counts  # frame 8's
    assert counts["redone"] >= 1, counts  # a rebuilt frame's subset
    assert counts["failed"] == 0, counts
    assert counts["used"] >= 4, counts
    assert counts["started"] == counts["used"] + counts["dropped"] + counts["redone"]
    assert off.ahead.counts()["started"] == 0


def test_a_rebuilt_frame_that_refits_every_motif_takes_the_fit_made_ahead(
    small_state: PreparedState, tmp_path: Path
) -> None:
    """With the whole catalogue refitted every frame (the default), a rebuilt frame needs the
    rows fitted ahead for it: nothing is redone."""
    series = small_state.series
    off = small_state.analyzer(tmp_path / "off")
    on = small_state.analyzer(tmp_path / "on")
    frames = [_frame(series, s) for s in (1, 2, 3, 4, 6, 7)]
    want = _results(off, frames, [None] * len(frames))
    got = _results(on, frames, [*frames[1:], None])
    for w, g in zip(want, got, strict=True):
        _same(w, g)
    assert any(not isinstance(r, str) and r.model_quality.rebuilt for r in want)
    assert on.ahead.counts() == {"started": 5, "used": 5, "dropped": 0, "redone": 0, "failed": 0}


class _QueuedFirst(FrameSource):
    """A source whose items are all in the service's queue before anything is analysed:
    :attr:`queued` is set once the receiver took the last one, and :class:`_GatedSink` holds
    the first run start (handled before any frame) until then."""

    def __init__(self, items: list[StreamItem]) -> None:
        self.name = "queued"
        self.stats = SourceStats()
        self._items = items
        self.queued = threading.Event()

    def items(self, stop_event: threading.Event) -> Iterator[StreamItem]:
        yield from self._items
        self.queued.set()  # the receiver asked for more: the last item is in the queue


class _GatedSink(JsonlSink):
    """A JSON Lines sink whose run starts wait until ``gate`` is set."""

    def __init__(self, path: Path, gate: threading.Event) -> None:
        super().__init__(path)
        self.gate = gate

    def on_run_start(self, start: RunStart) -> None:
        assert self.gate.wait(30), "the source did not queue its items"
        super().on_run_start(start)


def _serve(analyzer: Any, items: list[StreamItem], out: Path, **kwargs: Any) -> dict[str, Any]:
    source = _QueuedFirst(items)
    service = StreamService(
        {analyzer.name: analyzer},
        [source],
        [_GatedSink(out, source.queued)],
        restart_sources=False,
        **kwargs,
    )
    summary: dict[str, Any] = service.run(threading.Event())
    return summary


#: what differs between two runs of the same frames: clocks and timings
_CLOCKS = {"received_at", "published_at", "timing", "latency_s", "age_s"}


def _published(path: Path) -> list[dict[str, Any]]:
    messages = []
    for m in read_jsonl(path):
        m = {k: v for k, v in m.items() if k not in _CLOCKS}
        m["model_quality"] = {k: v for k, v in m["model_quality"].items() if k != "fits_per_s"}
        messages.append(m)
    return messages


def test_the_service_publishes_the_same_messages_with_the_fit_ahead(
    small_state: PreparedState, tmp_path: Path
) -> None:
    series = small_state.series
    frames: list[StreamItem] = [_frame(series, s) for s in range(1, 10)]
    items = [RunStart("run", 0.0, {}), *frames, RunStop("run", 10.0, "success", 9)]
    runs = {}
    for name, ahead in (("off", False), ("on", True)):
        analyzer = small_state.analyzer(tmp_path / f"state-{name}", **CHANGES)
        summary = _serve(analyzer, items, tmp_path / f"{name}.jsonl", fit_ahead=ahead)
        runs[name] = (analyzer, summary, _published(tmp_path / f"{name}.jsonl"))
    (off, s_off, m_off), (on, s_on, m_on) = runs["off"], runs["on"]
    assert [m["seq"] for m in m_on] == [s for s in range(1, 10) if s != BAD]
    assert m_on == m_off
    for key in ("received", "processed", "failed", "skipped", "abandoned"):
        assert s_on[key] == s_off[key], key
    assert (s_on["processed"], s_on["failed"]) == (8, 1)
    assert off.ahead.counts()["started"] == 0
    counts = on.ahead.counts()
    # started after frames 1, 2, 3, 6, 7 and 8 (not for frame BAD, whose G cannot be fitted,
    # nor after it: it fails before its fit; the last frame has a run stop behind it)
    assert counts["started"] == 6, counts
    assert counts["used"] + counts["redone"] == 6 and counts["redone"] >= 1, counts


class _Announced(ToyAnalyzer):
    """A toy analyzer that records which frame it was told comes next, before each frame."""

    def __init__(self, name: str = "toy", fail: bool = False) -> None:
        super().__init__(name)
        self.told: list[tuple[int, int]] = []  # (seq analysed next, seq announced)
        self._next: int | None = None
        self.fail = fail

    def fit_ahead(self, frame: Frame) -> None:
        if self.fail:
            raise RuntimeError("announcement refused")
        self._next = frame.seq

    def analyze(self, frame: Frame) -> FrameResult:
        if self._next is not None:
            self.told.append((frame.seq, self._next))
            self._next = None
        return super().analyze(frame)


def _toy_items(uid: str, seqs: list[int], metadata: dict[str, Any] | None = None) -> list[Any]:
    r = np.linspace(1.0, 10.0, 91)
    frames = [Frame(uid, s, float(s), r, np.sin(r * s), metadata or {}) for s in seqs]
    return [RunStart(uid, 0.0, metadata or {}), *frames, RunStop(uid, 9.0, "success", len(seqs))]


@pytest.mark.parametrize("fit_ahead", [True, False])
def test_the_service_announces_the_frame_waiting_next_for_the_same_model(
    tmp_path: Path, fit_ahead: bool
) -> None:
    a, b = _Announced("a"), _Announced("b")
    # run x (model a): 1, 2, 3, then run y (model b): 1, 2, then run z (model a): 1
    items = [
        *_toy_items("x", [1, 2, 3]),
        *_toy_items("y", [1, 2], {"motex_model": "b"}),
        *_toy_items("z", [1]),
    ]
    source = _QueuedFirst(items)
    service = StreamService(
        {"a": a, "b": b},
        [source],
        [_GatedSink(tmp_path / "out.jsonl", source.queued)],
        fit_ahead=fit_ahead,
        restart_sources=False,
    )
    summary = service.run(threading.Event())
    assert summary["processed"] == 6
    # only a frame right behind in the queue (a run boundary between: none), one ahead
    assert a.told == ([(1, 2), (2, 3)] if fit_ahead else [])
    assert b.told == ([(1, 2)] if fit_ahead else [])


def test_a_failing_announcement_costs_no_frame(tmp_path: Path) -> None:
    toy = _Announced("toy", fail=True)
    source = _QueuedFirst(_toy_items("x", [1, 2, 3, 4]))
    service = StreamService(
        {"toy": toy},
        [source],
        [_GatedSink(tmp_path / "out.jsonl", source.queued)],
        restart_sources=False,
    )
    summary = service.run(threading.Event())
    assert (summary["processed"], summary["failed"]) == (4, 0)
    assert [m["seq"] for m in read_jsonl(tmp_path / "out.jsonl")] == [1, 2, 3, 4]


def test_what_became_of_each_fit_ahead_is_on_metrics(
    small_state: PreparedState, tmp_path: Path
) -> None:
    """Every fit made ahead is counted on /metrics by outcome (the scrape hook build_service
    registers), once however often scraped: a dropped fit is work thrown away, which an
    operator should see beside the frame rate."""
    from prometheus_client import generate_latest

    from motex_stream.stream.commands.runner import LazyAnalyzer, _state_counts
    from motex_stream.stream.metrics import StreamMetrics

    series = small_state.series
    settings = small_state.settings.updated(**CHANGES)
    lazy = LazyAnalyzer(settings, small_state.copy(tmp_path / "state"))
    assert lazy.inner is not None
    metrics = StreamMetrics()
    metrics.on_scrape(_state_counts({settings.name: lazy}, metrics))
    frames = [_frame(series, s) for s in (1, 2, 3, 4)]
    announced: list[Frame | None] = [frames[1], frames[2], _frame(series, 9), None]
    _results(lazy.inner, frames, announced)
    counts = lazy.inner.ahead.counts()
    assert counts["dropped"] == 1 and counts["started"] >= 2, counts
    for _ in range(2):
        scraped = generate_latest(metrics.registry).decode()
    for outcome, n in counts.items():
        line = f'motex_fits_ahead_total{{model="{settings.name}",outcome="{outcome}"}} {n}.0'
        assert line in scraped, (line, scraped[-2000:])  # a count of 0 is exported as 0
