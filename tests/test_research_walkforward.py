"""Walk-forward: windows, formation numbers pinned to statsmodels, staying pairs, no look-ahead, degenerate data."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binom
from statsmodels.stats.proportion import proportion_confint
from statsmodels.tsa.stattools import adfuller, coint

from analytics.backtest import FundingHistory, backtest_mean_reversion
from domain import ONE_MINUTE
from research.walkforward import (
    SUMMARY_COLUMNS,
    WALK_COLUMNS,
    WalkForwardSettings,
    Window,
    add_q_values,
    bars_of,
    evaluate_window,
    evaluate_windows,
    summarise,
    walk_forward,
    walk_forward_windows,
    wilson_interval,
)

START = pd.Timestamp("2026-01-01", tz="UTC")
MINUTE = pd.Timedelta(minutes=1)


def grid(n: int) -> pd.DatetimeIndex:
    return pd.date_range(START, periods=n, freq="1min")


def random_walk(rng: np.random.Generator, n: int, level: float = 100.0) -> np.ndarray:
    """Log-normal random walk around ``level`` (0.1 % a bar)."""
    return level * np.exp(np.cumsum(rng.normal(0.0, 1e-3, n)))


def ar1(rng: np.random.Generator, n: int, phi: float = 0.8, scale: float = 0.03) -> np.ndarray:
    noise = np.zeros(n)
    shocks = rng.normal(0.0, scale, n)
    for t in range(1, n):
        noise[t] = phi * noise[t - 1] + shocks[t]
    return noise


PHI = 0.6  # the planted spreads' AR(1) coefficient: λ = φ - 1 = -0.4, a half-life of ln 2 / 0.4 ≈ 1.7 bars


def planted(rng: np.random.Generator, x: np.ndarray, beta: float = 2.0, const: float = 5.0) -> np.ndarray:
    """A leg cointegrated with x: beta·x + const + stationary AR(1) noise."""
    return beta * x + const + ar1(rng, len(x), PHI)


def settings(**options: object) -> WalkForwardSettings:
    base: dict[str, object] = {"formation": 400, "trading": 200}
    return WalkForwardSettings(**{**base, **options})  # type: ignore[arg-type]


def one_window(formation: int = 400, trading: int = 200) -> Window:
    return Window(0, START, START + formation * MINUTE, START + (formation + trading) * MINUTE, 60_000)


def row_of(rows: pd.DataFrame, y: str, x: str, window: int = 0) -> pd.Series:
    match = rows[(rows["y"] == y) & (rows["x"] == x) & (rows["window"] == window)]
    assert len(match) == 1, (y, x, window)
    return match.iloc[0]


# Windows and settings


def test_windows_tile_the_span_from_its_first_bar_and_drop_an_incomplete_tail() -> None:
    chosen = settings(formation=60, trading=30)
    windows = walk_forward_windows(START, START + 160 * MINUTE, "1m", chosen)
    # (160 - 90) // 30 + 1 = 3 complete windows; the last 10 bars start no window.
    assert {w.bar_ms for w in windows} == {60_000}
    assert [(w.number, w.formation_start, w.trading_start, w.trading_end) for w in windows] == [
        (k, START + 30 * k * MINUTE, START + (60 + 30 * k) * MINUTE, START + (90 + 30 * k) * MINUTE) for k in range(3)
    ]
    # Each trading window starts where its formation ends and the trading windows tile.
    assert all(a.trading_end == b.trading_start for a, b in itertools.pairwise(windows))
    overlapping = walk_forward_windows(START, START + 160 * MINUTE, "1m", settings(formation=60, trading=30, step=10))
    assert len(overlapping) == 8 and overlapping[-1].trading_end == START + 160 * MINUTE
    # A naive start is UTC.
    assert walk_forward_windows(START.tz_localize(None), START + 90 * MINUTE, "1m",
                                settings(formation=60, trading=30))[0].formation_start == START


def test_a_span_too_short_for_one_window_is_named() -> None:
    message = (r"the span 2026-01-01 00:00:00\+00:00 to 2026-01-01 01:29:00\+00:00 holds 89 1m bars; one window "
               r"needs formation \+ trading = 60 \+ 30 = 90")
    with pytest.raises(ValueError, match=message):
        walk_forward_windows(START, START + 89 * MINUTE, "1m", settings(formation=60, trading=30))
    with pytest.raises(ValueError, match="holds 0 1m bars"):
        walk_forward_windows(START, START - MINUTE, "1m", settings(formation=60, trading=30))


def test_durations_become_whole_bars_of_the_timeframe() -> None:
    chosen = WalkForwardSettings.of("1m", "30D", "7D")
    assert (chosen.formation, chosen.trading, chosen.step) == (43_200, 10_080, 10_080)
    assert WalkForwardSettings.of("5m", "1D", "6h", step="1h").step == 12
    assert WalkForwardSettings.of("1m", 120, 60).formation == 120  # ints are bars already
    with pytest.raises(ValueError, match=r"formation: '90s' is not a whole positive number of 1m bars"):
        WalkForwardSettings.of("1m", "90s", "7D")
    with pytest.raises(ValueError, match=r"trading: '-1D' is not a whole positive number of 1m bars"):
        WalkForwardSettings.of("1m", "30D", "-1D")
    with pytest.raises(ValueError, match=r"step: 'weekly' is neither a number of bars nor a duration"):
        WalkForwardSettings.of("1m", "30D", "7D", step="weekly")
    with pytest.raises(ValueError, match=r"formation: True is neither"):
        bars_of("formation", True, ONE_MINUTE)
    with pytest.raises(ValueError, match=r"trading: 30.0 is neither a whole number of bars nor a duration"):
        WalkForwardSettings.of("1m", "30D", 30.0)
    with pytest.raises(ValueError, match=r"timeframe: '2m' is not one of"):
        WalkForwardSettings.of("2m", "30D", "7D")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"formation": 59}, r"formation must be at least 60 bars \(the scan's min_bars\), got 59"),
        ({"min_bars": 200, "formation": 150}, r"formation must be at least 200 bars"),
        ({"min_bars": 10}, r"min_bars must be a whole number >= 30, got 10"),
        ({"trading": 29}, r"trading must be at least 30 bars, got 29"),
        ({"trading": 30.5}, r"trading must be a whole number of bars, got 30.5"),
        ({"step": -1}, r"step must be >= 1 bar \(or 0 for the trading length\), got -1"),
        ({"trend": "ct"}, r"trend: 'ct' is not one of c, n"),
        ({"maxlag": -2}, r"maxlag must be a whole number >= 0 or None, got -2"),
        ({"entry": 0.0}, r"entry must be > 0 and exit in \[0, entry\), got entry 0.0, exit 0.0"),
        ({"exit": 2.5}, r"exit in \[0, entry\), got entry 2.0, exit 2.5"),
        ({"cost_bps": -1.0}, r"cost_bps must be >= 0, got -1.0"),
        ({"cost_bps": math.nan}, r"cost_bps must be a finite number, got nan"),
        ({"found_q": 1.5}, r"found_q must be between 0 and 1, got 1.5"),
        ({"stay_p": 0}, r"stay_p must be between 0 and 1, got 0"),
        ({"bars_per_year": 0}, r"bars_per_year must be > 0, got 0"),
    ],
)
def test_bad_settings_are_named(options: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        settings(**options)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        # The stay test (ADF with a constant, maxlag lags) on 30 bars needs 2·(20 + 2) = 44: every pair of
        # every window would be untestable out of sample, so the study would report nothing found staying.
        ({"formation": 60, "trading": 30, "maxlag": 20},
         r"trading must be at least 44 bars for the stay test's ADF with maxlag 20, got 30"),
        # The formation scan with maxlag 20 needs 2·20 + 3 = 43 shared bars: refused here, not mid-run.
        ({"formation": 60, "trading": 60, "maxlag": 20, "min_bars": 30},
         r"min_bars must be at least 43 for the Engle–Granger test with maxlag 20, got 30"),
    ],
)
def test_a_maxlag_the_windows_cannot_hold_is_refused_before_any_window_runs(options: dict[str, object],
                                                                             message: str) -> None:
    with pytest.raises(ValueError, match=message):
        WalkForwardSettings(**options)  # type: ignore[arg-type]
    # The lengths that fit are accepted and every pair of a window is then tested out of sample.
    fitting = WalkForwardSettings(formation=60, trading=44, maxlag=20, min_bars=43)
    rng = np.random.default_rng(3)
    x = random_walk(rng, 104)
    closes = pd.DataFrame({"A": planted(rng, x), "B": x}, index=grid(104))
    rows = walk_forward(closes, "1m", fitting).rows
    assert rows["oos_status"].tolist() == ["ok"] and rows["stays"].notna().all()


def test_the_default_step_is_the_trading_length() -> None:
    assert settings().step == 200 and settings(step=50).step == 50


# Formation and trading numbers pinned to statsmodels


def test_formation_test_is_statsmodels_coint_and_staying_is_adfuller_on_the_formation_hedge() -> None:
    rng = np.random.default_rng(7)
    n = 600
    x = random_walk(rng, n)
    closes = pd.DataFrame({"AAA": planted(rng, x), "BBB": x, "CCC": random_walk(rng, n, 50.0)}, index=grid(n))
    rows = evaluate_window(closes, [("AAA", "BBB"), ("CCC", "BBB"), ("AAA", "CCC")], one_window(), settings())
    assert list(rows.columns) == list(WALK_COLUMNS)
    formation, trading = closes.iloc[:400], closes.iloc[400:]
    for _, row in rows.iterrows():
        y_f, x_f = formation[row["y"]].to_numpy(), formation[row["x"]].to_numpy()
        statistic, pvalue, _ = coint(y_f, x_f, trend="c", autolag="aic")
        assert row["eg_stat"] == pytest.approx(statistic, rel=1e-8)
        assert row["eg_pvalue"] == pytest.approx(pvalue, rel=1e-8, abs=1e-12)
        slope, intercept = np.polyfit(x_f, y_f, 1)
        assert (row["beta"], row["alpha"]) == (pytest.approx(slope, rel=1e-9), pytest.approx(intercept, rel=1e-9))
        spread_f = y_f - slope * x_f - intercept
        assert row["spread_std"] == pytest.approx(spread_f.std(ddof=1), rel=1e-9)
        assert row["spread_mean"] == pytest.approx(0.0, abs=1e-9 * row["spread_std"])
        # The trading spread keeps the formation's β: adfuller (constant, AIC) on it, one-series p-value.
        spread_t = trading[row["y"]].to_numpy() - slope * trading[row["x"]].to_numpy()
        reference = adfuller(spread_t, regression="c", autolag="AIC", result_object=False)
        assert row["oos_adf_stat"] == pytest.approx(reference[0], rel=1e-8)
        assert row["oos_adf_pvalue"] == pytest.approx(reference[1], rel=1e-8, abs=1e-12)
        assert row["stays"] == (reference[1] < 0.05)
        assert row["n_formation"] == 400 and row["n_trading"] == 200
        assert (row["status"], row["oos_status"]) == ("ok", "ok")
    assert row_of(rows, "AAA", "BBB")["eg_pvalue"] < 1e-4 and row_of(rows, "AAA", "BBB")["stays"]


def test_trading_pnl_is_the_backtest_on_the_formation_hedge_with_the_last_position_closed() -> None:
    rng = np.random.default_rng(19)
    n = 600
    x = random_walk(rng, n)
    closes = pd.DataFrame({"AAA": planted(rng, x), "BBB": x}, index=grid(n))
    chosen = settings(cost_bps=5.0, entry=1.5, exit=0.25)
    row = evaluate_window(closes, [("BBB", "AAA")], one_window(), chosen).iloc[0]  # either order: y sorts first
    assert (row["y"], row["x"]) == ("AAA", "BBB")
    y_f, x_f = closes["AAA"].to_numpy()[:400], x[:400]
    slope, intercept = np.polyfit(x_f, y_f, 1)
    std = (y_f - slope * x_f - intercept).std(ddof=1)
    y_t, x_t = closes["AAA"].to_numpy()[400:], x[400:]
    direct = backtest_mean_reversion(y_t, x_t, 2, entry=1.5, exit=0.25, cost_bps=5.0, hedge="fixed", beta=slope,
                                     alpha=intercept, std=std)
    trades = direct.trades
    assert trades["open"].iloc[-1]  # this seed ends in a position: its exit cost is charged
    last = trades.iloc[-1]
    closing = (last["exit_y"] + abs(last["hedge_ratio"]) * last["exit_x"]) * 5.0 / 10_000
    assert row["oos_pnl"] == pytest.approx(direct.total_pnl - closing, rel=1e-9)
    assert (row["entries"], row["exits"]) == (len(trades), len(trades) - 1)
    assert row["entries"] > 10  # a half-life of a bar or two crosses ±1.5σ often
    assert row["oos_return"] == pytest.approx(row["oos_pnl"] / (y_t[0] + abs(slope) * x_t[0]), rel=1e-12)
    assert row["oos_half_life"] == pytest.approx(math.log(2) / (1 - PHI), rel=0.5)


# What stays


def _disjoint_pair_rows(closes: pd.DataFrame, pairs: list[tuple[str, str]], chosen: WalkForwardSettings
                        ) -> pd.DataFrame:
    """Every window, one block per pair (as a distributed runner would), adjusted over the window's family."""
    windows = walk_forward_windows(closes.index[0], closes.index[-1] + MINUTE, "1m", chosen)
    blocks = [evaluate_window(closes[list(pair)], [pair], window, chosen) for window in windows for pair in pairs]
    return add_q_values(pd.concat(blocks, ignore_index=True))


def test_planted_pairs_stay_and_unrelated_random_walks_stay_at_the_nominal_rate() -> None:
    rng = np.random.default_rng(2026)
    n, planted_pairs, null_pairs = 1200, 8, 60
    columns: dict[str, np.ndarray] = {}
    for k in range(planted_pairs):
        x = random_walk(rng, n)
        columns[f"PA{k:02d}"], columns[f"PB{k:02d}"] = planted(rng, x), x  # y (sorts first) = 2·x + noise
    for k in range(null_pairs):
        columns[f"NA{k:02d}"], columns[f"NB{k:02d}"] = random_walk(rng, n), random_walk(rng, n, 30.0)
    closes = pd.DataFrame(columns, index=grid(n))
    pairs = [(f"PA{k:02d}", f"PB{k:02d}") for k in range(planted_pairs)]
    pairs += [(f"NA{k:02d}", f"NB{k:02d}") for k in range(null_pairs)]
    chosen = settings()  # 400 + 200 bars, step 200: 4 windows
    rows = _disjoint_pair_rows(closes, pairs, chosen)
    assert rows["window"].nunique() == 4 and len(rows) == 4 * len(pairs)

    real = rows["x"].str.startswith("PB")
    # AIC's lag choice costs the Engle–Granger test some power on 400 bars: nearly all are found.
    assert (rows.loc[real, "q_value"] < 0.05).mean() >= 0.9
    assert rows.loc[real, "stays"].astype(bool).all()
    # Independent random walks: the trading spread with any fixed β is a random walk, so the ADF
    # test rejects ~5 % of them: inside the binomial's central 99.8 % for 240 tests.
    null = rows.loc[~real, "stays"].astype(bool)
    low, high = binom.ppf([0.001, 0.999], len(null), 0.05)
    assert low <= null.sum() <= high, null.sum()
    found_null = int((rows.loc[~real, "q_value"] < 0.05).sum())
    assert found_null <= 8  # BH at 5 % over 68 tests a window: a few false discoveries among ~36 at most

    summary = summarise(rows, walk_forward_windows(START, START + n * MINUTE, "1m", chosen), chosen)
    assert list(summary.columns) == list(SUMMARY_COLUMNS)
    assert (summary["pairs"] == len(pairs)).all()
    planted_found = rows[real & (rows["q_value"] < 0.05)].groupby("window").size()
    assert (summary["stayed"].to_numpy() >= planted_found.to_numpy()).all()
    # Found pairs stay far more often than pairs at large: the interval's floor is above the baseline.
    assert (summary["stay_low"] > summary["base_stay_share"]).all()
    assert (summary["base_stay_share"] < 0.3).all()


def test_a_relation_that_breaks_in_the_trading_window_does_not_stay() -> None:
    rng = np.random.default_rng(5)
    x = random_walk(rng, 600)
    y = planted(rng, x)
    # From the trading window on, y wanders off on its own: the formation's β no longer holds.
    y[400:] = y[399] * np.exp(np.cumsum(rng.normal(0.0, 2e-3, 200))) + 0.0 * x[400:]
    closes = pd.DataFrame({"AAA": y, "BBB": x}, index=grid(600))
    row = evaluate_window(closes, [("AAA", "BBB")], one_window(), settings()).iloc[0]
    assert row["eg_pvalue"] < 0.01  # found in formation (one pair: q = p)
    assert row["stays"] is False or row["stays"] == False  # noqa: E712 (a numpy bool)
    assert row["oos_adf_pvalue"] > 0.05
    assert abs(row["oos_mean_shift"]) > 3  # the spread left the formation band


# No look-ahead


def test_trading_bars_never_change_formation_numbers_and_later_bars_never_change_a_window() -> None:
    rng = np.random.default_rng(3)
    n = 1000
    x = random_walk(rng, n)
    closes = pd.DataFrame({"AAA": planted(rng, x), "BBB": x, "CCC": random_walk(rng, n)}, index=grid(n))
    chosen = settings()
    full = walk_forward(closes, "1m", chosen)
    assert len(full.windows) == 3
    formation_columns = ["y", "x", "beta", "alpha", "spread_mean", "spread_std", "eg_stat", "eg_pvalue", "half_life",
                         "n_formation", "status", "q_value"]
    for window in full.windows:
        # A prefix ending where the window's trading ends gives that window's rows exactly.
        prefix = walk_forward(closes[closes.index < window.trading_end], "1m", chosen)
        assert prefix.windows[-1] == window
        pd.testing.assert_frame_equal(prefix.rows[prefix.rows["window"] == window.number].reset_index(drop=True),
                                      full.rows[full.rows["window"] == window.number].reset_index(drop=True))
        # Scrambling every bar from the trading start on leaves the formation numbers alone.
        scrambled = closes.copy()
        later = scrambled.index >= window.trading_start
        scrambled.loc[later] = scrambled.loc[later].to_numpy() * rng.uniform(0.5, 1.5, (int(later.sum()), 3))
        again = walk_forward(scrambled, "1m", chosen).rows
        mine = again["window"] == window.number
        pd.testing.assert_frame_equal(again.loc[mine, formation_columns].reset_index(drop=True),
                                      full.rows.loc[full.rows["window"] == window.number, formation_columns]
                                      .reset_index(drop=True))
        assert not np.allclose(again.loc[mine, "oos_adf_stat"], full.rows.loc[full.rows["window"] == window.number,
                                                                               "oos_adf_stat"])


# Blocks, gathering, summary


def test_blocks_gathered_equal_the_single_process_run() -> None:
    rng = np.random.default_rng(21)
    n = 800
    x = random_walk(rng, n)
    closes = pd.DataFrame({"DDD": planted(rng, x), "AAA": x, "CCC": random_walk(rng, n), "BBB": random_walk(rng, n)},
                          index=grid(n))
    chosen = settings()
    whole = walk_forward(closes, "1m", chosen)
    pairs = [("DDD", "AAA"), ("AAA", "CCC"), ("AAA", "BBB"), ("DDD", "CCC"), ("DDD", "BBB"), ("CCC", "BBB")]
    # Blocks of two pairs, each given only its own symbols' closes.
    blocks = []
    for window in whole.windows:
        for start in range(0, len(pairs), 2):
            block = pairs[start:start + 2]
            symbols = sorted({s for pair in block for s in pair})
            blocks.append(evaluate_window(closes[symbols], block, window, chosen))
    gathered = add_q_values(pd.concat(blocks, ignore_index=True))
    # The same blocks with every window in one task each.
    per_block = [evaluate_windows(closes[sorted({s for pair in pairs[i:i + 2] for s in pair})], pairs[i:i + 2],
                                  whole.windows, chosen) for i in range(0, len(pairs), 2)]
    key_order = ["window", "y", "x"]
    pd.testing.assert_frame_equal(add_q_values(pd.concat(per_block, ignore_index=True))
                                  .sort_values(key_order).reset_index(drop=True),
                                  gathered.sort_values(key_order).reset_index(drop=True))
    assert evaluate_windows(closes, pairs, [], chosen).columns.tolist() == list(WALK_COLUMNS)
    key = ["window", "y", "x"]
    pd.testing.assert_frame_equal(gathered.sort_values(key).reset_index(drop=True),
                                  whole.rows.sort_values(key).reset_index(drop=True), check_dtype=False)
    pd.testing.assert_frame_equal(summarise(gathered, whole.windows, chosen), whole.summary)


def test_summary_counts_and_the_wilson_interval() -> None:
    rng = np.random.default_rng(8)
    n = 800
    x = random_walk(rng, n)
    closes = pd.DataFrame({"AAA": planted(rng, x), "BBB": x, "CCC": random_walk(rng, n), "DDD": random_walk(rng, n)},
                          index=grid(n))
    progress: list[tuple[int, int]] = []
    result = walk_forward(closes, "1m", settings(cost_bps=2.0), progress=lambda *done: progress.append(done))
    assert progress == [(1, 2), (2, 2)]
    for window, summary in zip(result.windows, result.summary.itertuples(), strict=True):
        own = result.rows[result.rows["window"] == window.number]
        found = own[own["q_value"] < 0.05]
        assert summary.pairs == 6 and summary.found == len(found) and summary.found_oos == len(found)
        assert summary.stayed == int(found["stays"].astype(bool).sum())
        assert summary.stay_share == summary.stayed / summary.found_oos
        low, high = proportion_confint(summary.stayed, summary.found_oos, alpha=0.05, method="wilson")
        assert (summary.stay_low, summary.stay_high) == (pytest.approx(low, abs=1e-12), pytest.approx(high, abs=1e-12))
        assert summary.mean_return_found == pytest.approx(found["oos_return"].mean())
        assert summary.mean_return_all == pytest.approx(own["oos_return"].mean())
        assert summary.base_stay_share == pytest.approx(own["stays"].astype(bool).mean())


@pytest.mark.parametrize(("successes", "trials"), [(0, 1), (0, 12), (3, 10), (12, 12), (1, 400), (399, 400)])
def test_wilson_interval_equals_statsmodels(successes: int, trials: int) -> None:
    low, high = proportion_confint(successes, trials, alpha=0.05, method="wilson")
    assert wilson_interval(successes, trials) == (pytest.approx(low, abs=1e-12), pytest.approx(high, abs=1e-12))


def test_a_window_with_nothing_found_has_no_share() -> None:
    rng = np.random.default_rng(9)
    closes = pd.DataFrame({"AAA": random_walk(rng, 600), "BBB": random_walk(rng, 600)}, index=grid(600))
    result = walk_forward(closes, "1m", settings())
    assert wilson_interval(0, 0) == (pytest.approx(math.nan, nan_ok=True), pytest.approx(math.nan, nan_ok=True))
    summary = result.summary.iloc[0]
    assert (summary["found"], summary["found_oos"], summary["stayed"]) == (0, 0, 0)
    assert math.isnan(summary["stay_share"]) and math.isnan(summary["stay_low"])
    assert math.isnan(summary["mean_return_found"]) and math.isfinite(summary["mean_return_all"])


def test_summarise_and_add_q_values_refuse_rows_they_cannot_use() -> None:
    with pytest.raises(ValueError, match=r"rows lack the column\(s\) y, x, eg_pvalue, status"):
        add_q_values(pd.DataFrame({"window": [0]}))
    rows = evaluate_window(pd.DataFrame({"AAA": np.linspace(1, 2, 600), "BBB": np.linspace(2, 1, 600) ** 2},
                                        index=grid(600)), [("AAA", "BBB")], one_window(), settings())
    with pytest.raises(ValueError, match="rows lack q_value; call add_q_values"):
        summarise(rows, [one_window()], settings())
    # The same pair from two blocks would be counted twice by Benjamini–Hochberg: refused.
    with pytest.raises(ValueError, match=r"rows hold window 0's pair \(AAA, BBB\) more than once"):
        add_q_values(pd.concat([rows, rows], ignore_index=True))


# Degenerate data


def test_a_flat_leg_is_named_in_formation_and_in_trading() -> None:
    rng = np.random.default_rng(4)
    x = random_walk(rng, 600)
    frozen_later = x.copy()
    frozen_later[400:] = frozen_later[399]  # no trade in the trading window: the close is carried forward
    closes = pd.DataFrame({"AAA": planted(rng, x), "BBB": x, "FLAT": np.full(600, 7.0), "LATE": frozen_later},
                          index=grid(600))
    rows = evaluate_window(closes, [("AAA", "FLAT"), ("AAA", "LATE")], one_window(), settings())
    flat = row_of(rows, "AAA", "FLAT")
    assert flat["status"] == "flat_leg" and "FLAT is constant over the 400 shared bars" in flat["note"]
    assert (flat["oos_status"], flat["oos_note"]) == ("not_formed", "not tested in formation")
    assert pd.isna(flat["stays"]) and math.isnan(flat["oos_pnl"])
    late = row_of(rows, "AAA", "LATE")
    assert late["status"] == "ok"
    assert (late["oos_status"], late["oos_note"]) == ("flat_leg", "LATE is constant over the 200 trading bars")
    assert pd.isna(late["stays"]) and math.isnan(late["oos_adf_pvalue"])
    summary = summarise(add_q_values(rows), [one_window()], settings())
    assert summary["pairs"].iloc[0] == 1  # the flat pair was not tested


def test_gaps_use_the_bars_where_both_legs_traded_and_too_few_are_named() -> None:
    rng = np.random.default_rng(6)
    x = random_walk(rng, 600)
    y = planted(rng, x)
    gappy_x = x.copy()
    gappy_x[[50, 51, 410, 450, 451, 452]] = np.nan
    sparse = x.copy()
    sparse[420:] = np.nan  # stops trading 20 bars into the trading window
    closes = pd.DataFrame({"AAA": y, "BBB": gappy_x, "CCC": sparse}, index=grid(600))
    rows = evaluate_window(closes, [("AAA", "BBB"), ("AAA", "CCC")], one_window(), settings())
    gappy = row_of(rows, "AAA", "BBB")
    assert (gappy["n_formation"], gappy["n_trading"]) == (398, 196)
    keep = np.isfinite(gappy_x)
    formation, trading = keep & (np.arange(600) < 400), keep & (np.arange(600) >= 400)
    assert gappy["eg_pvalue"] == pytest.approx(coint(y[formation], x[formation], autolag="aic")[1], rel=1e-8)
    slope = np.polyfit(x[formation], y[formation], 1)[0]
    reference = adfuller(y[trading] - slope * x[trading], regression="c", autolag="AIC", result_object=False)
    assert gappy["oos_adf_pvalue"] == pytest.approx(reference[1], rel=1e-8)
    short = row_of(rows, "AAA", "CCC")
    assert short["status"] == "ok" and short["n_trading"] == 20
    assert (short["oos_status"], short["oos_note"]) == (
        "insufficient_data", "20 trading bars where both legs are finite; needs 30")
    # A leg missing from the whole formation is the scanner's "insufficient_data", named there.
    closes["NEW"] = np.where(np.arange(600) >= 400, x, np.nan)
    new = row_of(evaluate_window(closes, [("AAA", "NEW")], one_window(), settings()), "AAA", "NEW")
    assert new["status"] == "insufficient_data" and "0 bars where both legs are finite; needs 60" in new["note"]


def test_bad_closes_and_pairs_are_named() -> None:
    rng = np.random.default_rng(1)
    closes = pd.DataFrame({"AAA": random_walk(rng, 600), "BBB": random_walk(rng, 600)}, index=grid(600))
    window, chosen = one_window(), settings()
    with pytest.raises(ValueError, match=r"pair \('AAA', 'ZZZ'\): 'ZZZ' is not a column of closes"):
        evaluate_window(closes, [("AAA", "ZZZ")], window, chosen)
    with pytest.raises(ValueError, match=r"pair \('AAA', 'BBB'\) is listed twice \(in either order\)"):
        evaluate_window(closes, [("AAA", "BBB"), ("BBB", "AAA")], window, chosen)
    with pytest.raises(ValueError, match=r"pair \('AAA', 'AAA'\) has the same symbol twice"):
        evaluate_window(closes, [("AAA", "AAA")], window, chosen)
    with pytest.raises(ValueError, match=r"a pair has two legs, got \('AAA',\)"):
        evaluate_window(closes, [("AAA",)], window, chosen)  # type: ignore[list-item]
    with pytest.raises(ValueError, match="closes must be indexed by bar start times"):
        evaluate_window(closes.reset_index(drop=True), [("AAA", "BBB")], window, chosen)
    with pytest.raises(ValueError, match="closes must be a DataFrame"):
        evaluate_window(closes["AAA"], [("AAA", "BBB")], window, chosen)  # type: ignore[arg-type]
    poisoned = closes.copy()
    poisoned.iloc[500, 1] = np.inf
    with pytest.raises(ValueError, match="closes column BBB contains inf; use NaN for a missing bar"):
        evaluate_window(poisoned, [("AAA", "BBB")], window, chosen)
    poisoned.iloc[500, 1] = -3.0
    with pytest.raises(ValueError, match="closes column BBB has a price <= 0"):
        evaluate_window(poisoned, [("AAA", "BBB")], window, chosen)
    poisoned.iloc[500, 1], poisoned.iloc[100, 0] = 1.0, 0.0  # in formation: the scanner's own message
    with pytest.raises(ValueError, match="closes column AAA has a price <= 0"):
        evaluate_window(poisoned, [("AAA", "BBB")], window, chosen)
    assert evaluate_window(closes, [], window, chosen).columns.tolist() == list(WALK_COLUMNS)
    with pytest.raises(ValueError, match="closes' index is not on the 1m grid"):
        jittered = closes.index + pd.to_timedelta(np.arange(600) % 2, unit="s")
        walk_forward(closes.set_axis(jittered, axis=0), "1m", chosen)
    with pytest.raises(ValueError, match="strictly increasing bar start times"):
        walk_forward(closes.iloc[::-1], "1m", chosen)
    with pytest.raises(ValueError, match="closes has no rows"):
        walk_forward(closes.iloc[:0], "1m", chosen)
    with pytest.raises(ValueError, match="progress must be callable"):
        walk_forward(closes, "1m", chosen, progress=3)  # type: ignore[arg-type]


def test_collinear_legs_are_tested_in_formation_but_not_traded() -> None:
    rng = np.random.default_rng(12)
    x = random_walk(rng, 600)
    closes = pd.DataFrame({"AAA": 2.0 * x + 1.0, "BBB": x}, index=grid(600))
    rows = add_q_values(evaluate_window(closes, [("AAA", "BBB")], one_window(), settings()))
    row = rows.iloc[0]
    assert row["status"] == "collinear" and row["eg_pvalue"] == 0.0 and row["q_value"] == 0.0
    assert (row["oos_status"], row["oos_note"]) == ("not_formed", "collinear in formation")
    summary = summarise(rows, [one_window()], settings()).iloc[0]
    # Counted as tested and found (as the scanner does), but there is no spread to test afterwards.
    assert (summary["pairs"], summary["found"], summary["found_oos"]) == (1, 1, 0)


def test_without_a_constant_the_formation_mean_centres_the_trading_z_score() -> None:
    rng = np.random.default_rng(19)
    x = random_walk(rng, 600)
    # Noisier than planted(): with no constant, R² is uncentred, and small noise on prices near 200
    # would make the legs collinear by statsmodels' rule (as the test above shows for exact ones).
    closes = pd.DataFrame({"AAA": 2.0 * x + 5.0 + ar1(rng, 600, PHI, 0.5), "BBB": x}, index=grid(600))
    chosen = settings(trend="n", entry=1.5)
    row = evaluate_window(closes, [("AAA", "BBB")], one_window(), chosen).iloc[0]
    y_f, x_f = closes["AAA"].to_numpy()[:400], x[:400]
    beta = float(x_f @ y_f / (x_f @ x_f))  # regression through the origin
    spread_f = y_f - beta * x_f
    assert row["alpha"] == 0.0 and row["beta"] == pytest.approx(beta, rel=1e-9)
    assert row["eg_pvalue"] == pytest.approx(coint(y_f, x_f, trend="n", autolag="aic")[1], rel=1e-8)
    assert row["status"] == "ok" and row["spread_mean"] == pytest.approx(spread_f.mean(), rel=1e-9)
    y_t, x_t = closes["AAA"].to_numpy()[400:], x[400:]
    direct = backtest_mean_reversion(y_t, x_t, 2, entry=1.5, hedge="fixed", beta=beta, alpha=spread_f.mean(),
                                     std=spread_f.std(ddof=1))
    assert row["entries"] == direct.n_trades > 0
    assert row["oos_mean_shift"] == pytest.approx(((y_t - beta * x_t).mean() - spread_f.mean()) / spread_f.std(ddof=1))


def test_closes_read_from_the_research_store_across_a_month_end(tmp_path) -> None:
    from domain import Market
    from storage.research import ResearchStore

    rng = np.random.default_rng(30)
    n = 800
    start_ms = int(pd.Timestamp("2026-01-31 20:00", tz="UTC").value // 1_000_000)  # 4 h before February
    x = random_walk(rng, n)
    frame = pd.DataFrame({"AAAUSDT": planted(rng, x), "BBBUSDT": x, "CCCUSDT": random_walk(rng, n)},
                         index=pd.to_datetime(start_ms + 60_000 * np.arange(n), unit="ms", utc=True))
    frame.iloc[100:110, 2] = np.nan  # CCC did not trade for ten minutes: the store has no bars there
    store = ResearchStore(str(tmp_path))
    for symbol in frame.columns:
        series = frame[symbol].dropna()
        times = np.asarray((series.index - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(milliseconds=1), dtype=np.int64)
        bars = pd.DataFrame({"open_time": times, "open": series.to_numpy(), "high": series.to_numpy(),
                             "low": series.to_numpy(), "close": series.to_numpy(), "volume": 1.0,
                             "quote_volume": series.to_numpy(), "trades": np.ones(len(series), dtype=np.int64)})
        for month, part in bars.groupby(pd.to_datetime(bars["open_time"], unit="ms").dt.strftime("%Y-%m")):
            store.write_month(Market.SPOT, ONE_MINUTE, symbol, str(month), part.reset_index(drop=True))
    closes = store.closes(Market.SPOT, ONE_MINUTE, list(frame.columns), start_ms, start_ms + 60_000 * n)
    chosen = settings()
    stored = walk_forward(closes, "1m", chosen)
    direct = walk_forward(frame, "1m", chosen)
    pd.testing.assert_frame_equal(stored.rows, direct.rows)
    assert row_of(stored.rows, "AAAUSDT", "BBBUSDT")["stays"]
    assert row_of(stored.rows, "BBBUSDT", "CCCUSDT")["n_formation"] == 390


def test_a_sparse_list_of_pairs_is_scanned_pair_by_pair_with_the_same_numbers(monkeypatch) -> None:
    import research.walkforward as walkforward

    rng = np.random.default_rng(40)
    closes = pd.DataFrame({f"S{k}": random_walk(rng, 600) for k in range(8)}, index=grid(600))
    everything = evaluate_window(closes, list(itertools.combinations(closes.columns, 2)), one_window(), settings())
    scanned: list[list[str]] = []
    real_scan = walkforward.scan_pairs

    def counting_scan(frame: pd.DataFrame, **options: object) -> pd.DataFrame:
        scanned.append(list(frame.columns))
        return real_scan(frame, **options)  # type: ignore[arg-type]

    monkeypatch.setattr(walkforward, "scan_pairs", counting_scan)
    sparse = evaluate_window(closes, [("S0", "S1"), ("S5", "S2"), ("S6", "S7")], one_window(), settings())
    # Three pairs of six symbols: three two-symbol scans, not the fifteen pairs of the six.
    assert scanned == [["S0", "S1"], ["S2", "S5"], ["S6", "S7"]]
    expected = everything.set_index(["y", "x"]).loc[[("S0", "S1"), ("S2", "S5"), ("S6", "S7")]].reset_index()
    pd.testing.assert_frame_equal(sparse[list(WALK_COLUMNS)], expected[list(WALK_COLUMNS)])
    scanned.clear()
    block = [(a, b) for a in ("S0", "S1", "S2") for b in ("S3", "S4", "S5")]  # 9 of the 15 pairs of six symbols
    evaluate_window(closes, block, one_window(), settings())
    assert scanned == [["S0", "S3", "S4", "S5", "S1", "S2"]]


def test_one_symbol_has_no_pairs_and_an_empty_but_complete_summary() -> None:
    closes = pd.DataFrame({"AAA": 100.0 + np.arange(600.0)}, index=grid(600))
    result = walk_forward(closes, "1m", settings())
    assert result.rows.empty and list(result.rows.columns) == [*WALK_COLUMNS, "q_value"]
    assert result.summary[["pairs", "found", "stayed"]].iloc[0].tolist() == [0, 0, 0]
    assert math.isnan(result.summary["stay_share"].iloc[0])


# Funding on perpetual legs


def _perp_market() -> pd.DataFrame:
    rng = np.random.default_rng(19)  # the seed whose last trade is still open (see the PnL test)
    x = random_walk(rng, 600)
    return pd.DataFrame({"AAAUSDT.P": planted(rng, x), "BBBUSDT": x}, index=grid(600))


def _funding_events(leg: str, known: bool = True) -> FundingHistory:
    """Every 20 minutes of the trading window (bars 400..599), alternating rates, marks only on some."""
    start_ms = int((START - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(milliseconds=1))
    times = start_ms + 60_000 * np.arange(405, 600, 20, dtype=np.int64) + 30_000  # inside bars, not at closes
    rates = np.where(np.arange(len(times)) % 2 == 0, 0.001, -0.0004)
    marks = np.where(np.arange(len(times)) % 3 == 0, np.nan, 210.0)
    span = (start_ms, start_ms + 60_000 * 600) if known else (start_ms, start_ms + 60_000 * 450)
    return FundingHistory(leg, times, rates, marks, *span)


def test_a_perpetual_leg_pays_funding_in_the_trading_window_as_the_backtest_counts_it() -> None:
    closes = _perp_market()
    chosen = settings(cost_bps=5.0, entry=1.5, exit=0.25)
    history = _funding_events("AAAUSDT.P")
    row = evaluate_window(closes, [("AAAUSDT.P", "BBBUSDT")], one_window(), chosen,
                          funding={"AAAUSDT.P": history}).iloc[0]
    plain = evaluate_window(closes, [("AAAUSDT.P", "BBBUSDT")], one_window(), chosen).iloc[0]  # no funding data
    y_t, x_t = closes["AAAUSDT.P"].to_numpy()[400:], closes["BBBUSDT"].to_numpy()[400:]
    close_ms = history.known_from_ms + 60_000 * np.arange(401, 601, dtype=np.int64)  # each bar's end
    direct = backtest_mean_reversion(y_t, x_t, 2, entry=1.5, exit=0.25, cost_bps=5.0, hedge="fixed",
                                     beta=row["beta"], alpha=row["alpha"] + row["spread_mean"],
                                     std=row["spread_std"], funding_y=history, close_ms=close_ms)
    assert direct.total_funding != 0.0 and row["oos_funding"] == pytest.approx(direct.total_funding, rel=1e-12)
    # The same trades; the PnL differs by the funding alone (a spot x leg pays none).
    assert row["entries"] == plain["entries"] and row["oos_note"] == "" and math.isnan(plain["oos_funding"])
    assert row["oos_pnl"] == pytest.approx(plain["oos_pnl"] + row["oos_funding"], rel=1e-12)
    # Funding unknown over part of a held span: no number is made up, the note says which leg and when.
    partial = evaluate_window(closes, [("AAAUSDT.P", "BBBUSDT")], one_window(), chosen,
                              funding={"AAAUSDT.P": _funding_events("AAAUSDT.P", known=False)}).iloc[0]
    assert math.isnan(partial["oos_pnl"]) and math.isnan(partial["oos_funding"]) and math.isnan(partial["oos_return"])
    assert partial["oos_note"].startswith("funding unknown for AAAUSDT.P after 2026-01-01 07:30:00 UTC")
    # A perpetual leg missing from the histories given: unknown too.
    missing = evaluate_window(closes, [("AAAUSDT.P", "BBBUSDT")], one_window(), chosen, funding={}).iloc[0]
    assert missing["oos_note"] == "funding unknown for AAAUSDT.P: no funding history"
    assert math.isnan(missing["oos_pnl"]) and not math.isnan(missing["oos_adf_pvalue"])


def test_without_funding_data_a_perpetual_pair_says_its_pnl_leaves_funding_out() -> None:
    closes = _perp_market()
    closes["CCCUSDT"] = closes["BBBUSDT"] * 1.5 + 3.0 + ar1(np.random.default_rng(2), 600, PHI)
    rows = walk_forward(closes, "1m", settings()).rows
    perp = row_of(rows, "AAAUSDT.P", "BBBUSDT")
    assert perp["oos_note"] == "funding of AAAUSDT.P not included (no funding history given)"
    assert math.isnan(perp["oos_funding"]) and math.isfinite(perp["oos_pnl"])
    spot = row_of(rows, "BBBUSDT", "CCCUSDT")
    assert spot["oos_funding"] == 0.0 and spot["oos_note"] == ""
    # Given through the driver, the histories reach every window's pairs.
    funded = walk_forward(closes, "1m", settings(), funding={"AAAUSDT.P": _funding_events("AAAUSDT.P")}).rows
    assert row_of(funded, "AAAUSDT.P", "BBBUSDT")["oos_note"] == ""
    other = row_of(funded, "AAAUSDT.P", "CCCUSDT")
    assert other["oos_note"] == "" and math.isfinite(other["oos_funding"]) and math.isfinite(other["oos_pnl"])


def test_exchange_symbols_of_perpetuals_pay_funding_under_their_leg_names() -> None:
    """A um research store's columns are exchange symbols (AAAUSDT for the leg AAAUSDT.P): with
    ``perpetuals`` every leg pays funding, looked up and named by its leg name, never taken as spot."""
    named = _perp_market()
    symbols = named.rename(columns={"AAAUSDT.P": "AAAUSDT"})
    chosen = settings(cost_bps=5.0, entry=1.5, exit=0.25)
    history, flat = _funding_events("AAAUSDT.P"), _funding_events("BBBUSDT.P")
    flat = FundingHistory("BBBUSDT.P", flat.times_ms, np.zeros(len(flat.times_ms)), flat.marks,
                          flat.known_from_ms, flat.known_to_ms)  # known, and zero: the x leg pays nothing
    by_name = evaluate_window(named, [("AAAUSDT.P", "BBBUSDT")], one_window(), chosen,
                              funding={"AAAUSDT.P": history}).iloc[0]
    by_symbol = evaluate_window(symbols, [("AAAUSDT", "BBBUSDT")], one_window(), chosen, perpetuals=True,
                                funding={"AAAUSDT.P": history, "BBBUSDT.P": flat}).iloc[0]
    assert by_symbol["oos_funding"] != 0.0 and by_symbol["oos_funding"] == by_name["oos_funding"]
    assert by_symbol["oos_pnl"] == by_name["oos_pnl"] and by_symbol["oos_note"] == ""
    missing = evaluate_window(symbols, [("AAAUSDT", "BBBUSDT")], one_window(), chosen, perpetuals=True,
                              funding={"AAAUSDT.P": history}).iloc[0]
    assert missing["oos_note"] == "funding unknown for BBBUSDT.P: no funding history"
    assert math.isnan(missing["oos_pnl"])
    unknown = walk_forward(symbols, "1m", chosen, perpetuals=True).rows.iloc[0]
    assert unknown["oos_note"] == "funding of AAAUSDT.P and BBBUSDT.P not included (no funding history given)"
    assert math.isnan(unknown["oos_funding"]) and math.isfinite(unknown["oos_pnl"])
    # A column already named as a perpetual leg keeps its name.
    mixed = walk_forward(named, "1m", chosen, perpetuals=True).rows.iloc[0]
    assert mixed["oos_note"] == unknown["oos_note"]


def test_a_planted_pair_in_an_imported_archive_tree_is_found_and_stays_window_after_window(tmp_path) -> None:
    """From Binance-style archives (testkit.archives) through the research store: the planted pair
    (log ETH = 0.5 + log BTC + AR(1)) is found in every formation window and stays in every trading window."""
    from domain import Market
    from testkit.archives import PlantedPair, fill_store, write_archive_tree

    symbols = ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
    planted_pair = PlantedPair("ETHUSDT", "BTCUSDT", phi=0.7)  # half-life ~2 bars: strongly cointegrated over 600
    tree = write_archive_tree(tmp_path / "mirror", symbols, ["2024-12", "2025-01"], planted_pairs=[planted_pair],
                              seed=3, bars_per_day=60)
    store = fill_store(tree, tmp_path / "store")
    start_ms, end_ms = 1_733_011_200_000, 1_738_368_000_000  # 2024-12-01 and 2025-02-01, UTC
    closes = store.closes(Market.SPOT, ONE_MINUTE, symbols, start_ms, end_ms)
    # Only the first hour of each day has bars: 10 days of formation hold 600 of them, 5 days of trading 300.
    chosen = WalkForwardSettings.of("1m", "10D", "5D", min_bars=500)
    result = walk_forward(closes, "1m", chosen)
    assert len(result.windows) >= 9
    planted = result.rows[(result.rows["y"] == "BTCUSDT") & (result.rows["x"] == "ETHUSDT")]
    assert (planted["n_formation"] == 600).all() and (planted["n_trading"] == 300).all()
    assert (planted["q_value"] < 0.05).all() and planted["stays"].astype(bool).all()
    assert (result.summary["found"] >= 1).all() and (result.summary["stayed"] >= 1).all()
