"""Start-up checks of a loaded configuration against this machine, before anything starts.

The config models check what a value *is* (an address, a port number, a URI); this module
checks what the machine says about it: the state folder can be written, the files named exist,
the ports to bind are free and not claimed twice, and the key files are private. Every problem
is one line naming the key; all of them are reported at once (:class:`ConfigError`), so a
service started for a shift never fails hours later on something knowable at start-up.
Exposure that may be deliberate (binding beyond loopback, a key file others can read) is a
warning, not an error.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import logging
import os
import socket
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

from motex_stream.stream.config.addresses import endpoint_host, is_loopback
from motex_stream.stream.config.base import ConfigError
from motex_stream.stream.config.loader import Config
from motex_stream.stream.config.sinks import BlueskySinkConfig
from motex_stream.stream.config.sources import TiledReplaySourceConfig, TiledSourceConfig

log = logging.getLogger(__name__)


def preflight(config: Config, busy_ports_fatal: bool = True) -> list[str]:
    """Check ``config`` (a loaded :class:`~motex_stream.stream.config.Config`) on this host.

    Raises :class:`ConfigError` listing every problem, one line each; returns the warnings
    (also logged), e.g. a listener reachable from the network. ``busy_ports_fatal=False``
    (``serve --check``) makes a port in use a warning: a config is checked before a restart,
    while the running service still holds its ports.
    """
    problems: list[str] = []
    warnings: list[str] = []
    service = config.service
    if service.state_dir is not None:  # None: a command's config that keeps no state
        _check_writable_dir(service.state_dir, "service.state_dir", problems)
    for i, model in enumerate(config.models):
        for key, path in (("starting_model", model.starting_model), ("reference", model.reference)):
            if path is not None and not Path(path).is_file():
                problems.append(f"models[{i}].{key}: no such file {path}")
    for where, path in _key_files(config):
        _check_key_file(path, where, problems, warnings)
    for i, source in enumerate(config.sources):
        if source.type == "files" and not _has_files(source.glob):
            warnings.append(f"sources[{i}].glob: no .gr file matches {source.glob!r} (yet)")
    for i, sink in enumerate(config.sinks):
        if sink.type == "jsonl":
            _check_writable_dir(Path(sink.path).parent, f"sinks[{i}].path", problems)
    binds = list(_binds(config))
    seen: dict[tuple[str, int], str] = {}
    for where, host, port in binds:
        if not is_loopback(host):
            warnings.append(
                f"{where}: binds {host}, reachable beyond this machine; make sure a firewall "
                "limits who can connect"
            )
        if port == 0:
            continue
        other = seen.get((host, port))
        if other is not None:
            problems.append(f"{where}: port {port} on {host} is also used by {other}")
            continue
        seen[(host, port)] = where
        why = _cannot_bind(host, port)
        if why and not busy_ports_fatal and _in_use(why):
            warnings.append(f"{where}: {host}:{port} is in use now ({why}); free it before start")
        elif why:
            problems.append(f"{where}: cannot bind {host}:{port} ({why})")
    if problems:
        where = f"{config.path}: " if config.path is not None else ""
        if len(problems) == 1:
            raise ConfigError(f"{where}{problems[0]}")
        raise ConfigError(
            f"{where}{len(problems)} problems:\n" + "\n".join(f"  {p}" for p in problems)
        )
    for warning in warnings:
        log.warning("%s", warning)
    return warnings


def _check_writable_dir(directory: Path, where: str, problems: list[str]) -> None:
    """The folder exists (created if missing) and a file can be created in it."""
    if directory.exists() and not directory.is_dir():
        problems.append(f"{where}: {directory} is a file, not a folder")
        return
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".motex-write-check-"):
            pass
    except OSError as exc:
        problems.append(f"{where}: cannot write in {directory} ({exc.strerror or exc})")


def _key_files(config: Config) -> Iterator[tuple[str, Path]]:
    """Every ``api_key_file`` the config names (the entries that talk to Tiled have one)."""
    keyed = (TiledSourceConfig, TiledReplaySourceConfig, BlueskySinkConfig)
    for table, entries in (("sources", config.sources), ("sinks", config.sinks)):
        for i, entry in enumerate(entries):
            if isinstance(entry, keyed) and entry.api_key_file is not None:
                yield f"{table}[{i}].api_key_file", Path(entry.api_key_file)


def _check_key_file(path: Path, where: str, problems: list[str], warnings: list[str]) -> None:
    try:
        mode = path.stat().st_mode
        with path.open("rb"):
            pass
    except OSError as exc:
        problems.append(f"{where}: cannot read {path} ({exc.strerror or exc})")
        return
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        warnings.append(
            f"{where}: {path} is readable by other users (mode {stat.S_IMODE(mode):o}); "
            f"chmod 600 it"
        )


def _has_files(pattern: str) -> bool:
    if Path(pattern).is_dir():
        return bool(glob.glob(os.path.join(glob.escape(pattern), "*.gr")))
    return bool(glob.glob(pattern))


def _binds(config: Config) -> Iterator[tuple[str, str, int]]:
    """(key, host, port) of every listener the service will open."""
    service = config.service
    if service.metrics_port:
        yield "service.metrics_port", service.metrics_host, service.metrics_port
    dashboard_port = service.dashboard_port
    if dashboard_port:
        yield "service.dashboard_port", service.dashboard_host, dashboard_port
    for i, sink in enumerate(config.sinks):
        if sink.type != "zmq":
            continue
        host = endpoint_host(sink.bind)
        if host is None:
            continue
        port_text = sink.bind.rpartition(":")[2]
        port = 0 if port_text in ("*", "0") else int(port_text)
        yield f"sinks[{i}].bind", host, port


def _in_use(why: str) -> bool:
    """Whether a bind failure says the port is taken (not: no such interface)."""
    return os.strerror(errno.EADDRINUSE) in why


def _cannot_bind(host: str, port: int) -> str | None:
    """Why ``host:port`` cannot be bound right now (in use, no such interface), or None."""
    name = "0.0.0.0" if host == "*" else host.strip("[]")
    family = socket.AF_INET6 if ":" in name else socket.AF_INET
    with contextlib.closing(socket.socket(family, socket.SOCK_STREAM)) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((name, port))
        except OSError as exc:
            return exc.strerror or str(exc)
    return None
