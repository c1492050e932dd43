"""The analysed frames of a raw run, republished as a derived Bluesky run.

Why a Bluesky run and not only JSON: beamline tools (Tiled, databroker, PDFstream-style
viewers, ``BestEffortCallback``) already know how to store, search and plot runs. Following
the NSLS-II PDF beamline convention the derived start carries ``original_run_uid`` and
``analysis_stage``, and is sent on the 0MQ prefix ``an`` (raw documents use ``raw``).

Identity: one uid per *analysis*. The derived run uid is a uuid5 of (raw uid, model, analysis
id, code version), where the analysis id (:class:`~motex_stream.stream.messages.
AnalysisIdentity`) hashes the prepared state and the settings. A restart or replay with the
same state reproduces the very same documents: the Tiled writer skips a run Tiled already
holds complete, and reopens one left without a stop by a kill (:mod:`.tiled_reopen`), adding
only the events it lacks; another state or other settings give a new run. Events keep
the raw frame's measurement ``time`` and ``seq_num``; the start and descriptor are dated no
later than the first event, so every event falls inside its run.

A callback that fails (Tiled down, a 409 conflict) does not stop the others; the sink raises
:class:`SinkWriteError` after all callbacks ran, so the service counts a sink error.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import event_model

from motex_stream import __version__
from motex_stream.stream.config import BlueskySinkConfig, read_api_key
from motex_stream.stream.frames import RunStart, RunStop
from motex_stream.stream.live.analyzer_protocol import FrameResult, KeepSetChange
from motex_stream.stream.messages import SCHEMA, AnalysisIdentity, PublishedFrame
from motex_stream.stream.publishers.base import Sink
from motex_stream.stream.publishers.derived_run import (
    CHANGES_STREAM,
    PRIMARY_STREAM,
    STOPPED_EARLY,
    DocumentCallback,
    SinkWriteError,
    one_line,
)

log = logging.getLogger(__name__)

ANALYSIS_STAGE = "motex"
PLAN_NAME = "motex_analysis"
#: Width of the stored per-atom labels (keep / remove / uncertain fit with room to spare).
LABEL_CHARS = 16
#: Fixed namespace for derived uids; changing it would re-key every stored derived run.
UID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "motex-stream/derived-run")
_EXIT_STATUSES = ("success", "abort", "fail")


def derived_run_uid(
    raw_uid: str,
    model: str,
    analysis_version: str = __version__,
    analysis_id: str = "",
) -> str:
    """The uid of the derived run of one raw run analysed by one analysis (state + settings)."""
    key = f"{raw_uid}|{model}|{analysis_version}"
    return str(uuid.uuid5(UID_NAMESPACE, f"{key}|{analysis_id}" if analysis_id else key))


@dataclass
class _OpenRun:
    run: event_model.ComposeRunBundle
    descriptor: event_model.ComposeDescriptorBundle
    n_atoms: int
    n_events: int = 0
    last_time: float = 0.0
    changes: event_model.ComposeDescriptorBundle | None = None  # opened at the first change
    n_changes: int = 0


def _versions() -> dict[str, str]:
    import bluesky

    return {
        "motex_stream": __version__,
        "bluesky": str(bluesky.__version__),
        "event_model": str(event_model.__version__),
    }


class BlueskyRunSink(Sink):
    """Turn analysed frames into start/descriptor/event/stop documents for ``callbacks``.

    Each callback receives ``(name, doc)`` like any Bluesky callback; one that raises does not
    keep the document from the others, and the sink raises :class:`SinkWriteError` afterwards.
    """

    def __init__(
        self,
        callbacks: Sequence[DocumentCallback],
        *,
        analysis_version: str = __version__,
        stream_name: str = PRIMARY_STREAM,
        name: str = "BlueskyRunSink",
    ) -> None:
        self.name = name
        self.callbacks = list(callbacks)
        self.analysis_version = analysis_version
        self.stream_name = stream_name
        self._raw_starts: dict[str, RunStart] = {}
        self._open: dict[tuple[str, str], _OpenRun] = {}
        self._failures: list[str] = []

    @classmethod
    def from_config(cls, sink: BlueskySinkConfig) -> BlueskyRunSink:
        """A 0MQ Publisher (msgpack, portable to non-Python consumers) and/or a TiledWriter."""
        callbacks: list[DocumentCallback] = []
        if sink.address:
            callbacks.append(zmq_publisher(sink.address, prefix=sink.prefix.encode()))
        if sink.tiled_uri:
            from motex_stream.stream.publishers.tiled_archive import tiled_writer

            callbacks.append(tiled_writer(sink.tiled_uri, api_key=read_api_key(sink.api_key_file)))
        return cls(callbacks, name=sink.name)

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
        current = self._open.get(key) or self._open_run(published)
        if n_atoms != current.n_atoms:
            raise SinkWriteError(
                f"frame {published.seq} of {key[0]} has {n_atoms} atoms but its derived run was "
                f"opened with {current.n_atoms}; not sent"
            )
        received = published.received_at
        atoms = result.contributions
        none = [math.nan] * n_atoms
        low, high = atoms.interval if atoms.interval is not None else (none, none)
        best, quality = result.best, result.model_quality
        data = {
            "contributions": atoms.value.tolist(),
            "contribution_spread": atoms.spread.tolist(),
            # the verdict the operators saw: interval and label per atom (NaN / "": none)
            "ci_low": [float(x) for x in low],
            "ci_high": [float(x) for x in high],
            "label": [_label(x) for x in atoms.label or [None] * n_atoms],
            "best_mask": best.mask.tolist(),
            "best_rwp": float(best.rwp),
            "best_scale": math.nan if best.scale is None else float(best.scale),
            "mae": math.nan if quality.mae is None else float(quality.mae),
            "rebuilt": bool(quality.rebuilt),
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
        current.last_time = max(current.last_time, published.time)
        self._emit("event", event)
        if result.change is not None:
            self._emit_change(current, published, result.change)
        self._raise_failures()

    def bind_metrics(self, registry: Any) -> None:
        """Report the archive's own series (events lost or waiting for Tiled,
        :mod:`.tiled_archive`) into ``registry``, the service's Prometheus registry."""
        for cb in self.callbacks:
            bind = getattr(cb, "bind_metrics", None)
            if callable(bind):
                bind(registry)

    def stored_last_seq(self, run_uid: str, model: str) -> int | None:
        """What the store behind a callback holds of this raw run's derived run (see
        :meth:`TiledArchive.stored_last_seq`); None when no callback can tell.

        A restarted service asks this before it decides which frames to analyse again: the
        store is the source of truth and may hold fewer frames than the run journal says.
        """
        answers = []
        for cb in self.callbacks:
            ask = getattr(cb, "stored_last_seq", None)
            if callable(ask):
                value = ask(run_uid, model, self.analysis_version)
                if value is not None:
                    answers.append(int(value))
        return min(answers) if answers else None

    def on_run_stop(self, stop: RunStop) -> None:
        self._raw_starts.pop(stop.uid, None)
        status = stop.exit_status if stop.exit_status in _EXIT_STATUSES else "fail"
        reason = "" if status == "success" else f"raw run {stop.uid} ended with {stop.exit_status}"
        for key in [k for k in self._open if k[0] == stop.uid]:
            self._stop(key, status, reason)
        self._raise_failures()

    def close(self) -> None:
        """Stop derived runs whose raw stop never came (aborted), then close the callbacks."""
        for key in list(self._open):
            self._stop(key, "abort", STOPPED_EARLY)
        for cb in self.callbacks:
            closer = getattr(cb, "close", None)
            if callable(closer):
                try:
                    closer()
                except Exception as exc:
                    self._failures.append(f"closing {_name(cb)}: {one_line(exc)}")
        self._raise_failures()

    # -- internals -----------------------------------------------------------------------

    def _start_metadata(self, published: PublishedFrame) -> dict[str, Any]:
        raw_uid, model = published.run_uid, published.model
        raw_start = self._raw_starts.get(raw_uid)
        if raw_start is None:
            log.warning("no start seen for %s; opening its derived run anyway", raw_uid)
        raw_md = raw_start.metadata if raw_start else {}
        analysis = published.analysis
        scan_id = raw_md.get("scan_id")
        metadata: dict[str, Any] = {
            "plan_name": PLAN_NAME,
            "plan_type": "analysis",
            "scan_id": scan_id if isinstance(scan_id, int) and not isinstance(scan_id, bool) else 1,
            "versions": _versions(),
            "original_run_uid": raw_uid,
            "analysis_stage": ANALYSIS_STAGE,
            "analysis_version": self.analysis_version,
            "message_schema": SCHEMA,
            "motex_model": model,
            "hints": {"dimensions": [[["time"], self.stream_name]]},
        }
        if analysis is not None:
            metadata["motex_analysis_id"] = analysis.id
            metadata["motex_settings"] = dict(analysis.settings)
        for k in ("sample_name", "plan_name", "scan_id", "composition_string"):
            if k in raw_md:
                metadata[f"original_{k}"] = raw_md[k]
        return metadata

    def _open_run(self, published: PublishedFrame) -> _OpenRun:
        raw_uid, model, result = published.run_uid, published.model, published.result
        analysis: AnalysisIdentity | None = published.analysis
        uid = derived_run_uid(
            raw_uid, model, self.analysis_version, analysis.id if analysis else ""
        )
        raw_start = self._raw_starts.get(raw_uid)
        # No document of the run may be dated after its first event: the raw start (or,
        # without one, the first frame's measurement time) opens the derived run.
        opened_at = min(published.time, raw_start.time if raw_start else published.time)
        run = event_model.compose_run(
            uid=uid, time=opened_at, metadata=self._start_metadata(published)
        )
        self._emit("start", run.start_doc)
        n = len(result.contributions)
        descriptor = run.compose_descriptor(
            name=self.stream_name,
            data_keys=_data_keys(n, len(result.best.mask) or n),
            configuration=_configuration(result, opened_at),
            object_keys={"motex": list(_data_keys(n, n))},
            hints={"motex": {"fields": ["best_rwp", "mae"]}},
            uid=str(uuid.uuid5(uuid.UUID(uid), f"descriptor-{self.stream_name}")),
            time=opened_at,
        )
        opened = _OpenRun(run, descriptor, n, last_time=opened_at)
        self._open[(raw_uid, model)] = opened
        log.info("derived run %s opened for raw run %s (model %s)", uid, raw_uid, model)
        self._emit("descriptor", descriptor.descriptor_doc)
        return opened

    def _emit_change(
        self, current: _OpenRun, published: PublishedFrame, change: KeepSetChange
    ) -> None:
        """One event in the ``changes`` stream; its descriptor is sent with the first change.

        Its ``seq_num`` is the seq of the frame that confirmed the change (the primary event
        it belongs to), not a count of changes: it stays the same when a restarted service
        sends the change again, so a store that holds it can recognise it.
        """
        run_uid = current.run.start_doc["uid"]
        if current.changes is None:
            current.changes = current.run.compose_descriptor(
                name=CHANGES_STREAM,
                data_keys=_change_keys(),
                object_keys={"motex": list(_change_keys())},
                hints={"motex": {"fields": ["frame", "confidence"]}},
                uid=str(uuid.uuid5(uuid.UUID(run_uid), f"descriptor-{CHANGES_STREAM}")),
                time=current.last_time,
            )
            self._emit("descriptor", current.changes.descriptor_doc)
        data = {
            "frame": int(change.frame),
            "atoms_gained": [int(a) for a in change.atoms_gained],
            "atoms_lost": [int(a) for a in change.atoms_lost],
            "confidence": float(change.confidence),
        }
        event = current.changes.compose_event(
            data=data,
            timestamps=dict.fromkeys(data, published.time),
            seq_num=published.seq,
            time=published.time,
            uid=str(uuid.uuid5(uuid.UUID(run_uid), f"change-{published.seq}")),
        )
        current.n_changes += 1
        self._emit("event", event)

    def _stop(self, key: tuple[str, str], status: str, reason: str) -> None:
        opened = self._open.pop(key)
        stop = opened.run.compose_stop(
            exit_status=status,
            reason=reason,
            uid=str(uuid.uuid5(uuid.UUID(opened.run.start_doc["uid"]), "stop")),
            time=max(time.time(), opened.last_time),
        )
        # event-model derives num_events from the last seq_num; frames skipped upstream
        # leave gaps, so report how many events this derived run really holds.
        counts = {self.stream_name: opened.n_events}
        if opened.changes is not None:
            counts[CHANGES_STREAM] = opened.n_changes
        self._emit("stop", {**stop, "num_events": counts})

    def _emit(self, name: str, doc: Mapping[str, Any]) -> None:
        """Every callback gets the document; failures are collected for :meth:`_raise_failures`
        so that one broken callback neither starves the others nor leaves a run half-open."""
        for cb in self.callbacks:
            try:
                cb(name, dict(doc))
            except Exception as exc:
                log.debug("document callback %r failed on a %s document", cb, name, exc_info=True)
                self._failures.append(f"{_name(cb)} failed on a {name} document: {one_line(exc)}")

    def _raise_failures(self) -> None:
        failures, self._failures = self._failures, []
        if failures:
            raise SinkWriteError("; ".join(failures))


def _array_key(dtype_numpy: str, units: str, size: int | None) -> dict[str, Any]:
    """A per-permutable-atom array key (``size`` None: ragged, its length varies by event)."""
    return {
        "source": "motex",
        "dtype": "array",
        "shape": [size],
        "dtype_numpy": dtype_numpy,
        "dims": ["atom"],
        "units": units,
    }


def _scalar_key(units: str, dtype: str = "number", dtype_numpy: str = "<f8") -> dict[str, Any]:
    return {
        "source": "motex",
        "dtype": dtype,
        "shape": [],
        "dtype_numpy": dtype_numpy,
        "units": units,
    }


def _data_keys(n_atoms: int, n_mask: int) -> dict[str, dict[str, Any]]:
    """Every key with units ("" = dimensionless); arrays are per permutable atom."""
    return {
        # contribution values and their spread are in Rwp units, a fraction: dimensionless
        "contributions": _array_key("<f8", "", n_atoms),
        "contribution_spread": _array_key("<f8", "", n_atoms),
        # the confidence interval of each value (Rwp units) and its label
        "ci_low": _array_key("<f8", "", n_atoms),
        "ci_high": _array_key("<f8", "", n_atoms),
        "label": _array_key(f"<U{LABEL_CHARS}", "", n_atoms),
        "best_mask": _array_key("<i8", "", n_mask),
        "best_rwp": _scalar_key(""),
        "best_scale": _scalar_key(""),
        "mae": _scalar_key(""),
        # the surrogate was rebuilt on this frame
        "rebuilt": _scalar_key("", dtype="boolean", dtype_numpy="|b1"),
        "latency": _scalar_key("s"),
    }


def _change_keys() -> dict[str, dict[str, Any]]:
    """The ``changes`` stream: atoms are 1-based indices into the permutable atoms; the lists
    vary in length from change to change (ragged)."""
    return {
        # seq of the first frame that showed the new keep set
        "frame": _scalar_key("", dtype="integer", dtype_numpy="<i8"),
        "atoms_gained": _array_key("<i8", "", None),
        "atoms_lost": _array_key("<i8", "", None),
        # a probability: dimensionless
        "confidence": _scalar_key(""),
    }


def _configuration(result: FrameResult, when: float) -> dict[str, Any]:
    atoms = {
        "atom": result.contributions.atom.tolist(),
        "element": list(result.contributions.element),
    }
    n = len(atoms["atom"])
    return {
        "motex": {
            "data": atoms,
            "timestamps": dict.fromkeys(atoms, when),
            "data_keys": {
                "atom": {
                    "source": "motex",
                    "dtype": "array",
                    "shape": [n],
                    "dtype_numpy": "<i8",
                    "units": "",
                },
                "element": {"source": "motex", "dtype": "array", "shape": [n], "units": ""},
            },
        }
    }


def _label(value: Any) -> str:
    """A per-atom label as stored (fixed width): "" when the message has none."""
    if value is None:
        return ""
    text = str(value)
    if len(text) > LABEL_CHARS:
        raise SinkWriteError(f"label {text[:40]!r} is longer than {LABEL_CHARS} characters")
    return text


def _name(cb: Any) -> str:
    return type(cb).__name__ if not hasattr(cb, "__name__") else str(cb.__name__)


def zmq_publisher(address: str, prefix: bytes = b"an") -> DocumentCallback:
    """Bluesky's own 0MQ Publisher (connects to a 0MQ proxy's in-address), msgpack-encoded.

    Caveat measured with pyzmq 27 / libzmq 4.3.5: a PUB that connects drops the first message
    it sends, even long after connecting; so the very first derived start document after the
    service starts can be lost on this path (the Tiled writer path is unaffected).
    """
    from motex_stream.stream.sources.zmq_source import make_publisher

    return make_publisher(address, prefix=prefix)
