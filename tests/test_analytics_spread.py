"""Spread and rolling z-score: brute force per window, no look-ahead, affine invariance, degenerate input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analytics.errors import InsufficientDataError
from analytics.regression import fit_hedge, rolling_hedge
from analytics.spread import rolling_moments, rolling_zscore, spread, zscore_bound

PROPERTY = settings(max_examples=40, deadline=None)


def walk(n: int, seed: int) -> np.ndarray:
    return 100.0 + np.cumsum(np.random.default_rng(seed).normal(size=n))


def test_spread_with_constant_and_path_coefficients() -> None:
    y, x = walk(50, 1), walk(50, 2)
    np.testing.assert_allclose(spread(y, x, 1.5, 2.0), y - 1.5 * x - 2.0)
    beta_path = np.linspace(1.0, 2.0, 50)
    alpha_path = np.linspace(-1.0, 1.0, 50)
    np.testing.assert_allclose(spread(y, x, beta_path, alpha_path), y - beta_path * x - alpha_path)


def test_spread_log_prices_and_pandas_round_trip() -> None:
    index = pd.date_range("2025-12-15", periods=50, freq="1min", tz="UTC")
    y, x = pd.Series(walk(50, 3), index=index), pd.Series(walk(50, 4), index=index)
    fit = fit_hedge(np.log(y), np.log(x))
    result = spread(y, x, fit.beta, fit.alpha, log=True)
    assert isinstance(result, pd.Series) and result.index.equals(index) and result.name == "spread"
    np.testing.assert_allclose(result, np.log(y) - fit.beta * np.log(x) - fit.alpha)
    # OLS residuals have mean zero.
    assert abs(result.mean()) < 1e-12


def test_spread_from_rolling_hedge_is_nan_during_warm_up_and_zscore_follows() -> None:
    y, x = walk(200, 5), walk(200, 6)
    hedge = rolling_hedge(y, x, 30)
    s = spread(y, x, hedge.beta, hedge.alpha)
    assert np.isnan(s[:29]).all() and np.isfinite(s[29:]).all()
    z = rolling_zscore(s, 20)
    # The first full z-score window starts at the first finite spread value.
    assert np.isnan(z[: 29 + 19]).all() and np.isfinite(z[29 + 19 :]).all()


def test_spread_rejects_bad_input() -> None:
    y, x = walk(10, 7), walk(10, 8)
    with pytest.raises(ValueError, match="y must be > 0 for a log-price spread"):
        spread(y - 200.0, x, 1.0, log=True)
    with pytest.raises(ValueError, match="beta path has 9 values but y has 10"):
        spread(y, x, np.ones(9))
    with pytest.raises(ValueError, match="alpha must be finite"):
        spread(y, x, 1.0, float("nan"))
    with pytest.raises(ValueError, match="x contains NaN"):
        spread(y, np.where(np.arange(10) == 3, np.nan, x), 1.0)


def test_rolling_zscore_equals_brute_force_per_window() -> None:
    s = walk(200, 9)
    window = 25
    z = rolling_zscore(s, window)
    assert np.isnan(z[: window - 1]).all()
    for end in range(window, 201):
        chunk = s[end - window : end]
        expected = (chunk[-1] - chunk.mean()) / chunk.std(ddof=1)
        assert z[end - 1] == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_rolling_zscore_constant_window_is_nan_never_inf() -> None:
    s = np.r_[np.arange(10.0), np.full(10, 4.2), np.arange(5.0)]
    z = rolling_zscore(pd.Series(s), 5)
    assert isinstance(z, pd.Series) and z.name == "zscore"
    assert not np.isinf(z).any()
    assert z.iloc[14:20].isna().all()  # windows lying entirely in the flat stretch
    assert np.isfinite(z.iloc[20:]).all()


def test_rolling_zscore_nan_in_window_gives_nan() -> None:
    s = walk(30, 10)
    s[12] = np.nan
    z = rolling_zscore(s, 5)
    assert np.isnan(z[12:17]).all() and np.isfinite(z[17:]).all()


@PROPERTY
@given(
    seed=st.integers(0, 2**32 - 1),
    scale=st.floats(1e-3, 1e3),
    shift=st.floats(-1e4, 1e4),
    window=st.integers(2, 30),
)
def test_rolling_zscore_is_invariant_to_positive_affine_maps(seed, scale, shift, window) -> None:
    s = np.random.default_rng(seed).normal(size=60)
    np.testing.assert_allclose(rolling_zscore(scale * s + shift, window), rolling_zscore(s, window), atol=1e-6)


@PROPERTY
@given(seed=st.integers(0, 2**32 - 1), window=st.integers(2, 30), cut=st.integers(30, 80))
def test_rolling_zscore_has_no_look_ahead(seed: int, window: int, cut: int) -> None:
    s = walk(80, seed)
    np.testing.assert_array_equal(rolling_zscore(s[:cut], window), rolling_zscore(s, window)[:cut])


def test_rolling_zscore_bad_arguments() -> None:
    with pytest.raises(ValueError, match="window must be at least 2, got 1"):
        rolling_zscore(walk(10, 11), 1)
    with pytest.raises(ValueError, match="s contains inf"):
        rolling_zscore([1.0, np.inf, 2.0], 2)
    with pytest.raises(InsufficientDataError, match="needs 30 observations, got 12 \\(18 more\\)") as info:
        rolling_zscore(walk(12, 12), 30)
    assert (info.value.required, info.value.available) == (30, 12)


def test_rolling_moments_equal_brute_force_and_are_exact_on_flat_windows() -> None:
    # BTC-like prices (walk() is a walk near 100), a flat run on 89766.4, a gap.
    s = np.r_[walk(40, 13), np.full(15, 100.0), walk(20, 14)] - 100.0 + 89_766.4
    s[60] = np.nan
    window = 8
    moments = rolling_moments(pd.Series(s), window)
    assert moments.window == window and moments.mean.name == "mean" and moments.std.name == "std"
    for t in range(window - 1, len(s)):
        chunk = s[t - window + 1 : t + 1]
        if np.isnan(chunk).any():
            assert np.isnan(moments.mean.iloc[t]) and np.isnan(moments.std.iloc[t])
        elif chunk.max() == chunk.min():  # bars 47-54: a band of zero width on the value itself
            assert (moments.mean.iloc[t], moments.std.iloc[t]) == (89_766.4, 0.0)
        else:
            assert moments.mean.iloc[t] == pytest.approx(chunk.mean(), rel=1e-12)
            assert moments.std.iloc[t] == pytest.approx(chunk.std(ddof=1), rel=1e-9)
    assert np.isnan(moments.mean.iloc[: window - 1]).all()
    with pytest.raises(InsufficientDataError, match=r"rolling_moments\(window=30\): needs 30 observations"):
        rolling_moments(walk(12, 15), 30)


def test_zscore_bound_values_and_bad_windows() -> None:
    assert zscore_bound(10) == pytest.approx(2.8460498941515415, rel=1e-15)
    assert [round(zscore_bound(w), 3) for w in (2, 3, 20, 60, 200)] == [0.707, 1.155, 4.249, 7.617, 14.071]
    for bad in (1, 0, 2.5, True):
        with pytest.raises(ValueError, match="window must be"):
            zscore_bound(bad)


@pytest.mark.parametrize("level", [0.0, 0.1, 89_766.4, 1e-8, 1e12])
@pytest.mark.parametrize("window", [2, 3, 10, 11, 60, 200])
def test_zscore_bound_is_attained_by_window_minus_one_equal_values_then_an_outlier(level, window) -> None:
    jump = 1.0 if level == 0.0 else level / 1e3
    for sign in (1.0, -1.0):
        s = np.r_[np.full(window - 1, level), level + sign * jump]
        assert rolling_zscore(s, window)[-1] == pytest.approx(sign * zscore_bound(window), rel=1e-9)


def test_zscore_stays_within_its_bound_after_a_far_larger_value_left_the_window() -> None:
    """Was: |z| = bound · (1 + 1.9e-9) on (0.0625, 0.0) once 524289.0 had passed through a 2-bar window."""
    z = rolling_zscore(np.array([0.1, 65536.4, 524289.0, 0.0625, 0.0]), 2)
    assert np.all(np.abs(z[1:]) <= zscore_bound(2))
    assert z[1:] == pytest.approx([zscore_bound(2)] * 2 + [-zscore_bound(2)] * 2, rel=1e-8)


@settings(max_examples=200, deadline=None)
@given(
    values=st.lists(
        st.one_of(st.floats(-1e6, 1e6, allow_nan=False), st.sampled_from([0.0, 0.1, 89_766.4])),
        min_size=2, max_size=60,
    ),
    window=st.integers(2, 60),
)
def test_zscore_never_exceeds_its_bound(values, window) -> None:
    window = min(window, len(values))
    z = rolling_zscore(np.array(values), window)
    finite = z[np.isfinite(z)]
    assert np.all(np.abs(finite) <= zscore_bound(window))
