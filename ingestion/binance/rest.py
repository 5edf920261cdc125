"""Binance spot REST client: the calls the engine makes besides the stream, under one weight budget.

``GET /api/v3/historicalTrades?symbol=…&fromId=…&limit=1000`` re-fetches trades the stream
missed (gap backfill). Every call is made from a background thread, never the stream's.

Rate limits: Binance allows 6,000 request weight a minute per IP and reports what is used in the
``X-MBX-USED-WEIGHT-1M`` response header. We keep under ``weight_budget`` (default 1,200, a
fifth), pausing until the next minute when the next call would cross it, and on ``429``/``418``
wait ``Retry-After`` seconds before retrying. One client is shared by everything that calls
Binance REST in a process, so they share the budget.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

from ingestion.binance.parse import MAX_ID
from ingestion.source import excerpt
from records import EventKind, FeedEvent, Trade, now_ms

log = logging.getLogger(__name__)

PAGE_LIMIT = 1000  # Binance's maximum page size for historicalTrades
HISTORICAL_TRADES_WEIGHT = 25
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
                    raise RestError(f"HTTP {exc.code} for {url}: {excerpt(exc.read(), 200)}") from None
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
