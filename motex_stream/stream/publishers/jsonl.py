"""JSON Lines sink: one v1 message per line, appended and flushed as it is produced.

Why JSON Lines: it is the simplest durable record of a live experiment. Appending means a
restarted service adds to the same file instead of overwriting a shift's results, flushing per
line means a crash loses at most the line being written, and any tool (pandas, jq) reads it.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from motex_stream.stream.frames import RunStart, RunStop
from motex_stream.stream.messages import PublishedFrame, to_json, validate_message

log = logging.getLogger(__name__)


class JsonlSink:
    """Append each message to ``path`` (parents created) and flush it to the OS."""

    def __init__(self, path: str | Path, *, fsync: bool = False) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = self.path.open("ab")
        self._fsync = fsync  # survive power loss too, at a disk-sync per frame
        self.written = 0

    def on_run_start(self, start: RunStart) -> None:
        """Nothing to write: each line names its run (``source``)."""

    def publish(self, published: PublishedFrame) -> None:
        """Append the frame's v1 message as one line."""
        self._fh.write(to_json(published) + b"\n")
        self._fh.flush()
        if self._fsync:
            os.fsync(self._fh.fileno())
        self.written += 1

    def on_run_stop(self, stop: RunStop) -> None:
        """Nothing to write."""

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.close()


def read_jsonl(path: str | Path, *, validate: bool = True) -> Iterator[dict[str, Any]]:
    """Yield the messages in a JSON Lines file, in order.

    A truncated last line (the service was killed mid-write) is skipped with a warning; a
    broken line elsewhere is a real corruption and raises ValueError with its line number.
    """
    lines = Path(path).read_bytes().split(b"\n")
    last = max((i for i, ln in enumerate(lines) if ln.strip()), default=-1)
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            message = json.loads(line)
        except json.JSONDecodeError as exc:
            if number - 1 == last:
                log.warning("%s: ignoring a truncated last line %d", path, number)
                return
            raise ValueError(f"{path}:{number}: not JSON: {exc}") from exc
        if validate:
            try:
                validate_message(message)
            except ValueError as exc:
                raise ValueError(f"{path}:{number}: {exc}") from exc
        yield message
