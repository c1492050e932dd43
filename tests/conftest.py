"""Shared fixtures: bundled data paths, the golden DiffPy-CMI references, and the expensive
things several test modules need (the prepared 109725 engine, one Dask cluster).

Each expensive fixture is made once per session (pytest scope) and handed out read-only or
restored after each test, so that sharing it saves time without letting one test's leftovers
change another test's numbers.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "motex_stream" / "data"
REFERENCE = ROOT / "tests" / "data" / "reference"
KEGGIN = DATA / "keggin"


@pytest.fixture(scope="session")
def keggin_gr() -> Path:
    return KEGGIN / "DanMAX_AlphaKeggin.gr"


@pytest.fixture(scope="session")
def model_109725():
    from motex_stream.structure import load_starting_model

    return load_starting_model(KEGGIN / "109725.xyz", ["W"], 2.5)


@pytest.fixture(scope="session")
def golden_pdf():
    return np.load(REFERENCE / "golden_pdf_curves.npz")


@pytest.fixture(scope="session")
def golden_fits():
    curves = np.load(REFERENCE / "golden_fit_curves.npz")
    meta = json.loads((REFERENCE / "golden_fit_curves_meta.json").read_text())
    return curves, meta


@pytest.fixture(scope="session")
def reference_rwp():
    """The 1000 DiffPy-CMI reference fits: masks (1000, 24), rwp, scale, zooms."""
    with open(REFERENCE / "keggin_109725_rwp.csv") as fh:
        rows = list(csv.DictReader(fh))
    masks = np.array([[int(r[f"w{i}"]) for i in range(1, 25)] for r in rows], dtype=bool)
    rwp = np.array([float(r["rwp"]) for r in rows])
    scale = np.array([float(r["scale"]) for r in rows])
    zoom = np.array([[float(r[f"zoomscale{i}"]) for i in (1, 2, 3)] for r in rows])
    return masks, rwp, scale, zoom


@pytest.fixture(scope="session")
def prepared_109725(golden_fits, model_109725):
    """The batched engine for 109725 on the reference fit grid (qmax 20, as the script sets)."""
    from motex_stream.analysis.steps import default_pdf_settings
    from motex_stream.pdf.batched import prepare_model

    curves, _ = golden_fits
    r = curves["r"]
    return prepare_model(model_109725, default_pdf_settings(r), r)


@pytest.fixture(scope="session")
def fitted_random_109725(
    prepared_109725: Any, golden_fits: Any
) -> Callable[[int, int], tuple[np.ndarray, np.ndarray]]:
    """``fitted(n, seed)``: ``random_catalogue(24, n, seed)`` of 109725 fitted (isotropic) to
    the golden G(r), as ``(masks, rwp)``; each catalogue fitted once per session.

    The arrays are read-only, so a test that changed them in place (and every later test
    using the same catalogue with it) fails at once instead of passing on altered data.
    """
    from motex_stream.analysis import steps
    from motex_stream.catalogue import random_catalogue

    made: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}

    def fitted(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        if (n, seed) not in made:
            masks = random_catalogue(24, n, seed)
            rwp = steps.fit_masks(prepared_109725, masks, golden_fits[0]["gobs"], "isotropic").rwp
            masks.flags.writeable = False
            rwp.flags.writeable = False
            made[(n, seed)] = (masks, rwp)
        return made[(n, seed)]

    return fitted


#: the session cluster's size: two worker processes of one thread each (one thread: two chunks
#: fitted at once in one process race on the process-wide BLAS thread limit)
DASK_WORKERS = 2


@pytest.fixture(scope="session")
def _dask_session_client() -> Iterator[Any]:
    """One real ``LocalCluster`` (2 worker processes on 127.0.0.1) for the whole session.

    Starting one costs seconds on 2 cores, and each worker process imports the package and
    compiles its kernels on its first task; every Dask test module used to start its own.
    """
    distributed = pytest.importorskip("distributed")
    cluster = distributed.LocalCluster(
        n_workers=DASK_WORKERS,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
    )
    client = distributed.Client(cluster, set_as_default=False)
    try:
        yield client
    finally:
        client.close()
        cluster.close()


@pytest.fixture
def dask_client(_dask_session_client: Any) -> Iterator[Any]:
    """The session's Dask client, at full strength before and after each test.

    A test may kill a worker (the nanny starts a fresh process): the next test waits for the
    cluster to be whole again, so no test sees another's damage.
    """
    _dask_session_client.wait_for_workers(DASK_WORKERS, timeout=120)
    try:
        yield _dask_session_client
    finally:
        _dask_session_client.wait_for_workers(DASK_WORKERS, timeout=120)
