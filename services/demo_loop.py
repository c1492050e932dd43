"""``make demo-loop``: the closed loop on one machine, end to end, in about a minute.

redis-server and ``start-re-manager`` (services/queueserver: ophyd sim ``det``) start on free
127.0.0.1 ports; a two-motif series crosses from motif A to motif B through a live analysis
service publishing on ZMQ; ``motex-stream agent`` (a subprocess, the real command) suggests a
``count`` to the Queue Server when the change is confirmed. At the end the queue is printed
with the item's ``motex_*`` metadata, and the agent's decisions. Nothing is started in the
queue (human in the loop). Needs redis-server (Debian: apt-get install redis-server).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

log = logging.getLogger("demo-loop")
HERE = Path(__file__).resolve().parent


def _free_port() -> int:
    with contextlib.closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.closing(socket.socket()) as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


def _bin(name: str) -> str:
    exe = Path(sys.executable).with_name(name)
    return str(exe) if exe.exists() else name


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--dry-run", action="store_true", help="the agent only reports")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    redis = shutil.which("redis-server")
    if redis is None:
        log.error("redis-server not found: apt-get install redis-server")
        return 1

    from bluesky_queueserver_api.zmq import REManagerAPI

    from motex_stream.analysis.settings import LiveModelSettings
    from motex_stream.stream.frames import Frame
    from motex_stream.stream.live.analyzer import MotexFrameAnalyzer
    from motex_stream.stream.publishers.zmq_pub import ZmqPublisher
    from motex_stream.stream.service import StreamService
    from motex_stream.stream.sim.series import two_motif_series
    from motex_stream.stream.sources.memory_source import SeriesSource

    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="motex-demo-loop-") as tmp_name:
        tmp = Path(tmp_name)
        redis_port, qs_port, info_port, pub_port = (_free_port() for _ in range(4))
        qs, pub = f"tcp://127.0.0.1:{qs_port}", f"tcp://127.0.0.1:{pub_port}"
        try:
            procs.append(
                subprocess.Popen(
                    [redis, "--port", str(redis_port), "--bind", "127.0.0.1", "--save", ""],
                    stdout=subprocess.DEVNULL,
                )
            )
            _wait_port(redis_port)
            procs.append(
                subprocess.Popen(
                    [
                        _bin("start-re-manager"),
                        *("--startup-dir", str(HERE / "queueserver" / "startup")),
                        *("--existing-plans-devices", str(tmp / "plans.yaml")),
                        *(
                            "--user-group-permissions",
                            str(HERE / "queueserver" / "user_group_permissions.yaml"),
                        ),
                        *("--redis-addr", f"127.0.0.1:{redis_port}"),
                        *("--zmq-control-addr", qs),
                        *("--zmq-info-addr", f"tcp://127.0.0.1:{info_port}"),
                        "--silent",
                    ]
                )
            )
            config = tmp / "agent.toml"
            config.write_text(
                f'name = "demo"\nsubscribe = "{pub}"\n[queue_server]\nzmq_control_addr = "{qs}"\n'
                'user_group = "motex_agent"\n'
                f"[policy]\ndry_run = {str(args.dry_run).lower()}\n"
                '[policy.plan]\nname = "count"\nargs = [["det"]]\nkwargs = {num = 5}\n'
            )
            agent = subprocess.Popen([_bin("motex-stream"), "agent", "--config", str(config)])
            procs.append(agent)
            _wait_port(qs_port)
            rm = REManagerAPI(zmq_control_addr=qs, timeout_recv=10)
            rm.environment_open()
            log.info("Queue Server at %s; preparing the analysis (catalogue fit)…", qs)
            series = two_motif_series(tmp / "series", n_frames=args.frames, crossover=14.5)
            settings = LiveModelSettings(
                name="two-motifs",
                starting_model=str(series.model_path),
                catalogue_size=2000,
                refit=2000,
                rounds=10,
                max_trees=150,
                search_calls=6,
            )
            first = Frame("reference", 1, 0.0, series.r, series.frame(0))
            MotexFrameAnalyzer.prepare(settings, first, tmp / "state")
            analyzer = MotexFrameAnalyzer.prepare(settings, None, tmp / "state")
            rm.wait_for_idle(timeout=120)
            publisher = ZmqPublisher(pub)
            publisher.wait_for_subscribers(1, timeout=60)
            log.info("streaming %d frames from motif A to motif B", args.frames)
            service = StreamService(
                {analyzer.name: analyzer},
                [SeriesSource(series.frame, series.r, series.n_frames)],
                [publisher],
                queue_size=args.frames + 8,
            )
            service.run(threading.Event())
            time.sleep(1.0)
            agent.send_signal(signal.SIGTERM)
            agent.wait(timeout=30)
            items = rm.queue_get()["items"]
            log.info("queue at %s: %d item(s), not started (human in the loop)", qs, len(items))
            for item in items:
                md = item["kwargs"].get("md", {})
                num = item["kwargs"].get("num")
                log.info("  %s %s num=%s by %s", item["name"], item["args"], num, item["user"])
                for key in sorted(k for k in md if k.startswith("motex_")):
                    log.info("    %s = %s", key, md[key])
            rm.close()
        finally:
            for proc in reversed(procs):
                if proc.poll() is None:
                    proc.send_signal(signal.SIGINT)
                    try:
                        proc.wait(timeout=15)
                    except subprocess.TimeoutExpired:
                        proc.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
