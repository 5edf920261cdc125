"""The contract every tick source fulfils, and the counters it keeps for the status panel.

A source turns the outside world (an exchange socket, a simulation, a recorded file) into
:class:`~ingestion.records.Trade` records and :class:`~ingestion.records.FeedEvent` notices and
hands them to a sink. It never writes to storage itself: the engine's writer thread does that.
A new feed is a new class with ``name``, ``label``, ``stats`` and ``run``; nothing else changes.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Protocol

from ingestion.records import FeedEvent, FeedState, Trade


def now_ms() -> int:
    """Wall-clock UTC time in integer epoch milliseconds."""
    return time.time_ns() // 1_000_000


class TradeSink(Protocol):
    """Receives what a source produces; called from the source's thread only."""

    def on_trade(self, trade: Trade) -> None: ...

    def on_event(self, event: FeedEvent) -> None: ...


@dataclass
class SourceStats:
    """Counters written only by the source thread and read (racily but safely) by others.

    ``last_message_mono`` is a ``time.monotonic()`` reading, so ages survive wall-clock jumps.
    """

    state: FeedState = FeedState.IDLE
    connected_since_ms: int | None = None
    reconnects: int = 0
    messages: int = 0
    last_message_mono: float | None = None
    parse_errors: int = 0
    unknown_messages: int = 0
    last_error: str | None = None


class Source(Protocol):
    """A producer of trades. ``run`` blocks until ``stop`` is set or a finite source ends."""

    name: str  # "binance", "simulated" or "replay": selects the database file
    label: str  # shown in the UI so simulated/replayed data is never mistaken for live
    stats: SourceStats

    def run(self, sink: TradeSink, stop: threading.Event) -> None: ...
