"""``serve --check CONFIG``: validate and preflight, then exit (issue 22 item 9).

It replaces the python one-liner deploy/README.md gave for checking a config before a
restart. Run as an operator runs it, in a fresh process; nothing is prepared or started.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

from tests.test_cli_misuse import GR, _busy_port, run_cli, serve_config


def test_check_accepts_a_good_config_and_starts_nothing(tmp_path: Path) -> None:
    # a config with a reference would prepare a model if served: --check must not
    args = serve_config(tmp_path, f'reference = "{GR}"\n')
    started = time.monotonic()
    result = run_cli([*args, "--check"], timeout=60)
    took = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert "is valid and this machine can run it" in result.stderr
    assert "Traceback" not in result.stderr
    assert not any((tmp_path / "state").glob("keggin*")), "--check prepared a model"
    assert took < 30, f"--check took {took:.1f} s"


def test_check_lists_every_problem_and_fails(tmp_path: Path) -> None:
    args = serve_config(tmp_path, 'reference = "/no/such.gr"\n')
    result = run_cli([*args, "--check"], timeout=60)
    assert result.returncode != 0
    assert "models[0].reference: no such file /no/such.gr" in result.stderr
    assert "Traceback" not in result.stderr


def test_check_warns_but_passes_when_the_running_service_holds_its_port(tmp_path: Path) -> None:
    """Checked before a restart, the port is still held by the service being replaced."""
    sock, port = _busy_port()
    with contextlib.closing(sock):
        args = serve_config(tmp_path, service=f"metrics_port = {port}")
        text = Path(args[-1]).read_text().replace("metrics_port = 0\n", "")
        Path(args[-1]).write_text(text)
        checked = run_cli([*args, "--check"], timeout=60)
        served = run_cli(args, timeout=60)
    assert checked.returncode == 0, checked.stderr
    assert f"service.metrics_port: 127.0.0.1:{port} is in use now" in checked.stderr
    assert served.returncode != 0  # serving itself still refuses a busy port
