"""The Binance REST client against a hostile or broken endpoint (loopback fakes): bans, deadlines, sizes, pages."""

from __future__ import annotations

import copy
import email.utils
import re
import threading
import time
import tracemalloc
from dataclasses import replace
from datetime import UTC, datetime

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from cli.record import format_status
from config import Settings
from ingestion.backfill import Backfiller
from ingestion.binance import SPOT, USDM, Venue
from ingestion.binance.rest import (
    ATTEMPTS,
    MAX_BAN_S,
    REST_RETRY,
    RETRY_AFTER_UNKNOWN_S,
    BinanceRest,
    RestError,
    parse_historical_trades,
    parse_klines,
    retry_after_s,
)
from ingestion.history import HistoryLoader
from records import BarArrays, EventKind, Trade, now_ms
from records.retry import RetryPolicy
from service import Service
from storage.sqlite.ticks import SqliteTickStore
from testkit.clocks import ManualClock
from testkit.fake_binance import FakeBinance, RecordedTrade
from testkit.fake_rest import FakeKlines, FakeRest
from testkit.randoms import DrawLog
from testkit.waiting import eventually, in_thread

MINUTE = 60_000
PRICES = {"BTCUSDT": 90_000.0, "ETHUSDT": 3_100.0}
T0 = 1_800_000_000  # the fake clock's start, epoch seconds
KLINES, TRADES = "/api/v3/klines", "/api/v3/historicalTrades"


def recorded(first_id: int = 1_000, n: int = 50) -> list[RecordedTrade]:
    start = now_ms() - 600_000
    return [RecordedTrade("BTCUSDT", first_id + i, start + i * 100, 90_000.0 + i, 0.01, i % 2 == 0) for i in range(n)]


# ------------------------------------------------------------------------ 418/429: Retry-After, shared ban
def http_date(epoch_s: float) -> str:
    return email.utils.format_datetime(datetime.fromtimestamp(epoch_s, UTC), usegmt=True)


@pytest.mark.parametrize(("header", "expected"), [
    ("7200", 7200.0),  # no 300 s cap
    ("259200", 259_200.0),  # Binance's longest ban, 3 days
    (" 30 ", 30.0),
    ("0", 0.0),
    (http_date(T0 + 7200), 7200.0),
    ("Fri, 15 Jan 2027 09:00:00 +0100", 0.0),  # a numeric zone: 08:00 UTC, the ban ends now
    (http_date(T0 - 60), 0.0),  # a date already past: no wait
    ("99999999999999999999", MAX_BAN_S),
    ("9" * 5_000, MAX_BAN_S),  # beyond int()'s digit limit, still a (huge) number
    (None, RETRY_AFTER_UNKNOWN_S),
    ("", RETRY_AFTER_UNKNOWN_S),
    ("soon", RETRY_AFTER_UNKNOWN_S),
    ("-5", RETRY_AFTER_UNKNOWN_S),
    ("1e3", RETRY_AFTER_UNKNOWN_S),
    ("١٢", RETRY_AFTER_UNKNOWN_S),  # Arabic-Indic digits: not delay-seconds
    ("Sun, 99 Foo 2026 25:61:00 GMT", RETRY_AFTER_UNKNOWN_S),
])
def test_retry_after_seconds_and_http_dates_are_honoured_in_full(header, expected):
    assert retry_after_s(header, T0) == pytest.approx(expected)


@pytest.mark.parametrize("venue", [SPOT, USDM], ids=["spot", "futures"])
@pytest.mark.parametrize("form", ["seconds", "http-date"])
def test_an_ip_ban_stops_every_caller_until_retry_after_has_passed(form, venue: Venue):
    """A 418 with Retry-After: 7200 (or the same moment as an HTTP-date) on a klines call: neither that
    call nor a gap backfill sends anything until the clock passes 7,200 s; then both go through.
    The same on both venues (futures: ``/fapi/v1/klines`` and ``/fapi/v1/trades``)."""
    clock = ManualClock(T0)
    trades = recorded()
    with FakeRest(trades, klines=FakeKlines(PRICES), futures=venue is USDM) as rest:
        rest.faults.append((418, "7200" if form == "seconds" else http_date(T0 + 7200)))
        client = BinanceRest(rest.url, venue=venue, clock=clock, poll_s=0.002)
        end = now_ms() // MINUTE * MINUTE
        history, got_bars = in_thread(client.klines, "ETHUSDT", MINUTE, end - 30 * MINUTE, end, threading.Event())
        eventually(lambda: client.banned_until_ms is not None)
        assert client.banned_until_ms == (T0 + 7200) * 1000 and len(rest.requests) == 1
        assert "HTTP 418 from Binance REST: banned until 2027-01-15T10:00:00Z (Retry-After" in client.last_error
        backfill, got_trades = in_thread(client.historical_trades, "BTCUSDT", trades[0].trade_id, 1000,
                                         threading.Event())
        for step in (3_600, 3_599):  # 1 s before the ban ends: still nobody calls
            clock.advance(step)
            reads = clock.reads
            eventually(lambda reads=reads: clock.reads >= reads + 20)  # both callers looked at the clock again
            assert len(rest.requests) == 1 and history.is_alive() and backfill.is_alive()
        clock.advance(1.5)
        history.join(10)
        backfill.join(10)
    assert "error" not in got_bars and "error" not in got_trades
    assert len(got_bars["result"]) == 30 and [t.trade_id for t in got_trades["result"]] == [
        t.trade_id for t in trades]
    assert len(rest.requests) == 3 and client.banned_until_ms is None
    assert set(rest.paths) == {venue.klines_path, venue.trades_path}


def test_a_missing_retry_after_waits_the_conservative_default():
    clock = ManualClock(T0)
    with FakeRest(recorded()) as rest:
        rest.faults.append((429, None))
        client = BinanceRest(rest.url, clock=clock, poll_s=0.002)
        caller, got = in_thread(client.historical_trades, "BTCUSDT", 1_000, 10, threading.Event())
        eventually(lambda: client.banned_until_ms == (T0 + RETRY_AFTER_UNKNOWN_S) * 1000)
        clock.advance(RETRY_AFTER_UNKNOWN_S - 1)
        reads = clock.reads
        eventually(lambda: clock.reads >= reads + 10)
        assert len(rest.requests) == 1
        clock.advance(1)
        caller.join(10)
    assert len(got["result"]) == 10 and len(rest.requests) == 2


def test_a_ban_is_left_at_once_when_stopped():
    clock = ManualClock(T0)
    with FakeRest(recorded()) as rest:
        rest.faults.append((418, "86400"))
        client = BinanceRest(rest.url, clock=clock, poll_s=0.002)
        stop = threading.Event()
        caller, got = in_thread(client.historical_trades, "BTCUSDT", 1_000, 10, stop)
        eventually(lambda: client.banned_until_ms is not None)
        stop.set()
        caller.join(5)
    assert got == {"result": []} and len(rest.requests) == 1


def test_a_spent_weight_budget_pauses_every_caller_until_the_next_minute():
    clock = ManualClock(T0 + 10)  # T0 is on a minute
    trades = recorded()
    with FakeRest(trades, klines=FakeKlines(PRICES)) as rest:
        client = BinanceRest(rest.url, weight_budget=30, clock=clock, poll_s=0.002)
        end = now_ms() // MINUTE * MINUTE
        client.klines("ETHUSDT", MINUTE, end - 30 * MINUTE, end, threading.Event())  # weight 2 of 30
        client.historical_trades("BTCUSDT", trades[0].trade_id, 10, threading.Event())  # 27: the next would cross
        assert len(rest.requests) == 2
        history, got = in_thread(client.klines, "ETHUSDT", MINUTE, end - 30 * MINUTE, end, threading.Event())
        clock.advance(49)  # T0 + 59
        reads = clock.reads
        eventually(lambda: clock.reads >= reads + 10)
        assert len(rest.requests) == 2 and client.banned_until_ms is None  # a pause, not a ban
        clock.advance(2)
        history.join(10)
    assert len(got["result"]) == 30 and len(rest.requests) == 3


def test_history_leaves_the_rest_of_the_minutes_budget_to_the_gap_backfill():
    """Klines pause at 70 % of the budget; a backfill still gets the remaining 30 % that minute."""
    clock = ManualClock(T0 + 10)
    trades = recorded()
    with FakeRest(trades, klines=FakeKlines(PRICES)) as rest:
        client = BinanceRest(rest.url, weight_budget=100, clock=clock, poll_s=0.002)
        end = now_ms() // MINUTE * MINUTE
        rest.used_weight = 67  # others (another process on this IP) spent weight this minute
        client.klines("ETHUSDT", MINUTE, end - 30 * MINUTE, end, threading.Event())  # 69: the next crosses 70
        history, got = in_thread(client.klines, "ETHUSDT", MINUTE, end - 30 * MINUTE, end, threading.Event())
        reads = clock.reads
        eventually(lambda: clock.reads >= reads + 10)
        assert len(rest.requests) == 1  # history waits for the next minute ...
        page = client.historical_trades("BTCUSDT", trades[0].trade_id, 10, threading.Event())
        assert len(page) == 10 and len(rest.requests) == 2  # ... while the backfill goes through at once
        clock.advance(51)
        history.join(10)
    assert len(got["result"]) == 30 and len(rest.requests) == 3


# ------------------------------------------------------------------------ 5xx: the client's own backoff
FAST_RETRY = RetryPolicy(base_s=0.01, cap_s=0.04)


@pytest.mark.parametrize("venue", [SPOT, USDM], ids=["spot", "futures"])
def test_server_errors_are_retried_on_the_jittered_policy_then_succeed(venue: Venue):
    rng = DrawLog(2)
    with FakeRest(klines=FakeKlines(PRICES), futures=venue is USDM) as rest:
        rest.faults.extend([(500, None), (503, None), (502, None), (504, None)])
        client = BinanceRest(rest.url, venue=venue, retry=FAST_RETRY, rng=rng)
        end = now_ms() // MINUTE * MINUTE
        bars = client.klines("BTCUSDT", MINUTE, end - 30 * MINUTE, end, threading.Event())
    assert len(bars) == 30 and len(rest.requests) == 5  # four failures, then the page (ATTEMPTS = 5)
    assert rng.ceilings == [0.01, 0.02, 0.04, 0.04]  # doubling, capped; one jittered draw per retry
    assert REST_RETRY.jitter and REST_RETRY.max_attempts == ATTEMPTS


def test_the_attempts_run_out_without_a_wait_after_the_last_and_a_ban_costs_one():
    rng = DrawLog(2)
    with FakeRest(klines=FakeKlines(PRICES)) as rest:
        rest.faults.extend([(429, "0"), (500, None), (500, None), (500, None)])
        client = BinanceRest(rest.url, retry=FAST_RETRY, rng=rng, attempts=3)
        end = now_ms() // MINUTE * MINUTE
        with pytest.raises(RestError, match=r"giving up on .*klines.* after 3 attempts \(HTTP 500 from Binance REST\)"):
            client.klines("BTCUSDT", MINUTE, end - 30 * MINUTE, end, threading.Event())
    assert len(rest.requests) == 3
    assert len(rng.ceilings) == 1  # the ban's wait is the server's: only the first 500 drew a delay


# ------------------------------------------------------------------------ deadlines and lanes
def test_a_dripping_reply_is_abandoned_at_the_deadline():
    with FakeRest(klines=FakeKlines(PRICES)) as rest:
        rest.drip[KLINES] = 0.05  # 20 bytes/s: a 1,000-row page would take hours
        client = BinanceRest(rest.url, deadline_s=0.5, attempts=1)
        end = now_ms() // MINUTE * MINUTE
        with pytest.raises(RestError, match=r"klines: no complete reply within the 0.5 s deadline"):
            client.klines("BTCUSDT", MINUTE, end - 30 * MINUTE, end, threading.Event())
        eventually(lambda: rest.abandoned == [KLINES])  # the client hung up; the fake saw it
        assert rest.bytes_sent[KLINES] < 100


def test_a_klines_page_stuck_dripping_does_not_hold_up_a_gap_backfill(tmp_path):
    """History loading and gap backfill share the client (its ban and weight budget), not a lock."""
    trades = recorded(n=2_500)
    stored: list = []
    with FakeRest(trades, klines=FakeKlines(PRICES)) as rest:
        rest.drip[KLINES] = 0.05
        client = BinanceRest(rest.url)
        loader = HistoryLoader(client, lambda: SqliteTickStore(tmp_path / "live.db"), {MINUTE: 3_600_000})
        backfiller = Backfiller(client, stored.append, stored.append)
        try:
            loader.start(["BTCUSDT"])
            eventually(lambda: rest.bytes_sent.get(KLINES, 0) > 0)  # the klines reply is dripping
            backfiller.start()
            backfiller.request("BTCUSDT", trades[0].trade_id, len(trades))
            eventually(lambda: backfiller.pending == 0, timeout=5)
            assert loader.progress.loading and rest.abandoned == []  # still stuck on that page
        finally:
            backfiller.stop()
    loader.stop()
    assert [s.trade_id for s in stored if isinstance(s, Trade)] == [t.trade_id for t in trades]
    assert [s.detail for s in stored if getattr(s, "kind", None) is EventKind.BACKFILL] == [
        f"first_missing={trades[0].trade_id} count=2500 recovered=2500"]


# ------------------------------------------------------------------------ reply size
@pytest.mark.parametrize("framing", ["length", "close", "chunked"])
def test_a_huge_reply_is_refused_naming_the_limit_without_reading_it(framing):
    size = 120 * 2**20
    with FakeRest(klines=FakeKlines(PRICES)) as rest:
        rest.huge[KLINES] = (size, framing)
        client = BinanceRest(rest.url, attempts=1)
        end = now_ms() // MINUTE * MINUTE
        tracemalloc.start()
        try:
            with pytest.raises(RestError, match="klines reply exceeds the 2 MB limit") as refused:
                client.klines("BTCUSDT", MINUTE, end - 30 * MINUTE, end, threading.Event())
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        if framing == "length":
            assert "Content-Length 125,829,120 bytes" in str(refused.value)
        eventually(lambda: rest.abandoned == [KLINES], timeout=10)
    assert rest.bytes_sent[KLINES] < size / 4  # the client hung up long before the end
    assert peak < 32 * 2**20, f"peak {peak:,} bytes traced"
    assert "2 MB limit" in client.last_error


def test_a_reply_within_the_limit_is_read_whole():
    with FakeRest(klines=FakeKlines(PRICES)) as rest:
        client = BinanceRest(rest.url, max_reply_bytes=2**20)
        end = now_ms() // MINUTE * MINUTE
        assert len(client.klines("BTCUSDT", 1_000, end - 1_000_000, end, threading.Event())) == 1_000


# ------------------------------------------------------------------------ page validation
NOW = 1_765_000_000_000 // MINUTE * MINUTE


def kline(open_ms: int, close: str = "100.5") -> list:
    return [open_ms, "100.0", "101.0", "99.0", close, "2.0", open_ms + MINUTE - 1, "201.0", 7, "1.0", "100.5", "0"]


@pytest.mark.parametrize(("rows", "match"), [
    ([kline(NOW - 3 * MINUTE - 86_400_000), kline(NOW - 3 * MINUTE)],
     r"kline #0 opens at \d+ \(2025-12-05T05:43:00Z\), outside the range asked for"),
    ([kline(NOW - 3 * MINUTE), kline(NOW)], r"kline #1 opens at \d+ \(2025-12-06T05:46:00Z\), outside"),
    ([kline(NOW - 3 * MINUTE), kline(NOW - 3 * MINUTE, close="100.0")],
     r"kline #1 opens at \d+ \(.*\), a duplicate of kline #0"),
    ([kline(NOW - 3 * MINUTE), kline(NOW - MINUTE), kline(NOW - 2 * MINUTE)],
     r"kline #2 opens at \d+ \(.*\), before kline #1"),
])
def test_klines_out_of_range_repeated_or_descending_refuse_the_page(rows, match):
    with pytest.raises(RestError, match=match):
        parse_klines(rows, "BTCUSDT", MINUTE, NOW, start_ms=NOW - 3 * MINUTE, end_ms=NOW)


def trade_row(trade_id: int) -> dict:
    return {"id": trade_id, "price": "4.0", "qty": "1.0", "quoteQty": "4.0", "time": 1499865549590,
            "isBuyerMaker": True, "isBestMatch": True}


@pytest.mark.parametrize(("ids", "match"), [
    ([99, 100], r"row #0 has id 99, before the fromId 100"),
    ([100, 101, 101], r"row #2 has id 101, not after row #1 \(101\)"),
    ([100, 102, 101], r"row #2 has id 101, not after row #1 \(102\)"),
    (list(range(100, 106)), r"has 6 rows, more than the 5 asked for"),
])
def test_historical_trades_out_of_range_or_order_refuse_the_page(ids, match):
    with pytest.raises(RestError, match=match):
        parse_historical_trades([trade_row(i) for i in ids], "BNBBTC", 100, 5, 1_765_788_195_500)  # received 2025


def bar_before_range(params: dict, rows: list) -> list:
    """A bar from the day before (here: the stored bar's time) put first, with another close."""
    stray = copy.deepcopy(rows[0])
    stray[0] = int(params["startTime"]) - MINUTE
    stray[6] = stray[0] + MINUTE - 1
    stray[3] = stray[4] = "10.00000000"  # low and close 10: it would replace the stored close 50
    return [stray, *rows]


def duplicate_first(params: dict, rows: list) -> list:
    twin = copy.deepcopy(rows[0])
    twin[4] = twin[3]  # another close (the low) for the same minute: stored last-wins before
    return [rows[0], twin, *rows[1:]]


def descending_pair(params: dict, rows: list) -> list:
    return [rows[0], rows[2], rows[1], *rows[3:]]


@pytest.mark.parametrize(("tamper", "named"), [
    (bar_before_range, r"kline #0 opens at \d+ \(.*\), outside the range asked for"),
    (duplicate_first, r"kline #1 opens at \d+ \(.*\), a duplicate of kline #0"),
    (descending_pair, r"kline #2 opens at \d+ \(.*\), before kline #1"),
])
def test_a_refused_klines_page_stores_nothing_and_leaves_stored_bars_alone(tmp_path, tamper, named):
    path = tmp_path / "live.db"
    clock_ms = now_ms() // MINUTE * MINUTE - 7_000  # fixed: the range asked for is known
    first = clock_ms - clock_ms % MINUTE - 30 * MINUTE
    with SqliteTickStore(path) as store:  # the earliest bar of the range, already stored (close 50)
        store.write_bars("BTCUSDT", MINUTE, BarArrays(np.array([first]), np.array([50.0]), np.array([50.0]),
                                                      np.array([50.0]), np.array([50.0]), np.array([1.0]),
                                                      np.array([3]), np.array([50.0])))
    with FakeRest(klines=FakeKlines(PRICES)) as rest:
        rest.tamper = lambda route, params, rows: tamper(params, rows) if route == KLINES else rows
        loader = HistoryLoader(BinanceRest(rest.url), lambda: SqliteTickStore(path), {MINUTE: 30 * MINUTE},
                               clock=lambda: clock_ms)
        loader.start(["BTCUSDT"])
        eventually(lambda: loader.progress.done >= 1, timeout=20)
        loader.stop()
    assert [int(r["startTime"]) for r in rest.requests] == [first + MINUTE]  # only the hole after the stored bar
    (error,) = loader.progress.errors
    assert error.startswith("history BTCUSDT 1m: BTCUSDT 1m kline #") and "page refused" in error
    assert re.search(named, error), error
    with SqliteTickStore(path) as store:
        kept = store.bars("BTCUSDT", MINUTE)
    assert list(kept.start_ms) == [first] and list(kept.close) == [50.0]


def test_a_refused_historical_trades_page_stores_nothing():
    trades = recorded(n=20)
    stored: list = []
    with FakeRest(trades) as rest:
        rest.tamper = lambda route, params, rows: [rows[0], rows[2], rows[1], *rows[3:]]
        backfiller = Backfiller(BinanceRest(rest.url), stored.append, stored.append)
        backfiller.start()
        backfiller.request("BTCUSDT", trades[0].trade_id, 20)
        eventually(lambda: backfiller.pending == 0)
        backfiller.stop()
    assert not [s for s in stored if isinstance(s, Trade)]
    assert f"historicalTrades row #2 has id {trades[1].trade_id}, not after row #1" in backfiller.last_error


# ------------------------------------------------------------------------ the ban, shown
def show_status(status) -> None:
    from ui.status import render_status

    render_status(status)


def test_a_ban_shows_in_the_feed_status_and_the_recorder_line(tmp_path):
    started = now_ms()
    with FakeBinance(ping_interval=None) as ws, FakeRest(klines=FakeKlines(PRICES)) as rest:
        rest.faults.append((418, "7200"))
        service = Service.start(Settings.of(source="binance", ws_url=ws.url, rest_url=rest.url, data_dir=tmp_path,
                                         history_hours=1))
        try:
            eventually(lambda: service.status().rest_banned_until_ms is not None, timeout=10)
            status = service.status()
        finally:
            service.stop()
    assert len(rest.requests) == 1  # the history loader asked once, then waited out the ban
    assert started + 7_200_000 <= status.rest_banned_until_ms <= now_ms() + 7_200_000
    shown = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(status.rest_banned_until_ms // 1000))
    assert f"rest_banned_until='{shown}'" in format_status(status)
    at = AppTest.from_function(show_status, args=(status,), default_timeout=30).run()
    assert not at.exception
    assert any(f"Exchange REST banned until {shown}" in warning.value for warning in at.warning)
    assert "rest_banned_until" not in format_status(replace(status, rest_banned_until_ms=None))
