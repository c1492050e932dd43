"""Frames from Tiled: live runs over websockets, and replays of archived runs.

Facilities that archive every run in Tiled can feed the service from there instead of 0MQ:
live (Tiled pushes new runs and rows over websockets) or afterwards (replay a stored run, as fast
as possible or at the original pace). Both rebuild the Bluesky documents (start, descriptor,
events, stop) from Tiled's run layout and hand them to :class:`DocumentAssembler`, so gap and
validity checks are the same as for 0MQ.

Layout written by ``TiledWriter``: ``<root>/<run uid>`` (metadata ``start``, later ``stop``) →
``<stream>`` (metadata: descriptor ``uid``, ``time``, ``data_keys``, ``configuration``) →
an array node per array data key (one row per event) and an ``internal`` table with
``seq_num`` and ``time``. Live, the array rows and table rows arrive on different websockets
in no global order, so they are joined by ``seq_num`` before an event is rebuilt.

API keys come from ``MOTEX_TILED_API_KEY`` or a key file, never from the command line, where
other users could read them in the process list.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from motex_stream.stream.config.secrets import API_KEY_ENV
from motex_stream.stream.config.secrets import read_api_key as load_api_key
from motex_stream.stream.frames import RunStart, StreamItem
from motex_stream.stream.journal import RunJournal
from motex_stream.stream.sources.base import (
    DEFAULT_DATA_KEY,
    DEFAULT_R_KEY,
    DEFAULT_STREAM,
    DocumentAssembler,
    FrameSource,
    SourceStats,
)
from motex_stream.stream.sources.redact import protect

logger = logging.getLogger(__name__)

DEFAULT_MAX_MESSAGE = 64 * 1024 * 1024  # Tiled's 1 MB default silently loses big batches
_REPLAY_CHUNK = 256  # rows read per request when replaying, to bound memory


def connect(uri: str, key_file: str | os.PathLike[str] | None = None) -> Any:
    """A Tiled client for ``uri`` authenticated with the one key reader (config.secrets)."""
    from tiled.client import from_uri

    if "api_key=" in uri:
        logger.warning("the Tiled URI carries an API key; prefer $%s or a key file", API_KEY_ENV)
    key = load_api_key(key_file)
    protect(key)  # -vv must not write the key to the log (websockets dumps its headers)
    return from_uri(uri, api_key=key)


def attach_tiled_writer(RE: Any, client: Any, batch_size: int = 1) -> int:
    """Subscribe a ``TiledWriter`` to ``RE``; return the subscription token.

    ``batch_size=1`` makes every event visible in Tiled as it happens (the default batches
    write nothing until the stop document), which live subscribers need.
    """
    try:
        from bluesky_tiled_plugins import TiledWriter
    except ImportError:  # older stacks ship it inside bluesky
        from bluesky.callbacks.tiled_writer import TiledWriter
    return int(RE.subscribe(TiledWriter(client, batch_size=batch_size)))


def _descriptor_doc(run_uid: str, stream_name: str, md: Mapping[str, Any]) -> dict[str, Any]:
    """Rebuild a descriptor document from a Tiled stream node's metadata."""
    return {
        "uid": str(md.get("uid") or f"{run_uid}/{stream_name}"),
        "run_start": run_uid,
        "time": float(md.get("time", 0.0)),
        "name": stream_name,
        "data_keys": dict(md.get("data_keys") or {}),
        "configuration": dict(md.get("configuration") or {}),
        "hints": dict(md.get("hints") or {}),
        "object_keys": {},
    }


def _event_doc(descriptor_uid: str, seq: int, t: float, data: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "uid": f"{descriptor_uid}/{seq}",
        "descriptor": descriptor_uid,
        "seq_num": seq,
        "time": t,
        "data": dict(data),
        "timestamps": dict.fromkeys(data, t),
    }


@dataclass
class _LiveRun:
    """Join state of one live run: array rows and table rows waiting for each other."""

    uid: str
    array_keys: set[str] = field(default_factory=set)  # arrays an event needs (G, maybe r)
    descriptor_uid: str | None = None
    rows: dict[int, dict[str, Any]] = field(default_factory=dict)  # seq -> {key: value, "time"}
    next_seq: int = 1
    emitted: int = 0
    stop_doc: dict[str, Any] | None = None
    stop_seen_at: float = 0.0
    subscriptions: list[Any] = field(default_factory=list)


class TiledLiveSource(FrameSource):
    """Frames of runs as they are written into a Tiled catalog (websocket subscription).

    Runs created after the subscription starts are followed. With a run journal
    (:meth:`attach_journal`), runs that were in progress when the service stopped are taken up
    again: the events Tiled stored after the last published ``seq_num`` (while the service was
    down) are read from Tiled, and later ones arrive live. ``stop_wait`` bounds how long the
    stop document is held back for rows still in flight on other websockets.
    """

    def __init__(
        self,
        uri: str,
        *,
        key_file: str | os.PathLike[str] | None = None,
        data_key: str = DEFAULT_DATA_KEY,
        r_key: str = DEFAULT_R_KEY,
        stream_name: str = DEFAULT_STREAM,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE,
        stop_wait: float = 10.0,
        poll_interval: float = 0.1,
        name: str | None = None,
    ) -> None:
        self.uri = uri
        self.name = name or f"tiled:{uri.split('?', 1)[0]}"
        self.stats = SourceStats()
        self.ready = threading.Event()  # set once the root subscription is connected
        self._key_file = key_file
        self._data_key = data_key
        self._r_key = r_key
        self._stream_name = stream_name
        self._max_size = max_message_bytes
        self._stop_wait = stop_wait
        self._poll = poll_interval
        self._assembler = DocumentAssembler(
            data_key=data_key,
            r_key=r_key,
            stream_name=stream_name,
            stats=self.stats,
            source_name=self.name,
        )
        self._lock = threading.RLock()
        self._queue: queue.SimpleQueue[StreamItem] = queue.SimpleQueue()
        self._runs: dict[str, _LiveRun] = {}
        self._retired: list[Any] = []  # subscriptions to disconnect from the items() thread
        self._resumed: list[RunStart] = []  # runs a restart left open (journal), taken up first
        self._journal_descriptors: set[str] = set()  # their descriptors, already known
        # Tiled holds callbacks weakly: keep every one alive here for the source's lifetime.
        self._callbacks: list[Callable[..., None]] = []

    def attach_journal(self, journal: RunJournal) -> None:
        """Persist open runs in ``journal`` and take up the ones a restart left open.

        Tiled is the buffer: what the beamline wrote while the service was down is still there,
        so a resumed run loses nothing (the events up to the last published ``seq_num`` are
        not read again).
        """
        for run in journal.open_runs(self.name):
            self._journal_descriptors.update(str(d.get("uid")) for d in run.descriptors)
        with self._lock:
            self._resumed = [
                item for item in self._assembler.resume(journal) if isinstance(item, RunStart)
            ]

    # -- subscription plumbing -------------------------------------------------------------

    def _subscribe(self, node: Any, run: _LiveRun | None, **registries: Callable[..., None]) -> Any:
        if run is not None:
            with self._lock:
                if run.uid not in self._runs:
                    return None  # the run already finished; nothing more to follow
        subscription = node.subscribe()
        for registry, callback in registries.items():
            self._callbacks.append(callback)
            getattr(subscription, registry).add_callback(callback)
        if run is not None:
            with self._lock:
                run.subscriptions.append(subscription)
        # Children replay from the cache (0) so rows written before we connected are not lost.
        subscription.start_in_thread(0 if run is not None else None, max_size=self._max_size)
        return subscription

    def _emit(self, name: str, doc: Mapping[str, Any]) -> None:
        with self._lock:
            for item in self._assembler.process(name, doc):
                self._queue.put(item)

    # -- callbacks (Tiled executor threads) ------------------------------------------------

    def _on_root_child(self, update: Any) -> None:
        try:
            start = update.metadata.get("start")
            if not start:
                return
            run = _LiveRun(uid=str(update.key))
            with self._lock:
                self._runs[run.uid] = run
            self._emit("start", start)

            def on_stream(u: Any, run: _LiveRun = run) -> None:
                self._on_stream_created(run, u)

            self._subscribe(update.child(), run, child_created=on_stream)
        except Exception:
            logger.exception("%s: could not follow new run %s", self.name, update.key)

    def _on_root_metadata(self, update: Any) -> None:
        stop = update.metadata.get("stop")
        if not stop:
            return
        with self._lock:
            run = self._runs.get(str(update.key))
            if run is None or run.stop_doc is not None:
                return
            run.stop_doc = dict(stop)
            run.stop_seen_at = time.monotonic()
            self._maybe_finish(run, force=False)

    def _follow_descriptor(self, run: _LiveRun, descriptor: Mapping[str, Any]) -> bool:
        """Which arrays an event of ``run`` needs; False if the stream is followed already."""
        data_keys = descriptor["data_keys"]
        with self._lock:
            if run.descriptor_uid is not None:
                return False
            run.descriptor_uid = descriptor["uid"]
            run.array_keys = {self._data_key}
            in_config = any(
                self._r_key in (cfg or {}).get("data", {})
                for cfg in descriptor["configuration"].values()
            )
            if not in_config and self._r_key in data_keys:
                run.array_keys.add(self._r_key)
        return True

    def _on_stream_created(self, run: _LiveRun, update: Any) -> None:
        try:
            if str(update.key) != self._stream_name:
                return
            descriptor = _descriptor_doc(run.uid, str(update.key), update.metadata)
            if not self._follow_descriptor(run, descriptor):
                return  # a resumed run whose stream was taken up from what Tiled stored
            self._emit("descriptor", descriptor)

            def on_node(u: Any, run: _LiveRun = run) -> None:
                self._on_data_node_created(run, u)

            self._subscribe(update.child(), run, child_created=on_node)
        except Exception:
            logger.exception("%s: could not follow stream of run %s", self.name, run.uid)

    def _on_data_node_created(self, run: _LiveRun, update: Any) -> None:
        try:
            self._follow_data_node(run, str(update.key), _family(update), update.child)
        except Exception:
            logger.exception("%s: could not follow a data node of run %s", self.name, run.uid)

    def _follow_data_node(
        self, run: _LiveRun, key: str, family: str, node: Callable[[], Any]
    ) -> None:
        """Subscribe to new rows of one data node of ``run``: an array it needs, or the event
        table; other nodes are not followed (``node`` is only fetched for the ones that are)."""
        if family == "array" and key in run.array_keys:

            def on_array(u: Any, run: _LiveRun = run, key: str = key) -> None:
                self._on_array_rows(run, key, u)

            self._subscribe(node(), run, new_data=on_array)
        elif family == "table":

            def on_table(u: Any, run: _LiveRun = run) -> None:
                self._on_table_rows(run, u)

            self._subscribe(node(), run, new_data=on_table)

    def _on_array_rows(self, run: _LiveRun, key: str, update: Any) -> None:
        try:
            block = np.asarray(update.data())
            patch = getattr(update, "patch", None)
            offset = patch.offset if patch is not None else getattr(update, "offset", None)
            first = int(offset[0]) if offset else 0
            with self._lock:
                for i, row in enumerate(block.reshape(block.shape[0], -1)):
                    if first + i + 1 >= run.next_seq:  # older rows: already sent
                        run.rows.setdefault(first + i + 1, {})[key] = row
                self._drain(run)
        except Exception:
            self.stats.add("malformed")
            logger.exception("%s: unreadable %s rows in run %s", self.name, key, run.uid)

    def _on_table_rows(self, run: _LiveRun, update: Any) -> None:
        try:
            table = update.data()
            if "seq_num" not in table or "time" not in table:
                return
            with self._lock:
                for seq, t in zip(table["seq_num"], table["time"], strict=True):
                    if int(seq) >= run.next_seq:  # older rows: already sent
                        run.rows.setdefault(int(seq), {})["time"] = float(t)
                self._drain(run)
        except Exception:
            self.stats.add("malformed")
            logger.exception("%s: unreadable table rows in run %s", self.name, run.uid)

    # -- joining (always under self._lock) -------------------------------------------------

    def _complete(self, run: _LiveRun, row: Mapping[str, Any]) -> bool:
        return "time" in row and all(k in row for k in run.array_keys)

    def _send_event(self, run: _LiveRun, seq: int) -> None:
        row = run.rows.pop(seq)
        data = {k: row[k] for k in run.array_keys if k in row}
        self._emit("event", _event_doc(str(run.descriptor_uid), seq, row["time"], data))
        run.emitted += 1

    def _drain(self, run: _LiveRun) -> None:
        """Send the events that are complete and next in order; finish the run if due."""
        while run.next_seq in run.rows and self._complete(run, run.rows[run.next_seq]):
            self._send_event(run, run.next_seq)
            run.next_seq += 1
        if run.stop_doc is not None:
            self._maybe_finish(run, force=False)

    def _maybe_finish(self, run: _LiveRun, force: bool) -> None:
        assert run.stop_doc is not None
        num_events = run.stop_doc.get("num_events")
        expected = num_events.get(self._stream_name, 0) if isinstance(num_events, dict) else 0
        if isinstance(expected, bool) or not isinstance(expected, int | np.integer):
            expected = 0  # garbage: the assembler counts it; the run must close all the same
        if not force and run.emitted < int(expected):
            return
        # Whatever is complete goes out in order (the assembler counts any holes as gaps).
        for seq in sorted(run.rows):
            if self._complete(run, run.rows[seq]):
                self._send_event(run, seq)
        if run.rows:
            self.stats.add("malformed", len(run.rows))
            logger.warning(
                "%s: run %s ended with %d half-received frame(s)", self.name, run.uid, len(run.rows)
            )
        self._emit("stop", run.stop_doc)
        self._runs.pop(run.uid, None)
        self._retired.extend(run.subscriptions)

    def _housekeeping(self) -> None:
        """From the items() thread: time out held stops, disconnect finished runs."""
        now = time.monotonic()
        with self._lock:
            for run in list(self._runs.values()):
                if run.stop_doc is not None and now - run.stop_seen_at > self._stop_wait:
                    self._maybe_finish(run, force=True)
            retired, self._retired = self._retired, []
        for subscription in reversed(retired):
            _disconnect(subscription)

    def items(self, stop_event: threading.Event) -> Iterator[StreamItem]:
        """Yield items of new runs until ``stop_event`` is set."""
        client = connect(self.uri, self._key_file)
        root = self._subscribe(
            client,
            None,
            child_created=self._on_root_child,
            child_metadata_updated=self._on_root_metadata,
        )
        with self._lock:
            resumed, self._resumed = self._resumed, []
        for start in resumed:
            self._take_up(client, start)
        self.ready.set()
        logger.info("%s: subscribed to new runs", self.name)
        try:
            while not stop_event.is_set():
                try:
                    yield self._queue.get(timeout=self._poll)
                except queue.Empty:
                    self._housekeeping()
        finally:
            self.ready.clear()
            with self._lock:
                leftovers = [s for run in self._runs.values() for s in run.subscriptions]
                leftovers += self._retired
                self._runs.clear()
                self._retired = []
            for subscription in reversed(leftovers):
                _disconnect(subscription)
            _disconnect(root)
            logger.info("%s: stopped; %s", self.name, self.stats.as_dict())

    def drain_backlog(self) -> list[StreamItem]:
        """Items received but not yet handed over (counted as abandoned by the service at
        shutdown). Call after :meth:`items` ended."""
        items: list[StreamItem] = []
        while True:
            try:
                items.append(self._queue.get_nowait())
            except queue.Empty:
                return items

    def _take_up(self, client: Any, start: RunStart) -> None:
        """Go on with a run a restart left open: stored rows after the last published seq,
        then live rows. Subscriptions come first, the read of stored rows second, so no row
        written in between is missed (rows are joined by ``seq_num``; doubles merge)."""
        last = start.resumed_after or 0  # from our journal, never from the start document
        self._queue.put(start)
        try:
            if start.uid not in client:
                logger.warning("%s: resumed run %s is not in Tiled", self.name, start.uid)
                return
            node = client[start.uid]
            run = _LiveRun(uid=start.uid, next_seq=last + 1, emitted=last)
            with self._lock:
                self._runs[run.uid] = run
            stored = 0
            if self._stream_name in node:
                stored = self._take_up_stream(run, node[self._stream_name])

            def on_stream(u: Any, run: _LiveRun = run) -> None:
                self._on_stream_created(run, u)

            self._subscribe(node, run, child_created=on_stream)
            stop = node.metadata.get("stop")
            with self._lock:
                if stop and run.stop_doc is None:
                    run.stop_doc, run.stop_seen_at = dict(stop), time.monotonic()
                self._drain(run)
            logger.info(
                "%s: took up run %s after seq_num %d; %d stored event(s) since",
                self.name,
                run.uid,
                last,
                stored,
            )
        except Exception:
            logger.exception("%s: could not take up run %s", self.name, start.uid)

    def _take_up_stream(self, run: _LiveRun, stream: Any) -> int:
        """Follow a stored stream of a resumed run; the rows Tiled holds after ``next_seq``."""
        descriptor = _descriptor_doc(run.uid, self._stream_name, stream.metadata)
        if not self._follow_descriptor(run, descriptor):
            return 0
        if descriptor["uid"] not in self._journal_descriptors:
            self._emit("descriptor", descriptor)  # the kill came before the journal had it
        base = getattr(stream, "base", stream)

        def on_node(u: Any, run: _LiveRun = run) -> None:
            self._on_data_node_created(run, u)

        self._subscribe(base, run, child_created=on_node)
        for key in list(base):
            node = base[key]
            self._follow_data_node(run, str(key), _family(node), lambda node=node: node)
        if "seq_num" not in stream:
            return 0
        seqs = np.asarray(stream["seq_num"].read(), dtype=int)
        times = np.asarray(stream["time"].read(), dtype=float)
        rows = [i for i, seq in enumerate(seqs) if seq >= run.next_seq]
        if not rows:
            return 0
        first = rows[0]
        arrays = {k: np.asarray(stream[k][first:]) for k in run.array_keys if k in stream}
        with self._lock:
            for i in rows:
                row = run.rows.setdefault(int(seqs[i]), {})
                row["time"] = float(times[i])
                for key, block in arrays.items():
                    if i - first < len(block):
                        row[key] = block[i - first]
        return len(rows)


def _disconnect(subscription: Any) -> None:
    try:
        subscription.disconnect()
    except Exception:
        logger.debug(
            "tiled subscription %s did not disconnect cleanly", subscription, exc_info=True
        )


class TiledReplaySource(FrameSource):
    """Replay one archived run: its frames in ``seq_num`` order, then its stop.

    ``pace=None`` replays as fast as possible; ``pace=s`` keeps the original spacing of the
    event timestamps divided by ``s`` (1.0 = real time, 10.0 = ten times faster). Frames keep
    their original timestamps either way, so results stay tied to the measurement time.
    """

    def __init__(
        self,
        uri: str,
        run_uid: str,
        pace: float | None = None,
        *,
        key_file: str | os.PathLike[str] | None = None,
        data_key: str = DEFAULT_DATA_KEY,
        r_key: str = DEFAULT_R_KEY,
        stream_name: str = DEFAULT_STREAM,
        name: str | None = None,
    ) -> None:
        if pace is not None and pace <= 0:
            raise ValueError(f"pace must be positive or None, not {pace}")
        self.uri = uri
        self.run_uid = run_uid
        self.pace = pace
        self.paced = pace is not None  # unpaced: no arrival rate to keep up with
        self.name = name or f"tiled-replay:{run_uid}"
        self.stats = SourceStats()
        self._key_file = key_file
        self._data_key = data_key
        self._r_key = r_key
        self._stream_name = stream_name
        self._assembler = DocumentAssembler(
            data_key=data_key,
            r_key=r_key,
            stream_name=stream_name,
            stats=self.stats,
            source_name=self.name,
        )

    def _documents(self, client: Any) -> Iterator[tuple[str, dict[str, Any]]]:
        """Rebuild the run's documents from its stored metadata, arrays and table."""
        run = client[self.run_uid]
        start = dict(run.metadata["start"])
        yield "start", start
        stop = run.metadata.get("stop")
        if self._stream_name in run:
            stream = run[self._stream_name]
            descriptor = _descriptor_doc(self.run_uid, self._stream_name, stream.metadata)
            yield "descriptor", descriptor
            yield from self._events(stream, descriptor)
        else:
            logger.warning("%s: run has no stream %r", self.name, self._stream_name)
        if not stop:
            logger.warning("%s: archived run has no stop document (it did not finish)", self.name)
            stop = {"uid": f"{self.run_uid}/stop", "run_start": self.run_uid, "time": time.time()}
            stop |= {"exit_status": "unknown", "num_events": {}}
        yield "stop", dict(stop)

    def _events(
        self, stream: Any, descriptor: Mapping[str, Any]
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        seq_nums = np.asarray(stream["seq_num"].read(), dtype=int)
        times = np.asarray(stream["time"].read(), dtype=float)
        keys = [self._data_key]
        if self._r_key in descriptor["data_keys"] and self._r_key in stream:
            keys.append(self._r_key)
        arrays = {k: stream[k] for k in keys if k in stream}
        order = np.argsort(seq_nums, kind="stable")
        for lo in range(0, len(order), _REPLAY_CHUNK):
            rows = order[lo : lo + _REPLAY_CHUNK]
            # Rows are stored in write order; read the contiguous block covering this chunk.
            first, last = int(rows.min()), int(rows.max())
            blocks = {k: np.asarray(a[first : last + 1]) for k, a in arrays.items()}
            for row in rows:
                data = {k: b[int(row) - first] for k, b in blocks.items()}
                yield (
                    "event",
                    _event_doc(descriptor["uid"], int(seq_nums[row]), float(times[row]), data),
                )

    def items(self, stop_event: threading.Event) -> Iterator[StreamItem]:
        """Yield the stored run; returns at its end, or early when ``stop_event`` is set."""
        client = connect(self.uri, self._key_file)
        wall0: float | None = None
        t0 = 0.0
        for name, doc in self._documents(client):
            if stop_event.is_set():
                logger.info("%s: stopped early", self.name)
                return
            if name == "event" and self.pace is not None:
                if wall0 is None:
                    wall0, t0 = time.monotonic(), float(doc["time"])
                due = wall0 + (float(doc["time"]) - t0) / self.pace
                delay = due - time.monotonic()
                if delay > 0 and stop_event.wait(delay):
                    return
            yield from self._assembler.process(name, doc)
        logger.info("%s: replay finished; %s", self.name, self.stats.as_dict())


def _family(node: Any) -> str:
    """A Tiled node's (or node-created update's) structure family as a plain string."""
    return str(getattr(node.structure_family, "value", node.structure_family))
