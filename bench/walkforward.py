"""Walk-forward speed: one process over a synthetic universe, and what statsmodels would take per pair.

Data: seeded one-minute closes (random walks at different price levels, every fifth symbol
cointegrated with the one before it), long enough for ``--windows`` windows of ``--formation``
+ ``--trading`` (default 30 days + 7 days, step 7 days: the issue's monthly formation).

Reported:

* ``walk_forward`` wall time in all and per window, and split into the formation scan
  (``scan_pairs`` on the formation bars, timed alone on the same slice) and the rest (per pair:
  the trading window's ADF test, half-life and backtest), per pair and window.
* statsmodels per pair and window on ``--reference-pairs`` pairs: ``coint`` on the formation bars
  plus ``adfuller`` on the trading spread, the two tests the walk-forward reproduces.
* How many pairs were found and stayed, as a sanity check of the data.

    OPENBLAS_NUM_THREADS=1 .venv/bin/python bench/walkforward.py [--symbols 20] [--windows 2]
        [--formation 30D] [--trading 7D] [--reference-pairs 5]
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.signal import lfilter
from statsmodels.tsa.stattools import adfuller, coint

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analytics import scan_pairs
from research.walkforward import WalkForwardSettings, walk_forward, walk_forward_windows

START = pd.Timestamp("2026-01-01", tz="UTC")


def universe(k: int, bars: int, seed: int) -> pd.DataFrame:
    """k symbols of one-minute closes; every fifth symbol cointegrated with the one before it."""
    rng = np.random.default_rng(seed)
    levels = np.exp(rng.uniform(np.log(0.5), np.log(90_000.0), k))
    log_closes = np.log(levels) + np.cumsum(rng.normal(0.0, 1e-3, (bars, k)), axis=0)
    for y in range(4, k, 5):
        spread = lfilter([1.0], [1.0, -0.95], rng.normal(0.0, 5e-4, bars))
        log_closes[:, y] = np.log(levels[y]) + (log_closes[:, y - 1] - np.log(levels[y - 1])) + spread
    index = pd.date_range(START, periods=bars, freq="1min")
    return pd.DataFrame(np.exp(log_closes), index=index, columns=[f"SYM{i:02d}USDT" for i in range(k)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--symbols", type=int, default=20)
    parser.add_argument("--windows", type=int, default=2)
    parser.add_argument("--formation", default="30D")
    parser.add_argument("--trading", default="7D")
    parser.add_argument("--reference-pairs", type=int, default=5)
    parser.add_argument("--cost-bps", type=float, default=2.0)
    args = parser.parse_args()

    settings = WalkForwardSettings.of("1m", args.formation, args.trading, cost_bps=args.cost_bps)
    bars = settings.formation + settings.trading + (args.windows - 1) * settings.step
    closes = universe(args.symbols, bars, seed=1)
    pairs = args.symbols * (args.symbols - 1) // 2
    print(f"{args.symbols} symbols ({pairs} pairs), {bars:,} one-minute bars; formation {settings.formation:,} bars, "
          f"trading {settings.trading:,}, step {settings.step:,}: {args.windows} windows")

    start = time.perf_counter()
    result = walk_forward(closes, "1m", settings)
    total = time.perf_counter() - start
    windows = walk_forward_windows(closes.index[0], closes.index[-1] + pd.Timedelta(minutes=1), "1m", settings)
    formation = closes[(closes.index >= windows[0].formation_start) & (closes.index < windows[0].trading_start)]
    start = time.perf_counter()
    scan_pairs(formation, window=2, min_bars=settings.scan_min_bars)
    scan = time.perf_counter() - start
    per_window = total / len(windows)
    rest = per_window - scan
    print(f"walk_forward: {total:.2f} s in all, {per_window:.2f} s a window")
    print(f"  formation scan (scan_pairs alone, window 0): {scan:.2f} s = {1e3 * scan / pairs:.2f} ms a pair")
    print(f"  trading window (ADF, half-life, backtest):   {rest:.2f} s = {1e3 * rest / pairs:.2f} ms a pair")
    print(f"  all: {1e3 * per_window / pairs:.2f} ms a pair and window")

    columns = list(closes.columns)
    chosen = [(columns[i], columns[i + 1]) for i in range(0, min(2 * args.reference_pairs, len(columns) - 1), 2)]
    trading = closes[(closes.index >= windows[0].trading_start) & (closes.index < windows[0].trading_end)]
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # adfuller's tuple-return FutureWarning
        for y, x in chosen:
            coint(formation[y].to_numpy(), formation[x].to_numpy(), trend="c", autolag="aic")
            beta = np.polyfit(formation[x].to_numpy(), formation[y].to_numpy(), 1)[0]
            adfuller(trading[y].to_numpy() - beta * trading[x].to_numpy(), regression="c", autolag="AIC")
    reference = (time.perf_counter() - start) / len(chosen)
    print(f"statsmodels coint (formation) + adfuller (trading) on {len(chosen)} pairs: {1e3 * reference:.1f} ms a pair "
          f"and window ({reference * pairs / per_window:.1f}x the walk-forward's whole per-pair cost)")

    summary = result.summary
    print(summary[["window", "pairs", "found", "found_oos", "stayed", "stay_share", "stay_low", "stay_high",
                   "base_stay_share", "mean_return_found", "mean_return_all"]].to_string(index=False))


if __name__ == "__main__":
    main()
