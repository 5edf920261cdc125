"""Hedge ratios against statsmodels/scipy, brute-force rolling fits and synthetic drifting betas."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from analytics.errors import InsufficientDataError
from analytics.regression import KalmanHedge, fit_hedge, rolling_hedge

PROPERTY = settings(max_examples=30, deadline=None)


def pair(n: int, seed: int, beta: float = 1.7, alpha: float = 3.0, level: float = 100.0) -> tuple:
    rng = np.random.default_rng(seed)
    x = level + np.cumsum(rng.normal(size=n))
    y = alpha + beta * x + rng.normal(size=n)
    return y, x


def test_ols_equals_statsmodels() -> None:
    y, x = pair(400, seed=1)
    reference = sm.OLS(y, sm.add_constant(x)).fit()
    fit = fit_hedge(y, x, "ols")
    assert fit.method == "ols" and fit.nobs == 400
    np.testing.assert_allclose([fit.alpha, fit.beta], reference.params, rtol=1e-10)
    assert fit.r_squared == pytest.approx(reference.rsquared, rel=1e-12)
    assert fit.resid_std == pytest.approx(np.sqrt(reference.scale), rel=1e-10)
    assert fit.beta_path is None and fit.alpha_path is None
    with pytest.raises(ValueError, match=r"a 'ols' hedge fit has one beta, not a path per observation"):
        fit.paths  # noqa: B018 - the property raises


def test_ols_is_accurate_on_raw_btc_eth_price_levels() -> None:
    # At x ≈ 3,140 the intercept is ill-conditioned; statsmodels' pinv loses ~1e-9 on it here.
    # Exact rational arithmetic is the reference.
    y, x = pair(2_000, seed=2, beta=28.6, alpha=0.0, level=3_140.0)
    xs, ys = [Fraction(v) for v in x], [Fraction(v) for v in y]
    x_mean, y_mean = sum(xs) / len(xs), sum(ys) / len(ys)
    sxy = sum((a - x_mean) * (b - y_mean) for a, b in zip(xs, ys, strict=True))
    beta = sxy / sum((a - x_mean) ** 2 for a in xs)
    fit = fit_hedge(y, x)
    assert fit.beta == pytest.approx(float(beta), rel=1e-13)
    assert fit.alpha == pytest.approx(float(y_mean - beta * x_mean), rel=1e-9)


def test_huber_equals_statsmodels_rlm_huber_t() -> None:
    rng = np.random.default_rng(3)
    y, x = pair(500, seed=3)
    outliers = rng.choice(500, size=25, replace=False)
    y[outliers] += rng.normal(0, 30, size=25)
    reference = sm.RLM(y, sm.add_constant(x), M=sm.robust.norms.HuberT()).fit()
    fit = fit_hedge(y, x, "huber")
    np.testing.assert_allclose([fit.alpha, fit.beta], reference.params, rtol=1e-6)
    # The robust fit resists the outliers that drag OLS.
    assert abs(fit.beta - 1.7) < abs(fit_hedge(y, x).beta - 1.7) + 1e-3
    assert fit.r_squared is None


def test_theil_sen_equals_scipy_exactly_below_the_cap() -> None:
    y, x = pair(300, seed=4)
    x = np.round(x, 1)  # tied x values: pairs with equal x must be skipped as scipy does
    reference = stats.theilslopes(y, x)
    fit = fit_hedge(y, x, "theil_sen")
    assert fit.beta == reference.slope
    assert fit.alpha == reference.intercept


def test_theil_sen_above_the_cap_uses_evenly_spaced_subsample_for_the_slope() -> None:
    y, x = pair(1_000, seed=5)
    fit = fit_hedge(y, x, "theil_sen", max_points=200)
    keep = np.linspace(0, 999, 200).round().astype(int)
    assert fit.beta == stats.theilslopes(y[keep], x[keep]).slope
    assert fit.alpha == pytest.approx(np.median(y) - fit.beta * np.median(x), rel=1e-15)
    assert fit.nobs == 1_000
    assert fit.beta == pytest.approx(1.7, abs=0.05)


def kalman_reference(y, x, delta, obs_var, initial_var) -> np.ndarray:
    """Textbook matrix Kalman filter (plain covariance update), an independent implementation."""
    theta, cov = np.zeros(2), initial_var * np.eye(2)
    q = delta / (1 - delta) * np.eye(2)
    path = []
    for y_t, x_t in zip(y, x, strict=True):
        cov = cov + q
        h = np.array([x_t, 1.0])
        s = h @ cov @ h + obs_var
        gain = cov @ h / s
        theta = theta + gain * (y_t - h @ theta)
        cov = (np.eye(2) - np.outer(gain, h)) @ cov
        path.append(theta)
    return np.array(path)


def test_kalman_matches_textbook_filter() -> None:
    y, x = pair(300, seed=6, level=10.0)
    fit = fit_hedge(y, x, "kalman", delta=1e-3, obs_var=0.5, initial_var=10.0)
    reference = kalman_reference(y, x, 1e-3, 0.5, 10.0)
    np.testing.assert_allclose(fit.beta_path, reference[:, 0], rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(fit.alpha_path, reference[:, 1], rtol=1e-8, atol=1e-10)
    assert (fit.beta, fit.alpha) == (fit.beta_path[-1], fit.alpha_path[-1])
    assert fit.paths == (fit.beta_path, fit.alpha_path)


def test_kalman_tracks_a_drifting_beta_where_static_ols_cannot() -> None:
    n = 3_000
    rng = np.random.default_rng(7)
    x = 10.0 + np.cumsum(rng.normal(0, 0.1, n))
    true_beta = np.linspace(1.0, 2.0, n)
    y = true_beta * x + rng.normal(0, 0.05, n)
    fit = fit_hedge(y, x, "kalman", delta=1e-4, obs_var=0.05**2)
    kalman_error = abs(fit.beta - true_beta[-1])
    ols_error = abs(fit_hedge(y, x).beta - true_beta[-1])
    assert kalman_error < 0.05
    assert kalman_error < ols_error / 5
    # Over the last third the whole path stays close to the truth.
    assert np.max(np.abs(fit.beta_path[2 * n // 3 :] - true_beta[2 * n // 3 :])) < 0.1


def test_kalman_streaming_updates_equal_batch_paths() -> None:
    y, x = pair(500, seed=8, level=50.0)
    options = {"delta": 1e-4, "obs_var": 1.0, "initial_var": 5.0, "initial_beta": 1.0, "initial_alpha": 0.5}
    fit = fit_hedge(pd.Series(y), pd.Series(x), "kalman", **options)
    stream = KalmanHedge(**options)
    states = [stream.update(y_t, x_t) for y_t, x_t in zip(y.tolist(), x.tolist(), strict=True)]
    assert isinstance(fit.beta_path, pd.Series) and fit.beta_path.name == "beta"
    np.testing.assert_array_equal(fit.beta_path.to_numpy(), [s.beta for s in states])
    np.testing.assert_array_equal(fit.alpha_path.to_numpy(), [s.alpha for s in states])
    assert stream.nobs == 500 and (stream.beta, stream.alpha) == (fit.beta, fit.alpha)
    # The innovation is the error of the prediction made before seeing y.
    previous = states[-2]
    assert states[-1].innovation == pytest.approx(y[-1] - (previous.beta * x[-1] + previous.alpha))
    cov = stream.covariance
    assert cov.shape == (2, 2) and np.all(np.linalg.eigvalsh(cov) > 0)


def test_kalman_rejects_bad_noise_settings() -> None:
    with pytest.raises(ValueError, match=r"delta must be in \(0, 1\)"):
        KalmanHedge(delta=1.0)
    with pytest.raises(ValueError, match="obs_var must be a finite number > 0"):
        KalmanHedge(obs_var=0.0)
    with pytest.raises(ValueError, match="y and x must be finite"):
        KalmanHedge().update(float("nan"), 1.0)


def test_rolling_hedge_equals_polyfit_window_by_window() -> None:
    y, x = pair(300, seed=9)
    window = 30
    result = rolling_hedge(y, x, window)
    assert result.window == window
    assert np.isnan(result.beta[: window - 1]).all() and np.isnan(result.alpha[: window - 1]).all()
    for end in range(window, 301):
        slope, intercept = np.polyfit(x[end - window : end], y[end - window : end], 1)
        assert result.beta[end - 1] == pytest.approx(slope, rel=1e-9)
        assert result.alpha[end - 1] == pytest.approx(intercept, rel=1e-9, abs=1e-9)


def test_rolling_hedge_is_accurate_at_raw_price_levels() -> None:
    y, x = pair(2_000, seed=10, beta=28.6, alpha=0.0, level=3_140.0)
    window = 100
    result = rolling_hedge(y, x, window)
    for end in range(window, 2_001, 97):
        params = sm.OLS(y[end - window : end], sm.add_constant(x[end - window : end])).fit().params
        assert result.beta[end - 1] == pytest.approx(params[1], rel=1e-7)
        assert result.alpha[end - 1] == pytest.approx(params[0], rel=1e-7)


def test_rolling_hedge_pandas_in_pandas_out_and_constant_window_is_nan() -> None:
    index = pd.date_range("2025-01-01", periods=8, freq="1s", tz="UTC")
    x = pd.Series([1.0, 2.0, 3.0, 3.0, 3.0, 3.0, 4.0, 6.0], index=index)
    y = 2.0 * x + 1.0
    result = rolling_hedge(y, x, 3)
    assert isinstance(result.beta, pd.Series) and result.beta.index.equals(index)
    assert result.beta.name == "beta" and result.alpha.name == "alpha"
    np.testing.assert_allclose(result.beta.iloc[[2, 3, 7]], 2.0)
    assert np.isnan(result.beta.iloc[5]) and np.isnan(result.alpha.iloc[5])  # x = 3, 3, 3


@PROPERTY
@given(
    seed=st.integers(0, 2**32 - 1),
    scale=st.floats(0.01, 100.0),
    method=st.sampled_from(["ols", "huber", "theil_sen"]),
)
def test_scaling_x_by_c_scales_beta_by_one_over_c(seed: int, scale: float, method: str) -> None:
    y, x = pair(80, seed=seed)
    base = fit_hedge(y, x, method)
    scaled = fit_hedge(y, x * scale, method)
    assert scaled.beta == pytest.approx(base.beta / scale, rel=1e-6)
    assert scaled.alpha == pytest.approx(base.alpha, rel=1e-6, abs=1e-6)


@PROPERTY
@given(seed=st.integers(0, 2**32 - 1), window=st.integers(2, 20), cut=st.integers(20, 60))
def test_rolling_hedge_has_no_look_ahead(seed: int, window: int, cut: int) -> None:
    y, x = pair(60, seed=seed)
    full = rolling_hedge(y, x, window)
    prefix = rolling_hedge(y[:cut], x[:cut], window)
    np.testing.assert_array_equal(prefix.beta, full.beta[:cut])
    np.testing.assert_array_equal(prefix.alpha, full.alpha[:cut])


@PROPERTY
@given(seed=st.integers(0, 2**32 - 1), cut=st.integers(3, 60))
def test_kalman_paths_have_no_look_ahead(seed: int, cut: int) -> None:
    y, x = pair(60, seed=seed)
    full = fit_hedge(y, x, "kalman")
    prefix = fit_hedge(y[:cut], x[:cut], "kalman")
    np.testing.assert_array_equal(prefix.beta_path, full.beta_path[:cut])
    np.testing.assert_array_equal(prefix.alpha_path, full.alpha_path[:cut])


@pytest.mark.parametrize("method", ["ols", "huber", "theil_sen", "kalman"])
def test_degenerate_inputs(method: str) -> None:
    y, x = pair(50, seed=11)
    with pytest.raises(ValueError, match="x is constant; hedge ratio undefined"):
        fit_hedge(y, np.full(50, 3.0), method)
    with pytest.raises(ValueError, match="y is constant; hedge ratio undefined"):
        fit_hedge(np.full(50, 3.0), x, method)
    with pytest.raises(ValueError, match="y contains NaN at position 4"):
        fit_hedge(np.where(np.arange(50) == 4, np.nan, y), x, method)
    with pytest.raises(ValueError, match="x contains inf"):
        fit_hedge(y, np.where(np.arange(50) == 4, np.inf, x), method)
    with pytest.raises(InsufficientDataError, match="needs 3 observations, got 2 \\(1 more\\)"):
        fit_hedge(y[:2], x[:2], method)
    with pytest.raises(ValueError, match="same length: y has 50, x has 49"):
        fit_hedge(y, x[:-1], method)


def test_bad_arguments() -> None:
    y, x = pair(50, seed=12)
    with pytest.raises(ValueError, match="unknown method 'lasso'; choose one of ols, huber, theil_sen, kalman"):
        fit_hedge(y, x, "lasso")
    with pytest.raises(ValueError, match="unknown option\\(s\\) for method 'ols': delta; accepted: none"):
        fit_hedge(y, x, "ols", delta=1e-4)
    with pytest.raises(ValueError, match="different indexes"):
        fit_hedge(pd.Series(y), pd.Series(x, index=range(1, 51)))
    with pytest.raises(ValueError, match="window must be at least 2, got 1"):
        rolling_hedge(y, x, 1)
    with pytest.raises(ValueError, match="window must be an integer"):
        rolling_hedge(y, x, 2.5)
    with pytest.raises(InsufficientDataError, match="rolling_hedge\\(window=60\\): needs 60 observations, got 50"):
        rolling_hedge(y, x, 60)
