"""Normalised, immutable market records shared by every layer: trades, feed events, feed status.

All times are UTC integer epoch milliseconds. ``ts_ms`` is the exchange's trade time (Binance
``T``), ``recv_ms`` the local wall-clock time the frame was received.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from enum import Enum

import numpy as np


def now_ms() -> int:
    """Wall-clock UTC time in integer epoch milliseconds (the one wall clock of the project)."""
    return time.time_ns() // 1_000_000


# The times market data may carry, UTC epoch ms in [TIME_MIN_MS, TIME_END_MS): 1e11 ms (1973-03-03, below which
# milliseconds read as seconds) up to 2100-01-01. Anything outside is garbage, not a trade; past 2262 pandas cannot
# even hold it (its nanoseconds overflow), so one such time let in would break every page showing the symbol.
TIME_MIN_MS = 10**11
TIME_END_MS = 4_102_444_800_000
TIME_RANGE = "1973-03-03T09:46:40Z .. 2099-12-31T23:59:59.999Z"
# A live frame's exchange time lies at most this far after it arrived here: no trade is received before it happens,
# and this leaves room for a machine clock hours behind (bars are stamped with the exchange's time, not ours). A time
# before it arrived is not refused beyond the fixed range: a late trade the bars have moved past (and every test
# that replays the shared 2025 recording through the fake stream sends one).
LIVE_SKEW_MS = 24 * 3_600_000


def time_problem(ts_ms: int, received_ms: int | None = None) -> str | None:
    """Why ``ts_ms`` (UTC epoch ms) is no time a trade can carry, or None when it is one.

    Always: inside ``[TIME_MIN_MS, TIME_END_MS)`` (:data:`TIME_RANGE`). With ``received_ms`` (when a
    live frame or reply arrived here, UTC epoch ms): at most :data:`LIVE_SKEW_MS` after it.
    """
    if not TIME_MIN_MS <= ts_ms < TIME_END_MS:
        return f"time {ts_ms} is outside {TIME_RANGE}"
    if received_ms is not None and ts_ms - received_ms > LIVE_SKEW_MS:
        return (f"time {ts_ms} ({_iso(ts_ms)}) is {(ts_ms - received_ms) / 3_600_000:,.1f} h after it was "
                f"received ({_iso(received_ms)}): more than the {LIVE_SKEW_MS // 3_600_000} h allowed")
    return None


def possible_times(ts_ms: np.ndarray, received_ms: int | None = None) -> np.ndarray:
    """:func:`time_problem`'s rule over an array of UTC epoch ms times: True where it finds none."""
    ok = (ts_ms >= TIME_MIN_MS) & (ts_ms < TIME_END_MS)
    return ok if received_ms is None else ok & (ts_ms - received_ms <= LIVE_SKEW_MS)


def _iso(ms: int) -> str:
    """``2026-12-07T06:30:00.123Z`` for an epoch ms time, or the number itself when no date holds it."""
    try:
        return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}Z"
    except (OverflowError, OSError, ValueError):
        return str(ms)


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


@dataclass(frozen=True, slots=True)
class MarkPrice:
    """A perpetual contract's mark price and funding, as of ``event_ms`` (one ``markPriceUpdate``),
    received at ``recv_ms`` (this machine's clock, UTC epoch ms: how old it is here).

    ``mark`` and ``index`` in quote currency. ``funding_rate`` is a fraction per funding interval
    (``0.0001`` = 0.01 %): at ``next_funding_ms`` (UTC epoch ms) a position pays notional × rate if
    it is long and the rate positive (longs pay shorts), receives it if short; a negative rate
    reverses the flow. Kept in memory as the latest per symbol, never stored.
    """

    symbol: str
    event_ms: int
    recv_ms: int
    mark: float
    index: float
    funding_rate: float
    next_funding_ms: int


@dataclass(frozen=True, slots=True)
class FundingRate:
    """One funding event of a perpetual contract: at ``funding_ms`` (UTC epoch ms) every open position
    exchanged notional × ``rate`` (a fraction: ``0.0001`` = 0.01 %; positive: longs pay shorts,
    negative: shorts pay longs). ``mark`` is the mark price the exchange used then (quote currency),
    or None when it does not say (older history): the notional is then the leg's own close."""

    symbol: str
    funding_ms: int
    rate: float
    mark: float | None


class EventKind(str, Enum):
    """Kinds of rows in the ``feed_events`` table."""

    CONNECTED = "connected"
    DISCONNECTED = "disconnected"
    GAP = "gap"
    ERROR = "error"
    SHUTDOWN_NOTICE = "shutdown_notice"
    ROLLOVER = "rollover"
    SUBSCRIBED = "subscribed"  # the watched symbols changed on an open connection
    BACKFILL = "backfill"
    HISTORY = "history"  # past bars loaded (klines, a simulated past)
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


class StorageState(str, Enum):
    """Whether what the feed receives is being stored, shown beside the feed state."""

    OK = "ok"  # batches commit
    RETRYING = "retrying"  # a batch waits for the database (locked, busy, server away); nothing lost yet
    FAILED = "failed"  # the writer stopped (e.g. a damaged database): nothing more is stored
    FOLLOWING = "following"  # this process does not write: it reads what another process (a recorder) stores


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
    storage_state: StorageState = StorageState.OK
    storage_detail: str = ""  # the database, and what is wrong with it when not OK
    stored: int = 0  # trades committed by this process (duplicates excluded)
    rejected: int = 0  # rows the database refused
    lost: int = 0  # items received after storage failed: never stored
    # The exchange's REST ban (HTTP 418/429 Retry-After) ends then, epoch ms: no backfill or history call before.
    rest_banned_until_ms: int | None = None
    # (up, total) exchange connections of a feed split over several (Binance's per-connection stream cap).
    connections: tuple[int, int] | None = None
    # The legs of a split feed's connections that are down after failing: no trades arrive for them meanwhile.
    silent: tuple[str, ...] = ()

    @property
    def rest_banned_until(self) -> str | None:
        """``2027-01-15 10:00:00 UTC`` while the exchange's REST ban lasts, else None."""
        if self.rest_banned_until_ms is None:
            return None
        return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.rest_banned_until_ms // 1000))


@dataclass(frozen=True, slots=True)
class TickArrays:
    """Column arrays of one symbol's ticks, time-ordered. ``ts_ms``: epoch ms (int64)."""

    trade_id: np.ndarray
    ts_ms: np.ndarray
    price: np.ndarray
    qty: np.ndarray

    @classmethod
    def empty(cls) -> TickArrays:
        return cls(np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0), np.empty(0))

    def __len__(self) -> int:
        return len(self.ts_ms)


@dataclass(frozen=True, slots=True)
class BarArrays:
    """Column arrays of one symbol's bars at one interval, by start time.

    ``start_ms``: bar open times, UTC epoch ms (int64); ``open``, ``high``, ``low``, ``close``,
    ``vwap`` in quote currency, ``volume`` in base units (float64); ``trades`` per bar (int64).
    """

    start_ms: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    trades: np.ndarray
    vwap: np.ndarray

    COLUMNS = ("open", "high", "low", "close", "volume", "trades", "vwap")

    @classmethod
    def empty(cls) -> BarArrays:
        return cls(start_ms=np.empty(0, np.int64), open=np.empty(0), high=np.empty(0), low=np.empty(0),
                   close=np.empty(0), volume=np.empty(0), trades=np.empty(0, np.int64), vwap=np.empty(0))

    def __len__(self) -> int:
        return len(self.start_ms)
