"""A shared pair view extended by the bars that closed since, instead of computed again over the whole span."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analytics import align_bars
from domain import Regression
from pairs.bars import PairBars, _pair_bars
from pairs.compute import PairParams, compute_pair, extend_pair

SERIES = ("y", "x", "beta", "alpha", "spread", "spread_mean", "spread_std", "zscore", "correlation")


def sparse_bars(n: int, seed: int) -> dict[str, pd.DataFrame]:
    """1 s bars of two symbols that each skip some seconds (then the other carries the grid)."""
    rng = np.random.default_rng(seed)
    start = pd.Timestamp("2025-01-01", tz="UTC")
    frames = {}
    for name, level in (("AAAUSDT", 100.0), ("BBBUSDT", 50.0)):
        close = level * np.exp(np.cumsum(rng.normal(0, 1e-3, n)))
        traded = rng.random(n) > 0.2
        traded[:3] = True
        index = pd.date_range(start, periods=n, freq="1s", name="start").as_unit("ms")[traded]
        frames[name] = pd.DataFrame({"open": close[traded], "high": close[traded], "low": close[traded],
                                     "close": close[traded], "volume": rng.uniform(0, 2, traded.sum()),
                                     "trades": rng.integers(1, 6, traded.sum()), "vwap": close[traded]},
                                    index=index)
    return frames


def cut(frames: dict[str, pd.DataFrame], end: pd.Timestamp) -> dict[str, pd.DataFrame]:
    return {s: f[f.index < end] for s, f in frames.items()}


def test_extending_bars_gives_the_alignment_of_the_whole():
    frames = sparse_bars(400, 1)
    grid = pd.date_range("2025-01-01", periods=400, freq="1s", tz="UTC")
    bars = _pair_bars(cut(frames, grid[300]), 1_000, 0)
    for end in (grid[300], grid[301], grid[330], grid[399] + pd.Timedelta(seconds=1)):
        new = {s: f[(f.index >= grid[300]) & (f.index < end)] for s, f in frames.items()}
        extended = bars.extended(new, 7)
        whole = align_bars(cut(frames, end), 1_000)
        for name in ("closes", "volumes", "trades", "filled"):
            pd.testing.assert_frame_equal(getattr(extended.aligned, name), getattr(whole, name), obj=name)
        for symbol, frame in cut(frames, end).items():
            pd.testing.assert_frame_equal(extended.by_symbol[symbol], frame)
        assert extended.market_now_ms == 7
    # Bars at or before the last aligned one are not taken twice.
    again = bars.extended(frames, 7)
    assert again.aligned.closes.index.is_unique and len(again.aligned.closes) == len(align_bars(frames, 1_000).closes)
    with pytest.raises(ValueError, match="aligned bars"):
        PairBars(1_000, {}, None, None, 0).extended(frames, 0)


@pytest.mark.parametrize("min_trades", [0, 2])
def test_extending_rolling_ols_analytics_equals_computing_the_whole(min_trades):
    frames = sparse_bars(600, 2)
    grid = pd.date_range("2025-01-01", periods=600, freq="1s", tz="UTC")
    params = PairParams("AAAUSDT", "BBBUSDT", window=30)
    bars = _pair_bars(cut(frames, grid[400]), 1_000, 0)
    pair = compute_pair(bars.closes(min_trades=min_trades), params)
    for end in (grid[401], grid[460], grid[599] + pd.Timedelta(seconds=1)):
        longer = bars.extended({s: f[f.index >= grid[400]] for s, f in cut(frames, end).items()}, 0)
        closes = longer.closes(min_trades=min_trades)
        extended, whole = extend_pair(pair, closes), compute_pair(closes, params)
        pd.testing.assert_index_equal(extended.index, whole.index)
        for name in SERIES:
            pd.testing.assert_series_equal(getattr(extended, name), getattr(whole, name), rtol=1e-9, atol=1e-12,
                                           obj=name)
        assert extended.half_life.bars == pytest.approx(whole.half_life.bars, rel=1e-9)
        assert extended.half_life.nobs == whole.half_life.nobs and extended.needs == whole.needs == ()
    assert extend_pair(pair, bars.closes(min_trades=min_trades)) is pair  # nothing new


def test_fits_over_the_whole_span_and_analytics_still_warming_up_are_computed_again():
    frames = sparse_bars(300, 3)
    closes = align_bars(frames, 1_000).closes
    for regression in Regression:
        params = PairParams("AAAUSDT", "BBBUSDT", window=20, regression=regression)
        pair = compute_pair(closes.iloc[:200], params)
        assert (extend_pair(pair, closes) is None) == (regression is not Regression.ROLLING_OLS)
    warming = compute_pair(closes.iloc[:30], PairParams("AAAUSDT", "BBBUSDT", window=20))
    assert warming.needs and extend_pair(warming, closes) is None


@pytest.mark.parametrize("window", [10, 60])
def test_extending_bar_by_bar_after_a_bad_print_equals_computing_the_whole(window):
    """One bar of y a million typical moves away: every later bar extended one at a time gives the values of
    the whole computation, to 1e-9 (z, correlation absolute; β, α, spread, band relative to their size).

    Was: z differed by up to 8e-5 and β by 1e-8: the print's residue stayed in pandas' online sums of the
    whole computation, not in those of the extension (which starts 2 × window bars back)."""
    rng = np.random.default_rng(9)
    n, start = 6 * window + 40, 3 * window
    x = 50.0 * np.exp(np.cumsum(rng.normal(0, 1e-3, n)))
    y = 20.0 + 1.6 * x + 0.05 * rng.normal(size=n)
    y[start + 5] += 1e6 * 0.05 * np.pi  # the bad print, after the first view
    index = pd.date_range("2025-01-01", periods=n, freq="1s", tz="UTC", name="start").as_unit("ms")
    closes = pd.DataFrame({"AAAUSDT": y, "BBBUSDT": x}, index=index)
    params = PairParams("AAAUSDT", "BBBUSDT", window=window)
    pair = compute_pair(closes.iloc[:start], params)
    for end in range(start + 1, n + 1):
        pair = extend_pair(pair, closes.iloc[:end])
        whole = compute_pair(closes.iloc[:end], params)
        assert pair is not None and pair.waiting == whole.waiting == ()
        for name in SERIES:
            absolute = name in ("zscore", "correlation")
            pd.testing.assert_series_equal(getattr(pair, name), getattr(whole, name), rtol=0 if absolute else 1e-9,
                                           atol=1e-9 if absolute else 1e-12, obj=f"{name} at bar {end - 1}")
