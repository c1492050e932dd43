"""Real infrastructure for source tests: a 0MQ proxy process and a Tiled server on 127.0.0.1.

Nothing is mocked: the proxy is bluesky's own ``bluesky-0MQ-proxy`` command and the Tiled
server is ``tiled.server.SimpleTiledServer`` (temporary storage, random port, an API key),
so the tests exercise the same code paths as a beamline deployment.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
from bluesky import RunEngine

from motex_stream.stream.sim.simulate import PDFDetector, make_pdf_detector, make_run_engine

if TYPE_CHECKING:
    from tests.stream.two_motifs import PreparedState

logger = logging.getLogger(__name__)

N_POINTS = 200
R_GRID = np.linspace(1.0, 20.0, N_POINTS)


def frame_gr(i: int) -> np.ndarray:
    """The i-th simulated G(r) (0-based): a damped sine whose amplitude encodes ``i``."""
    return (i + 1.0) * np.sin(2.0 * R_GRID) * np.exp(-0.1 * R_GRID)


def free_port() -> int:
    """A currently free TCP port on 127.0.0.1."""
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float = 30.0) -> None:
    """Block until something accepts TCP connections on 127.0.0.1:``port``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
            sock.settimeout(0.5)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout} s")


@dataclass(frozen=True)
class ProxyAddresses:
    """Where publishers send (``inbound``) and subscribers listen (``outbound``)."""

    inbound: str
    outbound: str


def _proxy_command() -> list[str]:
    exe = Path(sys.executable).with_name("bluesky-0MQ-proxy")
    if exe.exists():
        return [str(exe)]
    found = shutil.which("bluesky-0MQ-proxy")
    if found:
        return [found]
    return [sys.executable, "-m", "bluesky.commandline.zmq_proxy"]


@pytest.fixture
def r_grid() -> np.ndarray:
    """The r grid of the simulated detector."""
    return R_GRID.copy()


@pytest.fixture
def expected_gr() -> Callable[[int], np.ndarray]:
    """The G(r) the simulated detector emits for frame ``i`` (0-based)."""
    return frame_gr


@pytest.fixture
def pdf_detector() -> PDFDetector:
    """A fresh simulated PDF detector (default keys ``pdf_gr`` / ``pdf_r``)."""
    return make_pdf_detector(frame_gr, R_GRID)


@pytest.fixture
def run_engine() -> RunEngine:
    """A real RunEngine without signal handlers."""
    return make_run_engine()


@pytest.fixture
def zmq_proxy() -> Iterator[ProxyAddresses]:
    """A real ``bluesky-0MQ-proxy`` subprocess on two free 127.0.0.1 ports."""
    in_port, out_port = free_port(), free_port()
    inbound = f"tcp://127.0.0.1:{in_port}"
    outbound = f"tcp://127.0.0.1:{out_port}"
    proc = subprocess.Popen(
        [*_proxy_command(), "--in-address", inbound, "--out-address", outbound],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for_port(in_port)
        wait_for_port(out_port)
        yield ProxyAddresses(inbound, outbound)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        if proc.stderr is not None:
            proc.stderr.close()


@dataclass(frozen=True)
class TiledProcess:
    """A ``tiled serve`` process: what tests use of a server (``uri`` carries the key)."""

    uri: str
    api_key: str


@pytest.fixture(scope="session")
def tiled_server() -> Iterator[TiledProcess]:
    """A Tiled server (``tiled serve catalog --temp``, an API key) shared by the Tiled tests.

    A separate process, not an in-process ``SimpleTiledServer``: two in-process servers share
    tiled's settings, so one started later in the session (``motex-stream demo`` does) makes
    this one refuse its own key. One server per session keeps the suite fast (startup takes
    seconds on 2 cores); tests use one writer at a time, since concurrent writers into the
    default tabular storage fail.
    """
    port, key = free_port(), secrets.token_hex(16)
    exe = Path(sys.executable).with_name("tiled")
    command = [str(exe) if exe.exists() else "tiled", "serve", "catalog", "--temp"]
    command += ["--api-key", key, "--host", "127.0.0.1", "--port", str(port)]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, timeout=120)
        yield TiledProcess(f"http://127.0.0.1:{port}/api/v1?api_key={key}", key)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=20)


@pytest.fixture
def tiled_api_key_env(tiled_server: object, monkeypatch: pytest.MonkeyPatch) -> str:
    """Expose the test server's key the way production does: ``MOTEX_TILED_API_KEY``."""
    key = str(tiled_server.api_key)  # type: ignore[attr-defined]
    monkeypatch.setenv("MOTEX_TILED_API_KEY", key)
    return key


@pytest.fixture
def tiled_base_uri(tiled_server: object) -> str:
    """The server URI without the key (sources must take the key from the environment)."""
    uri = str(tiled_server.uri)  # type: ignore[attr-defined]
    return uri.split("?", 1)[0]


# ---------------------------------------------------------------- prepared live models
# Preparing a live model (catalogue fit, hyperparameter search, GBDT) is the most expensive
# setup of the stream tests; modules that prepare the same model on the same frame share one
# preparation per session, and each test works on its own copy (two_motifs.PreparedState).


@pytest.fixture(scope="session")
def small_state(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PreparedState]:
    """300 motifs prepared on a 6-frame ramp: the saved-state tests (recovery, checksums,
    full disk, warm restart), live runs and the dashboard in a browser. Another ramp over n
    frames is ``dataclasses.replace(series, n_frames=n)``: its frame 1, the prepared one, is
    the same."""
    from motex_stream.stream.sim.series import two_motif_series
    from tests.stream.two_motifs import shared_state, small_settings

    series = two_motif_series(tmp_path_factory.mktemp("small-series"), n_frames=6)
    yield from shared_state(series, small_settings(series), tmp_path_factory.mktemp("small-state"))


@pytest.fixture(scope="session")
def crossing_state(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PreparedState]:
    """The default live model (2,000 motifs) prepared on the crossover series: change
    detection, the closed loop and the end-to-end service tests."""
    from tests.stream.two_motifs import crossing_series, live_settings, shared_state

    series = crossing_series(tmp_path_factory.mktemp("crossing-series"))
    yield from shared_state(
        series, live_settings(series), tmp_path_factory.mktemp("crossing-state")
    )
