"""``motex-stream dashboard ADDR``: a live web page of the published contributions.

At the beamline the question is "which atoms do the data want right now, how did that change
over the run, and can I trust it?", asked by people glancing at a screen. The page answers it
per model: a heatmap of atom contribution values (ΔRwp) against frame, the starting model in
3-D coloured by each atom's label (keep/uncertain/remove: the page's one meaning of "kept"),
the latest G(r) with the best catalogue motif's fit, the atoms ranked with their interval and
label, and the model error, latency and frame rate against time. It updates as frames
arrive, keeps working through a service restart, and can scroll back through the run.

The server (:mod:`.server`) subscribes like ``watch`` does, or runs inside the service
(``[service] dashboard_port``); the page (``static/``) draws with Plotly from the ``plotly``
wheel, so nothing is fetched from the internet. User guide: ``docs/dashboard.md``.
"""

from __future__ import annotations

import argparse
import logging
import threading
from collections.abc import Sequence

from motex_stream.stream.dashboard.server import (
    DEFAULT_HOST,
    DEFAULT_PORT,
    DashboardServer,
    DashboardSink,
    serve_subscription,
)
from motex_stream.stream.dashboard.state import DashboardState

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "DashboardServer",
    "DashboardSink",
    "DashboardState",
    "add_arguments",
    "main",
    "run_from_args",
    "serve_subscription",
]

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``dashboard`` options, for the main CLI's subparser."""
    parser.add_argument(
        "address", metavar="ADDR", help="ZMQ PUB address, e.g. tcp://127.0.0.1:5578"
    )
    parser.add_argument("--topic", action="append", default=[], help="model name(s) to show")
    parser.add_argument(
        "--host",
        default=DEFAULT_HOST,
        help="interface to serve the page on (default 127.0.0.1; 0.0.0.0 only behind a firewall)",
    )
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help="port of the page (0: any free port)"
    )


def run_from_args(args: argparse.Namespace) -> int:
    if not 0 <= args.port <= 65535:
        raise ValueError(f"--port {args.port} is not a port number (0..65535)")

    def announce(server: DashboardServer) -> None:
        print(f"dashboard for {args.address} on {server.url}", flush=True)

    stop = threading.Event()
    try:
        serve_subscription(
            args.address,
            args.topic,
            host=args.host,
            port=args.port,
            stop_event=stop,
            on_start=announce,
        )
    except KeyboardInterrupt:
        stop.set()
    except OSError as exc:  # port in use, address not available
        raise ValueError(
            f"cannot serve on {args.host}:{args.port}: {exc.strerror or exc}"
        ) from None
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: ``motex-stream dashboard ADDR`` (or ``python -m ...stream.dashboard``)."""
    parser = argparse.ArgumentParser(prog="motex-stream dashboard", description=__doc__)
    add_arguments(parser)
    logging.basicConfig(level=logging.INFO)
    return run_from_args(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
