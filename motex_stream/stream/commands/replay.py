"""`motex-stream replay`: analyse an archived run (Tiled) or a `.gr` series like a live one.

Replays go through the same service as live data (policy ``all``: nothing is skipped), so a
replay reproduces what the live service published for the same frames.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from motex_stream.analysis.settings import LiveModelSettings
from motex_stream.cli_flags import add_settings_flags, given_settings, settings_from_args

log = logging.getLogger(__name__)


#: Settings replay does not offer: the live path has no second pass (the rotating ensemble
#: of ``ci_models`` surrogates on ``ci_rows`` fits is how live intervals get their spread).
REPLAY_EXCLUDES = ("adaptive_motifs",)


def add_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--frames", help="glob of .gr files, e.g. 'DIR/*.gr' (natural name order)")
    src.add_argument("--tiled", help="Tiled server URI (API key: MOTEX_TILED_API_KEY)")
    p.add_argument("--run", help="run uid to replay from --tiled")
    p.add_argument("--config", type=Path, help="TOML config: its first model is used")
    p.add_argument("--state-dir", type=Path, help="keep/reuse the prepared model here")
    p.add_argument("--out", required=True, type=Path, help="results as JSON Lines")
    p.add_argument("--publish", help="also publish on this ZMQ address, e.g. tcp://127.0.0.1:5578")
    p.add_argument(
        "--archive",
        metavar="TILED_URI",
        help="also write the derived Bluesky run to this Tiled server "
        "(API key: MOTEX_TILED_API_KEY); a failed write makes the replay exit 1",
    )
    p.add_argument("--speed", type=float, default=None, help="pace: x times original speed")
    p.add_argument(
        "--dask",
        metavar="ADDRESS",
        help="run the catalogue fits on this Dask scheduler, e.g. tcp://10.0.0.5:8786 "
        "(needs the distributed extra; same results)",
    )
    # the model settings, generated from the settings model (one definition of each default);
    # --name defaults to the starting model's file stem, so it is optional here
    # the live intervals come from the SHAP means' sampling error alone (no ensemble), so the
    # ensemble settings are not offered here
    add_settings_flags(p, LiveModelSettings, exclude=REPLAY_EXCLUDES)


def replay_settings(args: argparse.Namespace) -> LiveModelSettings:
    """The model of a replay: from ``--config`` or from the flags, never a mix of both.

    A mix would leave it unclear which value wins, so flags next to ``--config`` are refused
    rather than silently ignored.
    """
    given = given_settings(args, LiveModelSettings)
    if args.config is not None:
        from motex_stream.stream.config import load_config

        if given:
            flags = ", ".join("--" + k.replace("_", "-") for k in sorted(given))
            raise ValueError(f"{flags}: not allowed with --config (set them in the config file)")
        return load_config(args.config).models[0]
    if "starting_model" not in given:
        raise ValueError("give --config FILE or --model START.xyz (with the analysis flags)")
    name = given.get("name") or Path(given["starting_model"]).stem
    settings = settings_from_args(args, LiveModelSettings, name=name)
    assert isinstance(settings, LiveModelSettings)
    return settings


def check_arguments(args: argparse.Namespace) -> None:
    """Refuse what cannot work before preparing anything, one line each (ValueError)."""
    from motex_stream.stream.config.addresses import http_uri, zmq_endpoint
    from motex_stream.stream.sources import FileSeriesSource

    if args.speed is not None and not args.speed > 0:
        raise ValueError(f"--speed must be a positive factor, got {args.speed}")
    for flag, value, check in (
        ("--tiled", args.tiled, http_uri),
        ("--archive", args.archive, http_uri),
        ("--publish", args.publish, lambda v: zmq_endpoint(v, bind=True)),
    ):
        if value is not None:
            try:
                check(value)
            except ValueError as exc:
                raise ValueError(f"{flag}: {exc}") from None
    if args.tiled:
        if not args.run:
            raise ValueError("--tiled needs --run UID")
        check_tiled_run(args.tiled, args.run)
    elif not FileSeriesSource(args.frames).paths():
        raise ValueError(f"--frames {args.frames!r}: no file matches")


def check_tiled_run(uri: str, run: str) -> None:
    """The server answers (within tiled's bounded retries) and holds ``run``."""
    from concurrent.futures import ThreadPoolExecutor

    from motex_stream.stream.config import read_api_key

    def look() -> bool:
        from tiled.client import from_uri

        return run in from_uri(uri, api_key=read_api_key())

    try:
        # off the main thread: tiled then keeps its "Retrying…" spinner off the terminal
        with ThreadPoolExecutor(1) as pool:
            found = pool.submit(look).result()
    except Exception as exc:  # httpx errors are not OSErrors; any failure here is one line
        text = " ".join(str(exc).split()) or type(exc).__name__
        raise ValueError(f"--tiled {uri}: cannot reach the Tiled server ({text})") from None
    if not found:
        raise ValueError(f"--run {run}: no such run on {uri}")


def run_from_args(args: argparse.Namespace) -> int:
    from motex_stream.stream.commands.runner import LazyAnalyzer, format_summary, use_dask
    from motex_stream.stream.publishers.jsonl import JsonlSink, published_seqs
    from motex_stream.stream.service import StreamService
    from motex_stream.stream.sources import FileSeriesSource, TiledReplaySource

    settings = replay_settings(args)
    check_arguments(args)
    if args.tiled:
        source = TiledReplaySource(args.tiled, args.run, pace=args.speed)
    else:
        interval = None if not args.speed else 1.0 / args.speed
        source = FileSeriesSource(args.frames, interval=interval)
    use_dask(args.dask)
    analyzer = LazyAnalyzer(settings, args.state_dir)
    sinks: list = [JsonlSink(args.out)]  # cuts a line a killed replay left half-written
    # resume: frames already in --out (of this model) are not analysed or appended again
    done = published_seqs(args.out, settings.name)
    if done:
        log.info("resuming after %s", ", ".join(f"{s} seq {n}" for s, n in done.items()))
    if args.publish:
        from motex_stream.stream.publishers.zmq_pub import ZmqPublisher

        sinks.append(ZmqPublisher(args.publish))
    if args.archive:
        from motex_stream.stream.config import read_api_key
        from motex_stream.stream.publishers.bluesky_run import BlueskyRunSink
        from motex_stream.stream.publishers.tiled_archive import tiled_writer

        sinks.append(BlueskyRunSink([tiled_writer(args.archive, api_key=read_api_key())]))
    # a finite source that fails is not restarted forever: the replay ends and says so
    service = StreamService(
        {settings.name: analyzer},
        [source],
        sinks,
        policy="all",
        resume_after=done,
        restart_sources=False,
    )
    try:
        summary = service.run()
    finally:
        # the progress since the last periodic save: a rerun (or a serve on this state
        # folder) continues from here; a save that fails is logged, never raised
        analyzer.save_state()
    print(f"replayed {source.name}: {format_summary(summary)}; results in {args.out}")
    if summary.get("duplicates", 0):
        print(f"{summary['duplicates']} frame(s) were already in {args.out} and were kept")
    if not summary.get("processed", 0) and not summary.get("duplicates", 0):
        print(f"motex-stream: error: no frame of {source.name} was analysed", file=sys.stderr)
        return 1
    unfinished = [uid for uid, run in summary.get("runs", {}).items() if not run["stopped"]]
    if unfinished:
        print(
            f"motex-stream: error: {source.name} ended before run {unfinished[0]} did (see log)",
            file=sys.stderr,
        )
        return 1
    if summary.get("sink_errors", 0):
        print(
            f"motex-stream: error: {summary['sink_errors']} output write(s) failed (see log)",
            file=sys.stderr,
        )
        return 1
    return 0
