"""`motex-stream serve --config FILE`: the long-running beamline service."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from motex_stream.stream.config import ServiceConfig
    from motex_stream.stream.dashboard import DashboardSink

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        required=True,
        type=Path,
        help="TOML config (every key: docs/configuration.md; examples: services/configs)",
    )


def run_from_args(args: argparse.Namespace) -> int:
    from motex_stream.stream.config import load_config
    from motex_stream.stream.config.preflight import preflight
    from motex_stream.stream.runner import build_service, format_summary, serve_until_signalled

    config = load_config(args.config)  # a ConfigError names every bad key before anything runs
    preflight(config)  # this machine: state dir writable, files there, ports free, keys private
    log.info(
        "config %s: models %s; sources %s; sinks %s",
        args.config,
        ", ".join(m.name for m in config.models),
        ", ".join(s.name for s in config.sources) or "none",
        ", ".join(s.type for s in config.sinks) or "none",
    )
    dashboard = dashboard_sink(config.service)
    try:
        service = build_service(config)
    except BaseException:
        if dashboard is not None:
            dashboard.close()
        raise
    if dashboard is not None:
        service.sinks.append(dashboard)
    summary = serve_until_signalled(
        service, config.service.metrics_port, config.service.metrics_host
    )
    log.info("service stopped: %s", format_summary(summary))
    return 0


def dashboard_sink(service: ServiceConfig) -> DashboardSink | None:
    """The service's own dashboard (``[service] dashboard_port``), or None when it is off."""
    if not service.dashboard_port:
        return None
    from motex_stream.stream.dashboard import DashboardSink

    sink = DashboardSink(service.dashboard_host, service.dashboard_port)
    log.info("dashboard on %s", sink.server.url)
    return sink
