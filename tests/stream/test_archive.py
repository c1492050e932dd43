"""Derived runs that stock clients read: TiledWriter → Tiled → tiled client, BestEffortCallback.

Real parts only: a RunEngine publishing through ``bluesky-0MQ-proxy``, the service with the
real analyzer, the stock ``bluesky_tiled_plugins.TiledWriter`` into a Tiled server, and the
stock tiled client and ``BestEffortCallback`` reading back. Two starting models: the 24-W
α-Keggin dimer of 109725 and a single 12-W α-Keggin unit (12 atoms: the size the stock writer
would otherwise keep in its SQL table, where arrays read back as strings).
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import uuid
from importlib.resources import files
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from motex_stream.analysis.settings import LiveModelSettings
from motex_stream.stream.commands.runner import LazyAnalyzer
from motex_stream.stream.publishers.bluesky_run import BlueskyRunSink
from motex_stream.stream.publishers.jsonl import read_jsonl
from motex_stream.stream.publishers.tiled_archive import tiled_writer
from motex_stream.stream.service import StreamService
from motex_stream.stream.sim.series import two_motif_series
from motex_stream.stream.sim.simulate import make_pdf_detector, run_series
from motex_stream.structure.starting_model import load_starting_model
from tests.stream.conftest import free_port, wait_for_port

pytestmark = pytest.mark.slow
N_FRAMES = 4
TIMEOUT = 120.0
KEGGIN_DIMER = Path(str(files("motex_stream").joinpath("data/keggin/109725.xyz")))


def write_keggin_unit(path: Path) -> Path:
    """One α-Keggin W12O40 unit (the odd W of 109725 and their O): 12 permutable atoms."""
    dimer = load_starting_model(KEGGIN_DIMER, ["W"], 2.5)
    odd = np.zeros(dimer.n_permutable, dtype=bool)
    odd[0::2] = True
    symbols, pos = dimer.motif_positions(odd)
    lines = [str(len(symbols)), "alpha-Keggin W12O40"]
    lines += [f"{s} {x:.6f} {y:.6f} {z:.6f}" for s, (x, y, z) in zip(symbols, pos, strict=True)]
    path.write_text("\n".join(lines) + "\n")
    return path


def model_settings(name: str, model: Path, **changes: Any) -> LiveModelSettings:
    values: dict[str, Any] = {
        "name": name,
        "starting_model": str(model),
        "catalogue_size": 300,
        "refit": 300,
        "rounds": 5,
        "max_trees": 40,
        "search_calls": 2,
        "cv_folds": 2,
        "rmax": 10.0,
    }
    return LiveModelSettings(**(values | changes))


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    return two_motif_series(tmp_path_factory.mktemp("series"), n_frames=N_FRAMES)


@pytest.fixture(scope="module")
def gr_frames(tmp_path_factory, series) -> str:
    """The series as .gr files (what `replay --frames` reads)."""
    directory = tmp_path_factory.mktemp("frames")
    for i in range(N_FRAMES):
        body = "\n".join(f"{r:.4f} {g:.8f}" for r, g in zip(series.r, series.frame(i), strict=True))
        (directory / f"frame_{i + 1}.gr").write_text(body + "\n")
    return str(directory / "*.gr")


def tiled_client(uri: str, key: str):
    from tiled.client import from_uri

    return from_uri(uri, api_key=key)


def derived_runs(client, raw_uid: str) -> list:
    from tiled.queries import Key

    found = client.search(Key("start.original_run_uid") == raw_uid)
    return [found[k] for k in found]


class RecordingBestEffort:
    """The stock BestEffortCallback (no plots), recording which documents it took."""

    def __init__(self) -> None:
        from bluesky.callbacks.best_effort import BestEffortCallback

        self.bec = BestEffortCallback()
        self.bec.disable_plots()
        self.names: list[str] = []

    def __call__(self, name: str, doc: dict[str, Any]) -> None:
        self.bec(name, doc)  # raises on a document it cannot handle: a counted sink error
        self.names.append(name)


def documents_from_tiled(run, dataset) -> list[tuple[str, dict[str, Any]]]:
    """start, descriptor, events and stop of a stored run, from its metadata and its data."""
    start = dict(run.metadata["start"])
    stream = run["primary"]
    descriptor = {
        **stream.metadata,
        "name": "primary",
        "run_start": start["uid"],
        "object_keys": {"motex": list(stream.metadata["data_keys"])},
    }
    descriptor.pop("_config_updates", None)
    keys = list(descriptor["data_keys"])
    events = []
    for i in range(dataset.sizes["time"]):
        data = {k: np.asarray(dataset[k][i]).tolist() for k in keys}
        events.append(
            {
                "uid": str(uuid.uuid4()),
                "descriptor": descriptor["uid"],
                "seq_num": i + 1,
                "time": float(dataset["time"][i]),
                "data": data,
                "timestamps": dict.fromkeys(keys, float(dataset["time"][i])),
            }
        )
    stop = dict(run.metadata["stop"])
    return [("start", start), ("descriptor", descriptor), *(("event", e) for e in events),
            ("stop", stop)]  # fmt: skip


def test_zmq_to_service_to_tiled_readable_by_stock_clients(
    zmq_proxy, run_engine, series, tiled_server, tmp_path, capsys
):
    """RunEngine → 0MQ proxy → service (24-atom and 12-atom models) → TiledWriter → Tiled."""
    from motex_stream.stream.sources.zmq_source import ZmqSource, make_publisher

    key = str(tiled_server.api_key)
    uri = str(tiled_server.uri).split("?", 1)[0]
    unit = write_keggin_unit(tmp_path / "keggin_unit.xyz")
    analyzers = {
        "dimer": LazyAnalyzer(model_settings("dimer", KEGGIN_DIMER)),
        "unit": LazyAnalyzer(model_settings("unit", unit)),
    }
    source = ZmqSource(zmq_proxy.outbound)
    bec = RecordingBestEffort()
    sink = BlueskyRunSink([tiled_writer(uri, api_key=key), bec])
    service = StreamService(analyzers, [source], [sink])
    service.start()
    docs = make_publisher(zmq_proxy.inbound)
    try:
        assert source.ready.wait(TIMEOUT)
        deadline = time.monotonic() + TIMEOUT
        while not service.summary()["runs"] and time.monotonic() < deadline:
            docs("start", {"uid": str(uuid.uuid4()), "time": time.time()})  # slow joiner
            time.sleep(0.3)
        run_engine.subscribe(docs)
        detector = make_pdf_detector(series.frame, series.r)
        raw = {
            model: run_series(run_engine, detector, N_FRAMES, delay=0.05, md={"motex_model": model})
            for model in ("dimer", "unit")
        }
        deadline = time.monotonic() + TIMEOUT
        while service.summary()["processed"] < 2 * N_FRAMES and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1.0)  # the stop documents follow the last frame
    finally:
        service.stop()
        docs.close()
    summary = service.summary()
    assert summary["processed"] == 2 * N_FRAMES and summary["sink_errors"] == 0, summary

    client = tiled_client(uri, key)
    for model, n_atoms in (("dimer", 24), ("unit", 12)):
        runs = derived_runs(client, raw[model])
        assert len(runs) == 1, f"{model}: {len(runs)} derived runs"
        run = runs[0]
        start = run.metadata["start"]
        for field in ("plan_name", "plan_type", "scan_id", "versions", "original_run_uid"):
            assert field in start, field
        assert start["motex_model"] == model and start["motex_settings"]["name"] == model
        assert run.metadata["stop"]["exit_status"] == "success"
        contributions = run["primary"]["contributions"].read()
        assert contributions.shape == (N_FRAMES, n_atoms)
        assert np.issubdtype(contributions.dtype, np.floating)
        dataset = run["primary"].read()
        for key_ in ("contributions", "contribution_spread"):
            assert dataset[key_].shape == (N_FRAMES, n_atoms)
            assert np.issubdtype(dataset[key_].dtype, np.floating), dataset[key_].dtype
        assert dataset["best_mask"].shape == (N_FRAMES, n_atoms)
        descriptor = run["primary"].metadata
        data_keys = descriptor["data_keys"]
        assert all("units" in dk for dk in data_keys.values()), data_keys
        times = np.asarray(dataset["time"], dtype=float)
        assert np.all(times >= start["time"]), "an event is dated before its run's start"
        # and as read back from Tiled: the stored documents, rebuilt, go through a fresh
        # BestEffortCallback (this server has no json-seq exporter for run.documents())
        replayed = RecordingBestEffort()
        for name, doc in documents_from_tiled(run, dataset):
            replayed(name, doc)
        assert replayed.names.count("event") == N_FRAMES
    assert bec.names.count("start") == 2 and bec.names.count("stop") == 2
    assert bec.names.count("event") == 2 * N_FRAMES
    capsys.readouterr()


def replay(gr_frames: str, model: Path, out: Path, archive: str, *extra: str) -> int:
    from motex_stream.cli import main

    return main([
        "replay", "--frames", gr_frames, "--model", str(model), "--name", "unit",
        "--catalogue", "300", "--refit", "300", "--rounds", "5", "--max-trees", "40",
        "--search-calls", "2", "--rmax", "10", "--out", str(out), "--archive", archive, *extra,
    ])  # fmt: skip


def test_one_uid_per_analysis_and_failed_writes_fail_the_replay(
    gr_frames, tiled_server, tiled_api_key_env, tiled_base_uri, tmp_path, monkeypatch
):
    """Same state → same uid, nothing duplicated; other settings → a new uid; a dead server
    mid-replay → counted sink errors and exit 1."""
    unit = write_keggin_unit(tmp_path / "keggin_unit.xyz")
    state = tmp_path / "state"
    assert (
        replay(gr_frames, unit, tmp_path / "a.jsonl", tiled_base_uri, "--state-dir", str(state))
        == 0
    )
    # the replay's messages follow the published contract
    from tests.stream.test_message_schema import validator

    messages = list(read_jsonl(tmp_path / "a.jsonl"))
    assert len(messages) == 4
    for message in messages:
        validator().validate(message)
    client = tiled_client(tiled_base_uri, tiled_api_key_env)
    first = derived_runs(client, gr_frames)
    assert len(first) == 1
    uid = first[0].metadata["start"]["uid"]
    # a restart with the same prepared state: the same uid, skipped by the writer, exit 0
    assert (
        replay(gr_frames, unit, tmp_path / "b.jsonl", tiled_base_uri, "--state-dir", str(state))
        == 0
    )
    assert [r.metadata["start"]["uid"] for r in derived_runs(client, gr_frames)] == [uid]
    # other settings: another analysis, another derived run
    assert replay(gr_frames, unit, tmp_path / "c.jsonl", tiled_base_uri, "--seed", "7") == 0
    uids = {r.metadata["start"]["uid"] for r in derived_runs(client, gr_frames)}
    assert len(uids) == 2 and uid in uids

    # a Tiled server that goes away mid-replay: every failed write counts, the replay fails.
    # tiled reads TILED_RETRY_TIMEOUT at import (already done in this process): set the knob.
    import tiled.client.utils

    monkeypatch.setattr(tiled.client.utils, "TILED_RETRY_TIMEOUT", 2.0)
    # A second server in a subprocess (`tiled serve`): two in-process servers share tiled's
    # settings and the session server would start refusing its own key.
    port, doomed_key = free_port(), uuid.uuid4().hex
    doomed = subprocess.Popen(
        [str(Path(sys.executable).with_name("tiled")), "serve", "catalog", "--temp",
         "--api-key", doomed_key, "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for_port(port, timeout=60)
        monkeypatch.setenv("MOTEX_TILED_API_KEY", doomed_key)
        out = tmp_path / "d.jsonl"
        rc: list[int] = []
        doomed_uri = f"http://127.0.0.1:{port}/api"
        thread = threading.Thread(
            target=lambda: rc.append(replay(gr_frames, unit, out, doomed_uri, "--speed", "2"))
        )
        thread.start()
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline and not (out.exists() and out.read_text().strip()):
            time.sleep(0.1)
    finally:
        doomed.kill()
        doomed.wait(30)
    thread.join(TIMEOUT)
    assert rc == [1]


def test_a_stored_run_is_continued_if_unfinished_and_skipped_if_finished(tiled_server) -> None:
    """A derived run Tiled holds without a stop (service killed mid-run, then resumed) is
    reopened and continued; a finished one is skipped quietly (written once)."""
    from motex_stream.stream.frames import RunStart, RunStop
    from motex_stream.stream.messages import AnalysisIdentity, PublishedFrame
    from tests.stream.test_publishers import make_published

    key = str(tiled_server.api_key)
    uri = str(tiled_server.uri).split("?", 1)[0]
    raw = f"raw-{uuid.uuid4()}"
    analysis = AnalysisIdentity(uuid.uuid4().hex[:16], {"seed": 0})

    def frame(seq: int, source: str = raw) -> PublishedFrame:
        published = make_published(seq, source=source)
        return PublishedFrame(**{**published.__dict__, "analysis": analysis})

    killed = BlueskyRunSink([tiled_writer(uri, api_key=key)])
    killed.on_run_start(RunStart(raw, 1.7e9))
    killed.publish(frame(1))  # ... and the process dies: no stop reaches Tiled
    resumed = BlueskyRunSink([tiled_writer(uri, api_key=key)])
    resumed.on_run_start(RunStart(raw, 1.7e9))
    resumed.publish(frame(2))
    resumed.publish(frame(3))
    resumed.on_run_stop(RunStop(raw, 1.7e9 + 10))
    (run,) = derived_runs(tiled_client(uri, key), raw)
    assert list(run["primary"]["seq_num"].read()) == [1, 2, 3]
    assert run.metadata["stop"]["exit_status"] == "success"

    raw2 = f"raw-{uuid.uuid4()}"
    for _attempt in range(2):  # a finished run written twice: the second is skipped, no error
        sink = BlueskyRunSink([tiled_writer(uri, api_key=key)])
        sink.on_run_start(RunStart(raw2, 1.7e9))
        sink.publish(frame(1, raw2))
        sink.on_run_stop(RunStop(raw2, 1.7e9 + 10))
    (run2,) = derived_runs(tiled_client(uri, key), raw2)
    assert list(run2["primary"]["seq_num"].read()) == [1]
