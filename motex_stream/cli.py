"""The ``motex-stream`` command line: analyze, fit, serve, replay, watch, demo.

Each sub-command lives next to the code it drives; this module only builds the parser and
dispatches, importing heavy modules lazily so ``--help`` and ``--version`` stay instant.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from motex_stream import __version__

log = logging.getLogger("motex_stream")


def process_age_s() -> float | None:
    """Seconds since this process was created (Linux /proc), or None where unknown.

    Interpreter start-up and imports happen before any of our code runs, and the user waits
    for them too: the wall time ``analyze`` reports is counted from process creation.
    """
    try:
        with open("/proc/self/stat") as fh:
            stat = fh.read()
        with open("/proc/uptime") as fh:
            uptime = float(fh.read().split()[0])
        # fields after the command name (which may contain spaces) start at field 3
        start_ticks = int(stat.rsplit(")", 1)[1].split()[19])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return None


#: perf_counter() at this module's import, the earliest clock we own if /proc is unavailable
_IMPORTED = time.perf_counter()


#: Settings ``fit`` cannot honour: it fits given masks, so nothing is catalogued or trained.
FIT_EXCLUDES = (
    "generator",
    "catalogue_size",
    "lower",
    "upper",
    "search_calls",
    "cv_folds",
    "search_time_s",
    "seed",
    "ci_models",
    "ci_rows",
    "ci_level",
    "adaptive_motifs",
    "explain_rows",
    "train_rows",
    "confirm_contexts",
)


def skip_numba_extensions() -> None:
    """Keep numba from importing the numba extensions other installed packages register.

    Why: at its first compiled-function load numba imports every package that registers a
    ``numba_extensions`` entry point, here awkward (through tiled's ragged) and sparse: ~0.5-
    0.7 s of imports, a fifth of ``analyze``'s start-up, for types no kernel of ours takes
    (they take numpy arrays only; no module of motex_stream imports awkward or sparse). Only
    the batch commands (``analyze``, ``fit``) call this: their process runs our kernels and
    nothing else. numba has no public switch for it: its ``entrypoints`` module loads the
    extensions once and then marks itself done, and this marks it done first; where that
    attribute is missing (another numba), nothing changes.
    """
    try:
        from numba.core import entrypoints
    except ImportError:  # pragma: no cover - numba is a dependency
        return
    if hasattr(entrypoints, "_already_initialized"):
        entrypoints._already_initialized = True


def check_out_folder(out: Path) -> None:
    """An output folder must be a folder (or not exist yet): refuse before any work starts."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a folder")


def cmd_analyze(args: argparse.Namespace) -> int:
    """Analyse, write the numerical files, print the answer, then draw the plots.

    The plots (matplotlib and shap imports, the beeswarm) change no number, so they are
    drawn after the answer is on screen and report.json is refreshed with their names. The
    printed ``total`` is the wall time the user waited for the answer: from ``args.started``
    (process creation for the command, else the ``main`` call), not the pipeline's own clock.
    """
    from motex_stream.analysis.outputs import (
        draw_plots,
        explain_summary,
        refresh_report,
        site_lines,
        write_outputs,
    )
    from motex_stream.analysis.pipeline import run_analysis
    from motex_stream.analysis.settings import ModelSettings
    from motex_stream.cli_flags import settings_from_args

    started = getattr(args, "started", None)
    started = time.perf_counter() if started is None else started
    settings = settings_from_args(args, ModelSettings)
    check_out_folder(args.out)
    t_run = time.perf_counter()
    result = run_analysis(args.data, settings, progress=True, dask=args.dask)
    t_out = time.perf_counter()
    result.timings["startup"] = t_run - started  # interpreter, imports, parsing
    paths = write_outputs(args.out, result, plots=False)
    t_answer = time.perf_counter()
    result.timings["outputs"] = t_answer - t_out
    result.timings["wall_to_answer"] = t_answer - started
    c = result.contributions
    order = c.ranking()
    k = int(result.masks[result.best].sum())
    top = ", ".join(
        f"{result.model.symbols[result.model.permutable[i]]}{result.atom_numbers()[i]}"
        for i in order[:k]
    )
    print(f"best motif: Rwp {result.fits.rwp[result.best]:.4f} with {k} atoms")
    print(f"{k} most negative atoms: {top}")
    if result.intervals is not None:
        n = result.intervals.counts()
        print(
            f"{result.intervals.level:.0%} intervals: {n['keep']} keep, {n['remove']} remove, "
            f"{n['uncertain']} uncertain"
        )
    for line in site_lines(result):  # symmetry-equivalent atoms: "these 12 are one site"
        print(line)
    e = explain_summary(result)
    what = (
        f"a seeded subsample of {e['explained']:,} of {e['motifs']:,} motifs"
        if e["subsampled"]
        else f"all {e['motifs']:,} motifs"
    )
    se = e["standard_error"]
    print(
        f"SHAP explained {what}: standard error of the contribution values "
        f"median {se['median']:.2g}, max {se['max']:.2g}"
    )
    total = time.perf_counter() - started
    print(
        f"test MAE {result.test_mae:.4f}, total {total:.1f} s wall (start-up "
        f"{result.timings['startup']:.1f} s, analysis {result.timings['total']:.1f} s, "
        f"files {result.timings['outputs']:.1f} s); wrote {len(paths)} files to {args.out}",
        flush=True,
    )
    plots: dict[str, Path] = {}
    errors: dict[str, str] = {}
    if not args.no_plots:
        t = time.perf_counter()
        plots, errors = draw_plots(args.out, result)
        result.timings["plots"] = time.perf_counter() - t
    result.timings["wall"] = time.perf_counter() - started
    refresh_report(args.out, result, plots, errors)
    if not args.no_plots:
        print(
            f"drew {len(plots)} plots in {result.timings['plots']:.1f} s "
            f"(after the answer; wall {result.timings['wall']:.1f} s)"
        )
    return 0


def cmd_fit(args: argparse.Namespace) -> int:
    from motex_stream.analysis.fit_command import run_fit_command

    return run_fit_command(args)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole command line; with ``command`` given, only that streaming command's module is
    imported for its arguments (the others keep their one-line help). Why: each streaming
    module pulls in bluesky, tiled or zmq, 0.6-0.7 s of imports that ``fit`` and ``analyze``
    would otherwise pay on every run."""
    parser = argparse.ArgumentParser(
        prog="motex-stream",
        description="ML-MotEx motif extraction from PDF data, offline and live at the beamline.",
    )
    parser.add_argument("--version", action="version", version=f"motex-stream {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    from motex_stream.analysis.settings import ModelSettings
    from motex_stream.cli_flags import add_settings_flags

    p = sub.add_parser("analyze", help="offline ML-MotEx analysis of one PDF")
    p.add_argument("data", type=Path, help="PDF data (.gr: xPDFsuite/PDFgetX3, or 2-3 columns)")
    add_settings_flags(p, ModelSettings, required=["starting_model"])
    p.add_argument("--out", type=Path, default=Path("motex-out"), help="output folder")
    p.add_argument("--no-plots", action="store_true", help="skip PNG plots")
    p.add_argument(
        "--dask",
        metavar="ADDRESS",
        help="fit the catalogue on this Dask scheduler, e.g. tcp://10.0.0.5:8786 "
        "(needs the distributed extra; same results as a local run)",
    )
    p.set_defaults(func=cmd_analyze)

    p = sub.add_parser("fit", help="fit given motif masks to a PDF")
    p.add_argument("data", type=Path)
    add_settings_flags(p, ModelSettings, exclude=FIT_EXCLUDES, required=["starting_model"])
    p.add_argument(
        "--masks",
        required=True,
        type=Path,
        help="CSV with columns w1..wN (1 = kept), optionally id (carried to the output); "
        "or .npy (M×N 0/1), or .npz with masks (or masks_packed + n_permutable, as "
        "analyze's fits.npz) and optionally id",
    )
    p.add_argument(
        "--out",
        required=True,
        type=Path,
        help="output CSV: id,n_kept,rwp,scale,zoom1..3,w1..wN (id: the input's, else its row)",
    )
    p.add_argument(
        "--calculator",
        choices=["realspace", "debye"],
        default="realspace",
        help="realspace: batched engine (DiffPy PDFCalculator); debye: DebyePDFCalculator "
        "semantics, fitted one motif at a time with scipy (slow, ~3 fits/s)",
    )
    p.set_defaults(func=cmd_fit)

    for name, module, help_text in (
        ("serve", "motex_stream.stream.commands.serve", "run the streaming service from a config"),
        ("replay", "motex_stream.stream.commands.replay", "replay an archived run or .gr series"),
        ("watch", "motex_stream.stream.commands.watch", "live terminal view of a published stream"),
        ("dashboard", "motex_stream.stream.dashboard", "live web page of a published stream"),
        (
            "demo",
            "motex_stream.stream.commands.demo",
            "simulated beamline → service → watch, end to end",
        ),
        ("agent", "motex_stream.stream.loop.cli", "closed loop: suggest plans to a Queue Server"),
    ):
        p = sub.add_parser(name, help=help_text)
        p.set_defaults(module=module)
        if command is None or command == name:
            _add_module_arguments(p, module)
    return parser


def command_of(argv: Sequence[str]) -> str | None:
    """The sub-command ``argv`` names: its first word that is not an option (the top-level
    options, ``-v`` and ``--version``, take no value)."""
    return next((a for a in argv if not a.startswith("-")), None)


def _add_module_arguments(p: argparse.ArgumentParser, module: str) -> None:
    import importlib

    try:
        mod = importlib.import_module(module)
    except ImportError as exc:  # a broken optional module must not break the whole CLI
        p.set_defaults(import_error=str(exc))
        return
    mod.add_arguments(p)


def configure_logging(verbose: int) -> None:
    """Our INFO lines by default; other libraries' only from ``-v`` (``-vv``: DEBUG).

    Third-party INFO (alembic migrations, the Tiled server's access log, RunEngine state
    changes, numexpr) would otherwise drown what the operator needs to read.
    """
    logging.basicConfig(
        level=logging.DEBUG if verbose >= 2 else logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("motex_stream").setLevel(logging.DEBUG if verbose >= 2 else logging.INFO)
    for noisy in ("numba", "matplotlib", "PIL", "httpx", "shap"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


#: commands whose process ends as soon as their work is done (see :func:`quick_exit`)
QUICK_EXIT = ("analyze", "fit")


def quick_exit(rc: int) -> None:
    """End the process now, skipping interpreter teardown.

    Everything is written, flushed and closed by then; what remains is the interpreter
    unloading xgboost, numba, scipy and matplotlib, which took 0.8 s after ``analyze``'s
    last line on a loaded 2-core machine: time the user waits for nothing, and which no
    printed total could include. Only for the installed command (a caller of ``main`` keeps
    its process), and not with ``--dask`` (its client closes itself at exit).
    """
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(rc)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one sub-command. As the installed command (``argv`` None) times count from process
    creation; called in-process with ``argv``, from this call."""
    if argv is None:
        age = process_age_s()
        started = _IMPORTED if age is None else time.perf_counter() - age
    else:
        started = time.perf_counter()
    words = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(command_of(words) or "")
    args = parser.parse_args(words)
    args.started = started
    # tiled's client retries a failed request for up to 45 s by default; a writer to a dead
    # server would stall the analysis that long per document. Bounded unless set explicitly.
    os.environ.setdefault("TILED_RETRY_ATTEMPTS", "3")
    os.environ.setdefault("TILED_RETRY_TIMEOUT", "10")
    configure_logging(args.verbose)
    if args.command is None:
        parser.print_help()
        return 0
    if getattr(args, "import_error", None):
        print(f"motex-stream {args.command}: unavailable: {args.import_error}", file=sys.stderr)
        return 2
    try:
        if hasattr(args, "func"):
            if args.command in QUICK_EXIT:
                skip_numba_extensions()
            rc = int(args.func(args) or 0)
            if argv is None and args.command in QUICK_EXIT and not getattr(args, "dask", None):
                quick_exit(rc)
            return rc
        import importlib

        return int(importlib.import_module(args.module).run_from_args(args) or 0)
    except (ValueError, OSError, KeyError) as exc:
        print(f"motex-stream {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # anything else is still one line; -v shows the traceback
        if args.verbose:
            raise
        text = " ".join(str(exc).split())[:500]
        print(
            f"motex-stream {args.command}: error: {type(exc).__name__}: {text} "
            "(run with -v for details)",
            file=sys.stderr,
        )
        return 1
