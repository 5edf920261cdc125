"""Rolling moments: cost and accuracy of the exact per-window moments against the online ones they replaced.

Data: a day of 1 s bars (86,400) of a BTC/ETH-like cointegrated pair (as in ``bench/analytics.py``),
with one bad print an hour in: y jumps by 1e6 typical moves for one bar (for the hedge and the
correlation), and the spread by 1e6 typical moves the bar after (for the z-score). For windows 20,
60 and 200 it times, median wall ms over ``--repeats`` calls:

* a refresh's rolling analytics: ``rolling_hedge``, the spread, ``rolling_moments``,
  ``rolling_zscore`` and ``rolling_correlation`` of log returns, as ``pairs.compute`` runs them
  (error: z of the spread, without the spread's own bad print),
* ``rolling_zscore`` + ``rolling_moments`` of the spread,
* ``rolling_hedge`` of the prices,
* ``rolling_correlation`` of the log returns,

for the current code and for the online (pandas) implementation at commit ``--old`` (default
26586c9, the last one before the change), loaded from git into a module of its own. It also prints
each one's largest error against a brute-force float64 two-pass computation of every window: z
absolute, β relative to the window's ``std(y)/std(x)``, correlation absolute.

    .venv/bin/python bench/rolling.py [--repeats 7] [--old 26586c9]
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import subprocess
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from analytics import log_returns  # noqa: E402
from bench.analytics import synthetic_pair  # noqa: E402

# The modules, not the package's same-named functions (``analytics.spread`` is also a function).
spread = importlib.import_module("analytics.spread")
regression = importlib.import_module("analytics.regression")
correlation = importlib.import_module("analytics.correlation")

WINDOWS = (20, 60, 200)
N = 86_400


def old_module(commit: str, path: str) -> types.ModuleType:
    """The module at ``path`` as it was at ``commit`` (its own imports resolve to today's package)."""
    source = subprocess.run(["git", "-C", str(ROOT), "show", f"{commit}:{path}"], check=True, capture_output=True,
                            text=True).stdout
    module = types.ModuleType(f"old_{Path(path).stem}")
    sys.modules[module.__name__] = module  # dataclasses look their module up there
    exec(compile(source, f"{commit}:{path}", "exec"), module.__dict__)
    return module


def timed(function: Callable[[], object], repeats: int) -> float:
    """Median wall time in ms over ``repeats`` calls."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def windows(values: np.ndarray, window: int) -> np.ndarray:
    return np.lib.stride_tricks.sliding_window_view(values, window)


def brute(y: np.ndarray, x: np.ndarray, s: np.ndarray, ra: np.ndarray, rb: np.ndarray, window: int) -> dict:
    """Two-pass float64 statistics of every window: z of s, OLS β of y on x and its scale, corr of ra, rb."""
    chunk = windows(s, window)
    dev = chunk - chunk.mean(axis=1, keepdims=True)
    z = dev[:, -1] / np.sqrt((dev * dev).sum(axis=1) / (window - 1))
    cx, cy = windows(x, window), windows(y, window)
    dx, dy = cx - cx.mean(axis=1, keepdims=True), cy - cy.mean(axis=1, keepdims=True)
    sxx, syy = (dx * dx).sum(axis=1), (dy * dy).sum(axis=1)
    beta = (dx * dy).sum(axis=1) / sxx
    ca, cb = windows(ra, window), windows(rb, window)
    da, db = ca - ca.mean(axis=1, keepdims=True), cb - cb.mean(axis=1, keepdims=True)
    corr = (da * db).sum(axis=1) / np.sqrt((da * da).sum(axis=1) * (db * db).sum(axis=1))
    return {"z": z, "beta": beta, "beta_scale": np.sqrt(syy / sxx), "corr": corr}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--old", default="26586c9", help="commit of the online implementation to compare with")
    args = parser.parse_args()
    old = types.SimpleNamespace(spread=old_module(args.old, "analytics/spread.py"),
                                regression=old_module(args.old, "analytics/regression.py"),
                                correlation=old_module(args.old, "analytics/correlation.py"))
    y, x = synthetic_pair(N)
    y[3_600] += 1e6 * np.std(np.diff(y))  # a bad print, a million typical moves away
    ra, rb = np.asarray(log_returns(y)), np.asarray(log_returns(x))
    print(f"{N:,} bars of 1 s; median ms of {args.repeats} calls; max error vs a brute-force two-pass per window")
    print(f"{'window':>6}  {'what':<33} {'old ms':>8} {'new ms':>8} {'ratio':>6}  {'old error':>9} {'new error':>9}")
    for window in WINDOWS:
        for what, (before, after), run, error in cases(old, y, x, ra, rb, window):
            old_ms = timed(lambda run=run, before=before: run(before), args.repeats)
            new_ms = timed(lambda run=run, after=after: run(after), args.repeats)
            print(f"{window:>6}  {what:<33} {old_ms:>8.2f} {new_ms:>8.2f} {new_ms / old_ms:>6.2f}  "
                  f"{error(run(before)):>9.1e} {error(run(after)):>9.1e}")


def cases(old: types.SimpleNamespace, y: np.ndarray, x: np.ndarray, ra: np.ndarray, rb: np.ndarray,
          window: int) -> list[tuple[str, tuple[object, object], Callable, Callable]]:
    """(what, (old module, new module), run(module), max error of a result) for one window."""
    fit = regression.rolling_hedge(y, x, window)
    s = spread.spread(y, x, fit.beta, fit.alpha)
    s[3_600] = np.nan  # the bad print's own spread; the spread gets its own bad print the bar after
    s[3_601] += 1e6 * np.nanstd(np.diff(s))
    exact = brute(y, x, s, ra, rb, window)
    defined = slice(2 * window - 2, None)  # z needs a full window of defined spreads

    def zscore(module: types.ModuleType) -> np.ndarray:
        module.rolling_moments(s, window)
        return np.asarray(module.rolling_zscore(s, window))

    def z_error(z: np.ndarray) -> float:
        return float(np.nanmax(np.abs(z[window - 1 :] - exact["z"])[defined]))

    def beta_error(result: regression.RollingHedge) -> float:
        return float(np.nanmax(np.abs(np.asarray(result.beta)[window - 1 :] - exact["beta"]) / exact["beta_scale"]))

    def corr_error(result: np.ndarray) -> float:
        return float(np.nanmax(np.abs(np.asarray(result)[window - 1 :] - exact["corr"])))

    def refresh(module: types.SimpleNamespace) -> np.ndarray:
        """What the dashboard computes per pair per refresh from these functions (as pairs.compute does)."""
        hedge = module.regression.rolling_hedge(y, x, window)
        path = spread.spread(y, x, hedge.beta, hedge.alpha)
        module.spread.rolling_moments(path, window)
        module.correlation.rolling_correlation(ra, rb, window)
        return np.asarray(module.spread.rolling_zscore(path, window))

    def refresh_error(z: np.ndarray) -> float:
        return float(np.nanmax(np.abs(z[window - 1 :] - exact["z_refresh"])[defined]))

    new = types.SimpleNamespace(spread=spread, regression=regression, correlation=correlation)
    exact["z_refresh"] = brute(y, x, np.asarray(spread.spread(y, x, fit.beta, fit.alpha)), ra, rb, window)["z"]
    return [
        ("refresh: hedge+spread+z+band+corr", (old, new), refresh, refresh_error),
        ("rolling_zscore + moments", (old.spread, spread), zscore, z_error),
        ("rolling_hedge", (old.regression, regression), lambda m: m.rolling_hedge(y, x, window), beta_error),
        ("rolling_correlation (returns)", (old.correlation, correlation),
         lambda m: m.rolling_correlation(ra, rb, window), corr_error),
    ]


if __name__ == "__main__":
    main()
