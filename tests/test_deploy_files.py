"""The example configs and deployment files stay loadable and name only real metrics."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry

from motex_stream.stream.config import load_config, parse_config
from motex_stream.stream.metrics import StreamMetrics

ROOT = Path(__file__).resolve().parents[1]
SERVICES = ROOT / "services"
DEPLOY = ROOT / "deploy"
DATA = ROOT / "motex_stream" / "data"
IMAGE_DATA = "/opt/motex-stream/data"  # where deploy/compose/Dockerfile puts the bundled data

EXAMPLE_CONFIGS = sorted((SERVICES / "configs").glob("*.toml"))
YAML_FILES = sorted([*DEPLOY.rglob("*.yml"), *DEPLOY.rglob("*.yaml")])
METRIC_TOKEN = re.compile(r"\bmotex_[a-z0-9_]+\b")


def exported_names() -> set[str]:
    """Every series name the service can export, derived from the real registry.

    Labelled metrics have no samples until a label value is used, so the names come from each
    family's type: counters add ``_total``/``_created``, histograms ``_bucket``/``_count``/...
    """
    names: set[str] = set()
    for family in StreamMetrics(CollectorRegistry()).registry.collect():
        names.add(family.name)
        suffixes = {
            "counter": ("_total", "_created"),
            "histogram": ("_bucket", "_count", "_sum", "_created"),
            "summary": ("_count", "_sum", "_created"),
        }.get(family.type, ())
        names.update(family.name + s for s in suffixes)
        names.update(sample.name for sample in family.samples)
    return names


def test_example_configs_exist():
    names = {p.name for p in EXAMPLE_CONFIGS}
    assert {"keggin-zmq.toml", "keggin-tiled.toml", "replay-files.toml"} <= names


@pytest.mark.parametrize("path", EXAMPLE_CONFIGS, ids=lambda p: p.name)
def test_example_config_loads(path, monkeypatch):
    monkeypatch.delenv("MOTEX_TILED_API_KEY", raising=False)
    config = load_config(path)
    assert config.models and config.sources and config.sinks
    for model in config.models:
        assert model.starting_model.is_file(), model.starting_model
        assert model.reference is None or model.reference.is_file()
    assert config.service.metrics_host == "127.0.0.1"
    for sink in config.sinks:
        if sink.type == "zmq":
            assert sink.bind.startswith("tcp://127.0.0.1:")


def test_keggin_zmq_config_values():
    config = load_config(SERVICES / "configs" / "keggin-zmq.toml")
    (model,) = config.models
    assert model.name == "keggin-109725"
    assert model.permute == ("W",)
    assert (model.threshold, model.rmin, model.rmax) == (2.5, 1.6, 10.0)
    assert (model.qdamp, model.qbroad, model.biso) == (0.05, 0.01, 0.4)
    assert (model.catalogue_size, model.refit, model.rounds) == (10000, 10000, 10)
    assert (model.qmin, model.qmax) == (None, None)  # from the reference header, at preparation
    assert model.zoom == "isotropic"
    assert model.reference.name == "DanMAX_AlphaKeggin.gr"
    (source,) = config.sources
    assert source.type == "zmq" and source.name == "proxy"
    assert source.address == "tcp://127.0.0.1:5568"
    assert (source.prefix, source.data_key, source.r_key) == ("raw", "pdf_gr", "pdf_r")
    sinks = {s.type: s for s in config.sinks}
    assert sinks["zmq"].bind == "tcp://127.0.0.1:5578"
    assert sinks["jsonl"].path.name == "motex-results.jsonl"
    assert (sinks["bluesky"].address, sinks["bluesky"].prefix) == ("tcp://127.0.0.1:5567", "an")


@pytest.mark.parametrize(
    "path", [*EXAMPLE_CONFIGS, DEPLOY / "compose" / "motex-stream.toml"], ids=lambda p: p.name
)
def test_example_configs_point_to_the_generated_reference(path):
    """Defaults are stated once, in docs/configuration.md; the examples link there."""
    assert "docs/configuration.md" in path.read_text(encoding="utf-8")
    assert (ROOT / "docs" / "configuration.md").is_file()


@pytest.mark.parametrize("path", EXAMPLE_CONFIGS, ids=lambda p: p.name)
def test_example_config_sources_build_with_their_names(path, monkeypatch):
    from motex_stream.stream.sources import make_source

    monkeypatch.delenv("MOTEX_TILED_API_KEY", raising=False)
    config = load_config(path)
    for entry in config.sources:
        assert make_source(entry).name == entry.name


def test_example_configs_hold_no_api_key():
    for path in EXAMPLE_CONFIGS:
        assert "api_key" not in tomllib.loads(path.read_text()).get("sources", [{}])[0]


def _container_tomls() -> list[tuple[str, str]]:
    k8s = list(yaml.safe_load_all((DEPLOY / "k8s" / "motex-stream.yaml").read_text()))
    (config_map,) = [d for d in k8s if d["kind"] == "ConfigMap"]
    return [
        ("compose", (DEPLOY / "compose" / "motex-stream.toml").read_text()),
        ("k8s", config_map["data"]["motex-stream.toml"]),
    ]


@pytest.mark.parametrize("name,text", _container_tomls(), ids=lambda v: v if len(v) < 20 else "")
def test_container_configs_validate(name, text):
    """The in-container configs validate once the image's data folder maps to this checkout."""
    assert IMAGE_DATA in text
    config = parse_config(tomllib.loads(text.replace(IMAGE_DATA, str(DATA))), base_dir=ROOT)
    assert config.models[0].starting_model.is_file()
    assert config.service.state_dir == Path("/var/lib/motex-stream/state")


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: str(p.relative_to(DEPLOY)))
def test_yaml_parses(path):
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert docs


def test_k8s_manifest_kinds():
    kinds = {
        d["kind"] for d in yaml.safe_load_all((DEPLOY / "k8s" / "motex-stream.yaml").read_text())
    }
    assert {"Deployment", "ConfigMap", "PersistentVolumeClaim", "Service"} <= kinds


def test_compose_services():
    compose = yaml.safe_load((DEPLOY / "compose" / "docker-compose.yml").read_text())
    assert {"proxy", "tiled", "motex-stream", "prometheus", "grafana"} <= set(compose["services"])
    for service in compose["services"].values():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), port


def test_compose_agent_is_opt_in_dry_run_and_reachable():
    """The agent joins the stack only with ``--profile loop``, follows the service over the
    compose network, touches no queue until a person turns dry-run off, and Prometheus can
    reach its counters (loopback inside a container would hide them)."""
    from motex_stream.stream.loop.policy import load_config as load_agent_config

    compose = yaml.safe_load((DEPLOY / "compose" / "docker-compose.yml").read_text())
    agent = compose["services"]["motex-agent"]
    assert agent["profiles"] == ["loop"]
    assert agent["command"][:1] == ["agent"] and "ports" not in agent
    config = load_agent_config(DEPLOY / "compose" / "agent.toml")
    assert config.policy.dry_run and not config.policy.auto_start
    assert config.subscribe == "tcp://motex-stream:5578"
    prom = yaml.safe_load((DEPLOY / "compose" / "prometheus-compose.yml").read_text())
    targets = {
        t for job in prom["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]
    }
    assert f"motex-agent:{config.metrics_port}" in targets and config.metrics_host == "0.0.0.0"
    assert '".[loop]"' in (DEPLOY / "compose" / "Dockerfile").read_text()


def test_prometheus_scrapes_metrics_port():
    prom = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    targets = [
        t for job in prom["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]
    ]
    assert "127.0.0.1:9464" in targets


def _alert_exprs() -> dict[str, str]:
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    return {r["alert"]: r["expr"] for g in rules["groups"] for r in g["rules"]}


def _dashboard_exprs() -> list[str]:
    dash = json.loads((DEPLOY / "grafana" / "motex-stream-dashboard.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    exprs += [v.get("definition", "") for v in dash["templating"]["list"]]
    return exprs


def test_alerts_cover_the_brief():
    exprs = _alert_exprs()
    joined = "\n".join(exprs.values())
    for needed in (
        "motex_last_frame_timestamp_seconds",
        "motex_frames_failed_total",
        "motex_end_to_end_seconds_bucket",
        "motex_model_mae",
        "motex_structure_changes_total",
    ):
        assert needed in joined


def _promtool() -> str:
    """promtool from Debian's ``prometheus`` package (.ci/run installs it when missing)."""
    found = shutil.which("promtool")
    if found is None:
        if os.environ.get("MOTEX_REQUIRE_PROMTOOL"):
            pytest.fail("promtool is required here (MOTEX_REQUIRE_PROMTOOL) but not on PATH")
        pytest.skip("promtool not installed (apt-get install prometheus)")
    return found


@pytest.mark.parametrize(
    "args",
    [
        ("check", "config", "prometheus.yml"),
        ("check", "rules", "alerts.yml"),
        ("test", "rules", "alerts_test.yml"),
    ],
    ids=lambda a: " ".join(a[:2]),
)
def test_promtool(args):
    """The scrape config and rules load, and the rules' unit tests pass (first failure fires)."""
    result = subprocess.run(
        [_promtool(), *args],
        cwd=DEPLOY / "prometheus",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboard_is_valid_grafana_json():
    dash = json.loads((DEPLOY / "grafana" / "motex-stream-dashboard.json").read_text())
    assert dash["title"] and dash["uid"] and isinstance(dash["schemaVersion"], int)
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dash["panels"]:
        assert {"type", "title", "gridPos", "targets"} <= set(panel)


@pytest.mark.parametrize("source", ["alerts", "dashboard"])
def test_referenced_metrics_exist(source):
    exprs = list(_alert_exprs().values()) if source == "alerts" else _dashboard_exprs()
    used = {m for e in exprs for m in METRIC_TOKEN.findall(e)}
    assert used, "no motex_* metric referenced"
    unknown = sorted(used - exported_names())
    assert not unknown, f"{source} reference metrics the service does not export: {unknown}"


def test_start_script_syntax():
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("bash not available")
    script = SERVICES / "start_beamline_stack.sh"
    result = subprocess.run([bash, "-n", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_simulator_help_runs():
    import sys

    result = subprocess.run(
        [sys.executable, str(SERVICES / "simulate_beamline.py"), "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    for flag in ("--proxy", "--frames", "--delay", "--tiled-uri"):
        assert flag in result.stdout
