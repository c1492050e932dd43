"""The agent's decision trail as a Bluesky run: what it saw (``tell``), what it did (``ask``).

Why a Bluesky run, written like the adaptive agents of bluesky-adaptive 0.x wrote theirs (a run
per agent session with ``tell``/``ask`` streams in an agent catalogue): it lands in Tiled
beside the derived analysis runs, is read with the same stock client, and says per decision
which frame and atoms triggered it, what was suggested and what became of it (queued, dry run,
rate limited, capped, error). Into Tiled it goes through the project's own archive writer
(:class:`~motex_stream.stream.publishers.tiled_archive.TiledArchive`, the stock bluesky-tiled
run writer with outage buffering), not a second writer.

One event per trigger, not per frame: the derived analysis run already has every frame.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from event_model import compose_run

log = logging.getLogger(__name__)

#: streams and their keys; lists of atoms are JSON text so every event has the same shape
TELL_KEYS: dict[str, str] = {
    "seq": "integer",
    "frame": "integer",
    "trigger": "string",
    "model": "string",
    "source": "string",
    "atoms_gained": "string",
    "atoms_lost": "string",
    "confidence": "number",
    "reason": "string",
}
ASK_KEYS: dict[str, str] = {
    "seq": "integer",
    "frame": "integer",
    "trigger": "string",
    "suggestion_id": "string",
    "outcome": "string",
    "plan": "string",
    "item_uid": "string",
    "detail": "string",
}

Callback = Callable[[str, dict[str, Any]], Any]


def _data_keys(keys: Mapping[str, str]) -> dict[str, Any]:
    return {k: {"source": "motex-agent", "dtype": t, "shape": []} for k, t in keys.items()}


def _cell(value: Any, dtype: str) -> Any:
    if dtype == "string":
        if isinstance(value, (list, tuple, dict)):
            return json.dumps(value)
        return "" if value is None else str(value)
    if dtype == "integer":
        return -1 if value is None else int(value)
    return float("nan") if value is None else float(value)


class ReportRun:
    """One report run: start at construction, a ``tell``/``ask`` event per call, stop at close.

    ``sink`` receives ``(name, doc)`` (a TiledArchive, or a list's append in tests). A sink
    that raises is logged and counted in :attr:`errors`; reporting never stops the agent.
    """

    def __init__(self, sink: Callback | None, metadata: Mapping[str, Any]) -> None:
        self._sink = sink
        self._lock = threading.Lock()
        self.errors = 0
        self.events = {"tell": 0, "ask": 0}
        self._bundle = compose_run(metadata={"purpose": "motex-stream agent report", **metadata})
        self.uid: str = self._bundle.start_doc["uid"]
        self._emit("start", dict(self._bundle.start_doc))
        self._descriptors = {}
        for stream, keys in (("tell", TELL_KEYS), ("ask", ASK_KEYS)):
            desc = self._bundle.compose_descriptor(name=stream, data_keys=_data_keys(keys))
            self._descriptors[stream] = (desc, keys)
            self._emit("descriptor", dict(desc.descriptor_doc))
        self._closed = False

    def _emit(self, name: str, doc: dict[str, Any]) -> None:
        if self._sink is None:
            return
        try:
            self._sink(name, doc)
        except Exception:
            self.errors += 1
            log.exception("writing the agent report (%s document) failed", name)

    def record(self, stream: str, values: Mapping[str, Any]) -> None:
        """One event in ``stream`` (``tell`` or ``ask``); missing keys get neutral values."""
        with self._lock:
            if self._closed:
                return
            desc, keys = self._descriptors[stream]
            now = time.time()
            data = {k: _cell(values.get(k), t) for k, t in keys.items()}
            self.events[stream] += 1
            event = desc.compose_event(
                data=data, timestamps=dict.fromkeys(data, now), seq_num=self.events[stream]
            )
            self._emit("event", dict(event))

    def close(self, exit_status: str = "success", reason: str = "") -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._emit(
                "stop", dict(self._bundle.compose_stop(exit_status=exit_status, reason=reason))
            )


def tiled_sink(uri: str, api_key_file: str | None = None) -> Any:
    """The project's Tiled archive writer on ``uri`` (key: ``MOTEX_TILED_API_KEY`` or file)."""
    from tiled.client import from_uri

    from motex_stream.stream.config.secrets import read_api_key
    from motex_stream.stream.publishers.tiled_archive import TiledArchive

    return TiledArchive(from_uri(uri, api_key=read_api_key(api_key_file)))
