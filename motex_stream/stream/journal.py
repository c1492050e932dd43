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

Writes happen on the journal's own thread, in the order they were asked for: a source's receive
thread only hands a start or descriptor over (a bounded queue; when it is full the write is
dropped, counted in ``counters['dropped']`` and logged) and never waits for a disk, because a
receiver that waits makes 0MQ drop (issue 19: 150 descriptors journaled as JSON text with fsync
on the receive thread stalled reception for 30 s). The analysis thread's
:meth:`RunJournal.record_published` waits for its write, as before. Descriptors are stored
compactly: the fields resuming needs as JSON, numpy arrays (the r grid) as ``.npy`` files named
by their content, so a grid shared by a run's descriptors is written once.
"""

from __future__ import annotations

import collections
import hashlib
import io
import json
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

_MAX_OPEN_RUNS = 100  # runs whose stop never came (lost by 0MQ) must not pile up forever
_MAX_PENDING = 1024  # writes handed over but not yet done
_MAX_PENDING_BYTES = 64 * 2**20  # ... and the arrays they hold
_ARRAY_REF = "__motex_npy__"  # a JSON stand-in for an array stored beside it as .npy


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


def _split_arrays(value: Any, arrays: dict[str, np.ndarray]) -> Any:
    """``value`` with every numeric numpy array replaced by a reference to its content hash;
    the arrays go into ``arrays`` (binary, 8 bytes a float instead of ~20 as JSON text)."""
    if isinstance(value, np.ndarray) and value.dtype.kind in "biufc" and value.size > 16:
        data = np.ascontiguousarray(value)
        name = hashlib.sha1(data.tobytes()).hexdigest()[:20] + ".npy"
        arrays[name] = data
        return {_ARRAY_REF: name}
    if isinstance(value, Mapping):
        return {str(k): _split_arrays(v, arrays) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_split_arrays(v, arrays) for v in value]
    return value


def _join_arrays(value: Any, d: Path) -> Any:
    """The inverse of :func:`_split_arrays`, reading the ``.npy`` files of run folder ``d``."""
    if isinstance(value, dict):
        if set(value) == {_ARRAY_REF}:
            name = str(value[_ARRAY_REF])
            if "/" in name or not name.endswith(".npy"):
                raise ValueError(f"bad array reference {name[:40]!r}")
            return np.load(d / name, allow_pickle=False)
        return {k: _join_arrays(v, d) for k, v in value.items()}
    if isinstance(value, list):
        return [_join_arrays(v, d) for v in value]
    return value


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


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
    """Open runs under ``directory`` (one folder per run, named by a hash of its uid).

    ``max_pending`` / ``max_pending_bytes`` bound the writes handed over and not yet done.
    """

    def __init__(
        self,
        directory: str | Path,
        max_open_runs: int = _MAX_OPEN_RUNS,
        max_pending: int = _MAX_PENDING,
        max_pending_bytes: int = _MAX_PENDING_BYTES,
    ) -> None:
        self.directory = Path(directory)
        self.max_open_runs = max_open_runs
        self.max_pending = max_pending
        self.max_pending_bytes = max_pending_bytes
        self.counters = {"dropped": 0, "write_errors": 0}
        self._lock = threading.Lock()  # the files
        self._last_seq: dict[str, int] = {}
        self._tracked: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._pending: collections.deque[tuple[Callable[[], None], int]] = collections.deque()
        self._pending_bytes = 0
        self._cond = threading.Condition()
        self._done_ops = 0  # writes finished, to wait for one (record_published, flush)
        self._queued_ops = 0
        self._thread: threading.Thread | None = None

    def _run_dir(self, uid: str) -> Path:
        return self.directory / hashlib.sha1(uid.encode()).hexdigest()[:20]

    # -- the writer thread ----------------------------------------------------------------

    def _submit(self, op: Callable[[], None], nbytes: int = 0, droppable: bool = False) -> int:
        """Queue ``op`` for the writer thread; its ticket (0: dropped, counted)."""
        with self._cond:
            if droppable and (
                len(self._pending) >= self.max_pending
                or self._pending_bytes + nbytes > self.max_pending_bytes
            ):
                self.counters["dropped"] += 1
                return 0
            self._pending.append((op, nbytes))
            self._pending_bytes += nbytes
            self._queued_ops += 1
            ticket = self._queued_ops
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._writer, name="run-journal", daemon=True
                )
                self._thread.start()
            self._cond.notify_all()
            return ticket

    def _writer(self) -> None:
        while True:
            with self._cond:
                while not self._pending:
                    if not self._cond.wait(5.0) and not self._pending:
                        self._thread = None  # idle: the next write starts a fresh thread
                        return
                op, nbytes = self._pending[0]
            try:
                op()
            except Exception:  # a bug of ours: the journal must not take the stream down
                log.exception("run journal: write failed")
            with self._cond:
                self._pending.popleft()
                self._pending_bytes -= nbytes
                self._done_ops += 1
                self._cond.notify_all()

    def _wait(self, ticket: int, timeout: float | None) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self._done_ops >= ticket, timeout)

    def flush(self, timeout: float | None = 60.0) -> bool:
        """Wait until every write asked for so far is done (False on timeout)."""
        with self._cond:
            ticket = self._queued_ops
        return self._wait(ticket, timeout)

    def _write(self, uid: str, name: str, data: Any) -> None:
        try:
            d = self._run_dir(uid)
            d.mkdir(parents=True, exist_ok=True)
            write_atomic(d / name, data if isinstance(data, bytes) else _dumps(data))
        except (OSError, TypeError, ValueError) as exc:
            # the journal makes restarts lossless; failing to write it must not stop the stream
            self.counters["write_errors"] += 1
            log.error("run journal: cannot write %s of run %s: %s", name, uid, exc)

    # -- what the service and sources record ----------------------------------------------

    def _track(self, uid: str) -> None:
        with self._cond:
            self._tracked[uid] = None
            self._tracked.move_to_end(uid)
            while len(self._tracked) > 4 * self.max_open_runs:
                self._tracked.popitem(last=False)

    def record_start(self, source: str, doc: Mapping[str, Any]) -> None:
        """Journal a run's start (returns at once; written on the journal's thread)."""
        uid = str(doc["uid"])
        arrays: dict[str, np.ndarray] = {}
        record = {"uid": uid, "source": source, "doc": _split_arrays(dict(doc), arrays)}
        nbytes = sum(a.nbytes for a in arrays.values())

        def write() -> None:
            with self._lock:
                for name, array in arrays.items():
                    self._write(uid, name, _npy(array))
                self._write(uid, "start.json", record)
                self._prune()

        if self._submit(write, nbytes, droppable=True):
            self._track(uid)
        else:
            log.error("run journal: queue full; start of run %s not journaled", uid)

    def record_descriptor(self, run_uid: str, doc: Mapping[str, Any]) -> None:
        """Journal a descriptor of a tracked run (returns at once). Give it only what resuming
        needs: arrays are stored as ``.npy`` files, once per content."""
        with self._cond:
            if run_uid not in self._tracked:
                return  # a descriptor of a run we do not track
        arrays: dict[str, np.ndarray] = {}
        record = _split_arrays(dict(doc), arrays)
        nbytes = sum(a.nbytes for a in arrays.values())
        name = "descriptor-" + hashlib.sha1(str(doc.get("uid")).encode()).hexdigest()[:12]

        def write() -> None:
            with self._lock:
                d = self._run_dir(run_uid)
                if not (d / "start.json").exists():
                    return  # its start was dropped, or the run closed meanwhile
                for array_name, array in arrays.items():
                    if not (d / array_name).exists():
                        self._write(run_uid, array_name, _npy(array))
                self._write(run_uid, name + ".json", record)

        if not self._submit(write, nbytes, droppable=True):
            log.error("run journal: queue full; a descriptor of run %s not journaled", run_uid)

    def record_published(self, run_uid: str, model: str, seq: int) -> None:
        """The frame ``seq`` of ``run_uid`` reached the sinks (called in publish order).
        Waits for the write, so that what the journal says was published was."""
        with self._cond:
            if seq <= self._last_seq.get(run_uid, 0) or run_uid not in self._tracked:
                return  # a file series or a run without a journaled start: nothing to resume
            self._last_seq[run_uid] = seq

        def write() -> None:
            with self._lock:
                if not (self._run_dir(run_uid) / "start.json").exists():
                    return
                self._write(run_uid, "progress.json", {"model": model, "last_seq": seq})

        self._wait(self._submit(write), timeout=60.0)

    def close_run(self, uid: str) -> None:
        """Forget a stopped run (after every write of it asked for before); waits, as
        :meth:`record_published` does (both are called by the analysis thread)."""
        with self._cond:
            self._last_seq.pop(uid, None)
            self._tracked.pop(uid, None)

        def remove() -> None:
            with self._lock:
                shutil.rmtree(self._run_dir(uid), ignore_errors=True)

        self._wait(self._submit(remove), timeout=60.0)

    def open_runs(self, source: str | None = None) -> list[OpenRun]:
        """The runs still open, oldest first (``source``: only those of that source)."""
        runs: list[OpenRun] = []
        self.flush()
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
                self._track(run.uid)
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
    start["doc"] = _join_arrays(start["doc"], d)
    descriptors = []
    for p in sorted(d.glob("descriptor-*.json")):
        doc = _join_arrays(json.loads(p.read_text()), d)
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
