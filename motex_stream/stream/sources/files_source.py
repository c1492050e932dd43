"""Frames from a series of ``.gr`` files: re-analysing an experiment after the fact.

Many time-resolved experiments exist only as a folder of reduced ``.gr`` files. Treating such
a folder as one run (start, one frame per file, stop) lets the same service analyse them. Files
are ordered by natural sort of their names (``frame_2`` before ``frame_10``), which is the
order detectors and reduction software number them in; lexical order would scramble the series.
"""

from __future__ import annotations

import glob
import logging
import os
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from motex_stream.fitting.grfile import read_gr
from motex_stream.stream.frames import (
    Frame,
    FrameError,
    RunStart,
    RunStop,
    StreamItem,
    validate_frame,
)
from motex_stream.stream.sources.base import FrameSource, SourceStats

logger = logging.getLogger(__name__)

_DIGITS = re.compile(r"(\d+)")


def natural_key(path: str | os.PathLike[str]) -> tuple[tuple[int, int | str], ...]:
    """Sort key that compares digit runs as numbers: ``f2`` < ``f10``."""
    parts = _DIGITS.split(Path(path).name)
    return tuple((0, int(p)) if p.isdigit() else (1, p.lower()) for p in parts if p)


class FileSeriesSource(FrameSource):
    """A glob or directory of ``.gr`` files as one run, one frame per file.

    ``pattern`` is a glob (``/data/run7/*.gr``) or a directory (all ``*.gr`` inside). The run
    uid and each frame's ``source`` are ``pattern`` as given; ``seq`` is the 1-based position
    in natural order and ``time`` the file's modification time. ``interval`` seconds are
    waited between frames (``None``: as fast as possible), e.g. to demo a live experiment.
    Files are read with :func:`motex_stream.fitting.grfile.read_gr`, and each frame carries
    the Q range of its file's header (``qmin``/``qmax``; None where the header has none).
    """

    def __init__(
        self,
        pattern: str | os.PathLike[str],
        *,
        interval: float | None = None,
        name: str | None = None,
    ) -> None:
        self.pattern = str(pattern)
        self.interval = interval
        self.paced = interval is not None  # unpaced: no arrival rate to keep up with
        self.name = name or f"files:{self.pattern}"
        self.stats = SourceStats()

    def paths(self) -> list[Path]:
        """The files of the series, in natural order of their names."""
        if Path(self.pattern).is_dir():
            found = glob.glob(os.path.join(glob.escape(self.pattern), "*.gr"))
        else:
            found = glob.glob(self.pattern)
        return [Path(p) for p in sorted((p for p in found if os.path.isfile(p)), key=natural_key)]

    def _frame(self, path: Path, seq: int, metadata: dict[str, object]) -> Frame | None:
        self.stats.add("received")
        try:
            data = read_gr(path)
            return validate_frame(
                Frame(
                    source=self.pattern,
                    seq=seq,
                    time=path.stat().st_mtime,
                    r=data.r,
                    g=data.g,
                    run_metadata=metadata,
                    qmin=data.qmin,
                    qmax=data.qmax,
                )
            )
        except (OSError, ValueError, FrameError) as err:  # GrFileError is a ValueError
            self.stats.add("malformed")
            logger.warning("%s: skipped unreadable file %s: %s", self.name, path, err)
            return None

    def items(self, stop_event: threading.Event) -> Iterator[StreamItem]:
        """RunStart, one Frame per readable file, RunStop; returns early if asked to stop."""
        paths = self.paths()
        if not paths:
            logger.warning("%s: no files match", self.name)
        metadata: dict[str, object] = {
            "uid": self.pattern,
            "source": "files",
            "files": [str(p) for p in paths],
        }
        try:
            started = min(p.stat().st_mtime for p in paths) if paths else time.time()
        except OSError:
            started = time.time()
        yield RunStart(uid=self.pattern, time=started, metadata=metadata)
        emitted = 0
        status = "success"
        for seq, path in enumerate(paths, start=1):
            if stop_event.is_set():
                status = "abort"
                break
            frame = self._frame(path, seq, metadata)
            if frame is None:
                continue
            yield frame
            emitted += 1
            if self.interval and seq < len(paths) and stop_event.wait(self.interval):
                status = "abort"
                break
        yield RunStop(uid=self.pattern, time=time.time(), exit_status=status, num_events=emitted)
