"""A fake Binance REST server on 127.0.0.1 for gap backfill: ``GET /api/v3/historicalTrades``.

Serves trades from an in-memory list in the real response format, reports used weight in
``X-MBX-USED-WEIGHT-1M``, and can be told to answer the next requests with 429/418 (with
``Retry-After``) or 500, or to stop answering entirely.
"""

from __future__ import annotations

import json
import threading
import urllib.parse
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from testkit.fake_binance import RecordedTrade


class FakeRest:
    """Thread-safe enough for tests: handlers only read ``trades`` and pop from ``faults``."""

    def __init__(self, trades: list[RecordedTrade]) -> None:
        self.trades = sorted(trades, key=lambda t: (t.symbol, t.trade_id))
        self.faults: deque[tuple[int, str | None]] = deque()  # (status, Retry-After) for the next requests
        self.requests: list[dict[str, str]] = []
        self.used_weight = 0
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urllib.parse.urlsplit(self.path)
                params = {k: v[0] for k, v in urllib.parse.parse_qs(url.query).items()}
                fake.requests.append(params)
                if fake.faults:
                    status, retry_after = fake.faults.popleft()
                    self.send_response(status)
                    if retry_after is not None:
                        self.send_header("Retry-After", retry_after)
                    self.end_headers()
                    self.wfile.write(b'{"code":-1003,"msg":"Too many requests."}')
                    return
                if url.path != "/api/v3/historicalTrades":
                    self.send_error(404)
                    return
                fake.used_weight += 25
                rows = fake.page(params["symbol"], int(params["fromId"]), int(params.get("limit", 500)))
                body = json.dumps(rows).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("X-MBX-USED-WEIGHT-1M", str(fake.used_weight))
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:  # keep test output quiet
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-rest", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def page(self, symbol: str, from_id: int, limit: int) -> list[dict]:
        rows = [t for t in self.trades if t.symbol == symbol and t.trade_id >= from_id][:min(limit, 1000)]
        return [{"id": t.trade_id, "price": f"{t.price:.8f}", "qty": f"{t.qty:.8f}",
                 "quoteQty": f"{t.price * t.qty:.8f}", "time": t.ts_ms, "isBuyerMaker": t.buyer_is_maker,
                 "isBestMatch": True} for t in rows]

    def __enter__(self) -> FakeRest:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
