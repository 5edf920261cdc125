"""Live trades of one Binance venue over as many combined-stream connections as its symbols need.

Binance caps the streams of one connection (spot 1,024; USDⓈ-M 200, i.e. 100 symbols with their mark
price) and the length of its URL (8,004 characters: about 530 spot symbols): :class:`BinanceFeed`
splits the watched symbols into groups of at most
:attr:`Venue.max_symbols <ingestion.binance.venue.Venue.max_symbols>` whose streams fit
:data:`MAX_STREAMS_CHARS` and runs one
:class:`~ingestion.binance.stream.BinanceSource` per group, each in its own thread with its own
connection. Each keeps every guarantee of a single connection (reconnect with backoff, the 24 h
rollover, the staleness watchdog and pings); all share one connection-attempt budget (Binance
counts attempts per IP) and hand their trades to the one sink through a lock, so the engine's
sequencer sees one symbol's trades from one connection only and detects (and backfills) a gap of a
dropped connection exactly as before, while the other connections keep flowing.

Symbols added at runtime go to the first connection with room, or a new one; a connection whose
symbols are all removed is closed. The feed's status aggregates: connected while any connection
is, the count of connections up (``2/3 connections up``) and the error of one that is down, naming
its symbols (``connection 2/3 (BNBUSDT, XRPUSDT, ADAUSDT): …``).

A connection whose thread crashes (a bug, not a network error: those it rides out itself) is
reported — an error feed event naming its symbols, and the feed's error ``connection 2/3 (BNBUSDT, …):
connection crashed: …; restarting in 1.2 s`` while it is down — and started again on a fresh
connection after the delays of its own reconnect backoff (``--backoff-initial`` doubling up to
``--backoff-max``, jittered), for as long as the feed runs: its symbols are never left silent for
good. The trades missed meanwhile are gaps, detected and backfilled as after any drop.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from config import FeedSettings
from ingestion.backoff import AttemptBudget, Backoff
from ingestion.binance.stream import BinanceSource, stream_names
from ingestion.binance.venue import SPOT, Venue
from ingestion.source import SourceStats, TradeSink
from records import EventKind, FeedEvent, FeedState, MarkPrice, Trade, now_ms
from records.clock import SYSTEM_CLOCK, Clock

log = logging.getLogger(__name__)

STOP_JOIN_S = 10.0  # how long stopping waits for all connections together to close
# Binance refuses a combined-stream URL over 8,004 characters (measured by unicorn-binance-websocket-api,
# its issue #17), however few streams it names: the ``streams=`` part of each connection's URL is kept
# below this, leaving room for the base (``wss://stream.binance.com:9443/stream?streams=`` is 45).
MAX_STREAMS_CHARS = 7_900
NAMED_SYMBOLS = 5  # symbols of a connection named in the feed's error (the rest counted)


def split_names(symbols: Sequence[str], shown: int = NAMED_SYMBOLS) -> str:
    """The first ``shown`` of ``symbols`` and how many more: ``BNBUSDT, XRPUSDT and 98 more``."""
    named = ", ".join(symbols[:shown])
    return named if len(symbols) <= shown else f"{named} and {len(symbols) - shown} more"


class _LockedSink:
    """One sink fed from several connection threads, one call at a time (the engine's sink is
    written for one source thread)."""

    def __init__(self, sink: TradeSink) -> None:
        self._sink = sink
        self._lock = threading.Lock()

    def on_trade(self, trade: Trade) -> None:
        with self._lock:
            self._sink.on_trade(trade)

    def on_non_market(self, symbol: str, trade_id: int) -> None:
        with self._lock:
            self._sink.on_non_market(symbol, trade_id)

    def on_mark_price(self, mark: MarkPrice) -> None:
        with self._lock:
            self._sink.on_mark_price(mark)

    def on_event(self, event: FeedEvent) -> None:
        with self._lock:
            self._sink.on_event(event)


@dataclass
class _Closed:
    """What connections no longer run counted (their share of the feed's totals), without keeping them."""

    reconnects: int = 0
    messages: int = 0
    parse_errors: int = 0
    unknown_messages: int = 0
    connections_opened: int = 0

    def add(self, source: BinanceSource) -> None:
        stats = source.stats
        self.reconnects += stats.reconnects
        self.messages += stats.messages
        self.parse_errors += stats.parse_errors
        self.unknown_messages += stats.unknown_messages
        self.connections_opened += source.connections_opened


@dataclass
class _Shard:
    """One connection's source, the event that stops it alone, and its thread once started."""

    source: BinanceSource
    stop: threading.Event
    thread: threading.Thread | None = None


class BinanceFeed:
    """The live source of a :class:`Venue` (spot by default): ``symbols`` over one connection per
    :attr:`Venue.max_symbols` of them. ``make_connection`` builds the source of one group of symbols
    (:meth:`from_settings` gives it the settings' endpoints and timings)."""

    def __init__(self, symbols: tuple[str, ...], make_connection: Callable[[tuple[str, ...]], BinanceSource], *,
                 venue: Venue = SPOT) -> None:
        self.venue = venue
        self.name = venue.source
        self.label = venue.label
        self._make = make_connection
        self._lock = threading.Lock()  # guards _shards, _retired, _sink and _stopping
        self._shards: list[_Shard] = []
        self._retired: list[_Shard] = []  # emptied by set_symbols: stopping, joined at the end
        self._crashed = _Closed()  # the counts of connections that crashed (a fresh one runs in their place)
        self._sink: _LockedSink | None = None
        self._stopping = False
        # Binance allows 300 connection attempts per 5 minutes per IP, however many connections: one budget.
        self.budget = AttemptBudget(limit=100, window_s=300.0)
        self._wanted: tuple[str, ...] = ()
        self.set_symbols(symbols)

    @classmethod
    def from_settings(cls, feed: FeedSettings, *, venue: Venue = SPOT, clock: Clock = SYSTEM_CLOCK) -> BinanceFeed:
        """The live ``venue`` feed of ``feed``'s symbols; each connection configured as
        :meth:`BinanceSource.from_settings` configures the one."""
        def make(symbols: tuple[str, ...]) -> BinanceSource:
            return BinanceSource.from_settings(dataclasses.replace(feed, symbols=symbols), venue=venue, clock=clock)

        return cls(feed.symbols, make, venue=venue)

    # ------------------------------------------------------------------ symbols
    @property
    def symbols(self) -> tuple[str, ...]:
        return self._wanted

    @property
    def connections(self) -> tuple[tuple[str, ...], ...]:
        """The symbols of each connection, in the order the connections were made."""
        with self._lock:
            return tuple(tuple(shard.source.symbols) for shard in self._shards)

    @property
    def urls(self) -> tuple[str, ...]:
        """Each connection's combined-stream URL."""
        with self._lock:
            return tuple(shard.source.url for shard in self._shards)

    @property
    def connections_opened(self) -> int:
        """Connections opened so far, over every group (rollovers and reconnects included)."""
        with self._lock:
            return self._crashed.connections_opened + sum(shard.source.connections_opened
                                                          for shard in (*self._shards, *self._retired))

    def set_symbols(self, symbols: tuple[str, ...]) -> None:
        """Watch ``symbols`` from now on. A symbol already watched stays on its connection (it loses
        nothing); a new one goes to the first connection with room, else to a new connection; a
        connection left without symbols is closed."""
        wanted = tuple(dict.fromkeys(symbols))
        with self._lock:
            self._wanted = wanted
            keep = set(wanted)
            groups = [[s for s in shard.source.symbols if s in keep] for shard in self._shards]
            placed = {s for group in groups for s in group}
            pending = [s for s in wanted if s not in placed]
            for group in groups:
                self._fill(group, pending)
            kept: list[_Shard] = []
            for shard, group in zip(self._shards, groups, strict=True):
                if not group:
                    shard.stop.set()
                    self._retired.append(shard)
                    continue
                if tuple(group) != tuple(shard.source.symbols):
                    shard.source.set_symbols(tuple(group))
                kept.append(shard)
            while pending:
                group = []
                self._fill(group, pending)
                shard = self._new_shard(tuple(group))
                kept.append(shard)
                if self._sink is not None and not self._stopping:
                    self._start(shard, len(kept))
            self._shards = kept

    def _fill(self, group: list[str], pending: list[str]) -> None:
        """Move symbols from the front of ``pending`` into ``group`` while it has room: at most
        :attr:`Venue.max_symbols` symbols, their streams at most :data:`MAX_STREAMS_CHARS` characters
        in the URL. An empty group always takes one (a symbol is never left without a connection)."""
        chars = len("/".join(stream_names(tuple(group), self.venue)))
        while pending and len(group) < self.venue.max_symbols:
            more = len("/".join(stream_names((pending[0],), self.venue))) + (1 if group else 0)
            if group and chars + more > MAX_STREAMS_CHARS:
                return
            chars += more
            group.append(pending.pop(0))

    def _new_shard(self, symbols: tuple[str, ...]) -> _Shard:
        source = self._make(symbols)
        source.budget = self.budget
        return _Shard(source, threading.Event())

    # ------------------------------------------------------------------ lifecycle
    def run(self, sink: TradeSink, stop: threading.Event) -> None:
        """Run every connection until ``stop`` is set; never raises for network errors (a connection's
        crash is logged, reported as an error event and leaves the others running)."""
        with self._lock:
            self._sink = _LockedSink(sink)
            for number, shard in enumerate(self._shards, 1):
                self._start(shard, number)
        try:
            stop.wait()
        finally:
            with self._lock:
                self._stopping = True
                shards = [*self._shards, *self._retired]
            for shard in shards:
                shard.stop.set()
            deadline = time.monotonic() + STOP_JOIN_S
            for shard in shards:
                if shard.thread is not None:
                    shard.thread.join(max(0.0, deadline - time.monotonic()))

    def _start(self, shard: _Shard, number: int) -> None:
        """Start ``shard``'s thread (the caller holds the lock and has set the sink)."""
        sink = self._sink
        assert sink is not None
        shard.thread = threading.Thread(target=self._run_shard, args=(shard, sink), daemon=True,
                                        name=f"source-{self.name}-{number}")
        shard.thread.start()

    def _run_shard(self, shard: _Shard, sink: _LockedSink) -> None:
        """Run ``shard``'s connection until its stop is set; a crash is reported and the connection
        started afresh after its backoff's delay (see the module docstring)."""
        backoff = Backoff(shard.source.backoff.initial, shard.source.backoff.cap)
        while True:
            source = shard.source
            try:
                source.run(sink, shard.stop)
                return
            except Exception as exc:  # one connection's bug must not take the others down, or its symbols
                delay = backoff.next_delay()
                symbols = ",".join(source.symbols)
                log.exception("connection of %s crashed; restarting in %.1f s", symbols, delay)
                source.stats.last_error = f"connection crashed: {exc!r}; restarting in {delay:.1f} s"
                source.stats.state = FeedState.STOPPED
                sink.on_event(FeedEvent(now_ms(), EventKind.ERROR, None,
                                        f"connection of {symbols} crashed: {exc!r}; restarting in {delay:.1f} s"))
            if shard.stop.wait(delay) or not self._restart(shard):
                return

    def _restart(self, shard: _Shard) -> bool:
        """Give ``shard`` a fresh connection for its symbols now (the crashed one's counters are kept with the
        closed connections'); False when the feed is stopping or the shard was closed meanwhile."""
        with self._lock:
            if self._stopping or shard.stop.is_set() or shard not in self._shards:
                return False
            crashed = shard.source
            # Its counts stay in the totals; not the connection itself (a crash loop would keep thousands).
            self._crashed.add(crashed)
            shard.source = self._make(tuple(crashed.symbols))
            shard.source.budget = self.budget
            log.info("connection of %s restarted", ",".join(shard.source.symbols))
            return True

    # ------------------------------------------------------------------ status
    @property
    def stats(self) -> SourceStats:
        """The connections' counters summed, as one feed: connected while any connection is (how many
        are up in ``connections_up`` of ``connections``), the error of the first one down (else of
        the first one with an error), prefixed with which connection it is when there are several.
        The counters (messages, reconnects, errors) include the connections closed since, as a single
        connection's count from its start: a total never goes back (the engine's rates are deltas)."""
        with self._lock:  # the sources of one moment: a restart swaps a shard's source and its counts together
            sources = [shard.source for shard in self._shards]
            closed = [shard.source.stats for shard in self._retired]
            crashed = dataclasses.replace(self._crashed)
        parts = [source.stats for source in sources]
        counted = parts + closed
        total = len(parts)
        up = sum(part.state is FeedState.CONNECTED for part in parts)
        states = {part.state for part in parts}
        if up:
            state = FeedState.CONNECTED
        elif FeedState.RECONNECTING in states:
            state = FeedState.RECONNECTING
        elif FeedState.CONNECTING in states:
            state = FeedState.CONNECTING
        elif states <= {FeedState.IDLE}:
            state = FeedState.IDLE
        else:
            state = FeedState.STOPPED
        down = [(number, part) for number, part in enumerate(parts, 1)
                if part.state is not FeedState.CONNECTED and part.last_error]
        erred = down or [(number, part) for number, part in enumerate(parts, 1) if part.last_error]
        error = None
        if erred:
            number, part = erred[0]
            # Which legs it carries: while the others flow the feed is "connected" and its last tick recent,
            # so this error is all that tells a desk which legs get no trades.
            error = part.last_error if total == 1 else \
                f"connection {number}/{total} ({split_names(sources[number - 1].symbols)}): {part.last_error}"
        since = [part.connected_since_ms for part in parts if part.connected_since_ms is not None]
        heard = [part.last_message_mono for part in parts if part.last_message_mono is not None]
        return SourceStats(
            state=state,
            connected_since_ms=min(since) if since else None,
            reconnects=crashed.reconnects + sum(part.reconnects for part in counted),
            messages=crashed.messages + sum(part.messages for part in counted),
            last_message_mono=max(heard) if heard else None,
            parse_errors=crashed.parse_errors + sum(part.parse_errors for part in counted),
            unknown_messages=crashed.unknown_messages + sum(part.unknown_messages for part in counted),
            last_error=error,
            connections=total,
            connections_up=up,
            silent=tuple(s for number, _ in down for s in sources[number - 1].symbols) if total > 1 else (),
        )
