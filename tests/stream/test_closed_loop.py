"""Closed loop (issue 25): the two-motif crossover, through a live service, reaches a real
Queue Server as exactly one suggestion; a dry run only reports; a dead Queue Server is a
counted, logged error while the analysis goes on.

Everything is real and started here: redis-server (Debian package), ``start-re-manager`` with
the simulated profile in services/queueserver (ophyd sim devices), a Tiled server
(conftest), the analysis service publishing on ZMQ, and three agents on that one stream:

- ``live``: ``motex-stream agent --config`` as a subprocess, suggesting to the RE Manager;
- ``dry``: the same command with ``dry_run = true``, reporting into Tiled;
- ``dead``: an in-process :class:`AgentLoop` whose Queue Server address has no server.

One service run serves all three so the suite pays for one preparation (the CI budget).
Without redis-server the tests skip, unless ``MOTEX_REQUIRE_REDIS=1`` (set by .ci/run).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.stream.conftest import free_port, wait_for_port
from tests.stream.two_motifs import N_CROSS, PreparedState

pytest.importorskip("bluesky_queueserver_api")
pytest.importorskip("bluesky_adaptive")

ROOT = Path(__file__).resolve().parents[2]
QS_PROFILE = ROOT / "services" / "queueserver"
DEAD_TIMEOUT_S = 0.5


def _redis_server() -> str:
    exe = shutil.which("redis-server")
    if exe is None:
        if os.environ.get("MOTEX_REQUIRE_REDIS") == "1":
            pytest.fail("redis-server is required here (MOTEX_REQUIRE_REDIS) but not on PATH")
        pytest.skip("redis-server not installed (apt-get install redis-server)")
    return exe


def _stop(proc: subprocess.Popen[Any], sig: int = signal.SIGTERM, timeout: float = 15) -> None:
    """Stop a process started in its own session and everything it started: the RE Manager
    forks its manager and worker processes, which outlived a signal to the parent alone
    (two start-re-manager processes were left running after a CI run)."""
    if proc.poll() is None:
        _signal_group(proc, sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout)
    _signal_group(proc, signal.SIGKILL)  # whatever it forked and left behind


def _signal_group(proc: subprocess.Popen[Any], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def _bin(name: str) -> str:
    exe = Path(sys.executable).with_name(name)
    return str(exe) if exe.exists() else name


@dataclass
class LoopRun:
    """What one service run with the three agents left behind."""

    messages: list[dict[str, Any]]
    queue_items: list[dict[str, Any]]
    live_log: str
    dry_log: str
    dead: Any  # the in-process AgentLoop on a dead Queue Server
    refused: Any  # the in-process AgentLoop asking for a plan its user group may not add
    dead_report: list[tuple[str, dict[str, Any]]]
    dead_log: list[logging.LogRecord]
    tiled_uri: str
    service_seconds: float
    timings: dict[str, float] = field(default_factory=dict)


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def _agent_toml(path: Path, name: str, sub: str, qs: str, user: str, extra: str = "") -> Path:
    path.write_text(
        f'name = "{name}"\nsubscribe = "{sub}"\n\n'
        f'[queue_server]\nzmq_control_addr = "{qs}"\ntimeout_s = 5.0\n'
        f'user = "{user}"\nuser_group = "motex_agent"\n\n'
        "[policy]\nmin_interval_s = 600\nmax_queued = 2\n"
        f'{extra}\n[policy.plan]\nname = "count"\nargs = [["det"]]\nkwargs = {{num = 5}}\n'
    )
    return path


@pytest.fixture(scope="module")
def loop_run(
    tmp_path_factory: pytest.TempPathFactory, tiled_server: Any, crossing_state: PreparedState
) -> Iterator[LoopRun]:
    from bluesky_queueserver_api.zmq import REManagerAPI

    from motex_stream.stream.loop.agent import AgentLoop
    from motex_stream.stream.loop.policy import AgentConfig
    from motex_stream.stream.loop.report import ReportRun
    from motex_stream.stream.publishers.jsonl import JsonlSink, read_jsonl
    from motex_stream.stream.publishers.zmq_pub import ZmqPublisher
    from motex_stream.stream.service import StreamService
    from motex_stream.stream.sources.memory_source import SeriesSource

    t0 = time.monotonic()
    timings: dict[str, float] = {}
    redis_exe = _redis_server()
    tmp = tmp_path_factory.mktemp("loop")
    redis_port, control_port, info_port, pub_port = (free_port() for _ in range(4))
    dead_qs = f"tcp://127.0.0.1:{free_port()}"  # nothing listens there
    qs = f"tcp://127.0.0.1:{control_port}"
    pub = f"tcp://127.0.0.1:{pub_port}"
    procs: list[subprocess.Popen[Any]] = []
    logs: list[Any] = []

    def popen(cmd: list[str], log_name: str, env: dict[str, str] | None = None) -> Any:
        fh = (tmp / log_name).open("w")
        logs.append(fh)
        proc = subprocess.Popen(
            cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=tmp, env=env, start_new_session=True
        )
        procs.append(proc)
        return proc

    opened = threading.Event()
    open_error: list[BaseException] = []
    try:
        # 1. the facility side, started first: it comes up while the model prepares
        popen(
            [
                redis_exe,
                "--port",
                str(redis_port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            "redis.log",
        )
        shutil.copytree(QS_PROFILE / "startup", tmp / "startup")
        wait_for_port(redis_port, timeout=30)
        popen(
            [
                _bin("start-re-manager"),
                *("--startup-dir", str(tmp / "startup")),
                *("--existing-plans-devices", str(tmp / "existing_plans_and_devices.yaml")),
                *("--user-group-permissions", str(QS_PROFILE / "user_group_permissions.yaml")),
                *("--redis-addr", f"127.0.0.1:{redis_port}", "--zmq-control-addr", qs),
                *("--zmq-info-addr", f"tcp://127.0.0.1:{info_port}", "--console-output", "OFF"),
            ],
            "re-manager.log",
        )

        def open_environment() -> None:
            try:
                wait_for_port(control_port, timeout=60)
                rm = REManagerAPI(zmq_control_addr=qs, timeout_recv=10)
                rm.environment_open()
                rm.wait_for_idle(timeout=120)
                rm.close()
                opened.set()
            except BaseException as exc:  # reported by the fixture, not lost in the thread
                open_error.append(exc)

        opener = threading.Thread(target=open_environment, daemon=True)
        opener.start()

        # 2. two agents as the real command, subscribed before the service publishes
        env = {**os.environ, "MOTEX_TILED_API_KEY": str(tiled_server.api_key)}
        live_cfg = _agent_toml(tmp / "live.toml", "live", pub, qs, "motex-live")
        tiled_base = str(tiled_server.uri).split("?", 1)[0]
        dry_cfg = _agent_toml(tmp / "dry.toml", "dry", pub, qs, "motex-dry", "dry_run = true\n")
        dry_cfg.write_text(dry_cfg.read_text() + f'\n[report]\ntiled_uri = "{tiled_base}"\n')
        agent_cmd = [_bin("motex-stream"), "-v", "agent", "--config"]
        live = popen([*agent_cmd, str(live_cfg)], "live.log", env)
        dry = popen([*agent_cmd, str(dry_cfg)], "dry.log", env)

        # 3. the third agent in process, on a Queue Server address where nothing listens
        capture = _Capture()
        logging.getLogger("motex_stream.stream.loop").addHandler(capture)
        dead_report: list[tuple[str, dict[str, Any]]] = []
        dead_cfg = AgentConfig.model_validate(
            {
                "name": "dead",
                "subscribe": pub,
                "queue_server": {"zmq_control_addr": dead_qs, "timeout_s": DEAD_TIMEOUT_S},
                "policy": {"min_interval_s": 0},
            }
        )
        dead = AgentLoop(dead_cfg, ReportRun(lambda n, d: dead_report.append((n, d)), {}))
        stop_dead = threading.Event()
        dead_thread = threading.Thread(target=dead.run, args=(stop_dead,), daemon=True)
        dead_thread.start()
        # a fourth asks the live server for `scan`, which group motex_agent may not add
        refused_cfg = AgentConfig.model_validate(
            {
                "name": "refused",
                "subscribe": pub,
                "queue_server": {
                    "zmq_control_addr": qs,
                    "timeout_s": 5.0,
                    "user": "refused",
                    "user_group": "motex_agent",
                },
                "policy": {
                    "min_interval_s": 600,
                    "plan": {"name": "scan", "args": [["det"], "motor", -1, 1, 3]},
                },
            }
        )
        refused = AgentLoop(refused_cfg, ReportRun(None, {}))
        refused_thread = threading.Thread(target=refused.run, args=(stop_dead,), daemon=True)
        refused_thread.start()

        # 4. the analysis: the crossover series (test_changes' too) on a copy of the session's
        # model prepared on its frame 1, then every frame through a live service
        series = crossing_state.series
        analyzer = crossing_state.analyzer(tmp / "state")
        timings["prepared"] = time.monotonic() - t0
        opener.join(timeout=120)
        if open_error:
            raise open_error[0]
        assert opened.is_set(), "the RE Manager environment did not open"
        timings["qserver_ready"] = time.monotonic() - t0
        publisher = ZmqPublisher(pub)
        assert publisher.wait_for_subscribers(4, timeout=60), "agents did not subscribe"
        out = tmp / "out.jsonl"
        service = StreamService(
            {analyzer.name: analyzer},
            [SeriesSource(series.frame, series.r, series.n_frames)],
            [publisher, JsonlSink(out)],
            queue_size=N_CROSS + 8,
        )
        started = time.monotonic()
        service.run(threading.Event())
        service_seconds = time.monotonic() - started
        timings["served"] = time.monotonic() - t0
        messages = list(read_jsonl(out))

        # 5. let the agents read the last frames and finish their submissions, then stop them
        deadline = time.monotonic() + 15
        while dead.agent.frames < N_CROSS and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        stop_dead.set()
        dead_thread.join(timeout=15)
        refused_thread.join(timeout=15)
        for proc in (live, dry):
            _stop(proc)
        rm = REManagerAPI(zmq_control_addr=qs, timeout_recv=5)
        items = list(rm.queue_get()["items"])
        rm.close()
        timings["total"] = time.monotonic() - t0
        logging.getLogger("motex_stream.stream.loop").removeHandler(capture)
        yield LoopRun(
            messages=messages,
            queue_items=items,
            live_log=(tmp / "live.log").read_text(),
            dry_log=(tmp / "dry.log").read_text(),
            dead=dead,
            refused=refused,
            dead_report=dead_report,
            dead_log=capture.records,
            tiled_uri=str(tiled_server.uri),
            service_seconds=service_seconds,
            timings=timings,
        )
    finally:
        for proc in reversed(procs):
            _stop(proc, signal.SIGINT if "re-manager" in str(proc.args) else signal.SIGTERM)
        for fh in logs:
            fh.close()


def _col(table: Any, key: str) -> list[Any]:
    """One column of a stream read from Tiled, as a plain list."""
    return np.asarray(table[key]).tolist()


def _changes(run: LoopRun) -> list[dict[str, Any]]:
    return [m["change"] for m in run.messages if m.get("change")]


@pytest.mark.slow
def test_crossover_puts_exactly_one_suggestion_in_the_queue(loop_run: LoopRun) -> None:
    """The live agent queues one ``count`` for the confirmed change, with the change's frame
    and atoms in the item's metadata; the queue is not started (human in the loop)."""
    changes = _changes(loop_run)
    assert changes, "the service reported no change: nothing to act on"
    first = changes[0]
    ours = [i for i in loop_run.queue_items if i.get("user") == "motex-live"]
    assert len(ours) == 1, (ours, changes)
    item = ours[0]
    assert item["name"] == "count" and item["args"] == [["det"]]
    assert item["kwargs"]["num"] == 5
    md = item["kwargs"]["md"]
    assert md["motex_agent"] == "live" and md["motex_trigger"] == "change"
    assert md["motex_frame"] == first["frame"]
    assert md["motex_atoms_gained"] == first["atoms_gained"]
    assert md["motex_atoms_lost"] == first["atoms_lost"]
    assert md["motex_model"] == "two-motifs"
    # nothing started the queue: the RE Manager still holds the item
    assert "awaiting operator" in loop_run.live_log
    # a later change inside min_interval_s is reported as rate limited, not queued
    assert loop_run.live_log.count("): rate_limited") == len(changes) - 1
    print(f"closed loop timings: {loop_run.timings}, service {loop_run.service_seconds:.1f} s")


@pytest.mark.slow
def test_dry_run_reports_to_tiled_and_queues_nothing(loop_run: LoopRun) -> None:
    """The dry-run agent saw the same change, wrote tell/ask events to Tiled, queued nothing."""
    from tiled.client import from_uri
    from tiled.queries import Key

    assert not [i for i in loop_run.queue_items if i.get("user") == "motex-dry"]
    client = from_uri(loop_run.tiled_uri)
    runs = client.search(Key("start.motex_agent") == "dry")
    assert len(runs) == 1
    run = runs.values().first()
    assert run.metadata["start"]["motex_policy"]["dry_run"] is True
    assert run.metadata["stop"]["exit_status"] == "success"
    changes = _changes(loop_run)
    tell = run["tell"].read()
    ask = run["ask"].read()
    assert _col(tell, "trigger") == ["change"] * len(changes)
    assert [int(f) for f in _col(tell, "frame")] == [c["frame"] for c in changes]
    assert _col(tell, "atoms_gained")[0] == json.dumps(changes[0]["atoms_gained"])
    assert _col(ask, "outcome") == ["dry_run"] * len(changes)
    assert "would queue plan count" in str(_col(ask, "detail")[0])


@pytest.mark.slow
def test_dead_queue_server_is_counted_logged_and_never_stalls(loop_run: LoopRun) -> None:
    """Every suggestion to the dead server is one error (counter, log, report); the agent read
    every frame, and the service published every frame, on time."""
    dead = loop_run.dead
    n_changes = len(_changes(loop_run))
    assert [m["seq"] for m in loop_run.messages] == list(range(1, N_CROSS + 1))
    assert dead.agent.frames == N_CROSS
    assert dead.queue_errors == n_changes >= 1
    value = dead.registry.get_sample_value("motex_agent_queue_errors_total")
    assert value == n_changes
    errors = [r for r in loop_run.dead_log if r.levelno == logging.ERROR]
    assert any("Queue Server unavailable" in r.getMessage() for r in errors)
    events = [d["data"] for n, d in loop_run.dead_report if n == "event"]
    asks = [e for e in events if e.get("outcome") == "error"]
    assert len(asks) == n_changes


@pytest.mark.slow
def test_the_server_refuses_a_plan_outside_the_agent_group(loop_run: LoopRun) -> None:
    """Server-side safety: group motex_agent may add only `count`; an agent configured for
    `scan` gets a refusal, reported and counted as an error, and nothing is queued."""
    refused = loop_run.refused
    assert not [i for i in loop_run.queue_items if i.get("user") == "refused"]
    outcomes = [(o, r["detail"]) for o, r in refused.outcomes]
    assert outcomes and outcomes[0][0] == "error", outcomes
    assert "scan" in outcomes[0][1], outcomes
    assert refused.registry.get_sample_value("motex_agent_queue_errors_total") == 1
    # the in-process agents share one log capture: the refusal is logged as one, by name
    assert any("Queue Server refused" in r.getMessage() for r in loop_run.dead_log)
    assert refused.queue_errors == 1
    assert refused.agent.frames == N_CROSS


# ------------------------------------------------------------------ policy, without services


def test_example_config_loads_with_safe_defaults() -> None:
    """services/agent/agent.toml is valid and says: live, human in the loop, limited."""
    from motex_stream.stream.loop.policy import load_config

    config = load_config(ROOT / "services" / "agent" / "agent.toml")
    assert config.policy.auto_start is False
    assert config.policy.min_interval_s > 0 and config.policy.max_queued >= 1
    assert config.queue_server.user_group == "motex_agent"


def test_a_misspelt_safety_key_is_an_error(tmp_path: Path) -> None:
    """``autostart`` (for ``auto_start``) must not silently leave the default in force."""
    from pydantic import ValidationError

    from motex_stream.stream.loop.policy import load_config

    path = tmp_path / "agent.toml"
    path.write_text("[policy]\nautostart = true\n")
    with pytest.raises(ValidationError, match="autostart"):
        load_config(path)


def test_persistent_uncertainty_and_model_error_fire_once_per_streak() -> None:
    """Optional triggers: ``persist_frames`` frames in a row fire one suggestion; the streak
    must break before the next one."""
    from motex_stream.stream.loop.agent import MotexChangeAgent
    from motex_stream.stream.loop.policy import Policy

    agent = MotexChangeAgent(Policy(uncertain_fraction=0.5, max_mae=0.1, persist_frames=2))

    def message(seq: int, uncertain: int, mae: float) -> dict[str, Any]:
        labels = ["uncertain"] * uncertain + ["keep"] * (4 - uncertain)
        contributions = [{"atom": i + 1, "label": lab} for i, lab in enumerate(labels)]
        return {"seq": seq, "contributions": contributions, "model_quality": {"mae": mae}}

    stream = [(1, 2, 0.2), (2, 3, 0.2), (3, 4, 0.2), (4, 0, 0.0), (5, 2, 0.0), (6, 2, 0.0)]
    agent.ingest([message(*m) for m in stream])
    suggested = agent.suggest()
    fired = [(s["trigger"], s["seq"]) for s in suggested]
    assert fired == [("uncertainty", 2), ("model_error", 2), ("uncertainty", 6)]
    assert [best[0] for best in agent.get_best_points()] == [s["_id"] for s in suggested]
