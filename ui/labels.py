"""What users read for the domain's values: display labels of timeframes, regressions, analytics
and scan trends, durations, what an analytic still needs, and the scanner's q-value note.

Pure (no Streamlit), so the command lines above ``ui/`` print the same words as the dashboard.
Keys are :mod:`domain` values and the enums and names of ``pairs/``; nothing uses a label as a key.
"""

from __future__ import annotations

import math

import pandas as pd

from domain import FIVE_MINUTES, ONE_MINUTE, ONE_SECOND, Regression, Timeframe
from pairs.compute import Analytic, Needs

TIMEFRAME_LABELS = {ONE_SECOND: "1 s", ONE_MINUTE: "1 min", FIVE_MINUTES: "5 min"}
REGRESSION_LABELS = {
    Regression.ROLLING_OLS: "Rolling OLS",
    Regression.STATIC_OLS: "Static OLS (in-sample)",
    Regression.HUBER: "Huber (in-sample)",
    Regression.THEIL_SEN: "Theil–Sen (in-sample)",
    Regression.KALMAN: "Kalman filter",
}
ANALYTIC_LABELS = {
    Analytic.HEDGE_RATIO: "Hedge ratio",
    Analytic.ZSCORE: "Z-score",
    Analytic.CORRELATION: "Rolling correlation",
    Analytic.HALF_LIFE: "Half-life",
}
# The deterministic terms of a scan (analytics.TRENDS), in the order the scanner offers them.
TREND_LABELS = {"c": "constant", "ct": "constant + linear trend", "ctt": "constant + quadratic trend", "n": "none"}
# One line on every output that shows q-values: with hundreds of pairs, p < 0.05 alone is noise. It
# says what the family is and what was adjusted for (bench/scan_fdr.py measures the promise).
Q_VALUE_NOTE = ("q-value: the Engle–Granger p-value adjusted for testing every pair of the scanned symbols "
                "(Benjamini–Hochberg over all tested pairs). Each pair is tested once, Y on X with Y the symbol "
                "that sorts first: an ordering fixed before the test, so it needs no correction (the better of "
                "the two orderings would). Of the pairs with q < 0.05, at most about 5 % are expected to be false "
                "discoveries (measured: 4.9 %), and with no cointegrated pair about 5 % of scans show any, as "
                "long as the Engle–Granger p-values themselves hold: beside a cointegrated pair whose spread "
                "swings as much as its legs, the test over-rejects and the share of false ones rises "
                "(12 % measured; README, Scanner q-values).")


def timeframe_label(timeframe: str | int | Timeframe) -> str:
    """``"1 min"`` for ``"1m"``, ``60000`` or the timeframe itself (ValueError for no timeframe)."""
    return TIMEFRAME_LABELS[Timeframe.of(timeframe)]


def format_duration(seconds: float) -> str:
    """'45 s', '12 min', '3.5 h'."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def span_text(first: pd.Timestamp, last: pd.Timestamp, tz: str) -> str:
    """``2026-12-07 09:00:00 → 2026-12-07 10:00:00 (Europe/Paris)``: the bars a result covers, from
    the start of the first to the start of the last (tz-aware), shown in ``tz``."""
    return f"{first.tz_convert(tz):%Y-%m-%d %H:%M:%S} → {last.tz_convert(tz):%Y-%m-%d %H:%M:%S} ({tz})"


def newer_bars_text(newer: int, action: str) -> str:
    """`` **3 newer bars since: {action}.**`` after a kept result's line ('' when ``newer`` is 0):
    what the page shows has moved on since the result was computed."""
    return f" **{newer:,} newer bar{'s' if newer != 1 else ''} since: {action}.**" if newer else ""


def half_life_text(bars: float, interval_ms: int) -> str:
    """A half-life in bars of ``interval_ms`` as time, e.g. '12 min'; '∞' when the spread does not
    revert, '' when unknown (NaN)."""
    if not math.isfinite(bars):
        return "∞" if bars == math.inf else ""
    return format_duration(bars * interval_ms / 1000)


def needs_text(need: Needs, interval_ms: int, capacity: int | None = None) -> str:
    """E.g. "Z-score: needs 37 more bars (≈ 37 s)" for bars of ``interval_ms``.

    ``capacity``: how many bars the lookback holds. A need beyond it is never met by waiting
    (the lookback slides along), so the text says to widen the lookback instead.
    """
    what = ANALYTIC_LABELS[need.what] + (f" ({need.reason})" if need.reason else "")
    if capacity is not None and need.required > capacity:
        return (f"{what}: needs {need.required} bars, the lookback holds {capacity} at this timeframe; "
                "widen the lookback")
    return f"{what}: needs {need.missing} more bar{'s' if need.missing != 1 else ''} " \
           f"(≈ {format_duration(need.missing * interval_ms / 1000)})"


def verdict(pvalue: float, positive: str, negative: str) -> str:
    """One-line reading of a p-value at the usual levels."""
    for level in (0.01, 0.05, 0.10):
        if pvalue < level:
            return f"p = {pvalue:.4f} < {level:.2f}: {positive}."
    return f"p = {pvalue:.4f} ≥ 0.10: {negative}."
