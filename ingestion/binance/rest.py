"""Binance REST client (spot or USDⓈ-M futures: a :class:`~ingestion.binance.venue.Venue`): the calls
the engine makes besides the stream, under one weight budget.

Spot: ``GET /api/v3/historicalTrades?symbol=…&fromId=…&limit=1000`` re-fetches trades the stream
missed (gap backfill); ``GET /api/v3/klines?symbol=…&interval=…&startTime=…&endTime=…&limit=1000``
loads the bars of the past (history at open). Futures: ``GET /fapi/v1/trades?symbol=…&limit=1000``
(the latest market trades: what backfill can get without an API key, see
:meth:`BinanceRest.historical_trades`), ``GET /fapi/v1/klines`` (``limit=1500``) and
``GET /fapi/v1/fundingRate?symbol=…&startTime=…&endTime=…&limit=1000`` (funding history, see
:meth:`BinanceRest.funding_rates`). Every call is made from a background thread, never the stream's.

One client is shared by everything that calls Binance REST in a process (the gap backfill and
the history loader), so they share:

- the **weight budget**: Binance allows 6,000 request weight a minute per IP and reports what is
  used in ``X-MBX-USED-WEIGHT-1M``; we keep under ``weight_budget`` (default 1,200, a fifth) by
  pausing every caller until the next minute when the next call would cross it. Bulk calls (the
  history loader's klines) pause already at :data:`BULK_SHARE` of it, so what is left of a minute's
  budget is always there for the gap backfill of the live feed;
- the **ban**: a ``429`` (rate limited) or ``418`` (IP banned) reply's ``Retry-After`` — delay
  seconds or an HTTP-date (RFC 9110 §10.2.3) — is honoured in full, whatever its length, and no
  caller sends anything before it ends (:attr:`BinanceRest.banned_until_ms` says until when). A
  missing or unreadable ``Retry-After`` counts as :data:`RETRY_AFTER_UNKNOWN_S`;
- the **funding-history window**: ``/fapi/v1/fundingRate`` weighs 0 but "shares 500/5min/IP rate
  limit with GET /fapi/v1/fundingInfo" (Binance's documentation), so its calls are counted apart:
  at most :data:`FUNDING_REQUESTS` in any :data:`FUNDING_WINDOW_S` seconds (a fifth, as with the
  weight budget), and the ban above applies to them too.

A 5xx, a network error or a missed deadline is retried after the client's own backoff
(:data:`REST_RETRY`: full jitter, doubling from 2 s to at most 10 s, :data:`ATTEMPTS` attempts in
all); a ban's wait is the server's and comes on top, not from that schedule.

Requests are not serialised otherwise: the backfill thread and the history thread each make their
own calls, so a slow klines page never delays a ``historicalTrades`` call, and history loading can
never spend the weight a backfill needs. Every request has an
overall deadline (:data:`REQUEST_DEADLINE_S`: connect, send and the whole reply; a reply that
drips is abandoned at it) and a size bound (:data:`MAX_REPLY_BYTES`: refused by its
``Content-Length`` before reading, or as soon as the bytes read cross it). No proxy is used and no
redirect is followed.
"""

from __future__ import annotations

import dataclasses
import email.utils
import http.client
import json
import logging
import math
import random
import re
import threading
import time
import urllib.parse
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from ingestion.binance.parse import MAX_ID, finite_decimal
from ingestion.binance.venue import SPOT, Venue
from ingestion.http import connect as deadline_connect
from ingestion.source import excerpt
from records import BarArrays, EventKind, FeedEvent, FundingRate, Trade, now_ms, time_problem
from records.retry import Backoff, RetryPolicy

log = logging.getLogger(__name__)

PAGE_LIMIT = 1000  # Binance's maximum page size for trades (both venues); klines: Venue.klines_page
KLINE_INTERVALS = {1_000: "1s", 60_000: "1m", 300_000: "5m"}
# Binance's data archives switched to microseconds in 2025; a time this large cannot be in ms.
MICROSECONDS_FROM = 10**14
ATTEMPTS = 5
# Waits after a 5xx or a network error before the next attempt: full jitter below 2, 4, 8, 10 s
# (12 s on average over the 4 retries of a call). Jitter keeps the backfill and the history
# loader, and every recorder behind one IP, from coming back to a struggling server in step.
REST_RETRY = RetryPolicy(base_s=2.0, cap_s=10.0, max_attempts=ATTEMPTS)
# A 418/429 without a usable Retry-After: Binance bans last 2 minutes to 3 days, so a minute is the
# least we owe it; a longer wait only delays recovery, a shorter one risks a longer ban.
RETRY_AFTER_UNKNOWN_S = 60.0
# Longest wait a Retry-After can ask for that we can still represent (~31 years: "until further notice").
MAX_BAN_S = 1e9
# Share of the weight budget bulk calls (history klines) may use in a minute: the rest is kept for
# the gap backfill (historicalTrades, weight 25 a page), so a long history load never stalls it.
BULK_SHARE = 0.7
BAN_POLL_S = 1.0  # a caller waiting out a ban or a weight pause looks at the clock this often
REQUEST_DEADLINE_S = 15.0  # one request: connect + send + the whole reply, seconds
SOCKET_TIMEOUT_S = 10.0  # any single socket wait within that deadline, seconds
# A real page (1,000 klines or trades) is 150-190 kB; anything ten times that is not a page, and a
# 2 MB body of the most object-dense JSON parses to ~40 MB of Python objects at worst.
MAX_REPLY_BYTES = 2 * 1024 * 1024
READ_CHUNK = 64 * 1024
FUNDING_PAGE = 1_000  # Binance's maximum page of funding-rate history (its default is 100)
# /fapi/v1/fundingRate: "share 500/5min/IP rate limit with GET /fapi/v1/fundingInfo". We keep to a
# fifth of it, as with the weight budget, so other processes behind the IP have the rest.
FUNDING_WINDOW_S = 300.0
FUNDING_REQUESTS = 100


class RestError(RuntimeError):
    """A REST reply we cannot use (bad status, bad JSON, wrong shape); the message names the URL."""


def parse_historical_trade(symbol: str, row: dict, recv_ms: int) -> Trade:
    """One ``historicalTrades`` row, e.g.::

        {"id":28457,"price":"4.00000100","qty":"12.00000000","quoteQty":"48.000012",
         "time":1499865549590,"isBuyerMaker":true,"isBestMatch":true}

    ``time`` must be a time a trade can carry, at most a day after ``recv_ms`` (when the reply
    arrived, :func:`records.time_problem`): an absurd one refuses the row (and with it the page).
    """
    try:
        trade = Trade(symbol, int(row["id"]), int(row["time"]), recv_ms, float(row["price"]), float(row["qty"]),
                      bool(row["isBuyerMaker"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise RestError(f"malformed historicalTrades row {excerpt(row, 200)}: {exc}") from None
    if not trade.price > 0:
        raise RestError(f"historicalTrades row with a non-positive price: {excerpt(row, 200)}")
    if not (0 <= trade.trade_id <= MAX_ID and 0 < trade.ts_ms <= MAX_ID):
        raise RestError(f"historicalTrades row with an out-of-range id or time: {excerpt(row, 200)}")
    problem = time_problem(trade.ts_ms, recv_ms)  # a past trade may be old, never from years ahead
    if problem is not None:
        raise RestError(f"historicalTrades row with an impossible {problem}: {excerpt(row, 200)}")
    return trade


def kline_ms(value: object, what: str, *, last: bool = False) -> int:
    """A kline time in epoch ms: milliseconds as they are, microseconds converted (RestError otherwise).

    ``last``: the time is the bar's last instant (a close time): ``…59999`` in ms, ``…59999999`` in µs.
    """
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise RestError(f"{what} {excerpt(value)} is not an epoch time")
    if value >= MICROSECONDS_FROM:
        whole = value + 1 if last else value
        if whole % 1_000:
            raise RestError(f"{what} {value} is in microseconds and not on a whole millisecond")
        return whole // 1_000 - (1 if last else 0)
    return value


def _utc(ms: int) -> str:
    """``2026-12-06T21:00:00Z`` for an epoch ms time, or the number itself if out of datetime's range."""
    try:
        return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, OSError, ValueError):
        return str(ms)


def json_list(rows: object, endpoint: str, symbol: str = "", limit: int | None = None) -> list[Any]:
    """``rows`` (a decoded reply of ``endpoint``) if it is a JSON list of at most ``limit`` rows (the
    page size asked for; None: any length), else :class:`RestError` naming the endpoint: the whole page
    is refused."""
    if not isinstance(rows, list):
        raise RestError(f"expected a JSON list from {endpoint}, got {type(rows).__name__}")
    if limit is not None and len(rows) > limit:
        raise RestError(f"{symbol} {endpoint} page has {len(rows)} rows, more than the {limit} asked for; "
                        f"page refused")
    return rows


def parse_klines(rows: object, symbol: str, interval_ms: int, now: int, *, start_ms: int, end_ms: int) -> BarArrays:
    """Closed bars from a ``klines`` reply asked for ``[start_ms, end_ms)``; the kline still open
    (``closeTime >= now``) is left out.

    Each row is ``[openTime, open, high, low, close, volume, closeTime, quoteVolume, trades,
    takerBuyBase, takerBuyQuote, ignore]``, times in ms (or µs, converted), prices and volumes as
    decimal strings, e.g.::

        [1499040000000, "0.01634790", "0.80000000", "0.01575800", "0.01577100", "148976.11427815",
         1499644799999, "2434.19055334", 308, "1756.87402397", "28.46694368", "0"]

    Open times must lie in ``[start_ms, end_ms)`` and rise strictly: a bar outside the range asked
    for would replace a stored one, and a duplicate would be stored last-wins. Raises
    :class:`RestError` naming the row (index and open time) for anything wrong, so no partial page
    is stored.
    """
    rows = json_list(rows, "klines")
    starts, values, trades = [], [], []
    previous: int | None = None
    for index, row in enumerate(rows):
        where = f"{symbol} {KLINE_INTERVALS[interval_ms]} kline #{index}"
        if not isinstance(row, list) or len(row) < 9:
            raise RestError(f"{where} is not a 12-field row: {excerpt(row, 80)}")
        open_ms, close_ms = kline_ms(row[0], f"{where}: open time"), kline_ms(row[6], f"{where}: close time", last=True)
        if not start_ms <= open_ms < end_ms:
            raise RestError(f"{where} opens at {open_ms} ({_utc(open_ms)}), outside the range asked for "
                            f"[{start_ms}, {end_ms}) ({_utc(start_ms)} to {_utc(end_ms)}); page refused")
        if previous is not None and open_ms <= previous:
            kind = "a duplicate of" if open_ms == previous else "before"
            raise RestError(f"{where} opens at {open_ms} ({_utc(open_ms)}), {kind} kline #{index - 1} "
                            f"({previous}): open times must rise; page refused")
        previous = open_ms
        if open_ms % interval_ms or close_ms != open_ms + interval_ms - 1:
            raise RestError(f"{where}: open time {open_ms} / close time {close_ms} do not span one "
                            f"{KLINE_INTERVALS[interval_ms]} bar")
        try:
            o, h, lo, c, volume, quote = (float(row[i]) for i in (1, 2, 3, 4, 5, 7))
        except (TypeError, ValueError):
            raise RestError(f"{where} has a non-numeric price or volume: {excerpt(row, 80)}") from None
        count = row[8]
        if not all(math.isfinite(v) for v in (o, h, lo, c, volume, quote)) or min(o, h, lo, c) <= 0 \
                or volume < 0 or not lo <= min(o, c) <= max(o, c) <= h:
            raise RestError(f"{where} is not a valid OHLCV bar: {excerpt(row, 80)}")
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise RestError(f"{where} has an invalid trade count {excerpt(count)}")
        if close_ms >= now:
            continue  # still open: never stored as closed
        starts.append(open_ms)
        values.append((o, h, lo, c, volume, quote / volume if volume > 0 else c))
        trades.append(count)
    if not starts:
        return BarArrays.empty()
    columns = np.array(values, dtype=np.float64).T
    return BarArrays(np.array(starts, dtype=np.int64), columns[0], columns[1], columns[2], columns[3], columns[4],
                     np.array(trades, dtype=np.int64), columns[5])


def parse_historical_trades(rows: object, symbol: str, from_id: int, limit: int, recv_ms: int, *,
                            recent: bool = False) -> list[Trade]:
    """The trades of a ``historicalTrades`` reply asked for ``fromId=from_id&limit=limit``.

    At most ``limit`` rows, ids from ``from_id`` on and strictly rising; otherwise the whole page is
    refused (:class:`RestError` naming the row), so nothing of it is stored. ``recent``: the reply
    is the latest ``limit`` trades (futures ``/fapi/v1/trades``, same row format), so rows before
    ``from_id`` are expected and left out rather than refused.
    """
    rows = json_list(rows, "historicalTrades", symbol, limit)
    trades: list[Trade] = []
    for index, row in enumerate(rows):
        trade = parse_historical_trade(symbol, row, recv_ms)
        if recent:
            if trades and trade.trade_id <= trades[-1].trade_id:
                raise RestError(f"{symbol} trades row #{index} has id {trade.trade_id}, not after row "
                                f"#{index - 1} ({trades[-1].trade_id}): ids must rise; page refused")
            trades.append(trade)
            continue
        if trade.trade_id < from_id:
            raise RestError(f"{symbol} historicalTrades row #{index} has id {trade.trade_id}, before the "
                            f"fromId {from_id} asked for; page refused")
        if trades and trade.trade_id <= trades[-1].trade_id:
            raise RestError(f"{symbol} historicalTrades row #{index} has id {trade.trade_id}, not after row "
                            f"#{index - 1} ({trades[-1].trade_id}): ids must rise; page refused")
        trades.append(trade)
    return [t for t in trades if t.trade_id >= from_id] if recent else trades


@dataclass(frozen=True, slots=True)
class FundingPage:
    """What a ``fundingRate`` reply held: the well-formed events (times rising), the rows refused
    (each ``(fundingTime or None when unreadable, message naming the row)``) and the latest
    ``fundingTime`` listed within the range asked for (where the next page starts; None when none)."""

    rates: tuple[FundingRate, ...]
    problems: tuple[tuple[int | None, str], ...]
    last_ms: int | None
    rows: int


def parse_funding_rates(rows: object, symbol: str, *, start_ms: int, end_ms: int, limit: int) -> FundingPage:
    """The events of a ``GET /fapi/v1/fundingRate?symbol=…&startTime=start_ms&endTime=end_ms&limit=…``
    reply (both times inclusive, as Binance documents them), rising, e.g.::

        [{"symbol":"BTCUSDT","fundingRate":"-0.03750000","fundingTime":1570608000000,
          "markPrice":"34287.54619963"}]

    ``fundingRate`` is a decimal fraction per funding interval (positive: longs pay shorts),
    ``fundingTime`` UTC epoch ms, ``markPrice`` the mark price it was charged at (older rows have
    ``""`` or none: kept as None). Rows are taken in time order, however listed; an event listed
    twice alike (time, rate and mark) is taken once. A row that is not such an object, names another
    symbol, has a time outside the range asked for or that of another row that differs, a rate that is not a finite
    decimal string below 100 % in size, or a mark that is not a positive decimal string, is refused
    alone, named in :attr:`FundingPage.problems`, and not stored. A reply that is not a list, or has
    more rows than ``limit``, is refused whole (:class:`RestError`).
    """
    rows = json_list(rows, "fundingRate", symbol, limit)
    rates: list[FundingRate] = []
    problems: list[tuple[int | None, str]] = []
    times = [_funding_time(row) for row in rows]
    # Each row is an event of its own: taken in time order, however listed (refused out of order, one row
    # stopped the span known before it at every look). Rows of one time stay in the reply's order.
    for index in sorted(range(len(rows)), key=lambda i: (times[i] or 0, i)):
        row, when = rows[index], times[index]
        where = f"{symbol} fundingRate row #{index}"
        if rates and when == rates[-1].funding_ms and _same_event(row, rates[-1]):
            continue  # the event before listed again, alike: nothing new (a refetched event is stored once too)
        problem = _funding_problem(row, symbol, when, start_ms, end_ms, rates[-1].funding_ms if rates else None)
        if problem is not None:
            problems.append((when, f"{where} {problem}: {excerpt(row, 160)}; not stored"))
            continue
        assert isinstance(row, dict) and when is not None  # _funding_problem checked both
        mark = row.get("markPrice")
        rates.append(FundingRate(symbol, when, float(row["fundingRate"]), None if mark in (None, "") else float(mark)))
    last_ms = max((when for when in times if when is not None and start_ms <= when <= end_ms), default=None)
    return FundingPage(tuple(rates), tuple(problems), last_ms, len(rows))


def _funding_time(row: object) -> int | None:
    """A ``fundingRate`` row's ``fundingTime`` (UTC epoch ms), or None when it has no readable one."""
    when = row.get("fundingTime") if isinstance(row, dict) else None
    return when if type(when) is int and 0 < when <= MAX_ID else None


def _same_event(row: object, event: FundingRate) -> bool:
    """Whether ``row`` (a ``fundingRate`` row at ``event``'s time) lists ``event`` again: the same symbol,
    rate and mark (both without a mark alike)."""
    if not isinstance(row, dict) or row.get("symbol") != event.symbol:
        return False
    mark = row.get("markPrice")
    return finite_decimal(row.get("fundingRate")) == event.rate and (
        event.mark is None if mark in (None, "") else finite_decimal(mark) == event.mark)


def _funding_problem(row: object, symbol: str, when: int | None, start_ms: int, end_ms: int,
                     previous: int | None) -> str | None:
    """What is wrong with one ``fundingRate`` row (see :func:`parse_funding_rates`), or None."""
    if not isinstance(row, dict):
        return "is not a JSON object"
    if row.get("symbol") != symbol:
        return f"is for symbol {excerpt(row.get('symbol'))}, not {symbol}"
    if when is None:
        return f"has an invalid fundingTime {excerpt(row.get('fundingTime'))}"
    if not start_ms <= when <= end_ms:
        return (f"has fundingTime {when} ({_utc(when)}), outside the range asked for "
                f"({_utc(start_ms)} to {_utc(end_ms)})")
    if previous is not None and when <= previous:  # rows are taken in time order: the same time, other values
        return f"has fundingTime {when} ({_utc(when)}) of another row, with another rate or mark"
    rate = finite_decimal(row.get("fundingRate"))
    if rate is None or abs(rate) >= 1:
        return f"has an invalid fundingRate {excerpt(row.get('fundingRate'))}"
    mark = row.get("markPrice")
    if mark not in (None, ""):
        value = finite_decimal(mark)
        if value is None or value <= 0:
            return f"has an invalid markPrice {excerpt(mark)}"
    return None


class RequestWindow:
    """At most ``limit`` requests in any ``window_s`` seconds on ``clock`` (a sliding window), thread-safe."""

    def __init__(self, limit: int, window_s: float) -> None:
        if not (limit >= 1 and window_s > 0):
            raise ValueError(f"need limit >= 1 and window_s > 0, got {limit}, {window_s}")
        self.limit = limit
        self.window_s = window_s
        self._sent: deque[float] = deque()
        self._lock = threading.Lock()

    def take(self, clock: Callable[[], float], stop: threading.Event, poll_s: float) -> bool:
        """Wait until one more request fits the window and count it sent now; True if stopped meanwhile."""
        while True:
            with self._lock:
                now = clock()
                while self._sent and self._sent[0] <= now - self.window_s:
                    self._sent.popleft()
                if len(self._sent) < self.limit:
                    self._sent.append(now)
                    return False
                left = self._sent[0] + self.window_s - now
            if stop.wait(min(left, poll_s)):
                return True


def retry_after_s(header: str | None, now_s: float) -> float:
    """Seconds to wait from a ``Retry-After`` header at ``now_s`` (epoch seconds), RFC 9110 §10.2.3.

    Delay seconds (``7200``) or an HTTP-date (``Sun, 06 Dec 2026 23:00:00 GMT``), honoured in full
    (a date already past: 0); at most :data:`MAX_BAN_S`. Missing or unreadable (``-5``, ``soon``):
    :data:`RETRY_AFTER_UNKNOWN_S`.
    """
    if header is None:
        return RETRY_AFTER_UNKNOWN_S
    text = header.strip()
    if re.fullmatch(r"[0-9]+", text):  # ASCII digits only: int() would also take "١٢" or "1_0"
        return MAX_BAN_S if len(text) > 10 else min(float(int(text)), MAX_BAN_S)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return RETRY_AFTER_UNKNOWN_S
    if when.tzinfo is None:  # "-0000" parses naive; HTTP-dates are GMT
        when = when.replace(tzinfo=UTC)
    return min(max(when.timestamp() - now_s, 0.0), MAX_BAN_S)


class ReplyTooLarge(RestError):
    """A reply larger than the client's size bound (see :data:`MAX_REPLY_BYTES`)."""


class BinanceRest:
    """Thread-safe Binance REST client with a shared weight budget and ban (see the module docstring).

    ``emit`` receives a feed event for every rate-limit wait, so the feed tab shows why history
    or a backfill is slow. ``last_error`` keeps the latest problem for the status panel.
    ``clock`` gives epoch seconds (the ban and weight pauses are measured on it; ``Retry-After``
    dates are compared with it); ``poll_s`` is how often a waiting caller looks at it.
    ``deadline_s`` bounds one request whole, ``timeout_s`` any single socket wait in it,
    ``max_reply_bytes`` one reply's body; ``attempts`` is how many tries a call gets (it replaces
    ``retry.max_attempts``); ``retry`` paces the retries after 5xx and network errors, ``rng``
    draws its jitter. ``venue`` says which endpoints, page sizes and weights to use (spot by
    default); ``rest_url`` None means the venue's. ``funding_requests``: most funding-history calls
    in any :data:`FUNDING_WINDOW_S` seconds (see the module docstring).
    """

    def __init__(self, rest_url: str | None = None, *, venue: Venue = SPOT, weight_budget: int = 1_200,
                 timeout_s: float = SOCKET_TIMEOUT_S,
                 deadline_s: float = REQUEST_DEADLINE_S, max_reply_bytes: int = MAX_REPLY_BYTES,
                 attempts: int = ATTEMPTS, emit: Callable[[FeedEvent], None] | None = None,
                 clock: Callable[[], float] = time.time, poll_s: float = BAN_POLL_S,
                 retry: RetryPolicy = REST_RETRY, rng: random.Random | None = None,
                 funding_requests: int = FUNDING_REQUESTS) -> None:
        if not (timeout_s > 0 and deadline_s > 0 and max_reply_bytes > 0 and attempts >= 1):
            raise ValueError(f"need timeout_s, deadline_s, max_reply_bytes > 0 and attempts >= 1, got "
                             f"{timeout_s}, {deadline_s}, {max_reply_bytes}, {attempts}")
        self.venue = venue
        self.rest_url = (venue.rest_url if rest_url is None else rest_url).rstrip("/")
        self._parts = urllib.parse.urlsplit(self.rest_url)
        if self._parts.scheme not in ("http", "https") or not self._parts.hostname:
            raise ValueError(f"rest_url: {rest_url!r} must look like https://host[:port]")
        self.weight_budget = weight_budget
        self.timeout_s = timeout_s
        self.deadline_s = deadline_s
        self.max_reply_bytes = max_reply_bytes
        self.attempts = attempts
        self.retry = dataclasses.replace(retry, max_attempts=attempts)
        self._rng = rng or random.Random()
        self.emit = emit
        self.requests = 0
        self.last_error: str | None = None
        self._clock = clock
        self._poll_s = poll_s
        # Guards the shared state only, never held across a request: callers on other threads
        # (backfill, history) send concurrently, each within its own deadline.
        self._state = threading.Lock()
        self._banned_until_s = 0.0  # no request before this (epoch s): 418/429 Retry-After
        self._paused_until_s = 0.0  # nor before this: our weight budget for the minute is used
        self._bulk_paused_until_s = 0.0  # no bulk call before this: the bulk share of the budget is used
        self.funding_window = RequestWindow(funding_requests, FUNDING_WINDOW_S)

    @property
    def banned_until_ms(self) -> int | None:
        """When the current 418/429 ban ends (epoch ms), or None when there is none."""
        with self._state:
            until = self._banned_until_s
        return int(until * 1000) if until > self._clock() else None

    def historical_trades(self, symbol: str, from_id: int, limit: int, stop: threading.Event) -> list[Trade]:
        """Up to ``limit`` (≤ 1000) trades of ``symbol`` from id ``from_id`` on; [] if stopped or none exist.

        A page with ids before ``from_id``, out of order or repeated is refused whole (:class:`RestError`).

        On USDⓈ-M futures the public API has no way to page from a trade id without an API key
        (``/fapi/v1/historicalTrades`` needs one). ``/fapi/v1/aggTrades`` does not recover trades
        either: its ``fromId`` is an aggregate id, and each row merges several fills into one price
        and one quantity (``f``..``l``), so individual trades cannot be rebuilt from it. What is
        left is ``/fapi/v1/trades``: the latest 1,000 market trades. This returns those with ids
        from ``from_id`` on, so a gap is recovered only while it is among the latest 1,000 trades
        (~27 s of ETHUSDT, ~97 s of BTCUSDT in the shared 2025-12-15 recording: enough for a quick
        reconnect, not for a long outage or a restart); older ids, and ids that were not market
        prints (insurance-fund, ADL, ``NA``: this endpoint never returns them), stay missing and the
        backfill reports them as unfilled.

        ``symbol`` is a leg name (``ETHUSDT.P`` on USDⓈ-M): the request carries the exchange's symbol,
        the trades the leg name.
        """
        wire = self.venue.exchange_symbol(symbol)
        if self.venue.trades_by_id:
            rows = self.get(self.venue.trades_path, {"symbol": wire, "fromId": from_id, "limit": limit},
                            weight=self.venue.trades_weight, stop=stop, symbol=symbol)
            return [] if rows is None else parse_historical_trades(rows, symbol, from_id, limit, now_ms())
        rows = self.get(self.venue.trades_path, {"symbol": wire, "limit": PAGE_LIMIT},
                        weight=self.venue.trades_weight, stop=stop, symbol=symbol)
        if rows is None:
            return []
        return parse_historical_trades(rows, symbol, from_id, PAGE_LIMIT, now_ms(), recent=True)[:limit]

    def klines(self, symbol: str, interval_ms: int, start_ms: int, end_ms: int, stop: threading.Event) -> BarArrays:
        """Closed bars of ``symbol`` at ``interval_ms`` (1 s, 1 min, 5 min) opening in ``[start_ms, end_ms)``.

        Pages through replies of the venue's page size (1,000 spot, 1,500 futures); every page is
        checked before anything is returned, so a malformed row, a bar outside the range asked for
        or out of order, an HTTP error or a symbol Binance does not know raises :class:`RestError`
        and nothing of this range is stored.
        Empty if ``stop`` is set. ``symbol`` is a leg name; the request carries the exchange's symbol.
        """
        wire = self.venue.exchange_symbol(symbol)
        interval = KLINE_INTERVALS[interval_ms]
        page_limit = self.venue.klines_page
        pages: list[BarArrays] = []
        cursor = start_ms - start_ms % interval_ms
        while cursor < end_ms and not stop.is_set():
            reply = self.get(self.venue.klines_path, {"symbol": wire, "interval": interval, "startTime": cursor,
                                                      "endTime": end_ms - 1, "limit": page_limit},
                             weight=self.venue.klines_weight(page_limit), stop=stop, symbol=symbol, bulk=True)
            if reply is None:
                return BarArrays.empty()
            page = parse_klines(reply, symbol, interval_ms, now_ms(), start_ms=cursor, end_ms=end_ms)
            if len(page):
                pages.append(page)
            if len(reply) < page_limit:
                break
            # parse_klines checked the page rises within [cursor, end_ms): the next one starts after it.
            cursor = kline_ms(reply[-1][0], f"{symbol} {interval} kline") + interval_ms
        return _concat(pages)

    def funding_rates(self, symbol: str, start_ms: int, end_ms: int, stop: threading.Event) -> FundingPage:
        """The funding events of the perpetual ``symbol`` in ``[start_ms, end_ms)`` (UTC epoch ms), rising.

        Pages of :data:`FUNDING_PAGE` from ``GET /fapi/v1/fundingRate`` (Binance answers the first
        ``limit`` events from ``startTime`` on), each call counted in :attr:`funding_window` and
        behind the shared ban. Rows refused by :func:`parse_funding_rates` are in ``problems`` (the
        others are kept); a reply refused whole, an HTTP error or an unknown symbol raise
        :class:`RestError`. Empty if ``stop`` is set; RestError on a venue without funding.
        """
        path = self.venue.funding_path
        if path is None:
            raise RestError(f"{self.venue.label} has no funding history")
        rates: list[FundingRate] = []
        problems: list[tuple[int | None, str]] = []
        cursor, received = start_ms, 0
        while cursor < end_ms:
            reply = self.get(path, {"symbol": symbol, "startTime": cursor, "endTime": end_ms - 1,
                                    "limit": FUNDING_PAGE},
                             weight=0, stop=stop, symbol=symbol, window=self.funding_window)
            if reply is None:
                return FundingPage((), (), None, 0)
            page = parse_funding_rates(reply, symbol, start_ms=cursor, end_ms=end_ms - 1, limit=FUNDING_PAGE)
            rates.extend(page.rates)
            problems.extend(page.problems)
            received += page.rows
            if page.rows < FUNDING_PAGE:
                break
            if page.last_ms is None or page.last_ms < cursor:  # cannot tell where the next page starts
                raise RestError(f"{symbol} fundingRate page has no readable fundingTime in the range asked for: "
                                "cannot page on")
            cursor = page.last_ms + 1  # the page's events lie within [cursor, end_ms): the next one starts after them
        return FundingPage(tuple(rates), tuple(problems), rates[-1].funding_ms if rates else None, received)

    def get(self, path: str, params: dict[str, Any], *, weight: int, stop: threading.Event,
            symbol: str | None = None, bulk: bool = False, window: RequestWindow | None = None,
            max_bytes: int | None = None, wait_ban: bool = True) -> Any:
        """The decoded JSON of ``GET path?params``; None if ``stop`` was set while waiting.

        ``max_bytes`` bounds this reply's body instead of :attr:`max_reply_bytes` (a whole venue's
        ``exchangeInfo`` is several MB, far more than any page). ``wait_ban`` False: a 418/429 ban
        (known before the call or answered to it) raises :class:`RestError` naming its end at once
        instead of being waited out (a caller a browser page waits on must not wait an hour).

        Waits out the shared ban and weight pause (for a ``bulk`` call, the bulk pause too) before
        every attempt, and for a turn in ``window`` if given (every attempt is a request to Binance).
        Retries 429/418 (after ``Retry-After``), 5xx, network errors and a missed deadline up to ``attempts`` times;
        raises :class:`RestError` for other statuses, a reply over the size bound, invalid JSON or
        when the attempts run out.
        """
        target = f"{self._parts.path}{path}?{urllib.parse.urlencode(params)}"
        url = f"{self.rest_url}{path}?{urllib.parse.urlencode(params)}"
        name = path.rsplit("/", 1)[-1]
        # The policy's clock is the client's: its deadline, if one is set, runs on the same time as bans.
        backoff = Backoff(self.retry, rng=self._rng, clock=self._clock)
        while True:
            banned = None if wait_ban else self.banned_until_ms
            if banned is not None:
                raise RestError(f"Binance REST: this IP is banned until {_utc(banned)} (HTTP 418/429 Retry-After); "
                                f"{name} not asked for")
            if self._wait_until_clear(stop, bulk):
                return None
            if window is not None and window.take(self._clock, stop, self._poll_s):
                return None
            with self._state:
                self.requests += 1
            try:
                status, headers, body = self._fetch(target, name, max_bytes)
            except ReplyTooLarge as exc:
                self.last_error = str(exc)
                raise
            except (OSError, http.client.HTTPException) as exc:  # TimeoutError is an OSError
                if isinstance(exc, _DeadlinePassed):
                    self.last_error = (f"Binance REST {name}: no complete reply within the {self.deadline_s:g} s "
                                       "deadline")
                else:
                    self.last_error = f"Binance REST unreachable: {type(exc).__name__}: {exc}"
            else:
                if status == 200:
                    self._note_weight(headers.get("X-MBX-USED-WEIGHT-1M"), weight)
                    try:
                        return json.loads(body)
                    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
                        raise RestError(f"invalid JSON from {url}: {str(exc)[:200]}") from None
                if status in (429, 418):  # rate limited / IP banned: nobody calls before Retry-After has passed
                    header = headers.get("Retry-After")
                    now = self._clock()
                    with self._state:
                        self._banned_until_s = until = max(self._banned_until_s, now + retry_after_s(header, now))
                    self._problem(f"HTTP {status} from Binance REST: banned until {_utc(int(until * 1000))} "
                                  f"(Retry-After {excerpt(header)})", symbol)
                    # The ban is the wait (_wait_until_clear, shared by all callers); it still costs an attempt.
                    if not backoff.failed():
                        break
                    continue
                if not 500 <= status < 600:
                    if status == 400 and b"-1121" in body:  # {"code":-1121,"msg":"Invalid symbol."}
                        raise RestError(f"Binance does not know the symbol {symbol or params.get('symbol')}")
                    raise RestError(f"HTTP {status} for {url}: {excerpt(body, 200)}")
                self.last_error = f"HTTP {status} from Binance REST"
            # A network error, a missed deadline or a 5xx: the policy's next wait, none after the last attempt.
            delay = backoff.next_delay()
            if delay is None:
                break
            if stop.wait(delay):
                return None
        raise RestError(f"giving up on {url} after {backoff.failures} attempts ({self.last_error})")

    def _wait_until_clear(self, stop: threading.Event, bulk: bool = False) -> bool:
        """Block until neither the ban nor a weight pause forbids a request; True if stopped meanwhile."""
        while True:
            with self._state:
                until = max(self._banned_until_s, self._paused_until_s, self._bulk_paused_until_s if bulk else 0.0)
            left = until - self._clock()
            if left <= 0:
                return False
            # Short steps: the clock may be a test's, and another caller may extend the ban meanwhile.
            if stop.wait(min(left, self._poll_s)):
                return True

    def _fetch(self, target: str, name: str,
               max_bytes: int | None = None) -> tuple[int, http.client.HTTPMessage, bytes]:
        """One GET of ``target`` within :attr:`deadline_s`: status, headers and the body (bounded by
        ``max_bytes``, default :attr:`max_reply_bytes`).

        Raises :class:`_DeadlinePassed` when the deadline passes at any step, :class:`ReplyTooLarge`
        for a body over :attr:`max_reply_bytes`, ``OSError``/``HTTPException`` for network trouble.
        """
        deadline = time.monotonic() + self.deadline_s
        conn: http.client.HTTPConnection | None = None
        try:
            conn = deadline_connect(self._parts, self.timeout_s, deadline)
            conn.request("GET", target, headers={"Accept": "application/json", "Connection": "close"})
            with conn.getresponse() as response:
                if response.status != 200:  # an error page: enough of it to name the problem
                    return response.status, response.headers, _read_bounded(response, 4_096, name, truncate=True)
                limit = self.max_reply_bytes if max_bytes is None else max_bytes
                return response.status, response.headers, _read_bounded(response, limit, name)
        except TimeoutError:
            if time.monotonic() >= deadline:  # a socket wait cut short by the deadline: that is the reason
                raise _DeadlinePassed(self.deadline_s) from None
            raise
        finally:
            if conn is not None:
                conn.close()

    def _problem(self, text: str, symbol: str | None) -> None:
        self.last_error = text
        log.warning("%s", text)
        if self.emit is not None:
            self.emit(FeedEvent(now_ms(), EventKind.ERROR, symbol, text))

    def _note_weight(self, used_header: str | None, weight: int) -> None:
        """Pause bulk calls until the next minute when the IP's used weight nears their share of our
        budget, and every call when it nears the whole budget."""
        try:
            used = int(used_header) if used_header is not None else 0
        except ValueError:
            return
        now = self._clock()
        next_minute = now - now % 60 + 60.5  # Binance's weight window resets on the minute
        with self._state:
            if used + weight > self.weight_budget * BULK_SHARE:
                self._bulk_paused_until_s = max(self._bulk_paused_until_s, next_minute)
            if used + weight > self.weight_budget:
                self._paused_until_s = max(self._paused_until_s, next_minute)


class _DeadlinePassed(TimeoutError):
    """A request's overall deadline passed before its reply was complete."""

    def __init__(self, deadline_s: float) -> None:
        super().__init__(f"no complete reply within the {deadline_s:g} s deadline")


def _read_bounded(response: http.client.HTTPResponse, limit: int, name: str, *, truncate: bool = False) -> bytes:
    """The body of ``response``, read in chunks, at most ``limit`` bytes.

    A larger body raises :class:`ReplyTooLarge` (or, with ``truncate``, is cut at ``limit``):
    by its ``Content-Length`` before anything is read, else as soon as the running total crosses it.
    """
    what = f"{name} reply exceeds the {_size(limit)} limit"
    if response.length is not None and response.length > limit and not truncate:
        raise ReplyTooLarge(f"{what} (Content-Length {response.length:,} bytes); not read")
    body = bytearray()
    while True:
        chunk = response.read(min(READ_CHUNK, limit + 1 - len(body)))
        if not chunk:
            return bytes(body)
        body += chunk
        if len(body) > limit:
            if truncate:
                return bytes(body[:limit])
            raise ReplyTooLarge(f"{what} (more than {limit:,} bytes read); rest not read")


def _size(limit: int) -> str:
    """``2 MB`` for 2 MiB, ``1,000 bytes`` for anything not a whole number of MiB."""
    return f"{limit // 2**20} MB" if limit % 2**20 == 0 else f"{limit:,} bytes"


def _concat(pages: list[BarArrays]) -> BarArrays:
    """One array per column; the pages were checked to rise and not overlap."""
    if not pages:
        return BarArrays.empty()
    if len(pages) == 1:
        return pages[0]
    return BarArrays(*(np.concatenate([getattr(page, name) for page in pages])
                       for name in ("start_ms", *BarArrays.COLUMNS)))
