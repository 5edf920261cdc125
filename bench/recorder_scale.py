"""Does the recorder keep up with 200 symbols at Binance's busiest measured rates?

1. The busiest rates measured in the real recordings of ``../shared/data/binance/`` (see
   SOURCES.md there): the busiest minute of each day of 1 min klines (their trade count / 60 s),
   and the busiest calendar second of the BTCUSDT + ETHUSDT futures trade recording.
2. A fake Binance server in another process (so it does not share our interpreter) on 127.0.0.1
   sends spot ``@trade`` frames in the combined-stream format, round-robin over ``--symbols``
   symbols: paced at each ``--rates`` value (trades/s, in 10 ms slices) for ``--seconds`` seconds,
   then flooded (``--flood`` trades as fast as the socket takes them).
3. The recorder's pipeline (``Service.start`` as ``python -m cli.record`` runs it: source, engine
   with live bars of every symbol, writer thread into SQLite, alert monitor) receives them. Over
   the paced window after a 2 s warm-up: trades/s received and committed, this process's CPU
   (every thread: socket, parsing, engine, writer) as % of one core and per 1,000 trades/s, the
   writer's largest backlog, and how long the last trades took to be committed after the sender
   stopped. Keeping up means: received and committed at the sent rate, backlog bounded, drained
   within the writer's flush.

    .venv/bin/python bench/recorder_scale.py [--symbols 200] [--rates 500,2000,5000] [--seconds 10]
"""

from __future__ import annotations

import argparse
import base64
import csv
import hashlib
import io
import json
import multiprocessing as mp
import os
import socket
import struct
import sys
import tempfile
import threading
import time
import zipfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from config import Settings  # noqa: E402
from service import Service  # noqa: E402
from testkit.fake_binance import spot_trade_frame  # noqa: E402

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
SLICE_S = 0.01  # the paced sender sends a slice of trades every 10 ms


def busiest_rates(folder: Path) -> list[str]:
    """Lines naming the busiest measured rates in the recordings of ``folder``."""
    lines = []
    for path in sorted(folder.glob("*-1m-*.zip")):
        with zipfile.ZipFile(path) as archive:
            (name,) = archive.namelist()
            rows = [row for row in csv.reader(io.TextIOWrapper(archive.open(name))) if row and row[0].isdigit()]
        counts = [int(row[8]) for row in rows]  # column 9 of a kline archive: the bar's number of trades
        lines.append(f"{path.name}: busiest minute {max(counts):,} trades = {max(counts) / 60:,.0f} trades/s "
                     f"(day mean {sum(counts) / len(counts) / 60:,.1f} trades/s)")
    for path in sorted(folder.glob("ticks_*.ndjson")):
        per_second: Counter[str] = Counter()
        symbols: set[str] = set()
        with path.open() as lines_in:
            for line in lines_in:
                trade = json.loads(line)
                if trade["price"] > 0:  # the futures stream's price-0 "NA" rows are no trades
                    per_second[trade["ts"][:19]] += 1
                    symbols.add(trade["symbol"])
        lines.append(f"{path.name} ({', '.join(sorted(symbols))} together): busiest second "
                     f"{max(per_second.values()):,} trades/s, mean {sum(per_second.values()) / len(per_second):,.0f} "
                     f"over {len(per_second):,} s")
    return lines


def _frame(symbol: str, trade_id: int, ts_ms: int) -> bytes:
    data = spot_trade_frame(symbol, trade_id, 100.0 + trade_id % 100 * 0.01, 0.5, ts_ms, trade_id % 3 == 0).encode()
    header = bytes([0x81, len(data)]) if len(data) < 126 else bytes([0x81, 126]) + struct.pack("!H", len(data))
    return header + data


def _handshake(conn: socket.socket) -> None:
    request = b""
    while b"\r\n\r\n" not in request:
        request += conn.recv(65536)
    key = next(line.split(b":", 1)[1].strip() for line in request.split(b"\r\n")
               if line.lower().startswith(b"sec-websocket-key:"))
    accept = base64.b64encode(hashlib.sha1(key + _GUID).digest())
    conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n")


def _server(ports: mp.Queue, symbols: list[str], rate: float, seconds: float, flood: int, sent: mp.Queue) -> None:
    """One connection: ``rate`` trades/s for ``seconds`` (``rate`` 0: ``flood`` trades at once)."""
    listener = socket.create_server(("127.0.0.1", 0))
    ports.put(listener.getsockname()[1])
    conn, _ = listener.accept()
    _handshake(conn)
    ids = dict.fromkeys(symbols, 0)
    count = 0

    def batch(n: int) -> bytes:
        nonlocal count
        now = time.time_ns() // 1_000_000
        out = bytearray()
        for _ in range(n):
            symbol = symbols[count % len(symbols)]
            ids[symbol] += 1
            out += _frame(symbol, ids[symbol], now)
            count += 1
        return bytes(out)

    if rate <= 0:
        conn.sendall(batch(flood))
    else:
        start = time.monotonic()
        while (elapsed := time.monotonic() - start) < seconds:
            due = int(rate * elapsed)  # what the schedule has asked for by now
            if due > count:
                conn.sendall(batch(due - count))
            time.sleep(SLICE_S)
        conn.sendall(batch(int(rate * seconds) - count))
    sent.put((count, time.monotonic()))
    conn.settimeout(120)  # open until the client hangs up, so EOF never races the last frames
    try:
        while conn.recv(65536):
            pass
    except OSError:
        pass
    conn.close()


def run(symbols: list[str], rate: float, seconds: float, flood: int) -> str:
    ports: mp.Queue = mp.Queue()
    sent_queue: mp.Queue = mp.Queue()
    server = mp.Process(target=_server, args=(ports, symbols, rate, seconds, flood, sent_queue), daemon=True)
    server.start()
    base = f"ws://127.0.0.1:{ports.get(timeout=60)}"
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings.of(source="binance", ws_url=base, data_dir=Path(tmp), backfill_max_trades=0,
                               history_hours=0, symbols=",".join(symbols))
        service = Service.start(settings)
        try:
            return _measure(service, sent_queue, rate, seconds, flood)
        finally:
            service.stop()
            server.join(30)


def _measure(service: Service, sent_queue: mp.Queue, rate: float, seconds: float, flood: int) -> str:
    engine, writer = service.engine, service.writer
    assert writer is not None
    deadline = time.monotonic() + 60
    while engine.trades == 0:
        if time.monotonic() > deadline:
            raise TimeoutError("no trade arrived within 60 s")
        time.sleep(0.001)
    backlog = [0]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.05):
            backlog[0] = max(backlog[0], writer.backlog)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    if rate > 0:
        time.sleep(min(2.0, seconds / 4))  # warm-up: connection, first batches, first bars
    wall, cpu = time.perf_counter(), time.process_time()
    trades0, committed0 = engine.trades, writer.committed_trades
    total, sent_done = sent_queue.get(timeout=seconds + 600)
    if rate > 0:  # the paced window: up to when the sender stopped
        window_wall, window_cpu = time.perf_counter() - wall, time.process_time() - cpu
        received = (engine.trades - trades0) / window_wall
        committed = (writer.committed_trades - committed0) / window_wall
    deadline = time.monotonic() + 300
    while writer.committed_trades < total and time.monotonic() < deadline:
        time.sleep(0.001)
    drained_s = time.monotonic() - sent_done
    stop.set()
    sampler.join()
    if rate <= 0:  # flood: first trade to last commit
        window_wall, window_cpu = time.perf_counter() - wall, time.process_time() - cpu
        received = committed = (writer.committed_trades - committed0) / window_wall
    core = window_cpu / window_wall * 100
    label = f"paced {rate:,.0f} trades/s" if rate > 0 else f"flood of {flood:,}"
    return (f"{label:<22}: received {received:>8,.0f}/s, committed {committed:>8,.0f}/s; CPU {core:5.1f} % of a core "
            f"= {core / (committed / 1000):4.1f} % per 1,000 trades/s; writer backlog max {backlog[0]:,}; "
            f"{writer.committed_trades:,} of {total:,} committed, the last {drained_s * 1000:,.0f} ms after the "
            f"sender stopped")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=200)
    parser.add_argument("--rates", default="500,2000,5000", help="paced total rates, trades/s, comma-separated")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each paced run")
    parser.add_argument("--flood", type=int, default=200_000, help="trades of the flood run (0: none)")
    parser.add_argument("--recordings", type=Path, default=ROOT.parent / "shared" / "data" / "binance")
    args = parser.parse_args()
    print("Busiest measured rates (" + str(args.recordings) + "):")
    for line in busiest_rates(args.recordings):
        print("  " + line)
    symbols = [f"S{i:03d}USDT" for i in range(args.symbols)]
    print(f"Recorder pipeline, {len(symbols)} symbols on one combined stream, SQLite, loopback fake server:")
    for rate in (float(r) for r in args.rates.split(",") if r.strip()):
        print("  " + run(symbols, rate, args.seconds, 0), flush=True)
    if args.flood:
        print("  " + run(symbols, 0.0, 0.0, args.flood), flush=True)
    print(f"load average at the end {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
