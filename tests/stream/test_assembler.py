"""DocumentAssembler on real RunEngine documents: gaps, orphans and malformed frames."""

from __future__ import annotations

from collections.abc import Callable

import event_model
import numpy as np
import pytest
from bluesky import RunEngine

from motex_stream.stream.frames import Frame, RunStart, RunStop, StreamItem
from motex_stream.stream.sim.simulate import make_pdf_detector, run_series
from motex_stream.stream.sources.base import DocumentAssembler, FrameSource

Docs = list[tuple[str, dict]]


def record(RE: RunEngine, frame_source: Callable[[int], np.ndarray], r: np.ndarray, n: int) -> Docs:
    docs: Docs = []
    token = RE.subscribe(lambda name, doc: docs.append((name, doc)))
    run_series(RE, make_pdf_detector(frame_source, r), n)
    RE.unsubscribe(token)
    return docs


def feed(assembler: DocumentAssembler, docs: Docs) -> list[StreamItem]:
    items: list[StreamItem] = []
    for name, doc in docs:
        items.extend(assembler.process(name, doc))
    return items


def frames(items: list[StreamItem]) -> list[Frame]:
    return [item for item in items if isinstance(item, Frame)]


def test_full_run(run_engine: RunEngine, r_grid: np.ndarray, expected_gr) -> None:  # type: ignore[no-untyped-def]
    docs = record(run_engine, expected_gr, r_grid, 5)
    assembler = DocumentAssembler()
    items = feed(assembler, docs)
    assert isinstance(items[0], RunStart) and isinstance(items[-1], RunStop)
    assert [f.seq for f in frames(items)] == [1, 2, 3, 4, 5]
    np.testing.assert_allclose(frames(items)[3].g, expected_gr(3))
    assert items[-1].num_events == 5
    assert assembler.stats.as_dict() == dict.fromkeys(
        ("received", "gaps", "orphans", "malformed", "duplicates", "late", "overflow"), 0
    ) | {"received": 5}


def test_dropped_event_is_counted_as_gap(
    run_engine: RunEngine, r_grid: np.ndarray, expected_gr
) -> None:  # type: ignore[no-untyped-def]
    docs = record(run_engine, expected_gr, r_grid, 6)
    events = [i for i, (name, _) in enumerate(docs) if name == "event"]
    del docs[events[2]]  # lose seq 3
    del docs[events[4] - 1]  # and seq 5
    assembler = DocumentAssembler()
    got = frames(feed(assembler, docs))
    assert [f.seq for f in got] == [1, 2, 4, 6]
    assert assembler.stats.gaps == 2 and assembler.stats.received == 4


def test_event_page_is_unpacked(run_engine: RunEngine, r_grid: np.ndarray, expected_gr) -> None:  # type: ignore[no-untyped-def]
    docs = record(run_engine, expected_gr, r_grid, 4)
    events = [doc for name, doc in docs if name == "event"]
    page = event_model.pack_event_page(*events)
    paged = [(n, d) for n, d in docs if n != "event"]
    paged.insert(-1, ("event_page", page))
    got = frames(feed(DocumentAssembler(), paged))
    assert [f.seq for f in got] == [1, 2, 3, 4]


def test_orphan_events_are_counted_not_raised(
    run_engine: RunEngine, r_grid: np.ndarray, expected_gr
) -> None:  # type: ignore[no-untyped-def]
    docs = record(run_engine, expected_gr, r_grid, 3)
    assembler = DocumentAssembler()
    no_start = [(n, d) for n, d in docs if n != "start"]
    assert feed(assembler, no_start) == []
    assert assembler.stats.orphans == 3
    only_events = [(n, d) for n, d in docs if n == "event"]
    assert feed(assembler, only_events) == []
    assert assembler.stats.orphans == 6


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(lambda g: np.where(np.arange(g.size) == 7, np.nan, g), id="nan"),
        pytest.param(lambda g: g[:-3], id="wrong-length"),
    ],
)
def test_malformed_frames_are_counted_and_skipped(
    run_engine: RunEngine,
    r_grid: np.ndarray,
    expected_gr,
    bad,  # type: ignore[no-untyped-def]
) -> None:
    def source(i: int) -> np.ndarray:
        g = expected_gr(i)
        return bad(g) if i == 2 else g

    docs = record(run_engine, source, r_grid, 4)
    assembler = DocumentAssembler()
    items = feed(assembler, docs)
    assert [f.seq for f in frames(items)] == [1, 2, 4]
    assert isinstance(items[-1], RunStop)
    assert assembler.stats.malformed == 1 and assembler.stats.received == 4


def test_garbage_documents_never_raise() -> None:
    assembler = DocumentAssembler()
    assert assembler.process("start", {"no": "uid"}) == []
    assert assembler.process("descriptor", {}) == []
    assert assembler.process("event", {"descriptor": None}) == []
    assert assembler.process("datum", {"anything": 1}) == []
    assert assembler.stats.malformed == 2 and assembler.stats.orphans == 1


def test_other_streams_and_keys_are_ignored(
    run_engine: RunEngine, r_grid: np.ndarray, expected_gr
) -> None:  # type: ignore[no-untyped-def]
    docs = record(run_engine, expected_gr, r_grid, 2)
    assembler = DocumentAssembler(data_key="other_detector")
    items = feed(assembler, docs)
    assert frames(items) == [] and assembler.stats.as_dict()["orphans"] == 0
    assert [type(i) for i in items] == [RunStart, RunStop]


def test_r_grid_from_event_data(r_grid: np.ndarray, expected_gr) -> None:  # type: ignore[no-untyped-def]
    """Some detectors publish r with every event instead of in the configuration."""
    bundle = event_model.compose_run()
    desc = bundle.compose_descriptor(
        name="primary",
        data_keys={
            "gr": {"source": "x", "dtype": "array", "shape": [r_grid.size], "dtype_numpy": "<f8"},
            "r": {"source": "x", "dtype": "array", "shape": [r_grid.size], "dtype_numpy": "<f8"},
        },
    )
    event = desc.compose_event(
        data={"gr": expected_gr(0), "r": r_grid}, timestamps={"gr": 1.0, "r": 1.0}, seq_num=1
    )
    assembler = DocumentAssembler(data_key="gr", r_key="r")
    docs = [("start", bundle.start_doc), ("descriptor", desc.descriptor_doc), ("event", event)]
    got = frames(feed(assembler, docs))
    assert len(got) == 1
    np.testing.assert_allclose(got[0].r, r_grid)


def test_sources_satisfy_protocol(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from motex_stream.stream.sources import FileSeriesSource, TiledReplaySource, ZmqSource

    for source in (
        ZmqSource("tcp://127.0.0.1:1"),
        FileSeriesSource(tmp_path),
        TiledReplaySource("http://127.0.0.1:1", "uid"),
    ):
        assert isinstance(source, FrameSource)
