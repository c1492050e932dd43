"""`motex-stream replay`: analyse an archived run (Tiled) or a `.gr` series like a live one.

Replays go through the same service as live data (policy ``all``: nothing is skipped), so a
replay reproduces what the live service published for the same frames.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from motex_stream.cli import add_analysis_flags

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--frames", help="glob of .gr files, e.g. 'DIR/*.gr' (natural name order)")
    src.add_argument("--tiled", help="Tiled server URI (API key: MOTEX_TILED_API_KEY)")
    p.add_argument("--run", help="run uid to replay from --tiled")
    p.add_argument("--config", type=Path, help="TOML config: its first model is used")
    p.add_argument("--name", help="model name (ZMQ topic, state folder); default: model file stem")
    p.add_argument("--refit", type=int, default=10_000, help="motifs refitted per frame")
    p.add_argument("--rounds", type=int, default=10, help="boosting rounds added per frame")
    p.add_argument("--reference", type=Path, help=".gr to prepare the model on (else frame 1)")
    p.add_argument("--state-dir", type=Path, help="keep/reuse the prepared model here")
    p.add_argument("--out", required=True, type=Path, help="results as JSON Lines")
    p.add_argument("--publish", help="also publish on this ZMQ address, e.g. tcp://127.0.0.1:5578")
    p.add_argument("--speed", type=float, default=None, help="pace: x times original speed")
    # the analysis flags, optional here because --config can supply the model instead
    flags = argparse.ArgumentParser(add_help=False)
    add_analysis_flags(flags)
    for action in flags._actions:
        if action.dest == "model":
            action.required = False
        p._add_action(action)


def run_from_args(args: argparse.Namespace) -> int:
    from motex_stream.stream.analyzer import LiveModelSettings
    from motex_stream.stream.publishers.jsonl import JsonlSink
    from motex_stream.stream.runner import LazyAnalyzer, format_summary
    from motex_stream.stream.service import StreamService
    from motex_stream.stream.sources import FileSeriesSource, TiledReplaySource

    if args.config is not None:
        from motex_stream.stream.config import load_config

        cfg = load_config(args.config).models[0]
        settings = LiveModelSettings.from_config(cfg)
        reference = args.reference or cfg.reference
    elif args.model is not None:
        settings = LiveModelSettings(
            name=args.name or Path(args.model).stem,
            starting_model=str(args.model),
            permute=tuple(args.permute),
            threshold=args.threshold,
            rmin=args.rmin,
            rmax=args.rmax,
            qmin=args.qmin if args.qmin is not None else 0.7,
            qmax=args.qmax if args.qmax is not None else 20.0,
            qdamp=args.qdamp,
            qbroad=args.qbroad,
            biso=args.biso,
            zoom=args.zoom,
            catalogue_size=args.catalogue,
            refit=args.refit,
            rounds=args.rounds,
            seed=args.seed,
        )
        reference = args.reference
    else:
        raise ValueError("give --config FILE or --model START.xyz (with the analysis flags)")
    if args.tiled:
        if not args.run:
            raise ValueError("--tiled needs --run UID")
        source = TiledReplaySource(args.tiled, args.run, pace=args.speed)
    else:
        interval = None if not args.speed else 1.0 / args.speed
        source = FileSeriesSource(args.frames, interval=interval)
    analyzer = LazyAnalyzer(settings, reference, args.state_dir)
    sinks: list = [JsonlSink(args.out)]
    if args.publish:
        from motex_stream.stream.publishers.zmq_pub import ZmqPublisher

        sinks.append(ZmqPublisher(args.publish))
    service = StreamService({settings.name: analyzer}, [source], sinks, policy="all")
    summary = service.run()
    print(f"replayed {source.name}: {format_summary(summary)}; results in {args.out}")
    return 0 if summary.get("processed", 0) else 1
