"""``steps.fit_masks`` refuses an unknown zoom mode before it fits anything, locally (one call
or in chunks) and on Dask, through the fitters' own check (one check per path: the step no
longer checks a third time, issue 24)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from motex_stream.analysis import steps


@pytest.mark.parametrize("n", [10, steps.FIT_CHUNK + 1], ids=["one-call", "chunked"])
def test_an_unknown_zoom_is_refused_before_any_fit(
    prepared_109725: Any, golden_fits: Any, monkeypatch: pytest.MonkeyPatch, n: int
) -> None:
    from motex_stream.fitting import dispatch

    curves, _ = golden_fits
    g = np.asarray(curves["gobs"])
    masks = np.ones((n, 24), dtype=bool)
    fitted: list[int] = []
    real = dispatch.fit_isotropic

    def counting(prepared: Any, m: np.ndarray, g: np.ndarray) -> Any:
        fitted.append(len(m))
        return real(prepared, m, g)

    monkeypatch.setattr(dispatch, "fit_isotropic", counting)
    with pytest.raises(ValueError, match="unknown zoom mode 'spherical'"):
        steps.fit_masks(prepared_109725, masks, g, "spherical")
    assert fitted == []
    # the same call with a known mode fits every motif
    assert len(steps.fit_masks(prepared_109725, masks[:10], g, "isotropic").rwp) == 10
    assert fitted == [10]


def test_an_unknown_zoom_starts_no_dask_task(
    prepared_109725: Any, golden_fits: Any, dask_client: Any
) -> None:
    curves, _ = golden_fits
    g = np.asarray(curves["gobs"])
    before = set(dask_client.futures)  # the session's client may hold earlier tests' futures
    with pytest.raises(ValueError, match="unknown zoom mode"):
        steps.fit_masks(prepared_109725, np.ones((10, 24), bool), g, "spherical", dask=dask_client)
    assert set(dask_client.futures) == before  # nothing was submitted, not even the model
