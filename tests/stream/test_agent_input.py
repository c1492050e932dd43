"""The closed-loop agent reads an address anyone on the beamline network can publish to, and
what it decides reaches the experiment's queue: hostile or broken input is dropped and counted,
never raises in its frame loop, and never triggers a suggestion (issue 25, review leftover).

Real parts: a raw 0MQ XPUB on 127.0.0.1 plays the attacker, the agent's own subscriber and
:meth:`AgentLoop.run` in a thread, the packaged JSON Schema. Before the fix the first message
whose ``change.frame`` was a string raised ``ValueError`` out of ``run`` and the agent stopped.
"""

from __future__ import annotations

import copy
import json
import threading
from pathlib import Path
from typing import Any

import pytest
import zmq

pytest.importorskip("bluesky_adaptive")

from motex_stream.stream.loop.agent import AgentLoop
from motex_stream.stream.loop.policy import AgentConfig
from motex_stream.stream.loop.report import ReportRun
from motex_stream.stream.publishers.zmq_pub import MAX_MESSAGE_BYTES, topic
from tests.stream.conftest import free_port

SCHEMA = Path(__file__).resolve().parents[2] / "docs" / "schema" / "contributions-v1.schema.json"


def valid_message(seq: int, change: dict[str, Any] | None = None) -> dict[str, Any]:
    """The schema's own example (what the service publishes), renumbered."""
    message = copy.deepcopy(json.loads(SCHEMA.read_text())["examples"][0])
    message["seq"] = seq
    if change is not None:
        message["change"] = change
    return message


def hostile_payloads() -> list[tuple[str, list[bytes]]]:
    """(what, multipart frames): each must be dropped and counted, none may trigger."""
    model = topic("keggin-109725")
    string_frame = valid_message(1, {"frame": "abc", "atoms_gained": [1], "atoms_lost": [],
                                     "confidence": 0.9})  # fmt: skip
    negative_atom = valid_message(2, {"frame": 2, "atoms_gained": [-7], "atoms_lost": [],
                                      "confidence": 0.9})  # fmt: skip
    extra_key = valid_message(3, {"frame": 3, "atoms_gained": [1], "atoms_lost": [],
                                  "confidence": 0.9, "run": "rm -rf /"})  # fmt: skip
    nan_text = json.dumps(valid_message(4)).replace('"mae": 0.0041', '"mae": NaN')
    return [
        ("three frames", [model, b"{}", b"{}"]),
        ("not JSON", [model, b"\x80\x81 not json"]),
        ("nesting deeper than the parser", [model, b"[" * 200_000 + b"]" * 200_000]),
        ("oversized", [model, b" " * (MAX_MESSAGE_BYTES + 1)]),
        ("change.frame a string", [model, json.dumps(string_frame).encode()]),
        ("a negative atom", [model, json.dumps(negative_atom).encode()]),
        ("an unknown key in change", [model, json.dumps(extra_key).encode()]),
        ("NaN in model_quality", [model, nan_text.encode()]),
    ]


def test_hostile_messages_are_dropped_counted_and_never_stop_the_agent() -> None:
    address = f"tcp://127.0.0.1:{free_port()}"
    context = zmq.Context()
    attacker = context.socket(zmq.XPUB)
    attacker.setsockopt(zmq.LINGER, 0)
    attacker.bind(address)
    config = AgentConfig.model_validate(
        {"subscribe": address, "policy": {"dry_run": True, "min_interval_s": 0}}
    )
    loop = AgentLoop(config, ReportRun(None, {}))
    stop, ready = threading.Event(), threading.Event()
    failure: list[BaseException] = []

    def follow() -> None:
        try:
            loop.run(stop, ready=ready)
        except BaseException as exc:  # the test reports it: the agent must not die
            failure.append(exc)

    thread = threading.Thread(target=follow, daemon=True)
    thread.start()
    try:
        assert ready.wait(10)
        assert attacker.poll(10_000), "the agent never subscribed"
        attacker.recv()  # its subscription: from here on nothing is lost to the slow joiner
        hostile = hostile_payloads()
        for _, parts in hostile:
            attacker.send_multipart(parts)
        good_change = {"frame": 5, "atoms_gained": [2], "atoms_lost": [1], "confidence": 0.95}
        attacker.send_multipart(
            [topic("keggin-109725"), json.dumps(valid_message(5, good_change)).encode()]
        )
        deadline = threading.Event()
        for _ in range(200):
            if loop.outcomes:
                break
            deadline.wait(0.05)
    finally:
        stop.set()
        thread.join(15)
        attacker.close()
        context.term()
    assert not failure, failure
    assert not thread.is_alive()
    assert loop.rejected == len(hostile), [what for what, _ in hostile]
    assert loop.metrics["rejected"]._value.get() == len(hostile)
    # only the service-shaped change triggered, and in dry run it only reported
    assert [(kind, s["frame"], s["atoms_lost"]) for kind, s in loop.outcomes] == [
        ("dry_run", 5, [1])
    ]
