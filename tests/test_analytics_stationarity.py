"""ADF and Engle–Granger pinned to statsmodels; half-life on AR(1) spreads with known reversion."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy.signal import lfilter
from statsmodels.tools.sm_exceptions import CollinearityWarning
from statsmodels.tsa.stattools import adfuller, coint

from analytics.errors import InsufficientDataError
from analytics.stationarity import adf, engle_granger, half_life


def ar1(n: int, phi: float, seed: int, sigma: float = 1.0) -> np.ndarray:
    """s_t = phi·s_{t-1} + e_t, e ~ N(0, sigma²), s_0 = e_0."""
    return lfilter([1.0], [1.0, -phi], np.random.default_rng(seed).normal(0.0, sigma, n))


def make_series(kind: str, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "random_walk":
        return 100.0 + np.cumsum(rng.normal(size=n))
    if kind == "stationary_ar":
        return 5.0 + ar1(n, 0.9, seed)
    if kind == "trend":
        return 50.0 + 0.05 * np.arange(n) + ar1(n, 0.7, seed)
    # ARMA-like differences, so the information criteria pick a lag above zero.
    shocks = rng.normal(size=n)
    return np.cumsum(shocks + 0.8 * np.r_[0.0, shocks[:-1]] + 0.5 * np.r_[0.0, 0.0, shocks[:-2]])


@pytest.mark.parametrize("kind", ["random_walk", "stationary_ar", "trend", "ma_differences"])
@pytest.mark.parametrize("regression", ["c", "ct", "n"])
@pytest.mark.parametrize("autolag", ["AIC", "BIC", None])
def test_adf_equals_statsmodels_adfuller(kind: str, regression: str, autolag: str | None) -> None:
    x = make_series(kind, 400, seed=len(kind))
    reference = adfuller(x, regression=regression, autolag=autolag, result_object=True)
    result = adf(x, autolag=autolag, regression=regression)
    assert result.statistic == pytest.approx(reference.statistic, abs=1e-6)
    assert result.pvalue == pytest.approx(reference.pvalue, abs=1e-6)
    assert result.used_lag == reference.lags
    assert result.nobs == reference.nobs
    assert dict(result.critical_values) == reference.critical_values
    assert result.regression == regression
    if autolag is None:
        assert result.icbest is None
    else:
        assert result.icbest == pytest.approx(reference.icbest, rel=1e-9)


@pytest.mark.parametrize("maxlag", [0, 1, 7])
@pytest.mark.parametrize("autolag", ["aic", None])
def test_adf_with_explicit_maxlag_equals_statsmodels(maxlag: int, autolag: str | None) -> None:
    x = make_series("ma_differences", 150, seed=3)
    reference = adfuller(x, maxlag=maxlag, autolag=autolag, result_object=True)
    result = adf(pd.Series(x), maxlag=maxlag, autolag=autolag)
    assert result.statistic == pytest.approx(reference.statistic, abs=1e-6)
    assert result.pvalue == pytest.approx(reference.pvalue, abs=1e-6)
    assert (result.used_lag, result.nobs, result.maxlag) == (reference.lags, reference.nobs, maxlag)


def test_adf_picks_a_lag_and_refits_on_the_longer_sample_like_statsmodels() -> None:
    # The lag is chosen on the maxlag-trimmed sample but reported from a refit on all usable rows.
    x = make_series("ma_differences", 1_000, seed=4)
    result = adf(x)
    assert 0 < result.used_lag < result.maxlag
    assert result.nobs == len(x) - 1 - result.used_lag


def test_adf_reads_stationarity_right() -> None:
    assert adf(ar1(2_000, 0.5, seed=5)).pvalue < 0.01
    assert adf(make_series("random_walk", 2_000, seed=6)).pvalue > 0.05


def test_adf_critical_values_are_read_only() -> None:
    result = adf(make_series("random_walk", 100, seed=7))
    with pytest.raises(TypeError):
        result.critical_values["5%"] = 0.0  # type: ignore[index]


def test_adf_degenerate_inputs() -> None:
    with pytest.raises(ValueError, match="series is constant; the ADF test is undefined"):
        adf(np.full(100, 2.0))
    with pytest.raises(ValueError, match="series contains NaN at position 3"):
        adf(np.r_[1.0, 2.0, 3.0, np.nan, np.arange(50.0)])
    with pytest.raises(InsufficientDataError, match="adf\\(regression='ct'\\): needs 6 observations, got 5"):
        adf([1.0, 3.0, 2.0, 5.0, 4.0], regression="ct")
    with pytest.raises(InsufficientDataError, match="adf\\(maxlag=30, regression='c'\\): needs 64 observations"):
        adf(make_series("random_walk", 50, seed=8), maxlag=30)
    with pytest.raises(ValueError, match="unknown regression 'ctt'"):
        adf(make_series("random_walk", 50, seed=8), regression="ctt")
    with pytest.raises(ValueError, match="unknown autolag 't-stat'"):
        adf(make_series("random_walk", 50, seed=8), autolag="t-stat")
    with pytest.raises(ValueError, match="maxlag must be at least 0"):
        adf(make_series("random_walk", 50, seed=8), maxlag=-1)


def cointegrated_pair(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = 100.0 + np.cumsum(rng.normal(size=n))
    return 5.0 + 1.5 * x + ar1(n, 0.8, seed + 1), x


@pytest.mark.parametrize("cointegrated", [True, False])
@pytest.mark.parametrize("autolag", ["aic", "bic"])
def test_engle_granger_equals_statsmodels_coint(cointegrated: bool, autolag: str) -> None:
    y, x = cointegrated_pair(600, seed=9)
    if not cointegrated:
        y = 100.0 + np.cumsum(np.random.default_rng(10).normal(size=600))
    statistic, pvalue, critical = coint(y, x, trend="c", autolag=autolag)
    result = engle_granger(y, x, autolag=autolag)
    assert result.statistic == pytest.approx(statistic, abs=1e-6)
    assert result.pvalue == pytest.approx(pvalue, abs=1e-6)
    assert list(result.critical_values.values()) == pytest.approx(list(critical), rel=1e-12)
    assert (result.pvalue < 0.01) == cointegrated
    assert result.nobs == 600


def test_engle_granger_uses_cointegration_not_adf_p_values() -> None:
    y, x = cointegrated_pair(300, seed=11)
    result = engle_granger(y, x)
    residuals = y - result.alpha - result.beta * x
    plain = adf(residuals, regression="n")
    assert plain.statistic == result.statistic and plain.used_lag == result.used_lag
    # The same statistic is less significant against the Engle–Granger distribution.
    assert result.pvalue > plain.pvalue
    assert result.critical_values["5%"] < plain.critical_values["5%"]
    assert result.beta == pytest.approx(1.5, abs=0.1)


def test_engle_granger_collinear_pair_matches_statsmodels_edge_case() -> None:
    x = 100.0 + np.cumsum(np.random.default_rng(12).normal(size=200))
    y = 2.0 * x + 1.0
    with pytest.warns(CollinearityWarning):
        statistic, pvalue, _ = coint(y, x)
    result = engle_granger(y, x)
    assert result.statistic == statistic == -math.inf
    assert result.pvalue == pvalue == 0.0
    assert result.used_lag == 0


def test_engle_granger_degenerate_inputs() -> None:
    y, x = cointegrated_pair(50, seed=13)
    with pytest.raises(ValueError, match="x is constant"):
        engle_granger(y, np.ones(50))
    with pytest.raises(InsufficientDataError, match="engle_granger: needs 3 observations, got 2"):
        engle_granger(y[:2], x[:2])
    with pytest.raises(ValueError, match="same length"):
        engle_granger(y, x[:-1])


@pytest.mark.parametrize("phi", [0.9, 0.97])
def test_half_life_of_ar1_spread(phi: float) -> None:
    result = half_life(ar1(100_000, phi, seed=14) + 3.0)
    exact = -math.log(2.0) / math.log(phi)
    continuous = -math.log(2.0) / (phi - 1.0)
    assert result.mean_reverting
    assert result.lambda_ == pytest.approx(phi - 1.0, abs=0.003)
    assert result.bars == pytest.approx(continuous, rel=0.05)
    assert result.bars == pytest.approx(exact, rel=0.1)
    assert result.nobs == 100_000


def test_half_life_of_explosive_spread_is_infinite() -> None:
    result = half_life(ar1(500, 1.01, seed=15))
    assert result.bars == math.inf
    assert not result.mean_reverting and result.lambda_ > 0


def test_half_life_degenerate_inputs() -> None:
    with pytest.raises(ValueError, match="spread is constant; half-life undefined"):
        half_life(np.zeros(20))
    with pytest.raises(InsufficientDataError, match="half_life: needs 3 observations, got 2"):
        half_life([1.0, 2.0])
    with pytest.raises(ValueError, match="spread contains NaN"):
        half_life([1.0, np.nan, 2.0, 3.0])
