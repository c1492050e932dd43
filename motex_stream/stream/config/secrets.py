"""Tiled API keys: from the environment or a key file, never from the config file.

Why: a config file ends up in version control, in bug reports and in logs; a key written there
leaks. So the loader refuses any ``api_key`` entry anywhere in the file, and the key is read
at connection time from ``MOTEX_TILED_API_KEY`` (first) or an ``api_key_file``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from motex_stream.stream.config.base import ConfigError, key_path

API_KEY_ENV = "MOTEX_TILED_API_KEY"
API_KEY_FILE_ENV = "MOTEX_TILED_API_KEY_FILE"


def read_api_key(key_file: str | os.PathLike[str] | None = None) -> str | None:
    """The Tiled API key: ``MOTEX_TILED_API_KEY`` first, else the first line of the key file
    (``key_file``, else ``MOTEX_TILED_API_KEY_FILE``); ``None``: no key (no authentication).

    The one reader of the key, for sources and sinks alike.
    """
    env = os.environ.get(API_KEY_ENV)
    if env:
        return env.strip()
    path = key_file or os.environ.get(API_KEY_FILE_ENV)
    if not path:
        return None
    key_file = Path(path)
    try:
        return key_file.read_text().strip().splitlines()[0].strip() or None
    except (OSError, IndexError) as exc:
        raise ConfigError(f"cannot read Tiled API key file {key_file}: {exc}") from exc


def api_key_entries(data: Any, where: tuple[str | int, ...] = ()) -> list[str]:
    """Problems for every ``api_key`` entry in a parsed config, at any depth.

    The message names the key and the alternatives but never echoes the value.
    """
    found: list[str] = []
    if isinstance(data, Mapping):
        for key, value in data.items():
            here = (*where, str(key))
            if key == "api_key":
                found.append(
                    f"{key_path(here)}: API keys do not belong in the config file; set "
                    f"{API_KEY_ENV} or point api_key_file at a file readable only by the service"
                )
            else:
                found.extend(api_key_entries(value, here))
    elif isinstance(data, list):
        for i, value in enumerate(data):
            found.extend(api_key_entries(value, (*where, i)))
    return found
