"""Funding history of the watched perpetuals, kept in the futures site's store by a thread of its own.

At start, :class:`FundingLoader` fetches, for every watched perpetual leg (``ETHUSDT.P``; Binance is
asked for ``ETHUSDT``), the funding events of the retained history (``lookback_ms`` back from now)
that the store does not hold yet — the store keeps the span known whole per symbol
(:meth:`~storage.base.TickStore.funding_coverage`), so a restart fetches only the hole its downtime
left — and again right after each funding time.

**What is known.** The span stored as known is one in which every funding event is stored; a
backtest charges funding only inside it and says "funding unknown" outside. It grows from three
facts, each the exchange's word:

1. *A fetch at ``now``* lists every event up to ``now -`` :data:`PUBLISH_LAG_MS` (Binance lists an
   event a moment after its time), and every event up to the last one it lists (one symbol's
   events are listed in time order).
2. *Funding times lie on whole UTC hours* (every 8 h for most perpetuals, 4 h or 1 h for some), so
   what a fetch knows reaches to just before the next whole hour after the later of those two.
3. *The ``<symbol>@markPrice@1s`` stream* (``T``: the next funding time, as of the event time ``E``)
   says no event falls between ``E`` and ``T``: when ``E`` lies inside the known span, the span
   reaches to just before ``T`` (:meth:`FundingLoader._extend`). Only a ``T`` on a whole hour
   within :data:`MAX_FUNDING_INTERVAL_MS` after ``E`` is taken (anything else is not a funding time).

So with the stream flowing the span reaches the next funding time all along, and the event at it
is known :data:`FETCH_DELAY_MS` after it: the look after a funding time is scheduled from the ``T``
the stream announced. When that look finds the event not listed yet, it looks again after the
delays of :data:`UNLISTED_RETRY` (5, 10, 20, 20 … s), which ends by itself once fact 1 covers
the funding time, :data:`PUBLISH_LAG_MS` after it. Without the stream (none received yet, or it
stopped), the loader looks :data:`REFRESH_AFTER_MS` after every whole hour, as fact 2 allows.
Each look asks again for the :data:`REFETCH_MS` before the known span's end (or before now), so an
event listed later than facts 1–3 allow is stored at the next look.

Only the service that writes the database runs it (a recorder, or a dashboard with no recorder);
a following dashboard reads the same table. Rows the exchange garbles are named in a feed event
and not stored, and the known span stops before the first of them, so a backtest says "funding
unknown" there rather than counting zero. A failed fetch (HTTP error, ban, unknown symbol,
storage trouble, the database not opening) is reported the same way and tried again :data:`RETRY_MS`
later. Every message names the leg (``ETHUSDT.P``), as the rest of the futures page does.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from typing import Protocol, runtime_checkable

from domain import Leg, Market
from records import EventKind, FeedEvent, FundingRate, MarkPrice, now_ms
from records.retry import RetryPolicy
from storage.base import TickStore
from storage.errors import StorageError

log = logging.getLogger(__name__)

HOUR_MS = 3_600_000
# Binance lists a funding event a moment after its time; what is older than this is taken as listed.
PUBLISH_LAG_MS = 60_000
REFRESH_AFTER_MS = 120_000  # without the stream: look again this long after each whole hour (past PUBLISH_LAG_MS)
RETRY_MS = 300_000  # after a failed fetch
# The look after a funding time the stream announced: this long after it (Binance lists it within seconds).
FETCH_DELAY_MS = 5_000
# A look that found the announced event not listed yet looks again after these delays (seconds, n = looks so
# far); bounded by PUBLISH_LAG_MS, after which fact 1 knows the funding time whether it is listed or not.
UNLISTED_RETRY = RetryPolicy(base_s=FETCH_DELAY_MS / 1000, cap_s=20.0, jitter=False)
# Binance's longest funding interval: a stream's next funding time further ahead is no funding time.
MAX_FUNDING_INTERVAL_MS = 8 * HOUR_MS
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
    """When to look again after a fetch at ``now`` without the stream: :data:`REFRESH_AFTER_MS` past the
    next whole hour."""
    return now - now % HOUR_MS + HOUR_MS + REFRESH_AFTER_MS


def hour_end_ms(at_ms: int) -> int:
    """The last millisecond before the whole UTC hour after ``at_ms`` (no funding time falls in
    ``(at_ms, hour_end_ms(at_ms)]`` when ``at_ms`` is on an hour or none falls between it and its hour)."""
    return at_ms - at_ms % HOUR_MS + HOUR_MS - 1


def known_until_ms(now: int, last_listed_ms: int | None = None) -> int:
    """The last instant whose funding a fetch at ``now`` knows (inclusive), by facts 1 and 2 of the module
    docstring: before the whole hour after the later of ``now - PUBLISH_LAG_MS`` and the last event the
    fetch listed (``last_listed_ms``, UTC epoch ms; None when it listed none)."""
    listed = now - PUBLISH_LAG_MS if last_listed_ms is None else max(now - PUBLISH_LAG_MS, last_listed_ms)
    return hour_end_ms(listed)


def announced_ms(mark: MarkPrice | None) -> int | None:
    """The next funding time ``mark`` announces (UTC epoch ms), or None when it is no funding time: not on
    a whole hour, or not within :data:`MAX_FUNDING_INTERVAL_MS` after the update's event time."""
    if mark is None:
        return None
    ahead = mark.next_funding_ms - mark.event_ms
    if mark.next_funding_ms % HOUR_MS or not 0 < ahead <= MAX_FUNDING_INTERVAL_MS:
        return None
    return mark.next_funding_ms


def _exchange_symbol(leg: str) -> str:
    """The exchange's symbol of the perpetual ``leg`` (``ETHUSDT.P`` → ``ETHUSDT``); ValueError naming
    the leg when it is not a USDⓈ-M perpetual (spot pays no funding)."""
    parsed = Leg.parse(leg)
    if parsed.market is not Market.USDM:
        raise ValueError(f"funding: {leg!r} is not a perpetual leg (such as {parsed.symbol}.P): spot pays no funding")
    return parsed.symbol


class FundingLoader:
    """Background loader of the watched perpetuals' funding history (see the module docstring).

    ``source`` is the REST client; ``open_store`` opens the store this thread writes to (the
    futures site's tick store); ``lookback_ms`` is how far back history is kept (the retention);
    ``emit`` receives a feed event per stored fetch, malformed row and failure. ``marks`` gives
    the newest mark price update of a leg (:meth:`ingestion.engine.Engine.mark_price`; None: no
    stream, look every hour). ``clock`` gives UTC epoch ms (tests move it). :attr:`errors` keeps the
    latest problems.
    """

    def __init__(self, source: FundingRates, open_store: Callable[[], TickStore], lookback_ms: int, *,
                 emit: Callable[[FeedEvent], None] | None = None,
                 marks: Callable[[str], MarkPrice | None] | None = None, clock: Callable[[], int] = now_ms,
                 poll_s: float = IDLE_POLL_S) -> None:
        if lookback_ms <= 0:
            raise ValueError(f"lookback_ms: {lookback_ms} must be > 0")
        self.source = source
        self._open_store = open_store
        self.lookback_ms = lookback_ms
        self._emit = emit
        self._marks = marks
        self._clock = clock
        self._poll_s = poll_s
        self._due: dict[str, int] = {}  # leg → when to fetch it next (epoch ms)
        self._looked: dict[str, int] = {}  # leg → when it was last fetched, well or not (epoch ms)
        self._unlisted: dict[str, int] = {}  # leg → looks in a row that found its funding time not listed yet
        self._known: dict[str, int] = {}  # leg → the end of its known span in the store (inclusive epoch ms)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._errors: list[str] = []
        self.fetches = 0  # fetches completed (stored or found nothing new)
        self.stored = 0  # events stored

    def start(self, legs: Iterable[str]) -> None:
        """Start the thread; ``legs`` (perpetuals, ``ETHUSDT.P``) are fetched at once."""
        self.watch(legs)
        self._thread = threading.Thread(target=self._run, name="funding-loader", daemon=True)
        self._thread.start()

    def watch(self, legs: Iterable[str]) -> None:
        """Keep the funding of the perpetual ``legs`` too (new ones are fetched at once; known ones keep
        their turn). ValueError naming a leg that is not a perpetual."""
        wanted = [leg for leg in dict.fromkeys(legs) if _exchange_symbol(leg)]
        now = self._clock()
        with self._lock:
            added = [leg for leg in wanted if leg not in self._due]
            for leg in added:
                self._due[leg] = now
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
    def _open(self) -> TickStore | None:
        """The store, tried again :data:`RETRY_MS` after each failure to open it (a server restarting as
        the service starts: giving up there left the recorder without funding until it restarted); None
        once stopped."""
        while not self._stop.is_set():
            try:
                return self._open_store()
            except StorageError as exc:
                self._fail(f"funding: cannot open the database (trying again in {RETRY_MS // 60_000} min): {exc}")
            retry_at = self._clock() + RETRY_MS
            while not self._stop.is_set() and self._clock() < retry_at:
                self._wake.wait(self._poll_s)  # short steps: the clock may be a test's
                self._wake.clear()
        return None

    def _run(self) -> None:
        store = self._open()
        if store is None:
            return
        with store:
            while not self._stop.is_set():
                now = self._clock()
                self._follow_stream(store)
                with self._lock:
                    due = sorted((when, leg) for leg, when in self._due.items() if when <= now)
                for _, leg in due:
                    if self._stop.is_set():
                        return
                    self._load(store, leg)
                if not due:
                    self._wake.wait(self._poll_s)  # short steps: the clock may be a test's
                    self._wake.clear()

    def _follow_stream(self, store: TickStore) -> None:
        """What each leg's newest mark price says: its known span reaches the announced funding time
        (fact 3), and then nothing is to be learned before it: the next look is :data:`FETCH_DELAY_MS`
        after it (not at the hourly looks)."""
        if self._marks is None:
            return
        with self._lock:
            legs = list(self._due)
        for leg in legs:
            mark = self._marks(leg)
            funding_ms = announced_ms(mark)
            if mark is None or funding_ms is None:
                continue
            self._extend(store, leg, mark.event_ms, funding_ms)
            look = funding_ms + FETCH_DELAY_MS
            with self._lock:
                # Unless a look was made since (a stream that stopped keeps announcing a time gone by: one look
                # after it, then the hourly ones; a failed look waits RETRY_MS, not a loop of looks).
                if self._known.get(leg, -1) >= funding_ms - 1 and self._looked.get(leg, look) < look:
                    self._due[leg] = look

    def _extend(self, store: TickStore, leg: str, event_ms: int, funding_ms: int) -> None:
        """Fact 3: no event between ``event_ms`` and ``funding_ms``, so a known span holding
        ``event_ms`` reaches to ``funding_ms - 1``."""
        known = self._known.get(leg)
        if known is None or not event_ms <= known < funding_ms - 1:
            return
        try:
            store.write_funding(_exchange_symbol(leg), [], known + 1, funding_ms - 1)
        except StorageError as exc:
            self._fail(f"funding {leg}: {exc}", leg)
            del self._known[leg]  # not again at every poll: the next look reads the span afresh
            return
        self._known[leg] = funding_ms - 1

    def _load(self, store: TickStore, leg: str) -> None:
        """Fetch the holes in ``leg``'s known span within the lookback, store them, schedule the next look."""
        now = self._clock()
        with self._lock:
            self._looked[leg] = now
        try:
            known, clean = self._fill(store, leg, now)
        except (RuntimeError, StorageError) as exc:  # the client's "reply I cannot use", storage trouble
            self._fail(f"funding {leg}: {exc}", leg)
            with self._lock:
                self._due[leg] = now + RETRY_MS
            return
        if known is not None:
            self._known[leg] = known
        with self._lock:
            if clean and known is not None and known < now:
                # The funding time just passed is not listed yet (fact 1 does not reach it): look again soon.
                tries = self._unlisted.get(leg, 0)
                self._unlisted[leg] = tries + 1
                self._due[leg] = now + int(UNLISTED_RETRY.delay_s(tries) * 1000)
            else:
                self._unlisted.pop(leg, None)
                self._due[leg] = next_refresh_ms(now)  # _follow_stream moves it to the next announced time
            self.fetches += 1

    def _fill(self, store: TickStore, leg: str, now: int) -> tuple[int | None, bool]:
        """Fetch and store ``leg``'s holes; (the end of its known span after, whether no row was refused)."""
        symbol = _exchange_symbol(leg)
        start = now - self.lookback_ms
        covered = store.funding_coverage(symbol)
        holes: list[tuple[int, int | None]] = [(start, None)]  # (first, last; None: what this look knows)
        if covered is not None and covered[1] >= start:
            first, last = covered
            holes = [(start, first - 1)] if first > start else []
            if last < now:  # else every event up to now is stored (the stream's word, or a restart within the hour)
                holes.append((max(start, last + 1 - REFETCH_MS), None))
        clean = True
        for hole_start, hole_end in holes:
            if (hole_end is not None and hole_end < hole_start) or self._stop.is_set():
                continue
            page = self.source.funding_rates(symbol, hole_start, (now if hole_end is None else hole_end) + 1,
                                             self._stop)
            if self._stop.is_set():  # cut short: nothing of it counts as fetched
                break
            listed = [rate.funding_ms for rate in page.rates]
            known_to = known_until_ms(now, max(listed, default=None)) if hole_end is None else hole_end
            if page.problems:
                clean = False
                self._name_problems(leg, page.problems)
                times = [when for when, _ in page.problems]
                inside = [t for t in times if t is not None and hole_start <= t <= known_to]
                # The span known stops before the first row refused in it (an event there is unknown); a
                # row whose time is unreadable could be anywhere, so then nothing of the hole is known.
                known_to = hole_start - 1 if None in times else min(inside, default=known_to + 1) - 1
            if known_to < hole_start:
                continue
            rates = [rate for rate in page.rates if rate.funding_ms <= known_to]
            added = store.write_funding(symbol, rates, hole_start, known_to)
            with self._lock:
                self.stored += added
            if added:
                log.info("funding %s: %d events stored", leg, added)
                if self._emit is not None:
                    self._emit(FeedEvent(now_ms(), EventKind.HISTORY, leg, f"{leg} funding: {added} events"))
        covered = store.funding_coverage(symbol)
        return (None if covered is None else covered[1]), clean

    def _name_problems(self, leg: str, problems: tuple[tuple[int | None, str], ...]) -> None:
        for _, message in problems[:MAX_NAMED]:
            self._fail(f"funding {leg}: {message}", leg)
        if len(problems) > MAX_NAMED:
            self._fail(f"funding {leg}: {len(problems) - MAX_NAMED} more malformed fundingRate rows not stored", leg)

    def _fail(self, message: str, leg: str | None = None) -> None:
        log.warning("%s", message)
        with self._lock:
            self._errors.append(message)
        if self._emit is not None:
            self._emit(FeedEvent(now_ms(), EventKind.ERROR, leg, message))
