"""Normalised, immutable records that cross the source → engine boundary.

All times are UTC integer epoch milliseconds. ``ts_ms`` is the exchange's trade time (Binance
``T``), ``recv_ms`` the local wall-clock time the frame was received.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


@dataclass(frozen=True, slots=True)
class Trade:
    """One executed trade. ``price`` in quote currency, ``qty`` in base units."""

    symbol: str
    trade_id: int
    ts_ms: int
    recv_ms: int
    price: float
    qty: float
    buyer_is_maker: bool


class EventKind(str, Enum):
    """Kinds of rows in the ``feed_events`` table."""

    CONNECTED = "connected"
    DISCONNECTED = "disconnected"
    GAP = "gap"
    ERROR = "error"
    SHUTDOWN_NOTICE = "shutdown_notice"
    ROLLOVER = "rollover"
    BACKFILL = "backfill"
    STARTED = "started"
    STOPPED = "stopped"


@dataclass(frozen=True, slots=True)
class FeedEvent:
    """Something that happened to the feed: a (dis)connect, a trade-id gap, an error.

    For ``gap`` events ``detail`` is ``"first_missing=<id> count=<n>"``.
    """

    ts_ms: int
    kind: EventKind
    symbol: str | None = None
    detail: str = ""


class FeedState(str, Enum):
    """Connection state shown in the UI."""

    IDLE = "idle"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    RECONNECTING = "reconnecting"
    FINISHED = "finished"  # a replay that reached the end of its file
    STOPPED = "stopped"


@dataclass(frozen=True, slots=True)
class FeedStatus:
    """Snapshot of feed health for the status panel. Ages and rates are in seconds."""

    source: str
    state: FeedState
    symbols: tuple[str, ...]
    connected_since_ms: int | None
    reconnects: int
    messages_per_s: float
    ticks_per_s: float
    last_message_age_s: float | None
    last_tick_age_s: float | None
    trades: int
    duplicates: int
    gaps: int
    missing_trades: int
    parse_errors: int
    unknown_messages: int
    last_error: str | None
    label: str  # e.g. "LIVE Binance", "SIMULATED", "REPLAY ticks.ndjson"
