"""Gap backfill: fetch trades the live stream missed from Binance REST, off the live path.

When the engine sees a jump in a symbol's trade ids (after a reconnect, or on restart against a
database that stops earlier), it hands the missing id range to :class:`Backfiller`. A daemon
thread pages through ``GET /api/v3/historicalTrades?symbol=…&fromId=…&limit=1000`` and puts the
trades on the writer queue exactly like live ones (the idempotent insert absorbs overlaps).
It never blocks the live stream: requests are queued, the HTTP calls happen in this thread.

Rate limits: each page costs ``REQUEST_WEIGHT`` (25) of the per-IP budget of 6,000 weight a
minute; we keep under ``weight_budget`` (default 1,200, a fifth) using Binance's
``X-MBX-USED-WEIGHT-1M`` response header, and on ``429``/``418`` wait ``Retry-After`` seconds.
Backfilled trades go to storage only: the live bars have moved on, so the dashboard shows them
from the database (history) rather than rewriting bars it already drew.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

from ingestion.binance_parse import MAX_ID
from ingestion.records import EventKind, FeedEvent, Trade
from ingestion.source import now_ms

log = logging.getLogger(__name__)

PAGE_LIMIT = 1000  # Binance's maximum page size for historicalTrades
REQUEST_WEIGHT = 25
RETRY_AFTER_DEFAULT_S = 5.0
MAX_RETRY_WAIT_S = 300.0


class BackfillError(RuntimeError):
    """A REST reply we cannot use (bad status, bad JSON, wrong shape)."""


@dataclass(frozen=True, slots=True)
class GapRequest:
    """Trade ids ``first_missing … first_missing + count - 1`` of ``symbol`` are missing."""

    symbol: str
    first_missing: int
    count: int


def parse_historical_trade(symbol: str, row: dict, recv_ms: int) -> Trade:
    """One ``historicalTrades`` row, e.g.::

        {"id":28457,"price":"4.00000100","qty":"12.00000000","quoteQty":"48.000012",
         "time":1499865549590,"isBuyerMaker":true,"isBestMatch":true}
    """
    try:
        trade = Trade(symbol, int(row["id"]), int(row["time"]), recv_ms, float(row["price"]), float(row["qty"]),
                      bool(row["isBuyerMaker"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise BackfillError(f"malformed historicalTrades row {row!r}: {exc}") from None
    if not trade.price > 0:
        raise BackfillError(f"historicalTrades row with a non-positive price: {row!r}")
    if not (0 <= trade.trade_id <= MAX_ID and 0 < trade.ts_ms <= MAX_ID):
        raise BackfillError(f"historicalTrades row with an out-of-range id or time: {row!r}")
    return trade


class Backfiller:
    """Background thread that recovers missing trade-id ranges over REST."""

    def __init__(
        self,
        rest_url: str,
        store_trade: Callable[[Trade], None],
        emit: Callable[[FeedEvent], None],
        *,
        max_trades_per_gap: int = 100_000,
        weight_budget: int = 1_200,
        timeout_s: float = 10.0,
    ) -> None:
        self.rest_url = rest_url.rstrip("/")
        self._store_trade = store_trade
        self._emit = emit
        self.max_trades_per_gap = max_trades_per_gap
        self.weight_budget = weight_budget
        self.timeout_s = timeout_s
        self._queue: queue.SimpleQueue[GapRequest | None] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.recovered = 0
        self.requests = 0
        self.pending = 0
        self.last_error: str | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="gap-backfill", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join(timeout)

    def request(self, symbol: str, first_missing: int, count: int) -> None:
        """Queue a gap for recovery; returns at once (called from the source thread)."""
        self.pending += 1
        self._queue.put(GapRequest(symbol, first_missing, count))

    def _run(self) -> None:
        while not self._stop.is_set():
            gap = self._queue.get()
            if gap is None:
                break
            try:
                recovered = self._recover(gap)
                detail = f"first_missing={gap.first_missing} count={gap.count} recovered={recovered}"
                if recovered < gap.count:
                    detail += " (partial)"
                self._emit(FeedEvent(now_ms(), EventKind.BACKFILL, gap.symbol, detail))
                log.info("backfill %s: %s", gap.symbol, detail)
            except BackfillError as exc:
                self.last_error = f"backfill {gap.symbol}: {exc}"
                self._emit(FeedEvent(now_ms(), EventKind.ERROR, gap.symbol, self.last_error))
                log.warning("%s", self.last_error)
            finally:
                self.pending -= 1

    def _recover(self, gap: GapRequest) -> int:
        """Page through the missing range; return how many trades were handed to storage."""
        end = gap.first_missing + min(gap.count, self.max_trades_per_gap)  # exclusive
        next_id, recovered = gap.first_missing, 0
        while next_id < end and not self._stop.is_set():
            rows = self._get_page(gap.symbol, next_id, min(PAGE_LIMIT, end - next_id))
            if not rows:
                break  # the exchange no longer has them (too old) or none exist
            recv = now_ms()
            for row in rows:
                trade = parse_historical_trade(gap.symbol, row, recv)
                if next_id <= trade.trade_id < end:
                    self._store_trade(trade)
                    recovered += 1
            last_id = int(rows[-1]["id"])
            if last_id < next_id:
                raise BackfillError(f"page from id {next_id} ended at id {last_id}")
            next_id = last_id + 1
        self.recovered += recovered
        return recovered

    def _get_page(self, symbol: str, from_id: int, limit: int) -> list[dict]:
        query = urllib.parse.urlencode({"symbol": symbol, "fromId": from_id, "limit": limit})
        url = f"{self.rest_url}/api/v3/historicalTrades?{query}"
        for _attempt in range(5):
            self.requests += 1
            try:
                with urllib.request.urlopen(url, timeout=self.timeout_s) as response:
                    body = response.read()
                    used = response.headers.get("X-MBX-USED-WEIGHT-1M")
                self._respect_weight(used)
                data = json.loads(body)
                if not isinstance(data, list):
                    raise BackfillError(f"expected a JSON list from {url}, got {type(data).__name__}")
                return data
            except urllib.error.HTTPError as exc:
                if exc.code in (429, 418):  # rate limited / IP banned: wait as told, then retry
                    wait = _retry_after(exc.headers.get("Retry-After"))
                    self.last_error = f"HTTP {exc.code} from Binance REST; waiting {wait:.0f} s"
                    self._emit(FeedEvent(now_ms(), EventKind.ERROR, symbol, self.last_error))
                    if self._stop.wait(wait):
                        return []
                    continue
                if 500 <= exc.code < 600:
                    if self._stop.wait(RETRY_AFTER_DEFAULT_S):
                        return []
                    continue
                raise BackfillError(f"HTTP {exc.code} for {url}: {exc.read()[:200]!r}") from None
            except (urllib.error.URLError, TimeoutError, OSError) as exc:
                self.last_error = f"REST unreachable: {exc}"
                if self._stop.wait(RETRY_AFTER_DEFAULT_S):
                    return []
            except json.JSONDecodeError as exc:
                raise BackfillError(f"invalid JSON from {url}: {exc}") from None
        raise BackfillError(f"giving up on {url} after 5 attempts ({self.last_error})")

    def _respect_weight(self, used_header: str | None) -> None:
        """Pause until the next minute when the IP's used weight is near our share of the budget."""
        try:
            used = int(used_header) if used_header is not None else 0
        except ValueError:
            return
        if used + REQUEST_WEIGHT > self.weight_budget:
            # Binance's weight window resets on the minute.
            self._stop.wait(60 - time.time() % 60 + 0.5)


def _retry_after(header: str | None) -> float:
    try:
        return min(max(float(header), 0.0), MAX_RETRY_WAIT_S) if header else RETRY_AFTER_DEFAULT_S
    except ValueError:
        return RETRY_AFTER_DEFAULT_S
