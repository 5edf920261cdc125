"""SimulatedSource: determinism, trade-level invariants, the statistics it promises, pacing."""

from __future__ import annotations

import itertools
import threading

import numpy as np
import pandas as pd
import pytest
from statsmodels.tsa.stattools import adfuller

from ingestion.simulated import (
    KNOWN_SYMBOLS,
    SPREAD_SD,
    SimulatedSource,
    symbol_spec,
)
from records import EventKind, FeedState, Trade, now_ms
from testkit.clocks import ManualClock
from testkit.sources import RecordingSink, assert_connected_then_stops_promptly, key
from testkit.waiting import eventually

START_MS = 1_765_000_000_000  # 2025-12-06T05:46:40Z, a fixed market start for reproducibility
HOURS = 4


@pytest.fixture(scope="module")
def market() -> tuple[SimulatedSource, list[Trade]]:
    """Four simulated hours of BTC/ETH (~260k trades, well under a second to generate)."""
    source = SimulatedSource(["BTCUSDT", "ETHUSDT"], seed=7, start_ms=START_MS)
    return source, list(source.generate(HOURS * 3600))


def one_second_closes(trades: list[Trade], symbol: str, n_seconds: int) -> np.ndarray:
    """Last price of each market second, carried forward over empty seconds (NaN before the first)."""
    ts = np.array([t.ts_ms for t in trades if t.symbol == symbol])
    price = np.array([t.price for t in trades if t.symbol == symbol])
    closes = np.full(n_seconds, np.nan)
    closes[(ts - START_MS) // 1000] = price  # fancy assignment: the last trade of a second wins
    return pd.Series(closes).ffill().to_numpy()


def test_same_seed_same_trades_different_seed_different() -> None:
    a = [key(t) for t in SimulatedSource(["BTCUSDT", "ETHUSDT"], seed=7, start_ms=START_MS).generate(600)]
    b = [key(t) for t in SimulatedSource(["btcusdt", "ETHUSDT"], seed=7, start_ms=START_MS).generate(600)]
    c = [key(t) for t in SimulatedSource(["BTCUSDT", "ETHUSDT"], seed=8, start_ms=START_MS).generate(600)]
    assert len(a) > 5_000
    assert a == b
    assert a != c
    # generate() of a shorter horizon is a prefix of a longer one: chunking does not depend on it.
    short = [key(t) for t in SimulatedSource(["BTCUSDT", "ETHUSDT"], seed=7, start_ms=START_MS).generate(90)]
    assert short == a[: len(short)]


def test_generate_until_ms_and_recv_equals_ts() -> None:
    source = SimulatedSource(["BTCUSDT", "ETHUSDT"], start_ms=START_MS)
    trades = list(source.generate(until_ms=START_MS + 5_000))
    assert trades and all(START_MS <= t.ts_ms < START_MS + 5_000 for t in trades)
    assert all(t.recv_ms == t.ts_ms for t in trades)


def test_ids_strictly_increasing_and_times_non_decreasing(market: tuple[SimulatedSource, list[Trade]]) -> None:
    _, trades = market
    assert all(a.ts_ms <= b.ts_ms for a, b in itertools.pairwise(trades))  # emitted in market-time order
    for symbol in ("BTCUSDT", "ETHUSDT"):
        ids = np.array([t.trade_id for t in trades if t.symbol == symbol])
        assert ids[0] == START_MS  # ids continue above any earlier run's (see _Market)
        assert np.all(np.diff(ids) == 1)  # sequential: no gaps for the gap detector to report


def test_prices_positive_on_tick_grid_and_quantities_on_lot_grid(
        market: tuple[SimulatedSource, list[Trade]]) -> None:
    _, trades = market
    for symbol in ("BTCUSDT", "ETHUSDT"):
        spec = KNOWN_SYMBOLS[symbol]
        price = np.array([t.price for t in trades if t.symbol == symbol])
        qty = np.array([t.qty for t in trades if t.symbol == symbol])
        assert np.all(price > 0)
        ticks = price * 10**spec.tick_decimals
        assert np.max(np.abs(ticks - np.round(ticks))) < 1e-6
        lots = qty * 10**spec.lot_decimals
        assert np.max(np.abs(lots - np.round(lots))) < 1e-6
        assert np.all(qty >= 10.0**-spec.lot_decimals)
        # Starts near the documented level and stays plausible for a 55-70 % vol asset over 4 h.
        assert 0.9 < price[0] / spec.start_price < 1.1
        assert price.min() / spec.start_price > 0.8
        assert price.max() / spec.start_price < 1.25
    makers = np.array([t.buyer_is_maker for t in trades])
    assert 0.48 < makers.mean() < 0.52


def test_realised_volatility_of_base(market: tuple[SimulatedSource, list[Trade]]) -> None:
    _, trades = market
    closes = one_second_closes(trades, "BTCUSDT", HOURS * 3600)
    returns = np.diff(np.log(closes[60:]))  # skip the first minute in case of leading NaNs
    annualised = returns.std() * np.sqrt(365 * 24 * 3600)
    # 55 % latent volatility plus a little bid/ask bounce (one 0.01 tick on 90k is negligible).
    assert 0.45 < annualised < 0.65


def test_arrival_rates_are_poisson_at_the_configured_rate(market: tuple[SimulatedSource, list[Trade]]) -> None:
    _, trades = market
    seconds = HOURS * 3600
    for symbol in ("BTCUSDT", "ETHUSDT"):
        rate = KNOWN_SYMBOLS[symbol].rate_per_s
        ts = np.array([t.ts_ms for t in trades if t.symbol == symbol])
        # Count over 4 h at 10/s: sd ≈ 0.26 %; 2 % is > 7 sd and still catches a wrong rate.
        assert len(ts) / seconds == pytest.approx(rate, rel=0.02)
        per_second = np.bincount((ts - START_MS) // 1000, minlength=seconds)
        dispersion = per_second.var() / per_second.mean()  # 1 for Poisson counts
        assert 0.9 < dispersion < 1.1
        gaps_s = np.diff(ts) / 1000.0
        assert np.mean(gaps_s > 1.0 / rate) == pytest.approx(np.exp(-1.0), abs=0.02)  # exponential gaps


def test_pair_is_cointegrated_on_one_second_bars(market: tuple[SimulatedSource, list[Trade]]) -> None:
    _, trades = market
    n = HOURS * 3600
    lx = np.log(one_second_closes(trades, "BTCUSDT", n))
    ly = np.log(one_second_closes(trades, "ETHUSDT", n))
    ok = ~(np.isnan(lx) | np.isnan(ly))
    beta, alpha = np.polyfit(lx[ok], ly[ok], 1)
    residual = ly[ok] - alpha - beta * lx[ok]
    assert 0.5 < beta < 2.0  # true beta starts at 1.15 and moves a little at each break
    phi = np.polyfit(residual[:-1], residual[1:], 1)[0]
    assert phi < 0.999  # 1-s AR(1): half-life of minutes, not a random walk
    adf_stat, p_value = adfuller(residual, maxlag=1, autolag=None, result_object=False)[:2]
    assert p_value < 0.05, (adf_stat, p_value)


def test_regime_breaks_occur_and_shift_the_relation(market: tuple[SimulatedSource, list[Trade]]) -> None:
    source, trades = market
    breaks = source.regime_breaks
    # Mean interval 45 min → about 5 in 4 h for the single non-base symbol.
    assert 1 <= len(breaks) <= 15
    assert all(b.symbol == "ETHUSDT" and START_MS < b.ts_ms < START_MS + HOURS * 3_600_000 for b in breaks)
    assert [b.ts_ms for b in breaks] == sorted(b.ts_ms for b in breaks)
    for before, after in itertools.pairwise(breaks):
        assert after.intercept_before == before.intercept_after and after.beta_before == before.beta_after
    assert all(b.intercept_after != b.intercept_before and b.beta_after != b.beta_before for b in breaks)

    n = HOURS * 3600
    lx = np.log(one_second_closes(trades, "BTCUSDT", n))
    ly = np.log(one_second_closes(trades, "ETHUSDT", n))

    def mean_spread(start_s: int, stop_s: int, intercept: float, beta: float) -> float:
        window = slice(max(start_s, 60), min(stop_s, n))
        return float(np.nanmean(ly[window] - intercept - beta * lx[window]))

    edges = [(b.ts_ms - START_MS) // 1000 for b in breaks]
    visible = 0
    for k, brk in enumerate(breaks):
        at = edges[k]
        settled_from = edges[k - 1] + 600 if k else 0  # 5 half-lives after the previous break
        following = edges[k + 1] if k + 1 < len(edges) else n
        # Before the break the old relation holds...
        if at - settled_from > 300:
            old_fit = mean_spread(max(settled_from, at - 900), at, brk.intercept_before, brk.beta_before)
            assert abs(old_fit) < 2 * SPREAD_SD
        # ...and once the spread has re-converged (>= 5 half-lives later) the new one does.
        if following - at > 1_200:
            new_fit = mean_spread(at + 600, following, brk.intercept_after, brk.beta_after)
            old_fit = mean_spread(at + 600, following, brk.intercept_before, brk.beta_before)
            assert abs(new_fit) < 2 * SPREAD_SD
            if abs(old_fit - new_fit) > 2 * SPREAD_SD:  # a break big enough to see in the prices
                visible += 1
                assert abs(old_fit) > abs(new_fit)
    assert visible >= 1  # seed 7 has one; the check above must not pass vacuously


def test_unknown_symbols_get_deterministic_defaults() -> None:
    spec = symbol_spec("FOOUSDT")
    assert spec == symbol_spec("FOOUSDT")
    assert 50 <= spec.start_price <= 200
    assert 10.0**-spec.tick_decimals == pytest.approx(1e-4 * 10 ** np.floor(np.log10(spec.start_price)))
    source = SimulatedSource(["BTCUSDT", "ETHUSDT", "FOOUSDT"], seed=3, start_ms=START_MS)
    foo = [t for t in source.generate(300) if t.symbol == "FOOUSDT"]
    assert len(foo) / 300 == pytest.approx(spec.rate_per_s, rel=0.3)
    assert [t.trade_id for t in foo] == list(range(START_MS, START_MS + len(foo)))
    ticks = np.array([t.price for t in foo]) * 10**spec.tick_decimals
    assert np.max(np.abs(ticks - np.round(ticks))) < 1e-6


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"symbols": ["BTCUSDT"]}, "at least 2"),
        ({"symbols": ["BTCUSDT", "btcusdt"]}, "at least 2"),
        ({"symbols": ["BTCUSDT", "ETH;DROP"]}, "invalid symbol"),
        ({"symbols": ["BTCUSDT", "ETHUSDT"], "speed": 0}, "speed"),
        ({"symbols": ["BTCUSDT", "ETHUSDT"], "speed": float("nan")}, "speed"),
    ],
)
def test_bad_arguments_raise(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        SimulatedSource(**kwargs)  # type: ignore[arg-type]  # bad arguments on purpose



def test_label_and_defaults() -> None:
    before = now_ms()
    source = SimulatedSource(["BTCUSDT", "ETHUSDT"])
    assert source.name == "simulated"
    assert source.label == "SIMULATED market (seed 7)"
    assert before <= source.start_ms <= now_ms()  # default: live-looking market time
    assert source.stats.state is FeedState.IDLE


def run_in_thread(source: SimulatedSource, sink: RecordingSink, stop: threading.Event) -> threading.Thread:
    thread = threading.Thread(target=source.run, args=(sink, stop), daemon=True)
    thread.start()
    return thread


def test_run_emits_the_generated_trades_and_stops_promptly() -> None:
    source = SimulatedSource(["BTCUSDT", "ETHUSDT"], seed=7, speed=1_000.0, start_ms=START_MS)
    sink, stop = RecordingSink(), threading.Event()
    thread = run_in_thread(source, sink, stop)
    eventually(lambda: len(sink.trades) >= 2_000)
    assert_connected_then_stops_promptly(source, thread, stop)
    emitted = sink.trades
    assert source.stats.messages == len(emitted)
    assert source.stats.last_message_mono is not None
    # Pacing never changes the content: run() emitted a prefix of generate().
    expected = [key(t) for t in itertools.islice(SimulatedSource(
        ["BTCUSDT", "ETHUSDT"], seed=7, start_ms=START_MS).generate(), len(emitted))]
    assert [key(t) for t in emitted] == expected
    assert all(t.recv_ms >= START_MS for t in emitted)  # recv_ms is the wall clock, not market time
    kinds = [e.kind for e in sink.events]
    assert kinds == [EventKind.STARTED, EventKind.STOPPED]
    assert "seed=7" in sink.events[0].detail


def test_run_paces_market_time_against_the_wall_clock() -> None:
    speed = 20.0
    clock = ManualClock()
    source = SimulatedSource(["BTCUSDT", "ETHUSDT"], speed=speed, clock=clock)  # start_ms = the clock's now
    wall_start = clock.now_ms()
    assert source.start_ms == wall_start
    sink, stop = RecordingSink(), threading.Event()
    thread = run_in_thread(source, sink, stop)
    eventually(lambda: len(sink.trades) >= 100)
    stop.set()
    thread.join(timeout=5.0)
    assert not thread.is_alive()
    for trade in sink.trades:
        market_elapsed_ms = trade.ts_ms - source.start_ms
        wall_elapsed_ms = trade.recv_ms - wall_start
        # Each trade goes out when the clock reaches its scaled market time: never ahead of it,
        # and not behind it either (1 ms: the clock's rounding to whole milliseconds).
        assert abs(market_elapsed_ms / speed - wall_elapsed_ms) <= 1


def test_adding_a_symbol_keeps_the_market_going_without_gaps_or_jumps() -> None:
    """A dashboard tab that watches one more symbol must not restart the market the others watch."""
    source = SimulatedSource(["BTCUSDT", "ETHUSDT"], seed=7, start_ms=START_MS)
    trades = source.generate(seconds=600)
    before = list(itertools.islice(trades, 2_000))
    source.set_symbols(["BTCUSDT", "ETHUSDT", "SOLUSDT"])
    after = list(itertools.islice(trades, 3_000))
    assert source.symbols == ("BTCUSDT", "ETHUSDT", "SOLUSDT")
    assert {t.symbol for t in after} == {"BTCUSDT", "ETHUSDT", "SOLUSDT"}
    assert after[0].ts_ms >= before[-1].ts_ms
    for symbol in ("BTCUSDT", "ETHUSDT"):
        old = [t for t in before if t.symbol == symbol]
        new = [t for t in after if t.symbol == symbol]
        assert new[0].trade_id == old[-1].trade_id + 1  # ids continue: no gap for the engine to report
        assert abs(new[0].price / old[-1].price - 1) < 0.002  # the price carries on from where it was
    sol = [t for t in after if t.symbol == "SOLUSDT"]
    assert sol and all(b.trade_id == a.trade_id + 1 for a, b in itertools.pairwise(sol))
    with pytest.raises(ValueError, match="at least 2 distinct symbols"):
        source.set_symbols(["BTCUSDT"])
