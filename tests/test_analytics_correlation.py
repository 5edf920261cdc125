"""Rolling correlation and correlation matrix against pandas; lead–lag on shifted series; log returns."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analytics.correlation import (
    clustered_order,
    correlation_matrix,
    lead_lag,
    rolling_correlation,
    strongest_symbols,
)
from analytics.errors import InsufficientDataError
from analytics.returns import log_returns


def returns_pair(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = rng.normal(0, 1e-3, n)
    return a, 0.6 * a + rng.normal(0, 1e-3, n)


def test_rolling_correlation_equals_pandas() -> None:
    a, b = returns_pair(500, seed=1)
    expected = pd.Series(a).rolling(40).corr(pd.Series(b)).to_numpy()
    result = rolling_correlation(a, b, 40)
    np.testing.assert_allclose(result, expected, rtol=1e-9, equal_nan=True)
    assert np.isnan(result[:39]).all() and np.isfinite(result[39:]).all()


def test_rolling_correlation_of_prices_keeps_pandas_index_and_stays_in_range() -> None:
    index = pd.date_range("2025-12-15", periods=300, freq="1s", tz="UTC")
    rng = np.random.default_rng(2)
    x = pd.Series(89_800.0 + np.cumsum(rng.normal(0, 0.5, 300)), index=index)
    y = pd.Series(3_140.0 + x.to_numpy() / 28.6 + rng.normal(0, 0.01, 300), index=index)
    result = rolling_correlation(y, x, 60)
    assert isinstance(result, pd.Series) and result.index.equals(index) and result.name == "correlation"
    np.testing.assert_allclose(result, y.rolling(60).corr(x), rtol=1e-7, equal_nan=True)
    assert result.dropna().between(-1.0, 1.0).all()


def test_rolling_correlation_constant_window_is_nan() -> None:
    a = np.r_[np.random.default_rng(3).normal(size=20), np.zeros(10)]
    b = np.random.default_rng(4).normal(size=30)
    result = rolling_correlation(a, b, 5)
    assert np.isnan(result[24:]).all() and not np.isinf(result).any()


def test_rolling_correlation_bad_arguments() -> None:
    a, b = returns_pair(10, seed=5)
    with pytest.raises(InsufficientDataError, match="needs 20 observations, got 10"):
        rolling_correlation(a, b, 20)
    with pytest.raises(ValueError, match="window must be at least 2"):
        rolling_correlation(a, b, 0)
    with pytest.raises(ValueError, match="same length"):
        rolling_correlation(a, b[:5], 3)


def test_correlation_matrix_equals_pandas() -> None:
    rng = np.random.default_rng(6)
    common = rng.normal(size=400)
    returns = pd.DataFrame(
        {
            "BTCUSDT": common + rng.normal(size=400),
            "ETHUSDT": common + rng.normal(size=400),
            "SOLUSDT": rng.normal(size=400),
        }
    )
    result = correlation_matrix(returns)
    pd.testing.assert_frame_equal(result, returns.corr())
    assert list(result.index) == list(result.columns) == ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
    np.testing.assert_allclose(np.diag(result), 1.0)


def test_correlation_matrix_degenerate_inputs() -> None:
    returns = pd.DataFrame({"A": [0.1, -0.2, 0.3, 0.0], "B": [0.0, 0.0, 0.0, 0.0]})
    with pytest.raises(ValueError, match="B is constant; correlation undefined"):
        correlation_matrix(returns)
    with pytest.raises(ValueError, match="contains NaN or inf"):
        correlation_matrix(returns.assign(B=[0.1, np.nan, 0.2, 0.3]))
    with pytest.raises(InsufficientDataError, match="correlation_matrix: needs 3 observations, got 2"):
        correlation_matrix(returns.iloc[:2])
    with pytest.raises(ValueError, match="must be a DataFrame"):
        correlation_matrix(returns["A"])


@pytest.mark.parametrize("shift", [3, -2, 0])
def test_lead_lag_finds_the_shift_with_positive_meaning_a_leads(shift: int) -> None:
    rng = np.random.default_rng(7)
    driver = rng.normal(size=2_000)
    a = driver
    b = np.roll(driver, shift) + 0.3 * rng.normal(size=2_000)  # b_t ≈ a_{t-shift}
    result = lead_lag(a, b, max_lag=5)
    assert result.lags.tolist() == list(range(-5, 6))
    assert result.best_lag == shift
    assert result.best_correlation > 0.9
    # Each entry is corr(a_t, b_{t+lag}) over the overlapping bars.
    assert result.correlations[5 + 2] == pytest.approx(np.corrcoef(a[:-2], b[2:])[0, 1], rel=1e-12)
    assert result.correlations[5 - 1] == pytest.approx(np.corrcoef(a[1:], b[:-1])[0, 1], rel=1e-12)


def test_lead_lag_ties_go_to_the_shortest_lag() -> None:
    a = np.tile([1.0, -1.0], 50)  # period 2: lags 0, ±2 correlate perfectly
    result = lead_lag(a, a, max_lag=2)
    assert result.best_lag == 0


def test_lead_lag_degenerate_inputs() -> None:
    a, b = returns_pair(10, seed=8)
    with pytest.raises(InsufficientDataError, match="lead_lag\\(max_lag=8\\): needs 11 observations, got 10"):
        lead_lag(a, b, 8)
    with pytest.raises(ValueError, match="b is constant; correlation undefined"):
        lead_lag(a, np.ones(10), 2)
    with pytest.raises(ValueError, match="max_lag must be at least 0"):
        lead_lag(a, b, -1)


def test_log_returns_for_arrays_series_and_frames() -> None:
    prices = np.array([100.0, 110.0, 99.0])
    np.testing.assert_allclose(log_returns(prices), [np.log(1.1), np.log(0.9)])
    index = pd.date_range("2025-12-15", periods=3, freq="1min", tz="UTC")
    series = log_returns(pd.Series(prices, index=index, name="BTCUSDT"))
    assert series.index.equals(index[1:]) and series.name == "BTCUSDT"
    frame = log_returns(pd.DataFrame({"A": prices, "B": prices * 2}, index=index))
    assert frame.index.equals(index[1:]) and list(frame.columns) == ["A", "B"]
    np.testing.assert_allclose(frame["B"], series)


def test_log_returns_degenerate_inputs() -> None:
    with pytest.raises(ValueError, match="prices must be > 0"):
        log_returns([1.0, 0.0, 2.0])
    with pytest.raises(InsufficientDataError, match="log_returns: needs 2 observations, got 1"):
        log_returns([1.0])
    with pytest.raises(ValueError, match="contains NaN or inf"):
        log_returns(pd.DataFrame({"A": [1.0, np.nan]}))


# ---------------------------------------------------------------- a readable heatmap of 200 symbols
def _planted_clusters(sizes: tuple[int, ...], n: int = 500, seed: int = 3) -> tuple[pd.DataFrame, list[set[str]]]:
    """Returns of symbols in planted clusters (each a common factor plus noise), shuffled columns."""
    rng = np.random.default_rng(seed)
    columns, groups = {}, []
    for g, size in enumerate(sizes):
        factor = rng.normal(size=n)
        names = {f"C{g}S{i:03d}USDT" for i in range(size)}
        groups.append(names)
        for name in sorted(names):
            columns[name] = factor + 0.5 * rng.normal(size=n)
    order = rng.permutation(len(columns))
    names = list(columns)
    return pd.DataFrame({names[i]: columns[names[i]] for i in order}), groups


def test_clustered_order_is_a_permutation_that_puts_each_planted_cluster_in_one_block():
    returns, groups = _planted_clusters((40, 60, 50, 50))  # 200 symbols
    matrix = correlation_matrix(returns)
    order = clustered_order(matrix)
    assert sorted(order) == sorted(matrix.index)  # every symbol once
    positions = {name: i for i, name in enumerate(order)}
    for group in groups:  # contiguous: the cluster's positions span exactly its size
        at = sorted(positions[name] for name in group)
        assert at[-1] - at[0] == len(group) - 1, (len(group), at[0], at[-1])
    assert clustered_order(matrix) == order  # deterministic
    # The input order does not decide the blocks: a shuffled matrix groups the same clusters.
    shuffled = matrix.iloc[::-1, ::-1]
    again = {name: i for i, name in enumerate(clustered_order(shuffled))}
    for group in groups:
        at = sorted(again[name] for name in group)
        assert at[-1] - at[0] == len(group) - 1


def test_clustered_order_puts_symbols_without_a_correlation_last_and_handles_tiny_matrices():
    returns, _ = _planted_clusters((3, 3))
    matrix = correlation_matrix(returns)
    names = list(matrix.index)
    blank = matrix.copy()
    blank.loc["QUIETUSDT"] = np.nan
    blank["QUIETUSDT"] = np.nan
    blank.loc["QUIETUSDT", "QUIETUSDT"] = 1.0
    order = clustered_order(blank)
    assert order[-1] == "QUIETUSDT" and sorted(order[:-1]) == sorted(names)
    two = matrix.iloc[:2, :2]
    assert clustered_order(two) == list(two.index)
    assert clustered_order(matrix.iloc[:1, :1]) == [names[0]]
    with pytest.raises(ValueError, match="square DataFrame"):
        clustered_order(matrix.iloc[:, :3])


def test_strongest_symbols_keeps_the_most_correlated_and_always_the_pair():
    rng = np.random.default_rng(8)
    factor = rng.normal(size=400)
    returns = pd.DataFrame({f"N{i:03d}USDT": rng.normal(size=400) for i in range(150)})  # independent noise
    for i in range(10):  # ten that move together
        returns[f"T{i}USDT"] = factor + 0.3 * rng.normal(size=400)
    matrix = correlation_matrix(returns)
    top = strongest_symbols(matrix, 12, always=("N000USDT", "N001USDT"))
    assert len(top) == 12
    assert {"N000USDT", "N001USDT"} <= set(top)  # the analysed pair, however weakly correlated
    assert {f"T{i}USDT" for i in range(10)} <= set(top)
    assert top == [s for s in matrix.index if s in set(top)]  # in the matrix's order
    assert strongest_symbols(matrix, 500) == list(matrix.index)
    assert strongest_symbols(matrix, 1, always=("NOTWATCHED",)) == [
        max(matrix.index, key=lambda s: matrix[s].drop(s).abs().max())]
    with pytest.raises(ValueError, match="n must be at least 1"):
        strongest_symbols(matrix, 0)
