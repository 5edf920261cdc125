"""Live Binance trades (spot or USDⓈ-M futures: a :class:`~ingestion.binance.venue.Venue`) over ONE
combined-stream WebSocket connection (:class:`~ingestion.binance.split.BinanceFeed` runs as many of
these as the venue's per-connection stream cap needs).

What the real exchange does, and how this source copes:

* drops, resets, close frames → reconnect with capped exponential backoff and full jitter
  (:mod:`ingestion.backoff`), reset once a connection has stayed up ``stable_after`` seconds,
  never more than 100 attempts per 5 minutes (Binance allows 300);
* the server pings every 20 s (futures: every 3 min) → websocket-client answers each ping with a pong carrying its
  payload (``recv_data_frame`` does this before returning the frame to us);
* half-open sockets → our own ping every ``ping_interval`` with a ``pong_timeout``, and a
  watchdog that drops a connection silent for ``stale_after`` seconds (our pings draw a pong
  every ``ping_interval``, so 30 s of nothing means the socket is dead, on futures too);
* USDⓈ-M mark price and funding (``<symbol>@markPrice@1s``, on the same connection as the trades)
  → handed to the sink's ``on_mark_price``; they carry no trade id, so gap detection never sees them;
* futures trades that are not market prints (``X`` other than ``MARKET``) → handed to the sink's
  ``on_non_market`` (their ids count for gap detection), never as trades;
* ``serverShutdown`` notices and the 24 h connection limit → open a new connection first, keep
  reading the old one until the new one delivers data, then close the old one. Trades seen on
  both are dropped by the engine's sequencer and by the store's idempotent insert;
* a change of the watched symbols (another dashboard tab watching more) → ``SUBSCRIBE`` /
  ``UNSUBSCRIBE`` requests on the open connection, so the symbols already watched lose nothing.

The socket is read in this thread with a short timeout so that stop requests and the watchdog
are serviced even when the market is quiet.
"""

from __future__ import annotations

import json
import logging
import random
import select
import socket
import threading
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import websocket

from config import FeedSettings
from ingestion.backoff import AttemptBudget, Backoff
from ingestion.binance.parse import (
    MalformedMessage,
    MarkPrice,
    NonMarketTrade,
    ServerShutdown,
    SubscriptionReply,
    UnknownMessage,
    parse_frame,
)
from ingestion.binance.venue import SPOT, Venue
from ingestion.http import DeadlineSocket, open_socket
from ingestion.source import SourceStats, TradeSink
from records import EventKind, FeedEvent, FeedState, Trade, now_ms
from records.clock import SYSTEM_CLOCK, Clock

log = logging.getLogger(__name__)

RECV_POLL_S = 0.25  # socket read timeout: bounds how late a stop request or watchdog check can be
HOUSEKEEPING_EVERY_S = 0.1
READ_AHEAD = 8192  # bytes per socket read; see _open
OVERLAP_TIMEOUT_S = 10.0  # longest we keep reading the old connection after opening its successor
OVERLAP_RETRY_S = 10.0  # after a failed rollover attempt, keep the old connection and retry later


def stream_names(symbols: tuple[str, ...], venue: Venue = SPOT) -> list[str]:
    """Every stream of the legs ``symbols`` on ``venue``, per leg in the venue's order: ``btcusdt@trade``
    (spot ``BTCUSDT``); ``btcusdt@trade``, ``btcusdt@markPrice@1s`` (USDⓈ-M ``BTCUSDT.P``: the wire
    carries the exchange's symbol)."""
    return [f"{venue.exchange_symbol(symbol).lower()}@{name}" for symbol in symbols for name in venue.symbol_streams]


def stream_url(ws_url: str, symbols: tuple[str, ...], venue: Venue = SPOT) -> str:
    """Combined-stream URL, e.g. ``wss://…:9443/stream?streams=btcusdt@trade/ethusdt@trade`` (spot),
    ``wss://fstream.binance.com/market/stream?streams=btcusdt@trade/btcusdt@markPrice@1s/…``
    (USDⓈ-M: the venue's path and streams)."""
    return f"{ws_url}{venue.stream_path}?streams=" + "/".join(stream_names(symbols, venue))


@dataclass
class _Connection:
    """One open socket and its liveness bookkeeping (monotonic seconds)."""

    ws: websocket.WebSocket
    opened: float
    opened_ms: int
    last_frame: float
    last_ping: float
    awaiting_pong_since: float | None = None
    shutdown_notice: bool = False
    stable: bool = False
    # Per symbol, the newest trade id read from this connection.
    last_ids: dict[str, int] = field(default_factory=dict)
    # A rollover successor holds its trades (and non-market ids) until the old connection has
    # caught up with them, and notes the first id it holds per symbol.
    held: list[Trade | NonMarketTrade] | None = None
    first_held_ids: dict[str, int] = field(default_factory=dict)
    # The symbols whose streams this connection carries (its URL, then SUBSCRIBE/UNSUBSCRIBE).
    subscribed: tuple[str, ...] = ()


class BinanceSource:
    """Source of live trades of one :class:`Venue` (spot by default) for several symbols on one connection.

    ``symbols`` are leg names (:class:`domain.Leg`): on USDⓈ-M ``BTCUSDT.P`` (a plain ``BTCUSDT`` is
    taken as that perpetual), and every trade, non-market id and mark price it hands on carries the
    leg name; only the stream names on the wire carry the exchange's symbol. A perpetual leg on the
    spot venue is refused (ValueError naming it).

    ``clock``: the monotonic time the watchdog, pings, rollover and reconnect backoff run on, and
    their waits (a test's, or the machine's); wall-clock stamps (``recv_ms``, events) stay on
    :func:`records.now_ms`. Other timings are in seconds.
    """

    def __init__(
        self,
        symbols: tuple[str, ...],
        ws_url: str | None = None,
        *,
        venue: Venue = SPOT,
        ping_interval: float = 20.0,
        pong_timeout: float = 30.0,
        stale_after: float = 30.0,
        max_connection_age: float = 23.5 * 3600,
        backoff_initial: float = 1.0,
        backoff_max: float = 30.0,
        stable_after: float = 60.0,
        connect_timeout: float = 10.0,
        rng: random.Random | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        symbols = venue.legs(symbols)  # ValueError for a perpetual on spot; plain symbols are USDⓈ-M's perpetuals
        if len(symbols) > venue.max_symbols:  # Binance would refuse the connection (HTTP 400) for ever
            per_symbol = len(venue.symbol_streams)
            raise ValueError(f"symbols: {len(symbols)} symbols need {len(symbols) * per_symbol} streams "
                             f"({per_symbol} per symbol: {', '.join(venue.symbol_streams)}), but one "
                             f"{venue.label.removeprefix('LIVE ')} connection carries at most "
                             f"{venue.max_streams} streams ({venue.max_symbols} symbols)")
        self.symbols = symbols
        self.venue = venue
        self.name = venue.source
        self.ws_url = venue.ws_url if ws_url is None else ws_url
        self.url = stream_url(self.ws_url, symbols, venue)
        self.label = venue.label
        self.stats = SourceStats()
        self.ping_interval = ping_interval
        self.pong_timeout = pong_timeout
        self.stale_after = stale_after
        self.max_connection_age = max_connection_age
        self.stable_after = stable_after
        self.connect_timeout = connect_timeout
        self._clock = clock
        self.backoff = Backoff(backoff_initial, backoff_max, rng)
        self.budget = AttemptBudget(limit=100, window_s=300.0, clock=clock.monotonic)
        self.connections_opened = 0
        self._sink: TradeSink | None = None
        self._wanted = symbols  # set by set_symbols from any thread, applied by the source thread
        self._request_id = 0
        self._suffix = venue.leg("")  # what makes an exchange symbol this venue's leg name ("" or ".P")

    @classmethod
    def from_settings(cls, feed: FeedSettings, *, venue: Venue = SPOT, clock: Clock = SYSTEM_CLOCK) -> BinanceSource:
        """The live ``venue`` source of ``feed``'s symbols, connected as its ``exchange`` slice says
        (its ``ws_url``, if set, replaces the venue's)."""
        exchange = feed.exchange
        return cls(
            feed.symbols,
            exchange.ws_url,
            venue=venue,
            ping_interval=exchange.ping_interval,
            pong_timeout=exchange.pong_timeout,
            stale_after=exchange.stale_after,
            max_connection_age=exchange.max_connection_age,
            backoff_initial=exchange.backoff_initial,
            backoff_max=exchange.backoff_max,
            stable_after=exchange.stable_after,
            connect_timeout=exchange.connect_timeout,
            clock=clock,
        )

    def set_symbols(self, symbols: tuple[str, ...]) -> None:
        """Watch ``symbols`` from now on; the source thread (re)subscribes within ~0.1 s.

        Reconnections use the new set; the open connection changes its subscriptions in place.
        """
        self._wanted = self.venue.legs(symbols)
        self.symbols = self._wanted
        self.url = stream_url(self.ws_url, self._wanted, self.venue)

    # ------------------------------------------------------------------ lifecycle
    def run(self, sink: TradeSink, stop: threading.Event) -> None:
        """Stream until ``stop`` is set, reconnecting as needed. Never raises for network errors."""
        self._sink = sink
        conn: _Connection | None = None
        try:
            while not stop.is_set():
                if conn is None:
                    conn = self._connect_with_backoff(stop)
                    if conn is None:
                        break
                conn = self._pump(conn, stop)
                if conn is not None:  # a rollover successor, possibly after the old one died
                    self.stats.state = FeedState.CONNECTED
                    self.stats.connected_since_ms = conn.opened_ms
        finally:
            if conn is not None:
                self._close(conn, graceful=True)
            self.stats.state = FeedState.STOPPED
            self.stats.connected_since_ms = None

    def _connect_with_backoff(self, stop: threading.Event) -> _Connection | None:
        # Only the very first connection of the process goes out without a jittered delay.
        immediate = self.connections_opened == 0
        while not stop.is_set():
            wait = self.budget.wait_needed()
            if wait > 0:
                self._set_error(f"connection attempt budget exhausted; waiting {wait:.0f} s")
                self._clock.wait(stop, wait)
                continue
            if not immediate:
                delay = self.backoff.next_delay()
                self.stats.state = FeedState.RECONNECTING
                if self._clock.wait(stop, delay):
                    return None
            else:
                self.stats.state = FeedState.CONNECTING
            immediate = False
            try:
                return self._open()
            except (OSError, websocket.WebSocketException) as exc:
                self._set_error(f"connect to {self.url} failed: {_describe(exc)}")
                self._emit(EventKind.ERROR, self.stats.last_error or "")
        return None

    def _open(self, *, rollover: bool = False) -> _Connection:
        """Open and hand-shake one connection; records the attempt against the budget.

        A ``rollover`` (planned overlap before a shutdown or the age limit) is not a reconnect.
        """
        self.budget.record()
        symbols = self._wanted  # read once: set_symbols may replace it meanwhile
        url = stream_url(self.ws_url, symbols, self.venue)
        ws = self._handshake(url)
        ws.settimeout(RECV_POLL_S)
        # websocket-client asks the socket for exactly the bytes of each header field and payload
        # (2-3 recv() calls per frame). Letting each call read ahead up to READ_AHEAD bytes keeps
        # the surplus in the frame buffer (recv_strict keeps what it did not consume) and cuts
        # syscalls to a handful per hundred frames under load.
        recv = ws._recv

        def read_ahead(_n: int) -> bytes:
            return recv(READ_AHEAD)

        ws.frame_buffer.recv = read_ahead
        now = self._clock.monotonic()
        if self.connections_opened and not rollover:
            self.stats.reconnects += 1
        self.connections_opened += 1
        self.stats.state = FeedState.CONNECTED
        opened_ms = now_ms()
        self.stats.connected_since_ms = opened_ms
        self._emit(EventKind.CONNECTED, url)
        log.info("connected to %s", url)
        return _Connection(ws, opened=now, opened_ms=opened_ms, last_frame=now, last_ping=now,
                           held=[] if rollover else None, subscribed=symbols)

    def _handshake(self, url: str) -> websocket.WebSocket:
        """A WebSocket on ``url`` whose name lookup, connect, TLS and HTTP upgrade together took at most
        ``connect_timeout`` seconds; TimeoutError naming the host otherwise.

        websocket-client bounds each socket read, not the handshake, and reads the upgrade reply a
        byte at a time: a server trickling header bytes would hold the (re)connect for ever, the feed
        neither connected nor failing. So the socket is opened here (ingestion.http's deadline-bound
        lookup and connect) and handed over wrapped in a :class:`DeadlineSocket` for the upgrade.
        """
        parts = urlsplit(url)
        secure = parts.scheme == "wss"
        host = parts.hostname or ""  # none: the lookup fails, naming it (config only lets ws(s)://host through)
        port = parts.port or (443 if secure else 80)
        deadline = self._clock.monotonic() + self.connect_timeout
        ws = websocket.WebSocket(skip_utf8_validation=True, enable_multithread=False)
        sock: socket.socket | None = None
        try:
            sock = open_socket(host, port, tls=secure, deadline=deadline, clock=self._clock.monotonic)
            # No redirect: following one would open a socket of websocket-client's own, without the deadline.
            ws.connect(url, suppress_origin=True, redirect_limit=0,
                       socket=DeadlineSocket(sock, deadline, self._clock.monotonic))
        except BaseException as exc:
            if sock is not None:
                sock.close()
            if isinstance(exc, (TimeoutError, websocket.WebSocketTimeoutException)):
                # Every wait of the handshake lasts at most what is left before the deadline: any
                # timeout means it has passed, whichever step was waiting.
                raise TimeoutError(f"handshake with {host} took longer than {self.connect_timeout:g} s") from None
            raise
        ws.sock = sock  # the plain socket from now on: reads wait RECV_POLL_S each, as the stream wants
        return ws

    def _close(self, conn: _Connection, *, graceful: bool) -> None:
        try:
            if graceful:
                conn.ws.close(timeout=1.0)
            else:
                conn.ws.shutdown()
        except (OSError, websocket.WebSocketException):
            conn.ws.shutdown()

    def _drop(self, conn: _Connection, reason: str) -> None:
        """The connection failed: record why, tear it down without a handshake."""
        self._set_error(reason)
        self._emit(EventKind.DISCONNECTED, reason)
        log.warning("disconnected: %s", reason)
        self._close(conn, graceful=False)
        self.stats.state = FeedState.RECONNECTING
        self.stats.connected_since_ms = None

    # ------------------------------------------------------------------ reading
    def _pump(self, conn: _Connection, stop: threading.Event) -> _Connection | None:
        """Read ``conn`` until it fails (→ None), is replaced by a rollover (→ the new one) or ``stop``
        is set (→ None, after closing it and any successor)."""
        successor: _Connection | None = None
        overlap_deadline = 0.0
        next_rollover_try = 0.0
        next_housekeeping = 0.0
        while not stop.is_set():
            now = self._clock.monotonic()
            if now >= next_housekeeping:
                next_housekeeping = now + HOUSEKEEPING_EVERY_S
                if successor is None and now >= next_rollover_try and (
                    conn.shutdown_notice or now - conn.opened >= self.max_connection_age
                ):
                    successor = self._open_successor(conn)
                    overlap_deadline = now + OVERLAP_TIMEOUT_S
                    next_rollover_try = now + OVERLAP_RETRY_S
                if successor is not None:
                    problem = self._read_available(successor)
                    if problem:
                        self._set_error(f"new connection failed during rollover: {problem}")
                        self._close(successor, graceful=False)
                        successor = None
                    elif now >= overlap_deadline or _caught_up(conn, successor):
                        self._emit(EventKind.ROLLOVER, "switched to the new connection")
                        self._close(conn, graceful=True)
                        return self._take_over(successor)
                problem = self._liveness_problem(conn, now)
                if problem is None and successor is None and conn.subscribed != self._wanted:
                    problem = self._resubscribe(conn)
                if problem:
                    self._drop(conn, problem)
                    return self._take_over(successor)
            problem = self._read_frame(conn)
            if problem:
                self._drop(conn, problem)
                return self._take_over(successor)
        # Stopping: run() closes only a connection handed back to it, so close what is open here.
        for open_conn in (conn, successor):
            if open_conn is not None:
                self._close(open_conn, graceful=True)
        return None

    def _read_frame(self, conn: _Connection) -> str | None:
        """Read and handle one frame (waiting at most RECV_POLL_S); a reason if the connection ended."""
        try:
            opcode, frame = conn.ws.recv_data_frame(control_frame=True)
        except websocket.WebSocketTimeoutException:
            return None
        except (OSError, websocket.WebSocketException) as exc:
            return f"connection lost: {_describe(exc)}"
        conn.last_frame = self._clock.monotonic()
        if opcode == websocket.ABNF.OPCODE_TEXT:
            self._on_text(conn, frame.data)
        elif opcode == websocket.ABNF.OPCODE_PONG:
            conn.awaiting_pong_since = None
        elif opcode == websocket.ABNF.OPCODE_CLOSE:
            code, reason = _close_status(frame.data)
            return f"server closed the connection (code {code}{': ' + reason if reason else ''})"
        # PING frames were already answered with a pong inside recv_data_frame.
        return None

    def _read_available(self, conn: _Connection, limit: int = 1_000) -> str | None:
        """Read what a rollover successor has ready (its trades are held, not delivered yet)."""
        for _ in range(limit):
            if not _has_data(conn):
                return None
            problem = self._read_frame(conn)
            if problem:
                return problem
        return None

    def _take_over(self, successor: _Connection | None) -> _Connection | None:
        """Make the successor current: deliver the trades it held (re-sends are dropped downstream)."""
        if successor is not None and successor.held is not None:
            held, successor.held = successor.held, None
            for item in held:
                self._deliver(item)
        return successor

    def _deliver(self, item: Trade | NonMarketTrade) -> None:
        # run() sets the sink before it reads a frame; no None check per trade.
        if type(item) is Trade:
            self._sink.on_trade(item)  # type: ignore[union-attr]
        else:
            self._sink.on_non_market(item.symbol, item.trade_id)  # type: ignore[union-attr]

    def _liveness_problem(self, conn: _Connection, now: float) -> str | None:
        """Why this connection must be dropped, or None. Also sends our periodic ping."""
        # Both checks count from the last frame read, and a socket with unread data is alive: a
        # consumer busy with a backlog must not mistake its own lag for a dead connection (the
        # pong queues behind the backlog). A half-open socket delivers nothing and is still caught.
        if now - conn.last_frame > self.stale_after and not _has_data(conn):
            return f"no data for {now - conn.last_frame:.0f} s (half-open socket?)"
        if conn.awaiting_pong_since is not None and now - max(conn.awaiting_pong_since, conn.last_frame) > \
                self.pong_timeout and not _has_data(conn):
            return f"no pong within {self.pong_timeout:g} s"
        if not conn.stable and now - conn.opened >= self.stable_after:
            conn.stable = True
            self.backoff.reset()
        if now - conn.last_ping >= self.ping_interval:
            try:
                conn.ws.ping(b"")
            except (OSError, websocket.WebSocketException) as exc:
                return f"ping failed: {_describe(exc)}"
            conn.last_ping = now
            if conn.awaiting_pong_since is None:
                conn.awaiting_pong_since = now
        return None

    def _resubscribe(self, conn: _Connection) -> str | None:
        """Bring the connection's streams to the wanted symbols; a reason if the socket failed."""
        wanted = self._wanted
        # Every stream of a symbol (trades, and mark price on USDⓈ-M) comes and goes with it.
        added = stream_names(tuple(s for s in wanted if s not in conn.subscribed), self.venue)
        removed = stream_names(tuple(s for s in conn.subscribed if s not in wanted), self.venue)
        for method, streams in (("SUBSCRIBE", added), ("UNSUBSCRIBE", removed)):
            if not streams:
                continue
            self._request_id += 1
            request = json.dumps({"method": method, "params": streams, "id": self._request_id})
            try:
                conn.ws.send(request)
            except (OSError, websocket.WebSocketException) as exc:
                return f"{method} failed: {_describe(exc)}"
            self._emit(EventKind.SUBSCRIBED, f"{method.lower()} {'/'.join(streams)}")
            log.info("%s %s", method, ",".join(streams))
        conn.subscribed = wanted
        return None

    def _open_successor(self, conn: _Connection) -> _Connection | None:
        reason = "serverShutdown notice" if conn.shutdown_notice else "connection age limit"
        log.info("rolling over to a new connection (%s)", reason)
        try:
            successor = self._open(rollover=True)
        except (OSError, websocket.WebSocketException) as exc:
            self._set_error(f"rollover connect failed: {_describe(exc)}; keeping the old connection")
            self._emit(EventKind.ERROR, self.stats.last_error or "")
            return None
        return successor

    def _on_text(self, conn: _Connection, data: bytes) -> None:
        stats = self.stats
        stats.messages += 1
        stats.last_message_mono = conn.last_frame
        try:
            message = parse_frame(data, now_ms(), self._suffix, live=True)
        except MalformedMessage as exc:
            stats.parse_errors += 1
            stats.last_error = f"malformed message: {exc}"
            if stats.parse_errors <= 10 or stats.parse_errors % 1000 == 0:
                log.warning("malformed message #%d: %s: %.200r", stats.parse_errors, exc, data)
            return
        if type(message) is Trade or type(message) is NonMarketTrade:
            conn.last_ids[message.symbol] = message.trade_id
            if conn.held is not None:
                conn.held.append(message)
                conn.first_held_ids.setdefault(message.symbol, message.trade_id)
            elif type(message) is Trade:
                # run() sets the sink before it reads a frame; no None check per trade.
                self._sink.on_trade(message)  # type: ignore[union-attr]
            else:
                self._deliver(message)
        elif type(message) is MarkPrice:
            # The latest value is all anyone shows; a rollover successor need not hold these (the
            # engine keeps the newest by event time, so the overlap cannot move one backwards).
            self._sink.on_mark_price(message)  # type: ignore[union-attr]
        elif type(message) is SubscriptionReply:
            if message.error is not None:
                self._set_error(f"subscription request {message.request_id} refused: {message.error}")
                self._emit(EventKind.ERROR, self.stats.last_error or "")
        elif type(message) is ServerShutdown:
            conn.shutdown_notice = True
            self._emit(EventKind.SHUTDOWN_NOTICE, f"serverShutdown at {message.ts_ms}")
            log.warning("serverShutdown notice received; opening a new connection")
        elif type(message) is UnknownMessage:
            stats.unknown_messages += 1
            if stats.unknown_messages <= 10 or stats.unknown_messages % 1000 == 0:
                log.info("ignoring message #%d of type %r", stats.unknown_messages, message.event_type)

    # ------------------------------------------------------------------ helpers
    def _emit(self, kind: EventKind, detail: str) -> None:
        if self._sink is not None:
            self._sink.on_event(FeedEvent(now_ms(), kind, None, detail))

    def _set_error(self, text: str) -> None:
        self.stats.last_error = text


def _has_data(conn: _Connection) -> bool:
    """Bytes ready on the socket or already read ahead into the frame buffer."""
    if any(conn.ws.frame_buffer.recv_buffer):
        return True
    sock = conn.ws.sock
    return sock is not None and bool(select.select([sock], [], [], 0)[0])


def _caught_up(old: _Connection, new: _Connection) -> bool:
    """True once the old connection has delivered everything before what the new one holds.

    The new connection carries every trade from its subscription on, so for each symbol it
    holds, the old one is caught up once it has delivered the id just before the new one's
    first (ids are consecutive per symbol). Before the new one holds any trade, an old one with
    nothing left to read is caught up (a socket that is only momentarily empty cannot fool the
    id check, which is why it is preferred).
    Switching earlier would lose a backlog still buffered on the old socket: Binance sends it
    only there. (A symbol that has not traded on the new connection yet cannot be checked; a
    trade of it lost in that window shows up as a gap and is backfilled.)
    """
    if new.first_held_ids:
        return all(old.last_ids.get(symbol, -1) >= first - 1 for symbol, first in new.first_held_ids.items())
    return not _has_data(old)


def _close_status(payload: bytes) -> tuple[int | None, str]:
    if len(payload) < 2:
        return None, ""
    return int.from_bytes(payload[:2], "big"), payload[2:].decode("utf-8", "replace")


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text != type(exc).__name__ else text
