"""A fake Binance REST server on 127.0.0.1: spot ``GET /api/v3/historicalTrades`` and ``GET /api/v3/klines``,
or with ``futures=True`` USDⓈ-M ``GET /fapi/v1/trades`` (the latest trades), ``GET /fapi/v1/klines`` and
``GET /fapi/v1/fundingRate`` (funding history from :class:`FakeFunding`).

Serves trades from an in-memory list and klines from :class:`FakeKlines` (a deterministic
market per symbol) in the real response formats, reports used weight in
``X-MBX-USED-WEIGHT-1M``, answers an unknown symbol like Binance (HTTP 400, code -1121), and can
be told to answer the next requests with 429/418 (with ``Retry-After``) or 500.

Hostile answers for the client's defences: ``tamper`` rewrites a page's rows before they are sent
(bars out of range, duplicates, ids out of order), ``drip`` sends a path's reply one byte at a
time, ``huge`` sends a path a body of any size (generated as it is sent, never held); the fake
counts what it sent (``bytes_sent``) and which replies the client hung up on (``abandoned``).
"""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
from collections import deque
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np

from testkit.fake_binance import RecordedTrade

INTERVALS_MS = {"1s": 1_000, "1m": 60_000, "5m": 300_000}


class FakeKlines:
    """Deterministic 1 s bars per symbol (a seeded random walk) over ``[origin_ms - span_ms, origin_ms + 3 h)``,
    aggregated to 1 min and 5 min exactly as an exchange does (OHLC, volume, quote volume, trades).

    ``micros``: answer with µs times (as Binance's archives do since 2025). ``malformed``: symbols
    whose second kline of every page has a garbage price. ``trades_per_second``: a fixed trade
    count per second (default: 1-19 at random). The kline containing "now" is served
    open (``closeTime >= now``), like the real endpoint.
    """

    def __init__(self, prices: dict[str, float], *, span_ms: int = 30 * 3_600_000, origin_ms: int | None = None,
                 micros: bool = False, malformed: Iterable[str] = (), trades_per_second: int | None = None) -> None:
        now = time.time_ns() // 1_000_000 if origin_ms is None else origin_ms
        self.first_ms = (now - span_ms) // 300_000 * 300_000
        self.end_ms = now + 3 * 3_600_000
        self.micros = micros
        self.malformed = set(malformed)
        n = (self.end_ms - self.first_ms) // 1_000
        self._bars: dict[str, dict[str, np.ndarray]] = {}
        for k, (symbol, price) in enumerate(sorted(prices.items())):
            rng = np.random.default_rng(k + 11)
            close = price * np.exp(np.cumsum(rng.normal(0, 2e-4, n)))
            opened = np.concatenate(([price], close[:-1]))
            wiggle = np.abs(rng.normal(0, 1e-4, n)) * close
            self._bars[symbol] = {"open": opened, "high": np.maximum(opened, close) + wiggle,
                                  "low": np.minimum(opened, close) - wiggle, "close": close,
                                  "volume": rng.uniform(0.1, 2.0, n),
                                  "trades": (rng.integers(1, 20, n) if trades_per_second is None
                                             else np.full(n, trades_per_second))}

    def knows(self, symbol: str) -> bool:
        return symbol in self._bars

    def rows(self, symbol: str, interval: str, start_ms: int, end_ms: int, limit: int) -> list[list]:
        """Klines opening in ``[start_ms, end_ms]`` (Binance's endTime is inclusive), at most ``limit``."""
        step = INTERVALS_MS[interval]
        per = step // 1_000
        bars = self._bars[symbol]
        now = time.time_ns() // 1_000_000
        first = max(start_ms + (-start_ms) % step, self.first_ms)
        out = []
        for open_ms in range(first, min(end_ms, now, self.end_ms - step) + 1, step):
            i = (open_ms - self.first_ms) // 1_000
            window = slice(i, i + per)
            volume = float(bars["volume"][window].sum())
            quote = float((bars["volume"][window] * bars["close"][window]).sum())
            scale = 1_000 if self.micros else 1
            row = [open_ms * scale, f"{bars['open'][i]:.8f}", f"{bars['high'][window].max():.8f}",
                   f"{bars['low'][window].min():.8f}", f"{bars['close'][i + per - 1]:.8f}", f"{volume:.8f}",
                   (open_ms + step) * scale - 1, f"{quote:.8f}", int(bars["trades"][window].sum()),
                   f"{volume / 2:.8f}", f"{quote / 2:.8f}", "0"]
            out.append(row)
            if len(out) >= limit:
                break
        if symbol in self.malformed and len(out) > 1:
            out[1][4] = "not-a-price"
        return out


class FakeFunding:
    """Deterministic funding history per symbol: one event every ``interval_ms`` (8 h, Binance's usual
    interval) on the grid of that interval (UTC), from ``first_ms`` on up to ``now`` (the real clock, or
    ``until_ms``), rates a seeded draw in ±0.05 %, the mark the symbol's ``price`` times a small
    drift. Events before ``marks_from_ms`` carry ``"markPrice": ""`` (older history has no mark).
    ``rows_for`` answers as ``/fapi/v1/fundingRate`` does: events in ``[startTime, endTime]`` (both
    inclusive), the first ``limit`` of them, rising; without either time the latest 200.
    """

    def __init__(self, prices: dict[str, float], *, first_ms: int, interval_ms: int = 8 * 3_600_000,
                 until_ms: int | None = None, marks_from_ms: int | None = None) -> None:
        self.prices = dict(prices)
        self.first_ms = first_ms + -first_ms % interval_ms  # the first funding time from first_ms on
        self.interval_ms = interval_ms
        self.until_ms = until_ms
        self.marks_from_ms = marks_from_ms

    def knows(self, symbol: str) -> bool:
        return symbol in self.prices

    def times(self, start_ms: int, end_ms: int) -> list[int]:
        """The funding times in ``[start_ms, end_ms]`` that have passed."""
        now = time.time_ns() // 1_000_000 if self.until_ms is None else self.until_ms
        step = self.interval_ms
        first = max(self.first_ms, start_ms + (-(start_ms - self.first_ms)) % step)
        return list(range(first, min(end_ms, now) + 1, step))

    def event(self, symbol: str, funding_ms: int) -> dict:
        """One row in Binance's format (rate and mark are decimal strings)."""
        k = (funding_ms - self.first_ms) // self.interval_ms
        seed = sum(map(ord, symbol)) * 1_000_003 + k
        rate = (np.random.default_rng(seed).uniform(-5e-4, 5e-4))
        mark = self.prices[symbol] * (1 + 1e-3 * np.sin(k / 7))
        with_mark = self.marks_from_ms is None or funding_ms >= self.marks_from_ms
        return {"symbol": symbol, "fundingRate": f"{rate:.8f}", "fundingTime": funding_ms,
                "markPrice": f"{mark:.8f}" if with_mark else ""}

    def rows_for(self, symbol: str, params: dict[str, str]) -> list[dict]:
        limit = min(int(params.get("limit", 100)), 1000)
        if "startTime" not in params and "endTime" not in params:
            times = self.times(self.first_ms, 2**62)[-200:][-limit:]
        else:
            times = self.times(int(params.get("startTime", 0)), int(params.get("endTime", 2**62)))[:limit]
        return [self.event(symbol, t) for t in times]


def futures_klines_weight(limit: int) -> int:
    """Binance's USDⓈ-M klines weight: 1 below limit 100, 2 below 500, 5 up to 1000, 10 above."""
    return 1 if limit < 100 else 2 if limit < 500 else 5 if limit <= 1000 else 10


class FakeRest:
    """Thread-safe enough for tests: handlers only read ``trades`` and pop from ``faults``.

    ``futures``: serve the USDⓈ-M paths instead of spot's: ``/fapi/v1/klines`` (up to 1,500 a
    page, weight by limit) and ``/fapi/v1/trades?symbol=…&limit=…`` (the latest ``limit`` market
    trades, weight 5; it takes no ``fromId``) and ``/fapi/v1/fundingRate`` from ``funding`` (weight
    0: Binance counts these calls in their own 500 per 5 min, listed in ``requests``/``paths``).
    ``trades`` may hold non-market rows (``kind`` other than ``MARKET``): they take ids but, as on
    Binance, no trades endpoint returns them. ``faults``, ``tamper``, ``drip`` and ``huge`` apply to
    every path alike.
    """

    def __init__(self, trades: Iterable[RecordedTrade] = (), klines: FakeKlines | None = None, *,
                 futures: bool = False, funding: FakeFunding | None = None) -> None:
        self.futures = futures
        self.funding = funding
        self.trades = sorted((t for t in trades if t.kind == "MARKET"), key=lambda t: (t.symbol, t.trade_id))
        self.klines = klines
        self.faults: deque[tuple[int, str | None]] = deque()  # (status, Retry-After) for the next requests
        self.requests: list[dict[str, str]] = []
        self.paths: list[str] = []  # the path of each of ``requests``
        self.arrived: list[float] = []  # time.monotonic() when each of ``requests`` came in, seconds
        self.used_weight = 0
        # path, query parameters, rows → the rows to send instead
        self.tamper: Callable[[str, dict[str, str], list], list] | None = None
        self.drip: dict[str, float] = {}  # path → seconds between the bytes of its reply
        self.huge: dict[str, tuple[int, str]] = {}  # path → (body bytes, "length" | "close" | "chunked")
        self.bytes_sent: dict[str, int] = {}  # path → body bytes written to the socket
        self.abandoned: list[str] = []  # paths whose reply the client hung up on before it was whole
        self._closing = threading.Event()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urllib.parse.urlsplit(self.path)
                params = {k: v[0] for k, v in urllib.parse.parse_qs(url.query).items()}
                fake.arrived.append(time.monotonic())
                fake.requests.append(params)
                fake.paths.append(url.path)
                if fake.faults:
                    status, retry_after = fake.faults.popleft()
                    self.send_response(status)
                    if retry_after is not None:
                        self.send_header("Retry-After", retry_after)
                    self.end_headers()
                    self.wfile.write(b'{"code":-1003,"msg":"Too many requests."}')
                    return
                if url.path in fake.huge:
                    self._huge(url.path, *fake.huge[url.path])
                    return
                rows: list  # JSON rows: trade or funding objects, kline arrays
                prefix, cap = ("/fapi/v1", 1500) if fake.futures else ("/api/v3", 1000)
                if url.path == "/api/v3/historicalTrades" and not fake.futures:
                    fake.used_weight += 25
                    rows = fake.page(params["symbol"], int(params["fromId"]), int(params.get("limit", 500)))
                elif url.path == "/fapi/v1/trades" and fake.futures:
                    if "fromId" in params:  # only historicalTrades (API key) takes one
                        self._reply(400, b'{"code":-1101,"msg":"Too many parameters."}')
                        return
                    fake.used_weight += 5
                    rows = fake.latest(params["symbol"], int(params.get("limit", 500)))
                elif url.path == "/fapi/v1/fundingRate" and fake.futures and fake.funding is not None:
                    if not fake.funding.knows(params.get("symbol", "")):
                        self._reply(400, b'{"code":-1121,"msg":"Invalid symbol."}')
                        return
                    rows = fake.funding.rows_for(params["symbol"], params)
                elif url.path == f"{prefix}/klines" and fake.klines is not None:
                    limit = min(int(params.get("limit", 500)), cap)
                    fake.used_weight += futures_klines_weight(limit) if fake.futures else 2
                    if not fake.klines.knows(params["symbol"]):
                        self._reply(400, b'{"code":-1121,"msg":"Invalid symbol."}')
                        return
                    rows = fake.klines.rows(params["symbol"], params["interval"], int(params["startTime"]),
                                            int(params["endTime"]), limit)
                else:
                    self.send_error(404)
                    return
                if fake.tamper is not None:
                    rows = fake.tamper(url.path, params, rows)
                self._reply(200, json.dumps(rows).encode(), drip=fake.drip.get(url.path), path=url.path)

            def _reply(self, status: int, body: bytes, *, drip: float | None = None, path: str = "") -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("X-MBX-USED-WEIGHT-1M", str(fake.used_weight))
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if drip is None:
                    self.wfile.write(body)
                    return
                try:
                    for index in range(len(body)):
                        if fake._closing.wait(drip):
                            return
                        self.wfile.write(body[index:index + 1])
                        fake.bytes_sent[path] = fake.bytes_sent.get(path, 0) + 1
                except OSError:  # the client hung up (broken pipe, reset)
                    fake.abandoned.append(path)

            def _huge(self, path: str, size: int, framing: str) -> None:
                """A ``size``-byte body of repeated kline rows, framed by Content-Length, by closing, or chunked."""
                row = b'[1765000000000,"1.0","1.0","1.0","1.0","1.0",1765000059999,"1.0",1,"1.0","1.0","0"],'
                block = row * (65_536 // len(row))
                if framing == "chunked":
                    self.protocol_version = "HTTP/1.1"  # chunked framing needs an HTTP/1.1 status line
                    self.close_connection = True
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                if framing == "length":
                    self.send_header("Content-Length", str(size))
                elif framing == "chunked":
                    self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                sent = 0
                try:
                    while sent < size and not fake._closing.is_set():
                        piece = block[:size - sent]
                        if framing == "chunked":
                            self.wfile.write(b"%x\r\n" % len(piece) + piece + b"\r\n")
                        else:
                            self.wfile.write(piece)
                        sent += len(piece)
                        fake.bytes_sent[path] = sent
                    if framing == "chunked":
                        self.wfile.write(b"0\r\n\r\n")
                except OSError:  # the client hung up (broken pipe, reset)
                    fake.abandoned.append(path)

            def log_message(self, *args: object) -> None:  # keep test output quiet
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-rest", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def page(self, symbol: str, from_id: int, limit: int) -> list[dict]:
        rows = [t for t in self.trades if t.symbol == symbol and t.trade_id >= from_id][:min(limit, 1000)]
        return self._rows(rows)

    def latest(self, symbol: str, limit: int) -> list[dict]:
        """The latest ``limit`` (≤ 1000) market trades of ``symbol``, oldest first, as ``/fapi/v1/trades``::

            [{"id":6871234567,"price":"89806.80","qty":"0.002","quoteQty":"179.61","time":1765788195443,
              "isBuyerMaker":true}]
        """
        rows = [t for t in self.trades if t.symbol == symbol][-min(limit, 1000):]
        return self._rows(rows)

    def _rows(self, rows: list[RecordedTrade]) -> list[dict]:
        if self.futures:
            return [{"id": t.trade_id, "price": f"{t.price:.10g}", "qty": f"{t.qty:.10g}",
                     "quoteQty": f"{t.price * t.qty:.10g}", "time": t.ts_ms, "isBuyerMaker": t.buyer_is_maker}
                    for t in rows]
        return [{"id": t.trade_id, "price": f"{t.price:.8f}", "qty": f"{t.qty:.8f}",
                 "quoteQty": f"{t.price * t.qty:.8f}", "time": t.ts_ms, "isBuyerMaker": t.buyer_is_maker,
                 "isBestMatch": True} for t in rows]

    def __enter__(self) -> FakeRest:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._closing.set()  # replies still dripping or streaming end now
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
