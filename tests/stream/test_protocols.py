"""Sources, sinks and analyzers meet the service through explicit members, not probes.

Issue 24: the service used to ``getattr`` its parts for what only some of them do (a sink's
``name``, ``bind_metrics``, ``last_published``/``stored_last_seq``; a source's ``paced``,
``attach_journal``, ``drain_backlog``, ``stats``; an analyzer's ``analysis_identity``), and
``build_service`` set ``sink.name`` after construction. Now sources and sinks subclass their
protocol, whose optional members have defaults that do nothing, sinks take their name in
their constructor, and the analyzers' two capabilities are named protocols the service sorts
its analyzers by once.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from motex_stream.stream.config import JsonlSinkConfig, ZmqSinkConfig
from motex_stream.stream.frames import Frame, RunStart, RunStop, StreamItem, ValidFrame
from motex_stream.stream.messages import AnalysisIdentity, PublishedFrame
from motex_stream.stream.publishers import make_sink
from motex_stream.stream.publishers.base import Sink
from motex_stream.stream.service import IdentifiesAnalysis, SavesState, StreamService
from motex_stream.stream.sources.base import FrameSource, SourceStats
from tests.stream.test_service import ToyAnalyzer, run_items


class PlainSource(FrameSource):
    """A source that writes only what every source must: name, stats, items."""

    name = "plain"

    def __init__(self, items: list[StreamItem]) -> None:
        self.stats = SourceStats()
        self._items = items

    def items(self, stop_event: threading.Event) -> Iterator[StreamItem]:
        yield from self._items


class PlainSink(Sink):
    """A sink that writes only publish and close (no boundaries, metrics or resume)."""

    def __init__(self) -> None:
        self.name = "plain-sink"
        self.published: list[PublishedFrame] = []
        self.closed = False

    def publish(self, published: PublishedFrame) -> None:
        self.published.append(published)

    def close(self) -> None:
        self.closed = True


class IdentifiedToy(ToyAnalyzer, IdentifiesAnalysis):
    def analysis_identity(self, frame: ValidFrame) -> AnalysisIdentity | None:
        return AnalysisIdentity(f"id-{frame.source}", {"seq_seen": frame.seq})


def test_the_defaults_are_real_members_that_do_nothing(tmp_path: Path) -> None:
    source, sink = PlainSource([]), PlainSink()
    assert source.paced is True and source.drain_backlog() == []
    assert source.attach_journal(None) is None  # type: ignore[arg-type]
    assert sink.last_published("run", "m") is None and sink.stored_last_seq("run", "m") is None
    assert sink.on_run_start(RunStart("run", 0.0)) is None
    assert sink.on_run_stop(RunStop("run", 0.0)) is None


def test_a_service_of_minimal_parts_runs_resumes_and_shuts_down(tmp_path: Path) -> None:
    """Nothing optional written: the service still calls every member (journal, backlog,
    metrics, resume questions, run boundaries) and gets the defaults' answers."""
    from motex_stream.stream.journal import RunJournal

    items = run_items("r", 5)
    sink = PlainSink()
    service = StreamService(
        {"toy": ToyAnalyzer()},
        [PlainSource(items)],
        [sink],
        journal=RunJournal(tmp_path / "journal"),
        resume_after={"r": 2},  # frames 1-2 published by an earlier process
    )
    summary = service.run()
    assert [p.seq for p in sink.published] == [3, 4, 5] and sink.closed
    assert summary["processed"] == 3 and summary["duplicates"] == 2
    assert all(p.analysis is None for p in sink.published)  # the toy has no identity


def test_only_analyzers_with_an_identity_are_asked_for_it() -> None:
    named, plain = IdentifiedToy("named"), ToyAnalyzer("plain")
    assert isinstance(named, IdentifiesAnalysis) and not isinstance(plain, IdentifiesAnalysis)
    items = run_items("a", 2) + run_items("b", 1, {"motex_model": "plain"})
    sink = PlainSink()
    StreamService({"named": named, "plain": plain}, [PlainSource(items)], [sink]).run()
    got = [(p.run_uid, p.seq, p.analysis) for p in sink.published]
    assert got == [
        ("a", 1, AnalysisIdentity("id-a", {"seq_seen": 1})),
        ("a", 2, AnalysisIdentity("id-a", {"seq_seen": 2})),
        ("b", 1, None),
    ]


def test_the_prepared_analyzer_and_the_service_analyzer_capabilities() -> None:
    from motex_stream.stream.commands.runner import LazyAnalyzer
    from motex_stream.stream.live.analyzer import MotexFrameAnalyzer

    assert issubclass(LazyAnalyzer, IdentifiesAnalysis) and issubclass(LazyAnalyzer, SavesState)
    # the prepared analyzer saves its state but has no identity of its own
    assert hasattr(MotexFrameAnalyzer, "save_state")
    assert not hasattr(MotexFrameAnalyzer, "analysis_identity")


def test_every_packaged_source_and_sink_subclasses_its_protocol() -> None:
    from motex_stream.stream.dashboard import DashboardSink
    from motex_stream.stream.publishers.bluesky_run import BlueskyRunSink
    from motex_stream.stream.publishers.jsonl import JsonlSink
    from motex_stream.stream.publishers.zmq_pub import ZmqPublisher
    from motex_stream.stream.sources import (
        FileSeriesSource,
        KafkaSource,
        TiledLiveSource,
        TiledReplaySource,
        ZmqSource,
    )
    from motex_stream.stream.sources.memory_source import SeriesSource

    for source in (FileSeriesSource, KafkaSource, TiledLiveSource, TiledReplaySource, ZmqSource):
        assert FrameSource in source.__mro__, source
    assert FrameSource in SeriesSource.__mro__
    for sink in (JsonlSink, ZmqPublisher, BlueskyRunSink, DashboardSink):
        assert Sink in sink.__mro__, sink


def test_a_configured_sink_is_named_by_its_constructor(tmp_path: Path) -> None:
    jsonl = make_sink(JsonlSinkConfig(type="jsonl", name="main-log", path=tmp_path / "a.jsonl"))
    zmq = make_sink(ZmqSinkConfig(type="zmq", name="pub", bind="tcp://127.0.0.1:0"))
    try:
        assert (jsonl.name, zmq.name) == ("main-log", "pub")
    finally:
        jsonl.close()
        zmq.close()
    # built by hand, a sink is labelled by its class, as its errors always were
    from motex_stream.stream.publishers.jsonl import JsonlSink

    by_hand = JsonlSink(tmp_path / "b.jsonl")
    by_hand.close()
    assert by_hand.name == "JsonlSink"


def test_source_stats_reach_the_metrics_through_the_stats_member() -> None:
    from motex_stream.stream.metrics import StreamMetrics

    class Lossy(PlainSource):
        def items(self, stop_event: threading.Event) -> Iterator[StreamItem]:
            self.stats.add("overflow", 3)
            self.stats.add("malformed", kind="undecodable")
            yield from super().items(stop_event)

    metrics = StreamMetrics()
    r = np.linspace(1.0, 10.0, 40)
    items: list[StreamItem] = [RunStart("l", 0.0), Frame("l", 1, 0.0, r, np.sin(r))]
    StreamService({"toy": ToyAnalyzer()}, [Lossy(items)], [], metrics=metrics).run()
    get = metrics.registry.get_sample_value
    assert get("motex_backlog_full_total", {"where": "plain"}) == 3
    assert get("motex_source_malformed_total", {"source": "plain"}) == 1
    labels = {"source": "plain", "kind": "undecodable"}
    assert get("motex_source_malformed_kind_total", labels) == 1
