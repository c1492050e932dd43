"""Issue 23: where the time of a warm restart of ``serve`` goes, this tree against a baseline.

A warm restart is ``serve`` started on a state folder that already holds the prepared model
(catalogue, fits, surrogate, ...). Measured for this tree and a baseline tree (``--baseline
DIR``, e.g. ``git worktree add --detach /tmp/base_restart HEAD`` made before a change), both
run by this interpreter, alternately, ``--repeats`` times, each restart on a fresh copy of its
tree's own saved state (prepared once per tree by that tree's code, on the packaged α-Keggin
data with the README's live model: 10,000 motifs, every motif refitted per frame, then
``--frames`` frames analysed and saved, as a running service leaves it):

``in-process`` rows (one child process per restart, timed from ``Popen``):
  start      interpreter start, until the child's first line runs
  imports    ``motex_stream.stream.commands.runner`` and the config loader (what serve imports)
  read       reading and checking the saved state (``live_state.read_generation``)
  engine     the engine's class-kernel tables (``steps.prepare_engine``)
  explain    SHAP of the serving trees at start-up (``ShapCache.update``)
  ready      launch → the model is loaded (what /readyz waits for)
  frame 1    the first frame after the restart (its fit, train, explain, intervals stages)
  answered   launch → the first frame's answer
  frame 2    the next frame (steady state, for comparison)

``serve`` row: the real command (``python -m motex_stream serve --config``, a 0MQ source
nobody publishes to), launch → /readyz answering 200.

Prints the medians, the ratio baseline / this tree, and the load average (on a shared machine
the absolute numbers are inflated, the ratios less so).

Usage: python benchmarks/bench_restart.py --baseline /tmp/base_restart [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "motex_stream" / "data" / "keggin"
NAME = "keggin-109725"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(folder: Path, state: Path, catalogue: int, metrics_port: int) -> Path:
    """The README's live model (services/configs/keggin-zmq.toml, without its sinks)."""
    path = folder / "motex.toml"
    path.write_text(
        f"""
[service]
state_dir = "{state}"
metrics_port = {metrics_port}

[[models]]
name = "{NAME}"
starting_model = "{DATA / "109725.xyz"}"
reference = "{DATA / "DanMAX_AlphaKeggin.gr"}"
permute = ["W"]
catalogue_size = {catalogue}
rounds = 10

[[sources]]
type = "zmq"
name = "proxy"
address = "tcp://127.0.0.1:{free_port()}"
"""
    )
    return path


# ----------------------------------------------------------------------------- children
def frame(seq: int):  # type: ignore[no-untyped-def]
    """Frame ``seq``: the DanMAX G, slightly rescaled (a new frame, no drift)."""
    from motex_stream.fitting.grfile import read_gr
    from motex_stream.stream.frames import Frame

    data = read_gr(DATA / "DanMAX_AlphaKeggin.gr")
    g = data.g * (1 + 0.001 * seq)
    return Frame("bench", seq, float(seq), data.r, g, qmin=data.qmin, qmax=data.qmax)


def child_prepare(config: Path, frames: int) -> None:
    """Prepare the model of ``config`` into its state folder, analyse ``frames``, save."""
    from motex_stream.stream.commands.runner import LazyAnalyzer
    from motex_stream.stream.config import load_config

    cfg = load_config(config)
    lazy = LazyAnalyzer(cfg.models[0], cfg.service.state_dir)
    for seq in range(1, frames + 1):
        lazy.analyze(frame(seq))
    lazy.save_state()


def child_restart(config: Path, frames: int) -> None:
    """One warm restart, timed by phase; prints one JSON line of wall-clock stamps."""
    t_start, c_start = time.time(), time.process_time()
    from motex_stream.stream.commands.runner import LazyAnalyzer
    from motex_stream.stream.config import load_config

    t_imports, c_imports = time.time(), time.process_time()
    from motex_stream.analysis import steps
    from motex_stream.explain.contributions import ShapCache
    from motex_stream.stream.live import live_state

    spent = {"read": 0.0, "engine": 0.0, "explain": 0.0}
    cpu = dict(spent)

    def timed(owner, name: str, phase: str) -> None:  # type: ignore[no-untyped-def]
        inner = getattr(owner, name)

        def wrapper(*args, **kwargs):  # type: ignore[no-untyped-def]
            t, c = time.perf_counter(), time.process_time()
            try:
                return inner(*args, **kwargs)
            finally:
                spent[phase] += time.perf_counter() - t
                cpu[phase] += time.process_time() - c

        setattr(owner, name, wrapper)

    timed(live_state, "read_generation", "read")
    timed(steps, "prepare_engine", "engine")
    timed(ShapCache, "update", "explain")
    cfg = load_config(config)
    lazy = LazyAnalyzer(cfg.models[0], cfg.service.state_dir)
    t_ready, c_ready = time.time(), time.process_time()
    assert lazy.inner is not None and lazy.inner._frames == frames, "not a warm restart"
    during_load, cpu_load = dict(spent), dict(cpu)
    first = lazy.analyze(frame(frames + 1))
    t_answer, c_answer = time.time(), time.process_time()
    second = lazy.analyze(frame(frames + 2))
    t_second, c_second = time.time(), time.process_time()
    print(
        json.dumps(
            {
                "start": t_start,
                "imports": t_imports,
                "ready": t_ready,
                "answer": t_answer,
                "second": t_second,
                "load": during_load,
                "cpu": {
                    "start": c_start,
                    "imports": c_imports,
                    "ready": c_ready,
                    "answer": c_answer,
                    "second": c_second,
                    **{f"load {k}": v for k, v in cpu_load.items()},
                },
                "frame1": first.timing,
                "frame2": second.timing,
                "rebuilt": [first.model_quality.rebuilt, second.model_quality.rebuilt],
            }
        ),
        flush=True,
    )


# ----------------------------------------------------------------------------- parent
def env_for(tree: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(tree), "PYTHONUNBUFFERED": "1"}


def run_child(tree: Path, mode: str, config: Path, frames: int) -> tuple[float, str]:
    t0 = time.time()
    out = subprocess.run(
        [sys.executable, __file__, "--child", mode, str(config), "--frames", str(frames)],
        env=env_for(tree),
        cwd=config.parent,  # not a tree: the tree comes from PYTHONPATH alone
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"{tree} {mode}: {out.stderr[-3000:]}")
    return t0, out.stdout.strip().splitlines()[-1] if out.stdout.strip() else ""


def restart_row(tree: Path, config: Path, frames: int) -> tuple[dict[str, float], dict[str, float]]:
    """(wall seconds, CPU seconds of the child) per phase of one restart."""
    t0, line = run_child(tree, "restart", config, frames)
    s = json.loads(line)
    f1, f2 = s["frame1"], s["frame2"]
    c = s["cpu"]
    cpu = {
        "start": c["start"],
        "imports": c["imports"] - c["start"],
        "read": c["load read"],
        "engine": c["load engine"],
        "explain": c["load explain"],
        "ready": c["ready"],
        "frame 1": c["answer"] - c["ready"],
        "answered": c["answer"],
        "frame 2": c["second"] - c["answer"],
    }
    return {
        "start": s["start"] - t0,
        "imports": s["imports"] - s["start"],
        "read": s["load"]["read"],
        "engine": s["load"]["engine"],
        "explain": s["load"]["explain"],
        "ready": s["ready"] - t0,
        "frame 1": s["answer"] - s["ready"],
        "  fit": f1.get("fit", 0.0),
        "  train": f1.get("train", 0.0),
        "  explain": f1.get("explain", 0.0),
        "  intervals": f1.get("intervals", 0.0),
        "answered": s["answer"] - t0,
        "frame 2": s["second"] - s["answer"],
        "  intervals (2)": f2.get("intervals", 0.0),
        "rebuilt": float(any(s["rebuilt"])),
    }, cpu


def serve_ready(tree: Path, config: Path, port: int, timeout: float = 300.0) -> float:
    """Launch → /readyz 200 of the real ``serve`` command."""
    t0 = time.time()
    proc = subprocess.Popen(
        [sys.executable, "-m", "motex_stream", "serve", "--config", str(config)],
        env=env_for(tree),
        cwd=config.parent,  # `-m` puts the working directory first on the path
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        while time.time() - t0 < timeout:
            if proc.poll() is not None:
                raise RuntimeError(f"serve ended: {proc.stderr.read()[-3000:]}")  # type: ignore[union-attr]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
                    if r.status == 200:
                        return time.time() - t0
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.01)
        raise RuntimeError("serve never became ready")
    finally:
        proc.send_signal(signal.SIGKILL)  # a kill: the state copy is thrown away anyway
        proc.wait(30)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", type=Path, help="a checkout of the tree before the change")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--catalogue", type=int, default=10_000)
    ap.add_argument("--frames", type=int, default=2, help="frames analysed before the save")
    ap.add_argument("--no-serve", action="store_true", help="skip the real serve row")
    ap.add_argument("--child", nargs=2, metavar=("MODE", "CONFIG"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        mode, config = args.child
        {"prepare": child_prepare, "restart": child_restart}[mode](Path(config), args.frames)
        return

    trees = {"this tree": ROOT}
    if args.baseline is not None:
        trees = {"baseline": args.baseline.resolve(), **trees}
    rows: dict[str, list[dict[str, float]]] = {name: [] for name in trees}
    cpus: dict[str, list[dict[str, float]]] = {name: [] for name in trees}
    serve: dict[str, list[float]] = {name: [] for name in trees}
    with tempfile.TemporaryDirectory() as tmp:
        prepared: dict[str, Path] = {}
        for name, tree in trees.items():
            folder = Path(tmp) / name.replace(" ", "-")
            folder.mkdir()
            config = write_config(folder, folder / "state", args.catalogue, 0)
            t = time.perf_counter()
            run_child(tree, "prepare", config, args.frames)
            print(f"{name}: prepared and saved in {time.perf_counter() - t:.1f} s", flush=True)
            prepared[name] = folder / "state"
        for k in range(args.repeats):
            for name, tree in trees.items():
                folder = Path(tmp) / f"run-{k}-{name.replace(' ', '-')}"
                folder.mkdir()
                shutil.copytree(prepared[name], folder / "state")
                config = write_config(folder, folder / "state", args.catalogue, 0)
                wall, cpu = restart_row(tree, config, args.frames)
                rows[name].append(wall)
                cpus[name].append(cpu)
                if not args.no_serve:
                    shutil.rmtree(folder / "state")
                    shutil.copytree(prepared[name], folder / "state")
                    port = free_port()
                    config = write_config(folder, folder / "state", args.catalogue, port)
                    serve[name].append(serve_ready(tree, config, port))
            load = os.getloadavg()
            print(f"repeat {k + 1}/{args.repeats} done (load {load[0]:.1f})", flush=True)

    load = os.getloadavg()
    print(
        f"\nwarm restart, 109725, catalogue {args.catalogue} (every motif refitted), state after "
        f"{args.frames} frames; medians of {args.repeats}, runs alternating; load average "
        f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}"
    )
    names = list(trees)
    keys = list(rows[names[0]][0])
    medians = {n: {k: statistics.median(r[k] for r in rows[n]) for k in keys} for n in names}
    if not args.no_serve:
        keys.append("serve → /readyz")
        for n in names:
            medians[n]["serve → /readyz"] = statistics.median(serve[n])
    print_table("wall seconds", names, keys, medians)
    ckeys = list(cpus[names[0]][0])
    cmedians = {n: {k: statistics.median(r[k] for r in cpus[n]) for k in ckeys} for n in names}
    print_table("CPU seconds", names, ckeys, cmedians)
    print("ratio: baseline / this tree; rebuilt: share of restarts whose first frames rebuilt;")
    print("CPU seconds: the child's user + system time (all threads), less sensitive to load")


def print_table(
    title: str, names: list[str], keys: list[str], medians: dict[str, dict[str, float]]
) -> None:
    header = f"{title:18s}" + "".join(f"{n:>11s}" for n in names)
    print(header + (f"{'ratio':>8s}" if len(names) == 2 else ""))
    for key in keys:
        line = f"{key:18s}" + "".join(f"{medians[n][key]:11.2f}" for n in names)
        if len(names) == 2 and key != "rebuilt":
            base, new = medians[names[0]][key], medians[names[1]][key]
            line += f"{base / new:8.1f}" if new > 1e-3 else f"{'-':>8s}"
        print(line)


if __name__ == "__main__":
    main()
