"""Plain JSON values from what the analysis computes: one conversion for every JSON it writes.

Used by the offline outputs (``result.json``, the report) and by the stream's wire message
(:func:`motex_stream.stream.messages.to_message`), so both write numbers the same way.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np


def to_jsonable(value: Any) -> Any:
    """Recursively turn numpy scalars/arrays, tuples, sets and paths into JSON values.

    Non-finite floats become ``None`` (``null``): strict JSON has no NaN, and other tools
    (jq, browsers) reject files that contain it. A dataclass becomes the object of its
    fields, leaving out those that are None (its optional members). Anything else unknown
    becomes its ``str``.
    """
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: to_jsonable(getattr(value, f.name))
            for f in dataclasses.fields(value)
            if getattr(value, f.name) is not None
        }
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray | np.generic):
        return to_jsonable(value.tolist())
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, Path):
        return str(value)
    return str(value)
