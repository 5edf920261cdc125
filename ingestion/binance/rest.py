"""Binance spot REST client: the calls the engine makes besides the stream, under one weight budget.

``GET /api/v3/historicalTrades?symbol=…&fromId=…&limit=1000`` re-fetches trades the stream
missed (gap backfill); ``GET /api/v3/klines?symbol=…&interval=…&startTime=…&endTime=…&limit=1000``
loads the bars of the past (history at open). Every call is made from a background thread,
never the stream's.

Rate limits: Binance allows 6,000 request weight a minute per IP and reports what is used in the
``X-MBX-USED-WEIGHT-1M`` response header. We keep under ``weight_budget`` (default 1,200, a
fifth), pausing until the next minute when the next call would cross it, and on ``429``/``418``
wait ``Retry-After`` seconds before retrying. One client is shared by everything that calls
Binance REST in a process, so they share the budget.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

import numpy as np

from ingestion.binance.parse import MAX_ID
from ingestion.source import excerpt
from records import BarArrays, EventKind, FeedEvent, Trade, now_ms

log = logging.getLogger(__name__)

PAGE_LIMIT = 1000  # Binance's maximum page size for historicalTrades and klines
HISTORICAL_TRADES_WEIGHT = 25
KLINES_WEIGHT = 2  # per request with limit 1000 (Binance: 2 for limit 100-500 and 500-1000)
KLINE_INTERVALS = {1_000: "1s", 60_000: "1m", 300_000: "5m"}
# Binance's data archives switched to microseconds in 2025; a time this large cannot be in ms.
MICROSECONDS_FROM = 10**14
RETRY_AFTER_DEFAULT_S = 5.0
MAX_RETRY_WAIT_S = 300.0
ATTEMPTS = 5


class RestError(RuntimeError):
    """A REST reply we cannot use (bad status, bad JSON, wrong shape); the message names the URL."""


def parse_historical_trade(symbol: str, row: dict, recv_ms: int) -> Trade:
    """One ``historicalTrades`` row, e.g.::

        {"id":28457,"price":"4.00000100","qty":"12.00000000","quoteQty":"48.000012",
         "time":1499865549590,"isBuyerMaker":true,"isBestMatch":true}
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


def parse_klines(rows: object, symbol: str, interval_ms: int, now: int) -> BarArrays:
    """Closed bars from a ``klines`` reply; the kline still open (``closeTime >= now``) is left out.

    Each row is ``[openTime, open, high, low, close, volume, closeTime, quoteVolume, trades,
    takerBuyBase, takerBuyQuote, ignore]``, times in ms (or µs, converted), prices and volumes as
    decimal strings, e.g.::

        [1499040000000, "0.01634790", "0.80000000", "0.01575800", "0.01577100", "148976.11427815",
         1499644799999, "2434.19055334", 308, "1756.87402397", "28.46694368", "0"]

    Raises :class:`RestError` naming the row for anything malformed, so no partial page is stored.
    """
    if not isinstance(rows, list):
        raise RestError(f"expected a JSON list from klines, got {type(rows).__name__}")
    starts, values, trades = [], [], []
    for index, row in enumerate(rows):
        where = f"{symbol} {KLINE_INTERVALS[interval_ms]} kline #{index}"
        if not isinstance(row, list) or len(row) < 9:
            raise RestError(f"{where} is not a 12-field row: {excerpt(row, 80)}")
        open_ms, close_ms = kline_ms(row[0], f"{where}: open time"), kline_ms(row[6], f"{where}: close time", last=True)
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


class BinanceRest:
    """Thread-safe Binance REST client with a shared weight budget (see the module docstring).

    ``emit`` receives a feed event for every rate-limit wait, so the feed tab shows why history
    or a backfill is slow. ``last_error`` keeps the latest problem for the status panel.
    """

    def __init__(self, rest_url: str, *, weight_budget: int = 1_200, timeout_s: float = 10.0,
                 emit: Callable[[FeedEvent], None] | None = None) -> None:
        self.rest_url = rest_url.rstrip("/")
        self.weight_budget = weight_budget
        self.timeout_s = timeout_s
        self.emit = emit
        self.requests = 0
        self.last_error: str | None = None
        self._lock = threading.Lock()  # one request at a time keeps the weight accounting exact

    def historical_trades(self, symbol: str, from_id: int, limit: int, stop: threading.Event) -> list[Trade]:
        """Up to ``limit`` (≤ 1000) trades of ``symbol`` from id ``from_id`` on; [] if stopped or none exist."""
        rows = self.get("/api/v3/historicalTrades", {"symbol": symbol, "fromId": from_id, "limit": limit},
                        weight=HISTORICAL_TRADES_WEIGHT, stop=stop, symbol=symbol)
        if rows is None:
            return []
        if not isinstance(rows, list):
            raise RestError(f"expected a JSON list from historicalTrades, got {type(rows).__name__}")
        recv = now_ms()
        return [parse_historical_trade(symbol, row, recv) for row in rows]

    def klines(self, symbol: str, interval_ms: int, start_ms: int, end_ms: int, stop: threading.Event) -> BarArrays:
        """Closed bars of ``symbol`` at ``interval_ms`` (1 s, 1 min, 5 min) opening in ``[start_ms, end_ms)``.

        Pages through ``limit=1000`` replies; every page is checked before anything is returned,
        so a malformed row, an HTTP error or a symbol Binance does not know raises
        :class:`RestError` and nothing of this range is stored. Empty if ``stop`` is set.
        """
        interval = KLINE_INTERVALS[interval_ms]
        pages: list[BarArrays] = []
        cursor = start_ms - start_ms % interval_ms
        while cursor < end_ms and not stop.is_set():
            reply = self.get("/api/v3/klines", {"symbol": symbol, "interval": interval, "startTime": cursor,
                                                "endTime": end_ms - 1, "limit": PAGE_LIMIT},
                             weight=KLINES_WEIGHT, stop=stop, symbol=symbol)
            if reply is None:
                return BarArrays.empty()
            page = parse_klines(reply, symbol, interval_ms, now_ms())
            if len(page):
                pages.append(page)
            if not isinstance(reply, list) or len(reply) < PAGE_LIMIT:
                break
            last_open = kline_ms(reply[-1][0], f"{symbol} {interval} kline")
            if last_open < cursor:
                raise RestError(f"{symbol} {interval} klines from {cursor} went back to {last_open}")
            cursor = last_open + interval_ms
        return _concat(pages)

    def get(self, path: str, params: dict[str, Any], *, weight: int, stop: threading.Event,
            symbol: str | None = None) -> Any:
        """The decoded JSON of ``GET path?params``; None if ``stop`` was set while waiting.

        Retries 429/418 (after ``Retry-After``), 5xx and network errors up to ``ATTEMPTS`` times;
        raises :class:`RestError` for other statuses, invalid JSON or when the attempts run out.
        """
        url = f"{self.rest_url}{path}?{urllib.parse.urlencode(params)}"
        with self._lock:
            for _attempt in range(ATTEMPTS):
                self.requests += 1
                try:
                    with urllib.request.urlopen(url, timeout=self.timeout_s) as response:
                        body = response.read()
                        used = response.headers.get("X-MBX-USED-WEIGHT-1M")
                    if self._respect_weight(used, weight, stop):
                        return None
                    return json.loads(body)
                except urllib.error.HTTPError as exc:
                    if exc.code in (429, 418):  # rate limited / IP banned: wait as told, then retry
                        wait = _retry_after(exc.headers.get("Retry-After"))
                        self._problem(f"HTTP {exc.code} from Binance REST; waiting {wait:.0f} s", symbol)
                        if stop.wait(wait):
                            return None
                        continue
                    if 500 <= exc.code < 600:
                        self.last_error = f"HTTP {exc.code} from Binance REST"
                        if stop.wait(RETRY_AFTER_DEFAULT_S):
                            return None
                        continue
                    body = exc.read()
                    if exc.code == 400 and b"-1121" in body:  # {"code":-1121,"msg":"Invalid symbol."}
                        raise RestError(f"Binance does not know the symbol {params.get('symbol')}") from None
                    raise RestError(f"HTTP {exc.code} for {url}: {excerpt(body, 200)}") from None
                except (urllib.error.URLError, TimeoutError, OSError) as exc:
                    self.last_error = f"Binance REST unreachable: {exc}"
                    if stop.wait(RETRY_AFTER_DEFAULT_S):
                        return None
                except json.JSONDecodeError as exc:
                    raise RestError(f"invalid JSON from {url}: {exc}") from None
        raise RestError(f"giving up on {url} after {ATTEMPTS} attempts ({self.last_error})")

    def _problem(self, text: str, symbol: str | None) -> None:
        self.last_error = text
        log.warning("%s", text)
        if self.emit is not None:
            self.emit(FeedEvent(now_ms(), EventKind.ERROR, symbol, text))

    def _respect_weight(self, used_header: str | None, weight: int, stop: threading.Event) -> bool:
        """Pause until the next minute when the IP's used weight is near our budget; True if stopped."""
        try:
            used = int(used_header) if used_header is not None else 0
        except ValueError:
            return False
        if used + weight > self.weight_budget:
            return stop.wait(60 - time.time() % 60 + 0.5)  # Binance's weight window resets on the minute
        return False


def _retry_after(header: str | None) -> float:
    try:
        return min(max(float(header), 0.0), MAX_RETRY_WAIT_S) if header else RETRY_AFTER_DEFAULT_S
    except ValueError:
        return RETRY_AFTER_DEFAULT_S


def _concat(pages: list[BarArrays]) -> BarArrays:
    if not pages:
        return BarArrays.empty()
    if len(pages) == 1:
        return pages[0]
    columns = [np.concatenate([getattr(page, name) for page in pages]) for name in ("start_ms", *BarArrays.COLUMNS)]
    start, opened, high, low, close, volume, trades, vwap = columns
    keep = np.concatenate(([True], np.diff(start) > 0))  # a page boundary seen twice is kept once
    return BarArrays(start[keep], opened[keep], high[keep], low[keep], close[keep], volume[keep], trades[keep],
                     vwap[keep])
