#!/usr/bin/env python
"""Play a simulated time-resolved PDF experiment through a Bluesky RunEngine.

The RunEngine counts a simulated ophyd PDF detector (``motex_stream.stream.sim.simulate``); every
document goes, msgpack-encoded, to the 0MQ proxy's IN address under prefix ``raw``, exactly as
a beamline's RunEngine would publish it, and optionally into a Tiled server (TiledWriter,
one event per write so live subscribers see each frame).

Frames (``--series``):

* ``two-motif`` (default when ``motex_stream.stream.sim.series`` is available): the A→B mixing
  series; its starting model is written to ``--workdir`` and a matching ``[[models]]`` entry
  is printed, because frames of this series only make sense against that model.
* ``danmax``: the bundled DanMAX α-Keggin G(r), interpolated onto r = 0.5..15 Å (step 0.01)
  with small seeded Gaussian noise per frame; matches ``configs/keggin-zmq.toml``.

Examples::

    python services/simulate_beamline.py --series danmax --frames 30 --delay 2
    MOTEX_TILED_API_KEY=... python services/simulate_beamline.py --tiled-uri http://127.0.0.1:8000/api
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable
from importlib.resources import files
from pathlib import Path

import numpy as np

from motex_stream.stream.sim.simulate import make_pdf_detector, make_run_engine, run_series
from motex_stream.stream.sources.zmq_source import make_publisher

log = logging.getLogger("simulate_beamline")

R_GRID = np.round(np.arange(50, 1501) * 0.01, 10)  # 0.5 .. 15.0 Å, step 0.01
HERE = Path(__file__).resolve().parent

try:
    from motex_stream.stream.sim.series import two_motif_series
except ImportError:  # an older checkout without the mixing series
    two_motif_series = None


def danmax_frames(noise: float, seed: int) -> Callable[[int], np.ndarray]:
    """Frame i: the bundled DanMAX G(r) on R_GRID plus seeded noise (noise x max|G|)."""
    from motex_stream.fitting.grfile import read_gr

    data = read_gr(Path(str(files("motex_stream").joinpath("data/keggin/DanMAX_AlphaKeggin.gr"))))
    g0 = np.interp(R_GRID, np.asarray(data.r), np.asarray(data.g))
    scale = noise * float(np.abs(g0).max())

    def frame(i: int) -> np.ndarray:
        rng = np.random.default_rng((seed, i))
        return g0 + scale * rng.standard_normal(g0.size)

    return frame


def two_motif_frames(
    workdir: Path, n_frames: int, noise: float, seed: int
) -> Callable[[int], np.ndarray]:
    """Frame i of the A→B mixing series; writes its starting model into ``workdir``."""
    if two_motif_series is None:
        raise SystemExit("motex_stream.stream.sim.series is not available: use --series danmax")
    series = two_motif_series(workdir, n_frames=n_frames, noise=noise, seed=seed, r=R_GRID)
    print(
        "two-motif series: analyse it with this model (add it to the config, then restart):\n\n"
        "[[models]]\n"
        'name = "two-motif"\n'
        f'starting_model = "{series.model_path}"\n'
        'permute = ["W"]\n'
        "catalogue_size = 2000\n"
        "refit = 2000\n"
        "rounds = 10\n\n"
        "and run this script with --model two-motif so the start document selects it.\n",
        file=sys.stderr,
    )
    return series.frame_source()


def build_parser() -> argparse.ArgumentParser:
    default_series = "two-motif" if two_motif_series is not None else "danmax"
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--proxy",
        default="tcp://127.0.0.1:5567",
        help="0MQ proxy IN address to publish to ('' = do not publish; default %(default)s)",
    )
    p.add_argument("--prefix", default="raw", help="0MQ prefix of the documents (default raw)")
    p.add_argument("--frames", type=int, default=20, help="frames per run (default 20)")
    p.add_argument("--delay", type=float, default=1.0, help="seconds between frames (default 1)")
    p.add_argument("--runs", type=int, default=1, help="runs to play back to back (default 1)")
    p.add_argument(
        "--tiled-uri",
        default=None,
        help="also write the runs to this Tiled server (key: $MOTEX_TILED_API_KEY or "
        "--api-key-file)",
    )
    p.add_argument("--api-key-file", type=Path, default=None, help="file holding the Tiled key")
    p.add_argument(
        "--series",
        choices=["two-motif", "danmax"],
        default=default_series,
        help="frames to play (default %(default)s)",
    )
    p.add_argument("--noise", type=float, default=0.005, help="noise, fraction of max|G|")
    p.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    p.add_argument(
        "--model",
        default=None,
        help="motex_model in the start document (which configured model analyses the run)",
    )
    p.add_argument(
        "--workdir",
        type=Path,
        default=HERE / "run" / "two-motif",
        help="where the two-motif starting model is written (default %(default)s)",
    )
    p.add_argument(
        "--connect-wait",
        type=float,
        default=1.0,
        help="seconds to wait after connecting before the first document (0MQ slow joiner)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    for noisy in ("httpx", "bluesky", "ophyd", "numba"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if args.frames < 1 or args.runs < 1:
        raise SystemExit("--frames and --runs must be at least 1")
    if not args.proxy and not args.tiled_uri:
        raise SystemExit("nothing to publish to: give --proxy and/or --tiled-uri")

    if args.series == "two-motif":
        frame_source = two_motif_frames(args.workdir, args.frames, args.noise, args.seed)
    else:
        frame_source = danmax_frames(args.noise, args.seed)
    RE = make_run_engine({"beamline": "simulated", "sample": "alpha-Keggin"})

    if args.proxy:
        RE.subscribe(make_publisher(args.proxy, prefix=args.prefix.encode()))
        log.info("publishing to %s (prefix %s)", args.proxy, args.prefix)
    if args.tiled_uri:
        from motex_stream.stream.sources.tiled_source import attach_tiled_writer, connect

        attach_tiled_writer(RE, connect(args.tiled_uri, key_file=args.api_key_file))
        log.info("writing runs to %s", args.tiled_uri)
    # 0MQ PUB sockets drop what they send before the connection is up (the slow joiner).
    time.sleep(max(args.connect_wait, 0.0))

    md = {"simulated_series": args.series, "noise": args.noise, "seed": args.seed}
    if args.model:
        md["motex_model"] = args.model
    for run in range(args.runs):
        # A fresh detector per run restarts the series at frame 0.
        det = make_pdf_detector(frame_source, R_GRID)
        uid = run_series(RE, det, args.frames, delay=args.delay, md={**md, "run_index": run})
        print(uid, flush=True)
    # Give the publisher a moment to flush the stop document before the process exits.
    time.sleep(0.5)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
