"""Ingest throughput: trades/s from socket to committed row, SQLite and PostgreSQL, vs a bare websocket-client loop.

A flood server in a separate process (so it does not share our GIL) answers the WebSocket
handshake and then writes N pre-encoded spot ``@trade`` frames in the combined-stream format as
fast as the socket takes them, so the measurement is bound by the client, not the server.

Measured: (1) a bare ``websocket.create_connection(...).recv()`` loop with default options,
(2) the full pipeline: BinanceSource → engine (sequencer, live bars) → writer thread → SQLite,
timed from the first frame received to the last row committed, and with ``--db-url`` (or
``--pg-temp``) (3) the same pipeline into PostgreSQL, plus (4) each store alone: ``write_batch``
of 5,000-trade batches, to tell the database's share from the pipeline's.

    .venv/bin/python bench/ingest.py [--trades 200000]
    .venv/bin/python bench/ingest.py --db-url postgresql://user:pw@127.0.0.1:5432/scratch
    .venv/bin/python bench/ingest.py --pg-temp     # a throwaway cluster from Debian's postgresql

``--db-url`` should name a scratch database: the pipeline writes its trades into schema ``live``
there (ids unique to the run, trade times now) and the store-only part uses schema
``bench_ingest``, dropped afterwards.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import multiprocessing as mp
import socket
import struct
import sys
import tempfile
import time
from pathlib import Path

import websocket

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from config import Settings, mask_url
from service import Service
from storage.base import TickStore
from storage.postgres.ticks import PostgresTickStore
from storage.sqlite.ticks import SqliteTickStore
from testkit.fake_binance import spot_trade_frame
from testkit.postgres import PgCluster
from testkit.sources import make_trades

BENCH_SCHEMA = "bench_ingest"

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_LEGS = (("BTCUSDT", 5_000_000_000, 89_806.8), ("ETHUSDT", 3_000_000_000, 3139.77))


def _frames(n: int, id_base: int) -> bytes:
    """N unmasked text frames (server → client), alternating BTCUSDT and ETHUSDT, trade times from now."""
    out = bytearray()
    ts = time.time_ns() // 1_000_000
    for i in range(n):
        symbol, base, price = _LEGS[i % 2]
        price += (i % 10) * 0.1
        data = spot_trade_frame(symbol, id_base + base + i // 2, price, 0.002, ts + i // 10, i % 3 == 0).encode()
        header = bytes([0x81, len(data)]) if len(data) < 126 else bytes([0x81, 126]) + struct.pack("!H", len(data))
        out += header + data
    return bytes(out)


def _flood_server(port_queue: mp.Queue, n: int, connections: int, id_base: int) -> None:
    payload = _frames(n, id_base)
    listener = socket.create_server(("127.0.0.1", 0))
    port_queue.put(listener.getsockname()[1])
    for _ in range(connections):
        conn, _ = listener.accept()
        request = b""
        while b"\r\n\r\n" not in request:
            request += conn.recv(4096)
        key = next(line.split(b":", 1)[1].strip() for line in request.split(b"\r\n")
                   if line.lower().startswith(b"sec-websocket-key:"))
        accept = base64.b64encode(hashlib.sha1(key + _GUID).digest())
        conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n")
        conn.sendall(payload)
        # Keep the socket open until the client hangs up, so EOF never races the last frames.
        conn.settimeout(120)
        try:
            while conn.recv(65536):
                pass
        except OSError:
            pass
        conn.close()


def bare_loop(url: str, n: int) -> float:
    ws = websocket.create_connection(url, timeout=60)
    ws.recv()
    start = time.perf_counter()
    for _ in range(n - 1):
        ws.recv()
    elapsed = time.perf_counter() - start
    ws.close()
    return (n - 1) / elapsed


def pipeline(url_base: str, n: int, db_url: str | None = None) -> tuple[float, int, float]:
    """(trades/s, rows committed, CPU µs per trade in this process) from first frame to last commit.

    The CPU figure is less sensitive to a busy machine than the rate; for PostgreSQL it leaves out
    the server's own work.
    """
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings.of(source="binance", ws_url=url_base, data_dir=Path(tmp), backfill_max_trades=0,
                               db_url=db_url)
        service = Service.start(settings)
        deadline = time.monotonic() + 120
        while service.engine.source.stats.messages == 0 and time.monotonic() < deadline:
            time.sleep(0.0005)
        start, cpu = time.perf_counter(), time.process_time()
        while service.writer.committed_trades < n and time.monotonic() < deadline:
            time.sleep(0.001)
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
        committed = service.writer.committed_trades
        service.stop()
    return committed / elapsed, committed, cpu / max(committed, 1) * 1e6


def store_only(store: TickStore, n: int, batch: int = 5_000) -> float:
    """Rows/s of ``write_batch`` alone, in batches of ``batch`` new trades (the writer's size under load)."""
    trades = make_trades(n, first_id=time.time_ns() // 1_000)  # ids unique to the run
    start = time.perf_counter()
    for k in range(0, n, batch):
        assert store.write_batch(trades[k:k + batch]) == len(trades[k:k + batch])
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trades", type=int, default=200_000)
    parser.add_argument("--db-url", help="also measure PostgreSQL on this (scratch) database")
    parser.add_argument("--pg-temp", action="store_true",
                        help="also measure PostgreSQL on a throwaway local cluster (Debian's postgresql binaries)")
    args = parser.parse_args()
    cluster = PgCluster.find_and_start() if args.pg_temp and not args.db_url else None
    db_url = args.db_url or (cluster.create_database("bench") if cluster is not None else None)
    try:
        run(args.trades, db_url)
    finally:
        if cluster is not None:
            cluster.stop()


def run(n: int, db_url: str | None) -> None:
    ports: mp.Queue = mp.Queue()
    id_base = time.time_ns() // 1_000_000 * 1_000  # a new id range each run: a reused database adds every trade
    server = mp.Process(target=_flood_server, args=(ports, n, 3 if db_url else 2, id_base), daemon=True)
    server.start()
    port = ports.get(timeout=120)
    base = f"ws://127.0.0.1:{port}"
    url = base + "/stream?streams=btcusdt@trade/ethusdt@trade"

    bare = bare_loop(url, n)
    sqlite_rate, sqlite_rows, sqlite_cpu = pipeline(base, n)
    pg_rate, pg_rows, pg_cpu = pipeline(base, n, db_url) if db_url else (0.0, 0, 0.0)
    server.join(30)
    print(f"trades: {n:,} (combined-stream @trade frames, loopback flood server)")
    print(f"bare websocket-client recv() loop   : {bare:>10,.0f} frames/s")
    print(f"socket → committed SQLite row        : {sqlite_rate:>10,.0f} trades/s ({sqlite_rows:,} rows committed; "
          f"{sqlite_cpu:.1f} µs CPU per trade)")
    if db_url:
        print(f"socket → committed PostgreSQL row    : {pg_rate:>10,.0f} trades/s ({pg_rows:,} rows committed; "
              f"{pg_cpu:.1f} µs CPU per trade in this process; {mask_url(db_url)})")
    print(f"ratio SQLite pipeline / bare loop    : {sqlite_rate / bare:>10.2f}")
    with tempfile.TemporaryDirectory() as tmp, SqliteTickStore(Path(tmp) / "bench.sqlite3") as store:
        print(f"SQLite write_batch alone (5k batches): {store_only(store, n):>10,.0f} rows/s")
    if db_url:
        with PostgresTickStore(db_url, BENCH_SCHEMA) as store:
            try:
                print(f"PostgreSQL write_batch alone (COPY)  : {store_only(store, n):>10,.0f} rows/s")
            finally:
                with store.session() as conn:
                    conn.execute(f"DROP SCHEMA {BENCH_SCHEMA} CASCADE")


if __name__ == "__main__":
    main()
