"""Config parsing: defaults, path resolution, errors that name the key, per-run overrides."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from motex_stream.stream.config import (
    API_KEY_ENV,
    ConfigError,
    load_config,
    parse_config,
    read_api_key,
    resolve_run_overrides,
)

MINIMAL = """
[service]
state_dir = "state"

[[models]]
name = "keggin"
starting_model = "models/109725.xyz"
permute = ["W"]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "motex.toml"
    path.write_text(text)
    return path


def test_defaults_and_relative_paths(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, MINIMAL))
    assert cfg.service.state_dir == tmp_path / "state"
    assert cfg.service.metrics_port == 9464
    assert cfg.service.metrics_host == "127.0.0.1"
    assert cfg.service.queue_size == 64
    assert cfg.service.policy == "all"
    m = cfg.models[0]
    assert m.starting_model == tmp_path / "models/109725.xyz"
    assert m.permute == ("W",)
    assert (m.threshold, m.rmin, m.rmax) == (2.5, 1.6, 10.0)
    assert (m.qmin, m.qmax, m.qdamp, m.qbroad, m.biso) == (0.7, 20.0, 0.05, 0.01, 0.4)
    assert (m.zoom, m.catalogue_size, m.refit, m.reference) == ("isotropic", 10000, 10000, None)
    assert cfg.default_model == "keggin"
    assert cfg.sources == () and cfg.sinks == ()


def test_full_config(tmp_path: Path) -> None:
    text = (
        MINIMAL
        + """
biso = { W = 0.3, o = 0.6 }
zoom = "anisotropic"
refit = 500
catalogue_size = 1000
rounds = 20
seed = 7

[[models]]
name = "ga2o3"
starting_model = "/abs/ga.xyz"
permute = "Ga"

[[sources]]
type = "zmq"
address = "tcp://127.0.0.1:5568"

[[sources]]
type = "files"
glob = "frames/*.gr"
speed = 0

[[sources]]
type = "tiled-replay"
uri = "http://127.0.0.1:8000"
run = "abc"
api_key_file = "secret/key"

[[sinks]]
type = "zmq"

[[sinks]]
type = "jsonl"
path = "out/c.jsonl"

[[sinks]]
type = "bluesky"
address = "127.0.0.1:5577"
"""
    )
    cfg = load_config(write(tmp_path, text))
    k, ga = cfg.models
    assert k.biso_for("W") == 0.3 and k.biso_for("O") == 0.6
    with pytest.raises(ConfigError, match="Mo"):
        k.biso_for("Mo")
    assert ga.starting_model == Path("/abs/ga.xyz") and ga.permute == ("Ga",)
    zmq_src, files, replay = cfg.sources
    assert zmq_src.name == "zmq-0" and zmq_src.prefix == "raw" and zmq_src.data_key == "pdf_gr"
    assert zmq_src.r_key == "pdf_r" and zmq_src.allow_pickle is False
    assert files.glob == str(tmp_path / "frames/*.gr") and files.speed == 0.0
    assert replay.api_key_file == tmp_path / "secret/key"
    zsink, jsink, bsink = cfg.sinks
    assert zsink.bind == "tcp://127.0.0.1:5578"
    assert jsink.path == tmp_path / "out/c.jsonl"
    assert bsink.prefix == "an" and bsink.tiled_uri is None


def test_q_range_read_from_reference_header(tmp_path: Path) -> None:
    (tmp_path / "ref.gr").write_text(
        "[PDF]\nqmaxinst = 25.0\nqmin = 0.9\nqmax = 19.5\n#### start data\n#L r G\n0 0\n"
    )
    cfg = load_config(write(tmp_path, MINIMAL + 'reference = "ref.gr"\n'))
    assert (cfg.models[0].qmin, cfg.models[0].qmax) == (0.9, 19.5)
    cfg = load_config(write(tmp_path, MINIMAL + 'reference = "ref.gr"\nqmax = 18.0\n'))
    assert cfg.models[0].qmax == 18.0  # explicit beats the header


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        ("thresold = 2.5\n", r"models\[0\]\.thresold"),
        ('rmin = "a"\n', r"models\[0\]\.rmin must be a finite number"),
        ("rmin = 12.0\n", r"models\[0\]\.rmin .* must be below rmax"),
        ('zoom = "sideways"\n', r"models\[0\]\.zoom must be one of"),
        ("refit = 0\n", r"models\[0\]\.refit must be >= 1"),
        ("refit = 20000\n", r"refit .* cannot exceed catalogue_size"),
    ],
)
def test_bad_model_values_name_the_key(tmp_path: Path, extra: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_config(write(tmp_path, MINIMAL + extra))


@pytest.mark.parametrize("permute", [[], [1], None])
def test_bad_permute(permute: object) -> None:
    model = {"name": "a", "starting_model": "a.xyz", "permute": permute}
    with pytest.raises(ConfigError, match=r"models\[0\]\.permute"):
        parse_config({"service": {"state_dir": "s"}, "models": [model]})


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("[service]\n", r"service\.state_dir is required"),
        ('[service]\nstate_dir = "s"\npolicy = "some"\n', r"service\.policy must be one of"),
        ('[service]\nstate_dir = "s"\nqueue_size = 0\n', r"service\.queue_size must be >= 1"),
        ('[service]\nstate_dir = "s"\n', r"at least one \[\[models\]\]"),
        (MINIMAL + '[[sources]]\ntype = "zmq"\n', r"sources\[0\]\.address is required"),
        (MINIMAL + '[[sources]]\ntype = "ftp"\n', r"sources\[0\]\.type must be one of"),
        (MINIMAL + '[[sources]]\ntype = "tiled-replay"\nuri = "u"\n', r"sources\[0\]\.run"),
        (MINIMAL + '[[sinks]]\ntype = "jsonl"\n', r"sinks\[0\]\.path is required"),
        (MINIMAL + '[[sinks]]\ntype = "bluesky"\n', r"sinks\[0\].*address"),
        (MINIMAL + MINIMAL.split("\n", 3)[3], "duplicate model name"),
        (MINIMAL + "[extra]\n", r"unknown key extra"),
        ("not toml = = 1", "not valid TOML"),
    ],
)
def test_bad_files_are_clear(tmp_path: Path, text: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_config(write(tmp_path, text))


def test_api_key_in_config_is_refused(tmp_path: Path) -> None:
    text = MINIMAL + '[[sources]]\ntype = "tiled"\nuri = "http://x"\napi_key = "secret"\n'
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    assert "sources[0].api_key" in str(info.value)
    assert API_KEY_ENV in str(info.value) and "api_key_file" in str(info.value)
    assert "secret" not in str(info.value)


def test_read_api_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(API_KEY_ENV, raising=False)
    assert read_api_key(None) is None
    keyfile = tmp_path / "key"
    keyfile.write_text("from-file\n")
    assert read_api_key(keyfile) == "from-file"
    monkeypatch.setenv(API_KEY_ENV, "from-env")
    assert read_api_key(keyfile) == "from-env"
    monkeypatch.delenv(API_KEY_ENV)
    with pytest.raises(ConfigError, match="cannot read"):
        read_api_key(tmp_path / "missing")


def two_models() -> object:
    data = {
        "service": {"state_dir": "s"},
        "models": [
            {"name": "a", "starting_model": "a.xyz", "permute": ["W"]},
            {"name": "b", "starting_model": "b.xyz", "permute": ["Mo"], "rounds": 5},
        ],
    }
    return parse_config(data, base_dir="/base")


def test_run_overrides_choose_model_and_apply_allowed_keys() -> None:
    cfg = two_models()
    settings = resolve_run_overrides(cfg, {})  # type: ignore[arg-type]
    assert settings.model.name == "a" and not settings.applied and not settings.rejected
    settings = resolve_run_overrides(
        cfg,  # type: ignore[arg-type]
        {"motex_model": "b", "motex_overrides": {"zoom": "anisotropic", "refit": 100}},
    )
    assert settings.model.name == "b" and settings.model.zoom == "anisotropic"
    assert settings.model.refit == 100
    assert settings.model.rounds == 5  # untouched settings stay
    assert dict(settings.applied).keys() == {"zoom", "refit"}


def test_run_overrides_reject_unknown_keys_without_crashing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    cfg = two_models()
    with caplog.at_level(logging.ERROR, logger="motex_stream.stream.config"):
        settings = resolve_run_overrides(
            cfg,  # type: ignore[arg-type]
            {
                "motex_model": "nope",
                "motex_overrides": {
                    "starting_model": "x.xyz",
                    "colour": "red",
                    "rmax": 12.0,  # defines the prepared engine: not a per-run setting
                    "refit": 0,
                    "zoom": "anisotropic",
                },
            },
        )
    assert settings.model.name == "a"  # unknown model → default
    assert settings.model.zoom == "anisotropic"  # the valid override still applies
    assert set(settings.rejected) == {"motex_model", "starting_model", "colour", "rmax", "refit"}
    text = caplog.text
    assert "nope" in text and "colour" in text and "starting_model" in text
    settings = resolve_run_overrides(cfg, {"motex_overrides": "rmax=3"})  # type: ignore[arg-type]
    assert settings.rejected == ("motex_overrides",)


def test_source_entries_build_real_sources(tmp_path: Path) -> None:
    """The config's words reach the sources' constructors (no network needed to build)."""
    from motex_stream.stream.sources import make_source

    text = (
        MINIMAL
        + """
[[sources]]
type = "files"
glob = "frames/*.gr"
interval = 0.5

[[sources]]
type = "zmq"
address = "tcp://127.0.0.1:5568"

[[sources]]
type = "tiled-replay"
uri = "http://127.0.0.1:1"
run = "abc"
speed = 0
"""
    )
    files, zmq_src, replay = load_config(write(tmp_path, text)).sources
    assert files.to_spec() == {"type": "files", "path": files.glob, "interval": 0.5}
    assert replay.to_spec()["pace"] is None and replay.to_spec()["run_uid"] == "abc"
    built = make_source(files.to_spec())
    assert type(built).__name__ == "FileSeriesSource"
    assert type(make_source(zmq_src.to_spec())).__name__ == "ZmqSource"
