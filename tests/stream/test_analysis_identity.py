"""A derived run's identity survives a restart after a rebuild.

Found in CI (stop 28): ``serve`` killed mid-run and started again wrote a *second* derived run
for the same raw run. The analysis identity hashed the serving search and the serving
model's hyperparameters; a rebuild replaces both (e36945b: the rebuilt model's
hyperparameters serve), the state saved after it holds the new ones, so the restarted
process hashed another identity than the one the first process had given the run. The
identity is the *preparation's*: fixed when the model is prepared, saved with the state.
"""

from __future__ import annotations

from pathlib import Path

from motex_stream.stream.commands.runner import LazyAnalyzer
from motex_stream.stream.frames import Frame
from tests.stream.two_motifs import PreparedState


def test_identity_after_rebuilds_and_restart_is_the_preparation_s(
    small_state: PreparedState, tmp_path: Path
) -> None:
    series = small_state.series
    root = small_state.copy(tmp_path / "state")
    # every frame rebuilt with its own search: the serving search and hyperparameters change
    settings = small_state.settings.updated(rebuild_every=1, rebuild_search="search")
    first = LazyAnalyzer(settings, root, save_every=1)
    frames = [Frame("run", s, float(s), series.r, series.frame(s - 1)) for s in (1, 2, 3, 4, 5)]
    identity = first.analysis_identity(frames[0])
    assert identity is not None and first.inner is not None
    searches = [list(first.inner.search)]
    for frame in frames[1:]:
        first.analyze(frame)
        searches.append(list(first.inner.search))
    assert any(s != searches[0] for s in searches[1:]), "no rebuild changed the search"
    assert first.analysis_identity(frames[-1]) == identity  # the same process, after rebuilds

    restarted = LazyAnalyzer(settings, root)  # loads the state the rebuilds saved
    assert restarted.inner is not None and restarted.inner.search == searches[-1]
    assert restarted.analysis_identity(frames[-1]) == identity

    # a state prepared on other data is another analysis
    other = tmp_path / "other"
    fresh = LazyAnalyzer(
        settings, other, save_every=1
    )  # no state: prepares on the frame it is given
    fresh.analyze(frames[3])
    assert fresh.analysis_identity(frames[3]) != identity
