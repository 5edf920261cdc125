"""Analytics speed: ADF and Engle–Granger vs statsmodels, and one full dashboard refresh.

Data: a synthetic cointegrated pair of 1 s bars at BTC/ETH-like price levels (seeded), with
3,600 bars (an hour) and 86,400 bars (a day). Reported as the median wall time in ms.

* ``adf`` vs ``statsmodels.tsa.stattools.adfuller``, both with autolag="AIC" and the default
  maxlag, on the log-price spread.
* ``engle_granger`` vs ``statsmodels.tsa.stattools.coint`` on the log prices.
* Refresh: rolling hedge + spread + rolling z-score + rolling correlation of log returns +
  half-life, as the dashboard recomputes them on every update (targets: ADF >= 20x statsmodels,
  refresh <= 50 ms at 86,400 bars).

statsmodels needs many seconds per call at 86,400 bars, so it runs ``--reference-repeats``
times (default 1) while our functions run ``--repeats`` times.

    .venv/bin/python bench/analytics.py [--repeats 7] [--reference-repeats 1] [--window 100]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
from scipy.signal import lfilter
from statsmodels.tsa.stattools import adfuller, coint

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analytics import (
    adf,
    engle_granger,
    half_life,
    log_returns,
    rolling_correlation,
    rolling_hedge,
    rolling_zscore,
    spread,
)

SIZES = (3_600, 86_400)
T = TypeVar("T")


def synthetic_pair(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """BTC-like ``y`` and ETH-like ``x`` closes whose log spread is a slowly reverting AR(1)."""
    rng = np.random.default_rng(seed)
    log_x = np.log(3_140.0) + np.cumsum(rng.normal(0.0, 1e-4, n))
    log_spread = lfilter([1.0], [1.0, -0.995], rng.normal(0.0, 2e-5, n))
    log_y = np.log(89_800.0) - 1.05 * np.log(3_140.0) + 1.05 * log_x + log_spread
    # Round to the exchanges' tick sizes, as real closes are.
    return np.round(np.exp(log_y), 1), np.round(np.exp(log_x), 2)


def timed(function: Callable[[], T], repeats: int) -> tuple[float, T]:
    """Median wall time in ms over ``repeats`` calls, and the last call's result."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times), result


def refresh(y: np.ndarray, x: np.ndarray, window: int) -> None:
    hedge = rolling_hedge(y, x, window)
    s = spread(y, x, hedge.beta, hedge.alpha)
    rolling_zscore(s, window)
    rolling_correlation(log_returns(y), log_returns(x), window)
    half_life(s[window - 1 :])


def row(n: int, what: str, ours_ms: float, reference_ms: float | None = None, agreement: str = "") -> None:
    if reference_ms is None:
        print(f"{n:>7}  {what:<28} {ours_ms:>9.1f}")
    else:
        speed_up = reference_ms / ours_ms
        print(f"{n:>7}  {what:<28} {ours_ms:>9.1f} {reference_ms:>15.1f} {speed_up:>8.0f}x  {agreement}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="runs of our functions (median reported)")
    parser.add_argument("--reference-repeats", type=int, default=1, help="runs of statsmodels")
    parser.add_argument("--window", type=int, default=100, help="rolling window in bars for the refresh")
    args = parser.parse_args()

    print(f"{'bars':>7}  {'what':<28} {'ours ms':>9} {'statsmodels ms':>15} {'speed-up':>9}  agreement")
    for n in SIZES:
        y, x = synthetic_pair(n)
        log_y, log_x = np.log(y), np.log(x)
        slope, intercept = np.polyfit(log_x, log_y, 1)
        log_spread = log_y - slope * log_x - intercept

        ours_ms, ours = timed(lambda s=log_spread: adf(s), args.repeats)
        ref_ms, ref = timed(lambda s=log_spread: adfuller(s, result_object=True), args.reference_repeats)
        agreement = f"|Δstat| {abs(ours.statistic - ref.statistic):.1e}, lag {ours.used_lag}/{ref.lags}"
        row(n, "adf (autolag=AIC)", ours_ms, ref_ms, agreement)

        ours_ms, ours_eg = timed(lambda a=log_y, b=log_x: engle_granger(a, b), args.repeats)
        ref_ms, (statistic, pvalue, _) = timed(lambda a=log_y, b=log_x: coint(a, b), args.reference_repeats)
        agreement = f"|Δstat| {abs(ours_eg.statistic - statistic):.1e}, |Δp| {abs(ours_eg.pvalue - pvalue):.1e}"
        row(n, "engle_granger vs coint", ours_ms, ref_ms, agreement)

        refresh_ms, _ = timed(lambda a=y, b=x: refresh(a, b, args.window), max(args.repeats, 21))
        row(n, f"dashboard refresh (w={args.window})", refresh_ms)


if __name__ == "__main__":
    main()
