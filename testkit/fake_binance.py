"""A fake Binance market-data WebSocket server (spot, or USDⓈ-M futures with ``futures=True``) for
tests, plus the recorded-tick loader.

:class:`FakeBinance` listens on ``127.0.0.1`` (ephemeral port) and speaks the real protocol: the
combined-stream endpoint ``/stream?streams=<s1>/<s2>`` (frames wrapped as
``{"stream":...,"data":{...}}``), the raw endpoint ``/ws/<s1>/<s2>`` (payload only), server ping
frames that the client must answer, close frames with a code, and the ``SUBSCRIBE`` /
``UNSUBSCRIBE`` / ``LIST_SUBSCRIPTIONS`` requests. Its asyncio loop runs in a daemon thread; every
public method is called from the test thread, is thread-safe, and returns once the action has
happened on the server (a frame is written to the socket or buffered for it, not read by the
client). Failure modes are switched on explicitly: :meth:`FakeBinance.close_all`,
:meth:`FakeBinance.abort_all`, :meth:`FakeBinance.set_silent`, :meth:`FakeBinance.refuse_connections`,
``pong_deadline`` and ``max_connection_age``.

Typical use::

    with FakeBinance(ping_interval=0.2) as fake:
        client = websocket.create_connection(fake.url + "/stream?streams=btcusdt@trade", timeout=2)
        eventually(lambda: fake.open_connections == 1)
        fake.send_trade("BTCUSDT", 5_000_000_000, 89806.8, 0.002, ts_ms=1765788195443)

:func:`load_recorded_trades` reads the real BTCUSDT/ETHUSDT recording in
``../shared/data/binance/`` (see SOURCES.md there) and returns :class:`RecordedTrade` rows that
:meth:`FakeBinance.send_recorded` serves in spot wire format.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import json
import re
import socket
import struct
import threading
import time
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import State

from testkit.waiting import poll

__all__ = [
    "DEFAULT_TICKS_PATH",
    "FUTURES_MAX_STREAMS",
    "TRADE_ID_BASES",
    "FakeBinance",
    "RecordedTrade",
    "futures_trade_payload",
    "load_recorded_trades",
    "mark_price_payload",
    "parse_stream_path",
    "spot_trade_frame",
    "spot_trade_payload",
]

T = TypeVar("T")

TICKS_FILE_NAME = "ticks_2025-12-15T08-50-11.076Z.ndjson"
#: The real recording (futures @trade stream, BTCUSDT + ETHUSDT, 2025-12-15 08:43–08:50 UTC).
DEFAULT_TICKS_PATH = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "binance" / TICKS_FILE_NAME

#: First synthetic trade id per symbol in :func:`load_recorded_trades`. The recording does not keep
#: Binance's ids; these bases have the magnitude of real spot ids in late 2025 (BTCUSDT ~5.6e9).
TRADE_ID_BASES: dict[str, int] = {"BTCUSDT": 5_000_000_000, "ETHUSDT": 3_000_000_000}
#: Base for any other symbol.
OTHER_TRADE_ID_BASE = 1_000_000_000

#: Spot's event time ``E`` trails the trade time ``T`` by about a millisecond.
EVENT_LAG_MS = 1

#: Binance caps a spot connection at 1024 streams, a USDⓈ-M futures one at 200.
MAX_STREAMS = 1024
FUTURES_MAX_STREAMS = 200

# Lower-case symbol, "@", stream type (trade, aggTrade, kline_1m, depth@100ms, bookTicker, ...).
# Binance stream names are lower case; an upper-case symbol is rejected so client bugs show up.
_STREAM_RE = re.compile(r"^[a-z0-9]{2,20}@[A-Za-z0-9_@]{1,40}$")

# Exact spot key order; prices and quantities as 8-decimal strings, "M" always true.
_PAYLOAD_FMT = '{"e":"trade","E":%d,"s":"%s","t":%d,"p":"%.8f","q":"%.8f","T":%d,"m":%s,"M":true}'

# Exact USDⓈ-M futures key order: "T" before "s", the trade type "X", no "M"; prices and quantities
# as the contract's tick/step decimals (shortened here to what %.8g keeps, like "89806.8").
_FUTURES_PAYLOAD_FMT = '{"e":"trade","E":%d,"T":%d,"s":"%s","t":%d,"p":"%s","q":"%s","X":"%s","m":%s}'

# Exact USDⓈ-M markPriceUpdate key order; prices as 8-decimal strings, the rate as 8 decimals.
_MARK_PRICE_FMT = '{"e":"markPriceUpdate","E":%d,"s":"%s","p":"%.8f","P":"%.8f","i":"%.8f","r":"%.8f","T":%d}'

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


# --------------------------------------------------------------------------------------------
# Wire format
# --------------------------------------------------------------------------------------------


def spot_trade_payload(
    symbol: str,
    trade_id: int,
    price: float,
    qty: float,
    ts_ms: int,
    buyer_is_maker: bool = False,
    event_ms: int | None = None,
) -> str:
    """Return a spot ``trade`` payload (unwrapped), exactly as Binance serialises it.

    ``ts_ms`` is the trade time ``T`` (epoch ms); ``event_ms`` (``E``) defaults to
    ``ts_ms + 1``. Example::

        {"e":"trade","E":1765788195444,"s":"BTCUSDT","t":5612345678,"p":"89806.80000000",
         "q":"0.00200000","T":1765788195443,"m":true,"M":true}
    """
    event = ts_ms + EVENT_LAG_MS if event_ms is None else event_ms
    return _PAYLOAD_FMT % (
        event,
        symbol.upper(),
        trade_id,
        price,
        qty,
        ts_ms,
        "true" if buyer_is_maker else "false",
    )


def futures_trade_payload(
    symbol: str,
    trade_id: int,
    price: float,
    qty: float,
    ts_ms: int,
    buyer_is_maker: bool = False,
    event_ms: int | None = None,
    kind: str = "MARKET",
) -> str:
    """Return a USDⓈ-M futures ``trade`` payload (unwrapped), in Binance's key order.

    ``kind`` is ``X``: ``MARKET``, ``INSURANCE_FUND``, ``ADL`` or ``NA`` (whose price and quantity
    are ``"0"``). Example::

        {"e":"trade","E":1765788195444,"T":1765788195443,"s":"BTCUSDT","t":6871234567,
         "p":"89806.8","q":"0.002","X":"MARKET","m":true}
    """
    event = ts_ms + EVENT_LAG_MS if event_ms is None else event_ms
    return _FUTURES_PAYLOAD_FMT % (
        event, ts_ms, symbol.upper(), trade_id, f"{price:.10g}", f"{qty:.10g}", kind,
        "true" if buyer_is_maker else "false",
    )


def mark_price_payload(
    symbol: str,
    mark: float,
    index: float,
    funding_rate: float,
    next_funding_ms: int,
    event_ms: int,
    settle: float | None = None,
) -> str:
    """Return a USDⓈ-M ``markPriceUpdate`` payload (unwrapped), in Binance's key order and decimals.

    ``settle`` (``P``, the estimated settle price) defaults to ``mark``. Example::

        {"e":"markPriceUpdate","E":1765788195000,"s":"BTCUSDT","p":"89806.80000000",
         "P":"89790.12345678","i":"89811.54347826","r":"0.00010000","T":1765814400000}
    """
    return _MARK_PRICE_FMT % (event_ms, symbol.upper(), mark, mark if settle is None else settle, index,
                              funding_rate, next_funding_ms)


def spot_trade_frame(
    symbol: str,
    trade_id: int,
    price: float,
    qty: float,
    ts_ms: int,
    buyer_is_maker: bool = False,
    event_ms: int | None = None,
) -> str:
    """Return a combined-stream trade frame: ``{"stream":"<sym>@trade","data":<payload>}``."""
    payload = spot_trade_payload(symbol, trade_id, price, qty, ts_ms, buyer_is_maker, event_ms)
    return f'{{"stream":"{symbol.lower()}@trade","data":{payload}}}'


def parse_stream_path(path: str, max_streams: int = MAX_STREAMS,
                      combined: str = "/stream") -> tuple[bool, tuple[str, ...]]:
    """Parse a request path into ``(raw, streams)``.

    ``/stream?streams=btcusdt@trade/ethusdt@trade`` gives ``(False, ("btcusdt@trade",
    "ethusdt@trade"))``; ``/ws/btcusdt@trade`` gives ``(True, ("btcusdt@trade",))``. ``combined``
    is the combined stream's path: ``/stream`` on spot, ``/market/stream`` on USDⓈ-M (whose
    routes carry trades on ``/market`` only; the real server then delivers nothing on another
    route, this fake refuses it so that a client on the wrong route fails loudly). Raises
    ``ValueError`` for anything else (unknown path, empty or malformed stream names, upper-case
    symbols, more than ``max_streams``: :data:`MAX_STREAMS` on spot).
    """
    split = urlsplit(path)
    if split.path == combined:
        query = parse_qs(split.query, keep_blank_values=True)
        values = query.get("streams")
        if values is None or len(values) != 1 or set(query) != {"streams"}:
            raise ValueError(f"expected exactly one 'streams' query parameter in {path!r}")
        raw, names = False, values[0].split("/")
    elif split.path.startswith("/ws/") and not split.query:
        raw, names = True, split.path[len("/ws/") :].split("/")
    else:
        raise ValueError(f"unknown endpoint {path!r}; expected {combined}?streams=... or /ws/<stream>")
    bad = [name for name in names if not _STREAM_RE.match(name)]
    if bad:
        raise ValueError(f"invalid stream name(s) {bad!r} in {path!r}")
    if len(names) > max_streams:
        raise ValueError(f"{len(names)} streams requested; the limit is {max_streams}")
    return raw, tuple(dict.fromkeys(names))


# --------------------------------------------------------------------------------------------
# Recorded trades
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RecordedTrade:
    """One real trade from the recording, with the fields spot sends but the recording lacks.

    ``ts_ms``: trade time ``T``, UTC epoch ms. ``price`` in USDT, ``qty`` in base units.
    ``trade_id`` and ``buyer_is_maker`` are synthesised by :func:`load_recorded_trades`. ``kind``
    is the futures trade type ``X``: ``MARKET``, or ``NA`` for the recording's zero rows.
    """

    symbol: str
    trade_id: int
    ts_ms: int
    price: float
    qty: float
    buyer_is_maker: bool
    kind: str = "MARKET"


def _iso_to_ms(text: str) -> int:
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    # Integer arithmetic on timedelta: exact, unlike float timestamp() * 1000.
    return (datetime.fromisoformat(text) - _EPOCH) // timedelta(milliseconds=1)


def load_recorded_trades(
    path: str | Path | None = None,
    symbols: Iterable[str] | None = None,
    id_bases: dict[str, int] | None = None,
    *,
    keep_non_market: bool = False,
) -> list[RecordedTrade]:
    """Load the recorded BTCUSDT/ETHUSDT ticks as :class:`RecordedTrade` rows, in file order.

    ``path`` defaults to :data:`DEFAULT_TICKS_PATH`. ``symbols`` (any case) keeps only those
    symbols. Rows with a zero price or size (the futures stream's ``"X":"NA"`` events, 98 in the
    default file) are dropped, leaving 19,182 trades: ETHUSDT 14,978 and BTCUSDT 4,204; with
    ``keep_non_market`` they are kept as ``kind="NA"`` rows that take a trade id of their own (as
    on the real stream, where they consume ids between market trades).

    Synthesised fields (the recording does not keep them):

    - ``trade_id``: consecutive per symbol in file order, from ``id_bases`` (default
      :data:`TRADE_ID_BASES`: BTCUSDT 5,000,000,000, ETHUSDT 3,000,000,000, others
      1,000,000,000).
    - ``buyer_is_maker`` by the tick rule: an uptick is a taker buy (``False``), a downtick a
      taker sell (``True``), an unchanged price repeats the previous value; the first trade of a
      symbol is ``False``. Deterministic.

    File order interleaves two sockets, so ``ts_ms`` goes backwards across symbols in places but
    never within one symbol.
    """
    source = Path(path) if path is not None else DEFAULT_TICKS_PATH
    wanted = None if symbols is None else {s.upper() for s in symbols}
    bases = TRADE_ID_BASES if id_bases is None else id_bases
    next_id: dict[str, int] = {}
    last: dict[str, tuple[float, bool]] = {}
    trades: list[RecordedTrade] = []
    with source.open(encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                symbol = str(row["symbol"]).upper()
                price = float(row["price"])
                qty = float(row["size"])
                ts_ms = _iso_to_ms(row["ts"])
            except (ValueError, KeyError, TypeError) as exc:
                raise ValueError(f"{source}:{line_no}: bad tick row: {exc}") from None
            if wanted is not None and symbol not in wanted:
                continue
            if price <= 0 or qty <= 0:
                if keep_non_market:
                    trade_id = next_id.get(symbol, bases.get(symbol, OTHER_TRADE_ID_BASE))
                    next_id[symbol] = trade_id + 1
                    trades.append(RecordedTrade(symbol, trade_id, ts_ms, 0.0, 0.0, False, "NA"))
                continue
            trade_id = next_id.get(symbol, bases.get(symbol, OTHER_TRADE_ID_BASE))
            next_id[symbol] = trade_id + 1
            prev = last.get(symbol)
            if prev is None or price > prev[0]:
                maker = False
            elif price < prev[0]:
                maker = True
            else:
                maker = prev[1]
            last[symbol] = (price, maker)
            trades.append(RecordedTrade(symbol, trade_id, ts_ms, price, qty, maker))
    return trades


# --------------------------------------------------------------------------------------------
# Server
# --------------------------------------------------------------------------------------------


class _FakeConnection(ServerConnection):
    """A websockets server connection that reports to its :class:`FakeBinance`.

    Overrides hook the points the fake must control: TCP accept (record, maybe refuse), incoming
    ping/pong frames (count), and outgoing bytes (swallowed while the fake is silent).
    """

    def __init__(self, fake: FakeBinance, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fake = fake
        self.streams: set[str] = set()
        self.raw = False
        self.pong_due: float | None = None  # loop time by which the client must pong

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.fake._on_tcp_connect(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.fake._tcp.discard(self)
        super().connection_lost(exc)

    def process_event(self, event: Any) -> None:
        if isinstance(event, Frame):
            if event.opcode is Opcode.PING:
                self.fake._pings_received += 1
            elif event.opcode is Opcode.PONG:
                self.fake._pongs_received += 1
                self.fake._last_pong_payload = bytes(event.data)
                self.pong_due = None
        super().process_event(event)

    def send_data(self) -> None:
        if self.fake._silent:
            # Half-open: nothing reaches the client, not even the automatic pong.
            self.protocol.data_to_send()
            return
        super().send_data()


class FakeBinance:
    """Fake Binance spot (or USDⓈ-M futures) market-data WebSocket server on 127.0.0.1, controlled from test code.

    Args:
        futures: speak USDⓈ-M futures: trades as :func:`futures_trade_payload` (with ``X``), at most
            :data:`FUTURES_MAX_STREAMS` streams a connection. Spot otherwise.
        ping_interval: seconds between server ping frames (Binance: 20 s spot, 3 min futures);
            ``None`` disables them.
            websockets' own keepalive is off; these pings are the fake's.
        ping_payload: payload of each server ping; the client must echo it in its pong.
        pong_deadline: if set, a connection whose client has not ponged within this many seconds
            of a server ping is closed with code 1008 ("pong timeout"). Binance allows a minute
            and does not document the code.
        max_connection_age: if set, close each connection with ``age_close_code`` after this many
            seconds (Binance's 24 h limit, shortened).
        age_close_code: close code for ``max_connection_age``.
        close_timeout: seconds the server waits for the client's close frame before dropping TCP.
        port: the TCP port to listen on (0: an ephemeral one), e.g. one a client already retries
            against, so that the fake "becomes reachable" there.

    Counters and lists are read from the test thread without locking; they are only written on
    the server's loop thread.
    """

    def __init__(
        self,
        *,
        futures: bool = False,
        ping_interval: float | None = 20.0,
        ping_payload: bytes = b"",
        pong_deadline: float | None = None,
        max_connection_age: float | None = None,
        age_close_code: int = 1001,
        close_timeout: float = 1.0,
        port: int = 0,
    ) -> None:
        for name, value in (
            ("ping_interval", ping_interval),
            ("pong_deadline", pong_deadline),
            ("max_connection_age", max_connection_age),
        ):
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be positive or None, got {value!r}")
        if len(ping_payload) > 125:
            raise ValueError("ping_payload must be at most 125 bytes (RFC 6455 control frame)")
        self.futures = futures
        self.max_streams = FUTURES_MAX_STREAMS if futures else MAX_STREAMS
        self.combined_path = "/market/stream" if futures else "/stream"
        self.ping_interval = ping_interval
        self.ping_payload = bytes(ping_payload)
        self.pong_deadline = pong_deadline
        self.max_connection_age = max_connection_age
        self.age_close_code = age_close_code
        self.close_timeout = close_timeout
        self._listen_port = port

        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: Server | None = None
        self._port: int | None = None
        self._tcp: set[_FakeConnection] = set()  # every TCP connection, handshake done or not
        self._open: set[_FakeConnection] = set()  # handshake done, handler running
        self._bg_tasks: set[asyncio.Task[Any]] = set()

        self._silent = False
        self._refuse = False
        self._refuse_status: int | None = 503

        self._connect_attempts: list[float] = []
        self._paths: list[str] = []
        self._client_messages: list[str | bytes] = []
        self._connections_accepted = 0
        self._handshakes_refused = 0
        self._pings_sent = 0
        self._pings_received = 0
        self._pongs_received = 0
        self._last_pong_payload: bytes | None = None
        self._pong_timeouts = 0
        self._frames_sent = 0
        self._frames_dropped = 0
        self._last_write_time: float | None = None

    # ---- lifecycle ------------------------------------------------------------------------

    def start(self) -> FakeBinance:
        """Start the loop thread and listen (on an ephemeral port unless one was given); returns ``self``."""
        if self._thread is not None:
            raise RuntimeError("FakeBinance already started")
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run_loop, name="fake-binance", daemon=True)
        self._thread.start()
        try:
            self._call(self._start_server(), timeout=5.0)
        except BaseException:
            self._stop_loop()
            raise
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Close connections with 1001 (aborting any that do not finish within ``close_timeout``),
        stop listening, stop the loop and join its thread. Idempotent."""
        if self._thread is None or self._loop is None:
            return
        try:
            if self._server is not None and self._loop.is_running():
                self._call(self._shutdown(), timeout=timeout)
        finally:
            self._stop_loop(timeout)

    def __enter__(self) -> FakeBinance:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The listening TCP port."""
        if self._port is None:
            raise RuntimeError("FakeBinance not started")
        return self._port

    @property
    def url(self) -> str:
        """Base URL, ``ws://127.0.0.1:<port>``; clients append ``/stream?streams=...`` (futures:
        ``/market/stream?streams=...``)."""
        return f"ws://127.0.0.1:{self.port}"

    def stream_url(self, *symbols: str) -> str:
        """Combined-stream URL for the ``<symbol>@trade`` streams of ``symbols``."""
        return self.url + self.combined_path + "?streams=" + "/".join(f"{s.lower()}@trade" for s in symbols)

    # ---- observations ---------------------------------------------------------------------

    @property
    def connections_accepted(self) -> int:
        """Number of completed WebSocket handshakes."""
        return self._connections_accepted

    @property
    def connect_attempts(self) -> list[float]:
        """``time.monotonic()`` of every accepted TCP connection, including refused ones."""
        return list(self._connect_attempts)

    @property
    def paths(self) -> list[str]:
        """Request paths of every handshake request (refused ones too), in order."""
        return list(self._paths)

    @property
    def open_connections(self) -> int:
        """Connections whose handshake completed and which are not fully closed yet."""
        return len(self._open)

    @property
    def subscriptions(self) -> list[frozenset[str]]:
        """The stream set of each open connection (order unspecified)."""
        return self._call_sync(lambda: [frozenset(conn.streams) for conn in self._open])

    @property
    def handshakes_refused(self) -> int:
        """Handshakes rejected by :meth:`refuse_connections` (HTTP error or TCP drop)."""
        return self._handshakes_refused

    @property
    def pings_sent(self) -> int:
        """Server ping frames sent."""
        return self._pings_sent

    @property
    def pings_received(self) -> int:
        """Ping frames sent by clients (answered with a pong unless silent)."""
        return self._pings_received

    @property
    def pongs_received(self) -> int:
        """Pong frames received from clients."""
        return self._pongs_received

    @property
    def last_pong_payload(self) -> bytes | None:
        """Payload of the most recent pong, to check that clients echo the ping payload."""
        return self._last_pong_payload

    @property
    def pong_timeouts(self) -> int:
        """Connections closed because of ``pong_deadline``."""
        return self._pong_timeouts

    @property
    def frames_sent(self) -> int:
        """Data frames written (one per connection reached)."""
        return self._frames_sent

    @property
    def last_write_time(self) -> float | None:
        """``time.time()`` just after the last data frames were handed to the sockets (None before any):
        when a client could first read them, for latency measurements."""
        return self._last_write_time

    @property
    def frames_dropped(self) -> int:
        """Data frames not sent because the server was silent (one per connection)."""
        return self._frames_dropped

    @property
    def client_messages(self) -> list[str | bytes]:
        """Data frames received from clients (e.g. SUBSCRIBE requests), in order."""
        return list(self._client_messages)

    def wait_until(self, predicate: Callable[[], bool], timeout: float = 5.0, interval: float = 0.005) -> bool:
        """Poll ``predicate`` until it is true (return ``True``) or ``timeout`` s pass (``False``)."""
        return poll(predicate, timeout, interval)

    # ---- sending --------------------------------------------------------------------------

    def send_trade(
        self,
        symbol: str,
        trade_id: int,
        price: float,
        qty: float,
        ts_ms: int | None = None,
        buyer_is_maker: bool = False,
    ) -> int:
        """Send one market trade to every open connection subscribed to ``<symbol lower>@trade``.

        ``ts_ms`` (trade time ``T``, epoch ms) defaults to now; ``E`` is ``T + 1``. Returns the
        number of connections written to.
        """
        return self.send_trades([(symbol, trade_id, price, qty, ts_ms, buyer_is_maker)])

    def send_trades(self, trades: Iterable[RecordedTrade | Sequence[Any]]) -> int:
        """Send many trades, in order, in one scheduled coroutine (no per-frame thread hop).

        Each item is a :class:`RecordedTrade` or a tuple in :meth:`send_trade`'s argument order,
        ``(symbol, trade_id, price, qty[, ts_ms[, buyer_is_maker]])``. On a futures fake a
        recorded trade's ``kind`` is its ``X``; a spot fake refuses a non-``MARKET`` one (spot has
        no such trades) with ``ValueError``. Frames are serialised in
        the calling thread and written without waiting for the client to read (no back-pressure:
        unread frames are buffered in memory). Returns the number of frames written, summed over
        connections.
        """
        now_ms = time.time_ns() // 1_000_000
        items: list[tuple[str, bytes]] = []
        for trade in trades:
            kind = "MARKET"
            if isinstance(trade, RecordedTrade):
                symbol, trade_id, price, qty = trade.symbol, trade.trade_id, trade.price, trade.qty
                ts_ms, maker, kind = trade.ts_ms, trade.buyer_is_maker, trade.kind
            else:
                symbol, trade_id, price, qty, *rest = trade
                ts_ms = rest[0] if rest and rest[0] is not None else now_ms
                maker = bool(rest[1]) if len(rest) > 1 else False
            if self.futures:
                payload = futures_trade_payload(symbol, trade_id, price, qty, ts_ms, maker, kind=kind)
            elif kind != "MARKET":
                raise ValueError(f"spot has no {kind} trades (trade {trade_id} of {symbol}); "
                                 "use FakeBinance(futures=True)")
            else:
                payload = spot_trade_payload(symbol, trade_id, price, qty, ts_ms, maker)
            items.append((f"{symbol.lower()}@trade", payload.encode()))
        return self._call(self._broadcast(items))

    def send_recorded(self, trades: Iterable[RecordedTrade], *, shift_ms: int = 0) -> int:
        """Replay recorded trades (as fast as possible), each ``ts_ms`` shifted by ``shift_ms``."""
        if shift_ms:
            trades = [
                RecordedTrade(t.symbol, t.trade_id, t.ts_ms + shift_ms, t.price, t.qty, t.buyer_is_maker, t.kind)
                for t in trades
            ]
        return self.send_trades(trades)

    def send_mark_price(
        self,
        symbol: str,
        mark: float,
        index: float,
        funding_rate: float,
        next_funding_ms: int,
        *,
        event_ms: int | None = None,
    ) -> int:
        """Send one ``markPriceUpdate`` (:func:`mark_price_payload`) to every open connection subscribed
        to ``<symbol lower>@markPrice@1s`` (futures only; ``ValueError`` on a spot fake, which has no
        such stream). ``funding_rate`` is a fraction per funding interval; ``event_ms`` defaults to
        now. Returns the number of connections written to.
        """
        if not self.futures:
            raise ValueError("spot has no markPrice stream; use FakeBinance(futures=True)")
        event = time.time_ns() // 1_000_000 if event_ms is None else event_ms
        payload = mark_price_payload(symbol, mark, index, funding_rate, next_funding_ms, event)
        return self._call(self._broadcast([(f"{symbol.lower()}@markPrice@1s", payload.encode())]))

    def send_raw(self, data: str | bytes) -> int:
        """Send ``data`` as-is to every open connection: ``str`` as a text frame, ``bytes`` as a
        binary frame (Binance never sends binary). Returns the number of connections reached."""
        return self._call(self._broadcast([(None, data)]))

    def send_server_shutdown(self, *, stream: str | None = None, event_ms: int | None = None) -> int:
        """Send ``{"e":"serverShutdown","E":<ms>}`` to every open connection.

        Unwrapped by default, as Binance documents the event; with ``stream`` it is wrapped as
        ``{"stream":<stream>,"data":{...}}``. ``event_ms`` defaults to now.
        """
        event = time.time_ns() // 1_000_000 if event_ms is None else event_ms
        payload = f'{{"e":"serverShutdown","E":{event:d}}}'
        text = payload if stream is None else f'{{"stream":{json.dumps(stream)},"data":{payload}}}'
        return self.send_raw(text)

    # ---- failure modes --------------------------------------------------------------------

    def close_all(self, code: int = 1001, reason: str = "") -> int:
        """Start a proper close handshake with ``code`` on every open connection.

        Returns once the close frames are written (the server then waits up to
        ``close_timeout`` for the client's reply before dropping TCP). While silent the close
        frame is swallowed too. Returns the number of connections.
        """
        return self._call(self._close_all(code, reason))

    def abort_all(self, *, reset: bool = True, carrying: str | None = None) -> int:
        """Drop every TCP connection at once without a close frame (``transport.abort()``).

        With ``reset`` the socket gets ``SO_LINGER`` 0 so the client sees a TCP RST
        (``ECONNRESET``); otherwise an ordinary FIN (EOF). ``carrying``: only the connections
        subscribed to that stream (``ethusdt@trade``), the others stay up. Returns the number of
        connections.
        """
        return self._call_sync(functools.partial(self._abort_all, reset, carrying))

    def set_silent(self, silent: bool) -> None:
        """Half-open simulation: while ``True`` the server writes nothing to any connection.

        Data frames are dropped (counted in :attr:`frames_dropped`), client pings get no pong,
        no server pings are sent, subscription replies and close frames are swallowed; incoming
        frames are still read and counted, and TCP stays open. What was swallowed is not replayed
        when silence ends.
        """
        self._call_sync(functools.partial(setattr, self, "_silent", bool(silent)))

    def refuse_connections(self, refuse: bool, *, status: int | None = 503) -> None:
        """While ``refuse`` is true, reject every new handshake (attempts are still recorded).

        ``status`` is the HTTP status of the rejection; ``None`` closes the TCP socket right
        after accepting it, before any HTTP response. Open connections are not touched.
        """

        def apply() -> None:
            self._refuse = bool(refuse)
            self._refuse_status = status

        self._call_sync(apply)

    # ---- loop-thread plumbing -------------------------------------------------------------

    def _run_loop(self) -> None:
        loop = self._loop
        assert loop is not None
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        finally:
            pending = [task for task in asyncio.all_tasks(loop) if not task.done()]
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    def _stop_loop(self, timeout: float = 5.0) -> None:
        loop, thread = self._loop, self._thread
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # closed between the check and the call
                loop.call_soon_threadsafe(loop.stop)
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                raise RuntimeError(f"fake Binance loop thread did not stop within {timeout} s")
        self._thread = None
        self._server = None

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        if self._loop is None or self._thread is None:
            coro.close()
            raise RuntimeError("FakeBinance not started")
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise

    def _call_sync(self, fn: Callable[[], T]) -> T:
        async def invoke() -> T:
            return fn()

        return self._call(invoke())

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._bg_tasks.add(task)
        task.add_done_callback(self._bg_tasks.discard)
        return task

    async def _start_server(self) -> None:
        self._server = await serve(
            self._handler,
            "127.0.0.1",
            self._listen_port,
            process_request=self._process_request,
            compression=None,  # Binance does not negotiate permessage-deflate
            ping_interval=None,  # keepalive is ours, see _keepalive
            ping_timeout=None,
            close_timeout=self.close_timeout,
            max_queue=None,  # never stop reading: client pings/pongs must always be seen
            # websockets only calls it like the class; its stubs ask for a class, not any callable.
            create_connection=functools.partial(_FakeConnection, self),  # type: ignore[arg-type]
        )
        self._port = self._server.sockets[0].getsockname()[1]

    async def _shutdown(self) -> None:
        assert self._server is not None
        self._silent = False
        self._server.close(close_connections=True)
        try:
            await asyncio.wait_for(self._server.wait_closed(), self.close_timeout + 1.0)
        except asyncio.TimeoutError:
            for conn in list(self._tcp):
                conn.transport.abort()
            await asyncio.wait_for(self._server.wait_closed(), 2.0)
        for task in list(self._bg_tasks):
            task.cancel()
        if self._bg_tasks:
            await asyncio.gather(*self._bg_tasks, return_exceptions=True)

    def _on_tcp_connect(self, conn: _FakeConnection) -> None:
        self._connect_attempts.append(time.monotonic())
        self._tcp.add(conn)
        if self._refuse and self._refuse_status is None:
            self._handshakes_refused += 1
            conn.transport.abort()

    def _process_request(self, conn: ServerConnection, request: Request) -> Response | None:
        self._paths.append(request.path)
        if self._refuse:
            self._handshakes_refused += 1
            # status None normally refuses at TCP accept; a request that raced it gets a 503.
            return conn.respond(self._refuse_status or 503, "Service Unavailable\n")
        try:
            raw, streams = parse_stream_path(request.path, self.max_streams, self.combined_path)
        except ValueError as exc:
            # Binance answers a bad stream request with an HTTP 400 and a JSON body.
            return conn.respond(400, json.dumps({"code": -1121, "msg": str(exc)}))
        assert isinstance(conn, _FakeConnection)
        conn.raw = raw
        conn.streams = set(streams)
        return None

    async def _handler(self, conn: ServerConnection) -> None:
        assert isinstance(conn, _FakeConnection)
        self._open.add(conn)
        self._connections_accepted += 1
        tasks: list[asyncio.Task[None]] = []
        if self.ping_interval is not None or self.pong_deadline is not None:
            tasks.append(asyncio.create_task(self._keepalive(conn)))
        if self.max_connection_age is not None:
            tasks.append(asyncio.create_task(self._age_limit(conn, self.max_connection_age)))
        try:
            async for message in conn:
                self._client_messages.append(message)
                await self._on_client_message(conn, message)
        except ConnectionClosed:
            pass
        finally:
            self._open.discard(conn)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _on_client_message(self, conn: _FakeConnection, message: str | bytes) -> None:
        """Answer Binance's live subscription requests; anything else gets an error reply."""
        try:
            request = json.loads(message)
            method, request_id = request["method"], request.get("id")
            params = request.get("params", [])
            if not isinstance(params, list) or not all(isinstance(p, str) for p in params):
                raise ValueError("params must be a list of stream names")
        except (ValueError, KeyError, TypeError, AttributeError):
            reply: dict[str, Any] = {"error": {"code": 2, "msg": "Invalid request"}, "id": None}
        else:
            if method == "SUBSCRIBE" and all(_STREAM_RE.match(p) for p in params):
                conn.streams.update(params)
                reply = {"result": None, "id": request_id}
            elif method == "UNSUBSCRIBE":
                conn.streams.difference_update(params)
                reply = {"result": None, "id": request_id}
            elif method == "LIST_SUBSCRIPTIONS":
                reply = {"result": sorted(conn.streams), "id": request_id}
            else:
                reply = {"error": {"code": 2, "msg": f"Invalid request: {method}"}, "id": request_id}
        with contextlib.suppress(ConnectionClosed):
            await conn.send(json.dumps(reply, separators=(",", ":")))

    async def _keepalive(self, conn: _FakeConnection) -> None:
        """Binance's keepalive: ping every ``ping_interval``; optionally close on a late pong."""
        loop = asyncio.get_running_loop()
        interval, deadline = self.ping_interval, self.pong_deadline
        next_ping = loop.time() + interval if interval is not None else None
        while conn.protocol.state is State.OPEN:
            wakeups = [t for t in (next_ping, conn.pong_due) if t is not None]
            if not wakeups:
                return
            await asyncio.sleep(max(0.0, min(wakeups) - loop.time()))
            now = loop.time()
            if conn.pong_due is not None and now >= conn.pong_due:
                self._pong_timeouts += 1
                await conn.close(1008, "pong timeout")
                return
            if next_ping is not None and interval is not None and now >= next_ping:
                next_ping = now + interval
                if self._silent or conn.protocol.state is not State.OPEN:
                    continue
                try:
                    # Raw ping frame rather than conn.ping(): the payload may repeat while a
                    # previous ping is unanswered, which conn.ping() refuses.
                    async with conn.send_context():
                        conn.protocol.send_ping(self.ping_payload)
                except ConnectionClosed:
                    return
                self._pings_sent += 1
                if deadline is not None and conn.pong_due is None:
                    conn.pong_due = now + deadline

    async def _age_limit(self, conn: _FakeConnection, age: float) -> None:
        await asyncio.sleep(age)
        await conn.close(self.age_close_code, "connection age limit")

    async def _broadcast(self, items: Sequence[tuple[str | None, str | bytes]]) -> int:
        """Write ``(stream, payload)`` items to subscribed connections (``None``: to all).

        Trade payloads are wrapped per connection (combined vs raw endpoint). Yields to the loop
        every 2048 frames so pings and closes keep flowing during a big burst.
        """
        written = 0
        conns = [c for c in self._open if c.protocol.state is State.OPEN]
        if not conns:
            return 0
        for start in range(0, len(items), 2048):
            chunk = items[start : start + 2048]
            for conn in conns:
                if conn.protocol.state is not State.OPEN:
                    continue
                protocol = conn.protocol
                for stream, payload in chunk:
                    if stream is None:
                        frame = payload
                    elif stream in conn.streams:
                        assert isinstance(payload, bytes)
                        frame = payload if conn.raw else b'{"stream":"%s","data":%s}' % (stream.encode(), payload)
                    else:
                        continue
                    if self._silent:
                        self._frames_dropped += 1
                        continue
                    if isinstance(frame, str):
                        protocol.send_text(frame.encode())
                    elif stream is None:
                        protocol.send_binary(frame)
                    else:
                        protocol.send_text(frame)
                    written += 1
                try:
                    conn.send_data()
                except OSError:
                    conn.transport.abort()
            if written:
                self._last_write_time = time.time()
            await asyncio.sleep(0)
        self._frames_sent += written
        return written

    async def _close_all(self, code: int, reason: str) -> int:
        conns = [c for c in self._open if c.protocol.state is State.OPEN]
        for conn in conns:
            self._spawn(conn.close(code, reason))
        # One loop turn runs each close() up to its first suspension, after the frame is written.
        await asyncio.sleep(0)
        return len(conns)

    def _abort_all(self, reset: bool, carrying: str | None = None) -> int:
        conns = [conn for conn in self._tcp if carrying is None or carrying in conn.streams]
        for conn in conns:
            if reset:
                sock = conn.transport.get_extra_info("socket")
                if sock is not None:
                    with contextlib.suppress(OSError):
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.transport.abort()
        return len(conns)
