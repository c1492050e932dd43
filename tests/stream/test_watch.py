"""The terminal view: sparklines and values rendered from real published messages."""

from __future__ import annotations

import io
import threading
import time

import numpy as np
import pytest

from motex_stream.stream.commands.watch import SPARK, WatchState, main, render, sparkline, watch
from motex_stream.stream.frames import Frame
from motex_stream.stream.messages import build_message
from motex_stream.stream.publishers.zmq_pub import ZmqPublisher
from tests.stream.results import frame_result


def message(seq: int, change: dict | None = None) -> dict:
    values = [-0.05 + 0.01 * seq, 0.02 - 0.005 * seq, 0.1]  # atom 3 constant
    result = frame_result(
        model="keggin",
        contributions=[
            {"atom": i + 1, "element": el, "value": v, "spread": 0.001, "label": lab}
            for i, (el, v, lab) in enumerate(
                zip(["W", "W", "O"], values, ["keep", "uncertain", "remove"], strict=True)
            )
        ],
        best={"mask": [1, 1, 0], "rwp": 0.3 - 0.01 * seq},
        timing={"fit": 0.1},
        model_quality={"mae": 0.004},
        n_refit=10,
        change=change,
    )
    r = np.linspace(1, 10, 20)
    frame = Frame("run-w", seq, 1_700_000_000.0 + seq, r, np.sin(r))
    return build_message(result, frame, received_at=time.time())


def publish_when_watched(pub: ZmqPublisher, n: int) -> threading.Thread:
    def go() -> None:
        assert pub.wait_for_subscribers(1, timeout=10)
        for seq in range(1, n + 1):
            pub.send_message(message(seq))  # type: ignore[arg-type]
            time.sleep(0.02)

    t = threading.Thread(target=go)
    t.start()
    return t


def test_sparkline() -> None:
    assert sparkline([0, 1, 2, 3, 4, 5, 6, 7]) == SPARK
    assert sparkline([1.0, 1.0]) == "▄▄"
    assert sparkline([None, 0.0, float("nan"), 1.0]) == " ▁ █"
    assert sparkline(range(100), width=5) == "▁▃▅▇█"
    assert sparkline([]) == ""


def test_render_without_messages() -> None:
    assert "waiting" in render(WatchState())


def test_watch_renders_real_published_messages() -> None:
    with ZmqPublisher("tcp://127.0.0.1:*") as pub:
        sender = publish_when_watched(pub, 8)
        out = io.StringIO()
        state = watch(pub.address, max_messages=8, out=out, refresh=0.0, timeout=10)
        sender.join(5)
    assert state.messages == 8 and state.seq == 8
    text = render(state)
    assert "model keggin" in text and "run run-w" in text and "frame 8" in text
    assert "Rwp 0.2200" in text and "kept 2/3" in text and "mask 110" in text
    assert "frames/s" in text and state.frame_rate is not None and state.frame_rate > 1
    lines = {ln.split()[0]: ln for ln in text.splitlines() if ln.strip()[:1].isdigit()}
    assert "+0.03000" in lines["1"] and lines["1"].endswith("▁▂▃▄▅▆▇█")  # rising
    assert "keep" in lines["1"] and "uncertain" in lines["2"] and "remove" in lines["3"]
    assert "-0.02000" in lines["2"] and lines["2"].endswith("█▇▆▅▄▃▂▁")  # falling
    assert "O" in lines["3"] and lines["3"].endswith("▄" * 8)  # constant
    assert out.getvalue().strip().endswith(text.splitlines()[-1])  # plain prints, not a TTY


@pytest.mark.parametrize("history", [3])
def test_history_is_bounded(history: int) -> None:
    state = WatchState(history=history)
    for seq in range(1, 10):
        state.update(message(seq), now=float(seq))
    assert len(state.atoms[1].values) == history
    assert state.frame_rate == pytest.approx(1.0)


def test_cli_once(capsys: pytest.CaptureFixture[str]) -> None:
    with ZmqPublisher("tcp://127.0.0.1:*") as pub:
        sender = publish_when_watched(pub, 1)
        assert main([pub.address, "--once", "--topic", "keggin"]) == 0
        sender.join(5)
    out = capsys.readouterr().out
    assert "model keggin" in out and "frame 1" in out


def test_the_latest_reported_change_stays_in_view() -> None:
    state = WatchState()
    state.update(message(1))
    assert "structure change: none reported" in render(state)
    change = {"frame": 2, "atoms_gained": [2], "atoms_lost": [1, 3], "confidence": 0.9712}
    state.update(message(4, change=change))
    state.update(message(5))  # reported once; the view keeps it
    assert (
        "structure change at frame 2 (reported with frame 4): gained W2; lost W1 O3; "
        "confidence 0.971" in render(state)
    )
