"""One answer per (pair, parameters, bar): a shared view extended bar by bar equals a cold computation.

Random arrival sequences (a leg quiet at the start or pausing, trades arriving late, flat
stretches, gaps, the liquidity filter) reach a fake engine second by second; after every second
the long-lived cache, a fresh one (a cold computation from the stored bars) and the alert
monitor's shorter request are compared on the bars they show.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

import pairs.bars
from alerts.monitor import WARMUP_FACTOR, AlertMonitor
from analytics.backtest import backtest_mean_reversion
from analytics.errors import InsufficientDataError
from domain import Regression
from pairs.compute import PairParams
from pairs.shared import SharedAnalytics
from records import Trade
from records.alerts import AlertRule
from testkit.fake_market import SYMBOLS, T0_MS, FakeEngine, Scenario, arrivals, empty_history, view_mismatch

SECONDS = 120

scenarios = st.builds(
    Scenario, seconds=st.just(SECONDS), seed=st.integers(0, 2**16),
    quiet_s=st.sampled_from([0, 0, 15, 45]), y_quiet_s=st.sampled_from([0, 0, 10]),
    p_y=st.sampled_from([1.0, 0.9, 0.6]), p_x=st.sampled_from([1.0, 0.8, 0.5, 0.3]),
    max_trades=st.integers(1, 3), lag_s=st.sampled_from([0, 0, 1, 2]),
    flat_every=st.sampled_from([0, 0, 25, 40]), flat_len=st.integers(0, 12),
    gap_at=st.sampled_from([-1, -1, 50, 80]), gap_len=st.integers(0, 20),
    x_pause_every=st.sampled_from([0, 0, 29, 37]), x_pause_len=st.integers(0, 12))


# No shrinking: each example drives 120 seconds of bars; the failing one is printed as drawn.
@settings(max_examples=4, deadline=None, phases=[Phase.explicit, Phase.generate], derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(scenario=scenarios, window=st.integers(10, 13), lookback_bars=st.integers(15, 40),
       min_trades=st.sampled_from([0, 1, 2, 3]), min_volume=st.sampled_from([0.0, 0.0, 0.2]),
       log_prices=st.booleans())
# The two cases of the audit: X quiet at the start and pausing later; the filter at min_trades=2.
@example(scenario=Scenario(SECONDS, 4, quiet_s=40, p_x=0.7, x_pause_every=29, x_pause_len=10), window=10,
         lookback_bars=30, min_trades=0, min_volume=0.0, log_prices=False)
@example(scenario=Scenario(SECONDS, 3, p_y=0.95, p_x=0.9), window=10, lookback_bars=30, min_trades=2,
         min_volume=0.0, log_prices=False)
def test_a_view_extended_bar_by_bar_equals_a_cold_one_at_every_step(tmp_path_factory, scenario, window,
                                                                     lookback_bars, min_trades, min_volume,
                                                                     log_prices):
    if min_trades > scenario.max_trades:  # else the filter leaves no bar to compare
        scenario = replace(scenario, max_trades=min_trades)
    drive_and_compare(tmp_path_factory.mktemp("site"), scenario, PairParams(*SYMBOLS, window=window,
                                                                          log_prices=log_prices),
                      lookback_bars, min_trades, min_volume)


def drive_and_compare(directory: Path, scenario: Scenario, params: PairParams, lookback_bars: int, min_trades: int,
                      min_volume: float, *, page_vs_monitor: bool = True) -> SharedAnalytics:
    """Feed ``scenario`` second by second; after each second compare the cached page view, a cold one,
    the monitor's request and its cold twin on the bars they show (and, with ``page_vs_monitor``,
    the page and the monitor on the bars both show). Returns the long-lived cache."""
    engine = FakeEngine()
    history = empty_history(directory)
    # arg-type below: a FakeEngine stands in for the Engine (it has what SharedAnalytics reads).
    shared = SharedAnalytics(engine, history)  # type: ignore[arg-type]
    window = params.window
    page = dict(warmup_bars=2 * window, min_trades=min_trades, min_volume=min_volume)
    monitor_lookback = (WARMUP_FACTOR * window + 5) * 1_000
    compared = 0
    for second, trades in enumerate(arrivals(scenario)[:scenario.seconds]):
        engine.feed(trades, T0_MS + (second + 1) * 1_000 + 600)
        cached = shared.view(SYMBOLS, 1_000, lookback_bars * 1_000, params, **page)
        cold = SharedAnalytics(engine, history).view(SYMBOLS, 1_000, lookback_bars * 1_000,  # type: ignore[arg-type]
                                                     params, **page)
        problem = view_mismatch(cached, cold)
        assert problem is None, f"second {second}: {problem}"
        compared += cold.pair is not None and len(cold.shown().pair.index) > 0
        # The alert monitor's shorter look, served by the same cache: the cold answer for its own lookback.
        monitor = shared.view(SYMBOLS, 1_000, monitor_lookback, params, warmup_bars=WARMUP_FACTOR * window,
                              min_trades=min_trades, min_volume=min_volume)
        if second % 4 == 0:  # (a fourth of the steps: the cold computations are most of the test's time)
            monitor_cold = SharedAnalytics(engine, history).view(  # type: ignore[arg-type]
                SYMBOLS, 1_000, monitor_lookback, params, warmup_bars=WARMUP_FACTOR * window, min_trades=min_trades,
                min_volume=min_volume)
            problem = view_mismatch(monitor, monitor_cold)
            assert problem is None, f"second {second}, the monitor's view: {problem}"
        if not page_vs_monitor:
            continue
        # And the page shows the monitor's values on the bars both show.
        both = int(max(monitor.bars.shown_from, cached.bars.shown_from).value // 1_000_000)
        problem = view_mismatch(cached.since(both), monitor.since(both))
        assert problem is None, f"second {second}, the page vs the monitor: {problem}"
    assert compared > 0 or scenario.p_x <= 0.3 or min_trades or min_volume  # the comparison was not empty
    return shared


def test_a_leg_quiet_for_longer_than_the_horizon_carries_no_close_in_either_path(tmp_path, monkeypatch):
    """The look-back for a quiet leg's last close and for the filter's warm-up is bounded (a day);
    shrunk to 20 s here, X's 30 s pauses outlast it: both paths start rows when X trades again. (The
    bound counts from each request's lookback, so a page and the monitor, whose lookbacks differ,
    agree only where it does not bind: with a day, where a filter keeps 2 × window bars a day.)"""
    monkeypatch.setattr(pairs.bars, "HORIZON_MS", 20_000)
    scenario = Scenario(SECONDS, 11, p_x=0.8, x_pause_every=50, x_pause_len=30)
    for min_trades in (0, 2):
        shared = drive_and_compare(tmp_path / str(min_trades), scenario, PairParams(*SYMBOLS, window=10), 15,
                                   min_trades, 0.0, page_vs_monitor=False)
        assert shared.extended + shared.served > 0  # the cache was used, not recomputed at every step


class _Store:
    """What AlertMonitor._evaluate asks of an alert store: every rule is ours, every firing is new."""

    def claim_rule(self, rule_id: int | None) -> bool:
        return True

    def record(self, event: object) -> bool:
        return True


def test_the_alert_monitor_sees_for_each_bar_the_value_a_page_shows(tmp_path):
    # Thin bars and min_trades=2: the filter drops about half of them. No page is open: the monitor asks alone.
    engine = FakeEngine()
    history = empty_history(tmp_path)
    shared = SharedAnalytics(engine, history)
    monitor = AlertMonitor(engine, history.site, shared, min_trades=2)
    rule = AlertRule("zscore", ">", 2.5, pair=SYMBOLS, timeframe_ms=1_000, window=10)
    observed: dict[int, float] = {}
    observe = monitor.evaluator.observe

    def recording(rule: AlertRule, ts_ms: int, value: float):
        observed[ts_ms] = value
        return observe(rule, ts_ms, value)

    monitor.evaluator.observe = recording
    for second, trades in enumerate(arrivals(Scenario(SECONDS, 3, p_y=0.95, p_x=0.9))[:SECONDS]):
        engine.feed(trades, T0_MS + (second + 1) * 1_000 + 600)
        monitor._evaluate(_Store(), rule)
    page = SharedAnalytics(engine, history).view(
        SYMBOLS, 1_000, SECONDS * 1_000, PairParams(*SYMBOLS, window=10), warmup_bars=20, min_trades=2).shown()
    shown = page.pair.zscore.dropna()
    shown = shown[shown.index >= pd.Timestamp(min(observed, default=0), unit="ms", tz="UTC")]
    assert len(shown) > 20  # bars with a z-score the monitor had to see
    assert sorted(observed) == [int(ts.value // 1_000_000) for ts in shown.index]
    np.testing.assert_allclose([observed[int(ts.value // 1_000_000)] for ts in shown.index], shown.to_numpy(),
                               rtol=1e-9, atol=1e-12)


def test_the_backtest_trades_on_the_z_score_the_view_shows_for_each_bar(tmp_path):
    engine = FakeEngine()
    history = empty_history(tmp_path)
    shared = SharedAnalytics(engine, history)
    params = PairParams(*SYMBOLS, window=10)
    checked = 0
    for second, trades in enumerate(arrivals(Scenario(SECONDS, 5, p_y=0.95, p_x=0.9))[:SECONDS]):
        engine.feed(trades, T0_MS + (second + 1) * 1_000 + 600)
        view = shared.view(SYMBOLS, 1_000, 40_000, params, warmup_bars=20, min_trades=2)  # extended bar by bar
        closes, start = view.analysed_closes()
        if len(closes) < 20 or start >= len(closes):
            continue
        result = backtest_mean_reversion(closes[SYMBOLS[0]], closes[SYMBOLS[1]], 10, entry=2.0, start=start)
        shown = view.shown().pair.zscore
        pd.testing.assert_index_equal(result.zscore.index, shown.index)
        np.testing.assert_allclose(result.zscore.to_numpy(), shown.to_numpy(), rtol=1e-9, atol=1e-9)
        assert not result.position.iloc[0] and len(result.equity) == len(shown)  # nothing held from the warm-up
        checked += 1
    assert checked > 30 and shared.extended > 0
    # No bar of the lookback closed yet: a wait for data (shown as "needs … more"), not a refusal.
    with pytest.raises(InsufficientDataError, match=r"a bar from start on to trade\): needs \d+ observations"):
        backtest_mean_reversion(closes[SYMBOLS[0]], closes[SYMBOLS[1]], 10, start=len(closes))


def test_a_minute_bar_closed_by_the_clock_alone_is_in_the_next_view(tmp_path):
    """Was: views were keyed on the live bars' version, which a 1 s bar closing bumps; a 1 min bar
    closes when its minute (and the grace) has passed, with no 1 s bar closing then on a quiet feed.
    The view held from before the minute ended was served on: without the minute's bar, which a
    cold view has (and the alert monitor did not see it) until the next trade's second closed."""
    engine = FakeEngine()
    history = empty_history(tmp_path)
    shared = SharedAnalytics(engine, history)  # type: ignore[arg-type]
    params = PairParams(*SYMBOLS, window=10)  # rolling OLS: a view is cut and extended, never recomputed
    ask = dict(warmup_bars=params.warmup_bars)
    rng = np.random.default_rng(3)
    x = 100 * np.exp(np.cumsum(rng.normal(0, 1e-3, 15 * 40)))
    y = 2 * x + rng.normal(0, 0.05, len(x))
    for minute in range(15):  # each minute with trades in its first 40 s only
        for second in range(40):
            t, at = minute * 40 + second, T0_MS + minute * 60_000 + second * 1_000
            engine.feed([Trade(SYMBOLS[0], t + 1, at + 10, 0, float(y[t]), 0.1, False),
                         Trade(SYMBOLS[1], t + 1, at + 20, 0, float(x[t]), 0.1, False)], at + 600)
        engine.feed([], T0_MS + minute * 60_000 + 50_000)  # the minute's last 1 s bar closes (grace)
        held = shared.view(SYMBOLS, 60_000, 3_600_000, params, **ask)
        engine.feed([], T0_MS + (minute + 1) * 60_000 + 5_000)  # the minute is over: its bar closed, no trade
        cached = shared.view(SYMBOLS, 60_000, 3_600_000, params, **ask)
        cold = SharedAnalytics(engine, history).view(SYMBOLS, 60_000, 3_600_000, params,  # type: ignore[arg-type]
                                                     **ask)
        minute_bar = pd.Timestamp(T0_MS + minute * 60_000, unit="ms", tz="UTC")
        assert cold.bars.aligned is not None and cold.bars.aligned.index[-1] == minute_bar
        assert held.open_start_ms < cached.open_start_ms == cold.open_start_ms
        assert cached.bars.aligned is not None and cached.bars.aligned.index[-1] == minute_bar, f"minute {minute}"
        problem = view_mismatch(cached, cold)
        assert problem is None, f"minute {minute}: {problem}"


asks = st.lists(st.tuples(st.sampled_from([1_000, 1_000, 5_000]), st.integers(15, 60), st.sampled_from([0, 0, 2]),
                          st.sampled_from([10, 12]),
                          st.sampled_from([Regression.ROLLING_OLS, Regression.STATIC_OLS, Regression.KALMAN])),
                min_size=2, max_size=3)


# No shrinking: each example drives 90 seconds of bars; the failing one is printed as drawn.
@settings(max_examples=3, deadline=None, phases=[Phase.explicit, Phase.generate], derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(readers=asks, max_entries=st.sampled_from([2, 3, 32]), seed=st.integers(0, 2**16),
       order=st.randoms(use_true_random=False))
def test_readers_interleaved_in_any_order_each_get_the_cold_answer(tmp_path_factory, readers, max_entries, seed,
                                                                    order):
    """Sessions on other timeframes, lookbacks, filters and fits ask one cache in a random order
    (some seconds not at all), the cache small enough to evict: each answer is the cold one."""
    engine = FakeEngine()
    history = empty_history(tmp_path_factory.mktemp("site"))
    shared = SharedAnalytics(engine, history, max_entries=max_entries)  # type: ignore[arg-type]
    scenario = Scenario(90, seed, quiet_s=10, p_x=0.8, max_trades=3, x_pause_every=29, x_pause_len=6)
    for second, trades in enumerate(arrivals(scenario)[:scenario.seconds]):
        engine.feed(trades, T0_MS + (second + 1) * 1_000 + 600)
        for interval_ms, bars, min_trades, window, regression in order.sample(readers, order.randint(0, len(readers))):
            params = PairParams(*SYMBOLS, window=window, regression=regression)
            ask = dict(warmup_bars=params.warmup_bars, min_trades=min_trades)
            cached = shared.view(SYMBOLS, interval_ms, bars * interval_ms, params, **ask)
            cold = SharedAnalytics(engine, history).view(  # type: ignore[arg-type]
                SYMBOLS, interval_ms, bars * interval_ms, params, **ask)
            problem = view_mismatch(cached, cold)
            assert problem is None, f"second {second}, {interval_ms} ms × {bars}, {params}: {problem}"
