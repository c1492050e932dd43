"""The closed-loop agent: published frames in, Queue Server suggestions and a report out.

Built on bluesky-adaptive's agent interface (1.x: :class:`bluesky_adaptive.protocols.Optimizer`
and :class:`~bluesky_adaptive.protocols.CanRegisterSuggestions`; the 0.x ``agents.base.Agent``
needs Kafka, which a motex-stream beamline does not run): :meth:`MotexChangeAgent.ingest` takes
published frames, :meth:`~MotexChangeAgent.suggest` returns what to do about them, each with the
``_id`` the protocol asks for. :class:`AgentLoop` feeds it from the service's ZMQ stream, applies
the policy's limits, submits to the RE Manager from its own thread and reports every decision.

Why a separate submit thread: a dead or slow Queue Server costs a request timeout per attempt;
the frame loop never waits for it, so the agent keeps following the analysis (and the analysis
service, which only publishes, never waits for the agent at all).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from bluesky_adaptive.protocols import CanRegisterSuggestions, Optimizer
from prometheus_client import CollectorRegistry, Counter

from motex_stream.stream.loop.policy import AgentConfig, Policy
from motex_stream.stream.loop.queue import QueueClient, QueueServerError, Suggestion
from motex_stream.stream.loop.report import ReportRun
from motex_stream.stream.messages import problem

log = logging.getLogger(__name__)

OUTCOMES = ("queued", "dry_run", "rate_limited", "capped", "dropped", "error")


class MotexChangeAgent(Optimizer, CanRegisterSuggestions):
    """Turns published frames into suggestions, following :class:`Policy` triggers only.

    Triggers: a confirmed ``change`` (``on_change``); ``uncertain_fraction`` of atoms labelled
    uncertain, or ``model_quality.mae`` above ``max_mae``, for ``persist_frames`` frames in a
    row (fires once per streak). The limits (dry run, rate, cap) are the loop's job: this class
    only says *what* would be worth doing and why.
    """

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self._pending: list[dict[str, Any]] = []
        self._made: list[dict[str, Any]] = []
        self._uncertain_streak = 0
        self._mae_streak = 0
        self.frames = 0

    # -- bluesky-adaptive Optimizer ---------------------------------------------------------

    def ingest(self, points: Sequence[Mapping[str, Any]]) -> None:
        """Take published v1 messages (one per analysed frame), in order."""
        for message in points:
            self.frames += 1
            self._pending.extend(self._triggers(message))

    def suggest(self, num_points: int | None = None) -> Sequence[dict[str, Any]]:
        """The triggered suggestions not handed out yet (at most ``num_points``), oldest first."""
        n = len(self._pending) if num_points is None else num_points
        out, self._pending = self._pending[:n], self._pending[n:]
        out = list(self.register_suggestions(out))
        self._made.extend(out)
        return out

    def register_suggestions(self, suggestions: Sequence[Mapping[str, Any]]) -> Sequence[dict]:
        """Give each suggestion a fresh ``_id`` (it also goes into the queue item's metadata)."""
        return [{**s, "_id": uuid.uuid4().hex} for s in suggestions]

    def get_best_points(self) -> Sequence[tuple[Any, Mapping, Mapping]]:
        """Every suggestion made so far as ``(_id, suggestion, {})``: nothing is optimised."""
        return [(s["_id"], s, {}) for s in self._made]

    # -- triggers ---------------------------------------------------------------------------

    def _triggers(self, message: Mapping[str, Any]) -> list[dict[str, Any]]:
        base = {
            "seq": int(message.get("seq", 0)),
            "model": str(message.get("model", "")),
            "source": str(message.get("source", "")),
        }
        found: list[dict[str, Any]] = []
        change = message.get("change")
        if self.policy.on_change and isinstance(change, Mapping):
            found.append(
                {
                    **base,
                    "trigger": "change",
                    "frame": int(change["frame"]),
                    "atoms_gained": [int(a) for a in change.get("atoms_gained") or []],
                    "atoms_lost": [int(a) for a in change.get("atoms_lost") or []],
                    "confidence": change.get("confidence"),
                    "reason": "confirmed change of the keep atoms",
                }
            )
        p = self.policy
        if p.uncertain_fraction is not None:
            labels = [c.get("label") for c in message.get("contributions") or []]
            frac = labels.count("uncertain") / len(labels) if labels else 0.0
            self._uncertain_streak = (
                self._uncertain_streak + 1 if frac >= p.uncertain_fraction else 0
            )
            if self._uncertain_streak == p.persist_frames:
                found.append(
                    {
                        **base,
                        "trigger": "uncertainty",
                        "frame": base["seq"],
                        "reason": f"{frac:.2f} of atoms uncertain for {p.persist_frames} frames",
                    }
                )
        if p.max_mae is not None:
            mae = (message.get("model_quality") or {}).get("mae")
            high = mae is not None and float(mae) > p.max_mae
            self._mae_streak = self._mae_streak + 1 if high else 0
            if self._mae_streak == p.persist_frames:
                found.append(
                    {
                        **base,
                        "trigger": "model_error",
                        "frame": base["seq"],
                        "reason": f"model MAE {mae} > {p.max_mae} for {p.persist_frames} frames",
                    }
                )
        return found


def agent_metrics(registry: CollectorRegistry) -> dict[str, Counter]:
    """The agent's counters (one registry per agent, served on ``metrics_port``)."""
    return {
        "frames": Counter(
            "motex_agent_frames", "published frames the agent read", registry=registry
        ),
        "triggers": Counter(
            "motex_agent_triggers", "policy triggers seen", ["trigger"], registry=registry
        ),
        "suggestions": Counter(
            "motex_agent_suggestions", "suggestions by outcome", ["outcome"], registry=registry
        ),
        "queue_errors": Counter(
            "motex_agent_queue_errors", "failed Queue Server requests", registry=registry
        ),
        "rejected": Counter(
            "motex_agent_rejected",
            "received messages dropped: not as the service publishes them (JSON Schema)",
            registry=registry,
        ),
    }


class AgentLoop:
    """Subscribe, ingest, decide, submit, report, until ``stop`` is set.

    ``queue_factory`` makes the Queue Server client in the submit thread (tests and the CLI
    use :class:`QueueClient`); ``report`` receives every observation and decision.
    """

    def __init__(
        self,
        config: AgentConfig,
        report: ReportRun,
        *,
        queue_factory: Callable[[], QueueClient] | None = None,
        registry: CollectorRegistry | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.policy = config.policy
        self.agent = MotexChangeAgent(config.policy)
        self.report = report
        self.registry = registry if registry is not None else CollectorRegistry()
        self.metrics = agent_metrics(self.registry)
        self._queue_factory = queue_factory or (lambda: QueueClient(config.queue_server))
        self._clock = clock
        self._last_suggestion: float | None = None
        self._outbox: queue.Queue[dict[str, Any] | None] = queue.Queue(maxsize=16)
        self.outcomes: list[tuple[str, dict[str, Any]]] = []
        self.queue_errors = 0
        self.rejected = 0  # messages dropped by the schema check
        self._submitter: threading.Thread | None = None

    # -- frame side -------------------------------------------------------------------------

    def handle(self, message: Mapping[str, Any]) -> None:
        """One published frame: ingest, and decide on whatever it triggered (never blocks).

        Why the full schema check: the agent's input is a ZMQ address anyone on the beamline
        network can publish to, and its output reaches the experiment's queue. A message that
        is not exactly what the service publishes (a string frame number, a missing field, NaN)
        is dropped and counted before it can trigger anything or raise in the frame loop.
        """
        why = problem(message)
        if why is not None:
            self.reject(why)
            return
        self.agent.ingest([message])
        self.metrics["frames"].inc()
        for s in self.agent.suggest():
            self.metrics["triggers"].labels(trigger=s["trigger"]).inc()
            self.report.record("tell", s)
            log.info(
                "trigger %s at frame %s (seq %s): %s",
                s["trigger"],
                s["frame"],
                s["seq"],
                s["reason"],
            )
            self._decide(s)

    def reject(self, why: str) -> None:
        """Count and log one dropped input (unparseable, oversized or unlike the schema)."""
        self.rejected += 1
        self.metrics["rejected"].inc()
        log.warning("agent %s: dropped a message unlike the service's: %s", self.config.name, why)

    def _decide(self, s: dict[str, Any]) -> None:
        now = self._clock()
        if self.policy.dry_run:
            self._outcome("dry_run", s, detail=f"would queue {self._describe()}")
            return
        if (
            self._last_suggestion is not None
            and now - self._last_suggestion < self.policy.min_interval_s
        ):
            wait = self.policy.min_interval_s - (now - self._last_suggestion)
            self._outcome("rate_limited", s, detail=f"next suggestion allowed in {wait:.0f} s")
            return
        try:
            self._outbox.put_nowait(s)
        except queue.Full:
            self._outcome("dropped", s, detail="submit backlog full (Queue Server slow or dead)")
            return
        self._last_suggestion = now

    # -- submit side ------------------------------------------------------------------------

    def _describe(self) -> str:
        p = self.policy
        return "queue_stop instruction" if p.action == "pause" else f"plan {p.plan.name}"

    def suggestion_item(self, s: Mapping[str, Any]) -> Suggestion:
        """The queue item for suggestion ``s``: the template plan with the trigger in ``md``."""
        p = self.policy
        if p.action == "pause":
            return Suggestion("instruction", "queue_stop", (), {}, {}, "front")
        md = {
            **p.plan.md,
            "motex_agent": self.config.name,
            "motex_suggestion_id": s["_id"],
            "motex_trigger": s["trigger"],
            "motex_reason": s["reason"],
            "motex_model": s["model"],
            "motex_source": s["source"],
            "motex_seq": s["seq"],
            "motex_frame": s["frame"],
            "motex_atoms_gained": s.get("atoms_gained", []),
            "motex_atoms_lost": s.get("atoms_lost", []),
            "motex_confidence": s.get("confidence"),
        }
        return Suggestion(
            "plan", p.plan.name, tuple(p.plan.args), dict(p.plan.kwargs), md, p.position
        )

    def _submit_loop(self) -> None:
        client: QueueClient | None = None
        while True:
            s = self._outbox.get()
            if s is None:
                break
            try:
                if client is None:
                    client = self._queue_factory()
                if self.policy.action == "measure":
                    waiting = client.our_waiting_items()
                    if waiting >= self.policy.max_queued:
                        self._outcome("capped", s, detail=f"{waiting} agent items already queued")
                        continue
                uid = client.add(self.suggestion_item(s))
                if self.policy.auto_start:
                    client.start_queue()
                self._outcome(
                    "queued",
                    s,
                    item_uid=uid,
                    detail="auto-started" if self.policy.auto_start else "awaiting operator",
                )
            except QueueServerError as exc:
                self.queue_errors += 1
                self.metrics["queue_errors"].inc()
                what = "refused" if exc.refused else "unavailable"
                log.error("Queue Server %s, suggestion %s not queued: %s", what, s["_id"], exc)
                self._outcome("error", s, detail=str(exc))
            except Exception as exc:  # a client bug must not kill the submit thread
                self.queue_errors += 1
                self.metrics["queue_errors"].inc()
                log.exception("submitting suggestion %s failed", s["_id"])
                self._outcome("error", s, detail=repr(exc))
        if client is not None:
            client.close()

    def _outcome(
        self, outcome: str, s: Mapping[str, Any], *, item_uid: str = "", detail: str = ""
    ) -> None:
        self.metrics["suggestions"].labels(outcome=outcome).inc()
        record = {
            **s,
            "suggestion_id": s["_id"],
            "outcome": outcome,
            "plan": self._describe(),
            "item_uid": item_uid,
            "detail": detail,
        }
        self.outcomes.append((outcome, record))
        self.report.record("ask", record)
        log.info("suggestion %s (frame %s): %s %s", s["_id"], s["frame"], outcome, detail)

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        """Start the submit thread (:meth:`run` does it; tests feeding :meth:`handle` call it)."""
        if self._submitter is None:
            self._submitter = threading.Thread(
                target=self._submit_loop, name="agent-submit", daemon=True
            )
            self._submitter.start()

    def finish(self, timeout: float = 10.0) -> None:
        """Let the submit thread finish what it holds, then close the report."""
        if self._submitter is not None:
            self._outbox.put(None)
            self._submitter.join(timeout)
            self._submitter = None
        self.report.close()

    def run(self, stop: threading.Event, *, ready: threading.Event | None = None) -> None:
        """Follow the stream until ``stop``; ``ready`` is set once the subscription exists."""
        from motex_stream.stream.publishers.zmq_pub import Subscriber

        self.start()
        try:
            with Subscriber(
                self.config.subscribe, self.config.models, on_invalid=self.reject
            ) as sub:
                log.info("agent %s following %s", self.config.name, self.config.subscribe)
                if ready is not None:
                    ready.set()
                while not stop.is_set():
                    item = sub.recv(0.1)
                    if item is not None:
                        self.handle(item[1])
        finally:
            self.finish()
