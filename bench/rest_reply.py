"""What a hostile REST reply costs the client: memory and bytes read for a 120 MB klines reply.

Against a loopback fake (nothing leaves this machine), asks for one page of klines while the fake
answers with a 120 MB body — framed by Content-Length, by closing the connection, or chunked —
and reports, per framing, the error, how many bytes the fake managed to send before the client
hung up, and the rise of this process's peak RSS (``ru_maxrss``). Then the worst reply within
the 2 MB bound: 2 MB of empty JSON lists (the most Python objects per byte), refused at row 0.
Each case runs in a fresh process, so one's peak does not hide another's.

    .venv/bin/python bench/rest_reply.py
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ingestion.binance.rest import MAX_REPLY_BYTES, BinanceRest, RestError
from records import now_ms
from testkit.fake_rest import FakeKlines, FakeRest

MINUTE = 60_000
KLINES = "/api/v3/klines"
CASES = ("length", "close", "chunked", "worst-within-bound")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def serve(case: str) -> None:
    """The fake, in a process of its own: prints its URL, serves until stdin closes, prints bytes sent."""
    with FakeRest(klines=FakeKlines({"BTCUSDT": 90_000.0}, span_ms=2 * 3_600_000)) as rest:
        if case == "worst-within-bound":
            body = [[] for _ in range((MAX_REPLY_BYTES - 2) // 4)]  # "[]," + ", " between: just under the bound
            rest.tamper = lambda _route, _params, _rows: body
        else:
            rest.huge[KLINES] = (120 * 2**20, case)
        print(rest.url, flush=True)
        sys.stdin.read()
        print(json.dumps(rest.bytes_sent.get(KLINES)), flush=True)


def measure(case: str) -> dict:
    """One client call against a fake in another process; this process's peak RSS rise."""
    server = subprocess.Popen([sys.executable, __file__, "serve", case], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    url = server.stdout.readline().strip()
    client = BinanceRest(url, attempts=1)
    end = now_ms() // MINUTE * MINUTE
    before = peak_rss_mb()
    try:
        client.klines("BTCUSDT", MINUTE, end - 30 * MINUTE, end, threading.Event())
        error = "none"
    except RestError as exc:
        error = str(exc)[:100]
    rise = peak_rss_mb() - before
    time.sleep(0.5)  # let the fake notice the hang-up before it reports what it sent
    sent, _ = server.communicate("", timeout=30)
    return {"case": case, "error": error, "bytes_sent": json.loads(sent.strip().splitlines()[-1]),
            "peak_rss_rise_mb": round(rise, 1)}


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "serve":
        serve(sys.argv[2])
        return
    if len(sys.argv) == 2:
        print(json.dumps(measure(sys.argv[1])))
        return
    print(f"{'case':<20} {'peak RSS rise':>14} {'bytes sent':>12}  error")
    for case in CASES:
        out = subprocess.run([sys.executable, __file__, case], capture_output=True, text=True, check=True)
        result = json.loads(out.stdout.strip().splitlines()[-1])
        sent = "-" if result["bytes_sent"] is None else f"{result['bytes_sent']:,}"
        print(f"{case:<20} {result['peak_rss_rise_mb']:>11.1f} MB {sent:>12}  {result['error']}")


if __name__ == "__main__":
    main()
