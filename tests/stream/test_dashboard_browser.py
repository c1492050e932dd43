"""The dashboard in a real browser: headless Chromium against a running service over ZMQ.

Nothing is mocked: the real analyzer (two-motif series, prepared once) runs in a
:class:`StreamService` that publishes on a real ZMQ socket; ``serve_subscription`` (what
``motex-stream dashboard`` runs) subscribes and serves the page on 127.0.0.1; Chromium loads it.
A test subscriber on the same socket records what was published, and the page's plots are
compared with it. Screenshots go to ``test-artefacts/`` (see ``browser.py``).
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from motex_stream.stream.frames import Frame
from motex_stream.stream.publishers.zmq_pub import Subscriber, ZmqPublisher
from motex_stream.stream.service import StreamService
from motex_stream.stream.sim.series import TwoMotifSeries
from motex_stream.stream.sources.memory_source import SeriesSource
from tests.stream.browser import chromium, open_page, require_browser, screenshot, wait_until
from tests.stream.conftest import free_port
from tests.stream.dashboard_feed import Dashboard, publish, published_dashboard
from tests.stream.two_motifs import PreparedState

pytestmark = pytest.mark.slow

N_FRAMES = 8
N_RESTART = 3
#: s between frames where only the end state is checked (the column-by-column growth is
#: checked with a FrameGate instead: no clock can pace it under every load)
INTERVAL = 1.0


#: the per-frame settings of the page's model (runtime: the session's small model serves them)
RUNTIME = {"max_trees": 150}


@pytest.fixture(scope="module")
def prepared(small_state: PreparedState) -> PreparedState:
    """The session's small two-motif model (prepared on frame 1 of its ramp): what the page
    shows is checked against what was published, whatever the model finds."""
    require_browser()  # before the preparation: no browser, nothing to prepare for
    return small_state


@pytest.fixture(scope="module")
def series(prepared: PreparedState) -> TwoMotifSeries:
    return dataclasses.replace(prepared.series, n_frames=N_FRAMES)  # the ramp over N_FRAMES


def start_service(
    series,
    prepared: PreparedState,
    to: Path,
    address: str,
    n: int,
    interval: float | None = INTERVAL,
    frame: Callable[[int], np.ndarray] | None = None,
) -> StreamService:
    """A service (fresh analyzer from a copy of the saved state at ``to``) publishing ``n``
    frames on ``address`` (``frame``: the series' frames unless given)."""
    analyzer = prepared.analyzer(to, **RUNTIME)
    publisher = ZmqPublisher(address)
    # the dashboard's and the test's subscribers: wait for both, or the first frames vanish
    assert publisher.wait_for_subscribers(2, timeout=15)
    source = SeriesSource(frame or series.frame, series.r, n, interval=interval)
    service = StreamService({analyzer.name: analyzer}, [source], [publisher])
    service.start()
    return service


def page_state(driver) -> dict:
    """What the page shows, read from the plots' own data and the ranking table."""
    return driver.execute_script(
        """
        const sec = document.querySelector('section.model');
        if (!sec) return {columns: 0};
        const heat = sec.querySelector('.heatmap'), m3d = sec.querySelector('.model3d');
        const fit = sec.querySelector('.fit');
        const rows = Array.from(sec.querySelectorAll('.ranking tbody tr')).map((tr) => ({
            atom: +tr.dataset.atom, value: tr.querySelector('.value').textContent,
            label: tr.dataset.label, badge: tr.querySelector('.badge').textContent}));
        const traces = (div) => (div.data || []);
        return {
            columns: heat.data ? heat.data[0].x.length : 0,
            seqs: heat.data ? heat.data[0].x : [],
            z: heat.data ? heat.data[0].z : [],
            atoms3d: traces(m3d).filter((t) => t.mode === 'markers')
                .reduce((n, t) => n + t.x.length, 0),
            fitPoints: traces(fit).length ? traces(fit)[0].x.length : 0,
            fitTraces: traces(fit).map((t) => t.name),
            rows, status: document.getElementById('status').textContent,
            run: sec.querySelector('.run').textContent,
            stats: window.motex.stats,
        };
        """
    )


class Recorder:
    """Records every published message on a thread (a SUB socket only resubscribes after a
    publisher restart while its owner keeps polling it, as the dashboard does)."""

    def __init__(self, address: str) -> None:
        self.messages: list[dict] = []
        self.stop = threading.Event()
        self.subscriber = Subscriber(address)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            got = self.subscriber.recv(timeout=0.1)
            if got is not None:
                self.messages.append(got[1])

    def take(self, n: int, timeout: float = 120.0) -> list[dict]:
        wait_until(lambda: len(self.messages) >= n, timeout, f"{n} published messages")
        taken, self.messages = self.messages[:n], self.messages[n:]
        return taken

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.subscriber.close()


class FrameGate:
    """The series' frames, each handed to the source only once the test releases it: the
    page's growth is then checked frame by frame, whatever the machine's load (paced by a
    clock, a stalled first frame under load let the frames queue and reach the page as one
    step of 8 columns)."""

    def __init__(self, frame: Callable[[int], np.ndarray]) -> None:
        self.frame = frame
        self._released = threading.Semaphore(0)

    def release(self) -> None:
        self._released.release()

    def __call__(self, i: int) -> np.ndarray:
        if not self._released.acquire(timeout=120):
            raise TimeoutError(f"frame {i + 1} was never released")
        return self.frame(i)


def test_page_follows_a_running_service_and_survives_its_restart(series, prepared, tmp_path):
    address = f"tcp://127.0.0.1:{free_port()}"
    dashboard = Dashboard(address)
    recorder = Recorder(address)
    service = None
    try:
        with chromium() as driver:
            t0 = time.monotonic()
            driver.get(dashboard.url)
            wait_until(
                lambda: driver.execute_script("return window.motex !== undefined"),
                what="the page script",
            )
            gate = FrameGate(series.frame)
            service = start_service(
                series, prepared, tmp_path / "state", address, N_FRAMES, None, frame=gate
            )

            # the heatmap gains a column with each frame: frame k is sent only once the page
            # shows k - 1 columns, and the page must then show exactly k
            seen: list[int] = []
            for k in range(1, N_FRAMES + 1):
                gate.release()
                wait_until(
                    lambda k=k: page_state(driver)["columns"] >= k,
                    timeout=120,
                    what=f"heatmap column {k}",
                    every=0.1,
                )
                seen.append(page_state(driver)["columns"])
            assert seen == list(range(1, N_FRAMES + 1)), f"the heatmap grew in steps {seen}"
            messages = recorder.take(N_FRAMES)
            service.wait(30)

            # the 3-D view is drawn last (after the 2-D plots): wait for it to hold the model
            state = wait_until(
                lambda: (s := page_state(driver))["atoms3d"] and s, what="the 3-D view"
            )
            # the values drawn are the values published, frame by frame and atom by atom
            assert state["seqs"] == [m["seq"] for m in messages]
            published = np.array(
                [[c["value"] for c in m["contributions"]] for m in messages], dtype=float
            ).T
            np.testing.assert_allclose(np.array(state["z"], dtype=float), published, rtol=1e-12)
            last = {c["atom"]: c["value"] for c in messages[-1]["contributions"]}
            labels = {c["atom"]: c["label"] for c in messages[-1]["contributions"]}
            assert [r["atom"] for r in state["rows"]] == sorted(last, key=last.get)
            for row in state["rows"]:
                assert float(row["value"]) == pytest.approx(last[row["atom"]], abs=6e-5)
                assert row["label"] == row["badge"] == labels[row["atom"]]
            # the 3-D view holds every atom of the model, the fit plot every point sent
            assert state["atoms3d"] == len(messages[0]["structure"]["elements"]) == 65
            assert state["fitPoints"] == len(messages[-1]["fit"]["r"]) > 100
            assert state["fitTraces"] == ["G(r) data", "best catalogue motif", "difference"]
            # the last frame's motif is B (atoms 13-25): the most wanted atoms are B's
            assert all(r["atom"] > 12 for r in state["rows"][:5])
            assert state["stats"]["firstRender"] is not None
            screenshot(driver, "dashboard-live")

            # service restart: a new process binds the same address and starts a new run
            service.stop()
            service = None
            time.sleep(1.0)
            service = start_service(series, prepared, tmp_path / "restarted", address, N_RESTART)
            after = wait_until(
                lambda: (s := page_state(driver))["columns"] == N_RESTART and s,
                timeout=120,
                what="the new run's frames after the restart",
            )
            restarted = recorder.take(N_RESTART)
            assert after["run"] == f"run {restarted[0]['source']}"
            assert after["seqs"] == [1, 2, 3]
            assert after["status"] == "live"
            screenshot(driver, "dashboard-after-restart")
            elapsed = time.monotonic() - t0
            assert elapsed < 120
    finally:
        if service is not None:
            service.stop()
        recorder.close()
        dashboard.close()


def test_scrolling_back_recolours_every_view(series, prepared, tmp_path):
    address = f"tcp://127.0.0.1:{free_port()}"
    dashboard = Dashboard(address)
    recorder = Recorder(address)
    service = None
    try:
        with chromium() as driver:
            driver.get(dashboard.url)
            service = start_service(series, prepared, tmp_path / "state", address, N_FRAMES)
            messages = recorder.take(N_FRAMES)
            wait_until(lambda: page_state(driver)["columns"] == N_FRAMES, what="all frames")

            # a page opened now gets the run from the snapshot (older fits on request)
            driver.refresh()
            wait_until(lambda: page_state(driver)["columns"] == N_FRAMES, what="the snapshot")

            # scroll back to frame 2 with the slider (as a user drags it)
            driver.execute_script(
                """const s = document.querySelector('.frame-slider');
                   s.value = 1; s.dispatchEvent(new Event('input'));"""
            )
            view = wait_until(lambda: selected(driver, 2), what="frame 2 selected")
            values = {c["atom"]: c["value"] for c in messages[1]["contributions"]}
            labels = {c["atom"]: c["label"] for c in messages[1]["contributions"]}
            assert view["line"] == 2  # the heatmap marks the frame shown
            fit = wait_until(lambda: fit_of(driver, 2), what="frame 2's fit curve")
            np.testing.assert_allclose(fit["g"], messages[1]["fit"]["g"], rtol=1e-12)
            np.testing.assert_allclose(fit["g_calc"], messages[1]["fit"]["g_calc"], rtol=1e-12)
            assert view["follow"] is False
            assert [r["atom"] for r in view["rows"]] == sorted(values, key=values.get)
            # the table and the 3-D view show frame 2's labels: one trace (colour) per label
            assert {r["atom"]: r["label"] for r in view["rows"]} == labels
            assert sorted(view["perm"]) == sorted(values)
            for atom, lab, text in zip(view["perm"], view["labels"], view["hover"], strict=True):
                assert lab == labels[atom]
                # hover: "W #5<br>contribution -0.0123 ± 0.0045 ΔRwp<br>label keep"
                shown = float(text.split("contribution ")[1].split(" ")[0])
                assert shown == pytest.approx(values[atom], abs=6e-5, rel=1e-2)
                assert text.endswith(f"<br>label {labels[atom]}")
            screenshot(driver, "dashboard-scrolled-back")

            # back to live: the latest frame again
            driver.find_element("css selector", ".follow").click()
            view = wait_until(lambda: selected(driver, N_FRAMES), what="live again")
            assert view["follow"] is True and view["line"] is None
    finally:
        if service is not None:
            service.stop()
        recorder.close()
        dashboard.close()


def selected(driver, seq: int) -> dict | None:
    """The frame the page shows, if it is ``seq``: table, 3-D label traces and hover texts."""
    view = driver.execute_script(
        """
        const sec = document.querySelector('section.model');
        const m = window.motex.models[sec.dataset.model];
        const heat = sec.querySelector('.heatmap'), m3d = sec.querySelector('.model3d');
        const perm = m3d.data.filter((t) => t.meta === 'permutable');
        const shapes = (heat.layout.shapes || []).filter((sh) => sh.name === 'selected');
        const title = m3d.layout.title.text;  // the 3-D view is drawn after the 2-D plots
        return {
            seq: +sec.dataset.selectedSeq, follow: m.follow,
            seq3d: parseInt(title.split('frame ')[1], 10),
            line: shapes.length ? shapes[0].x0 : null,
            rows: Array.from(sec.querySelectorAll('.ranking tbody tr')).map((tr) => ({
                atom: +tr.dataset.atom, label: tr.dataset.label})),
            perm: perm.flatMap((t) => t.text.map((h) => +h.split('#')[1].split('<')[0])),
            labels: perm.flatMap((t) => t.text.map(() => t.name)),
            hover: perm.flatMap((t) => t.text),
        };
        """
    )
    return view if view["seq"] == view["seq3d"] == seq else None


def fit_of(driver, seq: int) -> dict | None:
    """The data and best-motif curves the fit plot draws, once it shows frame ``seq``."""
    return driver.execute_script(
        """
        const div = document.querySelector('section.model .fit');
        if (!div.data || div.data.length < 2) return null;
        if (!div.layout.title.text.includes('frame ' + arguments[0] + ' ')) return null;
        return {g: div.data[0].y, g_calc: div.data[1].y};
        """,
        seq,
    )


def test_open_page_reconnects_when_the_dashboard_restarts():
    """The page's event stream reconnects by itself to a restarted dashboard server."""
    from tests.stream.test_dashboard import message

    require_browser()
    port = free_port()
    with ZmqPublisher("tcp://127.0.0.1:0") as publisher:
        dashboard = Dashboard(publisher.address, port)
        try:
            with chromium() as driver:
                open_page(driver, dashboard.url)
                publish(publisher, (message(seq) for seq in (1, 2, 3)))
                wait_until(lambda: page_state(driver)["columns"] == 3, what="3 frames")

                dashboard.close()  # the dashboard goes away...
                wait_until(
                    lambda: "reconnecting" in page_state(driver)["status"], what="reconnecting"
                )
                dashboard = Dashboard(publisher.address, port)  # ...and comes back on the same port
                publish(publisher, (message(s, source="run-after") for s in (1, 2)), 2)
                state = wait_until(
                    lambda: (s := page_state(driver))["columns"] == 2 and s,
                    what="the page redrawn from the new server",
                )
                assert state["run"] == "run run-after" and state["status"] == "live"
                assert driver.execute_script("return window.motex.stats.reconnects") >= 1
        finally:
            dashboard.close()


N_CROSS = 12
CROSSOVER = 4.5  # 0-based frame where the series passes from motif A to motif B


def test_labels_whiskers_and_the_change_marker_show_what_was_published(tmp_path, prepared):
    """A series that crosses from motif A to B: the service reports one structure change;
    the page marks it on the heatmap and the trends at the frame it is dated to, with the
    gained and lost atoms on hover, and the ranked atoms carry the published labels and
    intervals (uncertain ones set apart)."""
    crossing = dataclasses.replace(
        prepared.series, n_frames=N_CROSS, noise=0.01, crossover=CROSSOVER
    )
    address = f"tcp://127.0.0.1:{free_port()}"
    dashboard = Dashboard(address)
    recorder = Recorder(address)
    service = None
    try:
        with chromium() as driver:
            driver.get(dashboard.url)
            service = start_service(crossing, prepared, tmp_path / "state", address, N_CROSS, 0.2)
            messages = recorder.take(N_CROSS)
            changes = [m["change"] for m in messages if m.get("change")]
            assert len(changes) == 1, changes
            change = changes[0]
            reported = next(m["seq"] for m in messages if m.get("change"))

            marks = wait_until(
                lambda: (s := change_marks(driver))["columns"] == N_CROSS and s,
                what="every frame with its change marker",
            )
            assert marks["heatLines"] == [change["frame"]]
            assert marks["heatMarkers"] == [change["frame"]]
            assert marks["trendLines"] == 1 and len(marks["trendMarkers"]) == 1
            names = {c["atom"]: c["element"] + str(c["atom"]) for c in messages[0]["contributions"]}
            hover = marks["heatHover"][0]
            assert f"structure change at frame {change['frame']} " in hover
            assert f"(reported with frame {reported})" in hover
            gained = ", ".join(names[a] for a in change["atoms_gained"]) or "none"
            lost = ", ".join(names[a] for a in change["atoms_lost"]) or "none"
            assert f"gained: {gained}<br>" in hover and f"lost: {lost}<br>" in hover
            assert marks["trendHover"] == marks["heatHover"]

            # the ranked atoms: labels and intervals as published, uncertain ones set apart
            last = {c["atom"]: c for c in messages[-1]["contributions"]}
            rows = marks["rows"]
            assert sorted(r["atom"] for r in rows) == sorted(last)
            for row in rows:
                c = last[row["atom"]]
                assert row["label"] == row["badge"] == c["label"]
                assert float(row["ciLow"]) == c["ci_low"] and float(row["ciHigh"]) == c["ci_high"]
                assert row["whisker"], "every atom with an interval gets a whisker"
                assert row["uncertainClass"] == (c["label"] == "uncertain")
            screenshot(driver, "dashboard-change-marker")

            # an uncertain row looks different from keep and remove rows
            styles = driver.execute_script(
                """
                const probe = (label) => {
                    const tr = document.createElement('tr');
                    tr.className = 'label-' + label;
                    tr.innerHTML = '<td><span class="badge ' + label + '">x</span></td>';
                    document.querySelector('.ranking tbody').appendChild(tr);
                    const td = getComputedStyle(tr.firstChild);
                    const badge = getComputedStyle(tr.querySelector('.badge'));
                    const out = [td.backgroundColor, td.fontStyle, badge.backgroundColor];
                    tr.remove();
                    return out;
                };
                return {keep: probe('keep'), remove: probe('remove'),
                        uncertain: probe('uncertain')};
                """
            )
            assert styles["uncertain"] != styles["keep"] and styles["uncertain"] != styles["remove"]
            assert styles["uncertain"][1] == "italic"
    finally:
        if service is not None:
            service.stop()
        recorder.close()
        dashboard.close()


def change_marks(driver) -> dict:
    """The change markers of the heatmap and trends, and the ranked rows' labels."""
    return driver.execute_script(
        """
        const sec = document.querySelector('section.model');
        if (!sec) return {columns: 0};
        const heat = sec.querySelector('.heatmap'), trends = sec.querySelector('.trends');
        if (!heat.data || !trends.data) return {columns: 0};
        const named = (div, name) => (div.layout.shapes || []).filter((s) => s.name === name);
        const trace = (div) => div.data.find((t) => t.name === 'changes');
        return {
            columns: heat.data[0].x.length,
            heatLines: named(heat, 'change').map((s) => s.x0),
            heatMarkers: trace(heat).x, heatHover: trace(heat).text,
            trendLines: named(trends, 'change').length,
            trendMarkers: trace(trends).x, trendHover: trace(trends).text,
            rows: Array.from(sec.querySelectorAll('.ranking tbody tr')).map((tr) => ({
                atom: +tr.dataset.atom, label: tr.dataset.label,
                badge: tr.querySelector('.badge').textContent,
                ciLow: tr.dataset.ciLow, ciHigh: tr.dataset.ciHigh,
                whisker: tr.querySelector('.whisker') !== null,
                uncertainClass: tr.classList.contains('label-uncertain')})),
        };
        """
    )


def test_crafted_strings_never_run_in_the_page():
    """Hostile messages on the subscribed address (real ZMQ) never run script in Chromium.

    Markup in a label or a value (the injection issue 19 found: both went into innerHTML)
    is refused by the server's schema check; markup in an element symbol, which the schema
    allows (any string), reaches the page and is shown as text. The page itself runs under
    its Content-Security-Policy without a single violation (plotly.js included: heatmap,
    3-D view, fit and trends are drawn).
    """
    from tests.stream.test_dashboard import crafted_messages, message

    require_browser()
    evil_element = "<img src=x onerror=\"window.__pwned='element'\">"
    shown = message(1)  # the model's first message: it names the elements
    shown["contributions"] = [dict(c) for c in shown["contributions"]]
    shown["contributions"][0]["element"] = evil_element
    shown["structure"] = {
        "elements": [evil_element, "W", "O", "O", "W"],
        "xyz": [[0, 0, 0], [2, 0, 0], [1, 1, 0], [1, -1, 0], [0, 2, 0]],
        "permutable": [1, 2, 5],
        "bonded": [[1], [2], [1, 2], [2], [5]],
    }
    shown["fit"] = {"r": [1.0, 2.0, 3.0], "g": [0.5, 0.25, 0.1], "g_calc": [0.4, 0.2, 0.1]}
    crafted = crafted_messages()
    with published_dashboard() as (publisher, dashboard), chromium() as driver:
        # collect CSP violations from the very start of the page
        driver.execute_cdp_cmd(
            "Page.addScriptToEvaluateOnNewDocument",
            {
                "source": "window.__csp = []; document.addEventListener("
                "'securitypolicyviolation', (e) => window.__csp.push("
                "e.violatedDirective + ' ' + e.blockedURI));"
            },
        )
        open_page(driver, dashboard.url)
        publisher.send_message(shown)
        publisher.send_message(message(2))
        wait_until(lambda: page_state(driver)["columns"] == 2, what="two good frames")
        for m in crafted.values():
            publisher._send(str(m["model"]), json.dumps(m).encode())
        publisher.send_message(message(3))
        # until the frame after the hostile ones is drawn, or a handler ran
        state = wait_until(
            lambda: (
                driver.execute_script("return window.__pwned !== undefined")
                or ((s := page_state(driver))["columns"] == 3 and s)
            ),
            what="the frame after the hostile messages",
        )
        assert driver.execute_script("return window.__pwned === undefined"), (
            "injected markup ran: " + str(driver.execute_script("return window.__pwned"))
        )
        assert state["columns"] == 3
        wait_until(
            lambda: driver.execute_script(
                "const d = document.querySelector('section.model .model3d');"
                "return d && d.data && d.data.length > 0"
            ),
            what="the 3-D view drawn",
        )
        time.sleep(1.0)  # an onerror would fire as soon as the broken image fails
        screenshot(driver, "dashboard-hostile-strings")
        result = driver.execute_script(
            """
            const table = document.querySelector('.ranking tbody');
            return {
                pwned: window.__pwned === undefined ? null : String(window.__pwned),
                images: document.querySelectorAll('main img').length,
                atoms: Array.from(table.querySelectorAll('td.atom'))
                    .map((td) => td.textContent),
                csp: window.__csp,
            };
            """
        )
        assert result["pwned"] is None, result
        assert result["images"] == 0, result
        assert evil_element + "1" in result["atoms"], result  # shown as text
        assert result["csp"] == [], result["csp"]
        assert dashboard.server.rejected == len(crafted)
        assert state["status"] == "live"


def test_rebuilds_are_marked_on_the_heatmap():
    """A frame whose model_quality says ``rebuilt`` gets a dashed line and a hover marker on
    the heatmap: values on either side of it come from different surrogates."""
    from tests.stream.test_dashboard import message

    require_browser()
    with published_dashboard() as (publisher, dashboard), chromium() as driver:
        open_page(driver, dashboard.url)
        for seq in (1, 2, 3, 4):
            m = message(seq)
            m["model_quality"] = {
                **m["model_quality"],
                "rebuilt": seq == 3,
                "generation": int(seq >= 3),
            }
            publisher.send_message(m)
        marks = wait_until(
            lambda: driver.execute_script(
                """
                const heat = document.querySelector('section.model .heatmap');
                if (!heat || !heat.data || heat.data[0].x.length < 4) return null;
                const t = heat.data.find((d) => d.name === 'rebuilds');
                return {lines: (heat.layout.shapes || []).filter(
                            (s) => s.name === 'rebuild').map((s) => s.x0),
                        markers: t.x, hover: t.text};
                """
            ),
            what="four frames drawn",
        )
        assert marks["lines"] == [3] and marks["markers"] == [3]
        assert "surrogate rebuilt at frame 3 (generation 1)" in marks["hover"][0]


def labelled_message(seq: int) -> dict:
    """A message with one atom of each label, a starting model and a fit curve."""
    from motex_stream.stream.messages import build_message
    from tests.stream.results import frame_result

    entries = [
        {"atom": 1, "element": "W", "value": -0.02, "spread": 0.01, "ci_low": -0.03,
         "ci_high": -0.01, "label": "keep"},
        {"atom": 2, "element": "W", "value": 0.001, "spread": 0.01, "ci_low": -0.004,
         "ci_high": 0.006, "label": "uncertain"},
        {"atom": 5, "element": "W", "value": 0.03, "spread": 0.01, "ci_low": 0.02,
         "ci_high": 0.04, "label": "remove"},
    ]  # fmt: skip
    r = np.linspace(1, 10, 200)
    result = frame_result(
        model="keggin",
        contributions=entries,
        # the best catalogue motif keeps atoms 2 and 5: the labels say otherwise, and the
        # page must not call them kept for it
        best={"mask": [0, 1, 1], "rwp": 0.3, "scale": 1.0, "zoom": 1.0},
        timing={"fit": 0.1},
        model_quality={"mae": 0.004, "n_trees": 10.0, "rebuilt": 0.0},
        n_refit=100,
        fit={"r": r.tolist(), "g": np.sin(r).tolist(), "g_calc": (0.9 * np.sin(r)).tolist()},
        structure={
            "elements": ["W", "W", "O", "O", "W"],
            "xyz": [[0, 0, 0], [2, 0, 0], [1, 1, 0], [1, -1, 0], [0, 2, 0]],
            "permutable": [1, 2, 5],
            "bonded": [[1], [2], [1, 2], [2], [5]],
        },
    )
    return build_message(
        result, Frame("run-a", seq, 1.7e9 + seq, r, np.sin(r)), received_at=10.0, published_at=10.2
    )


def test_kept_means_the_label_everywhere_and_no_axis_text_overlaps():
    """One vocabulary (issue 22, item 7): the page called three things "kept" (the best
    motif's mask, value < a threshold, the label). Now the label is the only one: the table,
    the 3-D view's legend and colours say keep/uncertain/remove, the best motif's mask is only
    named as the best catalogue motif, the colour bar has its unit, and no two texts of a plot
    (axis titles, tick labels, legends, colour bars) overlap."""
    require_browser()
    with published_dashboard() as (publisher, dashboard), chromium() as driver:
        open_page(driver, dashboard.url)
        for seq in (1, 2, 3):
            publisher.send_message(labelled_message(seq))
        wait_until(
            lambda: driver.execute_script(
                "const d = document.querySelector('section.model .model3d');"
                "return d && d.data && d.data.length > 2"
            ),
            what="every plot drawn",
        )
        page = settled(driver)
        screenshot(driver, "dashboard-vocabulary")
    # "kept" and "removed" are gone: the label's words are the page's only vocabulary
    words = set(page["text"].lower().replace("(", " ").replace(")", " ").split())
    assert not words & {"kept", "removed", "kept:", "removed:"}, page["text"]
    assert page["badges"] == ["keep", "uncertain", "remove"]
    assert "label" in page["header"] and "" not in page["header"]
    assert page["legend3d"] == ["other atoms", "keep", "uncertain", "remove"]
    assert page["hover3d"] == [
        ["keep", ["W #1<br>contribution -0.0200 ± 0.0100 ΔRwp<br>label keep"]],
        ["uncertain", ["W #2<br>contribution 0.0010 ± 0.0100 ΔRwp<br>label uncertain"]],
        ["remove", ["W #5<br>contribution 0.0300 ± 0.0100 ΔRwp<br>label remove"]],
    ]
    # the best-motif mask appears only as the best catalogue motif
    assert page["fitLegend"] == ["G(r) data", "best catalogue motif", "difference"]
    assert "best catalogue motif (red): 2 of 3 atoms" in page["fitTitle"]
    assert page["colourbar"] == ["contribution(ΔRwp)"]  # two lines: <br> leaves no space
    assert page["overlaps"] == [], page
    # the time axis's tick labels lie below the lowest panel (they crossed the middle one)
    assert page["trendTicks"], page
    assert min(page["trendTicks"]) >= page["trendBottom"] - 1, (
        page["trendTicks"],
        page["trendBottom"],
    )


def settled(driver) -> dict:
    """The page's words and text boxes, once its plots stop moving (automargin relayouts
    after the first draw): read until two readings agree, at most 5 s."""
    last: dict | None = None
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        page = driver.execute_script(
            """
                const sec = document.querySelector('section.model');
                const texts = (sel) => Array.from(sec.querySelectorAll(sel))
                    .map((e) => e.textContent.trim());
                const trends = sec.querySelector('.trends');
                const y3 = trends._fullLayout.yaxis3;
                const top = trends.getBoundingClientRect().top;
                return {
                    text: document.body.innerText,
                    legend3d: texts('.model3d .legendtext'),
                    fitLegend: texts('.fit .legendtext'),
                    fitTitle: texts('.fit .gtitle, .fit .gtitle-subtitle').join(' | '),
                    badges: texts('.ranking .badge'),
                    header: texts('.ranking th'),
                    colourbar: texts('.heatmap .cbtitle'),
                    hover3d: sec.querySelector('.model3d').data
                        .filter((t) => t.meta === 'permutable' && t.x.length)
                        .map((t) => [t.name, t.text]),
                    // a tick plotly has hidden has an all-zero box (top 0): only drawn ticks count
                    trendTicks: Array.from(trends.querySelectorAll('.xtick text'))
                        .map((t) => [t.textContent.trim(), t.getBoundingClientRect()])
                        .filter(([t, r]) => t && r.width > 0 && r.height > 0)
                        .map(([t, r]) => r.top - top),
                    trendBottom: y3._offset + y3._length,
                    overlaps: ['heatmap', 'fit', 'trends', 'model3d'].flatMap((name) => {
                        const div = sec.querySelector('.' + name);
                        const boxes = Array.from(div.querySelectorAll(
                            '.gtitle, .gtitle-subtitle, .xtitle, .ytitle, .y2title, .y3title, ' +
                        '.xtick text, ' +
                            '.ytick text, .y2tick text, .y3tick text, .legendtext, ' +
                            '.cbtitle, .cbaxis text'))
                            .map((e) => [e.textContent, e.getBoundingClientRect()])
                            .filter(([t, r]) => t.trim() && r.width > 0 && r.height > 0);
                        const out = [];
                        boxes.forEach(([ta, a], i) => boxes.slice(i + 1).forEach(([tb, b]) => {
                            const w = Math.min(a.right, b.right) - Math.max(a.left, b.left);
                            const h = Math.min(a.bottom, b.bottom) - Math.max(a.top, b.top);
                            if (w > 1 && h > 1) out.push(name + ': ' + ta + ' / ' + tb);
                        }));
                        return out;
                    }),
                };
                """
        )
        if page == last:
            break
        last = page
        time.sleep(0.2)
    assert last is not None
    return last
