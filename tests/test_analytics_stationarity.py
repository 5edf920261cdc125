"""ADF and Engle–Granger pinned to statsmodels; half-life on AR(1) spreads with known reversion."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy.signal import lfilter
from statsmodels.tools.sm_exceptions import CollinearityWarning
from statsmodels.tsa.stattools import ADFullerResult, adfuller, coint

from analytics.errors import InsufficientDataError
from analytics.stationarity import AdfResult, adf, engle_granger, half_life
from tests.shared_data import BTC_KLINES_ZIP, ETH_KLINES_ZIP, kline_frame

# Agreement asked of every statistic and p-value pinned to statsmodels below. statsmodels' coint
# fits trend "ctt" on raw t and t² (t up to n), which costs it ~1e-9 relative on 1,440 real bars
# (checked against exact rational arithmetic, where engle_granger is within ~1e-13): 1e-7 there.
REL = 1e-8
REL_CTT_COINT = 1e-7


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


def assert_adf_equal(result: AdfResult, reference: ADFullerResult, regression: str, autolag: str | None) -> None:
    assert result.statistic == pytest.approx(reference.statistic, rel=REL)
    assert result.pvalue == pytest.approx(reference.pvalue, rel=REL)
    assert result.used_lag == reference.lags
    assert result.nobs == reference.nobs
    assert dict(result.critical_values) == reference.critical_values
    assert result.regression == regression
    if autolag is None:
        assert result.icbest is None
    else:
        assert result.icbest == pytest.approx(reference.icbest, rel=REL)


@pytest.mark.parametrize("kind", ["random_walk", "stationary_ar", "trend", "ma_differences"])
@pytest.mark.parametrize("regression", ["c", "ct", "ctt", "n"])
@pytest.mark.parametrize("autolag", ["AIC", "BIC", "t-stat", None])
def test_adf_equals_statsmodels_adfuller(kind: str, regression: str, autolag: str | None) -> None:
    x = make_series(kind, 400, seed=len(kind))
    reference = adfuller(x, regression=regression, autolag=autolag, result_object=True)
    assert_adf_equal(adf(x, autolag=autolag, regression=regression), reference, regression, autolag)


def real_closes() -> dict[str, np.ndarray]:
    """Real one-minute series (1,440 bars each) from the shared Binance kline files."""
    btc, eth = kline_frame(BTC_KLINES_ZIP), kline_frame(ETH_KLINES_ZIP)
    return {"btc_close": btc["close"].to_numpy(), "eth_close": eth["close"].to_numpy(),
            "btc_high": btc["high"].to_numpy(), "eth_low": eth["low"].to_numpy()}


@pytest.mark.parametrize("name", ["btc_close", "eth_close"])
@pytest.mark.parametrize("regression", ["c", "ct", "ctt", "n"])
@pytest.mark.parametrize("autolag", ["AIC", "t-stat"])
def test_adf_equals_statsmodels_on_real_closes(name: str, regression: str, autolag: str) -> None:
    x = real_closes()[name]
    reference = adfuller(x, regression=regression, autolag=autolag, result_object=True)
    assert_adf_equal(adf(x, autolag=autolag, regression=regression), reference, regression, autolag)


@pytest.mark.parametrize("regression", ["c", "ct", "n"])
def test_adf_t_stat_keeps_the_longest_significant_lag(regression: str) -> None:
    # statsmodels' rule: from maxlag down, stop at the first lag whose own t-statistic is
    # significant at 5 %; here that is neither 0 nor maxlag, so the search really ran.
    x = make_series("ma_differences", 1_000, seed=4)
    reference = adfuller(x, regression=regression, autolag="t-stat", result_object=True)
    result = adf(x, autolag="T-STAT", regression=regression)
    assert 0 < result.used_lag < result.maxlag
    assert_adf_equal(result, reference, regression, "t-stat")


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
        result.critical_values["5%"] = 0.0  # type: ignore[index]  # writing to a read-only mapping on purpose


def test_adf_degenerate_inputs() -> None:
    with pytest.raises(ValueError, match="series is constant; the ADF test is undefined"):
        adf(np.full(100, 2.0))
    with pytest.raises(ValueError, match="series contains NaN at position 3"):
        adf(np.r_[1.0, 2.0, 3.0, np.nan, np.arange(50.0)])
    with pytest.raises(InsufficientDataError, match="adf\\(regression='ct'\\): needs 6 observations, got 5"):
        adf([1.0, 3.0, 2.0, 5.0, 4.0], regression="ct")
    with pytest.raises(InsufficientDataError, match="adf\\(maxlag=30, regression='c'\\): needs 64 observations"):
        adf(make_series("random_walk", 50, seed=8), maxlag=30)
    with pytest.raises(ValueError, match="unknown regression 'cct'; choose one of c, ct, ctt, n"):
        adf(make_series("random_walk", 50, seed=8), regression="cct")
    with pytest.raises(ValueError, match="unknown autolag 'hqic'; choose 'AIC', 'BIC', 't-stat' or None"):
        adf(make_series("random_walk", 50, seed=8), autolag="hqic")
    with pytest.raises(InsufficientDataError, match="adf\\(regression='ctt'\\): needs 8 observations, got 7"):
        adf(make_series("random_walk", 7, seed=8), regression="ctt")
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


def trending_pair(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """y cointegrated with x around a deterministic trend: needs trend "ct" (or "ctt")."""
    y, x = cointegrated_pair(n, seed)
    return y + 0.02 * np.arange(n) - 1e-5 * np.arange(n) ** 2, x


def coint_inputs(kind: str) -> tuple[np.ndarray, np.ndarray]:
    if kind == "cointegrated":
        return cointegrated_pair(600, seed=21)
    if kind == "independent":
        return 100.0 + np.cumsum(np.random.default_rng(22).normal(size=600)), cointegrated_pair(600, seed=21)[1]
    if kind == "trending":
        return trending_pair(800, seed=23)
    closes = real_closes()
    if kind == "real_btc_high_low":  # one market's high and low: a real cointegrated pair
        return closes["btc_high"], kline_frame(BTC_KLINES_ZIP)["low"].to_numpy()
    return closes["btc_close"], closes["eth_close"]  # two days apart: not cointegrated


@pytest.mark.parametrize("kind", ["cointegrated", "independent", "trending", "real_btc_high_low", "real_btc_eth"])
@pytest.mark.parametrize("trend", ["c", "ct", "ctt", "n"])
@pytest.mark.parametrize("autolag", ["aic", "bic", "t-stat", None])
def test_engle_granger_equals_statsmodels_coint_for_every_trend(kind: str, trend: str, autolag: str | None) -> None:
    y, x = coint_inputs(kind)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        reference = coint(y, x, trend=trend, autolag=autolag)
    result = engle_granger(y, x, trend=trend, autolag=autolag)
    rel = REL_CTT_COINT if trend == "ctt" else REL
    # A real high/low pair without a constant is collinear by statsmodels' rule (uncentred R²).
    collinear = any(issubclass(w.category, CollinearityWarning) for w in caught)
    assert collinear == (kind == "real_btc_high_low" and trend == "n")
    assert (result.statistic == -math.inf) == collinear
    assert result.statistic == pytest.approx(reference.coint_t, rel=rel)
    assert result.pvalue == pytest.approx(reference.pvalue, rel=rel)
    np.testing.assert_allclose(list(result.critical_values.values()), reference.critical_values, rtol=1e-12)
    assert result.trend == trend
    # The reported coefficients reproduce statsmodels' first-stage residuals (t = 1..n).
    t = np.arange(1.0, len(y) + 1.0)
    fitted = result.alpha + result.beta * x + sum(c * t ** (i + 1) for i, c in enumerate(result.trend_coefficients))
    residuals = y - fitted
    if collinear:
        assert result.used_lag == 0
    else:
        assert result.used_lag == adfuller(residuals, regression="n", autolag=autolag, result_object=True).lags
    assert len(result.trend_coefficients) == {"n": 0, "c": 0, "ct": 1, "ctt": 2}[trend]
    if trend == "n":
        assert result.alpha == 0.0
        assert all(math.isnan(v) for v in result.critical_values.values())
    design = np.column_stack([x] + ([] if trend == "n" else [np.ones_like(t)]) + [t ** (i + 1) for i in range(
        {"n": 0, "c": 0, "ct": 1, "ctt": 2}[trend])])
    expected = y - design @ np.linalg.lstsq(design, y, rcond=None)[0]
    np.testing.assert_allclose(residuals, expected, atol=1e-7 * np.std(y))


def test_engle_granger_trend_separates_a_trending_spread() -> None:
    # Around a deterministic trend the constant-only test misses the cointegration.
    y, x = trending_pair(800, seed=23)
    assert engle_granger(y, x, trend="ct").pvalue < 0.01
    assert engle_granger(y, x, trend="c").pvalue > engle_granger(y, x, trend="ct").pvalue


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
    with pytest.raises(InsufficientDataError, match="engle_granger\\(trend='c'\\): needs 3 observations, got 2"):
        engle_granger(y[:2], x[:2])
    with pytest.raises(ValueError, match="same length"):
        engle_granger(y, x[:-1])
    with pytest.raises(ValueError, match="unknown trend 'cc'; choose one of c, ct, ctt, n"):
        engle_granger(y, x, trend="cc")
    with pytest.raises(InsufficientDataError, match="engle_granger\\(trend='ctt'\\): needs 5 observations, got 4"):
        engle_granger(y[:4], x[:4], trend="ctt")


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
