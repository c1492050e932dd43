"""The ``[[sources]]`` entries: one model per source type, chosen by ``type``.

Why one model per type: each transport needs different words (a 0MQ address, a Tiled URI and
run uid, a glob of files), and a key that belongs to another type (``glob`` on a 0MQ source) is
a typo worth stopping for. The loader fills in ``name`` (``<type>-<index>``) when it is left
out; the built source uses it in its logs and metric labels.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field

from motex_stream.stream.config.addresses import BootstrapServers, HttpUri, ZmqConnect
from motex_stream.stream.config.base import CONFIG_RELATIVE, DEFAULT_DOC, ConfigModel

# Any printable text: a command names its source after what it reads (``replay`` calls a glob
# of files ``files:<glob>``, and a glob holds ``*``, ``?``, ``[`` or spaces); only control
# characters, which would break a log line or a metric label, are refused.
SourceName = Annotated[
    str,
    Field(
        pattern=r"^[^\x00-\x1f\x7f]+$",
        min_length=1,
        max_length=4096,
        description="name in logs and metric labels (source=...); any text without control "
        "characters",
        json_schema_extra={DEFAULT_DOC: "<type>-<index>"},
    ),
]
# The defaults written once: the source constructors (sources/) and the simulated detector
# (sim/simulate.py) take them from here.
#: Event keys of a frame's G(r) and of its r grid (the descriptor configuration, else the event).
DEFAULT_DATA_KEY = "pdf_gr"
DEFAULT_R_KEY = "pdf_r"
#: The Bluesky 0MQ prefix of the raw documents.
DEFAULT_ZMQ_PREFIX = "raw"
#: 0MQ receiver bounds: one frame of 8M float64 points is far beyond a PDF; the SUB socket's
#: high-water mark sits below the service's own backlog, in frames and in bytes.
DEFAULT_MAX_MESSAGE_BYTES = 64 * 2**20
DEFAULT_RCV_HWM = 1000
DEFAULT_BACKLOG_FRAMES = 1000
DEFAULT_BACKLOG_BYTES = 512 * 2**20

#: A replay's ``speed`` that waits for nothing: the run is read as fast as it is analysed.
UNPACED = 0.0

DataKey = Annotated[str, Field(min_length=1, description="event data key holding G(r)")]
RKey = Annotated[
    str,
    Field(min_length=1, description="key of the r grid (descriptor configuration, else event)"),
]
KeyFile = Annotated[
    Path | None,
    Field(
        description="file whose first line is the Tiled API key; MOTEX_TILED_API_KEY, when set, "
        "wins; unset: no key unless MOTEX_TILED_API_KEY is set"
    ),
]
Prefix = Annotated[str, Field(pattern=r"^\S+$", description="Bluesky 0MQ prefix (no spaces)")]


class ZmqSourceConfig(ConfigModel):
    """Live Bluesky documents relayed by a 0MQ proxy (msgpack)."""

    type: Literal["zmq"]
    name: SourceName
    address: ZmqConnect = Field(
        min_length=1, description="the proxy's OUT address, tcp://host:port"
    )
    prefix: Prefix = DEFAULT_ZMQ_PREFIX
    data_key: DataKey = DEFAULT_DATA_KEY
    r_key: RKey = DEFAULT_R_KEY
    allow_pickle: bool = Field(
        False,
        description="accept pickled documents from legacy publishers; anyone who can reach the "
        "proxy could then run code in the service",
    )
    max_message_bytes: int = Field(
        DEFAULT_MAX_MESSAGE_BYTES,
        ge=1024,
        description="a larger message is dropped and counted (malformed, kind oversized)",
    )
    rcv_hwm: int = Field(
        DEFAULT_RCV_HWM,
        ge=1,
        description="messages the 0MQ SUB socket may hold before 0MQ drops (its high-water mark)",
    )
    backlog_frames: int = Field(
        DEFAULT_BACKLOG_FRAMES,
        ge=1,
        description="frames received but not yet taken by the service; more are dropped and "
        "counted (run start/stop always pass)",
    )
    backlog_bytes: int = Field(
        DEFAULT_BACKLOG_BYTES, ge=1024, description="the same backlog's bound in bytes of messages"
    )


class _TiledConnection(ConfigModel):
    """What every Tiled source needs: the server, the data keys, and where the key lives."""

    name: SourceName
    uri: HttpUri = Field(min_length=1, description="Tiled API root, e.g. http://127.0.0.1:8000/api")
    data_key: DataKey = DEFAULT_DATA_KEY
    r_key: RKey = DEFAULT_R_KEY
    api_key_file: KeyFile = None


class TiledSourceConfig(_TiledConnection):
    """Runs as a Tiled server receives them (websocket subscription)."""

    type: Literal["tiled"]


class TiledReplaySourceConfig(_TiledConnection):
    """One archived run read back from Tiled, in ``seq_num`` order."""

    type: Literal["tiled-replay"]
    run: str = Field(min_length=1, description="uid of the run to replay")
    speed: float = Field(
        1.0,
        ge=0.0,
        description="pace: 1 = original spacing of the events, 10 = ten times faster, "
        "0 = no waiting (what `replay` without --speed does)",
    )


class FilesSourceConfig(ConfigModel):
    """A folder or glob of ``.gr`` files as one run, in natural order of their names."""

    type: Literal["files"]
    name: SourceName
    glob: str = Field(
        min_length=1,
        description="glob or folder of .gr files, relative to the config file's folder",
        json_schema_extra={CONFIG_RELATIVE: True},
    )
    interval: float | None = Field(
        None, ge=0.0, description="seconds between frames; unset or 0: as fast as analysed"
    )


class KafkaSourceConfig(ConfigModel):
    """Bluesky documents from Kafka (needs the ``kafka`` extra)."""

    type: Literal["kafka"]
    name: SourceName
    address: BootstrapServers = Field(
        min_length=1, description="bootstrap servers, host:port[,host:port]"
    )
    topics: tuple[str, ...] = Field(("raw",), min_length=1, description="topics to consume")
    group_id: str = Field("motex-stream", min_length=1, description="Kafka consumer group")
    data_key: DataKey = DEFAULT_DATA_KEY
    r_key: RKey = DEFAULT_R_KEY


SourceConfig = Annotated[
    ZmqSourceConfig
    | TiledSourceConfig
    | TiledReplaySourceConfig
    | FilesSourceConfig
    | KafkaSourceConfig,
    Field(discriminator="type"),
]

#: Source type → its model, in the order the reference page lists them.
SOURCE_TYPES: dict[str, type[ConfigModel]] = {
    "zmq": ZmqSourceConfig,
    "tiled": TiledSourceConfig,
    "tiled-replay": TiledReplaySourceConfig,
    "files": FilesSourceConfig,
    "kafka": KafkaSourceConfig,
}
