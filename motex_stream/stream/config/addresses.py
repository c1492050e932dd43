"""Addresses, URIs and ports, checked when the configuration (or a CLI flag) is read.

Why here and not at connect time: a 0MQ socket given ``not-an-address`` fails inside its
receiver thread, which the service then restarts forever, and a Tiled URI without a scheme
fails on the first frame. Checked at load, each mistake is one line naming the key, before
anything starts. Each checker returns the value unchanged (or normalised) and raises
``ValueError`` with a message in the config's words; they are pydantic ``AfterValidator``s
for the config models and plain functions for the CLI.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import AfterValidator

_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9\-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9\-]{0,61}[A-Za-z0-9])?)*$"
)
_LOOPBACK_NAMES = {"localhost", "ip6-localhost"}


def _host(host: str, *, wildcard: bool) -> str:
    if wildcard and host == "*":
        return host
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        ipaddress.ip_address(bare)
        return host
    except ValueError:
        pass
    if _HOSTNAME.match(host):
        return host
    raise ValueError(f"{host!r} is not a host name or IP address")


def _port(text: str, *, wildcard: bool) -> str:
    if wildcard and text in ("*", "0"):
        return text
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise ValueError(f"port {text!r} is not a number from 1 to 65535")
    return text


def _split_host_port(text: str) -> tuple[str, str]:
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise ValueError("needs host:port")
    return host, port


def zmq_endpoint(value: str, *, bind: bool = False) -> str:
    """A 0MQ endpoint: ``tcp://host:port`` (``*`` host/port allowed when binding),
    ``ipc://path`` or ``inproc://name``."""
    scheme, sep, rest = value.partition("://")
    if not sep:
        raise ValueError(f"{value!r} is not a 0MQ address (expected tcp://host:port)")
    if scheme in ("ipc", "inproc"):
        if not rest:
            raise ValueError(f"{value!r}: {scheme}:// needs a name")
        return value
    if scheme != "tcp":
        raise ValueError(f"{value!r}: unsupported 0MQ transport {scheme!r} (use tcp://host:port)")
    try:
        host, port = _split_host_port(rest)
        _host(host, wildcard=bind)
        _port(port, wildcard=bind)
    except ValueError as exc:
        raise ValueError(f"{value!r} is not a 0MQ address: {exc}") from None
    return value


def proxy_address(value: str) -> str:
    """The 0MQ proxy's address as Bluesky's Publisher takes it: ``host:port`` (or tcp://…)."""
    if "://" in value:
        return zmq_endpoint(value)
    try:
        host, port = _split_host_port(value)
        _host(host, wildcard=False)
        _port(port, wildcard=False)
    except ValueError as exc:
        raise ValueError(f"{value!r} is not a host:port address: {exc}") from None
    return value


def http_uri(value: str) -> str:
    """An ``http(s)://host[:port]/path`` URI (a Tiled server's API root)."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{value!r} is not an http(s):// URI")
    try:
        host, port = parts.hostname, parts.port
    except ValueError as exc:  # a port that is not a number or out of range
        raise ValueError(f"{value!r}: {exc}") from None
    if not host:
        raise ValueError(f"{value!r} has no host")
    _host(host, wildcard=False)
    if port == 0:
        raise ValueError(f"{value!r}: port 0 is not a server port")
    return value


def bootstrap_servers(value: str) -> str:
    """Kafka bootstrap servers: ``host:port[,host:port...]``."""
    for part in value.split(","):
        try:
            host, port = _split_host_port(part.strip())
            _host(host, wildcard=False)
            _port(port, wildcard=False)
        except ValueError as exc:
            raise ValueError(f"{part.strip()!r} is not a host:port address: {exc}") from None
    return value


def bind_host(value: str) -> str:
    """An interface to bind a server to: an IP address, a host name, or ``0.0.0.0``/``::``."""
    return _host(value, wildcard=False)


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a bind host or an endpoint's host) stays on this machine."""
    bare = host.strip("[]")
    if bare in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(bare).is_loopback
    except ValueError:
        return False


def endpoint_host(endpoint: str) -> str | None:
    """The host of a ``tcp://host:port`` endpoint; None for ipc/inproc (local by nature)."""
    scheme, _, rest = endpoint.partition("://")
    if scheme != "tcp":
        return None
    return rest.rpartition(":")[0]


ZmqConnect = Annotated[str, AfterValidator(zmq_endpoint)]
ZmqBind = Annotated[str, AfterValidator(lambda v: zmq_endpoint(v, bind=True))]
ProxyAddress = Annotated[str, AfterValidator(proxy_address)]
HttpUri = Annotated[str, AfterValidator(http_uri)]
BootstrapServers = Annotated[str, AfterValidator(bootstrap_servers)]
BindHost = Annotated[str, AfterValidator(bind_host)]
