"""The agent's side of the Queue Server: add one item, count our waiting items, start the queue.

Why a thin wrapper over ``bluesky_queueserver_api``'s ``REManagerAPI`` (0MQ): every request is
bounded by the configured timeout and every failure (server dead, request refused, plan not
allowed for the agent's user group) becomes one :class:`QueueServerError`, which the agent
counts and logs. The agent never sets the server's autostart flag: that is the operator's.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from motex_stream.stream.loop.policy import QueueServerSettings

log = logging.getLogger(__name__)


class QueueServerError(RuntimeError):
    """A request to the RE Manager failed: unreachable, timed out, or refused.

    ``refused``: the server answered no (e.g. a plan outside the agent's user group), as
    opposed to not answering; the log says which, since the operator's fix differs.
    """

    def __init__(self, message: str, *, refused: bool = False) -> None:
        super().__init__(message)
        self.refused = refused


@dataclass(frozen=True)
class Suggestion:
    """What to put in the queue: a plan (``kind == "plan"``) or an instruction."""

    kind: str  # "plan" or "instruction"
    name: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    md: dict[str, Any]
    position: str  # "front" or "back"


class QueueClient:
    """One REManagerAPI (0MQ) per agent, used from the agent's submit thread only."""

    def __init__(self, settings: QueueServerSettings) -> None:
        from bluesky_queueserver_api.zmq import REManagerAPI

        self.settings = settings
        self._api = REManagerAPI(
            zmq_control_addr=settings.zmq_control_addr,
            timeout_recv=settings.timeout_s,
            timeout_send=min(settings.timeout_s, 1.0),
        )
        self._api.user = settings.user
        self._api.user_group = settings.user_group

    def _call(self, what: str, method: str, *args: Any, **kwargs: Any) -> Any:
        try:
            return getattr(self._api, method)(*args, **kwargs)
        except Exception as exc:  # the API raises its own CommTimeoutError, RequestFailedError…
            refused = type(exc).__name__ == "RequestFailedError"
            raise QueueServerError(
                f"{what} failed at {self.settings.zmq_control_addr}: {exc}", refused=refused
            ) from exc

    def our_waiting_items(self) -> int:
        """Items this agent's user added that still wait in the queue (the cap counts these)."""
        queue = self._call("queue_get", "queue_get")
        return sum(1 for item in queue.get("items", []) if item.get("user") == self.settings.user)

    def add(self, suggestion: Suggestion) -> str:
        """Add the item; its ``item_uid`` (the queue's own id)."""
        from bluesky_queueserver_api import BInst, BPlan

        item: Any
        if suggestion.kind == "instruction":
            item = BInst(suggestion.name)
        else:
            item = BPlan(suggestion.name, *suggestion.args, **suggestion.kwargs, md=suggestion.md)
        try:
            response = self._call("item_add", "item_add", item, pos=suggestion.position)
        except QueueServerError as exc:
            # A busy manager can add the item and answer after our timeout: look before
            # calling it an error, so the report does not say "not queued" for a queued item.
            found = self._find(suggestion.md.get("motex_suggestion_id"))
            if found is None:
                raise
            log.warning("item_add answered late (%s) but item %s is in the queue", exc, found)
            return found
        uid = str((response.get("item") or {}).get("item_uid", ""))
        log.info("queued %s %s as item %s", suggestion.kind, suggestion.name, uid)
        return uid

    def _find(self, suggestion_id: Any) -> str | None:
        """The ``item_uid`` of the queued item carrying ``suggestion_id``; None if none or the
        server does not answer (then the outcome stays an error: we could not confirm it)."""
        if not suggestion_id:
            return None
        try:
            queue = self._call("queue_get", "queue_get")
        except QueueServerError:
            return None
        for item in queue.get("items", []):
            md = (item.get("kwargs") or {}).get("md") or {}
            if md.get("motex_suggestion_id") == suggestion_id:
                return str(item.get("item_uid", ""))
        return None

    def start_queue(self) -> None:
        """Start the queue (only when the policy says ``auto_start``)."""
        self._call("queue_start", "queue_start")

    def close(self) -> None:
        try:
            self._api.close()
        except Exception:  # closing a client of a dead server must not raise
            log.debug("closing the Queue Server client failed", exc_info=True)
