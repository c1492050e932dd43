"""`motex-stream serve --config FILE`: the long-running beamline service.

Order of start-up, and why: the config is validated and checked against this machine first
(every problem, one line each, before anything starts; ``--check`` stops there). Then
/metrics and /healthz are served at once, before the heavy imports and the model
preparation (tens of seconds to minutes), so Prometheus sees the service ``preparing`` with
its progress instead of a dead target, and ``MotexStreamDown`` does not fire on a cold start.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        required=True,
        type=Path,
        help="TOML config (every key: docs/configuration.md; examples: services/configs)",
    )
    p.add_argument(
        "--check",
        action="store_true",
        help="validate the config and check it on this machine (files, ports, key files), "
        "then exit: 0 when the service could start, 1 with every problem listed",
    )


def run_from_args(args: argparse.Namespace) -> int:
    from motex_stream.stream.config import load_config
    from motex_stream.stream.config.preflight import preflight
    from motex_stream.stream.metrics import StreamMetrics, start_metrics_server

    config = load_config(args.config)  # a ConfigError names every bad key before anything runs
    # this machine: state dir writable, files there, ports free, keys private (--check: a port
    # held now, by the running service, is a warning)
    preflight(config, busy_ports_fatal=not args.check)
    models = ", ".join(m.name for m in config.models)
    sources = ", ".join(s.name for s in config.sources) or "none"
    sinks = ", ".join(s.name for s in config.sinks) or "none"
    summary_line = f"models {models}; sources {sources}; sinks {sinks}"
    if args.check:
        log.info("config %s is valid and this machine can run it: %s", args.config, summary_line)
        return 0
    log.info("config %s: %s", args.config, summary_line)
    metrics = StreamMetrics()  # state "preparing" until the models are ready
    server = None
    if config.service.metrics_port:
        server = start_metrics_server(
            config.service.metrics_port,
            config.service.metrics_host,
            metrics.registry,
            health=metrics.health,
        )
        log.info("metrics on %s (health: /healthz, /readyz)", server.url)
    try:
        # the analysis stack (numba, xgboost, shap: seconds to import) only now
        from motex_stream.stream.commands.runner import (
            build_service,
            format_summary,
            serve_until_signalled,
        )

        service = build_service(config, metrics)  # the dashboard too, when configured
        summary = serve_until_signalled(service, server)
        server = None  # closed there
    finally:
        if server is not None:
            server.close()
    log.info("service stopped: %s", format_summary(summary))
    return 0
