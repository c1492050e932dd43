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
from motex_stream.stream.publishers.base import Sink

log = logging.getLogger(__name__)


class JsonlSink(Sink):
    """Append each message to ``path`` (parents created) and flush it to the OS."""

    def __init__(self, path: str | Path, *, fsync: bool = False, name: str = "JsonlSink") -> None:
        self.name = name
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        repair_tail(self.path)
        self._fh = self.path.open("ab")
        self._fsync = fsync  # survive power loss too, at a disk-sync per frame
        self.written = 0

    def on_run_start(self, start: RunStart) -> None:
        """Nothing to write: each line names its run (``source``)."""

    def last_published(self, run_uid: str, model: str, tail_bytes: int = 4 * 2**20) -> int:
        """The highest seq of ``run_uid`` (``model``) among the file's last ``tail_bytes``.

        A restarted service asks this for a run it resumes: a kill between this file's write and
        the run journal's would otherwise let a re-sent frame be appended a second time.
        """
        try:
            with self.path.open("rb") as fh:
                fh.seek(max(0, self.path.stat().st_size - tail_bytes))
                lines = fh.read().split(b"\n")
        except OSError:
            return 0
        needle = json.dumps(run_uid).encode()
        best = 0
        for line in lines:
            if needle not in line:
                continue
            try:
                message = json.loads(line)
            except ValueError:
                continue  # the first (cut) or a half-written last line
            if message.get("source") == run_uid and message.get("model") == model:
                best = max(best, int(message.get("seq", 0)))
        return best

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


def repair_tail(path: Path) -> int:
    """Cut a last line that a kill left half-written; return the bytes removed.

    Appending after it would glue the next message onto the broken one and corrupt a line in
    the middle of the file. The frame of a cut line was never fully published, so a resumed
    replay analyses it again.
    """
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return 0
    if size == 0:
        return 0
    with path.open("rb+") as fh:
        fh.seek(-1, os.SEEK_END)
        if fh.read(1) == b"\n":
            return 0
        # find the last newline, reading backwards in blocks
        pos, keep = size, 0
        while pos > 0:
            step = min(65536, pos)
            pos -= step
            fh.seek(pos)
            block = fh.read(step)
            i = block.rfind(b"\n")
            if i >= 0:
                keep = pos + i + 1
                break
        fh.truncate(keep)
    log.warning("%s: removed a half-written last line (%d bytes)", path, size - keep)
    return size - keep


def published_seqs(path: str | Path, model: str | None = None) -> dict[str, int]:
    """Per run (``source``), the highest ``seq`` already in a JSON Lines file (of ``model``).

    What ``replay`` resumes after: frames up to it were published completely.
    """
    done: dict[str, int] = {}
    if not Path(path).exists():
        return done
    for message in read_jsonl(path, validate=False):
        if model is not None and message.get("model") != model:
            continue
        source, seq = str(message.get("source")), int(message.get("seq", 0))
        done[source] = max(done.get(source, 0), seq)
    return done


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
