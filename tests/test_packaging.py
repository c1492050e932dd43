"""The dependency files say what is installed and no more (issue 22 item 9).

``constraints.txt`` pinned databroker, which nothing installs (a pin of nothing: it only
misleads whoever reads the file), and bluesky-tiled-plugins had no upper bound although the
archive subclasses a private class of it.
"""

from __future__ import annotations

import importlib.metadata as md
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[_canonical(name)] = version
    return pins


def test_every_pin_is_installed_by_the_project() -> None:
    """``pip install -c constraints.txt -e .[dev]`` (Makefile) installs each pinned package."""
    installed = {_canonical(d.metadata["Name"]) for d in md.distributions()}
    dead = sorted(set(_pins()) - installed)
    assert not dead, f"pinned in constraints.txt but installed by nothing: {dead}"


def test_packages_used_through_private_api_are_bounded() -> None:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    bounded = {_canonical(re.split(r"[<>=!~\[ ]", d, maxsplit=1)[0]): d for d in deps}
    for name in ("bluesky-tiled-plugins", "scikit-optimize"):
        assert "<" in bounded[name], f"{bounded[name]}: needs an upper bound"
    pins = _pins()
    assert md.version("bluesky-tiled-plugins") == pins["bluesky-tiled-plugins"]
