"""Reopen a derived run that Tiled already holds, and go on writing it where it stopped.

Why: a service or replay killed in the middle of a run leaves its derived run in Tiled without
a stop. The restarted process analyses the frames after the kill and composes the very same
derived run (its uid is deterministic), but the stock ``bluesky_tiled_plugins.TiledWriter``
can only *create* runs: its start makes the run container, its descriptor the stream
container, its first batch of events the array nodes and the ``internal`` table. Against a
stored run every one of those is a 409.

How: what the run already holds is read back from Tiled, the source of truth (the writer
batches, so a local "last seq written" proves nothing). Per stream that is the ``seq_num``
column of its ``internal`` table; the stock writer appends that table *after* the array rows of
the same events, so a row in the table means the whole event is stored. The documents then go
through the stock ``RunNormalizer`` and the stock ``_RunWriter`` code (with the atom axis of
:func:`motex_writer_class`) whose node clients are pre-populated with the stored nodes instead
of created, so events are appended by the stock
code, in the stock layout (arrays ``patch``-extended, table rows appended), and the stop is
written and the streams closed by it too. Events whose ``seq_num`` the stream already holds are
dropped, so nothing is stored twice.

A kill between an event's array writes and its table row leaves array nodes one row longer than
the table. That event is not held (no table row); when it is written again, its array rows go
*over* the orphan rows (offset = table length), so arrays and table stay aligned.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

#: The stock writer's table of event columns (``seq_num``, ``time``, scalars, timestamps).
INTERNAL_TABLE = "internal"


class ReopenError(RuntimeError):
    """The stored run cannot be continued (layout not the stock writer's); one line."""


@dataclass
class StoredStream:
    """One stream of a stored run: its node and the ``seq_num`` of each stored event."""

    node: Any  # the stream's Container (``run[name].base``)
    seqs: list[int] = field(default_factory=list)  # table order
    table: Any | None = None  # the ``internal`` DataFrameClient, if any event was written

    @cached_property
    def held(self) -> set[int]:
        """The stored seqs as a set, built once: every resent event is checked against it
        (``seqs`` is read from Tiled once and not changed afterwards)."""
        return set(self.seqs)


@dataclass
class StoredRun:
    """What Tiled holds of one derived run."""

    uid: str
    node: Any  # the run's container
    finished: bool  # has a stop document
    streams: dict[str, StoredStream] = field(default_factory=dict)

    def last_seq(self, stream: str) -> int:
        s = self.streams.get(stream)
        return max(s.seqs, default=0) if s is not None else 0


def read_stored_run(client: Any, uid: str) -> StoredRun | None:
    """The stored run ``uid`` as the stock writer laid it out, or None if Tiled lacks it."""
    if uid not in client:
        return None
    node = client[uid]
    stored = StoredRun(uid, node, finished=node.metadata.get("stop") is not None)
    for name in list(node):
        stream_node = node[name]
        base = getattr(stream_node, "base", stream_node)  # composite stream → plain container
        stream = StoredStream(base)
        if INTERNAL_TABLE in base:
            stream.table = base[INTERNAL_TABLE]
            seq_col = np.asarray(stream.table.read(columns=["seq_num"])["seq_num"])
            stream.seqs = [int(s) for s in seq_col]
        stored.streams[str(name)] = stream
    return stored


class _AlignedArray:
    """An array node whose length the writer sees as the table's, so appends stay aligned.

    The stock writer appends at ``arr_client.shape[0]``; over orphan rows (a kill between the
    array writes and the table row) that would put the event's array one row after its table
    row. Everything else goes to the real client.
    """

    def __init__(self, client: Any, rows: int) -> None:
        self._client = client
        self._rows = rows

    @property
    def shape(self) -> tuple[int, ...]:
        return (self._rows, *tuple(self._client.shape)[1:])

    def patch(self, array: Any, offset: Any, extend: bool = False, **kw: Any) -> None:
        first = offset if isinstance(offset, int) else int(offset[0])
        self._client.patch(array, offset=offset, extend=True, **kw)
        self._rows = first + int(array.shape[0])

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


#: The descriptor configuration object that holds the per-atom axis (``atom``, ``element``).
AXIS_OBJECT = "motex"
#: The per-atom dimension name the derived run's data keys declare (``dims``).
ATOM_DIM = "atom"


@functools.cache
def motex_writer_class() -> type:
    """The stock ``_RunWriter`` plus a per-atom axis a stock client can select on.

    Why: the stock writer names every inner dimension itself (``dim_int_1``) and drops the
    ``dims`` a data key declares, so ``read()`` gives no atom axis to ``sel`` on. Seeding its
    size-to-name map with the declared name makes every per-atom array ``(time, atom)``, and
    two small array nodes in the stream, ``atom`` (the 1-based index in the starting-model
    file) and ``element``, both ``(atom,)``, make ``atom`` an index coordinate of the stock
    ``run["primary"].read()``: ``ds.contributions.sel(atom=9)`` works as it stands. Everything
    else (events, tables, the stop) is the stock code. Built lazily: the plugin is heavy.
    """
    from bluesky_tiled_plugins.writing.tiled_writer import _RunWriter

    missing = [
        a
        for a in (
            "_desc_nodes",
            "_internal_tables",
            "_internal_arrays",
            "_int_array_keys",
            "_int_dims_names",
        )
        if a not in vars(_RunWriter(None))
    ]
    if missing:  # a bluesky-tiled-plugins release that keeps its state elsewhere
        raise ReopenError(f"this bluesky-tiled-plugins has no {', '.join(missing)}")

    class MotexRunWriter(_RunWriter):  # type: ignore[misc, valid-type]
        """Stock writing, with the declared per-atom dimension name and its coordinate."""

        def descriptor(self, doc: Mapping[str, Any]) -> None:
            name = doc["name"]
            new_stream = name not in self._desc_nodes
            self._name_declared_dims(name, doc.get("data_keys", {}))
            super().descriptor(doc)
            if new_stream:
                self._write_atom_axis(name, doc)

        def _name_declared_dims(self, name: str, data_keys: Mapping[str, Any]) -> None:
            names: dict[int, str] = self._int_dims_names[name]
            for spec in data_keys.values():
                dims, shape = spec.get("dims") or (), spec.get("shape") or ()
                if spec.get("dtype") != "array" or len(dims) != len(shape) or None in shape:
                    continue  # ragged arrays keep the stock per-array names
                for size, dim in zip(shape, dims, strict=True):
                    # one name per size and one size per name, or xarray cannot align them
                    if int(size) not in names and str(dim) not in names.values():
                        names[int(size)] = str(dim)

        def _write_atom_axis(self, name: str, doc: Mapping[str, Any]) -> None:
            axis = doc.get("configuration", {}).get(AXIS_OBJECT, {}).get("data", {})
            atoms = axis.get(ATOM_DIM)
            if not atoms or self._int_dims_names[name].get(len(atoms)) != ATOM_DIM:
                return
            node = self._desc_nodes[name]
            for key in (ATOM_DIM, "element"):
                values = axis.get(key)
                if values is None or len(values) != len(atoms) or key in node:
                    continue
                node.write_array(
                    np.asarray(values),
                    key=key,
                    metadata={"source": AXIS_OBJECT, "description": f"{key} of each atom"},
                    dims=[ATOM_DIM],
                    access_tags=self.access_tags,
                )

    return MotexRunWriter


class NewRun:
    """Documents of a run Tiled does not hold yet, written by :func:`motex_writer_class`
    behind the stock ``RunNormalizer`` (what the stock ``TiledWriter`` does for one run)."""

    def __init__(self, client: Any, *, batch_size: int = 1) -> None:
        from bluesky_tiled_plugins.writing.tiled_writer import RunNormalizer

        self._normalizer = RunNormalizer()
        writer = motex_writer_class()(client, batch_size=batch_size, max_array_size=0)
        self._normalizer.subscribe(writer)

    def __call__(self, name: str, doc: dict[str, Any]) -> None:
        self._normalizer(name, doc)


def _reopened_writer_class() -> type:
    """A :func:`motex_writer_class` writer that takes its nodes from the stored run instead
    of creating them."""
    writer_class: type = motex_writer_class()

    class ReopenedRunWriter(writer_class):  # type: ignore[misc, valid-type]
        """Stock writing into a stored run: only start and a stored stream's descriptor differ."""

        def __init__(self, client: Any, stored: StoredRun, **kw: Any) -> None:
            super().__init__(client, **kw)
            self.stored = stored

        def start(self, doc: Mapping[str, Any]) -> None:
            self.access_tags = doc.get("tiled_access_tags")
            self.root_node = self.client[doc["uid"]]

        def descriptor(self, doc: Mapping[str, Any]) -> None:
            name = doc["name"]
            stream = self.stored.streams.get(name)
            if stream is None or name in self._desc_nodes:
                super().descriptor(doc)  # a stream the run does not hold yet: stock creation
                return
            self.data_keys.update(doc.get("data_keys", {}))
            node = self.root_node[name].base
            rows = len(stream.seqs)
            for key, spec in doc.get("data_keys", {}).items():
                if "external" in spec or spec.get("dtype") != "array":
                    continue
                if None in spec.get("shape", ()):
                    self._int_ragged_array_keys[name].add(key)
                else:  # max_array_size=0: every fixed-shape array is an array node
                    self._int_array_keys[name].add(key)
                if key in node:
                    array = node[key]
                    if array.shape[0] < rows:
                        raise ReopenError(
                            f"stream {name!r} of run {self.stored.uid}: {key} holds "
                            f"{array.shape[0]} rows but the table {rows}"
                        )
                    self._internal_arrays[f"{name}/{key}"] = _AlignedArray(array, rows)
                    self._register_dims(name, array)
            if stream.table is not None:
                self._internal_tables[name] = stream.table
            self._desc_nodes[doc["uid"]] = self._desc_nodes[name] = node

        def _register_dims(self, name: str, array: Any) -> None:
            """Reuse the stored dimension names, so later arrays align as stored ones do."""
            dims = getattr(array.structure(), "dims", None) or ()
            for size, dim in zip(tuple(array.shape)[1:], tuple(dims)[1:], strict=False):
                if not str(dim).startswith("dim_rgd_"):  # ragged names are per array
                    self._int_dims_names[name].setdefault(int(size), str(dim))

    return ReopenedRunWriter


class ReopenedRun:
    """Documents of one derived run, written into its stored copy by the stock writer code.

    Feed it the run's documents (start first) like any Bluesky callback. Events already stored
    (same stream and ``seq_num``) are dropped and counted in ``skipped``; the stop's
    ``num_events`` counts the events the stored run holds in the end.
    """

    def __init__(self, client: Any, stored: StoredRun, *, batch_size: int = 1) -> None:
        from bluesky_tiled_plugins.writing.tiled_writer import RunNormalizer

        self.stored = stored
        self.skipped = 0
        self.written: dict[str, set[int]] = {}
        self._stream_of: dict[str, str] = {}  # descriptor uid -> stream name
        self._normalizer = RunNormalizer()
        writer_class = _reopened_writer_class()
        self._normalizer.subscribe(
            writer_class(client, stored, batch_size=batch_size, max_array_size=0)
        )

    def __call__(self, name: str, doc: dict[str, Any]) -> None:
        if name == "descriptor":
            self._stream_of[doc["uid"]] = doc["name"]
        elif name == "event":
            stream = self._stream_of.get(doc["descriptor"], "")
            held = self.stored.streams.get(stream)
            seq = int(doc["seq_num"])
            if (held is not None and seq in held.held) or seq in self.written.get(stream, ()):
                self.skipped += 1
                return
            self.written.setdefault(stream, set()).add(seq)
        elif name == "stop":
            counts = {}
            for stream in set(self.written) | set(self.stored.streams):
                stored = self.stored.streams.get(stream)
                seqs = self.written.get(stream, set()) | (stored.held if stored else set())
                if seqs:
                    counts[stream] = len(seqs)
            doc = {**doc, "num_events": {**doc.get("num_events", {}), **counts}}
        self._normalizer(name, doc)
