"""The ``[[sinks]]`` entries: one model per output type, chosen by ``type``.

Each sink has a ``name``, like a source (the loader fills in ``<type>-<index>`` when it is
left out): its errors are counted under it (``motex_sink_errors_total{sink=...}``), so two
sinks of one type, a main and a backup file, are told apart.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, model_validator

from motex_stream.stream.config.addresses import HttpUri, ProxyAddress, ZmqBind
from motex_stream.stream.config.base import DEFAULT_DOC, ConfigModel

SinkName = Annotated[
    str,
    Field(
        pattern=r"^[A-Za-z0-9_.:/@\-]+$",
        min_length=1,
        max_length=128,
        description="name in logs and metric labels (sink=...)",
        json_schema_extra={DEFAULT_DOC: "<type>-<index>"},
    ),
]


#: Where the ZMQ sink's PUB socket binds unless configured (publishers/zmq_pub.py takes it too).
DEFAULT_PUB_BIND = "tcp://127.0.0.1:5578"


class ZmqSinkConfig(ConfigModel):
    """A ZMQ PUB socket: one v1 message per analysed frame, topic = model name."""

    type: Literal["zmq"]
    name: SinkName
    bind: ZmqBind = Field(
        DEFAULT_PUB_BIND, min_length=1, description="address the PUB socket binds"
    )


class JsonlSinkConfig(ConfigModel):
    """A JSON Lines file: one v1 message per line, appended and flushed per frame."""

    type: Literal["jsonl"]
    name: SinkName
    path: Path = Field(description="output file, relative to the config file's folder")
    fsync: bool = Field(
        False, description="also sync each line to disk (survives power loss; slower)"
    )


class BlueskySinkConfig(ConfigModel):
    """The analysed frames as a derived Bluesky run (0MQ proxy and/or a Tiled server)."""

    type: Literal["bluesky"]
    name: SinkName
    address: ProxyAddress | None = Field(
        None, min_length=1, description="the 0MQ proxy's IN address (host:port)"
    )
    prefix: str = Field(
        "an", pattern=r"^\S+$", description="0MQ prefix of the derived documents (no spaces)"
    )
    tiled_uri: HttpUri | None = Field(
        None, min_length=1, description="also write the derived run to this Tiled server"
    )
    api_key_file: Path | None = Field(
        None,
        description="file holding the Tiled API key for tiled_uri; MOTEX_TILED_API_KEY wins",
    )

    @model_validator(mode="after")
    def _somewhere_to_send(self) -> BlueskySinkConfig:
        if self.address is None and self.tiled_uri is None:
            raise ValueError("a bluesky sink needs address (0MQ proxy) or tiled_uri")
        return self


SinkConfig = Annotated[
    ZmqSinkConfig | JsonlSinkConfig | BlueskySinkConfig, Field(discriminator="type")
]

#: Sink type → its model, in the order the reference page lists them.
SINK_TYPES: dict[str, type[ConfigModel]] = {
    "zmq": ZmqSinkConfig,
    "jsonl": JsonlSinkConfig,
    "bluesky": BlueskySinkConfig,
}
