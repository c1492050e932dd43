"""The service's TOML configuration, validated into typed pydantic models.

One model per table: :class:`ServiceConfig` (``[service]``), the analysis's own
:class:`~motex_stream.analysis.settings.LiveModelSettings` (``[[models]]``: no second copy of
its defaults here), one model per source type and per sink type. ``docs/configuration.md`` is
generated from these models (``python -m motex_stream.stream.config.reference``), so the
reference cannot disagree with what the loader accepts.
"""

from motex_stream.stream.config.base import ConfigError
from motex_stream.stream.config.loader import Config, load_config, parse_config
from motex_stream.stream.config.secrets import API_KEY_ENV, read_api_key
from motex_stream.stream.config.service import Policy, ServiceConfig
from motex_stream.stream.config.sinks import (
    SINK_TYPES,
    BlueskySinkConfig,
    JsonlSinkConfig,
    SinkConfig,
    ZmqSinkConfig,
)
from motex_stream.stream.config.sources import (
    SOURCE_TYPES,
    FilesSourceConfig,
    KafkaSourceConfig,
    SourceConfig,
    TiledReplaySourceConfig,
    TiledSourceConfig,
    ZmqSourceConfig,
)

__all__ = [
    "API_KEY_ENV",
    "SINK_TYPES",
    "SOURCE_TYPES",
    "BlueskySinkConfig",
    "Config",
    "ConfigError",
    "FilesSourceConfig",
    "JsonlSinkConfig",
    "KafkaSourceConfig",
    "Policy",
    "ServiceConfig",
    "SinkConfig",
    "SourceConfig",
    "TiledReplaySourceConfig",
    "TiledSourceConfig",
    "ZmqSinkConfig",
    "ZmqSourceConfig",
    "load_config",
    "parse_config",
    "read_api_key",
]
