"""``motex-stream agent --config FILE``: run the closed-loop agent until SIGINT/SIGTERM.

Why its own process (and service unit): the agent acts on the facility's Queue Server; keeping
it outside the analysis service means stopping, reconfiguring or losing it never touches the
analysis, and the analysis never waits for it.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, type=Path, help="agent TOML (docs/closed-loop.md)")
    p.add_argument(
        "--check", action="store_true", help="validate the config, print the policy, exit"
    )


def run_from_args(args: argparse.Namespace) -> int:
    from motex_stream.stream.loop.agent import AgentLoop
    from motex_stream.stream.loop.policy import load_config
    from motex_stream.stream.loop.report import ReportRun, tiled_sink

    config = load_config(args.config)
    p = config.policy
    log.info(
        "agent %s: %s, action %s, auto_start %s, min_interval %.0f s, max_queued %d, QS %s",
        config.name,
        "DRY RUN" if p.dry_run else "live",
        p.action,
        p.auto_start,
        p.min_interval_s,
        p.max_queued,
        config.queue_server.zmq_control_addr,
    )
    if args.check:
        return 0
    archive: Any = None
    if config.report.tiled_uri:
        archive = tiled_sink(config.report.tiled_uri, config.report.api_key_file)
        log.info("reports to Tiled at %s", config.report.tiled_uri)
    else:
        log.warning("no [report] tiled_uri: the decision trail is only in this log")
    report = ReportRun(
        archive,
        {
            "motex_agent": config.name,
            "motex_policy": p.model_dump(mode="json"),
            "motex_subscribe": config.subscribe,
            "motex_queue_server": config.queue_server.zmq_control_addr,
        },
    )
    loop = AgentLoop(config, report)
    if config.metrics_port is not None:
        from prometheus_client import start_http_server

        start_http_server(config.metrics_port, config.metrics_host, registry=loop.registry)
    stop = threading.Event()

    def _stop(signum: int, _frame: Any) -> None:
        log.info("signal %d: stopping the agent", signum)
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        loop.run(stop)
    finally:
        if archive is not None:
            archive.close()
    counts = {o: sum(1 for x, _ in loop.outcomes if x == o) for o, _ in loop.outcomes}
    log.info(
        "agent %s stopped: %d frames, suggestions %s, queue errors %d, report run %s",
        config.name,
        loop.agent.frames,
        counts or "none",
        loop.queue_errors,
        report.uid,
    )
    return 0
