"""`motex-stream replay`: analyse an archived run (Tiled) or a `.gr` series like a live one.

Replays go through the same service as live data (policy ``all``: nothing is skipped), so a
replay reproduces what the live service published for the same frames.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from motex_stream.analysis.settings import LiveModelSettings
from motex_stream.cli_flags import add_settings_flags, given_settings, settings_from_args
from motex_stream.stream.config import Config, FilesSourceConfig, TiledReplaySourceConfig
from motex_stream.stream.config.sources import UNPACED

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
    """The one rule of a flag that no config key holds: ``--speed`` is a positive factor
    (the config's ``speed`` 0 means unpaced, which the flag says by being left out)."""
    if args.speed is not None and not args.speed > 0:
        raise ValueError(f"--speed must be a positive factor, got {args.speed}")


#: Which flag gave each config key (table, key): a bad value is reported in the words the
#: user typed. Listed in the order problems are reported when several flags are bad (the
#: addresses first, then a missing --run), one line: the first.
_FLAG_OF = {
    ("sources", "uri"): "--tiled",
    ("sinks", "tiled_uri"): "--archive",
    ("sinks", "bind"): "--publish",
    ("sources", "run"): "--run",
    ("sources", "glob"): "--frames",
    ("sinks", "path"): "--out",
    ("service", "state_dir"): "--state-dir",
    ("service", "dask"): "--dask",
}
_FLAG_ORDER = list(_FLAG_OF.values())


def replay_config(args: argparse.Namespace, settings: LiveModelSettings) -> Config:
    """The replay as the service config ``serve`` would read: one model, one finite source,
    the ``--out`` file and the optional ``--publish``/``--archive`` sinks.

    Validated once, by the config models (addresses, URIs); a problem is one line naming the
    flag (``--tiled: 'x' is not an http(s):// URI``). What replay does differently from a
    served config is written here, as config values: no ``--state-dir`` keeps no state (and
    no run journal), an unpaced replay has speed ``UNPACED``, a failed source is not
    restarted (the replay ends and says so), no metrics server. Sources and sinks carry the
    names replay has always logged (``files:<glob>``, ``tiled-replay:<uid>``, the sinks'
    class names).
    """
    source: dict[str, Any]
    if args.tiled:
        source = {
            "type": "tiled-replay",
            "name": f"tiled-replay:{args.run}",
            "uri": args.tiled,
            "run": args.run or "",
            "speed": args.speed or UNPACED,
        }
    else:
        interval = None if not args.speed else 1.0 / args.speed
        name = f"files:{args.frames}"
        source = {"type": "files", "name": name, "glob": args.frames, "interval": interval}
    sinks: list[dict[str, Any]] = [{"type": "jsonl", "name": "JsonlSink", "path": args.out}]
    if args.publish:
        sinks.append({"type": "zmq", "name": "ZmqPublisher", "bind": args.publish})
    if args.archive:
        sinks.append({"type": "bluesky", "name": "BlueskyRunSink", "tiled_uri": args.archive})
    service = {
        "state_dir": args.state_dir,
        "metrics_port": 0,
        "dask": args.dask or None,
        "restart_sources": False,
    }
    raw = {"service": service, "models": [settings], "sources": [source], "sinks": sinks}
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        raise ValueError(_first_flag_error(exc)) from None


def _first_flag_error(exc: ValidationError) -> str:
    """The first problem of a replay's config (in flag order), in the flag's words."""
    found: list[tuple[int, str]] = []
    for error in exc.errors():
        loc = [part for part in error["loc"] if isinstance(part, str)]
        flag = _FLAG_OF.get((loc[0], loc[-1])) if loc else None
        if flag == "--run":
            found.append((_FLAG_ORDER.index(flag), "--tiled needs --run UID"))
            continue
        cause = (error.get("ctx") or {}).get("error")
        text = str(cause) if cause is not None else error["msg"]
        rank = _FLAG_ORDER.index(flag) if flag else len(_FLAG_ORDER)
        found.append((rank, f"{flag or '.'.join(loc)}: {text}"))
    return min(found)[1]


def check_inputs(config: Config) -> None:
    """What the replay reads is there: the Tiled server answers and holds the run, or the
    glob matches files (ValueError, one line, before anything is prepared)."""
    from motex_stream.stream.sources import FileSeriesSource

    source = config.sources[0]
    if isinstance(source, TiledReplaySourceConfig):
        check_tiled_run(source.uri, source.run)
    elif isinstance(source, FilesSourceConfig) and not FileSeriesSource(source.glob).paths():
        raise ValueError(f"--frames {source.glob!r}: no file matches")


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
    settings = replay_settings(args)
    check_arguments(args)
    config = replay_config(args, settings)
    check_inputs(config)
    # the service and its science stack (xgboost, scikit-learn: seconds of imports) only
    # once the arguments are known to be usable: a misuse is refused at once
    from motex_stream.stream.commands.runner import build_service, format_summary, save_states
    from motex_stream.stream.publishers.jsonl import published_seqs

    def resume_after() -> dict[str, int]:
        # frames already in --out (of this model) are not analysed or appended again
        done = published_seqs(args.out, settings.name)
        if done:
            log.info("resuming after %s", ", ".join(f"{s} seq {n}" for s, n in done.items()))
        return done

    service = build_service(config, resume_after=resume_after)
    source = service.sources[0]
    try:
        summary = service.run()
    finally:
        # the progress since the last periodic save: a rerun (or a serve on this state
        # folder) continues from here; a save that fails is logged, never raised
        save_states(service)
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
