"""What the derived run's writers agree on: its stream names, how a stop says the service left
early, and how a failed write is reported.

Shared by :mod:`.bluesky_run` (which makes the documents) and :mod:`.tiled_archive` (which
stores them), so that neither imports the other for these names.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

#: What a derived run's documents are handed to: ``callback(name, doc)``.
DocumentCallback = Callable[[str, dict[str, Any]], Any]

#: The derived run's stream of analysed frames (one event per frame).
PRIMARY_STREAM = "primary"
#: The derived run's stream of detected keep-set changes (one event per change).
CHANGES_STREAM = "changes"
#: The reason of the stop a clean shutdown gives a derived run whose raw run goes on: such a
#: run is reopened like one a kill left without a stop, should the raw run be taken up again.
STOPPED_EARLY = "motex-stream stopped before the raw run ended"


class SinkWriteError(RuntimeError):
    """One or more document callbacks failed; the message names each failure in one line."""


def one_line(exc: BaseException) -> str:
    """An exception as one log line: its type and its first 300 characters, whitespace folded."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:300]}" if text else type(exc).__name__
