"""A Tiled outage in the middle of a derived run: nothing shifted, nothing half-stored.

Real parts: a ``tiled serve`` process on persistent storage (SQLite catalog, DuckDB tables,
zarr arrays in a temporary directory), SIGKILLed in the middle of a run and started again on
the same port; the real :class:`BlueskyRunSink` with the stock ``TiledWriter`` behind it; a
fresh stock ``tiled.client`` reading the result back.
"""

from __future__ import annotations

import secrets
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from motex_stream.stream.frames import Frame, RunStart, RunStop
from motex_stream.stream.messages import PublishedFrame
from motex_stream.stream.publishers.bluesky_run import BlueskyRunSink
from motex_stream.stream.publishers.derived_run import SinkWriteError
from motex_stream.stream.publishers.tiled_archive import tiled_writer
from tests.stream.conftest import free_port, wait_for_port
from tests.stream.test_service import ToyAnalyzer

pytestmark = pytest.mark.slow  # two Tiled start-ups and a kill: 40-150 s on 2 loaded cores
R = np.linspace(1.0, 10.0, 50)


class RestartableTiled:
    """``tiled serve catalog`` on files that outlive the process, so a kill loses nothing it
    had committed; :meth:`start` again serves the same catalog on the same port."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.key = secrets.token_hex(16)
        self.uri = f"http://127.0.0.1:{self.port}/api/v1"
        (directory / "data").mkdir()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        exe = Path(sys.executable).with_name("tiled")
        command = [str(exe), "serve", "catalog", f"sqlite:///{self.directory / 'catalog.db'}"]
        command += ["--write", str(self.directory / "data")]
        command += ["--write", f"duckdb:///{self.directory / 'data.duckdb'}"]
        command += ["--init", "--api-key", self.key]
        command += ["--host", "127.0.0.1", "--port", str(self.port)]
        with open(self.directory / "tiled.log", "ab") as log:
            self.proc = subprocess.Popen(command, stdout=log, stderr=log)
        wait_for_port(self.port, timeout=120)

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=30)
            self.proc = None


@pytest.fixture
def tiled(tmp_path: Path) -> Any:
    server = RestartableTiled(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.kill()


def published(analyzer: ToyAnalyzer, raw: str, seq: int) -> PublishedFrame:
    f = Frame(raw, seq, 1.7e9 + seq, R, np.sin(R) * seq)
    return PublishedFrame.of(analyzer.analyze(f), f, received_at=f.time, published_at=f.time + 0.1)


def expected_values(analyzer: ToyAnalyzer, raw: str, seqs: list[int]) -> list[list[float]]:
    return [published(analyzer, raw, s).result.contributions.value.tolist() for s in seqs]


def derived(uri: str, key: str, raw: str) -> Any:
    """The one derived run of ``raw``, through a fresh stock client."""
    from tiled.client import from_uri
    from tiled.queries import Key

    found = from_uri(uri, api_key=key).search(Key("start.original_run_uid") == raw)
    assert len(found) == 1, f"{len(found)} derived runs"
    return found[next(iter(found))]


def publish(sink: BlueskyRunSink, frame: PublishedFrame, errors: list[str]) -> None:
    try:
        sink.publish(frame)
    except SinkWriteError as exc:  # what the service counts as a sink error, and goes on
        errors.append(str(exc))


def test_tiled_killed_and_restarted_mid_run_shifts_nothing_and_names_what_it_lost(
    tiled: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tiled SIGKILLed after event 4 of run A (2 of run B), frames published while it is
    down, then back. A (default buffer): every event stored whole, on its own frame's row, a
    stock ``read()`` works, the stop says success. B (a 2-event buffer): 2 buffered events are
    written when Tiled is back, the 2 that did not fit are lost, each a sink error, counted in
    ``motex_archive_events_lost_total``, and named in B's stop (``fail``)."""
    from prometheus_client import CollectorRegistry
    from tiled.client import from_uri

    from motex_stream.stream.publishers.tiled_archive import TiledArchive

    # the tiled client's own retry budget (its TILED_RETRY_ATTEMPTS setting, read at import):
    # the first write into a dead Tiled fails after 2 tries instead of ~30 s of them
    monkeypatch.setattr("tiled.client.utils.TILED_RETRY_ATTEMPTS", 2)
    raw_a, raw_b = f"raw-{uuid.uuid4()}", f"raw-{uuid.uuid4()}"
    toy = ToyAnalyzer()
    registry = CollectorRegistry()
    a = BlueskyRunSink([tiled_writer(tiled.uri, api_key=tiled.key)])
    small = TiledArchive(from_uri(tiled.uri, api_key=tiled.key), max_pending=2)
    b = BlueskyRunSink([small])
    b.bind_metrics(registry)  # what the service does with its own registry
    errors_a: list[str] = []
    errors_b: list[str] = []
    a.on_run_start(RunStart(raw_a, 1.7e9))
    b.on_run_start(RunStart(raw_b, 1.7e9))
    for seq in range(1, 5):
        a.publish(published(toy, raw_a, seq))
    for seq in range(1, 3):
        b.publish(published(toy, raw_b, seq))
    tiled.kill()
    for seq in range(5, 9):
        publish(a, published(toy, raw_a, seq), errors_a)
    for seq in range(3, 7):
        publish(b, published(toy, raw_b, seq), errors_b)
    assert small.pending_events == 2
    tiled.start()
    for seq in (9, 10):
        publish(a, published(toy, raw_a, seq), errors_a)
    for seq in (7,):
        publish(b, published(toy, raw_b, seq), errors_b)
    a.on_run_stop(RunStop(raw_a, 1.7e9 + 30))
    b.on_run_stop(RunStop(raw_b, 1.7e9 + 30))

    run = derived(tiled.uri, tiled.key, raw_a)
    dataset = run["primary"].read()  # the stock read that failed: conflicting sizes for 'time'
    seqs = list(range(1, 11))
    assert list(run["primary"]["seq_num"].read()) == seqs
    assert errors_a == []  # buffered, not lost: no sink error
    assert dict(dataset.sizes) == {"time": 10, "atom": 4}
    np.testing.assert_allclose(dataset["contributions"].values, expected_values(toy, raw_a, seqs))
    np.testing.assert_allclose(dataset["mae"].values, [0.001 * s for s in seqs])
    stop = run.metadata["stop"]
    assert stop["exit_status"] == "success", stop
    assert stop["num_events"] == {"primary": 10}

    run_b = derived(tiled.uri, tiled.key, raw_b)
    kept = [1, 2, 3, 4, 7]
    assert list(run_b["primary"]["seq_num"].read()) == kept
    np.testing.assert_allclose(
        run_b["primary"].read()["contributions"].values, expected_values(toy, raw_b, kept)
    )
    stop_b = run_b.metadata["stop"]
    assert stop_b["exit_status"] == "fail"
    assert "2 event(s) could not be written to Tiled: primary seq_num 5-6" in stop_b["reason"]
    assert stop_b["num_events"] == {"primary": 5}
    assert len(errors_b) == 2 and all(
        f"seq_num {s} " in e for s, e in zip((5, 6), errors_b, strict=True)
    )
    lost = registry.get_sample_value("motex_archive_events_lost_total", {"stream": "primary"})
    assert lost == 2 and small.lost_events == 2
