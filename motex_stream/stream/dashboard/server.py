"""The dashboard's web server: one page, its static files, a snapshot and a live event stream.

Why the standard library's threading HTTP server and Server-Sent Events: the page only needs
data flowing one way (service → browser), which is exactly what SSE is; the browser's
``EventSource`` reconnects by itself when the dashboard restarts, and the server needs no
async framework, so it runs as a thread inside ``motex-stream serve`` as easily as on its own.
Each browser gets a bounded queue: a browser that stops reading is dropped (it reconnects and
gets a fresh snapshot) instead of growing memory in a week-long service.

Compression: the documented remote access is an SSH tunnel, and plotly.js alone is 4.8 MB
(1.5 MB gzipped), as is a long run's snapshot; so every file, JSON answer and the event stream
is sent gzipped to a client that accepts it (``Content-Encoding: gzip``, ``Vary:
Accept-Encoding``). plotly.js is compressed once per process, on a thread when the server
starts, not on every page load.

Routes: ``/`` the page; ``/static/*`` its script, style and Plotly (from the ``plotly``
wheel); ``/api/snapshot`` the whole :class:`~.state.DashboardState` as JSON; ``/events`` the
SSE stream (a ``snapshot`` event, then one ``frame`` event per message); ``/api/fit?model=
NAME&seq=N`` an older frame's fit curve (the snapshot holds only the latest); ``/healthz``.

What it shows comes from the network: every message is checked against the published schema
before it reaches the state or a browser (:mod:`.schema`; failures are dropped and counted),
the page writes strings only as text, and every response carries a Content-Security-Policy
that allows no inline script (:data:`SECURITY_HEADERS`), so a crafted string cannot run code in
the operator's browser even if it got through.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import logging
import queue
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from motex_stream.stream.dashboard.state import DashboardState
from motex_stream.stream.frames import RunStart, RunStop
from motex_stream.stream.messages import PublishedFrame, problem, to_message
from motex_stream.stream.publishers.base import Sink

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
HEARTBEAT_S = 5.0  # an SSE comment this often lets both ends notice a dead connection
CLIENT_QUEUE = 2000  # events a slow browser may fall behind before it is dropped

#: Sent with every response. The page's script and style are files of this server; no inline
#: script, no other origin, no framing (clickjacking), no referrer to other sites. Inline
#: *styles* stay allowed: plotly.js adds its own <style> rules, and a style cannot run code.
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data: blob:",
        "font-src 'self' data:",
        "connect-src 'self'",
        "worker-src 'self' blob:",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    )
)
SECURITY_HEADERS = (
    ("Content-Security-Policy", CONTENT_SECURITY_POLICY),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
    ("Cross-Origin-Resource-Policy", "same-origin"),
)
#: rejected messages logged one by one before the log only notes every hundredth
REJECTS_LOGGED = 10

#: bodies shorter than this go uncompressed: the gzip header would eat what it saves
GZIP_MIN_BYTES = 512
#: dynamic answers (snapshot, fit, event stream): fast, most of the gain of level 9 on JSON
GZIP_LEVEL = 6

_STATIC = {
    "app.js": "application/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
}


def plotly_js() -> Path:
    """plotly.js as shipped inside the ``plotly`` wheel (MIT), so no CDN is needed."""
    import plotly

    path = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    if not path.exists():
        raise FileNotFoundError(f"plotly.min.js not found in the plotly package ({path})")
    return path


def accepts_gzip(header: str | None) -> bool:
    """Whether an ``Accept-Encoding`` header allows gzip (RFC 9110: ``gzip;q=0`` refuses it,
    ``*`` stands for any coding the header does not name)."""
    if not header:
        return False
    weights: dict[str, float] = {}
    for part in header.split(","):
        name, *params = (p.strip() for p in part.split(";"))
        q = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if name:
            weights[name.lower()] = q
    return weights.get("gzip", weights.get("x-gzip", weights.get("*", 0.0))) > 0


class _Precompressed:
    """plotly.js and its gzip, made once per process (4.8 MB takes ~0.3 s to compress).

    The lock makes a page load that races the warm-up wait for the one compression instead
    of starting a second.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._bodies: tuple[bytes, bytes] | None = None

    def get(self) -> tuple[bytes, bytes]:
        with self._lock:
            if self._bodies is None:
                raw = plotly_js().read_bytes()
                self._bodies = (raw, gzip.compress(raw, compresslevel=9, mtime=0))
            return self._bodies


PLOTLY = _Precompressed()


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), allow_nan=False).encode()


class _Clients:
    """The connected browsers' event queues."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queues: set[queue.Queue[bytes | None]] = set()

    def add(self) -> queue.Queue[bytes | None]:
        q: queue.Queue[bytes | None] = queue.Queue(CLIENT_QUEUE)
        with self._lock:
            self._queues.add(q)
        return q

    def remove(self, q: queue.Queue[bytes | None]) -> None:
        with self._lock:
            self._queues.discard(q)

    def broadcast(self, event: bytes) -> None:
        with self._lock:
            queues = list(self._queues)
        for q in queues:
            try:
                q.put_nowait(event)
            except queue.Full:  # this browser stopped reading: drop it, it will reconnect
                self.remove(q)
                log.warning("dropping a dashboard client that fell %d events behind", q.qsize())

    def close_all(self) -> None:
        with self._lock:
            queues = list(self._queues)
            self._queues.clear()
        for q in queues:
            with contextlib.suppress(queue.Full):
                q.put_nowait(None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._queues)


def sse(event: str, data: bytes) -> bytes:
    """One Server-Sent Event (the data is one line of JSON)."""
    return b"event: " + event.encode() + b"\ndata: " + data + b"\n\n"


class DashboardServer:
    """Serves the page on ``host:port`` and pushes every message given to :meth:`add`.

    Feed it from a subscriber (``motex-stream dashboard``) or as a service sink
    (``[service] dashboard_port``; see :class:`DashboardSink`). ``port=0`` picks a free port.
    """

    def __init__(
        self, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, *, source: str = ""
    ) -> None:
        self.state = DashboardState()
        self.rejected = 0  # messages dropped: not as the schema publishes them
        self._rejected_lock = threading.Lock()
        self.source = source  # shown on the page: what the dashboard listens to
        self._clients = _Clients()
        self._closing = threading.Event()
        self._httpd = ThreadingHTTPServer((host, port), self._handler_class())
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None
        self.host, self.port = self._httpd.server_address[:2]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    def start(self) -> DashboardServer:
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="dashboard-http", daemon=True
        )
        self._thread.start()
        # compress plotly.js before the first browser asks for it (once per process)
        threading.Thread(target=PLOTLY.get, name="dashboard-gzip", daemon=True).start()
        log.info("dashboard on %s", self.url)
        return self

    def add(self, message: Mapping[str, Any]) -> bool:
        """Fold one message into the state and push it to every connected browser.

        A message that is not a v1 message as the published schema defines it is dropped,
        counted in :attr:`rejected` and logged (returns False): the subscribed address is
        open to the network, and neither the page nor the subscriber may depend on what a
        stranger sends there.
        """
        why = problem(message)
        if why is None:
            try:
                body = _json(self.state.add(message))
            except Exception as exc:  # allowed by the schema, still unusable: never fatal
                why = f"{type(exc).__name__}: {exc}"
        if why is not None:
            self.reject(message, why)
            return False
        self._clients.broadcast(sse("frame", body))
        return True

    def reject(self, message: Any, why: str) -> None:
        """Count and log one message that is not shown (``message`` None: dropped unread)."""
        with self._rejected_lock:
            self.rejected += 1
            n = self.rejected
        if n <= REJECTS_LOGGED or n % 100 == 0:
            model = message.get("model") if isinstance(message, Mapping) else None
            log.warning(
                "dashboard: dropping message %d not matching the schema (model %.64r): %s",
                n,
                model,
                why,
            )

    def close(self) -> None:
        self._closing.set()
        self._clients.close_all()
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    @property
    def clients(self) -> int:
        return len(self._clients)

    def __enter__(self) -> DashboardServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- HTTP -------------------------------------------------------------------------------

    def _info(self) -> dict[str, Any]:
        return {"source": self.source, "now": time.time(), "rejected": self.rejected}

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("dashboard %s: " + format, self.address_string(), *args)

            def end_headers(self) -> None:
                """Every response (pages, data, errors) carries the security headers."""
                for name, value in SECURITY_HEADERS:
                    self.send_header(name, value)
                super().end_headers()

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path in ("/", "/index.html"):
                    self._file(_read_static("index.html"), "text/html; charset=utf-8")
                elif path == "/static/plotly.min.js":
                    raw, packed = PLOTLY.get()
                    self._file(raw, "application/javascript", cache=True, packed=packed)
                elif path.startswith("/static/") and path[8:] in _STATIC:
                    name = path[8:]
                    self._file(_read_static(name), _STATIC[name])
                elif path == "/api/snapshot":
                    body = _json({**server.state.snapshot(), **server._info()})
                    self._file(body, "application/json")
                elif path == "/api/fit":
                    self._fit()
                elif path == "/healthz":
                    self._file(b"ok\n", "text/plain")
                elif path == "/events":
                    self._events()
                else:
                    self.send_error(HTTPStatus.NOT_FOUND)

            def _fit(self) -> None:
                query = parse_qs(urlsplit(self.path).query)
                try:
                    model, seq = query["model"][0], int(query["seq"][0])
                except (KeyError, IndexError, ValueError):
                    self.send_error(HTTPStatus.BAD_REQUEST, "needs model=NAME&seq=N")
                    return
                fit = server.state.fit(model, seq)
                if fit is None:
                    self.send_error(HTTPStatus.NOT_FOUND, "no fit kept for that frame")
                    return
                self._file(_json(fit), "application/json")

            def _gzip(self) -> bool:
                return accepts_gzip(self.headers.get("Accept-Encoding"))

            def _file(
                self, body: bytes, kind: str, cache: bool = False, packed: bytes | None = None
            ) -> None:
                """Send ``body``, gzipped (``packed``, or compressed now) if the client takes it.

                ``Vary`` is sent either way: the answer depends on the request's
                ``Accept-Encoding``, and a cache in between must not mix the two.
                """
                compressible = packed is not None or len(body) >= GZIP_MIN_BYTES
                if compressible and self._gzip():
                    body = packed or gzip.compress(body, compresslevel=GZIP_LEVEL, mtime=0)
                    encoded = True
                else:
                    encoded = False
                self.send_response(HTTPStatus.OK)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "max-age=86400" if cache else "no-cache")
                if compressible:
                    self.send_header("Vary", "Accept-Encoding")
                if encoded:
                    self.send_header("Content-Encoding", "gzip")
                self.end_headers()
                self.wfile.write(body)

            def _events(self) -> None:
                q = server._clients.add()
                # one gzip stream for the connection, flushed after every event so that each
                # arrives at once (the snapshot of a long run is megabytes of JSON)
                packer = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31) if self._gzip() else None

                def send(data: bytes) -> None:
                    if packer is not None:
                        data = packer.compress(data) + packer.flush(zlib.Z_SYNC_FLUSH)
                    self.wfile.write(data)
                    self.wfile.flush()

                try:
                    self.send_response(HTTPStatus.OK)
                    self.send_header("Content-Type", "text/event-stream")
                    self.send_header("Cache-Control", "no-cache")
                    self.send_header("Connection", "keep-alive")
                    self.send_header("Vary", "Accept-Encoding")
                    if packer is not None:
                        self.send_header("Content-Encoding", "gzip")
                    self.end_headers()
                    # the snapshot is taken after the queue exists, so no frame falls between
                    # (a frame in both is applied once: the page skips seqs it already has)
                    snap = _json({**server.state.snapshot(), **server._info()})
                    send(b"retry: 1000\n" + sse("snapshot", snap))
                    while not server._closing.is_set():
                        try:
                            event = q.get(timeout=HEARTBEAT_S)
                        except queue.Empty:
                            event = b": keep-alive\n\n"
                        if event is None:
                            break
                        send(event)
                    if packer is not None:  # a complete gzip stream: the browser sees an end
                        self.wfile.write(packer.flush())
                except (BrokenPipeError, ConnectionResetError, TimeoutError):
                    pass
                finally:
                    server._clients.remove(q)
                    self.close_connection = True

        return Handler


def _read_static(name: str) -> bytes:
    return resources.files("motex_stream.stream.dashboard").joinpath("static", name).read_bytes()


class DashboardSink(Sink):
    """The service's own dashboard: a sink that feeds a :class:`DashboardServer` directly."""

    def __init__(
        self, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, name: str = "DashboardSink"
    ) -> None:
        self.name = name
        self.server = DashboardServer(host, port, source="this service").start()

    def on_run_start(self, start: RunStart) -> None:
        """Nothing to do: runs are told apart by the messages' ``source``."""

    def publish(self, published: PublishedFrame) -> None:
        self.server.add(to_message(published))

    def on_run_stop(self, stop: RunStop) -> None:
        """Nothing to do."""

    def close(self) -> None:
        self.server.close()


def serve_subscription(
    address: str,
    topics: Iterable[str] = (),
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    stop_event: threading.Event | None = None,
    on_start: Callable[[DashboardServer], None] | None = None,
) -> DashboardServer:
    """Serve the page and feed it from the ZMQ stream at ``address`` until ``stop_event``.

    The subscriber is the one :func:`~motex_stream.stream.publishers.zmq_pub.subscribe` that
    ``watch`` uses. ZMQ reconnects by itself, so a restarted service is picked up again.
    ``on_start`` is called with the running server (its URL) before the first message.
    """
    from motex_stream.stream.publishers.zmq_pub import subscribe

    stop_event = stop_event or threading.Event()
    server = DashboardServer(host, port, source=address).start()
    if on_start is not None:
        on_start(server)
    try:
        # what the subscriber drops (unparsable, oversized, not as the schema publishes it)
        # never reaches add(): counted here, so `rejected` is every message not shown
        for _topic, message in subscribe(
            address, topics, stop_event=stop_event, on_invalid=lambda why: server.reject(None, why)
        ):
            server.add(message)
    finally:
        server.close()
    return server
