"""/metrics and /healthz answer from the first second of ``serve`` (issue 22 item 4).

The real process (``python -m motex_stream serve``) prepares a model on a reference at
start-up. Before: nothing listened until the preparation was done (28 s on 2,000 motifs), so
Prometheus' ``up`` was 0 and ``MotexStreamDown`` fired on every cold start. Now the first
scrape succeeds within seconds, shows ``motex_service_state{state="preparing"} 1`` and the
preparation's progress, and every scrape until ``ready`` succeeds.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.stream.conftest import free_port
from tests.stream.serve_process import http_get, small_serve_config


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_metrics_and_health_answer_while_the_model_prepares(tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    config = small_serve_config(tmp_path, port)
    launched = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "motex_stream", "serve", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        first = None
        while first is None and time.monotonic() - launched < 60:
            assert proc.poll() is None, proc.communicate()[0]
            first = http_get(base + "/metrics")
            if first is None:
                time.sleep(0.1)
        first_answer_s = time.monotonic() - launched
        assert first is not None and first[0] == 200
        samples = _samples(first[1])
        assert samples[("motex_service_state", (("state", "preparing"),))] == 1
        assert samples[("motex_service_state", (("state", "ready"),))] == 0
        assert samples[("motex_preparation_progress", ())] < 1
        # (how soon is measured by benchmarks/bench_startup.py, never asserted on a clock: the
        # property is the order, the first scrape answered while the model still prepares)
        status, body = http_get(base + "/healthz") or (0, "")
        health = json.loads(body)
        assert status == 200 and health["state"] == "preparing"
        assert (http_get(base + "/readyz") or (0, ""))[0] == 503

        # every scrape until ready answers: Prometheus' up stays 1 through the cold start
        scrapes, state = 0, "preparing"
        while state != "ready" and time.monotonic() - launched < 300:
            assert proc.poll() is None, proc.communicate()[0]
            got = http_get(base + "/metrics")
            assert got is not None and got[0] == 200, "a scrape failed during preparation"
            scrapes += 1
            health = json.loads((http_get(base + "/healthz") or (0, "{}"))[1])
            state = health["state"]
            time.sleep(0.5)
        ready_s = time.monotonic() - launched
        assert state == "ready", f"not ready after {ready_s:.0f} s"
        assert health["models"] == {"keggin": "ready"} and health["progress"] == 1.0
        samples = _samples(http_get(base + "/metrics")[1])  # type: ignore[index]
        assert samples[("motex_model_state", (("model", "keggin"), ("state", "ready")))] == 1
        assert samples[("motex_model_preparation_seconds", (("model", "keggin"),))] > 0
        assert (http_get(base + "/readyz") or (0, ""))[0] == 200
        print(f"first scrape {first_answer_s:.1f} s, ready {ready_s:.1f} s, {scrapes} scrapes")
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert "Traceback" not in out, out
