"""Restarts lose nothing they could keep: SIGKILL of real ``replay`` and ``serve`` processes.

- ``replay --archive`` killed in the middle and run again: every frame exactly once in the JSON
  Lines and in the derived Bluesky run, as a stock ``tiled.client`` reads it from Tiled.
- ``serve`` killed in the middle of a 0MQ run, the run's later events held by the test while it
  is down (a transport that buffers, like Kafka, does the same), then restarted: every event
  sent after the restart is analysed once, a re-sent event is recognised as a duplicate, the
  model is reloaded, not prepared again, and the derived run in Tiled holds every frame once.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import event_model
import numpy as np
import pytest

from motex_stream.stream.publishers.jsonl import read_jsonl
from motex_stream.stream.sim.series import two_motif_series
from motex_stream.stream.sources.zmq_source import make_publisher

log = logging.getLogger(__name__)
pytestmark = pytest.mark.slow
N_FRAMES = 10
TIMEOUT = 120.0
MODEL_FLAGS = ["--catalogue", "300", "--refit", "300", "--rounds", "5", "--max-trees", "60"]
EXE = str(Path(sys.executable).with_name("motex-stream"))


@pytest.fixture(scope="module")
def series(tmp_path_factory):  # type: ignore[no-untyped-def]
    return two_motif_series(tmp_path_factory.mktemp("series"), n_frames=N_FRAMES)


def write_gr(path: Path, r: np.ndarray, g: np.ndarray) -> None:
    path.write_text("\n".join(f"{a:.4f} {b:.8f}" for a, b in zip(r, g, strict=True)) + "\n")


def wait_lines(path: Path, n: int, proc: subprocess.Popen | None = None) -> list[dict]:
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        got = list(read_jsonl(path, validate=False)) if path.exists() else []
        if len(got) >= n:
            return got
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"process ended early ({proc.returncode}): {proc.stderr.read()[-2000:]}")  # type: ignore[union-attr]
        time.sleep(0.05)
    pytest.fail(f"{path}: fewer than {n} lines after {TIMEOUT} s")


def wait_run(path: Path, uid: str, n: int, proc: subprocess.Popen) -> None:
    """Wait until ``n`` frames of run ``uid`` are in the JSON Lines."""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        got = list(read_jsonl(path, validate=False)) if path.exists() else []
        if sum(m["source"] == uid for m in got) >= n:
            return
        if proc.poll() is not None:
            pytest.fail(f"process ended early ({proc.returncode})")
        time.sleep(0.05)
    pytest.fail(f"{path}: fewer than {n} frames of {uid} after {TIMEOUT} s")


def derived_seqs(uri: str, key: str, raw: str) -> tuple[list[int], object]:
    """The primary ``seq_num`` column of the one derived run of ``raw`` (stock tiled client)."""
    from tiled.client import from_uri
    from tiled.queries import Key

    found = from_uri(uri, api_key=key).search(Key("start.original_run_uid") == raw)
    if len(found) == 0:
        return [], None
    assert len(found) == 1, [  # one analysis, one run: which differ, if not
        {k: found[u].metadata["start"].get(k) for k in ("uid", "motex_analysis_id", "time")}
        | {"settings": found[u].metadata["start"].get("motex_settings")}
        for u in found
    ]
    run = found[next(iter(found))]
    if "primary" not in run or "seq_num" not in run["primary"]:
        return [], run
    return [int(s) for s in run["primary"]["seq_num"].read()], run


def check_derived_run(run, n_frames: int) -> None:  # type: ignore[no-untyped-def]
    """Complete, each frame once in seq order, arrays as float arrays."""
    assert run.metadata["stop"]["exit_status"] == "success", run.metadata["stop"]
    assert run.metadata["stop"]["num_events"]["primary"] == n_frames
    contributions = run["primary"]["contributions"].read()
    assert contributions.shape[0] == n_frames and contributions.ndim == 2
    assert np.issubdtype(contributions.dtype, np.floating), contributions.dtype
    assert np.all(np.isfinite(contributions))
    times = np.asarray(run["primary"].read()["time"], dtype=float)
    assert np.all(np.diff(times) >= 0)


def test_replay_killed_and_rerun_publishes_every_frame_once(  # type: ignore[no-untyped-def]
    series, tmp_path: Path, tiled_api_key_env: str, tiled_base_uri: str
) -> None:
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(N_FRAMES):
        write_gr(frames / f"frame_{i + 1}.gr", series.r, series.frame(i))
    out = tmp_path / "out.jsonl"
    cmd = [
        EXE,
        "replay",
        "--frames",
        str(frames / "*.gr"),
        "--model",
        str(series.model_path),
        *MODEL_FLAGS,
        "--search-calls",
        "3",
        "--state-dir",
        str(tmp_path / "state"),
        "--out",
        str(out),
        "--archive",
        tiled_base_uri,
    ]
    raw = str(frames / "*.gr")
    first = subprocess.Popen([*cmd, "--speed", "4"], stderr=subprocess.PIPE, text=True)
    try:
        wait_lines(out, 4, first)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(30)
    in_jsonl = len(list(read_jsonl(out, validate=False)))
    in_tiled, run = derived_seqs(tiled_base_uri, tiled_api_key_env, raw)
    log.info(
        "killed replay: %d frames in the JSON Lines, %s in the derived run", in_jsonl, in_tiled
    )
    assert run is not None and run.metadata.get("stop") is None, "no unfinished derived run"
    # a kill may leave half a line: simulate the worst case explicitly
    with out.open("ab") as fh:
        fh.write(b'{"schema": "motex-stream/contri')
    second = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT)
    assert second.returncode == 0, second.stderr[-2000:]
    seqs = Counter(m["seq"] for m in read_jsonl(out))
    assert sorted(seqs) == list(range(1, N_FRAMES + 1))
    assert set(seqs.values()) == {1}, f"duplicates: {seqs}"
    assert "already in" in second.stdout
    log.info("rerun: %s", second.stderr[-5000:])
    in_tiled, run = derived_seqs(tiled_base_uri, tiled_api_key_env, raw)
    assert in_tiled == list(range(1, N_FRAMES + 1)), in_tiled
    check_derived_run(run, N_FRAMES)


def _config(tmp_path: Path, series, address: str, tiled_uri: str) -> Path:  # type: ignore[no-untyped-def]
    reference = tmp_path / "reference.gr"
    write_gr(reference, series.r, series.frame(0))
    config = tmp_path / "serve.toml"
    config.write_text(
        f"""
[service]
state_dir = "{tmp_path / "state"}"
metrics_port = 0
save_every = 3

[[models]]
name = "two-motifs"
starting_model = "{series.model_path}"
reference = "{reference}"
catalogue_size = 300
refit = 300
rounds = 5
max_trees = 60
search_calls = 3

[[sources]]
type = "zmq"
name = "beamline"
address = "{address}"

# the derived run first: once a frame is in the JSON Lines, Tiled has it too
[[sinks]]
type = "bluesky"
tiled_uri = "{tiled_uri}"

[[sinks]]
type = "jsonl"
path = "{tmp_path / "out.jsonl"}"
"""
    )
    return config


class Beamline:
    """Bluesky documents of one run, composed with event_model and sent through the proxy."""

    def __init__(self, inbound: str, series) -> None:  # type: ignore[no-untyped-def]
        self.publish = make_publisher(inbound)
        self.series = series
        self.run = event_model.compose_run()
        r = series.r
        self.desc = self.run.compose_descriptor(
            name="primary",
            data_keys={
                "pdf_gr": {
                    "source": "sim",
                    "dtype": "array",
                    "shape": [r.size],
                    "dtype_numpy": "<f8",
                }
            },
            configuration={"det": {"data": {"pdf_r": r}, "timestamps": {}, "data_keys": {}}},
        )

    def start(self) -> None:
        self.publish("start", self.run.start_doc)
        self.publish("descriptor", self.desc.descriptor_doc)

    def event(self, seq: int) -> None:
        g = self.series.frame((seq - 1) % self.series.n_frames)
        self.publish(
            "event",
            self.desc.compose_event(
                data={"pdf_gr": g}, timestamps={"pdf_gr": time.time()}, seq_num=seq
            ),
        )

    def stop(self) -> None:
        self.publish("stop", self.run.compose_stop())

    def close(self) -> None:
        self.publish.close()


def handshake(inbound: str, series, out: Path, proc: subprocess.Popen) -> None:  # type: ignore[no-untyped-def]
    """Throwaway one-frame runs until one is analysed: the service is subscribed and warm."""
    deadline = time.monotonic() + TIMEOUT
    before = len(list(read_jsonl(out, validate=False))) if out.exists() else 0
    while time.monotonic() < deadline:
        probe = Beamline(inbound, series)
        probe.start()
        probe.event(1)
        probe.stop()
        probe.close()
        t = time.monotonic()
        while time.monotonic() - t < 1.0:
            if out.exists() and len(list(read_jsonl(out, validate=False))) > before:
                return
            if proc.poll() is not None:
                pytest.fail(f"serve ended: {proc.stderr.read()[-2000:]}")  # type: ignore[union-attr]
            time.sleep(0.05)
    pytest.fail("serve never analysed a probe frame")


def test_serve_killed_mid_run_resumes_the_run(  # type: ignore[no-untyped-def]
    series, tmp_path: Path, zmq_proxy, tiled_api_key_env: str, tiled_base_uri: str
) -> None:
    config = _config(tmp_path, series, zmq_proxy.outbound, tiled_base_uri)
    out = tmp_path / "out.jsonl"
    log1, log2 = tmp_path / "serve1.log", tmp_path / "serve2.log"
    cmd = [EXE, "serve", "--config", str(config)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with log1.open("w") as err1:
        first = subprocess.Popen(cmd, stderr=err1, stdout=subprocess.DEVNULL, env=env)
    first.stderr = log1.open()  # type: ignore[assignment]
    run = Beamline(zmq_proxy.inbound, series)
    uid = run.run.start_doc["uid"]
    try:
        handshake(zmq_proxy.inbound, series, out, first)
        run.start()
        for seq in range(1, 6):
            run.event(seq)
        wait_run(out, uid, 5, first)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(30)
    before = [m["seq"] for m in read_jsonl(out, validate=False) if m["source"] == uid]
    assert before == [1, 2, 3, 4, 5]
    in_tiled, _ = derived_seqs(tiled_base_uri, tiled_api_key_env, uid)
    log.info("killed serve: %s in the JSON Lines, %s in the derived run", before, in_tiled)

    with log2.open("w") as err2:
        second = subprocess.Popen(cmd, stderr=err2, stdout=subprocess.DEVNULL, env=env)
    second.stderr = log2.open()  # type: ignore[assignment]
    try:
        handshake(zmq_proxy.inbound, series, out, second)
        run.event(5)  # re-sent by a transport that replays: a duplicate, not a new frame
        for seq in range(6, N_FRAMES + 1):  # held while the service was down
            run.event(seq)
        run.stop()
        wait_run(out, uid, N_FRAMES, second)
        time.sleep(0.5)  # a duplicate would show up now
        deadline = time.monotonic() + TIMEOUT  # the stop handled (derived run closed)
        while any((tmp_path / "state" / "@runs").glob("*/start.json")):
            assert time.monotonic() < deadline, "the run's stop was never handled"
            time.sleep(0.1)
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(30)
        run.close()
    seqs = [m["seq"] for m in read_jsonl(out, validate=False) if m["source"] == uid]
    assert seqs == list(range(1, N_FRAMES + 1))
    text2 = log2.read_text()
    assert "reloaded model two-motifs" in text2
    assert "prepared model" not in text2, "the model was prepared again"
    assert f"resumed run {uid}" in text2
    assert "duplicate dropped" in text2 or "was published before" in text2
    assert "Traceback" not in text2
    in_tiled, derived = derived_seqs(tiled_base_uri, tiled_api_key_env, uid)
    assert in_tiled == list(range(1, N_FRAMES + 1)), in_tiled
    check_derived_run(derived, N_FRAMES)
    # the stop closed the run: nothing is left to resume
    assert not any((tmp_path / "state" / "@runs").glob("*/start.json"))
