"""Pair analytics computed once per (pair, parameters, closed bar) and shared by pages and the alert monitor."""

from __future__ import annotations

import threading

import numpy as np
import pandas as pd
import pytest

from analytics import half_life
from config import Settings
from domain import Regression
from pairs.bars import with_open_bar
from pairs.compute import PairParams, compute_pair
from pairs.shared import forming_bar_start
from records import Trade, now_ms
from service import Service
from testkit.sources import ListSource
from testkit.waiting import eventually


@pytest.fixture
def service(tmp_path):
    """A feed that has delivered a minute of both legs (one trade per second each), then idles."""
    start = (now_ms() - 70_000) // 1_000 * 1_000
    rng = np.random.default_rng(1)
    x = 100 * np.exp(np.cumsum(rng.normal(0, 1e-3, 60)))
    y = 2 * x + rng.normal(0, 0.05, 60)
    trades = []
    for i in range(60):
        trades.append(Trade("BTCUSDT", i + 1, start + i * 1_000, 0, float(x[i]), 0.1, False))
        trades.append(Trade("ETHUSDT", i + 1, start + i * 1_000 + 10, 0, float(y[i]), 0.1, False))
    svc = Service.start(Settings.of(source="binance", data_dir=tmp_path, history_hours=0, backfill_max_trades=0),
                        source=ListSource(trades))
    eventually(lambda: svc.engine.trades == 120, timeout=10)
    yield svc
    svc.stop()


PARAMS = PairParams("ETHUSDT", "BTCUSDT", window=10)


def test_many_readers_of_one_closed_bar_cost_one_computation(service):
    shared = service.shared
    views = []
    threads = [threading.Thread(target=lambda: views.append(shared.view(("ETHUSDT", "BTCUSDT"), 1_000, 50_000,
                                                                         PARAMS, warmup_bars=20)))
               for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(views) == 8 and shared.computed == 1 and shared.served == 7
    # The very same series (a view asked for a second later is the same one, cut where its lookback starts).
    same_second = [v for v in views if v.bars.shown_from == views[0].bars.shown_from]
    assert all(v.pair.zscore is views[0].pair.zscore for v in same_second)
    first = views[0].pair.zscore
    assert all(v.pair.zscore.loc[common].equals(first.loc[common])
               for v in views if len(common := v.pair.zscore.index.intersection(first.index)) > 40)
    # A different threshold only draws different lines: still the same computation.
    again = shared.view(("ETHUSDT", "BTCUSDT"), 1_000, 50_000, PairParams("ETHUSDT", "BTCUSDT", window=10,
                                                                          z_threshold=2.5), warmup_bars=20)
    assert shared.computed == 1 and again.pair.params.z_threshold == 2.5
    # Other parameters are another computation.
    shared.view(("ETHUSDT", "BTCUSDT"), 1_000, 50_000, PairParams("ETHUSDT", "BTCUSDT", window=20), warmup_bars=20)
    assert shared.computed == 2


def test_a_shorter_span_is_cut_from_a_longer_one_with_the_same_rolling_values(service):
    shared = service.shared
    long = shared.view(("ETHUSDT", "BTCUSDT"), 1_000, 55_000, PARAMS, warmup_bars=0)
    short = shared.view(("ETHUSDT", "BTCUSDT"), 1_000, 45_000, PARAMS, warmup_bars=0)  # e.g. the alert monitor
    assert shared.computed == 1
    direct = compute_pair(short.bars.closes(), PARAMS)
    assert short.pair.index.equals(direct.index) and short.pair.index[0] >= long.pair.index[0]
    defined = direct.zscore.notna()
    assert defined.sum() >= 5
    np.testing.assert_allclose(short.pair.zscore[defined], direct.zscore[defined], rtol=1e-9)
    np.testing.assert_allclose(short.pair.beta[direct.beta.notna()], direct.beta.dropna(), rtol=1e-9)
    # A whole-span statistic is fitted again on the cut (its spread is defined from the cut's first bar).
    assert short.pair.half_life == half_life(short.pair.spread.dropna())
    # In-sample fits depend on where the span starts: never cut from another span.
    static = PairParams("ETHUSDT", "BTCUSDT", window=10, regression=Regression.STATIC_OLS)
    shared.view(("ETHUSDT", "BTCUSDT"), 1_000, 55_000, static)
    shared.view(("ETHUSDT", "BTCUSDT"), 1_000, 45_000, static)
    assert shared.computed == 3


def test_views_hold_closed_bars_and_the_page_adds_the_forming_one(service):
    engine = service.engine
    view = service.shared.view(("ETHUSDT", "BTCUSDT"), 1_000, 60_000, PARAMS)
    assert view.open_start_ms == forming_bar_start(engine, ("ETHUSDT", "BTCUSDT"), 1_000, engine.market_now_ms())
    assert view.bars.aligned.index[-1] < pd.Timestamp(view.open_start_ms, unit="ms", tz="UTC")
    assert view.bars.open_bar_start is None
    shown = with_open_bar(view.bars, engine, view.open_start_ms)
    if engine.bars.open_bar("ETHUSDT") is not None:  # the last second may already have closed (grace)
        assert shown.open_bar_start == pd.Timestamp(view.open_start_ms, unit="ms", tz="UTC")
        assert len(shown.aligned.index) == len(view.bars.aligned.index) + 1


def test_the_alert_monitor_reads_the_same_computation_as_the_page(service):
    shared = service.shared
    page = shared.view(("ETHUSDT", "BTCUSDT"), 1_000, 60_000, PARAMS, warmup_bars=20)
    before = shared.computed
    lookback = (2 * PARAMS.window + 5) * 1_000  # what the monitor asks for a rule with this window
    monitor = shared.view(("ETHUSDT", "BTCUSDT"), 1_000, lookback, PARAMS)
    assert shared.computed == before
    assert monitor.pair.zscore.iloc[-1] == page.pair.zscore.iloc[-1]


def test_cutting_a_view_keeps_each_series_own_rows_between_start_and_end():
    from pairs.bars import dataset_pair_bars

    rng = np.random.default_rng(4)
    index = pd.date_range("2025-01-01", periods=120, freq="1s", tz="UTC")
    frames = {name: pd.DataFrame({"open": c, "high": c, "low": c, "close": c, "volume": 1.0}, index=index)
              for name, c in {"AAAUSDT": 100 + rng.normal(size=120).cumsum(),
                              "BBBUSDT": 50 + rng.normal(size=120).cumsum()}.items()}
    bars = dataset_pair_bars(frames, 1_000)
    pair = compute_pair(bars.aligned.closes, PairParams("AAAUSDT", "BBBUSDT", window=10))
    assert len(pair.correlation) == len(pair.index) - 1  # returns: one bar later than the closes
    half = pd.Timedelta(milliseconds=500)
    for start, end in [(index[30], index[90]), (index[30] + half, index[90] + half), (None, index[5]),
                       (index[100], None), (index[0] - half, index[-1] + half), (index[-1] + half, None),
                       (index[60], index[40])]:
        cut, cut_bars = pair.since(start, end), bars.since(start, end)

        def expected(series: pd.Series, start=start, end=end) -> pd.Series:  # what a boolean mask keeps
            keep = np.ones(len(series), dtype=bool) if start is None else series.index >= start
            return series[keep & (True if end is None else series.index < end)]

        for name in ("y", "x", "beta", "alpha", "spread", "spread_mean", "spread_std", "zscore", "correlation"):
            pd.testing.assert_series_equal(getattr(cut, name), expected(getattr(pair, name)), obj=name)
        pd.testing.assert_index_equal(cut.index, expected(pair.y).index)
        pd.testing.assert_frame_equal(cut_bars.aligned.closes, bars.aligned.closes.loc[expected(pair.y).index])
        for symbol, frame in cut_bars.by_symbol.items():
            whole = bars.by_symbol[symbol]
            pd.testing.assert_frame_equal(frame, whole.loc[expected(whole["close"]).index])


def test_a_closed_bar_extends_the_shared_view_which_equals_computing_the_whole(tmp_path):
    from pairs.bars import load_pair_bars
    from testkit.sources import PhasedSource

    source = PhasedSource()
    start = (now_ms() - 400_000) // 1_000 * 1_000
    rng = np.random.default_rng(5)
    x = 100 * np.exp(np.cumsum(rng.normal(0, 1e-3, 300)))
    y = 2 * x + rng.normal(0, 0.05, 300)

    ids = {"BTCUSDT": 0, "ETHUSDT": 0}

    def trade(symbol: str, second: int, price: float) -> Trade:
        ids[symbol] += 1
        return Trade(symbol, ids[symbol], start + second * 1_000 + (10 if symbol == "ETHUSDT" else 0), 0, price,
                     0.1, False)

    def seconds(first: int, last: int, *, quiet_eth: bool = False, eth: bool = True) -> list[Trade]:
        trades = []
        for i in range(first, last):
            trades.append(trade("BTCUSDT", i, float(x[i])))
            if eth and not (quiet_eth and i % 3):  # quiet: every third second only, its close carried between
                trades.append(trade("ETHUSDT", i, float(y[i])))
        return trades

    svc = Service.start(Settings.of(source="binance", data_dir=tmp_path, history_hours=0, backfill_max_trades=0),
                        source=source)
    try:
        shared, params, symbols = svc.shared, PairParams("ETHUSDT", "BTCUSDT", window=20), ("ETHUSDT", "BTCUSDT")

        def view():
            return shared.view(symbols, 1_000, 600_000, params, warmup_bars=40)

        def released(trades: list[Trade]) -> None:
            target = svc.engine.trades + len(trades)
            source.release(trades)
            eventually(lambda: svc.engine.trades == target, timeout=10)

        released(seconds(0, 150))
        first = view()
        assert shared.computed == 1 and shared.extended == 0 and len(first.pair.index) > 100
        released(seconds(150, 200, quiet_eth=True))
        extended = view()
        assert shared.computed == 1 and shared.extended == 1
        assert extended.pair.index[-1] > first.pair.index[-1] and len(shared._cache) == 1  # the old one dropped
        since = int(extended.bars.aligned.index[0].value // 1_000_000)
        bars = load_pair_bars(svc.engine, svc.history, symbols, 1_000, 10**9, closed_before_ms=extended.open_start_ms)
        whole = bars.since(pd.Timestamp(since, unit="ms", tz="UTC"))
        pd.testing.assert_frame_equal(extended.bars.aligned.closes, whole.aligned.closes, check_freq=False)
        pd.testing.assert_frame_equal(extended.bars.aligned.filled, whole.aligned.filled, check_freq=False)
        assert extended.bars.aligned.filled["ETHUSDT"].iloc[-40:].sum() > 20
        direct = compute_pair(bars.closes(), params).since(pd.Timestamp(since, unit="ms", tz="UTC"))
        for name in ("beta", "spread", "zscore", "correlation"):
            pd.testing.assert_series_equal(getattr(extended.pair, name), getattr(direct, name), rtol=1e-9,
                                           check_freq=False, obj=name)
        # A bar that starts before the last aligned one (ETH's trade of second 205 arrives after BTC's
        # of 209) is put where it belongs by a whole computation.
        released(seconds(200, 210, eth=False))
        assert view().pair.index[-1] == pd.Timestamp(start + 209_000, unit="ms", tz="UTC")
        assert shared.extended == 2
        released([trade("ETHUSDT", 205, float(y[205])), *seconds(210, 212)])
        late = view()
        assert shared.computed == 2 and shared.extended == 2
        assert not late.bars.aligned.filled.loc[pd.Timestamp(start + 205_000, unit="ms", tz="UTC"), "ETHUSDT"]
        # An in-sample fit moves with every bar: computed whole again, never extended.
        static = PairParams("ETHUSDT", "BTCUSDT", window=20, regression=Regression.STATIC_OLS)
        shared.view(symbols, 1_000, 600_000, static, warmup_bars=40)
        released(seconds(212, 220))
        shared.view(symbols, 1_000, 600_000, static, warmup_bars=40)
        assert shared.computed == 4 and shared.extended == 2
    finally:
        svc.stop()


def test_a_slow_computation_holds_up_only_the_readers_of_its_own_series(service, monkeypatch):
    import pairs.shared

    slow = PairParams("ETHUSDT", "BTCUSDT", window=10, regression=Regression.KALMAN)
    entered, release = threading.Event(), threading.Event()
    real = pairs.shared.compute_pair

    def compute(closes, params):
        if params.regression == slow.regression:  # e.g. the Kalman filter over a day of 1 s bars
            entered.set()
            assert release.wait(10)
        return real(closes, params)

    monkeypatch.setattr(pairs.shared, "compute_pair", compute)
    shared, symbols = service.shared, ("ETHUSDT", "BTCUSDT")
    views = {}
    kalman = threading.Thread(target=lambda: views.update(kalman=shared.view(symbols, 1_000, 50_000, slow)))
    kalman.start()
    try:
        assert entered.wait(10)
        # Another series is computed while the slow one is still running (it used to wait for it).
        views["ols"] = shared.view(symbols, 1_000, 50_000, PARAMS)
        assert views["ols"].pair.zscore is not None and kalman.is_alive() and "kalman" not in views
    finally:
        release.set()
        kalman.join(10)
    assert views["kalman"].pair.beta is not None and shared.computed == 2
