"""Funding history of the watched perpetuals, kept in the futures site's store by a thread of its own.

At start, :class:`FundingLoader` fetches, for every watched symbol, the funding events of the
retained history (``lookback_ms`` back from now) that the store does not hold yet — the store
keeps the span fetched whole per symbol (:meth:`~storage.base.TickStore.funding_coverage`), so a
restart fetches only the hole its downtime left — and again after each funding time. Binance's
funding times lie on whole UTC hours (every 8 h for most perpetuals, 4 h or 1 h for some), so the
loader looks again :data:`REFRESH_AFTER_MS` after every whole hour; the reply lists the events up
to :data:`PUBLISH_LAG_MS` ago, and since no funding time falls before the next whole hour, the span
it stores as known reaches to just before that hour. Each look asks again for the
:data:`REFETCH_MS` before the known span's end, so an event listed late is stored at the next look.

Only the service that writes the database runs it (a recorder, or a dashboard with no recorder);
a following dashboard reads the same table. Rows the exchange garbles are named in a feed event
and not stored, and the known span stops before the first of them, so a backtest says "funding
unknown" there rather than counting zero. A failed fetch (HTTP error, ban, unknown symbol,
storage trouble) is reported the same way and tried again :data:`RETRY_MS` later.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from typing import Protocol, runtime_checkable

from records import EventKind, FeedEvent, FundingRate, now_ms
from storage.base import TickStore
from storage.errors import StorageError

log = logging.getLogger(__name__)

HOUR_MS = 3_600_000
# Binance lists a funding event a moment after its time; what is older than this is taken as listed.
PUBLISH_LAG_MS = 60_000
REFRESH_AFTER_MS = 120_000  # look again this long after each whole hour (past PUBLISH_LAG_MS)
RETRY_MS = 300_000  # after a failed fetch
# Each look asks again for this much before the known span's end (one page either way; rows are stored
# once): an event listed later than PUBLISH_LAG_MS (the exchange slow, this machine's clock ahead) is
# then stored at the next look instead of lost for good behind a span already marked known.
REFETCH_MS = 24 * HOUR_MS
IDLE_POLL_S = 0.5
MAX_NAMED = 5  # malformed rows named one by one per fetch; the rest are counted


@runtime_checkable
class FundingRates(Protocol):
    """Where funding history comes from (:meth:`ingestion.binance.rest.BinanceRest.funding_rates`)."""

    def funding_rates(self, symbol: str, start_ms: int, end_ms: int, stop: threading.Event) -> FundingFetch:
        """Events in ``[start_ms, end_ms)``; raises ``RuntimeError`` (a subclass) on failure."""


class FundingFetch(Protocol):
    """What one fetch returned (:class:`ingestion.binance.rest.FundingPage`)."""

    @property
    def rates(self) -> tuple[FundingRate, ...]: ...

    @property
    def problems(self) -> tuple[tuple[int | None, str], ...]: ...


def next_refresh_ms(now: int) -> int:
    """When to look again after a fetch at ``now``: :data:`REFRESH_AFTER_MS` past the next whole hour."""
    return now - now % HOUR_MS + HOUR_MS + REFRESH_AFTER_MS


def known_until_ms(now: int) -> int:
    """The last instant whose funding a fetch at ``now`` knows (inclusive): just before the whole hour
    after ``now - PUBLISH_LAG_MS``, as no funding time falls between whole hours."""
    listed = now - PUBLISH_LAG_MS
    return listed - listed % HOUR_MS + HOUR_MS - 1


class FundingLoader:
    """Background loader of the watched perpetuals' funding history (see the module docstring).

    ``source`` is the REST client; ``open_store`` opens the store this thread writes to (the
    futures site's tick store); ``lookback_ms`` is how far back history is kept (the retention);
    ``emit`` receives a feed event per stored fetch, malformed row and failure. ``clock`` gives
    UTC epoch ms (tests move it). :attr:`errors` keeps the latest problems.
    """

    def __init__(self, source: FundingRates, open_store: Callable[[], TickStore], lookback_ms: int, *,
                 emit: Callable[[FeedEvent], None] | None = None, clock: Callable[[], int] = now_ms,
                 poll_s: float = IDLE_POLL_S) -> None:
        if lookback_ms <= 0:
            raise ValueError(f"lookback_ms: {lookback_ms} must be > 0")
        self.source = source
        self._open_store = open_store
        self.lookback_ms = lookback_ms
        self._emit = emit
        self._clock = clock
        self._poll_s = poll_s
        self._due: dict[str, int] = {}  # symbol → when to fetch it next (epoch ms)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._errors: list[str] = []
        self.fetches = 0  # fetches completed (stored or found nothing new)
        self.stored = 0  # events stored

    def start(self, symbols: Iterable[str]) -> None:
        """Start the thread; ``symbols`` are fetched at once."""
        self.watch(symbols)
        self._thread = threading.Thread(target=self._run, name="funding-loader", daemon=True)
        self._thread.start()

    def watch(self, symbols: Iterable[str]) -> None:
        """Keep the funding of ``symbols`` too (new ones are fetched at once; known ones keep their turn)."""
        now = self._clock()
        with self._lock:
            added = [symbol for symbol in symbols if symbol not in self._due]
            for symbol in added:
                self._due[symbol] = now
        if added:
            self._wake.set()

    @property
    def errors(self) -> tuple[str, ...]:
        """The latest problems (at most 5), oldest first."""
        with self._lock:
            return tuple(self._errors[-5:])

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    # ------------------------------------------------------------------ loading (own thread)
    def _run(self) -> None:
        try:
            store = self._open_store()
        except StorageError as exc:
            self._fail(f"funding: cannot open the database: {exc}")
            return
        with store:
            while not self._stop.is_set():
                now = self._clock()
                with self._lock:
                    due = sorted((when, symbol) for symbol, when in self._due.items() if when <= now)
                for _, symbol in due:
                    if self._stop.is_set():
                        return
                    self._load(store, symbol)
                if not due:
                    self._wake.wait(self._poll_s)  # short steps: the clock may be a test's
                    self._wake.clear()

    def _load(self, store: TickStore, symbol: str) -> None:
        """Fetch the holes in ``symbol``'s known span within the lookback, store them, schedule the next look."""
        now = self._clock()
        retry = now + RETRY_MS
        try:
            self._fill(store, symbol, now)
        except (RuntimeError, StorageError) as exc:  # the client's "reply I cannot use", storage trouble
            self._fail(f"funding {symbol}: {exc}", symbol)
            with self._lock:
                self._due[symbol] = retry
            return
        with self._lock:
            self._due[symbol] = next_refresh_ms(now)
            self.fetches += 1

    def _fill(self, store: TickStore, symbol: str, now: int) -> None:
        start, end = now - self.lookback_ms, known_until_ms(now)
        covered = store.funding_coverage(symbol)
        holes = [(start, end)]
        if covered is not None:
            first, last = covered
            later = (max(start, last + 1 - REFETCH_MS), end) if last < end else (end + 1, end)  # empty: nothing new
            holes = [(start, min(end, first - 1)), later] if last >= start else [(start, end)]
        for hole_start, hole_end in holes:
            if hole_end < hole_start or self._stop.is_set():
                continue
            # Events listed up to PUBLISH_LAG_MS ago; nothing can fall between then and hole_end.
            page = self.source.funding_rates(symbol, hole_start, min(hole_end, now - PUBLISH_LAG_MS) + 1, self._stop)
            if self._stop.is_set():  # cut short: nothing of it counts as fetched
                return
            known_to = hole_end
            if page.problems:
                self._name_problems(symbol, page.problems)
                times = [when for when, _ in page.problems]
                inside = [t for t in times if t is not None and hole_start <= t <= hole_end]
                # The span known stops before the first row refused in it (an event there is unknown); a
                # row whose time is unreadable could be anywhere, so then nothing of the hole is known.
                known_to = hole_start - 1 if None in times else min(inside, default=hole_end + 1) - 1
            if known_to < hole_start:
                continue
            rates = [rate for rate in page.rates if rate.funding_ms <= known_to]
            added = store.write_funding(symbol, rates, hole_start, known_to)
            with self._lock:
                self.stored += added
            if added:
                log.info("funding %s: %d events stored", symbol, added)
                if self._emit is not None:
                    self._emit(FeedEvent(now_ms(), EventKind.HISTORY, symbol, f"{symbol} funding: {added} events"))

    def _name_problems(self, symbol: str, problems: tuple[tuple[int | None, str], ...]) -> None:
        for _, message in problems[:MAX_NAMED]:
            self._fail(message, symbol)
        if len(problems) > MAX_NAMED:
            self._fail(f"{symbol} fundingRate: {len(problems) - MAX_NAMED} more malformed rows not stored", symbol)

    def _fail(self, message: str, symbol: str | None = None) -> None:
        log.warning("%s", message)
        with self._lock:
            self._errors.append(message)
        if self._emit is not None:
            self._emit(FeedEvent(now_ms(), EventKind.ERROR, symbol, message))
