"""Pair scanner pinned to statsmodels' coint (both orderings of every pair) and multipletests."""

from __future__ import annotations

import itertools
import math
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy.signal import lfilter
from statsmodels.regression.linear_model import OLS
from statsmodels.stats.multitest import multipletests
from statsmodels.tools.sm_exceptions import CollinearityWarning
from statsmodels.tsa.adfvalues import mackinnonp
from statsmodels.tsa.stattools import adfuller, coint
from statsmodels.tsa.tsatools import add_trend

from analytics import half_life, rolling_zscore, scan_pairs
from analytics._unitroot import mackinnon_pvalues
from analytics.scan import SCAN_COLUMNS, _engle_granger_batch, _Settings, _SharedFits, benjamini_hochberg
from tests.shared_data import BTC_KLINES_ZIP, ETH_KLINES_ZIP, kline_frame

# Agreement asked of every statistic and p-value. statsmodels fits trend "ctt" on raw t and t²
# (t up to n), which costs it ~1e-9 relative on 1,440 bars (checked against exact rational
# arithmetic, where the scan and engle_granger agree to ~1e-13); "ctt" gets 1e-7.
REL = {"c": 1e-8, "ct": 1e-8, "n": 1e-8, "ctt": 1e-7}


def random_walks(n: int, k: int, seed: int) -> np.ndarray:
    """k independent random walks of n bars around 1,000 (prices: never near zero)."""
    return 1_000.0 + np.cumsum(np.random.default_rng(seed).normal(size=(n, k)), axis=0)


def plant(closes: np.ndarray, y: int, x: int, seed: int, beta: float = 0.8) -> None:
    """Make column y cointegrated with column x: y = 20 + beta·x + AR(1) noise (φ = 0.9)."""
    noise = lfilter([1.0], [1.0, -0.9], np.random.default_rng(seed).normal(size=len(closes)))
    closes[:, y] = 20.0 + beta * closes[:, x] + noise


def frame(values: np.ndarray, prefix: str = "S") -> pd.DataFrame:
    return pd.DataFrame(values, columns=[f"{prefix}{i}" for i in range(values.shape[1])])


def real_universe() -> pd.DataFrame:
    """Eight real one-minute series (1,440 bars): open/high/low/close of BTCUSDT and ETHUSDT.

    The two files are different days, so BTC and ETH columns are unrelated, while the columns of
    one symbol are tightly cointegrated (open_t is close_{t-1}; high and low bracket close).
    """
    btc, eth = kline_frame(BTC_KLINES_ZIP), kline_frame(ETH_KLINES_ZIP)
    values = np.column_stack([btc.to_numpy(), eth.to_numpy()])
    return pd.DataFrame(values, columns=[f"BTC_{c}" for c in btc.columns] + [f"ETH_{c}" for c in eth.columns])


def reference_coint(y: np.ndarray, x: np.ndarray, trend: str, autolag: str | None) -> tuple[float, float, int]:
    """statsmodels' coint statistic and p-value, and the ADF lag it used (from its own residuals)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CollinearityWarning)
        result = coint(y, x, trend=trend, autolag=autolag)
    exog = x[:, None] if trend == "n" else add_trend(x[:, None], trend=trend, prepend=False)
    residuals = OLS(y, exog).fit().resid
    lag = adfuller(residuals, regression="n", autolag=autolag, result_object=True).lags
    return result.coint_t, result.pvalue, lag


def test_planted_cointegrated_pairs_come_out_on_top() -> None:
    closes = random_walks(1_440, 20, seed=1)
    planted = {("S0", "S1"), ("S5", "S9"), ("S12", "S17")}
    for y, x in planted:
        plant(closes, int(y[1:]), int(x[1:]), seed=int(y[1:]) + 100)
    result = scan_pairs(frame(closes))

    assert len(result) == 190
    assert {frozenset(pair) for pair in zip(result["y"][:3], result["x"][:3], strict=True)} == {
        frozenset(pair) for pair in planted
    }
    assert (result["q_value"][:3] < 1e-6).all()
    # Among 187 independent random walks nothing survives the false-discovery control.
    assert (result["q_value"][3:] > 0.05).all()
    assert (result["status"] == "ok").all()
    # The planted pairs' hedge ratio and half-life are recovered (y on x, or x on y: 1/β).
    top = result.iloc[0]
    assert top["beta"] == pytest.approx(0.8 if top["y"] in {"S0", "S5", "S12"} else 1.25, rel=0.02)
    assert top["half_life"] == pytest.approx(-math.log(2.0) / math.log(0.9), rel=0.3)


@pytest.mark.parametrize("trend", ["c", "ct", "ctt", "n"])
@pytest.mark.parametrize("autolag", ["aic", "t-stat"])
def test_every_ordering_equals_statsmodels_coint(trend: str, autolag: str) -> None:
    # All ordered pairs of a small universe, through the same batch the scan runs (the scan
    # tests each pair in label order and reports the other ordering's p-value beside it).
    closes = random_walks(400, 5, seed=2)
    plant(closes, 0, 1, seed=3)
    closes[:, 4] += 0.05 * np.arange(400)  # a drifting leg, so the trend terms matter
    everything = np.arange(5)
    shared = _SharedFits.build(closes, trend, None, [(everything, everything)])
    y, x = (np.array(side) for side in zip(*[(i, j) for i in range(5) for j in range(5) if i != j], strict=True))
    tests = _engle_granger_batch(shared, y, x, _Settings(trend, None, autolag.upper(), 60, 60))
    for i, (yi, xi) in enumerate(zip(y, x, strict=True)):
        statistic, pvalue, lag = reference_coint(closes[:, yi], closes[:, xi], trend, autolag)
        assert tests.statistic[i] == pytest.approx(statistic, rel=REL[trend])
        assert tests.pvalue[i] == pytest.approx(pvalue, rel=REL[trend])
        assert tests.lag[i] == lag


def test_scan_rows_equal_statsmodels_on_real_closes() -> None:
    closes = real_universe()
    result = scan_pairs(closes)
    assert len(result) == 28
    for row in result.itertuples():
        y, x = closes[row.y].to_numpy(), closes[row.x].to_numpy()
        statistic, pvalue, lag = reference_coint(y, x, "c", "aic")
        assert row.eg_stat == pytest.approx(statistic, rel=1e-8)
        assert row.eg_pvalue == pytest.approx(pvalue, rel=1e-8)
        assert row.eg_lag == lag
        # The tested ordering is the label order; the other one is reported beside it.
        assert row.y < row.x
        assert row.eg_pvalue_reverse == pytest.approx(reference_coint(x, y, "c", "aic")[1], rel=1e-8)
        # First stage: statsmodels' OLS of y on [x, 1].
        beta, alpha = OLS(y, add_trend(x[:, None], trend="c", prepend=False)).fit().params
        assert (row.beta, row.alpha) == pytest.approx((beta, alpha), rel=1e-9)
        spread = y - row.beta * x - row.alpha
        assert row.half_life == pytest.approx(half_life(spread).bars, rel=1e-9)
        assert row.zscore == pytest.approx(rolling_zscore(spread, 60)[-1], rel=1e-9, abs=1e-9)
        assert row.corr == pytest.approx(np.corrcoef(np.diff(np.log(y)), np.diff(np.log(x)))[0, 1], rel=1e-12)
        assert row.n_bars == 1_440 and row.status == "ok" and row.note == ""
    # Same-market columns are cointegrated, BTC against ETH (two different days) is not.
    same_market = result["y"].str[:3] == result["x"].str[:3]
    assert (result["q_value"][same_market] < 1e-3).all()
    assert result["eg_pvalue"][~same_market].min() > 0.01


def test_trend_and_lag_options_reach_the_tests() -> None:
    closes = frame(random_walks(300, 4, seed=4))
    result = scan_pairs(closes, trend="ct", maxlag=3, autolag=None)
    default = scan_pairs(closes, trend="ct").set_index(["y", "x"])
    for row in result.itertuples():
        reference = coint(closes[row.y], closes[row.x], trend="ct", maxlag=3, autolag=None)
        assert (row.eg_stat, row.eg_pvalue) == pytest.approx((reference.coint_t, reference.pvalue), rel=1e-8)
        assert row.eg_lag == 3
        if (row.y, row.x) in default.index:
            assert default.loc[(row.y, row.x), "eg_stat"] != row.eg_stat  # the options made a difference


def test_q_values_are_benjamini_hochberg_over_the_tested_pairs() -> None:
    closes = random_walks(500, 12, seed=6)
    plant(closes, 2, 3, seed=7)
    closes[:, 11] = np.nan  # a symbol with no data: its pairs are not tested and not counted
    result = scan_pairs(frame(closes))
    tested = result["status"] == "ok"
    assert tested.sum() == 55
    expected = multipletests(result["eg_pvalue"][tested], method="fdr_bh")[1]
    np.testing.assert_allclose(result["q_value"][tested], expected, rtol=1e-12)
    assert result["q_value"][~tested].isna().all()
    # Ranked by q-value, then p-value; untested pairs last.
    ranked = result[tested]
    assert ranked.equals(ranked.sort_values(["q_value", "eg_pvalue"], kind="stable"))
    assert tested.iloc[:55].all() and not tested.iloc[55:].any()


def test_benjamini_hochberg_with_ties_and_edges() -> None:
    rng = np.random.default_rng(8)
    pvalues = np.r_[rng.uniform(size=40) ** 3, 0.01, 0.01, 0.0, 1.0]
    np.testing.assert_allclose(benjamini_hochberg(pvalues), multipletests(pvalues, method="fdr_bh")[1], rtol=1e-15)
    assert benjamini_hochberg(np.array([0.3])).tolist() == [0.3]
    assert len(benjamini_hochberg(np.empty(0))) == 0


def test_vectorised_mackinnon_p_values_equal_statsmodels() -> None:
    grid = np.r_[-np.inf, np.linspace(-30.0, 5.0, 701), -2.62, -3.13, np.inf]
    for regression in ("c", "ct", "ctt", "n"):
        for n_series in (1, 2, 3):
            with np.errstate(invalid="ignore"):  # statsmodels' own polyval(inf) for "n", N=1 (no upper cut-off)
                expected = [mackinnonp(value, regression=regression, N=n_series) for value in grid]
            np.testing.assert_array_equal(mackinnon_pvalues(grid, regression, n_series), expected)


def test_pairs_use_the_rows_where_both_legs_are_finite() -> None:
    closes = random_walks(600, 5, seed=9)
    plant(closes, 0, 1, seed=10)
    closes[:150, 2] = np.nan  # listed later
    closes[:100, 4] = np.nan  # listed earlier than S2: (S2, S4) shares its rows with (S2, S1)
    closes[[200, 201, 450], 3] = np.nan  # gaps
    closes[-5:, 0] = np.nan  # stopped trading
    data = frame(closes)
    result = scan_pairs(data).set_index(["y", "x"])
    for (y, x), row in result.iterrows():
        both = data[[y, x]].dropna()
        assert row["n_bars"] == len(both)
        statistic, pvalue, _ = reference_coint(both[y].to_numpy(), both[x].to_numpy(), "c", "aic")
        assert (row["eg_stat"], row["eg_pvalue"]) == pytest.approx((statistic, pvalue), rel=1e-8)
        spread = both[y] - row["beta"] * both[x] - row["alpha"]
        assert row["zscore"] == pytest.approx(rolling_zscore(spread.to_numpy(), 60)[-1], rel=1e-9)
        stale = "S0" in (y, x)
        assert (row["note"] == f"last shared bar is {594}, not the last row") == stale


def test_too_few_bars_flat_and_empty_columns_are_reported_in_their_rows() -> None:
    closes = random_walks(300, 5, seed=11)
    closes[:, 1] = 1_234.5  # flat
    closes[:, 2] = np.nan  # no data at all
    closes[:280, 3] = np.nan  # only 20 bars
    result = scan_pairs(frame(closes)).set_index(["y", "x"])
    assert len(result) == 10

    def row(a: str, b: str) -> pd.Series:
        return result.loc[(a, b)] if (a, b) in result.index else result.loc[(b, a)]

    assert row("S0", "S4")["status"] == "ok"
    flat = row("S0", "S1")
    assert (flat["status"], flat["note"]) == ("flat_leg", "S1 is constant over the 300 shared bars")
    empty = row("S0", "S2")
    assert (empty["status"], empty["note"], empty["n_bars"]) == (
        "insufficient_data", "0 bars where both legs are finite; needs 60", 0)
    short = row("S4", "S3")
    assert (short["status"], short["note"], short["n_bars"]) == (
        "insufficient_data", "20 bars where both legs are finite; needs 60", 20)
    untested = result[result["status"] != "ok"]
    numbers = ["beta", "alpha", "eg_stat", "eg_pvalue", "q_value", "half_life", "corr", "zscore"]
    assert untested[numbers].isna().all().all()
    assert untested["eg_lag"].isna().all()
    # A flat leg over a pair's rows is flat even when it moves elsewhere.
    closes[:, 2] = np.r_[np.full(150, np.nan), np.full(150, 99.0)]
    again = scan_pairs(frame(closes)).set_index(["y", "x"])
    pair = again.loc[("S0", "S2")] if ("S0", "S2") in again.index else again.loc[("S2", "S0")]
    assert pair["note"] == "S2 is constant over the 150 shared bars"


def test_whole_frame_too_short_marks_every_pair() -> None:
    result = scan_pairs(frame(random_walks(40, 3, seed=12)))
    assert (result["status"] == "insufficient_data").all()
    assert (result["note"] == "40 bars where both legs are finite; needs 60").all()
    assert scan_pairs(frame(random_walks(40, 3, seed=12)), min_bars=30, window=20)["status"].eq("ok").all()
    # Tested, but too short for the z-score window: only the z-score is missing, and the note says why.
    short_window = scan_pairs(frame(random_walks(40, 3, seed=12)), min_bars=30)
    assert short_window["status"].eq("ok").all() and short_window["zscore"].isna().all()
    assert short_window["eg_pvalue"].notna().all()
    assert (short_window["note"] == "zscore needs 60 bars, the pair has 40").all()


def test_a_deterministic_trend_leg_with_trend_ct() -> None:
    closes = random_walks(200, 3, seed=13)
    closes[:, 2] = 500.0 + 0.5 * np.arange(200)
    result = scan_pairs(frame(closes), trend="ct")
    notes = set(result["note"][result["status"] == "flat_leg"])
    assert notes == {"S2 is a deterministic trend over the 200 shared bars (trend='ct')"}
    assert scan_pairs(frame(closes), trend="c")["status"].eq("ok").all()


def test_collinear_legs_follow_statsmodels() -> None:
    closes = random_walks(300, 3, seed=14)
    closes[:, 1] = 2.0 * closes[:, 0] + 1.0
    result = scan_pairs(frame(closes))
    top = result.iloc[0]
    with pytest.warns(CollinearityWarning):
        reference = coint(closes[:, 0], closes[:, 1])
    assert {top["y"], top["x"]} == {"S0", "S1"}
    assert (top["eg_stat"], top["eg_pvalue"], top["status"]) == (reference.coint_t, reference.pvalue, "collinear")
    assert top["note"].startswith("legs are collinear")


def test_cholesky_failure_falls_back_to_qr_with_the_same_numbers(monkeypatch: pytest.MonkeyPatch) -> None:
    closes = frame(random_walks(300, 4, seed=15))
    expected = scan_pairs(closes)

    def fail(_: np.ndarray) -> np.ndarray:
        raise np.linalg.LinAlgError("Matrix is not positive definite")

    monkeypatch.setattr(np.linalg, "cholesky", fail)
    fallback = scan_pairs(closes)
    pd.testing.assert_frame_equal(fallback, expected, rtol=1e-10)


def test_progress_counts_every_pair_up_to_the_total() -> None:
    closes = random_walks(300, 30, seed=16)
    closes[:, 7] = np.nan
    calls: list[tuple[int, int]] = []
    scan_pairs(frame(closes), progress=lambda done, total: calls.append((done, total)))
    done = [d for d, _ in calls]
    assert {total for _, total in calls} == {435}
    assert done[-1] == 435
    assert all(b > a for a, b in itertools.pairwise(done)) and done[0] > 0
    assert len(calls) > 3  # reported as batches complete, not once at the end


def test_degenerate_universes() -> None:
    empty = scan_pairs(frame(random_walks(100, 1, seed=17)), progress=lambda *_: pytest.fail("no pairs"))
    assert list(empty.columns) == list(SCAN_COLUMNS) and empty.empty
    assert scan_pairs(pd.DataFrame(index=range(5))).empty
    no_rows = scan_pairs(frame(np.empty((0, 3))))
    assert len(no_rows) == 3 and set(no_rows["note"]) == {"0 bars where both legs are finite; needs 60"}
    with pytest.raises(ValueError, match=r"closes has duplicate columns \(S0\); give each symbol one column"):
        scan_pairs(pd.DataFrame(random_walks(100, 3, seed=18), columns=["S0", "S1", "S0"]))
    with pytest.raises(ValueError, match="closes must be a DataFrame"):
        scan_pairs(random_walks(100, 3, seed=18))


def test_bad_input_is_named() -> None:
    closes = frame(random_walks(100, 3, seed=19))
    bad = closes.copy()
    bad.loc[5, "S1"] = np.inf
    with pytest.raises(ValueError, match="closes column S1 contains inf; use NaN for a missing bar"):
        scan_pairs(bad)
    bad.loc[5, "S1"] = -1.0
    with pytest.raises(ValueError, match="closes column S1 has a price <= 0"):
        scan_pairs(bad)
    with pytest.raises(ValueError, match="closes column S2 is not numeric"):
        scan_pairs(closes.assign(S2="x"))
    with pytest.raises(ValueError, match="unknown trend 'ctx'"):
        scan_pairs(closes, trend="ctx")
    with pytest.raises(ValueError, match="unknown autolag 'aicc'"):
        scan_pairs(closes, autolag="aicc")
    with pytest.raises(ValueError, match="window must be at least 2"):
        scan_pairs(closes, window=1)
    with pytest.raises(ValueError, match="min_bars must be at least 30"):
        scan_pairs(closes, min_bars=12)
    with pytest.raises(ValueError, match="min_bars must be at least 51"):
        scan_pairs(closes, maxlag=24, min_bars=40)
    # Without min_bars, a long maxlag raises the default instead of failing.
    long_lag = scan_pairs(frame(random_walks(64, 3, seed=19)), maxlag=31)
    assert set(long_lag["note"]) == {"64 bars where both legs are finite; needs 65"}
    with pytest.raises(ValueError, match="progress must be callable"):
        scan_pairs(closes, progress=5)  # type: ignore[arg-type]  # not a callable, on purpose


def test_scan_is_pure() -> None:
    closes = frame(random_walks(200, 4, seed=20))
    closes.iloc[:10, 2] = np.nan
    before = closes.copy()
    first = scan_pairs(closes)
    pd.testing.assert_frame_equal(closes, before)
    pd.testing.assert_frame_equal(scan_pairs(closes), first)
