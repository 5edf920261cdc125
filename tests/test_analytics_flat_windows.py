"""Windows that do not move give NaN, never a made-up number, at any price level.

pandas 3.1's online rolling moments keep a residue of the values that already left the window,
so ten equal prices can have a variance of 1e-15 instead of 0 and a "hedge ratio" of 0. Every
rolling estimator is checked on tick-grid prices with flat runs (0.1 repeated, 89766.4 repeated,
tiny and huge levels) and on the real BTC/ETH futures ticks at 100 ms bars: a flat window gives
NaN, every other window equals a brute-force computation on that window alone.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analytics import (
    KalmanHedge,
    align_bars,
    backtest_mean_reversion,
    fit_hedge,
    log_returns,
    resample_ticks,
    rolling_correlation,
    rolling_hedge,
    rolling_zscore,
)
from analytics._rolling import flat_windows
from testkit.fake_binance import load_recorded_trades
from tests.shared_data import TICKS_NDJSON, require

WINDOW = 10
LEVELS = pytest.mark.parametrize(
    ("level", "tick"),
    [(0.1, 0.1), (89_766.4, 0.1), (3_139.77, 0.01), (1e-8, 1e-10), (1e12, 1e6)],
)


def ticking(level: float, tick: float, n: int, seed: int, first_run: int = 30) -> np.ndarray:
    """Prices on a tick grid (a walk of -1/0/+1 ticks) with a 15-bar flat run every 40 bars.

    Every other run sits exactly on ``level`` (so "0.1 repeated", "89766.4 repeated"); the others
    repeat the price before them. The walk before a run is what leaves pandas its residue.
    """
    prices = level + tick * np.cumsum(np.random.default_rng(seed).integers(-1, 2, n))
    for number, start in enumerate(range(first_run, n, 40)):
        prices[start : start + 15] = level if number % 2 else prices[start - 1]
    return prices


def trailing(values: np.ndarray, window: int) -> np.ndarray:
    """The trailing window of each bar from ``window - 1`` on, shape (n - window + 1, window)."""
    return np.lib.stride_tricks.sliding_window_view(values, window)


def flat_mask(values: np.ndarray, window: int) -> np.ndarray:
    """True at each bar whose trailing window holds a single value (False in warm-up or with NaN)."""
    chunks = trailing(values, window)
    return np.r_[np.zeros(window - 1, bool), chunks.max(axis=1) == chunks.min(axis=1)]


def brute_ols(y: np.ndarray, x: np.ndarray) -> tuple[float, float]:
    """(beta, alpha) of one window's least-squares line, from centred data."""
    dx, dy = x - x.mean(), y - y.mean()
    beta = float(dx @ dy) / float(dx @ dx)
    return beta, float(y.mean() - beta * x.mean())


def brute_z(chunk: np.ndarray) -> float:
    return float((chunk[-1] - chunk.mean()) / chunk.std(ddof=1))


def assert_hedge_matches_brute_force(y: np.ndarray, x: np.ndarray, window: int) -> int:
    """NaN exactly on flat-x windows, brute-force OLS elsewhere; returns the number of flat windows."""
    result = rolling_hedge(y, x, window)
    flat = flat_mask(x, window)
    assert np.isnan(result.beta[flat]).all() and np.isnan(result.alpha[flat]).all()
    for t in np.flatnonzero(~flat)[np.flatnonzero(~flat) >= window - 1]:
        beta, alpha = brute_ols(y[t - window + 1 : t + 1], x[t - window + 1 : t + 1])
        assert result.beta[t] == pytest.approx(beta, rel=1e-6), t
        assert result.alpha[t] == pytest.approx(alpha, rel=1e-6, abs=1e-9 * abs(y[t])), t
    return int(flat.sum())


def assert_zscore_matches_brute_force(s: np.ndarray, window: int) -> int:
    """NaN exactly on flat (or NaN-holding) windows, brute force elsewhere; returns the flat count."""
    z = rolling_zscore(s, window)
    flat = flat_mask(s, window)
    assert np.isnan(z[flat]).all()
    for t in range(window - 1, len(s)):
        chunk = s[t - window + 1 : t + 1]
        if flat[t] or not np.isfinite(chunk).all():
            assert np.isnan(z[t]), t
        else:
            assert z[t] == pytest.approx(brute_z(chunk), rel=1e-6, abs=1e-9), t
    return int(flat.sum())


def assert_correlation_matches_brute_force(a: np.ndarray, b: np.ndarray, window: int) -> None:
    corr = rolling_correlation(a, b, window)
    flat = flat_mask(a, window) | flat_mask(b, window)
    assert np.isnan(corr[flat]).all()
    for t in np.flatnonzero(~flat)[np.flatnonzero(~flat) >= window - 1]:
        expected = np.corrcoef(a[t - window + 1 : t + 1], b[t - window + 1 : t + 1])[0, 1]
        assert corr[t] == pytest.approx(expected, abs=1e-7), t


@settings(max_examples=300, deadline=None)
@given(
    values=st.lists(st.sampled_from([0.1, 0.30000000000000004, 89_766.4, 0.0, -0.0, np.nan]), max_size=40),
    window=st.integers(2, 8),
)
def test_flat_windows_is_the_brute_force_test(values: list[float], window: int) -> None:
    array = np.array(values, dtype=float)
    expected = flat_mask(array, window) if len(array) >= window else np.zeros(len(array), bool)
    np.testing.assert_array_equal(flat_windows(array, window), expected)


@LEVELS
def test_rolling_hedge_is_nan_where_x_is_flat_and_ols_elsewhere(level: float, tick: float) -> None:
    x = ticking(level, tick, 2_000, seed=1)
    y = 0.035 * x + 0.5 * level + tick * np.random.default_rng(2).normal(size=2_000)
    assert assert_hedge_matches_brute_force(y, x, WINDOW) > 300


@LEVELS
def test_rolling_zscore_is_nan_where_the_spread_is_flat(level: float, tick: float) -> None:
    assert assert_zscore_matches_brute_force(ticking(level, tick, 2_000, seed=3), WINDOW) > 300


@LEVELS
def test_rolling_correlation_is_nan_where_either_side_is_flat(level: float, tick: float) -> None:
    a = ticking(level, tick, 2_000, seed=4)
    b = 0.5 * a + ticking(level, tick, 2_000, seed=5, first_run=10)
    assert_correlation_matches_brute_force(a, b, WINDOW)
    # Returns of flat prices are runs of exact zeros: flat too.
    assert_correlation_matches_brute_force(np.diff(a), np.diff(b), WINDOW)


def test_backtest_never_trades_on_an_undefined_hedge_ratio() -> None:
    x = ticking(89_766.4, 0.1, 3_000, seed=6)
    y = np.round(0.035 * x + 3_139.77 / 2 + 0.01 * np.cumsum(np.random.default_rng(7).normal(size=3_000)), 2)
    result = backtest_mean_reversion(y, x, WINDOW, entry=2.0)
    assert result.n_trades > 10
    check_trades_are_hedged_by_the_signal_window(result.trades, y, x, WINDOW)


def check_trades_are_hedged_by_the_signal_window(trades: pd.DataFrame, y: np.ndarray, x: np.ndarray,
                                                 window: int) -> None:
    """Every trade holds the OLS hedge ratio of the window ending at its signal bar (the bar before the fill).

    So no trade opens where x was flat (before the fix: hedge_ratio 0, y held unhedged). A ratio of
    exactly 0 stays possible where y and x really do not co-move over the window.
    """
    assert np.isfinite(trades["hedge_ratio"]).all()
    for entry, beta in zip(trades["entry_time"].to_numpy(), trades["hedge_ratio"].to_numpy(), strict=True):
        signal = int(entry) - 1
        x_window = x[signal - window + 1 : signal + 1]
        assert x_window.max() > x_window.min(), f"trade filled at bar {entry} opened on a flat x window"
        expected, _ = brute_ols(y[signal - window + 1 : signal + 1], x_window)
        assert beta == pytest.approx(expected, rel=1e-6, abs=1e-12)


@pytest.mark.parametrize(("level", "tick"), [(0.1, 0.1), (89_766.4, 0.1), (1e-8, 1e-10), (1e12, 1e6)])
def test_kalman_over_a_flat_stretch_of_x_keeps_tracking_and_stays_well_posed(level: float, tick: float) -> None:
    """While x is flat only beta·x + alpha is identified: no 0/0, the filter keeps tracking y."""
    rng = np.random.default_rng(8)
    x = level + tick * np.cumsum(rng.integers(-1, 2, 3_000)).astype(float)
    x[500:2_500] = x[499]
    noise = 0.3 * tick
    y = 0.035 * x + 0.5 * level + noise * rng.normal(size=3_000)
    prior = fit_hedge(y[:100], x[:100])
    kalman = KalmanHedge(obs_var=prior.resid_std**2, initial_beta=prior.beta, initial_alpha=prior.alpha)
    states = [kalman.update(y_t, x_t) for y_t, x_t in zip(y.tolist(), x.tolist(), strict=True)]
    beta = np.array([s.beta for s in states])
    innovations = np.array([s.innovation for s in states])
    assert np.isfinite(beta).all()
    # The predicted variance never falls below the observation noise: nothing divides by ~0.
    assert min(s.innovation_var for s in states) >= prior.resid_std**2
    assert np.all(np.linalg.eigvalsh(kalman.covariance) > 0)
    # Over the flat stretch the one-step prediction error is as small as where x moves.
    assert innovations[600:2_500].std() < 2 * innovations[2_600:].std()
    assert innovations[600:2_500].std() < 3 * noise


# -- the real recording --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_100ms() -> pd.DataFrame:
    """Closes of the real BTCUSDT/ETHUSDT futures trades on 100 ms bars (zero-price rows dropped)."""
    trades = load_recorded_trades(require(TICKS_NDJSON))
    bars = {}
    for symbol in ("BTCUSDT", "ETHUSDT"):
        mine = [t for t in trades if t.symbol == symbol]
        bars[symbol] = resample_ticks(np.array([t.ts_ms for t in mine]), np.array([t.price for t in mine]),
                                      np.array([t.qty for t in mine]), 100)
    return align_bars(bars, 100).closes


def test_real_ticks_flat_windows_are_nan_and_the_others_equal_brute_force(real_100ms: pd.DataFrame) -> None:
    y, x = real_100ms["ETHUSDT"].to_numpy(), real_100ms["BTCUSDT"].to_numpy()
    assert len(y) == 2_578
    assert assert_hedge_matches_brute_force(y, x, WINDOW) == 336  # BTC did not trade for a second, 336 times
    assert assert_zscore_matches_brute_force(y, WINDOW) == 33
    fit = fit_hedge(y, x)
    assert assert_zscore_matches_brute_force(y - fit.beta * x - fit.alpha, WINDOW) > 0
    assert_correlation_matches_brute_force(log_returns(y), log_returns(x), WINDOW)


def test_real_ticks_backtest_holds_a_real_hedge_in_every_trade(real_100ms: pd.DataFrame) -> None:
    y, x = real_100ms["ETHUSDT"].to_numpy(), real_100ms["BTCUSDT"].to_numpy()
    result = backtest_mean_reversion(y, x, WINDOW, entry=2.0)
    assert result.n_trades > 0
    check_trades_are_hedged_by_the_signal_window(result.trades, y, x, WINDOW)
