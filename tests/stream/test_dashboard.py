"""The dashboard without a browser: its state, its HTTP and event stream, its message fields.

The server runs for real on 127.0.0.1 (random port) and is read over real sockets; the ZMQ
test publishes on a real socket. The browser tests are in ``test_dashboard_browser.py``.
"""

from __future__ import annotations

import gzip
import http.client
import io
import json
import re
import socket
import time
import zlib

import numpy as np
import pytest

from motex_stream.analysis import steps
from motex_stream.analysis.settings import ModelSettings
from motex_stream.cli import main as cli_main
from motex_stream.fitting.results import rwp
from motex_stream.stream.dashboard import DashboardServer
from motex_stream.stream.dashboard.server import accepts_gzip
from motex_stream.stream.dashboard.state import FIT_FRAMES, DashboardState
from motex_stream.stream.frames import Frame
from motex_stream.stream.live.analyzer_protocol import FitCurve, ModelDrawing
from motex_stream.stream.live.liveview import FIT_POINTS, best_fit, decimation, structure
from motex_stream.stream.messages import build_message, decode, encode, from_message
from motex_stream.stream.publishers.zmq_pub import ZmqPublisher
from motex_stream.stream.sim.series import two_motif_series
from tests.stream.dashboard_feed import publish, published_dashboard
from tests.stream.results import frame_result


def message(seq: int, source: str = "run-a", values=(-0.2, 0.1, 0.05), **more) -> dict:
    """A v1 message as the service publishes it (built by the one message builder)."""
    result = frame_result(
        model="keggin",
        contributions=[
            {"atom": a, "element": "W", "value": v, "spread": 0.01}
            for a, v in zip((1, 2, 5), values, strict=True)
        ],
        best={"mask": [1, 0, 0], "rwp": 0.3 - 0.01 * seq, "scale": 1.0, "zoom": 1.0},
        timing={"fit": 0.1},
        model_quality={"mae": 0.004, "n_trees": 10.0, "rebuilt": 0.0},
        n_refit=100,
        **more,
    )
    r = np.linspace(1, 10, 50)
    return build_message(
        result, Frame(source, seq, 1.7e9 + seq, r, np.sin(r)), received_at=10.0, published_at=10.25
    )


# ---------------------------------------------------------------- message fields (v2)


def test_fit_and_structure_are_optional_fields_v1_readers_accept() -> None:
    plain = message(1)
    assert "fit" not in plain and "structure" not in plain  # v1 exactly as before
    fit = {"r": [1.0, 2.0], "g": [0.5, np.float32(0.25)], "g_calc": [0.4, np.nan]}
    shape = {"elements": ["W", "O"], "xyz": [[0, 0, 0], [1.5, 0, 0]], "permutable": [1],
             "bonded": [[1], [1]]}  # fmt: skip
    full = decode(encode(message(1, fit=fit, structure=shape)))  # a v1 reader's decode
    assert full["fit"] == {"r": [1.0, 2.0], "g": [0.5, 0.25], "g_calc": [0.4, None]}
    assert full["structure"] == shape
    # a typed reader gets the typed fields back, as the analyzer made them
    read = from_message(full).result
    assert read.fit == FitCurve(r=[1.0, 2.0], g=[0.5, 0.25], g_calc=[0.4, None])
    assert read.structure == ModelDrawing(**shape) and read.structure.equivalent is None


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    series = two_motif_series(tmp_path_factory.mktemp("series"), n_frames=4)
    settings = ModelSettings(starting_model=str(series.model_path))
    model = steps.load_model(settings)
    data = steps.fit_data(series.r, series.frame(1), settings)
    return steps.prepare_engine(model, data.settings, data.r), data.g


def test_best_fit_curve_reproduces_the_fitted_rwp(engine) -> None:
    prep, g = engine
    masks = np.random.default_rng(0).random((40, prep.model.n_permutable)) < 0.6
    fits = steps.fit_masks(prep, masks, g, "isotropic")
    best = int(np.argmin(fits.rwp))
    curve = best_fit(prep, masks[best], fits.scale[best], fits.zoom[best], g)
    keep = decimation(len(g))
    assert len(curve.r) == len(keep) <= FIT_POINTS
    np.testing.assert_allclose(curve.g, g[keep], rtol=0, atol=0.5e-5)
    # undecimated, the curve's Rwp is the batched fit's Rwp: the plot shows what was fitted
    full = best_fit(prep, masks[best], fits.scale[best], fits.zoom[best], g, points=len(g))
    assert len(full.r) == len(g)
    assert rwp(g, np.array(full.g_calc)) == pytest.approx(fits.rwp[best], abs=1e-3)


def test_structure_lists_every_atom_and_what_dependent_atoms_go_with(engine) -> None:
    prep, _ = engine
    model = prep.model
    s = structure(prep)
    assert len(s.elements) == len(s.xyz) == len(s.bonded) == model.n_atoms
    assert s.permutable == (model.permutable + 1).tolist()
    for atom in s.permutable:
        assert s.bonded[atom - 1] == [atom]
    for row, atom in enumerate(model.dependent):
        want = (model.permutable[model.bonded[row]] + 1).tolist()
        assert s.bonded[atom] == want and want  # every O of this model has a W


def test_decimation_keeps_at_most_the_limit_evenly() -> None:
    assert decimation(10).tolist() == list(range(10))
    idx = decimation(1401)
    assert len(idx) <= FIT_POINTS and idx[0] == 0 and len(set(np.diff(idx))) == 1


# ---------------------------------------------------------------- state


def test_state_folds_runs_gaps_and_bounds_fits() -> None:
    state = DashboardState()
    shape = {"elements": ["W"], "xyz": [[0.0, 0.0, 0.0]], "permutable": [1], "bonded": [[1]]}
    ev = state.add(message(1, structure=shape), arrived=100.0)
    assert ev["new_run"] and ev["runs"] == 1 and ev["frame"]["latency"] == 0.25
    state.add(message(2), arrived=101.0)
    ev = state.add(message(4), arrived=102.0)  # seq 3 never came
    assert not ev["new_run"] and ev["gaps"] == 1
    view = state.models["keggin"]
    assert [f["seq"] for f in view.frames] == [1, 2, 4]
    assert view.structure == shape  # kept although later frames lack it
    assert view.frames[0]["values"] == [-0.2, 0.1, 0.05]

    ev = state.add(message(1, source="run-b"), arrived=103.0)  # another run
    assert ev["new_run"] and ev["runs"] == 2 and len(view.frames) == 1
    ev = state.add(message(1, source="run-b"), arrived=104.0)  # the same run replayed anew
    assert ev["new_run"] and ev["runs"] == 3
    assert len(view.timeline) == 5  # the trend plots span runs

    for seq in range(2, FIT_FRAMES + 10):
        state.add(message(seq, source="run-b", fit={"r": [1.0], "g": [1.0], "g_calc": [1.0]}))
    frames = state.models["keggin"].frames
    assert sum(f["fit"] is not None for f in frames) == FIT_FRAMES
    assert frames[-1]["fit"] is not None

    mo = [{"atom": 7, "element": "Mo", "value": 0.1, "spread": 0.01}]
    other = state.add(message(5, source="run-b") | {"contributions": mo})
    assert other["new_run"] and state.models["keggin"].atoms == [7]  # another starting model


# ---------------------------------------------------------------- server


def get(server: DashboardServer, path: str) -> tuple[int, str, bytes]:
    conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.getheader("Content-Type") or "", resp.read()
    finally:
        conn.close()


def read_event(sock_file) -> tuple[str, dict]:
    """The next SSE event (name, JSON data), skipping keep-alive comments and retry lines."""
    name, data = "", b""
    while True:
        line = sock_file.readline()
        if not line:
            raise EOFError("event stream closed")
        line = line.rstrip(b"\r\n")
        if line.startswith(b"event: "):
            name = line[7:].decode()
        elif line.startswith(b"data: "):
            data = line[6:]
        elif not line and name:
            return name, json.loads(data)


def labelled(seq: int, source: str = "run-a", change: dict | None = None) -> dict:
    """A message whose entries carry intervals and labels (as the live analyzer sends)."""
    entries = [
        {"atom": 1, "element": "W", "value": -0.02, "spread": 0.01, "ci_low": -0.03,
         "ci_high": -0.01, "label": "keep"},
        {"atom": 2, "element": "W", "value": 0.001, "spread": 0.01, "ci_low": -0.004,
         "ci_high": 0.006, "label": "uncertain"},
    ]  # fmt: skip
    result = frame_result(
        model="keggin",
        contributions=entries,
        best={"mask": [1, 0], "rwp": 0.3, "scale": 1.0, "zoom": 1.0},
        timing={"fit": 0.1},
        model_quality={"mae": 0.004, "n_trees": 10.0, "rebuilt": 0.0},
        n_refit=100,
        change=change,
    )
    r = np.linspace(1, 10, 50)
    return build_message(
        result, Frame(source, seq, 1.7e9 + seq, r, np.sin(r)), received_at=10.0, published_at=10.2
    )


def test_state_keeps_labels_intervals_and_the_run_changes_with_their_place() -> None:
    state = DashboardState()
    change = {"frame": 2, "atoms_gained": [2], "atoms_lost": [1], "confidence": 0.97}
    for seq in (1, 2, 3):
        event = state.add(labelled(seq), arrived=100.0 + seq)
    event = state.add(labelled(4, change=change), arrived=104.0)
    assert event["frame"]["labels"] == ["keep", "uncertain"]
    assert event["frame"]["ci_low"] == [-0.03, -0.004]
    assert event["frame"]["ci_high"] == [-0.01, 0.006]
    # dated to frame 2 (arrived at 102), reported with frame 4
    want = {**change, "at": 102.0, "reported": 4}
    assert event["change"] == want
    view = state.snapshot()["models"]["keggin"]
    assert view["changes"] == [want]
    assert view["frames"][-1]["change"] == change
    assert view["frames"][0]["change"] is None
    state.add(labelled(1, source="run-b"), arrived=105.0)  # a new run: its own markers
    assert state.snapshot()["models"]["keggin"]["changes"] == []


def test_server_serves_page_assets_snapshot_and_live_events() -> None:
    with DashboardServer(port=0, source="tcp://test") as server:
        assert server.host == "127.0.0.1"  # localhost by default
        status, kind, page = get(server, "/")
        assert status == 200 and kind.startswith("text/html")
        assert b'id="model-template"' in page and b"/static/plotly.min.js" in page
        status, kind, body = get(server, "/static/plotly.min.js")  # from the plotly wheel
        assert status == 200 and len(body) > 1_000_000 and b"plotly" in body[:2000].lower()
        assert get(server, "/static/app.js")[0] == 200
        assert get(server, "/static/../server.py")[0] == 404
        assert get(server, "/nothing")[0] == 404

        curve = {"r": [1.0, 2.0], "g": [0.5, 0.25], "g_calc": [0.4, 0.2]}
        server.add(message(1, fit=curve))
        server.add(message(2, fit=curve | {"g": [0.0, 0.0]}))
        snap = json.loads(get(server, "/api/snapshot")[2])
        assert snap["source"] == "tcp://test" and snap["messages"] == 2
        frames = snap["models"]["keggin"]["frames"]
        assert [f["seq"] for f in frames] == [1, 2]
        # only the latest fit travels in the snapshot; older ones on request
        assert frames[0]["fit"] is None and frames[1]["fit"]["g"] == [0.0, 0.0]
        status, _, body = get(server, "/api/fit?model=keggin&seq=1")
        assert status == 200 and json.loads(body) == curve
        assert get(server, "/api/fit?model=keggin&seq=9")[0] == 404
        assert get(server, "/api/fit?model=keggin")[0] == 400

        with socket.create_connection((server.host, server.port), timeout=10) as sock:
            sock.sendall(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
            stream = sock.makefile("rb")
            assert stream.readline().startswith(b"HTTP/1.1 200")
            name, snap = read_event(stream)
            assert name == "snapshot" and len(snap["models"]["keggin"]["frames"]) == 2
            wait_for(lambda: server.clients == 1)
            server.add(message(3))
            name, event = read_event(stream)
            assert name == "frame" and event["frame"]["seq"] == 3 and not event["new_run"]
    # closing the server ends the stream instead of hanging the browser's connection
    assert server.clients == 0


def wait_for(check, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_subscription_feeds_the_page_over_real_zmq() -> None:
    with published_dashboard() as (publisher, dashboard):
        publish(publisher, (message(seq) for seq in (1, 2, 3)))
        server = dashboard.server
        assert server is not None
        wait_for(lambda: server.state.messages == 3)
        snap = json.loads(get(server, "/api/snapshot")[2])
        assert [f["seq"] for f in snap["models"]["keggin"]["frames"]] == [1, 2, 3]
    assert not dashboard.thread.is_alive()


def test_cli_lists_dashboard_and_refuses_a_bad_port(capsys) -> None:
    with pytest.raises(SystemExit):
        cli_main(["dashboard", "--help"])
    assert "--port" in capsys.readouterr().out
    assert cli_main(["dashboard", "tcp://127.0.0.1:5578", "--port", "70000"]) == 2
    assert "--port 70000" in capsys.readouterr().err


def test_service_serves_its_own_dashboard_when_configured(tmp_path) -> None:
    from motex_stream.stream.commands.runner import dashboard_sink
    from motex_stream.stream.config import ServiceConfig
    from motex_stream.stream.messages import PublishedFrame
    from tests.stream.conftest import free_port

    assert dashboard_sink(ServiceConfig(state_dir=tmp_path)) is None  # off by default
    port = free_port()
    sink = dashboard_sink(ServiceConfig(state_dir=tmp_path, dashboard_port=port))
    assert sink is not None
    try:
        result = frame_result(
            model="keggin",
            contributions=[{"atom": 1, "element": "W", "value": -0.1, "spread": 0.0}],
            best={"mask": [1], "rwp": 0.2},
            timing={},
            model_quality={"mae": 0.01},
        )
        r = np.linspace(1, 10, 5)
        sink.publish(PublishedFrame.of(result, Frame("run-x", 1, 1.7e9, r, r)))
        snap = json.loads(get(sink.server, "/api/snapshot")[2])
        assert (sink.server.host, sink.server.port) == ("127.0.0.1", port)
        assert snap["source"] == "this service"
        assert snap["models"]["keggin"]["frames"][0]["values"] == [-0.1]
    finally:
        sink.close()


@pytest.mark.slow
def test_the_documented_command_serves_the_stream(tmp_path) -> None:
    """`motex-stream dashboard ADDR --port P`, as docs/dashboard.md runs it, in a process."""
    import subprocess
    import sys

    from tests.stream.conftest import free_port, wait_for_port

    port = free_port()
    with ZmqPublisher("tcp://127.0.0.1:0") as publisher:
        proc = subprocess.Popen(
            [sys.executable, "-m", "motex_stream", "dashboard", publisher.address,
             "--port", str(port)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )  # fmt: skip
        try:
            wait_for_port(port, timeout=60)
            assert publisher.wait_for_subscribers(1, timeout=20)
            publisher.send_message(message(1))
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)

            def arrived() -> bool:
                conn.request("GET", "/api/snapshot")
                return json.loads(conn.getresponse().read())["messages"] == 1

            wait_for(arrived)
            conn.close()
        finally:
            proc.terminate()
            out, _ = proc.communicate(timeout=20)
    assert f"on http://127.0.0.1:{port}/" in out


def test_demo_dashboard_moves_to_a_free_port_when_its_own_is_taken() -> None:
    from motex_stream.stream.commands.demo import _dashboard_port
    from motex_stream.stream.commands.runner import dashboard_sink
    from motex_stream.stream.config import ServiceConfig

    with DashboardServer(port=0) as taken:
        port = _dashboard_port(taken.port)  # what the demo puts in its config
        assert port != taken.port
        sink = dashboard_sink(ServiceConfig(state_dir=None, dashboard_port=port))
        assert sink is not None
        try:
            assert sink.server.port == port and get(sink.server, "/healthz")[0] == 200
        finally:
            sink.close()


# ---------------------------------------------------------------- hostile input (issue 19)


def crafted_messages() -> dict[str, dict]:
    """Messages the dashboard's earlier check accepted and the published schema rejects."""

    def with_entry(**entry: object) -> dict:
        m = message(1)
        m["contributions"] = [dict(c) for c in m["contributions"]]
        m["contributions"][0].update(entry)
        return m

    return {
        # each closes the attribute it was written into, then adds an image whose load fails
        "label-markup": with_entry(label='"><img src=x onerror=window.__pwned="label">'),
        "value-markup": with_entry(value='"><img src=x onerror=window.__pwned="value">'),
        "unknown-entry-key": with_entry(note="<script>window.__pwned=3</script>"),
        "value-nan": with_entry(value=float("nan")),
        "model-markup": {**message(1), "model": "<b>x</b>"},
    }


def test_messages_the_schema_rejects_are_dropped_and_counted_over_real_zmq() -> None:
    """Sent on the subscribed address (a real ZMQ socket): each crafted message is dropped
    and counted, the subscriber stays up, and the good message after them is shown."""
    crafted = crafted_messages()
    with published_dashboard() as (publisher, dashboard):
        for m in crafted.values():  # NaN too: Python's json writes and reads it
            publisher._send(str(m["model"]), json.dumps(m).encode())
        publisher.send_message(message(2))
        server = dashboard.server
        assert server is not None
        wait_for(lambda: server.state.messages >= 1 and server.rejected == len(crafted))
        time.sleep(0.2)
        assert server.state.messages == 1 and server.rejected == len(crafted)
        snap = json.loads(get(server, "/api/snapshot")[2])
        assert snap["rejected"] == len(crafted)
        assert [f["seq"] for f in snap["models"]["keggin"]["frames"]] == [2]
        assert dashboard.thread.is_alive()


def test_schema_used_is_the_published_one() -> None:
    """The dashboard checks with the schema in docs/schema/, byte for byte (packaged copy)."""
    from pathlib import Path

    from motex_stream.stream.messages import SCHEMA_FILE, schema_text

    published = Path(__file__).parents[2] / "docs" / "schema" / SCHEMA_FILE
    assert schema_text() == published.read_text(encoding="utf-8")


def headers_of(server: DashboardServer, path: str) -> tuple[int, dict[str, str]]:
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        stream = sock.makefile("rb")
        status = int(stream.readline().split()[1])
        headers: dict[str, str] = {}
        while (line := stream.readline().rstrip(b"\r\n")) != b"":
            name, _, value = line.decode().partition(":")
            headers[name.strip().lower()] = value.strip()
        return status, headers


def test_every_response_carries_the_security_headers() -> None:
    with DashboardServer(port=0) as server:
        server.add(message(1, fit={"r": [1.0], "g": [0.5], "g_calc": [0.4]}))
        paths = {
            "/": 200,
            "/static/app.js": 200,
            "/static/app.css": 200,
            "/api/snapshot": 200,
            "/api/fit?model=keggin&seq=1": 200,
            "/api/fit?model=keggin": 400,
            "/healthz": 200,
            "/nothing": 404,
            "/events": 200,
        }
        for path, want in paths.items():
            status, headers = headers_of(server, path)
            assert status == want, path
            csp = {
                d.split()[0]: d.split()[1:]
                for d in headers["content-security-policy"].split(";")
                if d.strip()
            }
            assert csp["script-src"] == ["'self'"], path  # no inline script, no eval
            assert csp["default-src"] == ["'none'"], path  # objects, frames, ...: none
            assert csp["frame-ancestors"] == ["'none'"] and csp["base-uri"] == ["'none'"]
            assert headers["x-content-type-options"] == "nosniff", path
            assert headers["x-frame-options"] == "DENY", path
            assert headers["referrer-policy"] == "no-referrer", path
        # and the page needs nothing the policy forbids: no inline script or handler
        page = get(server, "/")[2].decode()
        for tag in re.findall(r"<script\b[^>]*>", page):
            assert " src=" in tag, tag
        for body in re.findall(r"<script\b[^>]*>(.*?)</script>", page, re.S):
            assert not body.strip(), "an inline script"
        assert not re.search(r"\son[a-z]+\s*=", page), "an inline event handler"


def test_state_keeps_which_frames_a_rebuilt_surrogate_served_first() -> None:
    state = DashboardState()
    rebuilt = message(2)
    rebuilt["model_quality"] = {**rebuilt["model_quality"], "rebuilt": True, "generation": 1}
    first = state.add(message(1), arrived=1.0)["frame"]
    second = state.add(rebuilt, arrived=2.0)["frame"]
    assert (first["rebuilt"], second["rebuilt"], second["generation"]) == (False, True, 1)
    assert [f["rebuilt"] for f in state.snapshot()["models"]["keggin"]["frames"]] == [False, True]


def fetch(server: DashboardServer, path: str, encoding: str | None) -> tuple[dict, bytes]:
    """One GET over a real socket with the given ``Accept-Encoding``: headers, raw body."""
    conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
    try:
        conn.request("GET", path, headers={"Accept-Encoding": encoding} if encoding else {})
        resp = conn.getresponse()
        assert resp.status == 200, path
        return {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def test_files_json_and_events_are_gzipped_for_a_client_that_accepts_it() -> None:
    """Over an SSH tunnel plotly.js (4.8 MB) was sent as is (issue 22, item 7)."""
    with DashboardServer(port=0) as server:
        curve = {"r": list(np.linspace(1, 10, 200)), "g": [0.5] * 200, "g_calc": [0.4] * 200}
        for seq in range(1, 30):
            server.add(message(seq, fit=curve))
        sizes = {}
        for path in ("/", "/static/app.js", "/static/plotly.min.js", "/api/snapshot",
                     "/api/fit?model=keggin&seq=3"):  # fmt: skip
            plain_headers, plain = fetch(server, path, None)
            headers, packed = fetch(server, path, "gzip, deflate, br")
            assert "content-encoding" not in plain_headers, path
            assert headers["content-encoding"] == "gzip", path
            assert headers["vary"] == plain_headers["vary"] == "Accept-Encoding", path
            assert int(headers["content-length"]) == len(packed), path
            unpacked = gzip.decompress(packed)
            if path != "/api/snapshot":  # the snapshot carries the server's clock
                assert unpacked == plain, path
            assert len(packed) < len(plain) / 2, (path, len(packed), len(plain))
            sizes[path] = (len(plain), len(packed))
        assert sizes["/static/plotly.min.js"][0] > 4_000_000
        assert sizes["/static/plotly.min.js"][1] < 2_000_000
        # a client that refuses gzip (q=0) or names only another coding gets the bytes as is
        for refusal in ("gzip;q=0", "identity", "br"):
            headers, body = fetch(server, "/static/app.js", refusal)
            assert "content-encoding" not in headers and body.startswith(b"//"), refusal

        # the event stream: one gzip stream, flushed per event, so each arrives at once
        with socket.create_connection((server.host, server.port), timeout=10) as sock:
            sock.sendall(b"GET /events HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\n\r\n")
            stream = sock.makefile("rb")
            head = b""
            while not head.endswith(b"\r\n\r\n"):
                head += stream.readline()
            assert b"Content-Encoding: gzip" in head
            inflate = zlib.decompressobj(31)
            text = b""
            while b"event: snapshot" not in text or not text.endswith(b"\n\n"):
                text += inflate.decompress(stream.read1(65536))
            wait_for(lambda: server.clients == 1)
            server.add(message(30))
            while b"event: frame" not in text:
                text += inflate.decompress(stream.read1(65536))
            name, event = read_event(io.BytesIO(text.split(b"\n\n", 1)[1]))
            assert name == "frame" and event["frame"]["seq"] == 30


def test_accept_encoding_is_read_as_http_defines_it() -> None:
    assert accepts_gzip("gzip") and accepts_gzip("deflate, GZIP;q=0.5") and accepts_gzip("*")
    assert not accepts_gzip(None) and not accepts_gzip("") and not accepts_gzip("br")
    assert not accepts_gzip("gzip;q=0") and not accepts_gzip("*, gzip;q=0")
    assert not accepts_gzip("gzip;q=bad") and accepts_gzip("identity, x-gzip")
