"""The analysed frames of a raw run, republished as a derived Bluesky run.

Why a Bluesky run and not only JSON: beamline tools (Tiled, databroker, PDFstream-style
viewers) already know how to store, search and plot runs. Following the NSLS-II PDF beamline
convention the derived start carries ``original_run_uid`` and ``analysis_stage``, and is sent
on the 0MQ prefix ``an`` (raw documents use ``raw``).

Determinism: the derived run uid is a uuid5 of (raw uid, model, analysis version) and the
descriptor and event uids derive from it, so replaying a raw run produces the very same
documents: Tiled then sees a duplicate uid instead of silently storing the analysis twice.
Events keep the raw frame's measurement ``time`` and its ``seq_num``.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import event_model

from motex_stream import __version__
from motex_stream.stream.analyzer_protocol import FrameResult
from motex_stream.stream.config import BlueskySinkConfig, read_api_key
from motex_stream.stream.frames import RunStart, RunStop
from motex_stream.stream.messages import SCHEMA, PublishedFrame

log = logging.getLogger(__name__)

DocumentCallback = Callable[[str, dict[str, Any]], Any]

ANALYSIS_STAGE = "motex"
#: Fixed namespace for derived uids; changing it would re-key every stored derived run.
UID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "motex-stream/derived-run")
_EXIT_STATUSES = ("success", "abort", "fail")


def derived_run_uid(raw_uid: str, model: str, analysis_version: str = __version__) -> str:
    """The uid of the derived run for one raw run analysed with one model and code version."""
    return str(uuid.uuid5(UID_NAMESPACE, f"{raw_uid}|{model}|{analysis_version}"))


@dataclass
class _OpenRun:
    run: event_model.ComposeRunBundle
    descriptor: event_model.ComposeDescriptorBundle
    n_atoms: int
    n_events: int = 0


class BlueskyRunSink:
    """Turn analysed frames into start/descriptor/event/stop documents for ``callbacks``.

    Each callback receives ``(name, doc)`` like any Bluesky callback; one that raises is
    logged and the others still get the document.
    """

    def __init__(
        self,
        callbacks: Sequence[DocumentCallback],
        *,
        analysis_version: str = __version__,
        stream_name: str = "primary",
    ) -> None:
        self.callbacks = list(callbacks)
        self.analysis_version = analysis_version
        self.stream_name = stream_name
        self._raw_starts: dict[str, RunStart] = {}
        self._open: dict[tuple[str, str], _OpenRun] = {}

    @classmethod
    def from_config(cls, sink: BlueskySinkConfig) -> BlueskyRunSink:
        """A 0MQ Publisher (msgpack, portable to non-Python consumers) and/or a TiledWriter."""
        callbacks: list[DocumentCallback] = []
        if sink.address:
            callbacks.append(zmq_publisher(sink.address, prefix=sink.prefix.encode()))
        if sink.tiled_uri:
            callbacks.append(tiled_writer(sink.tiled_uri, api_key=read_api_key(sink.api_key_file)))
        return cls(callbacks)

    # -- Sink protocol -------------------------------------------------------------------

    def on_run_start(self, start: RunStart) -> None:
        """Remember the raw start; the derived run opens at its first analysed frame, when the
        number of atoms (the descriptor's array shape) is known."""
        self._raw_starts[start.uid] = start

    def publish(self, published: PublishedFrame) -> None:
        """One event in the derived run of (raw run, model); the run opens at its first frame."""
        result = published.result
        key = (published.run_uid, published.model)
        n_atoms = len(result.contributions)
        current = self._open.get(key) or self._open_run(key[0], key[1], result)
        if n_atoms != current.n_atoms:
            log.error(
                "frame %d of %s has %d atoms but its derived run was opened with %d; not sent",
                published.seq,
                key[0],
                n_atoms,
                current.n_atoms,
            )
            return
        received = published.received_at
        data = {
            "contributions": [_num(c["value"]) for c in result.contributions],
            "contribution_spread": [_num(c.get("spread")) for c in result.contributions],
            "best_mask": [int(b) for b in result.best.get("mask", [])],
            "best_rwp": _num(result.best.get("rwp")),
            "mae": _num(result.model_quality.get("mae")),
            "latency": math.nan if received is None else published.published_at - received,
        }
        event = current.descriptor.compose_event(
            data=data,
            timestamps=dict.fromkeys(data, published.time),
            seq_num=published.seq,
            time=published.time,
            uid=str(uuid.uuid5(uuid.UUID(current.run.start_doc["uid"]), f"event-{published.seq}")),
        )
        current.n_events += 1
        self._emit("event", event)

    def on_run_stop(self, stop: RunStop) -> None:
        self._raw_starts.pop(stop.uid, None)
        status = stop.exit_status if stop.exit_status in _EXIT_STATUSES else "fail"
        reason = "" if status == "success" else f"raw run {stop.uid} ended with {stop.exit_status}"
        for key in [k for k in self._open if k[0] == stop.uid]:
            self._stop(key, status, reason)

    def close(self) -> None:
        """Stop derived runs whose raw stop never came (aborted), then close the callbacks."""
        for key in list(self._open):
            self._stop(key, "abort", "motex-stream stopped before the raw run ended")
        for cb in self.callbacks:
            closer = getattr(cb, "close", None)
            if callable(closer):
                try:
                    closer()
                except Exception:
                    log.exception("closing %r failed", cb)

    # -- internals -----------------------------------------------------------------------

    def _open_run(self, raw_uid: str, model: str, result: FrameResult) -> _OpenRun:
        raw_start = self._raw_starts.get(raw_uid)
        if raw_start is None:
            log.warning("no start seen for %s; opening its derived run anyway", raw_uid)
        raw_md = raw_start.metadata if raw_start else {}
        metadata: dict[str, Any] = {
            "original_run_uid": raw_uid,
            "analysis_stage": ANALYSIS_STAGE,
            "analysis_version": self.analysis_version,
            "message_schema": SCHEMA,
            "motex_model": model,
        }
        for k in ("sample_name", "plan_name", "scan_id", "composition_string"):
            if k in raw_md:
                metadata[f"original_{k}"] = raw_md[k]
        uid = derived_run_uid(raw_uid, model, self.analysis_version)
        run = event_model.compose_run(uid=uid, time=time.time(), metadata=metadata)
        self._emit("start", run.start_doc)
        contributions = result.contributions
        n = len(contributions)

        def array(dtype_numpy: str) -> dict[str, Any]:
            return {
                "source": "motex",
                "dtype": "array",
                "shape": [n],
                "dtype_numpy": dtype_numpy,
                "dims": ["atom"],
            }

        def number(units: str | None = None) -> dict[str, Any]:
            return {
                "source": "motex",
                "dtype": "number",
                "shape": [],
                "dtype_numpy": "<f8",
                "units": units,
            }

        data_keys = {
            "contributions": array("<f8"),
            "contribution_spread": array("<f8"),
            "best_mask": array("<i8"),
            "best_rwp": number(),
            "mae": number(),
            "latency": number("s"),
        }
        atoms = {
            "atom": [int(c["atom"]) for c in contributions],
            "element": [str(c["element"]) for c in contributions],
        }
        now = time.time()
        configuration = {
            "motex": {
                "data": atoms,
                "timestamps": dict.fromkeys(atoms, now),
                "data_keys": {
                    "atom": {
                        "source": "motex",
                        "dtype": "array",
                        "shape": [n],
                        "dtype_numpy": "<i8",
                    },
                    "element": {"source": "motex", "dtype": "array", "shape": [n]},
                },
            }
        }
        descriptor = run.compose_descriptor(
            name=self.stream_name,
            data_keys=data_keys,
            configuration=configuration,
            object_keys={"motex": list(data_keys)},
            hints={"motex": {"fields": ["contributions", "best_rwp"]}},
            uid=str(uuid.uuid5(uuid.UUID(uid), f"descriptor-{self.stream_name}")),
            time=now,
        )
        self._emit("descriptor", descriptor.descriptor_doc)
        opened = _OpenRun(run, descriptor, n)
        self._open[(raw_uid, model)] = opened
        log.info("derived run %s opened for raw run %s (model %s)", uid, raw_uid, model)
        return opened

    def _stop(self, key: tuple[str, str], status: str, reason: str) -> None:
        opened = self._open.pop(key)
        stop = opened.run.compose_stop(
            exit_status=status,
            reason=reason,
            uid=str(uuid.uuid5(uuid.UUID(opened.run.start_doc["uid"]), "stop")),
            time=time.time(),
        )
        # event-model derives num_events from the last seq_num; frames skipped upstream
        # leave gaps, so report how many events this derived run really holds.
        self._emit("stop", {**stop, "num_events": {self.stream_name: opened.n_events}})

    def _emit(self, name: str, doc: Mapping[str, Any]) -> None:
        for cb in self.callbacks:
            try:
                cb(name, dict(doc))
            except Exception:
                log.exception("document callback %r failed on a %s document", cb, name)


def _num(value: Any) -> float:
    """A plain float for event data; a missing value (None) is NaN, as Bluesky arrays want."""
    return math.nan if value is None else float(value)


def zmq_publisher(address: str, prefix: bytes = b"an") -> DocumentCallback:
    """Bluesky's own 0MQ Publisher (connects to a 0MQ proxy's in-address), msgpack-encoded.

    Caveat measured with pyzmq 27 / libzmq 4.3.5: a PUB that connects drops the first message
    it sends, even long after connecting; so the very first derived start document after the
    service starts can be lost on this path (the Tiled writer path is unaffected).
    """
    from motex_stream.stream.sources.zmq_source import make_publisher

    return make_publisher(address, prefix=prefix)


def tiled_writer(uri: str, api_key: str | None = None) -> DocumentCallback:
    """Bluesky's TiledWriter with batch size 1: each analysed frame is visible at once."""
    from bluesky.callbacks.tiled_writer import TiledWriter

    return TiledWriter.from_uri(uri, api_key=api_key, batch_size=1)
