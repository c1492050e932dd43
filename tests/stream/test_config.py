"""Config parsing: defaults from the settings model, paths, errors that name the key, overrides."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import pytest

from motex_stream.analysis.settings import LiveModelSettings, settings_for_run
from motex_stream.stream.config import (
    API_KEY_ENV,
    Config,
    ConfigError,
    FilesSourceConfig,
    TiledReplaySourceConfig,
    ZmqSourceConfig,
    load_config,
    parse_config,
    read_api_key,
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


def minimal(**model: Any) -> dict[str, Any]:
    """A parsed config with one model; ``model`` adds or replaces its keys."""
    entry = {"name": "a", "starting_model": "a.xyz", "permute": ["W"], **model}
    return {"service": {"state_dir": "s"}, "models": [entry]}


def test_defaults_come_from_the_settings_model(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, MINIMAL))
    assert cfg.path == tmp_path / "motex.toml"
    assert cfg.service.state_dir == tmp_path / "state"
    assert cfg.service.metrics_port == 9464
    assert cfg.service.metrics_host == "127.0.0.1"
    assert cfg.service.queue_size == 64
    assert cfg.service.policy == "all"
    (m,) = cfg.models
    assert isinstance(m, LiveModelSettings)
    assert m.starting_model == tmp_path / "models/109725.xyz"
    expected = LiveModelSettings(name="keggin", starting_model=m.starting_model)
    assert m == expected  # every default is the model's own
    assert m.qmin is None and m.qmax is None  # resolved later from the data header
    assert (m.rounds, m.max_trees, m.reference) == (10, 400, None)
    assert cfg.default_model == "keggin" and cfg.model("keggin") is m
    with pytest.raises(KeyError):
        cfg.model("nope")
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
search_calls = 4
max_trees = 60
reference = "ref/frame.gr"

[[models]]
name = "ga2o3"
starting_model = "/abs/ga.xyz"
permute = "ga"
qmin = 1.0
qmax = 22.0

[[sources]]
type = "zmq"
address = "tcp://127.0.0.1:5568"

[[sources]]
type = "files"
name = "beamtime"
glob = "frames/*.gr"

[[sources]]
type = "tiled-replay"
uri = "http://127.0.0.1:8000"
run = "abc"
speed = 0
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
    assert k.biso == {"W": 0.3, "O": 0.6}
    assert (k.zoom, k.refit, k.catalogue_size, k.rounds) == ("anisotropic", 500, 1000, 20)
    assert (k.seed, k.search_calls, k.max_trees) == (7, 4, 60)
    assert k.reference == tmp_path / "ref/frame.gr"
    assert ga.starting_model == Path("/abs/ga.xyz") and ga.permute == ("Ga",)
    assert (ga.qmin, ga.qmax) == (1.0, 22.0)
    zmq_src, files, replay = cfg.sources
    assert isinstance(zmq_src, ZmqSourceConfig)
    assert zmq_src.name == "zmq-0" and zmq_src.prefix == "raw" and zmq_src.data_key == "pdf_gr"
    assert zmq_src.r_key == "pdf_r" and zmq_src.allow_pickle is False
    assert isinstance(files, FilesSourceConfig)
    assert files.name == "beamtime" and files.glob == str(tmp_path / "frames/*.gr")
    assert files.interval is None
    assert isinstance(replay, TiledReplaySourceConfig)
    assert replay.name == "tiled-replay-2" and replay.speed == 0.0
    assert replay.api_key_file == tmp_path / "secret/key"
    zsink, jsink, bsink = cfg.sinks
    assert zsink.type == "zmq" and zsink.bind == "tcp://127.0.0.1:5578"
    assert jsink.type == "jsonl" and jsink.path == tmp_path / "out/c.jsonl"
    assert bsink.type == "bluesky" and bsink.prefix == "an" and bsink.tiled_uri is None


def test_reference_header_is_not_read_at_load_time(tmp_path: Path) -> None:
    """The Q range stays unset in the config; the analysis resolves it from the data header."""
    (tmp_path / "ref.gr").write_text("[PDF]\nqmin = 0.9\nqmax = 19.5\n#### start data\n0 0\n")
    cfg = load_config(write(tmp_path, MINIMAL + 'reference = "ref.gr"\n'))
    assert (cfg.models[0].qmin, cfg.models[0].qmax) == (None, None)
    cfg = load_config(write(tmp_path, MINIMAL + 'reference = "ref.gr"\nqmax = 18.0\n'))
    assert cfg.models[0].qmax == 18.0


def test_config_is_frozen(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, MINIMAL))
    with pytest.raises(ValueError, match="frozen"):
        cfg.service.queue_size = 3  # type: ignore[misc]
    with pytest.raises(ValueError, match="frozen"):
        cfg.models[0].rmax = 3.0  # type: ignore[misc]


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        ("thresold = 2.5\n", r"models\[0\]\.thresold: unknown key \(did you mean threshold\?\)"),
        ('rmin = "a"\n', r"models\[0\]\.rmin: should be a valid number"),
        ("rmin = nan\n", r"models\[0\]\.rmin: should be a finite number"),
        ("qmax = inf\n", r"models\[0\]\.qmax: should be a finite number"),
        ("biso = { W = nan }\n", r"models\[0\]\.biso\.W: should be a finite number"),
        ("rmax = 1500.0\n", r"models\[0\]\.rmax: should be less than or equal to 1000"),
        ("threshold = 0.0\n", r"models\[0\]\.threshold: should be greater than 0"),
        ("catalogue_size = 1_000_000_000_000\n", r"models\[0\]\.catalogue_size: should be less"),
        ("refit = 0\n", r"models\[0\]\.refit: should be greater than or equal to 1"),
        ("refit = true\n", r"models\[0\]\.refit: must be a number, got true"),
        ("seed = 1.5\n", r"models\[0\]\.seed: should be a valid integer"),
        ('zoom = "sideways"\n', r"models\[0\]\.zoom: should be 'isotropic' or 'anisotropic'"),
        ('name = "has space"\n', r"models\[0\]\.name: should match pattern"),
        ('starting_model = ""\n', r"models\[0\]\.starting_model: must be a non-empty path"),
        ("biso = { W = -1.0 }\n", r"models\[0\]\.biso\.W: should be greater than or equal to 0"),
        ('biso = "x"\n', r"models\[0\]\.biso: should be a valid number"),
    ],
)
def test_bad_model_values_name_the_key(tmp_path: Path, extra: str, match: str) -> None:
    # MINIMAL's last table is the model, so appended lines (re)define its keys; TOML forbids
    # a second definition of a key, so the replaced ones are removed first.
    base = MINIMAL
    key = extra.split("=", 1)[0].strip()
    base = "\n".join(line for line in base.splitlines() if not line.startswith(f"{key} ="))
    with pytest.raises(ConfigError, match=match):
        load_config(write(tmp_path, base + "\n" + extra))


@pytest.mark.parametrize(
    ("model", "match"),
    [
        ({"rmin": 12.0}, r"models\[0\]: rmin \(12.0\) must be below rmax"),
        ({"qmin": 5.0, "qmax": 4.0}, r"models\[0\]: qmin \(5.0\) must be below qmax"),
        ({"lower": 5, "upper": 3}, r"models\[0\]: upper \(3\) must be >= lower"),
        ({"refit": 20000}, r"models\[0\]: refit \(20000\) cannot exceed catalogue_size"),
        ({"biso": {"W": 60.0}}, r"models\[0\]\.biso: Biso must be within 0\.\.50"),
        ({"permute": ["Xx"]}, r"models\[0\]\.permute: unknown element\(s\) Xx"),
        ({"permute": []}, r"models\[0\]\.permute: should have at least 1 item"),
        ({"permute": None}, r"models\[0\]\.permute: should be a valid tuple"),
    ],
)
def test_rules_across_keys_are_enforced(model: dict[str, Any], match: str) -> None:
    """The 'Checked together' rules listed in docs/configuration.md."""
    with pytest.raises(ConfigError, match=match):
        parse_config(minimal(**model))


def test_non_finite_numbers_are_rejected_everywhere() -> None:
    data = minimal(qdamp=math.nan)
    data["sources"] = [{"type": "tiled-replay", "uri": "u", "run": "r", "speed": math.inf}]
    data["sinks"] = []
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    text = str(info.value)
    assert "models[0].qdamp: should be a finite number" in text
    assert "sources[0].speed: should be a finite number" in text


def test_every_problem_is_listed_once_on_its_own_line() -> None:
    data = minimal(thresold=2.0, rmax=-1.0)
    data["service"]["queue_size"] = 0
    data["sinks"] = [{"type": "jsonl"}]
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    lines = str(info.value).splitlines()
    assert lines[0] == "4 problems:"
    assert sorted(line.strip().split(":")[0] for line in lines[1:]) == [
        "models[0].rmax",
        "models[0].thresold",
        "service.queue_size",
        "sinks[0].path",
    ]


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("[service]\n", r"service\.state_dir: is required"),
        ('[service]\nstate_dir = "s"\npolicy = "some"\n', r"service\.policy: should be 'all'"),
        ('[service]\nstate_dir = "s"\nqueue_size = 0\n', r"service\.queue_size: should be"),
        ('[service]\nstate_dir = "s"\nmetrics_port = 70000\n', r"service\.metrics_port: should"),
        ('[service]\nstate_dir = "s"\nstate = 1\n', r"service\.state: unknown key"),
        ('[service]\nstate_dir = "s"\n', r"at least one \[\[models\]\]"),
        (MINIMAL.split("[[models]]")[1], r"missing \[service\] table"),
        (MINIMAL + "[extra]\n", r"extra: unknown key"),
        (MINIMAL + MINIMAL.split("\n", 3)[3], r"models: duplicate model name\(s\) keggin"),
        ("not toml = = 1", "not valid TOML"),
    ],
)
def test_bad_files_are_clear(tmp_path: Path, text: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_config(write(tmp_path, text))


@pytest.mark.parametrize(
    ("entry", "match"),
    [
        ({"type": "zmq"}, r"sources\[0\]\.address: is required"),
        ({"type": "ftp"}, r"sources\[0\]\.type: must be one of zmq, tiled, tiled-replay"),
        ({"address": "x"}, r"sources\[0\]\.type: must be one of .* \(missing\)"),
        ({"type": "tiled-replay", "uri": "u"}, r"sources\[0\]\.run: is required"),
        ({"type": "files"}, r"sources\[0\]\.glob: is required"),
        ({"type": "kafka", "address": "k:9092", "topics": []}, r"sources\[0\]\.topics: should"),
        # a key that belongs to another source type is a typo here
        ({"type": "zmq", "address": "x", "glob": "*.gr"}, r"sources\[0\]\.glob: unknown key"),
        ({"type": "zmq", "address": "x", "adress": "y"}, r"sources\[0\]\.adress: .*address\?"),
        ({"type": "zmq", "address": "x", "prefix": "a b"}, r"sources\[0\]\.prefix: should match"),
        ({"type": "files", "glob": "*.gr", "interval": -1}, r"sources\[0\]\.interval: should"),
        ({"type": "zmq", "address": "x", "name": ""}, r"sources\[0\]\.name: should have at least"),
        ({"type": "tiled", "uri": "u", "allow_pickle": True}, r"sources\[0\]\.allow_pickle"),
    ],
)
def test_bad_source_entries_name_the_key(entry: dict[str, Any], match: str) -> None:
    data = minimal()
    data["sources"] = [entry]
    with pytest.raises(ConfigError, match=match):
        parse_config(data)


@pytest.mark.parametrize(
    ("entry", "match"),
    [
        ({"type": "jsonl"}, r"sinks\[0\]\.path: is required"),
        ({"type": "bluesky"}, r"sinks\[0\]: a bluesky sink needs address .* or tiled_uri"),
        ({"type": "bluesky", "address": "a", "prefix": "a n"}, r"sinks\[0\]\.prefix: should"),
        ({"type": "zmq", "bnd": "tcp://127.0.0.1:1"}, r"sinks\[0\]\.bnd: .*bind\?"),
        ({"type": "jsonl", "path": "x", "bind": "y"}, r"sinks\[0\]\.bind: unknown key"),
        ({"type": "kafka"}, r"sinks\[0\]\.type: must be one of zmq, jsonl, bluesky"),
    ],
)
def test_bad_sink_entries_name_the_key(entry: dict[str, Any], match: str) -> None:
    data = minimal()
    data["sinks"] = [entry]
    with pytest.raises(ConfigError, match=match):
        parse_config(data)


def test_source_names_default_and_must_be_unique() -> None:
    data = minimal()
    data["sources"] = [
        {"type": "zmq", "address": "tcp://127.0.0.1:5568"},
        {"type": "zmq", "address": "tcp://127.0.0.1:5569", "name": "zmq-0"},
    ]
    with pytest.raises(ConfigError, match=r"sources: duplicate source name\(s\) zmq-0"):
        parse_config(data)


def test_tables_must_be_tables() -> None:
    with pytest.raises(ConfigError, match=r"models: must be an array of tables"):
        parse_config({"service": {"state_dir": "s"}, "models": {"name": "a"}})
    with pytest.raises(ConfigError, match=r"models\[0\]: must be a table"):
        parse_config({"service": {"state_dir": "s"}, "models": ["a"]})


def test_paths_resolve_against_the_config_folder_and_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    data = minimal(starting_model="~/m.xyz", reference="../ref.gr")
    data["sinks"] = [{"type": "jsonl", "path": "out/./c.jsonl"}]
    cfg = parse_config(data, base_dir=tmp_path / "cfg")
    assert cfg.models[0].starting_model == tmp_path / "home/m.xyz"
    assert cfg.models[0].reference == tmp_path / "ref.gr"
    assert cfg.sinks[0].path == tmp_path / "cfg/out/c.jsonl"  # type: ignore[union-attr]
    assert cfg.service.state_dir == tmp_path / "cfg/s"


def test_api_key_in_config_is_refused(tmp_path: Path) -> None:
    text = MINIMAL + '[[sources]]\ntype = "tiled"\nuri = "http://x"\napi_key = "secret"\n'
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    assert "sources[0].api_key" in str(info.value)
    assert API_KEY_ENV in str(info.value) and "api_key_file" in str(info.value)
    assert "secret" not in str(info.value)
    data = minimal()
    data["models"][0]["api_key"] = "hidden"
    with pytest.raises(ConfigError, match=r"models\[0\]\.api_key: API keys do not belong"):
        parse_config(data)


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


def two_models() -> Config:
    data = {
        "service": {"state_dir": "s"},
        "models": [
            {"name": "a", "starting_model": "a.xyz", "permute": ["W"]},
            {
                "name": "b",
                "starting_model": "b.xyz",
                "permute": ["Mo"],
                "rounds": 5,
                "catalogue_size": 1000,
                "refit": 1000,
            },
        ],
    }
    return parse_config(data, base_dir="/base")


def test_run_overrides_apply_to_the_configured_model() -> None:
    cfg = two_models()
    run, rejected = settings_for_run(cfg.model("b"), {"zoom": "anisotropic", "refit": 100})
    assert isinstance(run, LiveModelSettings) and not rejected
    assert run.name == "b" and run.zoom == "anisotropic" and run.refit == 100
    assert run.rounds == 5  # untouched settings stay
    assert cfg.model("b").refit == 1000  # the configured model is not changed


def test_run_overrides_reject_bad_keys_without_crashing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    cfg = two_models()
    overrides = {
        "starting_model": "x.xyz",
        "colour": "red",
        "rmax": 12.0,  # defines the prepared engine: not a per-run setting
        "refit": 0,
        "zoom": "anisotropic",
    }
    with caplog.at_level(logging.ERROR, logger="motex_stream.analysis.settings"):
        run, rejected = settings_for_run(cfg.model("a"), overrides)
    assert run.zoom == "anisotropic"  # the valid override still applies
    assert set(rejected) == {"starting_model", "colour", "rmax", "refit"}
    text = caplog.text
    assert "colour" in text and "starting_model" in text
    assert "motex_overrides.refit=0 rejected: refit: should be greater than or equal to 1" in text
    assert settings_for_run(cfg.model("a"), "rmax=3") == (cfg.model("a"), ("motex_overrides",))


def test_run_override_is_checked_against_the_chosen_model() -> None:
    cfg = two_models()
    run, rejected = settings_for_run(cfg.model("b"), {"refit": 5000})
    assert rejected == ("refit",) and run.refit == 1000
    run, rejected = settings_for_run(cfg.model("a"), {"refit": 5000})
    assert not rejected and run.refit == 5000  # model a has 10000 motifs


def test_source_entries_build_real_sources_with_their_names(tmp_path: Path) -> None:
    """The config's words reach the sources' constructors (no network needed to build)."""
    from motex_stream.stream.sources import (
        FileSeriesSource,
        TiledLiveSource,
        TiledReplaySource,
        ZmqSource,
        make_source,
    )

    text = (
        MINIMAL
        + """
[[sources]]
type = "files"
glob = "frames/*.gr"
interval = 0.5

[[sources]]
type = "zmq"
name = "proxy"
address = "tcp://127.0.0.1:5568"
prefix = "raw2"
data_key = "g"

[[sources]]
type = "tiled-replay"
uri = "http://127.0.0.1:1"
run = "abc"
speed = 0

[[sources]]
type = "tiled"
name = "tiled-live"
uri = "http://127.0.0.1:1/api"
api_key_file = "key"
"""
    )
    files, zmq_cfg, replay, live = (
        make_source(s) for s in load_config(write(tmp_path, text)).sources
    )
    assert isinstance(files, FileSeriesSource)
    assert files.name == "files-0"  # the default name, not the constructor's own
    assert files.pattern == str(tmp_path / "frames/*.gr") and files.interval == 0.5
    assert isinstance(zmq_cfg, ZmqSource)
    assert zmq_cfg.name == "proxy" and zmq_cfg.prefix == b"raw2"
    assert zmq_cfg._assembler.data_key == "g" and zmq_cfg._assembler.source_name == "proxy"
    assert isinstance(replay, TiledReplaySource)
    assert replay.name == "tiled-replay-2" and replay.run_uid == "abc" and replay.pace is None
    assert isinstance(live, TiledLiveSource)
    assert live.name == "tiled-live" and live._key_file == tmp_path / "key"


def test_kafka_entry_builds_or_says_what_is_missing() -> None:
    from motex_stream.stream.sources import SourceConfigError, make_source

    data = minimal()
    data["sources"] = [{"type": "kafka", "address": "127.0.0.1:9092", "name": "kafka-raw"}]
    (entry,) = parse_config(data).sources
    try:
        import bluesky_kafka  # noqa: F401
    except ImportError:
        with pytest.raises(SourceConfigError, match="bluesky-kafka"):
            make_source(entry)
    else:
        pytest.skip("bluesky-kafka is installed; building would contact the broker")
