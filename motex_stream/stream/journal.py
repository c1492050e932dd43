"""The open runs of a live service, on disk, so that a restart in the middle of a run loses nothing
it could have kept.

Bluesky sends a run's start and descriptor once, at its beginning. A service restarted in the
middle of the run would see only events whose start it never saw and would have to drop them
all. The journal keeps, per open run: its start document and descriptors (written by the
source's :class:`~motex_stream.stream.sources.base.DocumentAssembler`) and the model chosen and
the last ``seq_num`` published (written by the service after the sinks have the frame). A
restarted service reads them back: events of the run are analysed again, and events already
published are recognised as duplicates. A run's files go when its stop has been handled.

Every file is written whole: to a temporary name, fsync'ed, then renamed over the old one, so a
kill at any moment leaves either the old or the new content. A file that cannot be read back is
logged once and its run is forgotten (moved aside), never fatal.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

_MAX_OPEN_RUNS = 100  # runs whose stop never came (lost by 0MQ) must not pile up forever


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a crash leaves the old or the new file, never half."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable (no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _plain(value: Any) -> Any:
    """JSON for documents: numpy arrays and scalars become lists and numbers."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _dumps(data: Any) -> bytes:
    return json.dumps(data, default=_plain).encode()


@dataclass
class OpenRun:
    """What a restarted service needs to go on with one run."""

    uid: str
    source: str
    start: dict[str, Any]
    descriptors: list[dict[str, Any]] = field(default_factory=list)
    model: str | None = None
    last_seq: int = 0  # highest seq_num published (0: none yet)


class RunJournal:
    """Open runs under ``directory`` (one folder per run, named by a hash of its uid)."""

    def __init__(self, directory: str | Path, max_open_runs: int = _MAX_OPEN_RUNS) -> None:
        self.directory = Path(directory)
        self.max_open_runs = max_open_runs
        self._lock = threading.Lock()
        self._last_seq: dict[str, int] = {}

    def _run_dir(self, uid: str) -> Path:
        return self.directory / hashlib.sha1(uid.encode()).hexdigest()[:20]

    def _write(self, uid: str, name: str, data: Any) -> None:
        try:
            d = self._run_dir(uid)
            d.mkdir(parents=True, exist_ok=True)
            write_atomic(d / name, _dumps(data))
        except (OSError, TypeError, ValueError) as exc:
            # the journal makes restarts lossless; failing to write it must not stop the stream
            log.error("run journal: cannot write %s of run %s: %s", name, uid, exc)

    def record_start(self, source: str, doc: Mapping[str, Any]) -> None:
        uid = str(doc["uid"])
        with self._lock:
            self._write(uid, "start.json", {"uid": uid, "source": source, "doc": dict(doc)})
            self._prune()

    def record_descriptor(self, run_uid: str, doc: Mapping[str, Any]) -> None:
        with self._lock:
            d = self._run_dir(run_uid)
            if not (d / "start.json").exists():
                return  # a descriptor of a run we do not track
            name = "descriptor-" + hashlib.sha1(str(doc.get("uid")).encode()).hexdigest()[:12]
            self._write(run_uid, name + ".json", dict(doc))

    def record_published(self, run_uid: str, model: str, seq: int) -> None:
        """The frame ``seq`` of ``run_uid`` reached the sinks (called in publish order)."""
        with self._lock:
            if seq <= self._last_seq.get(run_uid, 0):
                return
            if not (self._run_dir(run_uid) / "start.json").exists():
                return  # a file series or a run without a journaled start: nothing to resume
            self._last_seq[run_uid] = seq
            self._write(run_uid, "progress.json", {"model": model, "last_seq": seq})

    def close_run(self, uid: str) -> None:
        with self._lock:
            self._last_seq.pop(uid, None)
            shutil.rmtree(self._run_dir(uid), ignore_errors=True)

    def open_runs(self, source: str | None = None) -> list[OpenRun]:
        """The runs still open, oldest first (``source``: only those of that source)."""
        runs: list[OpenRun] = []
        if not self.directory.is_dir():
            return runs
        with self._lock:
            for d in sorted(self.directory.iterdir(), key=_mtime):
                if not d.is_dir() or d.name.endswith(".bad"):
                    continue
                try:
                    run = _read_run(d)
                except (OSError, ValueError, KeyError, TypeError) as exc:
                    log.error("run journal: %s unreadable (%s); moved aside", d, exc)
                    shutil.rmtree(d.with_name(d.name + ".bad"), ignore_errors=True)
                    os.replace(d, d.with_name(d.name + ".bad"))
                    continue
                if run is None:
                    continue
                self._last_seq[run.uid] = max(self._last_seq.get(run.uid, 0), run.last_seq)
                if source is None or run.source == source:
                    runs.append(run)
        return runs

    def _prune(self) -> None:
        dirs = [d for d in self.directory.iterdir() if d.is_dir() and not d.name.endswith(".bad")]
        if len(dirs) <= self.max_open_runs:
            return
        for d in sorted(dirs, key=_mtime)[: len(dirs) - self.max_open_runs]:
            log.warning("run journal: forgetting %s (open too long; its stop never came)", d)
            shutil.rmtree(d, ignore_errors=True)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return time.time()


def _read_run(d: Path) -> OpenRun | None:
    for leftover in d.glob("*.tmp"):
        leftover.unlink(missing_ok=True)  # an interrupted write; the previous file is intact
    if not (d / "start.json").exists():
        shutil.rmtree(d, ignore_errors=True)  # a run whose start write never completed
        return None
    start = json.loads((d / "start.json").read_text())
    if not isinstance(start, dict) or not isinstance(start["doc"], dict):
        raise ValueError("start.json is not a start record")
    descriptors = []
    for p in sorted(d.glob("descriptor-*.json")):
        doc = json.loads(p.read_text())
        if not isinstance(doc, dict):
            raise ValueError(f"{p.name} is not a descriptor")
        descriptors.append(doc)
    model, last_seq = None, 0
    if (d / "progress.json").exists():
        progress = json.loads((d / "progress.json").read_text())
        if not isinstance(progress, dict):
            raise ValueError("progress.json is not a mapping")
        model = progress.get("model")
        last_seq = int(progress.get("last_seq", 0))
        if last_seq < 0:
            raise ValueError(f"negative last_seq {last_seq}")
    return OpenRun(
        uid=str(start["uid"]),
        source=str(start.get("source", "")),
        start=start["doc"],
        descriptors=descriptors,
        model=None if model is None else str(model),
        last_seq=last_seq,
    )
