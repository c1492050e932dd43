"""The ``motex-stream`` command line: analyze, fit, serve, replay, watch, demo.

Each sub-command lives next to the code it drives; this module only builds the parser and
dispatches, importing heavy modules lazily so ``--help`` and ``--version`` stay instant.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from motex_stream import __version__

if TYPE_CHECKING:  # the pipeline imports numba/xgboost: keep --help fast
    pass

log = logging.getLogger("motex_stream")


def add_analysis_flags(p: argparse.ArgumentParser, *, catalogue_default: int = 10_000) -> None:
    """The analysis settings shared by analyze, fit, replay (defaults: the paper's run)."""
    p.add_argument("--model", required=True, type=Path, help="starting model (XYZ, CIF, ...)")
    p.add_argument("--permute", nargs="+", default=["W"], help="permutable element(s) (default: W)")
    p.add_argument("--threshold", type=float, default=2.5, help="bond threshold in Å (strict <)")
    p.add_argument("--rmin", type=float, default=1.6, help="fit range start, Å (default 1.6)")
    p.add_argument("--rmax", type=float, default=10.0, help="fit range end, Å (default 10)")
    p.add_argument("--qmin", type=float, default=None, help="Qmin, 1/Å (default: data header)")
    p.add_argument("--qmax", type=float, default=None, help="Qmax, 1/Å (default: data header)")
    p.add_argument("--qdamp", type=float, default=0.05, help="instrument Qdamp (default 0.05)")
    p.add_argument("--qbroad", type=float, default=0.01, help="instrument Qbroad (default 0.01)")
    p.add_argument("--biso", type=float, default=0.4, help="Biso of every atom, Å² (default 0.4)")
    p.add_argument("--delta2", type=float, default=0.0, help="correlated motion δ2 (default 0)")
    p.add_argument(
        "--zoom",
        choices=["isotropic", "anisotropic"],
        default="isotropic",
        help="isotropic: one zoom (fast); anisotropic: three zooms like the reference fit",
    )
    p.add_argument(
        "--catalogue", type=int, default=catalogue_default, help="number of motifs to fit"
    )
    p.add_argument("--generator", choices=["random", "cookie"], default="random")
    p.add_argument("--seed", type=int, default=0, help="seed of catalogue and training")


def settings_from_args(args: argparse.Namespace):
    from motex_stream.analysis.pipeline import AnalysisSettings

    return AnalysisSettings(
        permute=tuple(args.permute),
        threshold=args.threshold,
        rmin=args.rmin,
        rmax=args.rmax,
        qmin=args.qmin,
        qmax=args.qmax,
        qdamp=args.qdamp,
        qbroad=args.qbroad,
        biso=args.biso,
        delta2=args.delta2,
        catalogue=args.catalogue,
        generator=args.generator,
        seed=args.seed,
        zoom=args.zoom,
    )


def cmd_analyze(args: argparse.Namespace) -> int:
    from motex_stream.analysis.outputs import write_outputs
    from motex_stream.analysis.pipeline import run_analysis

    result = run_analysis(args.data, args.model, settings_from_args(args), progress=True)
    paths = write_outputs(args.out, result, plots=not args.no_plots)
    c = result.contributions
    order = c.ranking()
    k = int(result.masks[result.best].sum())
    top = ", ".join(
        f"{result.model.symbols[result.model.permutable[i]]}{result.atom_numbers()[i]}"
        for i in order[:k]
    )
    print(f"best motif: Rwp {result.fits.rwp[result.best]:.4f} with {k} atoms")
    print(f"{k} most negative atoms: {top}")
    print(
        f"test MAE {result.test_mae:.4f}, total {result.timings['total']:.1f} s; "
        f"wrote {len(paths)} files to {args.out}"
    )
    return 0


def cmd_fit(args: argparse.Namespace) -> int:
    from motex_stream.analysis.fit_command import run_fit_command

    return run_fit_command(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="motex-stream",
        description="ML-MotEx motif extraction from PDF data, offline and live at the beamline.",
    )
    parser.add_argument("--version", action="version", version=f"motex-stream {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("analyze", help="offline ML-MotEx analysis of one PDF")
    p.add_argument("data", type=Path, help="PDF data (.gr: xPDFsuite/PDFgetX3, or 2-3 columns)")
    add_analysis_flags(p)
    p.add_argument("--out", type=Path, default=Path("motex-out"), help="output folder")
    p.add_argument("--no-plots", action="store_true", help="skip PNG plots")
    p.set_defaults(func=cmd_analyze)

    p = sub.add_parser("fit", help="fit given motif masks to a PDF")
    p.add_argument("data", type=Path)
    add_analysis_flags(p)
    p.add_argument("--masks", required=True, type=Path, help="CSV with columns w1..wN (1 = kept)")
    p.add_argument("--out", required=True, type=Path, help="output CSV: rwp,scale,zoom1..3")
    p.add_argument(
        "--calculator",
        choices=["realspace", "debye"],
        default="realspace",
        help="realspace: batched engine (DiffPy PDFCalculator); debye: DebyePDFCalculator "
        "semantics, fitted one motif at a time with scipy (slow, ~3 fits/s)",
    )
    p.set_defaults(func=cmd_fit)

    for name, module, help_text in (
        ("serve", "motex_stream.stream.cli_serve", "run the streaming service from a config"),
        ("replay", "motex_stream.stream.cli_replay", "replay an archived run or .gr series"),
        ("watch", "motex_stream.stream.watch", "live terminal view of a published stream"),
        ("demo", "motex_stream.stream.demo", "simulated beamline → service → watch, end to end"),
    ):
        p = sub.add_parser(name, help=help_text)
        p.set_defaults(module=module)
        _add_module_arguments(p, module)
    return parser


def _add_module_arguments(p: argparse.ArgumentParser, module: str) -> None:
    import importlib

    try:
        mod = importlib.import_module(module)
    except ImportError as exc:  # a broken optional module must not break the whole CLI
        p.set_defaults(import_error=str(exc))
        return
    mod.add_arguments(p)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING - 10 * min(args.verbose, 2) if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("numba", "matplotlib", "PIL", "httpx", "shap"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if args.command is None:
        parser.print_help()
        return 0
    if getattr(args, "import_error", None):
        print(f"motex-stream {args.command}: unavailable: {args.import_error}", file=sys.stderr)
        return 2
    try:
        if hasattr(args, "func"):
            return int(args.func(args) or 0)
        import importlib

        return int(importlib.import_module(args.module).run_from_args(args) or 0)
    except (ValueError, FileNotFoundError, KeyError) as exc:
        print(f"motex-stream {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
