"""No value the dashboard shows for bar t depends on a bar after t, and "needs N more bars" is exact.

For every causal regression (rolling OLS, the Kalman filter) and every per-bar series (β, α, spread,
its band, z-score, correlation of returns), computing on ``bars[:t+1]`` gives the value at t that
computing on all bars gives, also when every later bar is changed wildly. Was: the Kalman filter
reported bars 0–28 from a prior fitted on bars 0–29, so changing bar 29 moved β at bar 0.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from domain import Regression
from pairs.compute import KALMAN_PRIOR_BARS, Analytic, PairAnalytics, PairParams, compute_pair

CAUSAL = (Regression.ROLLING_OLS, Regression.KALMAN)
SERIES = ("beta", "alpha", "spread", "spread_mean", "spread_std", "zscore", "correlation")
NEEDS = {Analytic.HEDGE_RATIO: "beta", Analytic.ZSCORE: "zscore", Analytic.CORRELATION: "correlation"}


def closes(n: int, seed: int) -> pd.DataFrame:
    """Cointegrated 1 s closes of two symbols near 3,000 and 90,000 (quote currency)."""
    rng = np.random.default_rng(seed)
    x = 3_000.0 * np.exp(np.cumsum(rng.normal(0, 1e-3, n)))
    y = 1_000.0 + 29.0 * x + 5.0 * rng.normal(size=n)
    index = pd.date_range("2025-01-01", periods=n, freq="1s", tz="UTC", name="start").as_unit("ms")
    return pd.DataFrame({"YYYUSDT": y, "XXXUSDT": x}, index=index)


def value_at(pair: PairAnalytics, name: str, label: pd.Timestamp) -> float:
    """The series' value at ``label``; NaN where the series is not computed yet or has no such bar."""
    series = getattr(pair, name)
    return float(series.get(label, np.nan)) if series is not None else np.nan


def assert_same(expected: float, got: float, what: str) -> None:
    assert np.isnan(expected) == np.isnan(got), f"{what}: {expected} vs {got}"
    assert np.isnan(expected) or abs(got - expected) <= 1e-9 * max(1.0, abs(expected)), f"{what}: {expected} vs {got}"


@pytest.mark.parametrize("regression", CAUSAL)
@pytest.mark.parametrize("window", [10, 20])
def test_each_bar_depends_only_on_bars_up_to_it(regression: str, window: int) -> None:
    data = closes(KALMAN_PRIOR_BARS + 2 * window + 10, 1)
    params = PairParams("YYYUSDT", "XXXUSDT", window=window, regression=regression)
    whole = compute_pair(data, params)
    wild = np.exp(np.random.default_rng(2).normal(0, 2, data.shape))  # later bars moved by up to e^±6
    for t in range(len(data)):
        label = data.index[t]
        prefix = compute_pair(data.iloc[: t + 1], params)
        changed = data.copy()
        changed.iloc[t + 1 :] *= wild[t + 1 :]
        other_future = compute_pair(changed, params)
        for name in SERIES:
            expected = value_at(prefix, name, label)
            assert_same(expected, value_at(whole, name, label), f"{regression} {name} at bar {t}, whole")
            assert_same(expected, value_at(other_future, name, label), f"{regression} {name} at bar {t}, changed")
    first_beta = int(np.flatnonzero(whole.beta.notna().to_numpy())[0])
    assert first_beta == (window - 1 if regression is Regression.ROLLING_OLS else KALMAN_PRIOR_BARS - 1)


@pytest.mark.parametrize("regression", CAUSAL)
@pytest.mark.parametrize("window", [10, 40])
def test_needs_n_more_bars_is_exactly_when_the_series_appears(regression: str, window: int) -> None:
    """After the message's N more bars the series has a value at its last bar; one bar fewer, it has none."""
    data = closes(KALMAN_PRIOR_BARS + 2 * window + 5, 3)
    params = PairParams("YYYUSDT", "XXXUSDT", window=window, regression=regression)
    checked = set()
    for n in range(2, len(data)):
        for need in compute_pair(data.iloc[:n], params).needs:
            name = NEEDS.get(need.what)
            if name is None or need.reason is not None:  # a fit that failed on its bars, not a count
                continue
            checked.add(name)
            ready, before = compute_pair(data.iloc[: n + need.missing], params), compute_pair(
                data.iloc[: n + need.missing - 1], params)
            assert np.isfinite(value_at(ready, name, data.index[n + need.missing - 1])), (need, n)
            assert np.isnan(value_at(before, name, data.index[n + need.missing - 2])), (need, n)
    assert checked == set(NEEDS.values())


@pytest.mark.parametrize("regression", CAUSAL)
@pytest.mark.parametrize("window", [10, 40])
def test_the_warm_up_makes_every_series_defined_at_the_first_shown_bar(regression: str, window: int) -> None:
    """The page computes on ``warmup_bars`` bars before its lookback: β, z and correlation exist at its
    first bar, for the Kalman filter too (its β starts at the prior's last bar, not at bar 0)."""
    params = PairParams("YYYUSDT", "XXXUSDT", window=window, regression=regression)
    data = closes(params.warmup_bars + 5, 4)
    shown = compute_pair(data, params).since(data.index[params.warmup_bars])
    for name in ("beta", "zscore", "correlation"):
        assert np.isfinite(getattr(shown, name).iloc[0]), name
