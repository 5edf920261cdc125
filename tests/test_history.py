"""History at open: Binance klines (against a loopback fake), the simulated past, the loader, the merge."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pandas as pd
import pytest

from config import Settings
from ingestion.binance.rest import BinanceRest, RestError, parse_klines
from ingestion.history import HistoryLoader, plan
from ingestion.simulated import SimulatedSource
from pairs.bars import load_pair_bars, merge_bars
from pairs.compute import PairParams, compute_pair
from records import Trade, now_ms
from service import Service
from storage.sqlite.ticks import SqliteTickStore
from testkit.clocks import ManualClock
from testkit.fake_binance import FakeBinance
from testkit.fake_rest import FakeKlines, FakeRest
from testkit.sources import ListSource
from testkit.waiting import eventually, in_thread

MINUTE = 60_000
NOW = 1_765_000_000_000 // MINUTE * MINUTE  # on every grid
PRICES = {"BTCUSDT": 90_000.0, "ETHUSDT": 3_100.0}
T0 = 1_800_000_000  # a manual clock's start, epoch seconds
ASKED = {"start_ms": NOW - 5 * MINUTE, "end_ms": NOW}  # the range a page of the parsing tests was asked for


def kline(open_ms: int, interval_ms: int = MINUTE, *, close: str = "100.5", trades: int = 7,
          scale: int = 1) -> list:
    return [open_ms * scale, "100.0", "101.0", "99.0", close, "2.0", (open_ms + interval_ms) * scale - 1, "201.0",
            trades, "1.0", "100.5", "0"]


# ------------------------------------------------------------------------ parsing
def test_klines_parse_to_closed_bars_and_the_open_one_is_left_out():
    rows = [kline(NOW - 2 * MINUTE), kline(NOW - MINUTE), kline(NOW)]
    bars = parse_klines(rows, "BTCUSDT", MINUTE, now=NOW + 10_000, start_ms=NOW - 2 * MINUTE,
                        end_ms=NOW + MINUTE)  # the last one closes after "now"
    assert list(bars.start_ms) == [NOW - 2 * MINUTE, NOW - MINUTE]
    assert list(bars.close) == [100.5, 100.5] and list(bars.trades) == [7, 7] and bars.trades.dtype == np.int64
    assert bars.vwap[0] == pytest.approx(100.5)  # quote volume / volume


def test_microsecond_times_are_converted_and_ragged_ones_refused():
    bars = parse_klines([kline(NOW - MINUTE, scale=1_000)], "BTCUSDT", MINUTE, now=NOW, **ASKED)
    assert list(bars.start_ms) == [NOW - MINUTE]
    ragged = kline(NOW - MINUTE, scale=1_000)
    ragged[0] += 7
    with pytest.raises(RestError, match="microseconds and not on a whole millisecond"):
        parse_klines([ragged], "BTCUSDT", MINUTE, now=NOW, **ASKED)


@pytest.mark.parametrize(("row", "match"), [
    ([1, 2, 3], "is not a 12-field row"),
    (kline(NOW - MINUTE, close="abc"), "non-numeric price or volume"),
    (kline(NOW - MINUTE, close="200.0"), "not a valid OHLCV bar"),  # close above the high
    (kline(NOW - MINUTE, trades=-1), "invalid trade count"),
    (kline(NOW - MINUTE + 1), "do not span one 1m bar"),
    (kline(NOW - MINUTE, 5 * MINUTE), "do not span one 1m bar"),
])
def test_malformed_klines_are_refused_naming_the_row(row, match):
    with pytest.raises(RestError, match=rf"BTCUSDT 1m kline #1.*{match}|{match}"):
        parse_klines([kline(NOW - 2 * MINUTE), row], "BTCUSDT", MINUTE, now=NOW, **ASKED)


# ------------------------------------------------------------------------ the REST client
def test_paging_past_the_1000_row_limit_within_the_weight_budget():
    with FakeRest(klines=FakeKlines(PRICES)) as rest:
        client = BinanceRest(rest.url)
        end = now_ms() // MINUTE * MINUTE
        bars = client.klines("BTCUSDT", 1_000, end - 2_500_000, end, threading.Event())
    assert len(bars) == 2_500 and np.all(np.diff(bars.start_ms) == 1_000)
    assert [int(r["startTime"]) for r in rest.requests] == [end - 2_500_000, end - 1_500_000, end - 500_000]
    assert {r["limit"] for r in rest.requests} == {"1000"} and rest.used_weight == 6


def test_429_waits_for_retry_after_then_succeeds():
    clock = ManualClock(T0)
    with FakeRest(klines=FakeKlines(PRICES)) as rest:
        rest.faults.append((429, "1"))
        client = BinanceRest(rest.url, clock=clock, poll_s=0.002)
        end = now_ms() // MINUTE * MINUTE
        caller, got = in_thread(client.klines, "ETHUSDT", MINUTE, end - 30 * MINUTE, end, threading.Event())
        eventually(lambda: client.banned_until_ms == (T0 + 1) * 1000)
        clock.advance(0.9)  # a tenth of a second before Retry-After has passed: no second request yet
        reads = clock.reads
        # The caller looked at the clock again meanwhile (or, wrongly, went ahead and finished).
        eventually(lambda: clock.reads >= reads + 10 or not caller.is_alive())
        assert len(rest.requests) == 1 and caller.is_alive(), "the ban was left before Retry-After had passed"
        clock.advance(0.1)
        caller.join(10)
    assert not caller.is_alive() and "error" not in got
    assert len(got["result"]) == 30 and len(rest.requests) == 2
    assert "429" in client.last_error


def test_an_unknown_symbol_is_named_plainly():
    with FakeRest(klines=FakeKlines(PRICES)) as rest, \
            pytest.raises(RestError, match="Binance does not know the symbol FOOUSDT"):
        BinanceRest(rest.url).klines("FOOUSDT", MINUTE, NOW - MINUTE, NOW, threading.Event())


def test_microsecond_replies_give_the_same_bars():
    origin = now_ms()
    with FakeRest(klines=FakeKlines(PRICES, origin_ms=origin)) as ms, \
            FakeRest(klines=FakeKlines(PRICES, origin_ms=origin, micros=True)) as us:
        end = origin // MINUTE * MINUTE
        a = BinanceRest(ms.url).klines("BTCUSDT", MINUTE, end - 90 * MINUTE, end, threading.Event())
        b = BinanceRest(us.url).klines("BTCUSDT", MINUTE, end - 90 * MINUTE, end, threading.Event())
    assert len(a) == 90 and all(np.array_equal(getattr(a, c), getattr(b, c)) for c in ("start_ms", *a.COLUMNS))


# ------------------------------------------------------------------------ the loader
def test_the_loader_fills_the_default_lookbacks_and_a_restart_only_the_hole(tmp_path):
    path = tmp_path / "live.sqlite3"
    origin = now_ms()
    with FakeRest(klines=FakeKlines(PRICES, origin_ms=origin)) as rest:
        loader = HistoryLoader(BinanceRest(rest.url), lambda: SqliteTickStore(path), plan(4))
        loader.start(["BTCUSDT", "ETHUSDT"])
        eventually(lambda: not loader.progress.loading and loader.progress.total == 6, timeout=30)
        loader.stop()
        first_requests = len(rest.requests)
        assert loader.progress.errors == ()
        with SqliteTickStore(path) as store:
            minute = store.bars("BTCUSDT", MINUTE)
            assert 239 <= len(minute) <= 240 and np.all(np.diff(minute.start_ms) == MINUTE)
            # 1 s bars: the last hour only (+1: the bar open at load time is fetched again once it closed)
            assert 3_599 <= len(store.bars("ETHUSDT", 1_000)) <= 3_601
            assert 47 <= len(store.bars("ETHUSDT", 300_000)) <= 48
        # 2 symbols × (1 h of 1 s bars: 4 pages + 4 h of 1 m: 1 page + 4 h of 5 m: 1 page), 2 weight each
        by_interval = {i: sum(r["interval"] == i for r in rest.requests) for i in ("1s", "1m", "5m")}
        assert by_interval["1m"] == 2 and by_interval["5m"] == 2 and 8 <= by_interval["1s"] <= 10
        assert rest.used_weight == 2 * first_requests
        # A restart "later" (a wider lookback here) loads only what the database lacks.
        again = HistoryLoader(BinanceRest(rest.url), lambda: SqliteTickStore(path), plan(6))
        again.start(["BTCUSDT"])
        eventually(lambda: not again.progress.loading, timeout=30)
        again.stop()
        later = [r for r in rest.requests[first_requests:] if r["interval"] == "1m"]
        # Only before what is stored, or after it (bars that closed since): nothing stored is fetched again.
        assert later and all(int(r["endTime"]) < minute.start_ms[0] or int(r["startTime"]) > minute.start_ms[-1]
                             for r in later)
        with SqliteTickStore(path) as store:
            assert 359 <= len(store.bars("BTCUSDT", MINUTE)) <= 360


def test_only_a_range_that_stored_bars_moves_the_version_of_its_bar_length(tmp_path):
    """Readers re-read stored bars and charts redraw whole when the version moves: a range with nothing new,
    or bars of another length, must not move it."""
    path = tmp_path / "live.sqlite3"
    origin = now_ms() // MINUTE * MINUTE  # on the grid: no open bar to fetch again later
    with FakeRest(klines=FakeKlines(PRICES, origin_ms=origin)) as rest:
        for expected_version in (1, 0):  # the second loader finds the hour already stored
            loader = HistoryLoader(BinanceRest(rest.url), lambda: SqliteTickStore(path), {MINUTE: 3_600_000},
                                   clock=lambda: origin)
            loader.start(["BTCUSDT"])
            eventually(lambda current=loader: not current.progress.loading and current.progress.done == 1,
                       timeout=30)
            loader.stop()
            assert loader.version_of(MINUTE) == expected_version and loader.progress.errors == ()
            assert loader.version_of(1_000) == 0  # other bar lengths' readers keep what they have


def test_a_failed_range_changes_no_stored_data_and_is_reported(tmp_path):
    path = tmp_path / "live.sqlite3"
    with FakeRest(klines=FakeKlines(PRICES, malformed=["ETHUSDT"])) as rest:
        loader = HistoryLoader(BinanceRest(rest.url), lambda: SqliteTickStore(path), {MINUTE: 3_600_000})
        loader.start(["BTCUSDT", "ETHUSDT", "FOOUSDT"])
        eventually(lambda: not loader.progress.loading and loader.progress.done == 3, timeout=30)
        loader.stop()
    errors = loader.progress.errors
    assert any("ETHUSDT 1m" in e and "kline #1" in e for e in errors), errors
    assert any("Binance does not know the symbol FOOUSDT" in e for e in errors), errors
    with SqliteTickStore(path) as store:
        assert len(store.bars("BTCUSDT", MINUTE)) >= 59
        assert len(store.bars("ETHUSDT", MINUTE)) == 0 and len(store.bars("FOOUSDT", MINUTE)) == 0


# ------------------------------------------------------------------------ merge precedence
def frame(starts: list[int], trades: list[int], close: float) -> pd.DataFrame:
    index = pd.DatetimeIndex(pd.to_datetime(starts, unit="ms", utc=True), name="start")
    n = len(starts)
    return pd.DataFrame({"open": [close] * n, "high": [close] * n, "low": [close] * n, "close": [close] * n,
                         "volume": [1.0] * n, "trades": np.array(trades, dtype=np.int64), "vwap": [close] * n},
                        index=index)


def test_tick_bars_win_where_the_recorder_saw_the_whole_bar():
    stored = frame([0, MINUTE, 2 * MINUTE, 3 * MINUTE], [5, 5, 5, 5], close=1.0)
    ticks = frame([MINUTE, 2 * MINUTE, 3 * MINUTE, 4 * MINUTE], [2, 5, 6, 1], close=2.0)  # joined half-way at 1m
    merged = merge_bars(ticks, stored)
    assert list(merged.index.as_unit("ms").asi8) == [0, MINUTE, 2 * MINUTE, 3 * MINUTE, 4 * MINUTE]
    assert list(merged["close"]) == [1.0, 1.0, 2.0, 2.0, 2.0]  # stored, stored (partial), ticks, ticks, open bar
    assert list(merged["trades"]) == [5, 5, 5, 6, 1] and merged["trades"].dtype == np.int64
    assert merge_bars(ticks, stored.iloc[:0]) is ticks and merge_bars(ticks.iloc[:0], stored) is stored


# ------------------------------------------------------------------------ the simulated past
def test_the_simulated_past_ends_where_the_market_starts():
    start = NOW + 12_345
    source = SimulatedSource(["BTCUSDT", "ETHUSDT"], seed=7, start_ms=start, past_ms=4 * 3_600_000)
    stop = threading.Event()
    minute = source.klines("ETHUSDT", MINUTE, start - 4 * 3_600_000, start, stop)
    assert len(minute) == 239 and minute.start_ms[-1] == start - start % MINUTE - MINUTE
    first_live = next(t for t in source.generate(seconds=60) if t.symbol == "ETHUSDT")
    assert abs(minute.close[-1] / first_live.price - 1) < 0.002  # continuous at the start
    again = SimulatedSource(["BTCUSDT", "ETHUSDT"], seed=7, start_ms=start, past_ms=4 * 3_600_000)
    assert np.array_equal(again.klines("ETHUSDT", MINUTE, 0, start, stop).close, minute.close)  # seeded
    other = SimulatedSource(["BTCUSDT", "ETHUSDT"], seed=8, start_ms=start, past_ms=4 * 3_600_000)
    assert not np.array_equal(other.klines("ETHUSDT", MINUTE, 0, start, stop).close, minute.close)
    seconds = source.klines("ETHUSDT", 1_000, start - 3_600_000, start, stop)
    assert 3_590 <= len(seconds) <= 3_599 and np.all(np.diff(seconds.start_ms) >= 1_000)  # a second may be quiet
    assert len(source.klines("SOLUSDT", MINUTE, 0, start, stop)) == 0


def test_the_simulated_market_shows_a_zscore_on_1_min_bars_at_once(tmp_path):
    """Done-when: a fresh data dir, the default simulated source, z-score on 1 min bars within 20 s."""
    started = time.monotonic()
    service = Service.start(Settings.of(source="simulated", data_dir=tmp_path))
    try:
        def zscore() -> float:
            bars = load_pair_bars(service.engine, service.history, ("ETHUSDT", "BTCUSDT"), MINUTE, 4 * 3_600_000)
            if bars.aligned is None:
                return float("nan")
            return compute_pair(bars.closes(), PairParams("ETHUSDT", "BTCUSDT", window=60)).latest["zscore"]

        eventually(lambda: np.isfinite(zscore()), timeout=20, interval=0.2)
        assert time.monotonic() - started < 20
        assert service.history_progress.errors == ()
    finally:
        service.stop()


def test_live_1_min_bars_with_a_4_h_lookback_show_a_zscore_within_30_s(tmp_path):
    """Done-when: live Binance (the fakes), 1 min bars, 4 h lookback: a z-score within 30 s."""
    with FakeBinance(ping_interval=None) as ws, FakeRest(klines=FakeKlines(PRICES)) as rest:
        started = time.monotonic()
        service = Service.start(Settings.of(source="binance", ws_url=ws.url, rest_url=rest.url, data_dir=tmp_path))
        try:
            def zscore() -> float:
                bars = load_pair_bars(service.engine, service.history, ("ETHUSDT", "BTCUSDT"), MINUTE,
                                      4 * 3_600_000)
                if bars.aligned is None:
                    return float("nan")
                return compute_pair(bars.closes(), PairParams("ETHUSDT", "BTCUSDT", window=60)).latest["zscore"]

            eventually(lambda: np.isfinite(zscore()), timeout=30, interval=0.2)
            assert time.monotonic() - started < 30
            progress = service.history_progress
            assert progress.errors == () and progress.bars > 0
            # 1 s bars load last: they may still be queued when the 1 min z-score shows.
            eventually(lambda: {r.get("interval") for r in rest.requests} >= {"1s", "1m", "5m"}, timeout=30)
        finally:
            service.stop()


def test_a_restart_after_downtime_is_filled_by_klines(tmp_path):
    """Ticks recorded an hour ago, then nothing until now: the chart has no hole on 1 min bars."""
    origin = now_ms()
    db = tmp_path / "live.db"
    recorded_from = (origin - 3 * 3_600_000) // MINUTE * MINUTE
    trades = [Trade("BTCUSDT", i, recorded_from + i * 1_000, 0, 90_000.0 + i % 5, 0.01, False) for i in range(3_600)]
    with SqliteTickStore(db) as store:  # an earlier run recorded one hour, two hours ago
        store.write_batch(trades)
    with FakeRest(klines=FakeKlines(PRICES, origin_ms=origin, trades_per_second=1)) as rest:
        service = Service.start(Settings.of(source="binance", rest_url=rest.url, db=db, history_hours=4,
                                         backfill_max_trades=0), source=ListSource([]))
        try:
            eventually(lambda: not service.history_progress.loading, timeout=30)
            bars = load_pair_bars(service.engine, service.history, ("BTCUSDT",), MINUTE, 4 * 3_600_000)
        finally:
            service.stop()
    btc = bars.by_symbol["BTCUSDT"]
    starts = btc.index.as_unit("ms").asi8
    assert np.all(np.diff(starts) == MINUTE)  # no hole: before, during and after the recorded hour
    assert starts[0] <= origin - 4 * 3_600_000 + MINUTE and starts[-1] >= origin - 2 * MINUTE
    recorded = btc[(starts > recorded_from) & (starts < recorded_from + 3_600_000 - MINUTE)]
    assert (recorded["trades"] == 60).all()  # whole recorded minutes come from the ticks (60 trades each) ...
    assert set(recorded["close"].round(1)) <= {90_000.0 + k for k in range(5)}  # ... at the recorded prices
    json.dumps(service.history_progress.describe())
