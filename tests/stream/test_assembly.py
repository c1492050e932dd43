"""One service assembly (issue 24 step 3): `replay` and `demo` say what they do as a `Config`.

Before, both built sources, sinks and `StreamService` by hand, so what a replay does
differently from a served file (no state, no journal, unpaced, no restarts) was nowhere a
config could say. These tests read the config each command builds and the service
`build_service` makes of it; the models here are never prepared (no reference, no state: a
`LazyAnalyzer` waits for its first frame), so nothing slow runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from motex_stream.stream.commands import demo, replay
from motex_stream.stream.commands.runner import JOURNAL_DIR, build_service
from motex_stream.stream.config import FilesSourceConfig, TiledReplaySourceConfig
from motex_stream.stream.config.sources import UNPACED
from tests.conftest import KEGGIN

XYZ = str(KEGGIN / "109725.xyz")


def _replay_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    replay.add_arguments(parser)
    return parser.parse_args(["--model", XYZ, *argv])


def _replay_config(*argv: str):  # type: ignore[no-untyped-def]
    args = _replay_args(*argv)
    return replay.replay_config(args, replay.replay_settings(args))


def test_a_files_replay_is_a_config_without_state_journal_or_restarts(tmp_path: Path) -> None:
    glob = str(tmp_path / "run 7" / "*.gr")  # a space and a '*': what the old name rule refused
    config = _replay_config("--frames", glob, "--out", str(tmp_path / "o.jsonl"))
    (source,) = config.sources
    assert isinstance(source, FilesSourceConfig)
    assert (source.name, source.glob, source.interval) == (f"files:{glob}", glob, None)
    assert config.service.state_dir is None and config.service.restart_sources is False
    assert [s.name for s in config.sinks] == ["JsonlSink"]

    service = build_service(config)
    try:
        assert service.journal is None  # the journal follows state_dir
        assert service.restart_sources is False
        assert [s.name for s in service.sources] == [f"files:{glob}"]
        assert service.sources[0].paced is False  # type: ignore[attr-defined]
    finally:
        service.stop()


def test_a_replay_with_a_state_dir_journals_there_and_speed_paces_it(tmp_path: Path) -> None:
    config = _replay_config(
        "--frames", str(tmp_path / "*.gr"), "--out", str(tmp_path / "o.jsonl"),
        "--state-dir", str(tmp_path / "state"), "--speed", "4",
    )  # fmt: skip
    assert config.sources[0].interval == 0.25  # type: ignore[union-attr]
    service = build_service(config)
    try:
        assert service.journal is not None
        assert service.journal.directory == tmp_path / "state" / JOURNAL_DIR
    finally:
        service.stop()


def test_a_tiled_replay_is_unpaced_unless_given_a_speed(tmp_path: Path) -> None:
    out = str(tmp_path / "o.jsonl")
    uri = "http://127.0.0.1:8000/api"
    unpaced = _replay_config("--tiled", uri, "--run", "abc", "--out", out).sources[0]
    assert isinstance(unpaced, TiledReplaySourceConfig)
    assert (unpaced.name, unpaced.speed) == ("tiled-replay:abc", UNPACED)
    paced = _replay_config("--tiled", uri, "--run", "abc", "--out", out, "--speed", "2")
    assert paced.sources[0].speed == 2.0  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--tiled", "nope", "--run", "r"], "--tiled: 'nope' is not an http(s):// URI"),
        (["--tiled", "http://127.0.0.1:8000/api"], "--tiled needs --run UID"),
        (["--tiled", "nope"], "--tiled: 'nope' is not an http(s):// URI"),  # the URI first
        (
            ["--frames", "x.gr", "--publish", "5578", "--archive", "nope"],
            "--archive: 'nope' is not an http(s):// URI",  # in the order the flags were checked
        ),
    ],
)
def test_a_bad_flag_is_named_as_typed(tmp_path: Path, argv: list[str], message: str) -> None:
    with pytest.raises(ValueError) as raised:
        _replay_config(*argv, "--out", str(tmp_path / "o.jsonl"))
    assert str(raised.value) == message


def test_the_demo_is_a_config_too(tmp_path: Path) -> None:
    settings = replay.replay_settings(_replay_args("--frames", "x.gr", "--out", "o.jsonl"))
    config = demo.demo_config(tmp_path, settings, "http://127.0.0.1:8000/api")
    assert config.service.state_dir == tmp_path / "state"
    assert [s.name for s in config.sources] == ["tiled:http://127.0.0.1:8000/api"]
    assert [(s.type, s.name) for s in config.sinks] == [
        ("jsonl", "JsonlSink"),
        ("zmq", "ZmqPublisher"),
    ]
