"""History at open: time from start on a fresh data dir to a full 1 min chart, and the REST cost.

For the simulated market and for live Binance (a loopback fake WebSocket and REST server serving
a deterministic market; nothing leaves this machine), starts the service as ``make run`` does
and polls the page's bars until the 1 min chart over a 24 h lookback is full (every minute of
the lookback has a bar) and its z-score (window 60) is defined. Reports the time taken and, for
Binance, the klines requests and the request weight they used.

    .venv/bin/python bench/history.py
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from config import Settings
from pairs.bars import load_pair_bars
from pairs.compute import PairParams, compute_pair
from service import Service
from testkit.fake_binance import FakeBinance
from testkit.fake_rest import FakeKlines, FakeRest

MINUTE = 60_000
LOOKBACK_MS = 24 * 3_600_000
WINDOW = 60


def full_chart(service: Service) -> bool:
    """The 1 min bars cover the whole 24 h lookback and the last z-score is defined."""
    bars = load_pair_bars(service.engine, service.history, ("ETHUSDT", "BTCUSDT"), MINUTE, LOOKBACK_MS, 2 * WINDOW)
    if bars.aligned is None:
        return False
    shown = bars.since(bars.shown_from)
    if len(shown.aligned.index) < LOOKBACK_MS // MINUTE - 1:
        return False
    pair = compute_pair(bars.closes(), PairParams("ETHUSDT", "BTCUSDT", window=WINDOW))
    return math.isfinite(pair.latest["zscore"])


def time_to_full_chart(settings: Settings, timeout_s: float) -> float:
    started = time.perf_counter()
    service = Service.start(settings)
    try:
        deadline = started + timeout_s
        while not full_chart(service):
            if time.perf_counter() > deadline:
                raise SystemExit(f"no full 1 min chart within {timeout_s:.0f} s: {service.history_progress}")
            time.sleep(0.05)
        return time.perf_counter() - started
    finally:
        service.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as data:
        seconds = time_to_full_chart(Settings.of(source="simulated", data_dir=Path(data) / "sim"), args.timeout)
        print(f"simulated market        : full 1 min chart (24 h lookback, z-score) after {seconds:6.2f} s")
        with FakeBinance(ping_interval=None) as ws, \
                FakeRest(klines=FakeKlines({"BTCUSDT": 90_000.0, "ETHUSDT": 3_100.0})) as rest:
            settings = Settings.of(source="binance", ws_url=ws.url, rest_url=rest.url, data_dir=Path(data) / "live")
            seconds = time_to_full_chart(settings, args.timeout)
            klines = [r for r in rest.requests if "interval" in r]
            per_interval = {i: sum(r["interval"] == i for r in klines) for i in ("1s", "1m", "5m")}
            print(f"live Binance (loopback) : full 1 min chart (24 h lookback, z-score) after {seconds:6.2f} s")
            print(f"klines requests         : {len(klines)} ({per_interval}), weight used {rest.used_weight}")


if __name__ == "__main__":
    main()
