"""A scan cut into blocks (analytics.scan_block + rank_pairs): every pair's numbers are those of one
whole-family call, bit for bit, whatever block a pair lands in; the same tests as the scanner's."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from statsmodels.tsa.stattools import coint

from analytics import rank_pairs, scan_block, scan_pairs
from analytics.scan import SCAN_COLUMNS

NUMBERS = ["beta", "alpha", "eg_stat", "eg_pvalue", "eg_pvalue_reverse", "half_life", "corr", "zscore"]


def universe(n: int = 900, k: int = 10, seed: int = 3) -> pd.DataFrame:
    """Random walks, one planted cointegrated pair, a symbol listed late and one delisted early."""
    rng = np.random.default_rng(seed)
    walks = np.exp(np.cumsum(rng.normal(0, 0.002, (n, k)), axis=0)) * rng.uniform(1, 100, k)
    walks[:, 1] = 0.7 * walks[:, 0] + rng.normal(0, 0.02, n) + 5.0
    walks[:150, 4] = np.nan
    walks[-40:, 6] = np.nan
    return pd.DataFrame(walks, columns=[f"S{i:02d}USDT" for i in range(k)])


def blocked(closes: pd.DataFrame, size: int, trend: str = "c") -> pd.DataFrame:
    """Every pair once, through blocks of ``size`` symbols (diagonal and cross), columns shuffled per block."""
    names = list(closes.columns)
    groups = [names[i : i + size] for i in range(0, len(names), size)]
    parts = []
    for a, left in enumerate(groups):
        for b, right in enumerate(groups[a:], start=a):
            frame = closes[list(reversed(left)) + (right if b != a else [])]  # order and company must not matter
            if a == b:
                if len(left) > 1:
                    parts.append(scan_block(frame, left, trend=trend))
            else:
                parts.append(scan_block(frame, left, right, trend=trend))
    return rank_pairs(pd.concat(parts, ignore_index=True))


@pytest.mark.parametrize("trend", ["c", "ct"])
def test_blocks_of_any_size_give_the_whole_family_numbers_bit_for_bit(trend):
    closes = universe()
    whole = rank_pairs(scan_block(closes, list(closes.columns), trend=trend))
    for size in (1, 2, 3, 4, 7):
        pd.testing.assert_frame_equal(blocked(closes, size, trend), whole, check_exact=True)


def test_the_bit_for_bit_promise_holds_over_many_row_slices():
    # 3,000 bars: maxlag 29, slices of 2,114 rows, so the design sums span two slices.
    closes = universe(n=3_000, k=7, seed=5)
    whole = rank_pairs(scan_block(closes, list(closes.columns)))
    pd.testing.assert_frame_equal(blocked(closes, 2), whole, check_exact=True)


@pytest.mark.parametrize(("trend", "maxlag", "autolag"), [("c", None, "aic"), ("ct", 7, "bic"), ("ctt", 0, None),
                                                      ("n", 12, "t-stat"), ("c", 1, "aic")])
def test_block_sums_agree_with_the_single_call_scanner(trend, maxlag, autolag):
    """The structured design sums (core + head + tail) equal the plain products to rounding, for every
    lag count, trend and lag rule, on pairs with and without missing bars."""
    closes = universe()
    kwargs = {"trend": trend, "maxlag": maxlag, "autolag": autolag}
    whole = rank_pairs(scan_block(closes, list(closes.columns), **kwargs))
    fast = scan_pairs(closes, **kwargs)
    assert whole[["y", "x", "status", "eg_lag"]].equals(fast[["y", "x", "status", "eg_lag"]])
    for column in [*NUMBERS, "q_value"]:
        np.testing.assert_allclose(whole[column], fast[column], rtol=1e-9, atol=1e-12, err_msg=column)


def test_a_blocked_scan_agrees_with_the_single_call_scanner_and_with_statsmodels():
    closes = universe()
    whole = rank_pairs(scan_block(closes, list(closes.columns)))
    fast = scan_pairs(closes)
    assert list(whole.columns) == list(SCAN_COLUMNS)
    assert whole[["y", "x", "status"]].equals(fast[["y", "x", "status"]])
    for column in [*NUMBERS, "q_value"]:
        np.testing.assert_allclose(whole[column], fast[column], rtol=1e-9, atol=1e-12, err_msg=column)
    row = whole[(whole["y"] == "S00USDT") & (whole["x"] == "S01USDT")].iloc[0]
    statistic, pvalue, _ = coint(closes["S00USDT"], closes["S01USDT"], trend="c", autolag="aic")
    assert row["q_value"] < 0.05  # the planted pair is found
    np.testing.assert_allclose([row["eg_stat"], row["eg_pvalue"]], [statistic, pvalue], rtol=1e-8)


def test_ranking_adjusts_over_every_block_and_ignores_row_order():
    closes = universe()
    rows = scan_block(closes, list(closes.columns))
    assert rows["q_value"].isna().all()  # a block alone is never adjusted
    shuffled = rows.sample(frac=1.0, random_state=1)
    pd.testing.assert_frame_equal(rank_pairs(shuffled), rank_pairs(rows), check_exact=True)


def test_a_cross_block_tests_only_left_with_right():
    closes = universe()
    rows = scan_block(closes, ["S03USDT", "S00USDT"], ["S05USDT", "S02USDT", "S09USDT"])
    assert sorted(zip(rows["y"], rows["x"], strict=True)) == [
        ("S00USDT", "S02USDT"), ("S00USDT", "S05USDT"), ("S00USDT", "S09USDT"),
        ("S02USDT", "S03USDT"), ("S03USDT", "S05USDT"), ("S03USDT", "S09USDT")]


@pytest.mark.parametrize(("left", "right", "message"), [
    (["S00USDT", "NOPE"], None, "left names NOPE, not columns of closes"),
    (["S00USDT"], ["S01USDT", "GONEUSDT"], "right names GONEUSDT"),
    (["S00USDT", "S01USDT"], ["S01USDT", "S02USDT"], "equal or disjoint; both hold S01USDT"),
])
def test_bad_blocks_are_named(left, right, message):
    with pytest.raises(ValueError, match=message):
        scan_block(universe(), left, right)


def test_a_columns_own_design_sums_are_kept_per_values_and_give_the_same_numbers(monkeypatch):
    import analytics.scan as scan_module

    monkeypatch.setattr(scan_module, "_own_designs", type(scan_module._own_designs)())
    monkeypatch.setattr(scan_module, "_OWN_KEPT", 4)
    closes = universe(k=8)
    names = list(closes.columns)
    first = scan_block(closes, names[:4], names[4:])  # more columns' sums formed than kept: the newest four
    assert len(scan_module._own_designs) == 4
    again = scan_block(closes, names[:4], names[4:])  # partly from the kept sums
    pd.testing.assert_frame_equal(again, first, check_exact=True)
    # Other values under the same names are other sums: never a kept one.
    reversed_closes = closes.iloc[::-1].reset_index(drop=True)
    fresh = scan_block(reversed_closes, names[:4], names[4:])
    monkeypatch.setattr(scan_module, "_own_designs", type(scan_module._own_designs)())
    pd.testing.assert_frame_equal(scan_block(reversed_closes, names[:4], names[4:]), fresh, check_exact=True)
    assert not np.array_equal(fresh["eg_stat"].to_numpy(), first["eg_stat"].to_numpy())
