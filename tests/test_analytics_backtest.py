"""Mean-reversion backtest: a hand-computed example, no look-ahead, next-bar fills, costs, degenerate input."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analytics.backtest import TRADE_COLUMNS, BacktestResult, backtest_mean_reversion
from analytics.errors import InsufficientDataError

PROPERTY = settings(max_examples=15, deadline=None)
HEDGES = ("rolling_ols", "kalman", "static_ols")

# Hand-computed example: x integer prices, y = 2x + 1 + s with s = 0 on the first 3 bars, so the
# static OLS fit on those bars is exactly beta = 2, alpha = 1 and the spread is exactly s.
# With window 3 the z-score of (a, b, c) is ±2/√3 = ±1.1547 for (0, 0, ±c) and the like.
#   bar:  0    1    2    3    4    5    6    7    8    9   10   11   12   13
HAND_S = np.array([0, 0, 0, 0, 3, 3, 1, -3, -3, 0, 0, 0, 2, 2], dtype=float)
HAND_X = np.array([100, 101, 102, 101, 103, 104, 102, 100, 101, 103, 105, 104, 106, 107], dtype=float)
HAND_Y = 2.0 * HAND_X + 1.0 + HAND_S
# z from bar 4 on (s over bars t-2..t); bar 11's window (0, 0, 0) is constant, so z is NaN there.
HAND_Z = [
    math.nan, math.nan, math.nan, math.nan,
    2 / math.sqrt(3), 1 / math.sqrt(3), -2 / math.sqrt(3), -(10 / 3) / math.sqrt(28 / 3),
    -1 / math.sqrt(3), 2 / math.sqrt(3), 1 / math.sqrt(3), math.nan, 2 / math.sqrt(3), 1 / math.sqrt(3),
]  # fmt: skip


def hand_backtest(cost_bps: float = 10.0, exit: float = 0.0, **kwargs: object) -> BacktestResult:
    return backtest_mean_reversion(
        HAND_Y, HAND_X, 3, entry=1.0, exit=exit, cost_bps=cost_bps, hedge="static_ols", **kwargs
    )


def mean_reverting_pair(n: int, seed: int, phi: float = 0.8) -> tuple[np.ndarray, np.ndarray]:
    """x a random walk near 100; y = 2x + 5 + AR(1) noise (half-life ln 0.5 / ln phi ≈ 3 bars for 0.8)."""
    rng = np.random.default_rng(seed)
    x = 100.0 + np.cumsum(rng.normal(0.0, 0.1, n))
    shocks = rng.normal(0.0, 0.1, n)
    noise = np.empty(n)
    noise[0] = shocks[0]
    for t in range(1, n):
        noise[t] = phi * noise[t - 1] + shocks[t]
    return 2.0 * x + 5.0 + noise, x


def test_hand_computed_example_trades_equity_and_statistics() -> None:
    result = hand_backtest()

    np.testing.assert_allclose(result.zscore, HAND_Z, rtol=1e-12, atol=1e-12)
    # Signals at bars 4 (z > 1: short), 6 (z <= 0: exit), 7 (z < -1: long), 9 (z >= 0: exit) and
    # 12 (short), each filled at the next close; the last is still open at bar 13.
    np.testing.assert_array_equal(result.position, [0, 0, 0, 0, 0, -1, -1, 0, 1, 1, 0, 0, 0, -1])

    trades = result.trades
    assert list(trades.columns) == list(TRADE_COLUMNS)
    assert trades["entry_time"].tolist() == [5, 8, 13]
    assert trades["exit_time"].tolist() == [7, 10, 13]
    assert trades["side"].tolist() == ["short", "long", "short"]
    assert trades["open"].tolist() == [False, False, True]
    assert trades["bars_held"].tolist() == [2, 2, 0]
    np.testing.assert_allclose(trades["hedge_ratio"], [2.0, 2.0, 2.0], rtol=0, atol=1e-12)
    np.testing.assert_allclose(trades["entry_z"], [HAND_Z[4], HAND_Z[7], HAND_Z[12]], rtol=1e-12)
    np.testing.assert_allclose(trades["exit_z"], [HAND_Z[6], HAND_Z[9], HAND_Z[13]], rtol=1e-12)
    assert trades[["entry_y", "entry_x", "exit_y", "exit_x"]].to_numpy().tolist() == [
        [212.0, 104.0, 198.0, 100.0],
        [200.0, 101.0, 211.0, 105.0],
        [217.0, 107.0, 217.0, 107.0],
    ]
    # Trade 1, short 1 y / long 2 x: -(198 - 212) + 2·(100 - 104) = 6; costs 10 bp of
    #   (212 + 2·104) + (198 + 2·100) = 420 + 398 → 0.420 + 0.398 = 0.818; net 5.182.
    # Trade 2, long 1 y / short 2 x: (211 - 200) - 2·(105 - 101) = 3; costs 10 bp of
    #   (200 + 2·101) + (211 + 2·105) = 402 + 421 → 0.823; net 2.177.
    # Trade 3, short at 217 / 107 on the last bar: no move yet, entry cost 10 bp of 431 → -0.431.
    np.testing.assert_allclose(trades["costs"], [0.818, 0.823, 0.431], rtol=0, atol=1e-9)
    np.testing.assert_allclose(trades["pnl"], [5.182, 2.177, -0.431], rtol=0, atol=1e-9)

    # Marked on every close: bar 6 earns -(206 - 212) + 2·(102 - 104) = 2, bar 7 earns 4 - 0.398, ...
    expected_equity = [0, 0, 0, 0, 0, -0.42, 1.58, 5.182, 4.78, 7.78, 7.359, 7.359, 7.359, 6.928]
    np.testing.assert_allclose(result.equity, expected_equity, rtol=0, atol=1e-9)
    assert result.total_pnl == pytest.approx(6.928, abs=1e-9)
    assert result.total_pnl == pytest.approx(trades["pnl"].sum(), abs=1e-9)
    assert result.max_drawdown == pytest.approx(7.78 - 6.928, abs=1e-9)
    assert result.n_trades == 3
    assert result.win_rate == 1.0  # both closed trades won; the open one does not count
    # Sharpe over bars 5..13 (2·window - 1 on), where a position can exist.
    per_bar = np.array([-0.42, 2.0, 4.0 - 0.398, -0.402, 3.0, -0.421, 0.0, 0.0, -0.431])
    expected_sharpe = per_bar.mean() / per_bar.std(ddof=1) * math.sqrt(525_600)
    assert result.sharpe == pytest.approx(expected_sharpe, rel=1e-9)
    assert (result.window, result.entry, result.exit, result.cost_bps) == (3, 1.0, 0.0, 10.0)
    assert (result.hedge, result.bars_per_year, dict(result.hedge_opts)) == ("static_ols", 525_600, {})


def test_hand_example_without_costs_earns_the_spread_moves() -> None:
    result = hand_backtest(cost_bps=0.0)
    # Short from s = 3 to s = -3 earns 6, long from s = -3 to s = 0 earns 3, the open trade 0.
    np.testing.assert_allclose(result.trades["pnl"], [6.0, 3.0, 0.0], rtol=0, atol=1e-9)
    assert result.total_pnl == pytest.approx(9.0, abs=1e-9)
    assert (result.trades["costs"] == 0).all()


def test_positive_exit_level_closes_before_the_mean() -> None:
    # exit = 0.6: a short leaves at z <= 0.6 (bar 5: 0.577), a long at z >= -0.6 (bar 8: -0.577).
    trades = hand_backtest(cost_bps=0.0, exit=0.6).trades
    rows = trades[["entry_time", "exit_time", "side", "open"]].to_numpy().tolist()
    assert rows == [[5, 6, "short", False], [7, 9, "long", False], [10, 11, "short", False], [13, 13, "short", True]]
    np.testing.assert_allclose(trades["exit_z"].iloc[:3], [HAND_Z[5], HAND_Z[8], HAND_Z[10]], rtol=1e-12)
    # s moves 3 → 1, -3 → 0 and 0 → 0 over the three closed trades.
    np.testing.assert_allclose(trades["pnl"], [2.0, 3.0, 0.0, 0.0], rtol=0, atol=1e-9)


def test_signal_at_bar_t_changes_the_position_at_bar_t_plus_1() -> None:
    hand = hand_backtest()
    assert hand.zscore[4] > 1.0 and hand.position[4] == 0 and hand.position[5] == -1

    entry, exit = 2.0, 0.5
    y, x = mean_reverting_pair(3000, seed=11)
    result = backtest_mean_reversion(y, x, 40, entry=entry, exit=exit)
    z, position = result.zscore, result.position
    assert result.n_trades > 5
    for t in range(1, len(z)):
        before, after, signal = position[t - 1], position[t], z[t - 1]
        if before == 0:
            expected = -1 if signal > entry else 1 if signal < -entry else 0
        elif before == 1:
            expected = 0 if signal >= -exit else 1
        else:
            expected = 0 if signal <= exit else -1
        assert after == expected, f"bar {t}: z[t-1]={signal}, position {before} -> {after}"


@pytest.mark.parametrize("hedge", HEDGES)
@PROPERTY
@given(seed=st.integers(0, 2**32 - 1), cut=st.integers(60, 399))
def test_prefix_of_input_gives_prefix_of_results(hedge: str, seed: int, cut: int) -> None:
    y, x = mean_reverting_pair(400, seed)
    full = backtest_mean_reversion(y, x, 30, entry=1.5, cost_bps=5.0, hedge=hedge)
    part = backtest_mean_reversion(y[:cut], x[:cut], 30, entry=1.5, cost_bps=5.0, hedge=hedge)
    np.testing.assert_allclose(part.equity, full.equity[:cut], rtol=0, atol=1e-9)
    np.testing.assert_array_equal(part.position, full.position[:cut])
    np.testing.assert_allclose(part.zscore, full.zscore[:cut], rtol=0, atol=1e-9)
    # Trades closed inside the prefix are the same trades, to the cent.
    closed = part.trades[~part.trades["open"]]
    pd.testing.assert_frame_equal(closed, full.trades.iloc[: len(closed)], check_exact=False, atol=1e-9)


@pytest.mark.parametrize("hedge", HEDGES)
@PROPERTY
@given(seed=st.integers(0, 2**32 - 1), start=st.integers(60, 399), scale=st.floats(0.5, 2.0))
def test_perturbing_future_prices_leaves_the_past_unchanged(hedge: str, seed: int, start: int, scale: float) -> None:
    y, x = mean_reverting_pair(400, seed)
    shocked_y, shocked_x = y.copy(), x.copy()
    shocked_y[start:] *= scale
    shocked_x[start:] *= 2.0 - scale / 2.0
    base = backtest_mean_reversion(y, x, 30, entry=1.5, cost_bps=5.0, hedge=hedge)
    shocked = backtest_mean_reversion(shocked_y, shocked_x, 30, entry=1.5, cost_bps=5.0, hedge=hedge)
    np.testing.assert_allclose(shocked.equity[:start], base.equity[:start], rtol=0, atol=1e-9)
    # The position at bar `start` was decided on bar start - 1's close, before the shock.
    np.testing.assert_array_equal(shocked.position[: start + 1], base.position[: start + 1])


def test_higher_costs_lower_pnl_with_the_same_trades() -> None:
    y, x = mean_reverting_pair(3000, seed=5)
    results = [backtest_mean_reversion(y, x, 40, cost_bps=bps) for bps in (0.0, 0.5, 2.0, 10.0)]
    signal_columns = ["entry_time", "exit_time", "side", "entry_z", "exit_z", "hedge_ratio", "bars_held", "open"]
    for cheaper, dearer in itertools.pairwise(results):
        assert dearer.total_pnl <= cheaper.total_pnl
        pd.testing.assert_frame_equal(dearer.trades[signal_columns], cheaper.trades[signal_columns])
        np.testing.assert_array_equal(dearer.position, cheaper.position)
    # Costs scale linearly with cost_bps and are all that separates the PnL.
    free, dear = results[0], results[-1]
    np.testing.assert_allclose(dear.trades["costs"], 20.0 * results[1].trades["costs"], rtol=1e-12)
    assert free.total_pnl - dear.total_pnl == pytest.approx(dear.trades["costs"].sum(), rel=1e-9)
    assert dear.total_pnl == pytest.approx(dear.trades["pnl"].sum(), rel=1e-9)


@pytest.mark.parametrize("hedge", HEDGES)
def test_strongly_mean_reverting_pair_is_profitable(hedge: str) -> None:
    y, x = mean_reverting_pair(5000, seed=2)
    result = backtest_mean_reversion(y, x, 60, entry=2.0, exit=0.0, cost_bps=0.0, hedge=hedge)
    assert result.n_trades > 5
    assert result.total_pnl > 0
    assert result.sharpe > 0
    assert result.win_rate > 0.5
    assert 0 <= result.max_drawdown < result.total_pnl
    # Per trade: net PnL is the spread move captured with the entry hedge ratio.
    trades = result.trades
    sign = np.where(trades["side"] == "long", 1.0, -1.0)
    hedged_x_move = trades["hedge_ratio"] * (trades["exit_x"] - trades["entry_x"])
    gross = sign * (trades["exit_y"] - trades["entry_y"] - hedged_x_move)
    np.testing.assert_allclose(trades["pnl"], gross, rtol=0, atol=1e-9)


def test_kalman_hedge_starts_from_the_warm_up_fit_and_accepts_overrides() -> None:
    y, x = mean_reverting_pair(500, seed=3)
    result = backtest_mean_reversion(y, x, 50, hedge="kalman")
    opts = dict(result.hedge_opts)
    assert set(opts) == {"initial_beta", "initial_alpha", "obs_var"}
    assert opts["initial_beta"] == pytest.approx(2.0, abs=0.5)
    tuned = backtest_mean_reversion(y, x, 50, hedge="kalman", delta=1e-6, obs_var=0.5)
    assert tuned.hedge_opts["delta"] == 1e-6 and tuned.hedge_opts["obs_var"] == 0.5
    assert tuned.hedge_opts["initial_beta"] == opts["initial_beta"]
    # A warm-up lying exactly on a line leaves obs_var to the filter's default.
    hand = backtest_mean_reversion(HAND_Y, HAND_X, 3, entry=1.0, hedge="kalman")
    assert dict(hand.hedge_opts) == {"initial_beta": 2.0, "initial_alpha": 1.0}


def test_pandas_in_pandas_out_on_the_same_index() -> None:
    index = pd.date_range("2025-12-15", periods=len(HAND_Y), freq="1min", tz="UTC")
    result = backtest_mean_reversion(
        pd.Series(HAND_Y, index=index), pd.Series(HAND_X, index=index), 3, entry=1.0, cost_bps=10.0,
        hedge="static_ols",
    )  # fmt: skip
    for series, name in ((result.equity, "equity"), (result.position, "position"), (result.zscore, "zscore")):
        assert isinstance(series, pd.Series) and series.index.equals(index) and series.name == name
    np.testing.assert_allclose(result.equity, hand_backtest().equity, rtol=0, atol=1e-12)
    assert result.trades["entry_time"].tolist() == [index[5], index[8], index[13]]
    assert result.trades["exit_time"].tolist() == [index[7], index[10], index[13]]
    # Without trades the table keeps its columns and the index's type. (A pair hedged exactly has a
    # spread of exactly 0, so no z-score; an entry above every |z| is refused since |z| <= 2/√3 here.)
    hedged_y = pd.Series(2.0 * HAND_X + 1.0, index=index)
    flat = backtest_mean_reversion(hedged_y, pd.Series(HAND_X, index=index), 3, entry=1.0, hedge="static_ols")
    assert flat.n_trades == 0 and list(flat.trades.columns) == list(TRADE_COLUMNS)
    assert isinstance(flat.trades["entry_time"].dtype, pd.DatetimeTZDtype)
    assert flat.total_pnl == 0.0 and flat.max_drawdown == 0.0
    assert math.isnan(flat.sharpe) and math.isnan(flat.win_rate)


def test_rejects_degenerate_input() -> None:
    y, x = HAND_Y, HAND_X
    with pytest.raises(ValueError, match=r"exit must be in \[0, entry\) = \[0, 1.0\), got 1.0"):
        backtest_mean_reversion(y, x, 3, entry=1.0, exit=1.0)
    with pytest.raises(ValueError, match=r"exit must be in \[0, entry\)"):
        backtest_mean_reversion(y, x, 3, exit=-0.1)
    with pytest.raises(ValueError, match=r"entry must be > 0, got 0\.0"):
        backtest_mean_reversion(y, x, 3, entry=0.0)
    with pytest.raises(ValueError, match=r"cost_bps must be >= 0, got -1\.0"):
        backtest_mean_reversion(y, x, 3, cost_bps=-1.0)
    with pytest.raises(ValueError, match="cost_bps must be finite"):
        backtest_mean_reversion(y, x, 3, cost_bps=math.inf)
    with pytest.raises(ValueError, match="bars_per_year must be > 0"):
        backtest_mean_reversion(y, x, 3, bars_per_year=0)
    with pytest.raises(ValueError, match="inputs must have the same length: y has 14, x has 13"):
        backtest_mean_reversion(y, x[:-1], 3)
    too_short = r"backtest_mean_reversion\(window=7\): needs 14 observations, got 13 \(1 more\)"
    with pytest.raises(InsufficientDataError, match=too_short):
        backtest_mean_reversion(y[:-1], x[:-1], 7)
    with pytest.raises(ValueError, match="window must be at least 2, got 1"):
        backtest_mean_reversion(y, x, 1)
    with pytest.raises(ValueError, match="window must be at least 3 for hedge='static_ols'"):
        backtest_mean_reversion(y, x, 2, hedge="static_ols")
    with pytest.raises(ValueError, match="unknown hedge 'huber'"):
        backtest_mean_reversion(y, x, 3, hedge="huber")
    with pytest.raises(ValueError, match="hedge 'rolling_ols' takes no options, got delta"):
        backtest_mean_reversion(y, x, 3, delta=1e-4)
    with pytest.raises(ValueError, match=r"unknown option\(s\) for method 'kalman': lag"):
        backtest_mean_reversion(y, x, 3, entry=1.0, hedge="kalman", lag=5)
    with pytest.raises(ValueError, match=r"x must be > 0 \(prices\), got -1\.0"):
        backtest_mean_reversion(y, np.where(np.arange(14) == 9, -1.0, x), 3, entry=1.0)
    with pytest.raises(ValueError, match="y contains NaN at position 2"):
        backtest_mean_reversion(np.where(np.arange(14) == 2, np.nan, y), x, 3)
    index = pd.RangeIndex(14)
    with pytest.raises(ValueError, match="y and x have different indexes"):
        backtest_mean_reversion(pd.Series(y, index=index), pd.Series(x, index=index + 1), 3)


@pytest.mark.parametrize(("window", "entry"), [(10, 3.0), (10, 2.9), (10, 9 / math.sqrt(10)), (3, 1.2), (20, 4.25)])
def test_an_entry_the_z_score_cannot_reach_is_refused(window: int, entry: float) -> None:
    # |z| <= (window - 1)/sqrt(window): 2.846 for 10 bars, 1.155 for 3, 4.249 for 20.
    y, x = mean_reverting_pair(200, seed=12)
    bound = f"{(window - 1) / math.sqrt(window):.2f}"
    message = rf"entry {entry:g} can never be reached with a {window}-bar window: .*\|z\| ≤ .* = {bound}; lower"
    with pytest.raises(ValueError, match=message):
        backtest_mean_reversion(y, x, window, entry=entry)
    # Refused before any data is needed: the panel says so even while bars are still coming in.
    with pytest.raises(ValueError, match=message):
        backtest_mean_reversion(y[:5], x[:5], window, entry=entry)


def test_an_entry_just_below_the_bound_is_reachable() -> None:
    # w - 1 equal spreads then a jump: z reaches 9/√10 = 2.846 at w = 10, so entry 2.84 trades.
    x = 100.0 + np.arange(60.0) % 2
    y = 2.0 * x + 5.0
    y[40] += 1.0
    result = backtest_mean_reversion(y, x, 10, entry=2.84, hedge="static_ols")
    assert result.n_trades == 1 and result.trades["side"].iloc[0] == "short"
    assert result.trades["entry_z"].iloc[0] == pytest.approx(9 / math.sqrt(10), rel=1e-9)


def test_fixed_hedge_trades_the_spread_scaled_by_a_known_std() -> None:
    # The hand example's spread is exactly s with beta 2, alpha 1; with std 1 the signal is s itself,
    # from bar 0 on (no warm-up). Entry 1, exit 0: short at bar 4 (s = 3), flat once s <= 0 (bar 7),
    # long at bar 8 (s = -3), flat at bar 9 (s = 0), short at bar 12; each fills one bar later.
    result = backtest_mean_reversion(HAND_Y, HAND_X, 2, entry=1.0, hedge="fixed", beta=2.0, alpha=1.0, std=1.0)

    np.testing.assert_allclose(result.zscore, HAND_S, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(result.position, [0, 0, 0, 0, 0, -1, -1, -1, 0, 1, 0, 0, 0, -1])
    # Short from s = 3 (bar 5) to s = -3 (bar 8) earns 6; the long from s = 0 to s = 0 earns nothing.
    assert result.trades["pnl"].tolist() == pytest.approx([6.0, 0.0, 0.0])
    assert result.total_pnl == pytest.approx(6.0)
    assert dict(result.hedge_opts) == {"beta": 2.0, "alpha": 1.0, "std": 1.0}
    # The scale only rescales z: std 2 halves it, so s = ±3 still enters (1.5 > 1) and s = 1 holds.
    halved = backtest_mean_reversion(HAND_Y, HAND_X, 2, entry=1.0, hedge="fixed", beta=2.0, alpha=1.0, std=2.0)
    np.testing.assert_allclose(halved.zscore, HAND_S / 2, rtol=0, atol=1e-12)
    # |z| is not bounded by a window: an entry of 2.5 (beyond a 2-bar window's 0.71) is reachable.
    far = backtest_mean_reversion(HAND_Y, HAND_X, 2, entry=2.5, hedge="fixed", beta=2.0, alpha=1.0, std=1.0)
    assert far.trades["side"].tolist() == ["short", "long"]
    # With start, the bars before it are not traded: from bar 7 on, the first signal is the long (s = -3).
    late = backtest_mean_reversion(HAND_Y, HAND_X, 2, entry=1.0, hedge="fixed", beta=2.0, alpha=1.0, std=1.0,
                                   start=7)
    assert late.trades["side"].tolist() == ["long", "short"]


def test_fixed_hedge_options_are_checked_by_name() -> None:
    y, x = HAND_Y, HAND_X
    with pytest.raises(ValueError, match=r"hedge 'fixed' needs std \(the hedge and spread scale"):
        backtest_mean_reversion(y, x, 2, entry=1.0, hedge="fixed", beta=2.0, alpha=1.0)
    with pytest.raises(ValueError, match="hedge 'fixed' needs beta, alpha, std"):
        backtest_mean_reversion(y, x, 2, entry=1.0, hedge="fixed")
    with pytest.raises(ValueError, match=r"unknown option\(s\) for hedge 'fixed': delta"):
        backtest_mean_reversion(y, x, 2, entry=1.0, hedge="fixed", beta=2.0, alpha=1.0, std=1.0, delta=0.1)
    with pytest.raises(ValueError, match=r"std must be > 0 for hedge 'fixed' \(the spread's scale\), got 0"):
        backtest_mean_reversion(y, x, 2, entry=1.0, hedge="fixed", beta=2.0, alpha=1.0, std=0)
    with pytest.raises(ValueError, match="beta must be finite, got nan"):
        backtest_mean_reversion(y, x, 2, entry=1.0, hedge="fixed", beta=math.nan, alpha=1.0, std=1.0)
    with pytest.raises(ValueError, match=r"alpha must be a real number, got 'one'"):
        backtest_mean_reversion(y, x, 2, entry=1.0, hedge="fixed", beta=2.0, alpha="one", std=1.0)
    # No warm-up: two bars (a signal and its fill) are enough, one is not.
    two = backtest_mean_reversion(y[:2], x[:2], 2, entry=1.0, hedge="fixed", beta=2.0, alpha=1.0, std=1.0)
    assert two.n_trades == 0 and len(two.equity) == 2
    with pytest.raises(InsufficientDataError, match="needs 2 observations, got 1"):
        backtest_mean_reversion(y[:1], x[:1], 2, entry=1.0, hedge="fixed", beta=2.0, alpha=1.0, std=1.0)
