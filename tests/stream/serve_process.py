"""A small `serve` configuration and a plain HTTP GET, for tests and benchmarks that launch
the real `serve` process and watch its /metrics, /healthz and /readyz from outside.

One definition for the cold-start test (tests/stream/test_serve_cold_start.py) and the
start-up benchmark (benchmarks/bench_startup.py), so both time the same service.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

from tests.conftest import KEGGIN
from tests.stream.conftest import free_port


def small_serve_config(folder: Path, metrics_port: int) -> Path:
    """``folder/motex.toml``: one 109725 model prepared on the bundled reference at start-up
    (400 motifs, a 2-point search: seconds, not minutes), its state in ``folder/state``, a
    ZMQ source nobody publishes to, and the metrics server on ``metrics_port``."""
    path = folder / "motex.toml"
    path.write_text(
        f"""
[service]
state_dir = "{folder / "state"}"
metrics_port = {metrics_port}

[[models]]
name = "keggin"
starting_model = "{KEGGIN / "109725.xyz"}"
reference = "{KEGGIN / "DanMAX_AlphaKeggin.gr"}"
catalogue_size = 400
train_rows = 400
search_calls = 2
cv_folds = 2
ci_models = 0
confirm_contexts = 0

[[sources]]
type = "zmq"
name = "proxy"
address = "tcp://127.0.0.1:{free_port()}"
"""
    )
    return path


def http_get(url: str) -> tuple[int, str] | None:
    """(status, body), or None while nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None
