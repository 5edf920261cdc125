"""Pair-scanner speed: ``scan_pairs`` vs statsmodels ``coint`` on every ordered pair.

Data: seeded synthetic universes of one-minute closes, 1,440 bars (a day) per symbol: random
walks at different price levels with a few planted cointegrated pairs. Universes of 20 symbols
(190 pairs) and 50 symbols (1,225 pairs), and 50 symbols of which 5 were listed late (leading
NaN, so pairs fall into several row groups).

* ``scan_pairs`` with its defaults (trend "c", autolag "aic", window 60): median wall time.
* statsmodels: ``coint(y, x)`` on every *ordered* pair (the scan tests both orderings: the one
  fixed by label for the q-value, the other reported beside it), run one after the other. That
  takes minutes for 50 symbols, so by default only ``--reference-pairs`` ordered pairs (seeded
  sample) are timed and the total is extrapolated from their mean; the output says which rows
  are extrapolated. ``--full`` times every ordered pair.
* Agreement: the largest relative difference of statistic and p-value over the timed pairs
  that the scan reports in that ordering.

On a busy machine run it with ``OPENBLAS_NUM_THREADS=1``: under CPU contention OpenBLAS's
threads stall statsmodels' many small calls (single ``coint`` calls of 0.1-4 s instead of 40 ms
were seen on a shared two-core machine), which would inflate the speed-up.

    OPENBLAS_NUM_THREADS=1 .venv/bin/python bench/scan.py [--repeats 5] [--reference-pairs 200] [--full]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
import pandas as pd
from scipy.signal import lfilter
from statsmodels.tsa.stattools import coint

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analytics import scan_pairs

BARS = 1_440
T = TypeVar("T")


def universe(k: int, seed: int, late: int = 0) -> pd.DataFrame:
    """k symbols of one-minute closes; every fifth symbol cointegrated with the one before it."""
    rng = np.random.default_rng(seed)
    levels = np.exp(rng.uniform(np.log(0.5), np.log(90_000.0), k))
    log_closes = np.log(levels) + np.cumsum(rng.normal(0.0, 1e-3, (BARS, k)), axis=0)
    for y in range(4, k, 5):
        spread = lfilter([1.0], [1.0, -0.95], rng.normal(0.0, 5e-4, BARS))
        log_closes[:, y] = np.log(levels[y]) + (log_closes[:, y - 1] - np.log(levels[y - 1])) + spread
    closes = pd.DataFrame(np.exp(log_closes), columns=[f"SYM{i:02d}USDT" for i in range(k)])
    for column in range(late):  # listed during the day: no bars before its first trade
        closes.iloc[: 100 * (column + 1), k - 1 - column] = np.nan
    return closes


def timed(function: Callable[[], T], repeats: int) -> tuple[float, T]:
    """Median wall time in ms over ``repeats`` calls, and the last call's result."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times), result


def reference(closes: pd.DataFrame, sample: int | None, seed: int) -> tuple[float, bool, dict[tuple[str, str], tuple]]:
    """statsmodels' time for every ordered pair in ms (extrapolated when sampled), and its results."""
    ordered = [(y, x) for y in closes.columns for x in closes.columns if y != x]
    timed_pairs = ordered
    if sample is not None and sample < len(ordered):
        chosen = np.random.default_rng(seed).choice(len(ordered), sample, replace=False)
        timed_pairs = [ordered[i] for i in sorted(chosen)]
    results = {}
    start = time.perf_counter()
    for y, x in timed_pairs:
        both = closes[[y, x]].dropna()  # the scan's rule: rows where both legs are finite
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # collinearity warnings
            results[(y, x)] = coint(both[y].to_numpy(), both[x].to_numpy())
    elapsed_ms = 1e3 * (time.perf_counter() - start)
    return elapsed_ms * len(ordered) / len(timed_pairs), len(timed_pairs) < len(ordered), results


def agreement(scan: pd.DataFrame, results: dict[tuple[str, str], tuple]) -> str:
    rows = scan.set_index(["y", "x"])
    compared = [(rows.loc[pair], ref) for pair, ref in results.items() if pair in rows.index]
    d_stat = max(abs(row["eg_stat"] / ref.coint_t - 1.0) for row, ref in compared)
    d_p = max(abs(row["eg_pvalue"] - ref.pvalue) / ref.pvalue for row, ref in compared if ref.pvalue > 0)
    return f"{len(compared)} rows: rel Δstat {d_stat:.0e}, rel Δp {d_p:.0e}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="runs of scan_pairs (median reported)")
    parser.add_argument("--reference-pairs", type=int, default=200, help="ordered pairs timed in statsmodels")
    parser.add_argument("--full", action="store_true", help="time statsmodels on every ordered pair")
    args = parser.parse_args()
    sample = None if args.full else args.reference_pairs

    print(f"{'universe':<26} {'pairs':>6} {'scan ms':>9} {'coint ms (all ordered)':>24} {'speed-up':>9}  agreement")
    for label, k, late in (("20 x 1440", 20, 0), ("50 x 1440", 50, 0), ("50 x 1440, 5 listed late", 50, 5)):
        closes = universe(k, seed=k + late, late=late)
        scan_ms, scan = timed(lambda c=closes: scan_pairs(c), args.repeats)
        ref_ms, extrapolated, results = reference(closes, sample, seed=k)
        how = f"{ref_ms:,.0f}" + (f" (from {len(results)})" if extrapolated else "")
        print(f"{label:<26} {len(scan):>6} {scan_ms:>9.1f} {how:>24} {ref_ms / scan_ms:>8.0f}x  "
              f"{agreement(scan, results)}")


if __name__ == "__main__":
    main()
