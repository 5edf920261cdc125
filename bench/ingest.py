"""Ingest throughput: trades/s from socket to committed SQLite row, vs a bare websocket-client loop.

A flood server in a separate process (so it does not share our GIL) answers the WebSocket
handshake and then writes N pre-encoded spot ``@trade`` frames in the combined-stream format as
fast as the socket takes them, so the measurement is bound by the client, not the server.

Measured: (1) a bare ``websocket.create_connection(...).recv()`` loop with default options,
(2) the full pipeline: BinanceSource → engine (sequencer, live bars) → writer thread → SQLite,
timed from the first frame received to the last row committed.

    .venv/bin/python bench/ingest.py [--trades 200000]
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

from config import Settings
from service import Service
from testkit.fake_binance import spot_trade_frame

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_LEGS = (("BTCUSDT", 5_000_000_000, 89_806.8), ("ETHUSDT", 3_000_000_000, 3139.77))


def _frames(n: int) -> bytes:
    """N unmasked text frames (server → client), alternating BTCUSDT and ETHUSDT."""
    out = bytearray()
    ts = 1_765_788_195_443
    for i in range(n):
        symbol, base, price = _LEGS[i % 2]
        price += (i % 10) * 0.1
        data = spot_trade_frame(symbol, base + i // 2, price, 0.002, ts + i // 10, i % 3 == 0).encode()
        header = bytes([0x81, len(data)]) if len(data) < 126 else bytes([0x81, 126]) + struct.pack("!H", len(data))
        out += header + data
    return bytes(out)


def _flood_server(port_queue: mp.Queue, n: int, connections: int) -> None:
    payload = _frames(n)
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


def pipeline(url_base: str, n: int) -> tuple[float, int]:
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(source="binance", ws_url=url_base, data_dir=Path(tmp), backfill_max_trades=0)
        service = Service.start(settings)
        deadline = time.monotonic() + 120
        while service.engine.source.stats.messages == 0 and time.monotonic() < deadline:
            time.sleep(0.0005)
        start = time.perf_counter()
        while service.writer.committed_trades < n and time.monotonic() < deadline:
            time.sleep(0.001)
        elapsed = time.perf_counter() - start
        committed = service.writer.committed_trades
        service.stop()
    return committed / elapsed, committed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trades", type=int, default=200_000)
    args = parser.parse_args()
    ports: mp.Queue = mp.Queue()
    server = mp.Process(target=_flood_server, args=(ports, args.trades, 2), daemon=True)
    server.start()
    port = ports.get(timeout=120)
    base = f"ws://127.0.0.1:{port}"
    url = base + "/stream?streams=btcusdt@trade/ethusdt@trade"

    bare = bare_loop(url, args.trades)
    full, committed = pipeline(base, args.trades)
    server.join(30)
    print(f"trades: {args.trades:,} (combined-stream @trade frames, loopback flood server)")
    print(f"bare websocket-client recv() loop : {bare:>10,.0f} frames/s")
    print(f"socket → committed SQLite row      : {full:>10,.0f} trades/s ({committed:,} rows committed)")
    print(f"ratio pipeline / bare loop         : {full / bare:>10.2f}")


if __name__ == "__main__":
    main()
