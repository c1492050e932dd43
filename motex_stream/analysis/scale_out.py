"""Catalogue fits on a Dask cluster (the optional ``distributed`` extra).

An execution choice, not a result-changing setting: it is never part of the fingerprinted
:class:`~motex_stream.analysis.settings.ModelSettings`. ``analyze --dask ADDRESS``,
``replay --dask ADDRESS`` and ``[service] dask = "ADDRESS"`` all end here, through
:func:`motex_stream.analysis.steps.fit_masks`.

How the work is cut and shipped:

* the prepared model (basis, pair classes, kernels) is scattered **once**, broadcast to every
  worker; each task names it by its future, so no task carries the tables. Derived tables the
  fitting code builds on first use are cached on the worker's copy, so each worker builds
  them once;
* the catalogue is cut into the same chunks as the local path (:data:`steps.FIT_CHUNK`
  motifs), bit-packed for the wire (a :class:`~motex_stream.catalogue.PackedMasks` catalogue
  ships its own packed rows, never unpacked here); every chunk is one task;
* each chunk goes through the same dispatch as locally
  (:func:`motex_stream.fitting.dispatch.fit`), a deterministic function of (prepared model,
  masks, g), so the results equal the local run's for the same seed;
* the numeric backend is the prepared model's ``backend`` field (numpy or torch, and the torch
  device, set by :func:`~motex_stream.analysis.steps.prepare_engine`); a field, not a cache
  entry, so it travels with the shipped copy, and each worker resolves it on its own
  hardware (:func:`worker_backend`): a worker without torch fits with numpy, one without a
  CUDA device with CPU torch, each with a warning in its log;
* a worker lost mid-job loses only its running tasks: the scheduler re-runs them elsewhere
  (and re-sends the prepared model to a worker that joins), so the job finishes. Exceptions raised
  by the fit itself are retried :data:`RETRIES` times, then reported.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from motex_stream.catalogue.packed import PackedMasks, as_packed
from motex_stream.catalogue.storage import unpack_masks
from motex_stream.fitting import dispatch
from motex_stream.fitting.results import FitResults
from motex_stream.pdf.batched import Backend

if TYPE_CHECKING:
    from motex_stream.pdf.batched import PreparedModel

log = logging.getLogger(__name__)

#: Times a chunk whose fit raised is re-run before the job fails.
RETRIES = 2

_lock = threading.Lock()
_clients: dict[str, Any] = {}


def require_distributed() -> Any:
    try:
        import distributed
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise RuntimeError(
            "--dask needs dask.distributed: pip install 'motex-stream[distributed]'"
        ) from exc
    return distributed


def client_for(cluster: Any) -> Any:
    """A ``distributed.Client`` for an address (one per address, reused), or the client given."""
    distributed = require_distributed()
    if isinstance(cluster, distributed.Client):
        return cluster
    address = str(cluster)
    with _lock:
        client = _clients.get(address)
        if client is None or client.status in ("closed", "closing"):
            client = distributed.Client(address, set_as_default=False, timeout="30s")
            _clients[address] = client
            log.info("connected to Dask scheduler %s", address)
        return client


def worker_backend(backend: Backend) -> Backend:
    """The backend this process can honour for the requested ``backend``.

    Why a fallback rather than an error: a cluster is shared hardware, and one worker without
    the ``gpu`` extra or without a CUDA device must not fail a job whose every backend gives
    the same fits (torch agrees with numpy within 1e-5 in Rwp). The fallback is logged by the
    worker, so a mixed cluster is visible in its logs.
    """
    if backend.name != "torch":
        return Backend("numpy", backend.device)
    from motex_stream.fitting import torch_engine

    if not torch_engine.torch_available():
        log.warning("backend torch asked for, but torch is not installed here: fitting with numpy")
        return Backend("numpy", backend.device)
    try:
        return Backend("torch", torch_engine.resolve_device(backend.device))
    except RuntimeError as exc:
        log.warning("backend torch on %s: %s; fitting with CPU torch", backend.device, exc)
        return Backend("torch", "cpu")


def fit_chunk(
    prepared: PreparedModel, packed: np.ndarray, n_bits: int, g: np.ndarray, zoom: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One task: fit one bit-packed chunk of masks on the worker's copy of the prepared model,
    on its backend as far as this worker can (:func:`worker_backend`), through the same
    dispatch as the local path (:func:`motex_stream.fitting.dispatch.fit`)."""
    masks = unpack_masks(packed, n_bits)
    res = dispatch.fit(prepared, masks, g, zoom, worker_backend(prepared.backend))
    return res.rwp, res.scale, res.zoom


def _prepared_future(client: Any, prepared: PreparedModel) -> Any:
    """The prepared model scattered to every worker, once per (client, prepared model)."""
    key = f"motex-prepared-{id(prepared):x}"
    cache: dict = prepared.engine_cache.setdefault("dask_futures", {})  # type: ignore[assignment]
    fut = cache.get(id(client))
    if fut is not None and fut.status == "finished":
        return fut
    # the scattered copy must not carry the futures dict (it is local to this process)
    cache.pop(id(client), None)
    fut = client.scatter(_shippable(prepared), broadcast=True, hash=False)
    log.info("scattered %s to %d workers", key, len(client.scheduler_info()["workers"]))
    cache[id(client)] = fut
    return fut


def _shippable(prepared: PreparedModel) -> PreparedModel:
    """A copy of the prepared model without process-local caches (futures, derived tables);
    its fields, the backend among them, travel."""
    import dataclasses

    return dataclasses.replace(prepared, _kernel_cache={}, engine_cache={})


def fit_masks_dask(
    cluster: Any,
    prepared: PreparedModel,
    masks: np.ndarray | PackedMasks,
    g: np.ndarray,
    zoom: str,
    chunk: int,
    on_chunk: Callable[[int], None] | None = None,
) -> FitResults:
    """Fit ``masks`` in chunks of ``chunk`` on the Dask cluster ``cluster`` (address or Client).

    ``on_chunk(n_fitted)`` is called as each chunk arrives (progress bars, tests). The
    workers fit on ``prepared.backend`` (:func:`fit_chunk`).
    """
    dispatch.check_zoom(zoom)
    distributed = require_distributed()
    client = client_for(cluster)
    catalogue = as_packed(masks)
    g = np.ascontiguousarray(g, dtype=float)
    n_bits = catalogue.n_permutable
    shipped = _prepared_future(client, prepared)
    g_fut = client.scatter(g, broadcast=True, hash=False)
    starts = list(range(0, len(catalogue), chunk))
    job = uuid.uuid4().hex[:12]
    futures = {}
    for i, start in enumerate(starts):
        packed = np.ascontiguousarray(catalogue.packed[start : start + chunk])
        fut = client.submit(
            fit_chunk,
            shipped,
            packed,
            n_bits,
            g_fut,
            zoom,
            key=f"motex-fit-{zoom}-{job}-{i}",
            retries=RETRIES,
            pure=False,
        )
        futures[fut] = i
    parts: list[Any] = [None] * len(starts)
    for fut in distributed.as_completed(list(futures), loop=client.loop):
        parts[futures[fut]] = fut.result()
        if on_chunk is not None:
            on_chunk(len(parts[futures[fut]][0]))
        fut.release()
    return FitResults(
        rwp=np.concatenate([p[0] for p in parts]),
        scale=np.concatenate([p[1] for p in parts]),
        zoom=np.concatenate([p[2] for p in parts]),
        mode=zoom,
    )
