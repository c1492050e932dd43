"""``engine = "torch"`` reaches the Dask workers: the catalogue fits run there on the torch
backend the prepared model carries (its ``backend`` field), not with numpy (issue 13).

Before the fix the scattered copy of the prepared model dropped ``engine_cache`` (and with it
the recorded backend), and the task always called the numpy engines, so an
``analyze --engine torch --dask ADDRESS`` silently fitted with numpy on the workers.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pytest

distributed = pytest.importorskip("distributed")
torch = pytest.importorskip("torch", reason="the torch engine needs the gpu extra")

from motex_stream.analysis import scale_out, steps  # noqa: E402
from motex_stream.analysis.settings import ModelSettings  # noqa: E402
from motex_stream.catalogue import random_catalogue  # noqa: E402
from motex_stream.fitting import torch_engine  # noqa: E402
from motex_stream.pdf.batched import Backend  # noqa: E402
from tests.conftest import KEGGIN  # noqa: E402

RWP_TOL = 1e-5


@pytest.fixture(scope="module")
def engines(golden_fits):
    """The 109725 engine prepared twice on the golden grid: engine numpy and engine torch."""
    curves = golden_fits[0]
    base = ModelSettings(starting_model=KEGGIN / "109725.xyz", qmin=0.7, qmax=20.0)
    model = steps.load_model(base)
    out = {}
    for name in ("numpy", "torch"):
        out[name] = steps.prepare_engine(
            model, base.updated(engine=name, device="cpu"), curves["r"]
        )
    return out


def test_dask_workers_fit_with_torch(dask_client, engines, golden_fits):
    """3000 motifs in two 2048-motif tasks: the workers' Rwp is local torch's, and within
    1e-5 of numpy's (and not numpy's own numbers: another engine ran)."""
    g = golden_fits[0]["gobs"]
    masks = random_catalogue(24, 3000, 5, 3, 21)
    local_torch = steps.fit_masks(engines["torch"], masks, g, "isotropic")
    local_numpy = steps.fit_masks(engines["numpy"], masks, g, "isotropic")
    remote = steps.fit_masks(engines["torch"], masks, g, "isotropic", dask=dask_client)
    assert not np.array_equal(local_torch.rwp, local_numpy.rwp)  # the engines differ
    np.testing.assert_allclose(remote.rwp, local_torch.rwp, rtol=0, atol=1e-12)
    np.testing.assert_allclose(remote.scale, local_torch.scale, rtol=1e-12)
    np.testing.assert_allclose(remote.zoom, local_torch.zoom, rtol=0, atol=1e-12)
    np.testing.assert_allclose(remote.rwp, local_numpy.rwp, rtol=0, atol=RWP_TOL)
    # and the numpy-engine job on the same cluster still gives numpy's numbers exactly
    remote_numpy = steps.fit_masks(engines["numpy"], masks, g, "isotropic", dask=dask_client)
    np.testing.assert_array_equal(remote_numpy.rwp, local_numpy.rwp)


def test_dask_workers_fit_anisotropic_with_torch(dask_client, engines, golden_fits, reference_rwp):
    """The anisotropic mode too: 300 reference motifs, one task on a worker, torch there."""
    g = golden_fits[0]["gobs"]
    masks = reference_rwp[0][:300]
    local_torch = steps.fit_masks(engines["torch"], masks, g, "anisotropic")
    remote = steps.fit_masks(engines["torch"], masks, g, "anisotropic", dask=dask_client)
    np.testing.assert_allclose(remote.rwp, local_torch.rwp, rtol=0, atol=1e-12)
    assert remote.mode == "anisotropic"


def test_chunk_without_torch_falls_back_to_numpy(engines, golden_fits, monkeypatch, caplog):
    """A worker without the gpu extra fits the chunk with numpy and says so (a log warning),
    rather than failing the job: the numbers stay within 1e-5 of torch's."""
    g = np.ascontiguousarray(golden_fits[0]["gobs"], dtype=float)
    masks = random_catalogue(24, 200, 9, 3, 21)
    packed = np.packbits(masks, axis=1)
    numpy_rwp = steps.fit_masks(engines["numpy"], masks, g, "isotropic").rwp
    monkeypatch.setattr(torch_engine, "torch", None)
    with caplog.at_level(logging.WARNING, logger=scale_out.log.name):
        rwp, _, _ = scale_out.fit_chunk(engines["torch"], packed, 24, g, "isotropic")
    np.testing.assert_array_equal(rwp, numpy_rwp)
    assert any("torch" in r.getMessage() and "numpy" in r.getMessage() for r in caplog.records)


def test_chunk_cuda_missing_falls_back_to_cpu_torch(engines, golden_fits, monkeypatch, caplog):
    """``device = "cuda"`` on a worker without a CUDA device: CPU torch, with a warning."""
    g = np.ascontiguousarray(golden_fits[0]["gobs"], dtype=float)
    masks = random_catalogue(24, 200, 9, 3, 21)
    packed = np.packbits(masks, axis=1)
    cpu_rwp = steps.fit_masks(engines["torch"], masks, g, "isotropic").rwp
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with caplog.at_level(logging.WARNING, logger=scale_out.log.name):
        on_cuda = dataclasses.replace(engines["torch"], backend=Backend("torch", "cuda"))
        rwp, _, _ = scale_out.fit_chunk(on_cuda, packed, 24, g, "isotropic")
    np.testing.assert_allclose(rwp, cpu_rwp, rtol=0, atol=1e-12)
    assert any("cuda" in r.getMessage() for r in caplog.records)
