"""Run every benchmark in sequence (make bench)."""

import runpy
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
for script in ("bench_engine.py", "bench_analyze.py", "bench_stream.py"):
    if (HERE / script).exists():
        print(f"\n=== {script} ===", flush=True)
        sys.argv = [script]
        runpy.run_path(str(HERE / script), run_name="__main__")
