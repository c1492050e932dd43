"""Worker utilisation and the keep-up warning, on a fake clock."""

from __future__ import annotations

import logging

import pytest

from motex_stream.stream.headroom import Headroom


def test_utilisation_is_busy_time_per_wall_second_over_the_window() -> None:
    h = Headroom(window_s=10.0)
    assert h.utilisation(now=0.0) == 0.0
    # 0.2 s of work every 0.5 s: 40 % busy
    for k in range(40):
        u = h.record("m", received=0.5 * k, started=0.5 * k, finished=0.5 * k + 0.2)
    assert u == pytest.approx(0.4, abs=0.03)
    # idle for 20 s: the window forgets the old work
    assert h.utilisation(now=40.0) == 0.0


def test_warns_once_per_interval_when_a_model_cannot_keep_up(
    caplog: pytest.LogCaptureFixture,
) -> None:
    h = Headroom(warn_every_s=30.0)
    with caplog.at_level(logging.WARNING):
        t = 0.0
        for k in range(30):  # frames every 0.1 s, 0.25 s of work each: falls behind
            t = max(t, 0.1 * k)
            h.record("slow", received=0.1 * k, started=t, finished=t + 0.25)
            t += 0.25
        for k in range(30):  # this model keeps up
            h.record("fast", received=0.5 * k, started=0.5 * k, finished=0.5 * k + 0.1)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1  # 7.5 s of frames: one warning, not one per frame
    assert "slow cannot keep up" in warnings[0] and "0.250 s" in warnings[0]
    ok, busy, interval = h.keeps_up("slow")
    assert not ok and busy == pytest.approx(0.25) and interval == pytest.approx(0.1)
    assert h.keeps_up("fast")[0]
