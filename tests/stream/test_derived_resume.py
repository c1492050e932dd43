"""A derived run left unfinished in Tiled (a killed service or replay) is reopened and completed.

Real parts: a ``tiled serve`` process, the stock ``TiledWriter`` behind the sink, the real
service and JSON Lines sink, and a stock ``tiled.client`` reading the result back. The killed
process is stood in for by sinks that got the first frames and never their stop, which is
exactly what a SIGKILL leaves (the SIGKILLed processes themselves: ``test_restarts.py``).
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from motex_stream.stream.frames import Frame, RunStart, RunStop, StreamItem
from motex_stream.stream.live.analyzer_protocol import KeepSetChange, ModelQuality
from motex_stream.stream.messages import PublishedFrame
from motex_stream.stream.publishers.bluesky_run import BlueskyRunSink
from motex_stream.stream.publishers.jsonl import JsonlSink, read_jsonl
from motex_stream.stream.publishers.tiled_archive import tiled_writer
from motex_stream.stream.service import StreamService
from tests.stream.results import atom_values
from tests.stream.test_service import ListSource, ToyAnalyzer

pytestmark = pytest.mark.slow  # a Tiled server and ~20 s per test on 2 cores
R = np.linspace(1.0, 10.0, 50)


def frame(raw: str, seq: int) -> Frame:
    return Frame(raw, seq, 1.7e9 + seq, R, np.sin(R) * seq)


def published(analyzer: ToyAnalyzer, raw: str, seq: int, **result: Any) -> PublishedFrame:
    f = frame(raw, seq)
    res = dataclasses.replace(analyzer.analyze(f), **result)
    return PublishedFrame.of(res, f, received_at=f.time, published_at=f.time + 0.1)


def derived(uri: str, key: str, raw: str) -> Any:
    """The one derived run of ``raw``, through a fresh stock client."""
    from tiled.client import from_uri
    from tiled.queries import Key

    client = from_uri(uri, api_key=key)
    found = client.search(Key("start.original_run_uid") == raw)
    assert len(found) == 1, f"{len(found)} derived runs"
    return found[next(iter(found))]


@pytest.fixture
def tiled(tiled_server) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    return str(tiled_server.uri).split("?", 1)[0], str(tiled_server.api_key)


def test_resume_fills_a_store_that_lags_and_skips_what_each_sink_holds(
    tiled: tuple[str, str], tmp_path: Path
) -> None:
    """Killed after frame 4 reached the JSON Lines but only 3 reached Tiled: the restarted
    service analyses frame 4 again for Tiled alone; each frame ends up once in both."""
    uri, key = tiled
    raw = f"raw-{uuid.uuid4()}"
    toy = ToyAnalyzer()
    out = tmp_path / "out.jsonl"
    jsonl, killed = JsonlSink(out), BlueskyRunSink([tiled_writer(uri, api_key=key)])
    killed.on_run_start(RunStart(raw, 1.7e9))
    for seq in (1, 2, 3, 4):
        jsonl.publish(published(toy, raw, seq))
        if seq < 4:
            killed.publish(published(toy, raw, seq))
    jsonl.close()  # ... and the process dies: no stop reaches Tiled

    assert BlueskyRunSink([tiled_writer(uri, api_key=key)]).stored_last_seq(raw, "toy") == 3
    items: list[StreamItem] = [RunStart(raw, 1.7e9)]
    items += [frame(raw, seq) for seq in range(1, 9)] + [RunStop(raw, 1.7e9 + 20)]
    again = ToyAnalyzer()
    sinks = [JsonlSink(out), BlueskyRunSink([tiled_writer(uri, api_key=key)])]
    summary = StreamService({"toy": again}, [ListSource(items)], sinks, resume_after={raw: 4}).run()

    assert summary["sink_errors"] == 0, summary
    assert [s for _, s in again.seen] == [4, 5, 6, 7, 8]  # 4: for Tiled only
    assert summary["duplicates"] == 3
    assert [m["seq"] for m in read_jsonl(out)] == list(range(1, 9))
    run = derived(uri, key, raw)
    assert list(run["primary"]["seq_num"].read()) == list(range(1, 9))
    contributions = run["primary"]["contributions"].read()
    assert contributions.shape == (8, 4) and np.issubdtype(contributions.dtype, np.floating)
    expected = [toy.analyze(frame(raw, s)).contributions.value for s in range(1, 9)]
    np.testing.assert_allclose(contributions, expected)
    assert run.metadata["stop"]["exit_status"] == "success"
    assert run.metadata["stop"]["num_events"]["primary"] == 8


def test_reopened_run_drops_held_events_and_overwrites_orphan_array_rows(
    tiled: tuple[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    """Tiled holds more than the restarted process thinks (frames 2-3 come again), and the kill
    fell between frame 4's array rows and its table row: nothing twice, arrays aligned."""
    uri, key = tiled
    raw = f"raw-{uuid.uuid4()}"
    toy = ToyAnalyzer()
    killed = BlueskyRunSink([tiled_writer(uri, api_key=key)])
    killed.on_run_start(RunStart(raw, 1.7e9))
    for seq in (1, 2, 3):
        killed.publish(published(toy, raw, seq))
    # what the stock writer had done of frame 4 when the kill came: its array rows only
    from tiled.client import from_uri

    stream = from_uri(uri, api_key=key)[derived(uri, key, raw).item["id"]]["primary"].base
    for name in ("contributions", "contribution_spread"):
        stream[name].patch(np.full((1, 4), 99.0), offset=(3,), extend=True)

    resumed = BlueskyRunSink([tiled_writer(uri, api_key=key)])
    with caplog.at_level(logging.INFO, logger="motex_stream"):
        resumed.on_run_start(RunStart(raw, 1.7e9))
        for seq in (2, 3, 4, 5):
            resumed.publish(published(toy, raw, seq))
        resumed.on_run_stop(RunStop(raw, 1.7e9 + 10))
    # resuming is normal operation: said once at INFO, no WARNING (issue 22 item 6)
    assert any("reopened" in r.getMessage() for r in caplog.records)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []

    run = derived(uri, key, raw)
    assert list(run["primary"]["seq_num"].read()) == [1, 2, 3, 4, 5]
    dataset = run["primary"].read()
    assert dataset["contributions"].shape == (5, 4)
    assert not np.any(dataset["contributions"].values == 99.0), "orphan rows kept"
    assert run.metadata["stop"]["num_events"] == {"primary": 5}


def test_changes_stream_one_event_per_change_across_a_reopen(tiled: tuple[str, str]) -> None:
    """The ``changes`` stream: one event per detected change, with units and dtypes, readable
    by a stock client; a change sent again after a reopen is not stored twice."""
    uri, key = tiled
    raw = f"raw-{uuid.uuid4()}"
    toy = ToyAnalyzer()
    first = KeepSetChange(frame=2, atoms_gained=(3, 4), atoms_lost=(1,), confidence=0.97)
    second = KeepSetChange(frame=6, atoms_gained=(1,), atoms_lost=(2, 3, 4), confidence=0.91)
    killed = BlueskyRunSink([tiled_writer(uri, api_key=key)])
    killed.on_run_start(RunStart(raw, 1.7e9))
    for seq in (1, 2, 3, 4):
        killed.publish(published(toy, raw, seq, change=first if seq == 4 else None))
    resumed = BlueskyRunSink([tiled_writer(uri, api_key=key)])
    resumed.on_run_start(RunStart(raw, 1.7e9))
    for seq in (4, 5, 6, 7, 8):  # 4 again, with its change
        change = {4: first, 8: second}.get(seq)
        resumed.publish(published(toy, raw, seq, change=change))
    resumed.on_run_stop(RunStop(raw, 1.7e9 + 10))

    run = derived(uri, key, raw)
    changes = run["changes"]
    assert list(changes["seq_num"].read()) == [4, 8]  # the frames that confirmed them
    assert list(changes["frame"].read()) == [2, 6]
    assert [list(x) for x in changes["atoms_gained"].read()] == [[3, 4], [1]]
    assert [list(x) for x in changes["atoms_lost"].read()] == [[1], [2, 3, 4]]
    np.testing.assert_allclose(changes["confidence"].read(), [0.97, 0.91])
    data_keys = changes.metadata["data_keys"]
    assert set(data_keys) == {"frame", "atoms_gained", "atoms_lost", "confidence"}
    assert all("units" in dk and "dtype" in dk for dk in data_keys.values()), data_keys
    assert run.metadata["stop"]["num_events"] == {"primary": 8, "changes": 2}


class SwitchingAnalyzer(ToyAnalyzer):
    """Toy values whose keep set switches from atoms {1, 2} to {3, 4} at frame 10, labelled
    with the shipped intervals and judged by the shipped change detector, as the real analyzer
    does (its own series: ``test_end_to_end.py``)."""

    def __init__(self) -> None:
        super().__init__()
        from motex_stream.stream.live.changes import KeepSetChangeDetector

        self.detector = KeepSetChangeDetector(persist=3)
        self.rng = np.random.default_rng(0)

    def analyze(self, frame: Frame):  # type: ignore[no-untyped-def]
        from motex_stream.explain.confidence import interval

        result = super().analyze(frame)
        keep = {1, 2} if frame.seq < 10 else {3, 4}
        values = np.array([-0.02 if a in keep else 0.02 for a in range(1, 5)])
        values += self.rng.normal(0, 0.002, 4)
        low, high, label = interval(values, np.full(4, 0.002), 0.9)
        contributions = dataclasses.replace(
            result.contributions, value=values, interval=(low, high), label=label
        )
        change = self.detector.update(frame.seq, contributions)
        return dataclasses.replace(result, contributions=contributions, change=change)


def test_a_keep_set_change_is_one_event_in_the_changes_stream(tiled: tuple[str, str]) -> None:
    """20 frames through the service, the keep set switching once: exactly one event in the
    derived run's ``changes`` stream, as a stock client reads it."""
    uri, key = tiled
    raw = f"raw-{uuid.uuid4()}"
    items: list[StreamItem] = [RunStart(raw, 1.7e9)]
    items += [frame(raw, seq) for seq in range(1, 21)] + [RunStop(raw, 1.7e9 + 30)]
    sink = BlueskyRunSink([tiled_writer(uri, api_key=key)])
    summary = StreamService({"toy": SwitchingAnalyzer()}, [ListSource(items)], [sink]).run()
    assert summary["processed"] == 20 and summary["sink_errors"] == 0, summary

    run = derived(uri, key, raw)
    changes = run["changes"]
    assert len(changes["seq_num"].read()) == 1
    assert int(changes["frame"].read()[0]) == 10
    assert [list(x) for x in changes["atoms_gained"].read()] == [[3, 4]]
    assert [list(x) for x in changes["atoms_lost"].read()] == [[1, 2]]
    assert 0.9 < float(changes["confidence"].read()[0]) <= 1.0
    assert run.metadata["stop"]["num_events"] == {"primary": 20, "changes": 1}


def test_a_run_stopped_by_a_clean_shutdown_is_continued(tiled: tuple[str, str]) -> None:
    """SIGTERM in the middle of a raw run stops its derived run with ``abort``; when the raw
    run is taken up after the restart, the derived run is reopened and ends ``success``."""
    uri, key = tiled
    raw = f"raw-{uuid.uuid4()}"
    toy = ToyAnalyzer()
    first = BlueskyRunSink([tiled_writer(uri, api_key=key)])
    first.on_run_start(RunStart(raw, 1.7e9))
    for seq in (1, 2):
        first.publish(published(toy, raw, seq))
    first.close()  # a clean shutdown: the derived run gets an 'abort' stop
    assert derived(uri, key, raw).metadata["stop"]["exit_status"] == "abort"
    second = BlueskyRunSink([tiled_writer(uri, api_key=key)])
    second.on_run_start(RunStart(raw, 1.7e9))
    for seq in (3, 4):
        second.publish(published(toy, raw, seq))
    second.on_run_stop(RunStop(raw, 1.7e9 + 10))
    run = derived(uri, key, raw)
    assert list(run["primary"]["seq_num"].read()) == [1, 2, 3, 4]
    assert run.metadata["stop"]["exit_status"] == "success"
    assert run.metadata["stop"]["num_events"] == {"primary": 4}


def test_the_verdict_is_archived_on_an_atom_axis_a_stock_client_selects(
    tiled: tuple[str, str],
) -> None:
    """Issue 22 item 1: intervals, labels and the rebuilt flag of every frame are in the
    derived run, and the stock ``read()`` has an ``atom`` coordinate (the atom's index in the
    starting-model file), so ``ds.contributions.sel(atom=9)`` is atom 9, not the 9th."""
    uri, key = tiled
    raw = f"raw-{uuid.uuid4()}"
    toy = ToyAnalyzer()
    atoms, labels = [3, 9, 12, 20], ["keep", "uncertain", "remove", "keep"]
    sink = BlueskyRunSink([tiled_writer(uri, api_key=key)])
    sink.on_run_start(RunStart(raw, 1.7e9))
    for seq in (1, 2, 3):
        verdict = [
            {"atom": a, "element": "W" if a < 20 else "O", "value": 0.01 * seq - 0.02 * i,
             "spread": 0.001, "ci_low": 0.01 * seq - 0.02 * i - 0.005,
             "ci_high": 0.01 * seq - 0.02 * i + 0.005, "label": lab}
            for i, (a, lab) in enumerate(zip(atoms, labels, strict=True))
        ]  # fmt: skip
        quality = ModelQuality(mae=0.001, rebuilt=seq == 2)
        typed = atom_values(verdict)
        sink.publish(published(toy, raw, seq, contributions=typed, model_quality=quality))
    sink.on_run_stop(RunStop(raw, 1.7e9 + 10))

    run = derived(uri, key, raw)
    ds = run["primary"].read()  # the stock client, nothing else
    assert dict(ds.sizes) == {"time": 3, "atom": 4}
    assert list(ds["atom"].values) == atoms and list(ds["element"].values) == list("WWWO")
    np.testing.assert_allclose(ds.contributions.sel(atom=9), [0.01 * s - 0.02 for s in (1, 2, 3)])
    np.testing.assert_allclose(ds.ci_low.sel(atom=9), [0.01 * s - 0.025 for s in (1, 2, 3)])
    np.testing.assert_allclose(ds.ci_high.sel(atom=9), [0.01 * s - 0.015 for s in (1, 2, 3)])
    assert list(ds.label.sel(atom=12).values) == ["remove"] * 3
    assert list(ds.label.isel(time=0).values) == labels
    assert list(ds.rebuilt.values) == [False, True, False]
    assert list(run["primary"]["seq_num"].read()) == [1, 2, 3]
    kept = ds.contributions.where(ds.label == "keep")  # the operators' "keep" atoms per frame
    assert int(kept.count()) == 6
    # the other idioms docs/streaming.md shows
    assert ds.contributions.where(ds.element == "W", drop=True).sizes["atom"] == 3
    table = ds[["contributions", "ci_low", "ci_high", "label"]].isel(time=-1).to_dataframe()
    assert list(table.index) == atoms and list(table["label"]) == labels


def test_the_archive_reports_its_losses_on_the_service_metrics(tiled: tuple[str, str]) -> None:
    """The Tiled archive's own series are on the service's registry (what /metrics serves)
    from start-up, at 0: an alert on ``increase()`` sees the first lost event."""
    uri, key = tiled
    sink = BlueskyRunSink([tiled_writer(uri, api_key=key)])
    service = StreamService({"toy": ToyAnalyzer()}, [ListSource([])], [sink])
    registry = service.metrics.registry
    for stream in ("primary", "changes"):
        labels = {"stream": stream}
        assert registry.get_sample_value("motex_archive_events_lost_total", labels) == 0
    assert registry.get_sample_value("motex_archive_events_pending") == 0
    sink.close()
