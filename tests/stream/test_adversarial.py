"""Hostile input through a real ``bluesky-0MQ-proxy`` into a running :class:`StreamService`.

An attacker on the beamline network can publish anything to the proxy. Each class of hostile
input below goes through the real proxy into a running service, interleaved with good runs: the
service stays up, every good frame is analysed, and every hostile message is counted under its
kind. (Before issue 19: a start document whose ``sample_name`` was a msgpack-numpy object array
ran the attacker's pickle, and the malformed counter stayed 0.)
"""

from __future__ import annotations

import pickle
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest
import zmq

from motex_stream.stream.journal import RunJournal
from motex_stream.stream.service import StreamService
from motex_stream.stream.sources.zmq_source import ZmqSource, msgpack_serializer
from tests.stream.conftest import R_GRID, frame_gr
from tests.stream.test_service import RecordingSink, ToyAnalyzer, analyzers

TIMEOUT = 60.0  # generous: 2 cores shared with other test runs
LIMIT = 256 * 1024  # max_message_bytes of the source under test


class PickleBomb:
    """Unpickling this writes ``path``: what an attacker would do, made harmless and visible."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[str]]:
        return (exec, (f"open({str(self.path)!r}, 'w').write('pwned')",))


def object_array_map(payload: bytes) -> dict[bytes, Any]:
    """The exact map msgpack-numpy writes for an object array (and unpickles on reading)."""
    return {b"nd": True, b"type": "|O", b"kind": b"O", b"shape": [1], b"data": payload}


@dataclass
class Live:
    """A running service on a ZmqSource behind the proxy, and a raw PUB socket into it."""

    service: StreamService
    source: ZmqSource
    sink: RecordingSink
    toy: ToyAnalyzer
    sock: zmq.Socket
    sent_bad: dict[str, int] = field(default_factory=dict)

    def send(self, name: str, doc: Any, packed: bytes | None = None) -> None:
        body = packed if packed is not None else msgpack_serializer(doc)
        self.sock.send(b"raw " + name.encode() + b" " + body)

    def hostile(self, kind: str, message: bytes) -> None:
        """Send one hostile message that must be counted under ``kind``."""
        self.sock.send(message)
        self.sent_bad[kind] = self.sent_bad.get(kind, 0) + 1

    def good_run(
        self,
        n: int,
        start_extra: dict[str, Any] | None = None,
        stop_extra: dict[str, Any] | None = None,
        uid: str | None = None,
    ) -> str:
        """Publish a whole good run of ``n`` frames; its uid."""
        uid = uid or str(uuid.uuid4())
        for name, doc in run_documents(uid, n, start_extra, stop_extra):
            self.send(name, doc)
        return uid

    def frames_of(self, uid: str) -> list[int]:
        return [c[1][1] for c in list(self.sink.calls) if c[0] == "frame" and c[1][0] == uid]

    def wait_stopped(self, uid: str, timeout: float = TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while ("stop", uid) not in list(self.sink.calls):
            assert time.monotonic() < deadline, f"run {uid} never closed"
            time.sleep(0.02)

    def wait_counted(self, timeout: float = TIMEOUT) -> dict[str, int]:
        """Wait until every hostile message sent is counted; the counts by kind."""
        deadline = time.monotonic() + timeout
        want = sum(self.sent_bad.values())
        while sum(self.source.stats.kinds().values()) < want and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.source.stats.kinds()


def run_documents(
    uid: str,
    n: int,
    start_extra: dict[str, Any] | None = None,
    stop_extra: dict[str, Any] | None = None,
) -> list[tuple[str, dict[str, Any]]]:
    """start, descriptor (r in its configuration), ``n`` events and stop of one good run."""
    desc = str(uuid.uuid4())
    now = time.time()
    docs: list[tuple[str, dict[str, Any]]] = [
        ("start", {"uid": uid, "time": now, **(start_extra or {})}),
        (
            "descriptor",
            {
                "uid": desc,
                "run_start": uid,
                "name": "primary",
                "time": now,
                "data_keys": {"pdf_gr": {"dtype": "array", "shape": [R_GRID.size]}},
                "configuration": {"det": {"data": {"pdf_r": R_GRID}}},
            },
        ),
    ]
    for i in range(n):
        docs.append(
            (
                "event",
                {
                    "uid": str(uuid.uuid4()),
                    "descriptor": desc,
                    "seq_num": i + 1,
                    "time": now + i,
                    "data": {"pdf_gr": frame_gr(i)},
                    "timestamps": {"pdf_gr": now + i},
                },
            )
        )
    stop = {"uid": str(uuid.uuid4()), "run_start": uid, "time": now + n, "exit_status": "success"}
    docs.append(("stop", {**stop, "num_events": {"primary": n}, **(stop_extra or {})}))
    return docs


def start_live(outbound: str, inbound: str, journal: RunJournal | None = None, **kw: Any) -> Live:
    source = ZmqSource(outbound, **{"max_message_bytes": LIMIT, **kw})
    sink, toy = RecordingSink(), ToyAnalyzer()
    service = StreamService(analyzers(toy), [source], [sink], journal=journal)
    service.start()
    assert source.ready.wait(TIMEOUT)
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.PUB)
    sock.setsockopt(zmq.LINGER, 1000)
    sock.setsockopt(zmq.SNDHWM, 100_000)
    sock.connect(inbound)
    live = Live(service, source, sink, toy, sock)
    # beat the 0MQ slow joiner: throwaway empty runs until one is seen whole
    deadline = time.monotonic() + TIMEOUT
    while True:
        assert time.monotonic() < deadline, "0MQ path never came up"
        uid = live.good_run(0)
        try:
            live.wait_stopped(uid, timeout=0.3)
            break
        except AssertionError:
            continue
    time.sleep(0.2)
    return live


@pytest.fixture
def live(zmq_proxy) -> Iterator[Live]:  # type: ignore[no-untyped-def]
    live = start_live(zmq_proxy.outbound, zmq_proxy.inbound)
    try:
        yield live
    finally:
        live.sock.close()
        live.service.stop()


# -- 1. code from the network ---------------------------------------------------------------


def test_pickle_in_a_start_document_is_never_run(live: Live, tmp_path: Path) -> None:
    """The issue's exact payload: ``sample_name`` is a msgpack-numpy object array holding a
    pickle that writes a file. The file is not written, the start is counted as a
    ``bad_document``, and good runs after it are analysed."""
    marker = tmp_path / "pwned"
    bomb = object_array_map(pickle.dumps(PickleBomb(marker)))
    start = {"uid": str(uuid.uuid4()), "time": time.time(), "sample_name": bomb}
    packed = msgpack.packb(start, use_bin_type=True)
    live.hostile("bad_document", b"raw start " + packed)
    uid = live.good_run(5)
    live.wait_stopped(uid)
    assert live.frames_of(uid) == [1, 2, 3, 4, 5]
    assert not marker.exists(), "the network ran code in the service"
    assert live.wait_counted() == {"bad_document": 1}


# -- every hostile class, interleaved with good runs -----------------------------------------


def hostile_messages(tmp_path: Path, bad_desc: str, seq: int = 2) -> list[tuple[str, bytes]]:
    """One message of each hostile class and the kind it must be counted under (``seq``: the
    seq_num of the one well-formed but unusable frame, fresh per call so it is no duplicate)."""
    g = frame_gr(0)

    def event(data: dict[str, Any], seq: Any = 1) -> bytes:
        doc = {"uid": "e", "descriptor": bad_desc, "seq_num": seq, "time": 1.0, "data": data}
        return b"raw event " + msgpack_serializer(doc)

    def nd(over: dict[bytes, Any]) -> dict[bytes, Any]:
        base = {b"nd": True, b"type": "<f8", b"kind": b"", b"shape": [g.size], b"data": g.tobytes()}
        return {**base, **over}

    bomb = object_array_map(pickle.dumps(PickleBomb(tmp_path / "pwned-2")))
    return [
        (
            "bad_document",
            b"raw start "
            + msgpack.packb({"uid": "x", "time": 1.0, "sample_name": bomb}, use_bin_type=True),
        ),
        ("bad_document", event({"pdf_gr": nd({b"kind": b"V", b"type": [["a", "<f8"]]})})),
        ("bad_document", event({"pdf_gr": nd({b"type": "|O8"})})),
        ("bad_document", event({"pdf_gr": nd({b"type": "<U8"})})),
        ("bad_document", event({"pdf_gr": nd({b"shape": [10**12]})})),  # lies about its size
        ("bad_document", event({"pdf_gr": nd({b"shape": [-1]})})),
        ("bad_document", event({"pdf_gr": {b"nd": False, b"type": "<f8", b"data": b"\x00"}})),
        ("bad_document", event({"pdf_gr": {b"complex": True, b"data": "1j" * 1000}})),
        ("undecodable", b"raw event " + b"\x91" * 5000 + b"\x01"),  # nested past msgpack's stack
        ("undecodable", b"raw start " + pickle.dumps({"uid": "p", "time": 0.0})),
        ("oversized", b"raw event " + b"\x00" * (LIMIT + 1)),
        ("unsplittable", b"raw nothing-else"),
        ("unknown_name", b"raw __import__ " + msgpack.packb({"uid": "x"})),
        ("bad_name", b"raw \xff\xfe " + msgpack.packb({"uid": "x"})),
        ("not_a_mapping", b"raw start " + msgpack.packb([1, 2, 3])),
        ("bad_seq_num", event({"pdf_gr": g}, seq="seven")),
        ("bad_seq_num", event({"pdf_gr": g}, seq=10**15)),
        ("bad_frame", event({"pdf_gr": np.full(R_GRID.size, np.nan)}, seq=seq)),
    ]


def test_every_hostile_class_is_counted_and_good_runs_are_all_analysed(
    live: Live, tmp_path: Path
) -> None:
    bad_run, bad_desc = str(uuid.uuid4()), str(uuid.uuid4())
    head = run_documents(bad_run, 0)[:2]
    live.send("start", head[0][1])
    live.send("descriptor", {**head[1][1], "uid": bad_desc})
    seqs = iter(range(2, 1000))
    n_classes = len(hostile_messages(tmp_path, bad_desc))
    good: list[str] = []
    k = 0
    for _ in range(3):
        uid = str(uuid.uuid4())
        for name, doc in run_documents(uid, 4):
            live.send(name, doc)
            kind, message = hostile_messages(tmp_path, bad_desc, next(seqs))[k % n_classes]
            live.hostile(kind, message)
            k += 1
        good.append(uid)
    for kind, message in hostile_messages(tmp_path, bad_desc, next(seqs)):  # every class
        live.hostile(kind, message)
    for uid in good:
        live.wait_stopped(uid)
        assert live.frames_of(uid) == [1, 2, 3, 4], f"a good frame of {uid} was lost"
    assert live.wait_counted() == live.sent_bad
    assert not (tmp_path / "pwned-2").exists()
    assert live.service.summary()["failed"] == 0
    assert all(t.is_alive() for t in live.service._threads), "a service thread died"


# -- 2. resume state is ours, never the network's --------------------------------------------


def test_a_start_document_cannot_claim_frames_were_published(live: Live) -> None:
    """``motex_resumed_after`` in a start from the network changes nothing. (Before: "abc"
    crashed the receiver, which restarted the source and lost the run's start; 3 silently
    dropped seq 1..3 as duplicates.)"""
    claims: list[Any] = ["abc", 3, -1, 2**64 - 1, [1]]
    uids = [live.good_run(5, start_extra={"motex_resumed_after": c}) for c in claims]
    for claimed, uid in zip(claims, uids, strict=True):
        live.wait_stopped(uid)
        assert live.frames_of(uid) == [1, 2, 3, 4, 5], f"claimed {claimed!r}"
        assert ("start", uid) in live.sink.calls, f"the run's start was lost ({claimed!r})"
    summary = live.service.summary()
    assert summary["duplicates"] == 0 and summary["processed"] == 5 * len(claims)
    assert live.source.stats.kinds() == {}


# -- 3. descriptor floods ---------------------------------------------------------------------


@pytest.fixture
def live_journal(zmq_proxy, tmp_path: Path) -> Iterator[Live]:  # type: ignore[no-untyped-def]
    journal = RunJournal(tmp_path / "journal")
    live = start_live(zmq_proxy.outbound, zmq_proxy.inbound, journal, max_message_bytes=2**24)
    try:
        yield live
    finally:
        live.sock.close()
        live.service.stop()


def _tree_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


@pytest.mark.slow
def test_descriptor_flood_neither_stalls_reception_nor_grows_without_bound(
    live_journal: Live, tmp_path: Path
) -> None:
    """60 descriptors of a 100k-point r grid for one started run and 60 for runs never started,
    then a good run. (Before: each was journaled as JSON text with fsync on the receive thread
    and every one was kept in memory.) The good run's frames arrive promptly, the journal stays
    small, the assembler keeps a bounded number, and every dropped descriptor is counted."""
    live = live_journal
    assembler = live.source._assembler
    big_r = np.linspace(0.01, 100.0, 100_000)
    attacker = str(uuid.uuid4())
    live.send("start", {"uid": attacker, "time": time.time()})
    n_flood = 60

    def descriptor(run: str) -> dict[str, Any]:
        return {
            "uid": str(uuid.uuid4()),
            "run_start": run,
            "name": "primary",
            "time": time.time(),
            "data_keys": {"pdf_gr": {"dtype": "array", "shape": [big_r.size]}},
            "configuration": {"det": {"data": {"pdf_r": big_r}}},
        }

    flood_started = time.monotonic()
    for i in range(n_flood):
        live.send("descriptor", descriptor(attacker))
        live.send("descriptor", descriptor(str(uuid.uuid4())))  # a run never started
        if i % 10 == 9:
            time.sleep(0.05)  # let the proxy keep up (its own HWM would drop, uncounted by us)
    uid = live.good_run(5)
    live.wait_stopped(uid)
    took = time.monotonic() - flood_started
    assert live.frames_of(uid) == [1, 2, 3, 4, 5]
    kinds = live.wait_counted()
    live.service.journal.flush()  # type: ignore[union-attr]
    journal_bytes = _tree_bytes(tmp_path / "journal")
    print(f"flood + good run: {took:.1f} s, journal {journal_bytes / 1e6:.1f} MB, kinds {kinds}")
    per_run = assembler.max_descriptors_per_run
    assert kinds.get("too_many_descriptors", 0) == n_flood - per_run
    assert kinds.get("orphan_descriptor", 0) == n_flood
    assert len(assembler._descriptors) <= assembler.max_descriptors
    # what stays: per_run grids of the attacker's run, kept as float64 (0.8 MB each)
    assert journal_bytes < (per_run + 2) * big_r.nbytes * 1.1
    assert took < 30


# -- 5. stops that must close their run; runs that must not be analysed twice ---------------


def test_a_stop_with_garbage_num_events_still_closes_its_run(live: Live) -> None:
    """(Before: ``int("five")`` raised, the stop was dropped as a bad document and the run
    never closed: no derived-run stop, its journal entry kept for ever.)"""
    garbage: list[Any] = [{"primary": "five"}, {"primary": 2.5}, "all", [5], {"primary": -1}]
    uids = [
        live.good_run(3, stop_extra={"num_events": n, "time": "noon", "exit_status": 7})
        for n in garbage
    ]
    for num_events, uid in zip(garbage, uids, strict=True):
        live.wait_stopped(uid)
        assert live.frames_of(uid) == [1, 2, 3], f"num_events {num_events!r}"
    assert live.wait_counted() == {"bad_num_events": len(garbage)}
    assert live.source.stats.gaps == 0


def test_a_run_re_sent_after_its_stop_is_not_analysed_again(live: Live) -> None:
    """A raw run replayed after its stop (by a transport, or an attacker): its start,
    descriptor and stop are refused (``rerun``), its events are duplicates; nothing is
    analysed or published twice. (Before: all five frames were analysed and published
    again, under the same uids.)"""
    uid = str(uuid.uuid4())
    docs = run_documents(uid, 5)
    for name, doc in docs:
        live.send(name, doc)
    live.wait_stopped(uid)
    for name, doc in docs:  # the very same documents again
        live.send(name, doc)
    after = live.good_run(2)  # a fresh run afterwards is analysed as usual
    live.wait_stopped(after)
    assert live.frames_of(after) == [1, 2]
    assert live.frames_of(uid) == [1, 2, 3, 4, 5]
    assert [c for c in live.sink.calls if c[1] == uid] == [("start", uid), ("stop", uid)]
    assert live.wait_counted() == {"rerun": 3}
    assert live.source.stats.duplicates == 5
