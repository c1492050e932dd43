"""CLI misuse, as an operator meets it: each case exits non-zero with one line and no traceback.

Every case runs the real entry point in a fresh process (``python -m motex_stream``), so what is
checked is exactly what reaches the terminal: logging set-up, third-party output and all.
Nothing may be prepared or started on a bad input: every case fails within seconds, including
a Tiled server that is not there (bounded retries, then one error).
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import KEGGIN

XYZ = str(KEGGIN / "109725.xyz")
GR = str(KEGGIN / "DanMAX_AlphaKeggin.gr")
DEAD_TILED = "http://127.0.0.1:9/api"  # port 9 (discard): nothing listens there


def serve_config(tmp: Path, extra: str = "", service: str = "") -> list[str]:
    text = (
        f'[service]\nstate_dir = "{tmp / "state"}"\nmetrics_port = 0\n{service}\n'
        f'[[models]]\nname = "keggin"\nstarting_model = "{XYZ}"\n{extra}'
    )
    path = tmp / "motex.toml"
    path.write_text(text)
    return ["serve", "--config", str(path)]


def _busy_port() -> tuple[socket.socket, int]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    return sock, int(sock.getsockname()[1])


CASES = {
    "watch: not an address": (
        lambda t: ["watch", "not-an-address"],
        "'not-an-address' is not a 0MQ address",
    ),
    "watch: port out of range": (
        lambda t: ["watch", "tcp://127.0.0.1:99999"],
        "port '99999' is not a number from 1 to 65535",
    ),
    "watch: history 0": (
        lambda t: ["watch", "tcp://127.0.0.1:5578", "--history", "0"],
        "--history must be at least 1",
    ),
    "demo: no frames": (lambda t: ["demo", "--frames", "0"], "--frames must be at least 2"),
    "demo: refit above catalogue": (
        lambda t: ["demo", "--catalogue", "100", "--refit", "500"],
        "--refit must be between 1 and --catalogue (100)",
    ),
    "demo: negative delay": (lambda t: ["demo", "--delay", "-1"], "--delay must be >= 0"),
    "replay: empty glob": (
        lambda t: [
            "replay",
            "--frames",
            str(t / "none" / "*.gr"),
            "--model",
            XYZ,
            "--out",
            str(t / "o.jsonl"),
        ],
        "no file matches",
    ),
    "replay: dead tiled": (
        lambda t: [
            "replay",
            "--tiled",
            DEAD_TILED,
            "--run",
            "abc",
            "--model",
            XYZ,
            "--out",
            str(t / "o.jsonl"),
        ],
        "cannot reach the Tiled server",
    ),
    "replay: tiled not a URI": (
        lambda t: [
            "replay",
            "--tiled",
            "not-a-uri",
            "--run",
            "abc",
            "--model",
            XYZ,
            "--out",
            str(t / "o.jsonl"),
        ],
        "--tiled: 'not-a-uri' is not an http(s):// URI",
    ),
    "replay: tiled without run": (
        lambda t: ["replay", "--tiled", DEAD_TILED, "--model", XYZ, "--out", str(t / "o.jsonl")],
        "--tiled needs --run UID",
    ),
    "replay: no model": (
        lambda t: ["replay", "--frames", GR, "--out", str(t / "o.jsonl")],
        "give --config FILE or --model START.xyz",
    ),
    "replay: zero speed": (
        lambda t: [
            "replay",
            "--frames",
            GR,
            "--model",
            XYZ,
            "--out",
            str(t / "o.jsonl"),
            "--speed",
            "0",
        ],
        "--speed must be a positive factor",
    ),
    "replay: publish not an address": (
        lambda t: [
            "replay",
            "--frames",
            GR,
            "--model",
            XYZ,
            "--out",
            str(t / "o.jsonl"),
            "--publish",
            "5578",
        ],
        "--publish: '5578' is not a 0MQ address",
    ),
    "serve: missing config": (
        lambda t: ["serve", "--config", str(t / "missing.toml")],
        "cannot read config",
    ),
    "serve: zmq source not an address": (
        lambda t: serve_config(t, '[[sources]]\ntype = "zmq"\naddress = "not-an-address"\n'),
        "sources[0].address: 'not-an-address' is not a 0MQ address",
    ),
    "serve: tiled source not http": (
        lambda t: serve_config(t, '[[sources]]\ntype = "tiled"\nuri = "ftp://x/api"\n'),
        "sources[0].uri: 'ftp://x/api' is not an http(s):// URI",
    ),
    "serve: state_dir is a file": (
        lambda t: (t / "state").write_text("x") and serve_config(t),
        "service.state_dir:",
    ),
    "serve: metrics host not a host": (
        lambda t: serve_config(t, service='metrics_host = "not a host"'),
        "service.metrics_host:",
    ),
}


def run_cli(args: list[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "motex_stream", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


IMPORT_RECORD = "import time:"


def run_cli_recording_imports(args: list[str]) -> tuple[subprocess.CompletedProcess[str], set]:
    """``run_cli`` under ``-X importtime``: the run with its own stderr (the import records
    taken out) and the set of modules it imported."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "motex_stream", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = result.stderr.splitlines()
    records = [line for line in lines if line.startswith(IMPORT_RECORD)]
    result.stderr = "\n".join(line for line in lines if not line.startswith(IMPORT_RECORD))
    return result, {line.rsplit("|", 1)[-1].strip() for line in records}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_misuse_is_one_line_and_non_zero(case: str, tmp_path: Path) -> None:
    make_args, expected = CASES[case]
    result, imported = run_cli_recording_imports(make_args(tmp_path))
    # answered from the arguments alone: xgboost (which pulls in scikit-learn, seconds of
    # imports on a busy 2-core machine) is never loaded for a misuse; `replay` used to import
    # its service first and took 8-11 s to say a flag was wrong
    assert "xgboost" not in imported, "the science stack was imported for a misuse"
    err = result.stderr.strip()
    assert result.returncode != 0, (result.stdout, err)
    assert "Traceback" not in err and "Traceback" not in result.stdout
    assert len(err.splitlines()) == 1, err
    assert expected in err, err
    assert not (tmp_path / "o.jsonl").exists(), "nothing may run on a bad input"


def test_a_port_in_use_is_refused_at_start(tmp_path: Path) -> None:
    sock, port = _busy_port()
    with contextlib.closing(sock):
        args = serve_config(tmp_path, service=f"metrics_port = {port}")
        text = Path(args[-1]).read_text().replace("metrics_port = 0\n", "")
        Path(args[-1]).write_text(text)
        result = run_cli(args)
    err = result.stderr.strip()
    assert result.returncode != 0 and len(err.splitlines()) == 1, err
    assert f"service.metrics_port: cannot bind 127.0.0.1:{port}" in err
