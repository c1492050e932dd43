"""The user guide's commands work: each is run here or names the test that runs it.

A guide whose commands rot is worse than none, so every ``motex-stream``/``make`` line in a
bash block of ``docs/user-guide.md`` must either sit in a block marked ``<!-- guide: run -->``
(run here verbatim, in a scratch folder that sees the bundled data) or end with
``# tested: PATH::TEST`` naming a test that exists.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import ROOT

GUIDE = ROOT / "docs" / "user-guide.md"
BLOCK = re.compile(r"(<!-- guide: run -->\s*)?```bash\n(.*?)```", re.DOTALL)
TESTED = re.compile(r"#\s*tested:\s*(\S+)")


@dataclass(frozen=True)
class Command:
    line: str
    run_here: bool
    tested_by: str | None


def guide_commands() -> list[Command]:
    commands = []
    for match in BLOCK.finditer(GUIDE.read_text()):
        for raw in match.group(2).splitlines():
            line = raw.strip()
            if not line.startswith(("motex-stream", "make")):
                continue
            tested = TESTED.search(line)
            commands.append(Command(line, bool(match.group(1)), tested and tested.group(1)))
    return commands


def test_every_guide_command_is_run_or_names_its_test() -> None:
    commands = guide_commands()
    assert len(commands) >= 8
    for command in commands:
        if command.run_here:
            continue
        assert command.tested_by, f"guide command without a test: {command.line}"
        if command.tested_by.startswith(".ci/run"):
            assert "make test" in (ROOT / ".ci" / "run").read_text()
            continue
        path, _, name = command.tested_by.partition("::")
        source = (ROOT / path).read_text()
        assert re.search(rf"def {re.escape(name)}\(", source), command.tested_by


def _run(line: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    argv = shlex.split(line, comments=True)
    assert argv[0] == "motex-stream"
    return subprocess.run(
        [sys.executable, "-m", "motex_stream", *argv[1:]],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow
def test_guide_commands_run_verbatim(tmp_path: Path) -> None:
    """The marked commands, in order, in a folder where the guide's relative paths resolve."""
    (tmp_path / "motex_stream").symlink_to(ROOT / "motex_stream")
    ran = [c for c in guide_commands() if c.run_here]
    assert len(ran) >= 2
    for command in ran:
        done = _run(command.line, tmp_path)
        assert done.returncode == 0, f"{command.line}\n{done.stderr[-2000:]}"
    # what section 3 of the guide says the analysis wrote
    report = json.loads((tmp_path / "my-analysis" / "report.json").read_text())
    assert report["settings"]["qmax"] == pytest.approx(19.99898, abs=1e-5)
    for name in ("contributions.csv", "model_contributions.vesta", "model_contributions.xyz",
                 "best_motif.xyz", "fits.csv", "fits.npz"):  # fmt: skip
        assert (tmp_path / "my-analysis" / name).stat().st_size > 0, name
    lines = (tmp_path / "replay.jsonl").read_text().splitlines()
    assert len(lines) == 2  # the DanMAX file and its Nyquist copy: one frame each
