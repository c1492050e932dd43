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
from motex_stream.stream.publishers.bluesky_run import BlueskyRunSink, SinkWriteError, tiled_writer
from tests.stream.conftest import free_port, wait_for_port
from tests.stream.test_service import ToyAnalyzer

pytestmark = pytest.mark.slow  # two Tiled start-ups and a kill: ~20 s on 2 loaded cores
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
    return [[c["value"] for c in published(analyzer, raw, s).result.contributions] for s in seqs]


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


def test_tiled_killed_and_restarted_mid_run_loses_and_shifts_nothing(
    tiled: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tiled SIGKILLed after event 6, frames 7-12 published while it is down, then back: every
    event is stored whole, on its own frame's row, and a stock ``read()`` of the stream works."""
    # the tiled client's own retry budget (its TILED_RETRY_ATTEMPTS setting, read at import):
    # the first write into a dead Tiled fails after 2 tries instead of ~30 s of them
    monkeypatch.setattr("tiled.client.utils.TILED_RETRY_ATTEMPTS", 2)
    raw = f"raw-{uuid.uuid4()}"
    toy = ToyAnalyzer()
    sink = BlueskyRunSink([tiled_writer(tiled.uri, api_key=tiled.key)])
    errors: list[str] = []
    sink.on_run_start(RunStart(raw, 1.7e9))
    for seq in range(1, 7):
        sink.publish(published(toy, raw, seq))
    tiled.kill()
    for seq in range(7, 13):
        publish(sink, published(toy, raw, seq), errors)
    tiled.start()
    for seq in range(13, 21):
        publish(sink, published(toy, raw, seq), errors)
    sink.on_run_stop(RunStop(raw, 1.7e9 + 30))

    run = derived(tiled.uri, tiled.key, raw)
    dataset = run["primary"].read()  # the stock read that failed: conflicting sizes for 'time'
    seqs = list(range(1, 21))
    assert list(run["primary"]["seq_num"].read()) == seqs
    assert errors == []  # buffered, not lost: no sink error
    assert dict(dataset.sizes) == {"time": 20, "atom": 4}
    np.testing.assert_allclose(dataset["contributions"].values, expected_values(toy, raw, seqs))
    np.testing.assert_allclose(dataset["mae"].values, [0.001 * s for s in seqs])
    stop = run.metadata["stop"]
    assert stop["exit_status"] == "success", stop
    assert stop["num_events"] == {"primary": 20}
