"""Fail fast: addresses checked at config load, the machine checked before the service starts."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from motex_stream.stream.config import ConfigError, parse_config
from motex_stream.stream.config.addresses import http_uri, is_loopback, zmq_endpoint
from motex_stream.stream.config.preflight import preflight
from tests.conftest import KEGGIN

XYZ = str(KEGGIN / "109725.xyz")


def config(tmp_path: Path, sources=(), sinks=(), **service):
    data = {
        "service": {"state_dir": str(tmp_path / "state"), "metrics_port": 0, **service},
        "models": [{"name": "keggin", "starting_model": XYZ}],
        "sources": list(sources),
        "sinks": list(sinks),
    }
    return parse_config(data, base_dir=tmp_path)


@pytest.mark.parametrize(
    ("value", "bind"),
    [
        ("tcp://127.0.0.1:5568", False),
        ("tcp://beamline-proxy.example.org:5568", False),
        ("tcp://[::1]:5568", False),
        ("tcp://*:5578", True),
        ("tcp://127.0.0.1:*", True),
        ("ipc:///tmp/motex.sock", False),
    ],
)
def test_good_zmq_endpoints(value: str, bind: bool) -> None:
    assert zmq_endpoint(value, bind=bind) == value


@pytest.mark.parametrize(
    "value",
    ["not-an-address", "127.0.0.1:5568", "tcp://127.0.0.1", "tcp://host:0", "udp://h:1",
     "tcp://*:5578", "tcp://bad host:1"],
)  # fmt: skip
def test_bad_zmq_endpoints(value: str) -> None:
    with pytest.raises(ValueError, match="0MQ"):
        zmq_endpoint(value)


@pytest.mark.parametrize(
    "value", ["localhost:8000/api", "ftp://x/api", "http://", "http://h:99999/"]
)
def test_bad_http_uris(value: str) -> None:
    with pytest.raises(ValueError):
        http_uri(value)


@pytest.mark.parametrize(
    ("entry", "key"),
    [
        ({"type": "zmq", "address": "not-an-address"}, "sources[0].address"),
        ({"type": "tiled", "uri": "localhost:8000"}, "sources[0].uri"),
        ({"type": "tiled-replay", "uri": "http://h/api:x", "run": "r"}, None),
        ({"type": "kafka", "address": "broker"}, "sources[0].address"),
    ],
)
def test_sources_refuse_bad_addresses_at_load(tmp_path: Path, entry: dict, key: str | None) -> None:
    if key is None:  # a colon in the path is fine
        config(tmp_path, sources=[entry])
        return
    with pytest.raises(ConfigError) as err:
        config(tmp_path, sources=[entry])
    assert str(err.value).startswith(key) and len(str(err.value).splitlines()) == 1


def test_sinks_and_service_refuse_bad_addresses_at_load(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"sinks\[0\]\.bind: 'tcp://127.0.0.1' is not"):
        config(tmp_path, sinks=[{"type": "zmq", "bind": "tcp://127.0.0.1"}])
    with pytest.raises(ConfigError, match=r"sinks\[0\]\.address: 'nohost' is not a host:port"):
        config(tmp_path, sinks=[{"type": "bluesky", "address": "nohost"}])
    with pytest.raises(ConfigError, match=r"service\.metrics_host"):
        config(tmp_path, metrics_host="not a host")


def test_preflight_passes_a_sound_config_and_creates_the_state_dir(tmp_path: Path) -> None:
    cfg = config(tmp_path, sinks=[{"type": "zmq", "bind": "tcp://127.0.0.1:*"}])
    assert preflight(cfg) == []
    assert (tmp_path / "state").is_dir()


def test_preflight_reports_every_problem_one_line_each(tmp_path: Path) -> None:
    (tmp_path / "state").write_text("a file")
    cfg = config(
        tmp_path,
        sources=[{"type": "tiled", "uri": "http://127.0.0.1:8000/api", "api_key_file": "nokey"}],
        sinks=[{"type": "jsonl", "path": "/proc/motex/out.jsonl"}],
    )
    with pytest.raises(ConfigError) as err:
        preflight(cfg)
    lines = str(err.value).splitlines()
    assert lines[0].endswith("3 problems:")
    assert any(line.strip().startswith("service.state_dir:") for line in lines)
    assert any(line.strip().startswith("sources[0].api_key_file: cannot read") for line in lines)
    assert any(line.strip().startswith("sinks[0].path: cannot write") for line in lines)


def test_preflight_warns_about_exposure(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    key = tmp_path / "key"
    key.write_text("secret\n")
    key.chmod(0o644)
    cfg = config(
        tmp_path,
        sources=[{"type": "tiled", "uri": "http://127.0.0.1:8000/api", "api_key_file": "key"}],
        sinks=[{"type": "zmq", "bind": "tcp://0.0.0.0:*"}],
    )
    with caplog.at_level(logging.WARNING):
        warnings = preflight(cfg)
    assert any("sinks[0].bind: binds 0.0.0.0, reachable beyond" in w for w in warnings)
    assert any("api_key_file" in w and "readable by other users" in w for w in warnings)
    assert "secret" not in caplog.text
    key.chmod(0o600)
    assert not any("api_key_file" in w for w in preflight(cfg))


def test_loopback_detection() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("[::1]")
    assert not is_loopback("0.0.0.0") and not is_loopback("*") and not is_loopback("10.0.0.5")
