"""Issue 23: how soon ``serve`` answers /healthz and /metrics after launch.

The service prepares its models at start-up (seconds to minutes). Prometheus and the
``MotexStreamDown`` alert only see a live target if /healthz and /metrics answer from the
first seconds, reporting ``preparing``. This measures, for this tree and a baseline tree
(``--baseline DIR``, e.g. ``git worktree add --detach /tmp/base HEAD`` made before a change),
the wall time from process launch (``Popen``) to:

- the first HTTP 200 from /healthz (its reported state, normally ``preparing``),
- the first HTTP 200 from /metrics,
- /healthz reporting ``ready`` (optional, ``--ready``: the whole cold preparation).

Both trees run the same interpreter on the same config (a small model on the packaged
α-Keggin data, a 0MQ source nobody publishes to), alternately, ``--repeats`` times; the table
gives the median and the ratio baseline / this tree. Prints the load: on a shared machine the
absolute numbers are inflated, the ratio less so.

Usage: python benchmarks/bench_startup.py --baseline /tmp/base [--repeats 5] [--ready]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# the configuration and the GET of the cold-start test, so both time the same service
from tests.stream.conftest import free_port  # noqa: E402
from tests.stream.serve_process import http_get, small_serve_config  # noqa: E402


def launch_once(tree: Path, wait_ready: bool, timeout: float = 300.0) -> dict[str, float | str]:
    """One ``serve`` of ``tree``'s package, from launch to the answers; always stopped."""
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        config = small_serve_config(Path(tmp), port)
        base = f"http://127.0.0.1:{port}"
        env = {**os.environ, "PYTHONPATH": str(tree)}
        launched = time.monotonic()
        proc = subprocess.Popen(
            [sys.executable, "-m", "motex_stream", "serve", "--config", str(config)],
            cwd=tree,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        out: dict[str, float | str] = {}
        try:
            while time.monotonic() - launched < timeout:
                if proc.poll() is not None:
                    raise RuntimeError(f"serve of {tree} exited with {proc.returncode}")
                if "healthz_s" not in out:
                    got = http_get(base + "/healthz")
                    if got is not None and got[0] == 200:
                        out["healthz_s"] = time.monotonic() - launched
                        out["state"] = json.loads(got[1]).get("state", "?")
                if "metrics_s" not in out:
                    got = http_get(base + "/metrics")
                    if got is not None and got[0] == 200:
                        out["metrics_s"] = time.monotonic() - launched
                if "healthz_s" in out and "metrics_s" in out and not wait_ready:
                    break
                if wait_ready and "healthz_s" in out:
                    got = http_get(base + "/healthz")
                    if got is not None and json.loads(got[1]).get("state") == "ready":
                        out["ready_s"] = time.monotonic() - launched
                        break
                time.sleep(0.02)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--baseline", type=Path, required=True, help="the baseline tree (a worktree)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--ready", action="store_true", help="also time until /healthz says ready")
    args = p.parse_args()
    trees = {"baseline": args.baseline.resolve(), "this tree": ROOT}
    runs: dict[str, list[dict[str, float | str]]] = {name: [] for name in trees}
    print("load {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    for i in range(args.repeats):
        order = list(trees.items())
        # alternate, and swap who goes first each round, so drifting load hits both alike
        for name, tree in order if i % 2 == 0 else order[::-1]:
            got = launch_once(tree, args.ready)
            runs[name].append(got)
            cells = ", ".join(
                f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in got.items()
            )
            print(f"  run {i + 1} {name:9s}: {cells}", flush=True)
    print("load {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    keys = ["healthz_s", "metrics_s"] + (["ready_s"] if args.ready else [])
    print(f"\nmedian of {args.repeats} (seconds from launch)")
    print(f"{'':18s}" + "".join(f"{k:>12s}" for k in keys))
    medians: dict[str, dict[str, float]] = {}
    for name in trees:
        medians[name] = {
            k: statistics.median(float(r[k]) for r in runs[name] if k in r) for k in keys
        }
        print(f"{name:18s}" + "".join(f"{medians[name][k]:12.2f}" for k in keys))
    ratio = [medians["baseline"][k] / medians["this tree"][k] for k in keys]
    print(f"{'baseline / this':18s}" + "".join(f"{x:11.2f}x" for x in ratio))
    states = sorted({str(r.get("state")) for r in runs["this tree"]})
    print(f"first /healthz state (this tree): {', '.join(states)}")


if __name__ == "__main__":
    main()
