"""``motex-stream watch ADDR``: a terminal view of the contributions stream.

Why a terminal view: at the beamline the first question is "is the analysis alive and do the
atom contributions settle?", often over SSH where no browser is at hand. Per atom it shows the
latest contribution value and a sparkline of its recent history, plus the best motif and the
frame rate. Rendering is a pure function of :class:`WatchState` (``render``) so it is testable
without a terminal; the loop uses ``rich.live`` on a TTY and periodic plain prints otherwise.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from motex_stream.stream.live.analyzer_protocol import KeepSetChange
from motex_stream.stream.messages import from_message
from motex_stream.stream.publishers.zmq_pub import subscribe

SPARK = "▁▂▃▄▅▆▇█"


def sparkline(values: Iterable[float | None], width: int | None = None) -> str:
    """Unicode sparkline scaled to the values' own min..max; missing values are blanks.

    Per-atom scaling shows the *trend* of each atom (is it settling?); the absolute value is
    printed beside it.
    """
    vals = list(values)
    if width is not None:
        vals = vals[-width:]
    finite = [v for v in vals if v is not None and math.isfinite(v)]
    if not finite:
        return " " * len(vals)
    lo, hi = min(finite), max(finite)
    span = hi - lo
    out = []
    for v in vals:
        if v is None or not math.isfinite(v):
            out.append(" ")
        elif span <= 0:
            out.append(SPARK[len(SPARK) // 2 - 1])
        else:
            out.append(SPARK[min(len(SPARK) - 1, int((v - lo) / span * len(SPARK)))])
    return "".join(out)


@dataclass
class AtomTrace:
    element: str
    values: deque[float | None]
    label: str = ""  # latest keep / remove / uncertain (empty: the message had none)


@dataclass
class WatchState:
    """Everything the view shows, updated message by message."""

    history: int = 40
    model: str = ""
    source: str = ""
    seq: int = 0
    messages: int = 0
    best_mask: list[int] = field(default_factory=list)
    best_rwp: float | None = None
    mae: float | None = None
    latency: float | None = None
    atoms: dict[int, AtomTrace] = field(default_factory=dict)
    arrivals: deque[float] = field(default_factory=lambda: deque(maxlen=50))
    #: the latest structure change the service reported, and the seq of its message: a
    #: change is published once, so the view keeps showing it until the next one
    change: KeepSetChange | None = None
    change_reported: int = 0

    def update(self, message: Mapping[str, Any], now: float | None = None) -> None:
        """Fold one v1 message into the state (a new run keeps the atom history: same model)."""
        published = from_message(message)
        result = published.result
        self.messages += 1
        self.model, self.source, self.seq = result.model, published.run_uid, published.seq
        self.best_mask = result.best.mask.tolist()
        self.best_rwp = result.best.rwp
        self.mae = result.model_quality.mae
        rec, pub = published.received_at, published.published_at
        self.latency = pub - rec if rec is not None else None
        atoms = result.contributions
        for k, atom in enumerate(atoms.atom.tolist()):
            trace = self.atoms.get(atom)
            if trace is None:
                trace = self.atoms[atom] = AtomTrace(atoms.element[k], deque(maxlen=self.history))
            trace.values.append(float(atoms.value[k]))
            trace.label = "" if atoms.label is None else atoms.label[k]
        if result.change is not None:
            self.change, self.change_reported = result.change, self.seq
        self.arrivals.append(time.monotonic() if now is None else now)

    @property
    def frame_rate(self) -> float | None:
        """Messages per second over the recent arrivals (None until two have arrived)."""
        if len(self.arrivals) < 2:
            return None
        span = self.arrivals[-1] - self.arrivals[0]
        return (len(self.arrivals) - 1) / span if span > 0 else None


def _fmt(value: float | None, spec: str) -> str:
    return "—" if value is None or not math.isfinite(value) else format(value, spec)


def _change_line(state: WatchState) -> str:
    """The latest reported structure change, in one line."""
    c = state.change
    if c is None:
        return "structure change: none reported"

    def names(atoms: Sequence[int]) -> str:
        found = [f"{state.atoms[a].element}{a}" if a in state.atoms else f"#{a}" for a in atoms]
        return " ".join(found) or "none"

    return (
        f"structure change at frame {c.frame} (reported with frame "
        f"{state.change_reported}): gained {names(c.atoms_gained)}; lost "
        f"{names(c.atoms_lost)}; confidence {_fmt(c.confidence, '.3f')}"
    )


def render(state: WatchState) -> str:
    """The whole view as plain text (rich shows the same string)."""
    if not state.messages:
        return "motex-stream watch: waiting for messages…"
    rate = state.frame_rate
    kept = sum(state.best_mask)
    lines = [
        f"model {state.model}  run {state.source}  frame {state.seq}  "
        f"{_fmt(rate, '.2f')} frames/s  ({state.messages} received)",
        f"best motif: Rwp {_fmt(state.best_rwp, '.4f')}  kept {kept}/{len(state.best_mask)}  "
        f"mask {''.join(str(b) for b in state.best_mask)}",
        f"model MAE {_fmt(state.mae, '.4g')}  latency {_fmt(state.latency, '.2f')} s",
        _change_line(state),
        "",
        f"{'atom':>5} {'el':<3} {'value':>10} {'label':<9}  history (oldest → newest)",
    ]
    for atom in sorted(state.atoms):
        trace = state.atoms[atom]
        latest = trace.values[-1] if trace.values else None
        lines.append(
            f"{atom:>5} {trace.element:<3} {_fmt(latest, '+.5f'):>10} {trace.label or '—':<9}  "
            f"{sparkline(trace.values)}"
        )
    return "\n".join(lines)


def watch(
    address: str,
    topics: Sequence[str] = (),
    *,
    history: int = 40,
    max_messages: int | None = None,
    once: bool = False,
    timeout: float | None = None,
    refresh: float = 1.0,
    out: TextIO | None = None,
) -> WatchState:
    """Show the stream until interrupted, ``max_messages``, or ``timeout`` s without messages.

    ``once``: wait for one message, print the view once, return (scripts and tests).
    """
    out = out or sys.stdout
    state = WatchState(history=history)
    limit = 1 if once else max_messages
    live_cm = _live(out) if (not once and out.isatty()) else None
    last_print = 0.0
    live = live_cm.__enter__() if live_cm is not None else None
    try:
        for _topic, message in subscribe(address, topics, timeout=timeout, max_messages=limit):
            state.update(message)
            if live is not None:
                live.update(_rich_text(render(state)))
            elif not once and time.monotonic() - last_print >= refresh:
                print(render(state) + "\n", file=out, flush=True)
                last_print = time.monotonic()
    except KeyboardInterrupt:
        pass
    finally:
        if live_cm is not None:
            live_cm.__exit__(None, None, None)
    if live is None:
        print(render(state), file=out, flush=True)
    return state


def _live(out: TextIO) -> Any:
    from rich.console import Console
    from rich.live import Live

    return Live(_rich_text("waiting for messages…"), console=Console(file=out), auto_refresh=True)


def _rich_text(text: str) -> Any:
    from rich.text import Text

    return Text(text)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``watch`` options, for the main CLI's subparser."""
    parser.add_argument(
        "address", metavar="ADDR", help="ZMQ PUB address, e.g. tcp://127.0.0.1:5578"
    )
    parser.add_argument("--topic", action="append", default=[], help="model name(s) to show")
    parser.add_argument("--history", type=int, default=40, help="sparkline length (frames)")
    parser.add_argument("--once", action="store_true", help="print one view and exit")
    parser.add_argument("--max-messages", type=int, default=None)
    parser.add_argument("--timeout", type=float, default=None, help="exit after N s of silence")


def run_from_args(args: argparse.Namespace) -> int:
    from motex_stream.stream.config.addresses import zmq_endpoint

    try:
        zmq_endpoint(args.address)
    except ValueError as exc:
        raise ValueError(f"ADDR: {exc}") from None
    for flag, value in (("--history", args.history), ("--max-messages", args.max_messages)):
        if value is not None and value < 1:
            raise ValueError(f"{flag} must be at least 1, got {value}")
    if args.timeout is not None and not args.timeout > 0:
        raise ValueError(f"--timeout must be positive seconds, got {args.timeout}")
    state = watch(
        args.address,
        args.topic,
        history=args.history,
        max_messages=args.max_messages,
        once=args.once,
        timeout=args.timeout,
    )
    return 0 if state.messages or not (args.once or args.max_messages) else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: ``motex-stream watch ADDR`` (or
    ``python -m motex_stream.stream.commands.watch``)."""
    parser = argparse.ArgumentParser(prog="motex-stream watch", description=__doc__)
    add_arguments(parser)
    return run_from_args(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
