"""Wall time and peak RSS of ``random_catalogue``, this checkout against a git revision.

Each case runs in a fresh child process (``ru_maxrss`` only ever grows, so a shared process
would report the largest case everywhere). Printed per case and implementation: seconds,
peak RSS above the child's baseline (numpy and the module imported), and a SHA-256 of the
returned bytes, so the two implementations can be seen to return the same catalogue.

``--ref REV`` also times ``generators.py`` and ``storage.py`` as they were at ``REV``: both
files are written to a temporary folder and the first imports the second in place of
``motex_stream.catalogue.storage``, so the reference is really that revision's dedupe.

Usage: python benchmarks/bench_catalogue.py [--cases 24:1000000,72:10000000] [--ref HEAD]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_CHILD = """
import hashlib, json, resource, sys, time
sys.path[:0] = {paths!r}
import numpy as np
from {module} import random_catalogue
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter()
rows = random_catalogue({n}, {size}, 0, packed=True)
wall = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({{"wall_s": wall, "peak_mb": (peak - base) / 1024.0,
                  "sha": hashlib.sha256(rows.tobytes()).hexdigest()[:12]}}))
"""


def _reference(rev: str, folder: Path) -> None:
    """``rev``'s generators.py and storage.py as ``ref_generators``/``ref_storage``."""

    def show(path: str) -> str:
        return subprocess.run(
            ["git", "show", f"{rev}:{path}"], cwd=ROOT, check=True, capture_output=True, text=True
        ).stdout

    storage = show("motex_stream/catalogue/storage.py")
    generators = show("motex_stream/catalogue/generators.py").replace(
        "from motex_stream.catalogue.storage import", "from ref_storage import"
    )
    (folder / "ref_storage.py").write_text(storage)
    (folder / "ref_generators.py").write_text(generators)


def _run(module: str, paths: list[str], n: int, size: int) -> dict[str, float | str]:
    code = _CHILD.format(paths=paths, module=module, n=n, size=size)
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="24:1000000,72:1000000,24:10000000,72:10000000")
    parser.add_argument("--ref", default=None, help="git revision to compare against")
    args = parser.parse_args()
    cases = [tuple(int(x) for x in c.split(":")) for c in args.cases.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        impls = [("this", "motex_stream.catalogue.generators", [str(ROOT)])]
        if args.ref:
            _reference(args.ref, Path(tmp))
            impls.insert(0, (args.ref, "ref_generators", [tmp, str(ROOT)]))
        print(f"{'N':>4} {'size':>10} {'impl':>8} {'wall s':>8} {'peak MB':>8}  sha256")
        for n, size in cases:
            for name, module, paths in impls:
                r = _run(module, paths, n, size)
                print(
                    f"{n:>4} {size:>10} {name:>8} {r['wall_s']:>8.1f} {r['peak_mb']:>8.0f}"
                    f"  {r['sha']}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
