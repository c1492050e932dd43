"""Keep credentials out of the log, whatever level an operator turns it up to.

``serve -vv`` logs DEBUG from every library. The websockets client then writes each request
header of its handshake (``> Authorization: Apikey ...``) to the log, so the Tiled API key ended
up in log files and journald, readable by whoever reads logs (issue 19). The filter here is
attached to the loggers of the libraries that talk to Tiled; it rewrites a record that shows a
credential header or a registered secret before any handler sees it. Records of those loggers
only, so nothing else pays for it.
"""

from __future__ import annotations

import logging
import re
import threading

REDACTED = "[redacted]"
# loggers whose records can carry request headers or URLs with the key
WATCHED_LOGGERS = (
    "websockets",
    "websockets.client",
    "websockets.protocol",
    "httpx",
    "httpcore.http11",
    "httpcore.connection",
)
_CREDENTIAL_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie"})
_URL_KEY = re.compile(r"(api_key=)[^&\s'\"]+", re.IGNORECASE)


class RedactSecrets(logging.Filter):
    """Rewrite records that show a credential; never drops a record."""

    def __init__(self) -> None:
        super().__init__()
        self._secrets: set[str] = set()
        self._lock = threading.Lock()

    def add(self, secret: str | None) -> None:
        """Redact ``secret`` wherever it appears from now on (short strings are ignored: a
        key of a few characters would blank out ordinary words)."""
        if secret and len(secret) >= 8:
            with self._lock:
                self._secrets.add(secret)

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if (
            isinstance(args, tuple)
            and len(args) == 2
            and isinstance(args[0], str)
            and args[0].strip().lower() in _CREDENTIAL_HEADERS
        ):
            record.args = (args[0], REDACTED)  # websockets: "> %s: %s" per header
        try:
            message = record.getMessage()
        except Exception:  # a broken record is the handler's business, not ours
            return True
        clean = _URL_KEY.sub(r"\1" + REDACTED, message)
        with self._lock:
            secrets = tuple(self._secrets)
        for secret in secrets:
            clean = clean.replace(secret, REDACTED)
        if clean != message:
            record.msg, record.args = clean, None
        return True


_FILTER = RedactSecrets()
_installed = False
_install_lock = threading.Lock()


def protect(secret: str | None = None) -> None:
    """Attach the filter to :data:`WATCHED_LOGGERS` (once) and register ``secret``."""
    global _installed
    _FILTER.add(secret)
    with _install_lock:
        if _installed:
            return
        for name in WATCHED_LOGGERS:
            logging.getLogger(name).addFilter(_FILTER)
        _installed = True
