"""Funding history of USDⓈ-M perpetuals: the ``/fapi/v1/fundingRate`` parser, the REST client's paging and
limits against the fake, and the loader that keeps the futures site's funding table current."""

from __future__ import annotations

import signal
import threading

import numpy as np
import pandas as pd
import pytest

from analytics.backtest import backtest_mean_reversion
from config import Settings
from ingestion.binance import FUTURES_SPEC, SPOT, USDM, BinanceRest
from ingestion.binance.rest import (
    FUNDING_PAGE,
    FUNDING_REQUESTS,
    FUNDING_WINDOW_S,
    RestError,
    parse_funding_rates,
)
from ingestion.engine import Engine
from ingestion.funding import (
    FETCH_DELAY_MS,
    RETRY_MS,
    UNLISTED_RETRY,
    FundingLoader,
    announced_ms,
    known_until_ms,
)
from ingestion.sources import resolve
from pairs.funding import funding_history, is_perpetual
from records import EventKind, FundingRate, MarkPrice, now_ms
from records.retry import RetryPolicy
from service import Service
from storage.errors import StorageUnavailable
from storage.sqlite.ticks import SqliteTickStore
from testkit.clocks import ManualClock
from testkit.fake_binance import FakeBinance
from testkit.fake_rest import FakeFunding, FakeKlines, FakeRest
from testkit.waiting import eventually, in_thread
from tests.test_backtest_funding import market
from tests.test_binance_source import FAST
from tests.test_recorder_cli import recorder
from ui.backtest_panel import perpetual_funding

HOUR = 3_600_000
T0 = 1_800_000_000  # a fake clock's start, epoch seconds
# Binance's own example reply (USDⓈ-M "Get Funding Rate History").
REAL = [{"symbol": "BTCUSDT", "fundingRate": "-0.03750000", "fundingTime": 1570608000000,
         "markPrice": "34287.54619963"}]
FAST_RETRY = RetryPolicy(base_s=0.01, cap_s=0.02)
PATH = "/fapi/v1/fundingRate"


def parse(rows: object, symbol: str = "BTCUSDT", start_ms: int = 0, end_ms: int = 2**62, limit: int = 1000):
    return parse_funding_rates(rows, symbol, start_ms=start_ms, end_ms=end_ms, limit=limit)


# ------------------------------------------------------------------------------------------ parser
def test_the_real_payload_parses_to_a_rate_as_a_fraction_and_its_mark():
    page = parse(REAL)
    assert page.rates == (FundingRate("BTCUSDT", 1570608000000, -0.0375, 34287.54619963),)
    assert page.problems == () and page.last_ms == 1570608000000 and page.rows == 1


@pytest.mark.parametrize("mark", ["", None])
def test_a_row_without_a_mark_keeps_its_rate_and_no_mark(mark):
    row = {**REAL[0]}
    if mark is None:
        del row["markPrice"]
    else:
        row["markPrice"] = mark
    assert parse([row]).rates == (FundingRate("BTCUSDT", 1570608000000, -0.0375, None),)


def row(t: int, rate: object = "0.00010000", **changes: object) -> dict:
    return {"symbol": "BTCUSDT", "fundingRate": rate, "fundingTime": t, "markPrice": "90000.0", **changes}


@pytest.mark.parametrize(("bad", "named"), [
    ("not a row", "is not a JSON object"),
    (row(2 * HOUR, symbol="ETHUSDT"), "is for symbol 'ETHUSDT', not BTCUSDT"),
    (row(2 * HOUR, fundingTime="7200000"), "invalid fundingTime '7200000'"),
    (row(2 * HOUR, fundingTime=True), "invalid fundingTime True"),
    (row(2 * HOUR, fundingTime=-5), "invalid fundingTime -5"),
    (row(2 * HOUR, fundingRate=0.0001), "invalid fundingRate 0.0001"),  # a JSON number: not what Binance sends
    (row(2 * HOUR, fundingRate="nan"), "invalid fundingRate 'nan'"),
    (row(2 * HOUR, fundingRate="1.5"), "invalid fundingRate '1.5'"),
    (row(2 * HOUR, fundingRate=None), "invalid fundingRate None"),
    (row(2 * HOUR, markPrice="-1"), "invalid markPrice '-1'"),
    (row(2 * HOUR, markPrice="0"), "invalid markPrice '0'"),
    (row(2 * HOUR, markPrice="abc"), "invalid markPrice 'abc'"),
    (row(HOUR, "0.00020000"), "of another row, with another rate or mark"),  # which is the event?
    (row(HOUR, markPrice="90001.0"), "of another row, with another rate or mark"),
    (row(500 * HOUR), "outside the range asked for"),
])
def test_a_malformed_row_is_named_and_left_out_and_the_others_kept(bad, named):
    page = parse([row(HOUR), bad, row(3 * HOUR)], end_ms=10 * HOUR)
    assert [r.funding_ms for r in page.rates] == [HOUR, 3 * HOUR]
    [(when, message)] = page.problems
    assert named in message and "BTCUSDT fundingRate row #1" in message and message.endswith("not stored")
    assert when in (None, bad.get("fundingTime") if isinstance(bad, dict) else None)
    assert page.last_ms == 3 * HOUR


def test_an_event_listed_twice_alike_is_taken_once_and_not_counted_as_malformed():
    """The same event twice (time, rate and mark alike) says nothing new: taken once, as a refetched
    event is stored once. Refused, it stopped the span known before it at every look, for good:
    every later funding of that leg 'unknown', every backtest's net PnL '—'."""
    page = parse([row(HOUR), row(HOUR), row(2 * HOUR, markPrice=""), row(2 * HOUR, markPrice=""), row(3 * HOUR)],
                 end_ms=10 * HOUR)
    assert [r.funding_ms for r in page.rates] == [HOUR, 2 * HOUR, 3 * HOUR] and page.problems == ()
    assert page.rows == 5 and page.last_ms == 3 * HOUR


def test_events_listed_out_of_order_are_taken_in_time_order():
    """Each row is an event on its own (symbol, time, rate, mark): their order says nothing. Refused, one
    listed out of order stopped the span known before it at every look until it left the retention (48 h
    of 'funding unknown' for that leg); the next page starts after the latest time listed."""
    page = parse([row(HOUR), row(3 * HOUR), row(2 * HOUR), row(4 * HOUR, markPrice=""), row(HOUR // 2)],
                 end_ms=10 * HOUR)
    assert [r.funding_ms for r in page.rates] == [HOUR // 2, HOUR, 2 * HOUR, 3 * HOUR, 4 * HOUR]
    assert page.problems == () and page.last_ms == 4 * HOUR and page.rows == 5
    # Two rows of one time that differ are still refused (which is the event?), in either order.
    for rows in ([row(HOUR), row(HOUR, "0.00020000")], [row(HOUR, "0.00020000"), row(HOUR)]):
        [(when, message)] = parse(rows, end_ms=10 * HOUR).problems
        assert when == HOUR and "of another row, with another rate or mark" in message


def test_a_reply_that_is_not_a_list_or_longer_than_asked_is_refused_whole():
    with pytest.raises(RestError, match="expected a JSON list from fundingRate, got dict"):
        parse({"code": -1121, "msg": "Invalid symbol."})
    with pytest.raises(RestError, match="BTCUSDT fundingRate page has 3 rows, more than the 2 asked for"):
        parse([row(HOUR), row(2 * HOUR), row(3 * HOUR)], limit=2)


# ------------------------------------------------------------------------------------------ REST client
def fake_funding(hours: int, *, interval_h: int = 1, **kwargs: object) -> FakeFunding:
    return FakeFunding({"BTCUSDT": 90_000.0, "ETHUSDT": 3_100.0}, first_ms=HOUR, interval_ms=interval_h * HOUR,
                       until_ms=hours * HOUR, **kwargs)  # type: ignore[arg-type]


def test_history_pages_by_1000_from_the_last_time_received_and_covers_the_range_exactly():
    """2,500 hourly events: three calls, each from the last time received + 1, endTime the range's last ms."""
    with FakeRest(futures=True, funding=fake_funding(3_000)) as rest:
        client = BinanceRest(rest.url, venue=USDM)
        page = client.funding_rates("ETHUSDT", 100 * HOUR, 2_600 * HOUR, threading.Event())
    times = [r.funding_ms for r in page.rates]
    assert times == [h * HOUR for h in range(100, 2_600)] and page.problems == ()
    assert all(r.symbol == "ETHUSDT" and r.mark is not None and abs(r.rate) < 5e-4 for r in page.rates)
    assert rest.paths == [PATH] * 3
    assert [int(q["startTime"]) for q in rest.requests] == [100 * HOUR, 1_099 * HOUR + 1, 2_099 * HOUR + 1]
    assert {(q["endTime"], q["limit"]) for q in rest.requests} == {(str(2_600 * HOUR - 1), str(FUNDING_PAGE))}


def test_an_exactly_full_last_page_asks_once_more_and_stops_on_an_empty_one():
    with FakeRest(futures=True, funding=fake_funding(3_000)) as rest:
        client = BinanceRest(rest.url, venue=USDM)
        page = client.funding_rates("BTCUSDT", HOUR, 1_000 * HOUR + 1, threading.Event())
    assert len(page.rates) == 1_000 and len(rest.requests) == 1  # the range ends where the page does
    with FakeRest(futures=True, funding=fake_funding(1_000)) as rest:  # no event after hour 1,000 yet
        page = BinanceRest(rest.url, venue=USDM).funding_rates("BTCUSDT", HOUR, 1_500 * HOUR, threading.Event())
    assert len(page.rates) == 1_000 and len(rest.requests) == 2 and page.rows == 1_000


def test_older_events_without_a_mark_come_back_without_one():
    with FakeRest(futures=True, funding=fake_funding(48, interval_h=8, marks_from_ms=24 * HOUR)) as rest:
        page = BinanceRest(rest.url, venue=USDM).funding_rates("BTCUSDT", 0, 49 * HOUR, threading.Event())
    assert [(r.funding_ms // HOUR, r.mark is None) for r in page.rates] == [
        (8, True), (16, True), (24, False), (32, False), (40, False), (48, False)]


def test_malformed_rows_from_the_server_are_named_and_the_rest_kept():
    def tamper(path: str, params: dict[str, str], rows: list) -> list:
        rows[2]["fundingRate"] = "garbage"
        return rows

    with FakeRest(futures=True, funding=fake_funding(48, interval_h=8)) as rest:
        rest.tamper = tamper
        page = BinanceRest(rest.url, venue=USDM).funding_rates("BTCUSDT", 0, 48 * HOUR, threading.Event())
    assert [r.funding_ms // HOUR for r in page.rates] == [8, 16, 32, 40]
    [(when, message)] = page.problems
    assert when == 24 * HOUR and "invalid fundingRate 'garbage'" in message


def test_an_unknown_symbol_is_named_and_a_spot_client_has_no_funding():
    with FakeRest(futures=True, funding=fake_funding(48)) as rest:
        client = BinanceRest(rest.url, venue=USDM)
        with pytest.raises(RestError, match="Binance does not know the symbol NOPEUSDT"):
            client.funding_rates("NOPEUSDT", 0, 48 * HOUR, threading.Event())
    with pytest.raises(RestError, match="LIVE Binance spot has no funding history"):
        BinanceRest("http://127.0.0.1:9", venue=SPOT).funding_rates("BTCUSDT", 0, HOUR, threading.Event())


def test_server_errors_are_retried_like_every_other_call():
    with FakeRest(futures=True, funding=fake_funding(48, interval_h=8)) as rest:
        rest.faults.extend([(500, None), (503, None)])
        client = BinanceRest(rest.url, venue=USDM, retry=FAST_RETRY)
        page = client.funding_rates("BTCUSDT", 0, 48 * HOUR, threading.Event())
    assert len(page.rates) == 5 and len(rest.requests) == 3


def test_a_huge_or_dripping_funding_reply_is_refused_like_any_other():
    with FakeRest(futures=True, funding=fake_funding(48, interval_h=8)) as rest:
        rest.huge[PATH] = (20 * 2**20, "length")
        client = BinanceRest(rest.url, venue=USDM, attempts=1)
        with pytest.raises(RestError, match="fundingRate reply exceeds the 2 MB limit"):
            client.funding_rates("BTCUSDT", 0, 48 * HOUR, threading.Event())
        del rest.huge[PATH]
        rest.drip[PATH] = 0.05
        slow = BinanceRest(rest.url, venue=USDM, attempts=1, deadline_s=0.5)
        with pytest.raises(RestError, match=r"no complete reply within the 0\.5 s deadline"):
            slow.funding_rates("BTCUSDT", 0, 48 * HOUR, threading.Event())


def test_a_ban_holds_funding_calls_until_retry_after_and_counts_against_nothing_else():
    clock = ManualClock(T0)
    with FakeRest(futures=True, funding=fake_funding(48, interval_h=8)) as rest:
        rest.faults.append((429, "120"))
        client = BinanceRest(rest.url, venue=USDM, clock=clock, poll_s=0.002)
        caller, got = in_thread(client.funding_rates, "BTCUSDT", 0, 48 * HOUR, threading.Event())
        eventually(lambda: client.banned_until_ms == (T0 + 120) * 1000)
        clock.advance(119)
        reads = clock.reads
        eventually(lambda: clock.reads >= reads + 10)
        assert len(rest.requests) == 1 and caller.is_alive()
        clock.advance(1.5)
        caller.join(10)
    assert len(got["result"].rates) == 5 and len(rest.requests) == 2


def test_funding_calls_keep_to_their_own_window_of_requests_per_5_minutes():
    """Binance: "share 500/5min/IP rate limit with GET /fapi/v1/fundingInfo", weight 0. With a window
    of 2 calls, the third waits until the first is 300 s old; weight-budget calls are not held."""
    assert FUNDING_WINDOW_S == 300.0 and FUNDING_REQUESTS <= 500 // 5
    clock = ManualClock(T0)
    with FakeRest(futures=True, funding=fake_funding(48, interval_h=8)) as rest:
        client = BinanceRest(rest.url, venue=USDM, clock=clock, poll_s=0.002, funding_requests=2)
        client.funding_rates("BTCUSDT", 0, 48 * HOUR, threading.Event())
        clock.advance(100)
        client.funding_rates("ETHUSDT", 0, 48 * HOUR, threading.Event())
        caller, got = in_thread(client.funding_rates, "BTCUSDT", 0, 8 * HOUR + 1, threading.Event())
        clock.advance(199)  # T0 + 299: the first call is still inside the window
        reads = clock.reads
        eventually(lambda: clock.reads >= reads + 10)
        assert len(rest.requests) == 2 and caller.is_alive() and client.banned_until_ms is None
        clock.advance(1)
        caller.join(10)
    assert [r.funding_ms for r in got["result"].rates] == [8 * HOUR] and len(rest.requests) == 3


def test_a_stop_while_waiting_for_the_window_returns_nothing():
    clock = ManualClock(T0)
    with FakeRest(futures=True, funding=fake_funding(48, interval_h=8)) as rest:
        client = BinanceRest(rest.url, venue=USDM, clock=clock, poll_s=0.002, funding_requests=1)
        client.funding_rates("BTCUSDT", 0, 8 * HOUR, threading.Event())
        stop = threading.Event()
        caller, got = in_thread(client.funding_rates, "BTCUSDT", 0, 8 * HOUR, stop)
        reads = clock.reads
        eventually(lambda: clock.reads >= reads + 5)
        stop.set()
        caller.join(5)
    assert got["result"].rates == () and len(rest.requests) == 1


# ------------------------------------------------------------------------------------------ the loader
MINUTE = 60_000
NOW = 1_796_083_200_000 + 30 * MINUTE  # 2026-12-01 00:30 UTC
PRICES = {"BTCUSDT": 90_000.0, "ETHUSDT": 3_100.0}


def loader_for(rest: FakeRest, store_path, clock: ManualClock, emitted: list | None = None,
               lookback_h: int = 48) -> FundingLoader:
    client = BinanceRest(rest.url, venue=USDM, retry=FAST_RETRY)
    return FundingLoader(client, lambda: SqliteTickStore(store_path), lookback_h * HOUR,
                         emit=None if emitted is None else emitted.append, clock=clock.now_ms, poll_s=0.01)


def times_h(store_path, symbol: str) -> list[float]:
    with SqliteTickStore(store_path) as store:
        return [(r.funding_ms - NOW) / HOUR for r in store.funding(symbol)]


def coverage(store_path, symbol: str) -> tuple[int, int] | None:
    with SqliteTickStore(store_path) as store:
        return store.funding_coverage(symbol)


def test_the_loader_fetches_the_retained_history_then_each_funding_time_and_a_restart_only_the_hole(tmp_path):
    path = tmp_path / "futures.sqlite3"
    clock = ManualClock(NOW / 1000)
    fake = FakeFunding(PRICES, first_ms=NOW - 100 * HOUR, until_ms=NOW)
    with FakeRest(futures=True, funding=fake) as rest:
        loader = loader_for(rest, path, clock)
        loader.start(["BTCUSDT.P", "ETHUSDT.P"])
        try:
            eventually(lambda: loader.fetches == 2)
            # 48 h back from 00:30: the 8-hourly events from Nov 29 08:00 to Dec 1 00:00.
            assert times_h(path, "BTCUSDT") == [-40.5, -32.5, -24.5, -16.5, -8.5, -0.5]
            assert len(times_h(path, "ETHUSDT")) == 6
            # Known through the end of the hour: no funding time falls before 01:00.
            assert coverage(path, "BTCUSDT") == (NOW - 48 * HOUR, NOW + 30 * MINUTE - 1)
            # Asked up to now: an event listed early (right after its time) counts too.
            assert [(int(q["startTime"]), int(q["endTime"])) for q in rest.requests] == [
                (NOW - 48 * HOUR, NOW)] * 2
            assert loader.errors == ()
            # The next look: 2 min after the next whole hour; what is after the known span, and the day
            # before its end again (an event listed late; test_an_event_listed_late_is_still_stored...).
            fake.until_ms = NOW + 7 * HOUR + 32 * MINUTE
            clock.advance((7 * HOUR + 32 * MINUTE) / 1000)  # 08:02: the 08:00 event is out
            eventually(lambda: loader.fetches == 4)
            assert times_h(path, "BTCUSDT")[-2:] == [-0.5, 7.5]
            assert [int(q["startTime"]) for q in rest.requests[2:]] == [NOW + 30 * MINUTE - 24 * HOUR] * 2
            assert coverage(path, "BTCUSDT") == (NOW - 48 * HOUR, NOW + 8 * HOUR + 30 * MINUTE - 1)
        finally:
            loader.stop()
        sent = len(rest.requests)
        again = loader_for(rest, path, clock)  # a restart within the hour: nothing is missing
        again.start(["BTCUSDT.P", "ETHUSDT.P"])
        try:
            eventually(lambda: again.fetches == 2)
        finally:
            again.stop()
        assert len(rest.requests) == sent and again.stored == 0
    assert len(times_h(path, "BTCUSDT")) == 7  # stored once however often fetched



def test_an_event_listed_late_is_still_stored_at_a_later_look(tmp_path):
    """The span known reaches the end of the hour on the word that a funding time is listed within
    a minute. When it is listed later (the exchange slow, or this machine's clock ahead of it), the
    next look must still fetch it: each look asks again for the day before the known span's end
    (one page, rows stored once), else that event was lost for good and counted as zero funding."""
    path = tmp_path / "futures.sqlite3"
    clock = ManualClock(NOW / 1000)
    fake = FakeFunding(PRICES, first_ms=NOW - 100 * HOUR, until_ms=NOW)
    with FakeRest(futures=True, funding=fake) as rest:
        loader = loader_for(rest, path, clock)
        loader.start(["BTCUSDT.P"])
        try:
            eventually(lambda: loader.fetches == 1)
            fake.until_ms = NOW + 7 * HOUR + 29 * MINUTE  # at 08:02 the 08:00 event is not listed yet
            clock.advance((7 * HOUR + 32 * MINUTE) / 1000)
            eventually(lambda: loader.fetches == 2)
            assert times_h(path, "BTCUSDT")[-1] == -0.5
            fake.until_ms = NOW + 8 * HOUR + 32 * MINUTE  # listed by the next look, at 09:02
            clock.advance(HOUR / 1000)
            eventually(lambda: loader.fetches == 3)
            assert times_h(path, "BTCUSDT")[-2:] == [-0.5, 7.5]
            assert loader.errors == ()
        finally:
            loader.stop()
    assert len(times_h(path, "BTCUSDT")) == 7  # the day asked for again is stored once

def test_a_malformed_row_is_named_not_stored_and_the_known_span_stops_before_it(tmp_path):
    path = tmp_path / "futures.sqlite3"
    clock = ManualClock(NOW / 1000)
    emitted: list = []

    def garble(path_: str, params: dict[str, str], rows: list) -> list:
        for row in rows:
            if row["fundingTime"] == NOW - 16 * HOUR - 30 * MINUTE:
                row["fundingRate"] = "NaN-ish"
        return rows

    with FakeRest(futures=True, funding=FakeFunding(PRICES, first_ms=NOW - 100 * HOUR, until_ms=NOW)) as rest:
        rest.tamper = garble
        loader = loader_for(rest, path, clock, emitted)
        loader.start(["ETHUSDT.P"])
        try:
            eventually(lambda: loader.fetches == 1)
            assert times_h(path, "ETHUSDT") == [-40.5, -32.5, -24.5]  # nothing at or after the garbled one
            assert coverage(path, "ETHUSDT") == (NOW - 48 * HOUR, NOW - 16 * HOUR - 30 * MINUTE - 1)
            [error] = [e.detail for e in emitted if e.kind.value == "error"]
            assert error.startswith("funding ETHUSDT.P: ETHUSDT fundingRate row #3 has an invalid fundingRate "
                                    "'NaN-ish'")
            assert error.endswith("not stored") and loader.errors == (error,)
            # Every event names the leg, as the rest of the futures database and the page do.
            assert {e.symbol for e in emitted} == {"ETHUSDT.P"}
            assert [e.detail for e in emitted if e.kind.value == "history"] == ["ETHUSDT.P funding: 3 events"]
            rest.tamper = None  # the exchange answers well again: the next look fills the rest
            clock.advance((32 * MINUTE) / 1000)
            eventually(lambda: loader.fetches == 2)
            assert times_h(path, "ETHUSDT") == [-40.5, -32.5, -24.5, -16.5, -8.5, -0.5]
            assert coverage(path, "ETHUSDT") == (NOW - 48 * HOUR, NOW + 90 * MINUTE - 1)
        finally:
            loader.stop()


def test_an_event_listed_twice_is_stored_once_and_the_span_known_goes_past_it(tmp_path):
    path = tmp_path / "futures.sqlite3"
    clock = ManualClock(NOW / 1000)
    emitted: list = []

    def twice(path_: str, params: dict[str, str], rows: list) -> list:
        return [copy for row in rows
                for copy in ([row, dict(row)] if row["fundingTime"] == NOW - 16 * HOUR - 30 * MINUTE else [row])]

    with FakeRest(futures=True, funding=FakeFunding(PRICES, first_ms=NOW - 100 * HOUR, until_ms=NOW)) as rest:
        rest.tamper = twice
        loader = loader_for(rest, path, clock, emitted)
        loader.start(["ETHUSDT.P"])
        try:
            eventually(lambda: loader.fetches == 1)
        finally:
            loader.stop()
    assert times_h(path, "ETHUSDT") == [-40.5, -32.5, -24.5, -16.5, -8.5, -0.5]
    assert coverage(path, "ETHUSDT") == (NOW - 48 * HOUR, NOW + 30 * MINUTE - 1)
    assert loader.errors == () and [e.detail for e in emitted] == ["ETHUSDT.P funding: 6 events"]


def test_events_listed_out_of_order_are_all_stored_and_the_span_known_goes_past_them(tmp_path):
    path = tmp_path / "futures.sqlite3"
    clock = ManualClock(NOW / 1000)

    def swapped(path_: str, params: dict[str, str], rows: list) -> list:
        return [rows[0], rows[2], rows[1], *rows[3:]] if len(rows) > 3 else rows

    with FakeRest(futures=True, funding=FakeFunding(PRICES, first_ms=NOW - 100 * HOUR, until_ms=NOW)) as rest:
        rest.tamper = swapped
        loader = loader_for(rest, path, clock)
        loader.start(["ETHUSDT.P"])
        try:
            eventually(lambda: loader.fetches == 1)
        finally:
            loader.stop()
    assert times_h(path, "ETHUSDT") == [-40.5, -32.5, -24.5, -16.5, -8.5, -0.5]
    assert coverage(path, "ETHUSDT") == (NOW - 48 * HOUR, NOW + 30 * MINUTE - 1) and loader.errors == ()


def test_an_unknown_symbol_is_named_and_tried_again_later_while_the_others_load(tmp_path):
    path = tmp_path / "futures.sqlite3"
    clock = ManualClock(NOW / 1000)
    emitted: list = []
    with FakeRest(futures=True, funding=FakeFunding(PRICES, first_ms=NOW - 100 * HOUR, until_ms=NOW)) as rest:
        loader = loader_for(rest, path, clock, emitted)
        loader.start(["NOPEUSDT.P", "BTCUSDT.P"])
        try:
            eventually(lambda: loader.fetches == 1 and len(loader.errors) == 1)
            assert loader.errors == ("funding NOPEUSDT.P: Binance does not know the symbol NOPEUSDT",)
            assert any(e.symbol == "NOPEUSDT.P" and "does not know" in e.detail for e in emitted)
            assert len(times_h(path, "BTCUSDT")) == 6 and coverage(path, "NOPEUSDT") is None
            asked = sum(q["symbol"] == "NOPEUSDT" for q in rest.requests)
            clock.advance(RETRY_MS / 1000)
            eventually(lambda: sum(q["symbol"] == "NOPEUSDT" for q in rest.requests) == asked + 1)
            loader.watch(["BTCUSDT.P", "ETHUSDT.P"])  # a session asks for another symbol: fetched at once
            eventually(lambda: coverage(path, "ETHUSDT") is not None)
            assert sum(q["symbol"] == "BTCUSDT" for q in rest.requests) == 1  # a known one keeps its turn
        finally:
            loader.stop()


# ------------------------------------------------------------------------ the stream's next funding time
FUNDING = 1_796_083_200_000 + 8 * HOUR  # 2026-12-01 08:00 UTC, an 8-hourly funding time
NEXT = FUNDING + 8 * HOUR


def test_a_fetch_knows_up_to_the_hour_after_the_last_event_it_lists_and_only_real_funding_times_count():
    assert known_until_ms(FUNDING - 30 * MINUTE) == FUNDING - 1
    assert known_until_ms(FUNDING + 5_000) == FUNDING - 1  # 5 s after it, the event may not be listed yet
    assert known_until_ms(FUNDING + 5_000, FUNDING) == FUNDING + HOUR - 1  # listed: known to the next hour
    assert known_until_ms(FUNDING + 61_000, None) == FUNDING + HOUR - 1  # a minute after: listed or none

    def mark(event_ms: int, next_ms: int) -> MarkPrice:
        return MarkPrice("BTCUSDT.P", event_ms, event_ms, 90_000.0, 90_001.0, 0.0001, next_ms)

    assert announced_ms(mark(FUNDING - HOUR, FUNDING)) == FUNDING
    assert announced_ms(mark(FUNDING - 8 * HOUR, FUNDING)) == FUNDING  # Binance's longest interval
    assert announced_ms(None) is None
    assert announced_ms(mark(FUNDING - HOUR, FUNDING + 1)) is None  # not on a whole hour
    assert announced_ms(mark(FUNDING - 9 * HOUR, FUNDING)) is None  # further ahead than any interval
    assert announced_ms(mark(FUNDING, FUNDING)) is None  # not ahead of the update
    assert announced_ms(mark(FUNDING, 2**62 - 2**62 % HOUR)) is None  # absurd


def test_the_loader_refuses_a_spot_leg():
    loader = FundingLoader(BinanceRest("http://127.0.0.1:9", venue=USDM), lambda: SqliteTickStore(":memory:"), HOUR)
    with pytest.raises(ValueError, match=r"'ETHUSDT' is not a perpetual leg .*ETHUSDT\.P.*spot pays no funding"):
        loader.watch(["ETHUSDT"])
    with pytest.raises(ValueError, match="invalid leg 'ETH/USDT'"):
        loader.watch(["ETH/USDT"])


@pytest.fixture
def streamed(tmp_path):
    """A futures engine fed by the fake USDⓈ-M stream, a fake REST server listing 8-hourly funding up
    to 02:30, and a loader on a manual clock at 02:30 reading the engine's mark prices, started."""
    clock = ManualClock((FUNDING - 5 * HOUR - 30 * MINUTE) / 1000)
    funding = FakeFunding(PRICES, first_ms=FUNDING - 100 * HOUR, until_ms=clock.now_ms())
    settings = resolve(Settings.of(source="binance-futures", ws_url="ws://127.0.0.1:9", symbols=("BTCUSDT",),
                                   **FAST))
    with FakeBinance(futures=True, ping_interval=0.5) as fake, FakeRest(futures=True, funding=funding) as rest:
        feed = settings.replace(ws_url=fake.url).feed
        engine = Engine(feed, FUTURES_SPEC.create(feed), FUTURES_SPEC.capabilities)
        client = BinanceRest(rest.url, venue=USDM, retry=FAST_RETRY)
        path = tmp_path / "futures.sqlite3"
        loader = FundingLoader(client, lambda: SqliteTickStore(path), 48 * HOUR, marks=engine.mark_price,
                               clock=clock.now_ms, poll_s=0.01)
        engine.start()
        loader.start(engine.symbols)
        try:
            eventually(lambda: fake.open_connections == 1 and loader.fetches == 1, timeout=10)
            yield fake, rest, funding, clock, loader, path
        finally:
            loader.stop()
            engine.stop()


def announce(fake: FakeBinance, event_ms: int, next_ms: int, path, until: int) -> None:
    """Send the stream's update (as Binance does, every second) until the known span reaches ``until``."""
    def reached() -> bool:
        fake.send_mark_price("BTCUSDT", 90_000.0, 90_001.0, 0.0001, next_ms, event_ms=event_ms)
        return (coverage(path, "BTCUSDT") or (0, 0))[1] == until

    eventually(reached, timeout=10, interval=0.02, message=lambda: f"known to {coverage(path, 'BTCUSDT')}")


def test_across_a_funding_time_the_span_stays_known_and_the_event_is_fetched_and_charged_once(streamed):
    """The stream announces 08:00: the span known reaches it at once (not 02:59:59.999 until the next
    hourly look), nothing is asked for in the hours before it, the look 5 s after it lists the event,
    and the next announcement carries the span on to 16:00. A trade held over 08:00 pays it once."""
    fake, rest, funding, clock, loader, path = streamed
    assert coverage(path, "BTCUSDT")[1] == FUNDING - 5 * HOUR - 1  # the look at 02:30: to the hour
    announce(fake, clock.now_ms() + 1_000, FUNDING, path, FUNDING - 1)
    clock.advance((5 * HOUR + 30 * MINUTE) / 1000 - 1)  # 07:59:59: every bar closed so far is known
    reads = clock.reads
    eventually(lambda: clock.reads >= reads + 20)
    assert loader.fetches == 1 and len(rest.requests) == 1  # no hourly looks: nothing to learn before 08:00
    assert coverage(path, "BTCUSDT")[1] == FUNDING - 1
    funding.until_ms = FUNDING  # Binance lists the 08:00 event
    clock.advance(1 + FETCH_DELAY_MS / 1000)
    eventually(lambda: loader.fetches == 2)
    assert coverage(path, "BTCUSDT")[1] == FUNDING + HOUR - 1  # listed: no other funding time before 09:00
    announce(fake, FUNDING + 6_000, NEXT, path, NEXT - 1)
    assert loader.errors == ()
    with SqliteTickStore(path) as store:
        assert [r.funding_ms for r in store.funding("BTCUSDT", FUNDING - HOUR, NEXT)] == [FUNDING]
        # 1 min bars whose close 26 is 08:00: the short spread 24→27 holds y over it.
        y, x, _ = market()
        close_ms = FUNDING + (np.arange(len(y), dtype=np.int64) - 26) * MINUTE
        history = funding_history(store, "BTCUSDT.P", int(close_ms[0]), int(close_ms[-1]))
    event = funding.event("BTCUSDT", FUNDING)
    result = backtest_mean_reversion(y, x, 10, entry=1.5, exit=0.0, hedge="static_ols", funding_y=history,
                                     close_ms=close_ms)
    assert result.funding_unknown == ()
    # Short y (-1 unit) receives mark × rate once: the event lies in the first trade alone.
    assert result.trades.loc[0, "funding"] == pytest.approx(float(event["markPrice"]) * float(event["fundingRate"]))
    assert result.total_funding == pytest.approx(result.trades.loc[0, "funding"])


def test_a_funding_time_not_listed_yet_is_looked_for_again_within_seconds_not_at_the_next_hour(streamed):
    fake, _rest, funding, clock, loader, path = streamed
    announce(fake, clock.now_ms() + 1_000, FUNDING, path, FUNDING - 1)
    clock.advance((5 * HOUR + 30 * MINUTE + FETCH_DELAY_MS) / 1000)  # 08:00:05, the event not listed yet
    eventually(lambda: loader.fetches == 2)
    assert coverage(path, "BTCUSDT")[1] == FUNDING - 1 and loader.errors == ()
    funding.until_ms = FUNDING
    clock.advance(UNLISTED_RETRY.delay_s(0))  # 08:00:10
    eventually(lambda: loader.fetches == 3)
    assert coverage(path, "BTCUSDT")[1] == FUNDING + HOUR - 1
    assert [t for t in times_h(path, "BTCUSDT") if t > 0] == [(FUNDING - NOW) / HOUR]


def test_a_failed_look_after_a_funding_time_waits_the_retry_not_a_loop_of_looks(streamed):
    fake, rest, funding, clock, loader, path = streamed
    announce(fake, clock.now_ms() + 1_000, FUNDING, path, FUNDING - 1)
    rest.faults.extend([(400, None)] * 3)  # refused: a RestError, not retried by the client
    funding.until_ms = FUNDING
    clock.advance((5 * HOUR + 30 * MINUTE + FETCH_DELAY_MS) / 1000)
    eventually(lambda: len(loader.errors) == 1)
    asked = len(rest.requests)
    reads = clock.reads
    eventually(lambda: clock.reads >= reads + 20)
    assert len(rest.requests) == asked and loader.fetches == 1  # the stream's time does not bring it back
    rest.faults.clear()
    clock.advance(RETRY_MS / 1000)
    eventually(lambda: loader.fetches == 2)
    assert coverage(path, "BTCUSDT")[1] == FUNDING + HOUR - 1


class FullDisk(SqliteTickStore):
    """A store that takes rows but cannot widen a span by itself (the disk full at that moment)."""

    def write_funding(self, symbol: str, rates, first_ms: int, last_ms: int) -> int:  # type: ignore[override]
        if not rates:
            raise StorageUnavailable(f"{self.path}: database or disk is full")
        return super().write_funding(symbol, rates, first_ms, last_ms)


def test_a_span_the_store_cannot_widen_is_reported_once_not_at_every_poll(tmp_path):
    clock = ManualClock((FUNDING - 5 * HOUR - 30 * MINUTE) / 1000)
    funding = FakeFunding(PRICES, first_ms=FUNDING - 100 * HOUR, until_ms=clock.now_ms())
    mark = MarkPrice("BTCUSDT.P", clock.now_ms() + 1_000, clock.now_ms() + 1_000, 90_000.0, 90_001.0, 0.0001, FUNDING)
    path = tmp_path / "futures.sqlite3"
    with FakeRest(futures=True, funding=funding) as rest:
        loader = FundingLoader(BinanceRest(rest.url, venue=USDM, retry=FAST_RETRY), lambda: FullDisk(path), 48 * HOUR,
                               marks=lambda leg: mark, clock=clock.now_ms, poll_s=0.01)
        loader.start(["BTCUSDT.P"])
        try:
            eventually(lambda: loader.fetches == 1 and len(loader.errors) == 1)
            reads = clock.reads
            eventually(lambda: clock.reads >= reads + 20)  # many polls later: still the one message
            [error] = loader.errors
            assert error.startswith("funding BTCUSDT.P: ") and error.endswith("database or disk is full")
            assert coverage(path, "BTCUSDT")[1] == FUNDING - 5 * HOUR - 1  # what the look knew, no more
        finally:
            loader.stop()


# ------------------------------------------------------------------------------------------ the service
def test_the_recorder_stores_funding_and_a_following_dashboard_reads_it(tmp_path):
    """A futures recorder (its own process) fetches the retained funding history; a dashboard that
    follows its database reads the same events and span; the feed's legs are named ``ETHUSDT.P``, and
    a plain ``ETHUSDT`` is spot there too (it pays no funding)."""
    start_ms = now_ms()
    # Events up to 2 h ago: none near the moment the recorder asks (what it lists is then plain).
    funding = FakeFunding(PRICES, first_ms=start_ms - 200 * HOUR, until_ms=start_ms - 2 * HOUR)
    with FakeBinance(ping_interval=0.5, futures=True) as fake, \
            FakeRest(futures=True, funding=funding, klines=FakeKlines(PRICES)) as rest:
        proc = recorder("--source", "binance-futures", "--ws-url", fake.url, "--rest-url", rest.url,
                        "--data-dir", str(tmp_path), "--backfill-max-trades", "0", "--history-hours", "1",
                        "--retention-hours", "24")
        try:
            eventually(lambda: coverage(tmp_path / "futures.sqlite3", "ETHUSDT") is not None, timeout=60)
            settings = Settings.of(source="binance-futures", ws_url=fake.url, rest_url=rest.url, data_dir=tmp_path,
                                   history_hours=1, backfill_max_trades=0)
            dashboard = Service.start(settings, follow=True)
            try:
                assert dashboard.following and dashboard.funding_loader is None  # the recorder fetches
                assert {"BTCUSDT.P", "ETHUSDT.P"} <= set(dashboard.symbols)
                got = dashboard.funding_history("ETHUSDT.P", start_ms - 24 * HOUR, now_ms())
                assert dashboard.is_perpetual("ETHUSDT.P") and not dashboard.is_perpetual("ETHUSDT")
                # What the Backtest tab hands the backtest: each perpetual leg's history over the closes.
                index = pd.date_range(end=pd.Timestamp(start_ms - HOUR, unit="ms", tz="UTC"), periods=23, freq="1h")
                closes = pd.DataFrame({"ETHUSDT.P": 3_100.0, "BTCUSDT.P": 90_000.0}, index=index)
                tab = perpetual_funding(dashboard, closes, ("ETHUSDT.P", "BTCUSDT.P"), HOUR)
            finally:
                dashboard.stop()
            proc.send_signal(signal.SIGINT)
            out, _ = proc.communicate(timeout=30)
        finally:
            proc.kill()
    assert proc.returncode == 0, out
    assert "Traceback" not in out
    assert sorted({p for p in rest.paths if "funding" in p}) == [PATH]
    with SqliteTickStore(tmp_path / "futures.sqlite3") as store:  # the feed tab's events name the legs
        loaded = [(e.symbol, e.detail) for e in store.feed_events(kinds=[EventKind.HISTORY]) if "funding" in e.detail]
    assert {symbol for symbol, _ in loaded} == {"BTCUSDT.P", "ETHUSDT.P"}
    assert all(detail.startswith(f"{symbol} funding: ") for symbol, detail in loaded)
    expected = funding.times(start_ms - 24 * HOUR, start_ms)
    assert list(got.times_ms) == expected and len(expected) in (2, 3)
    assert got.known_from_ms is not None and got.known_to_ms is not None
    assert got.known_from_ms <= start_ms - 24 * HOUR + 60_000 and got.known_to_ms >= start_ms
    assert np.all(np.isfinite(got.marks)) and np.all(np.abs(got.rates) < 5e-4)
    assert set(tab) == {"ETHUSDT.P", "BTCUSDT.P"} and tab["ETHUSDT.P"].known_to_ms == got.known_to_ms
    assert list(tab["ETHUSDT.P"].times_ms) == [t for t in expected if index[0].value // 10**6 + HOUR <= t]


def test_which_legs_pay_funding():
    assert is_perpetual("ETHUSDT.P") and is_perpetual("ethusdt.p")
    assert not is_perpetual("ETHUSDT")  # spot never pays, on whichever page it is shown
    assert not is_perpetual("my upload 2024")  # a dataset's name is no leg


# ------------------------------------------------------------------------------------------ reading while written
class _Interleaved:
    """A tick store whose reads let another process act between the first read of a call and the next:
    ``between`` runs once, right after the first funding read returns (what a recorder committing, or
    pruning, at that moment does to a dashboard reading the same database)."""

    def __init__(self, store, between) -> None:
        self._store, self._between = store, between

    def _read(self, name, *args):
        found = getattr(self._store, name)(*args)
        if self._between is not None:
            between, self._between = self._between, None
            between()
        return found

    def funding(self, *args):
        return self._read("funding", *args)

    def funding_coverage(self, *args):
        return self._read("funding_coverage", *args)


def _open_funding_stores(backend, tmp_path, request):
    """Two stores of one database, as a dashboard and a recorder in their own processes hold them."""
    if backend == "sqlite":
        return SqliteTickStore(tmp_path / "futures.sqlite3"), SqliteTickStore(tmp_path / "futures.sqlite3")
    from storage.postgres.ticks import PostgresTickStore
    url = request.getfixturevalue("pg_url")
    return PostgresTickStore(url, "futures"), PostgresTickStore(url, "futures")


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
@pytest.mark.parametrize("meanwhile", ["an event is stored", "old events are pruned"])
def test_a_reader_never_takes_a_span_as_known_without_its_events_while_another_process_writes(
        backend, meanwhile, tmp_path, request):
    """The events and the span known are two reads: a recorder committing a funding event (and the span
    past it) between them made a following dashboard take the span as known without the event, so the
    backtest charged no funding at that funding time; a prune between them may not do the same with the
    events it deletes. Whatever commits in between, every event inside the span read is in the events read."""
    first = 1_800_000_000_000  # a funding time (a whole 8 h)
    funding_at = first + 8 * HOUR
    old = FundingRate("ETHUSDT", first, 1e-4, 3_000.0)
    new = FundingRate("ETHUSDT", funding_at, 2e-4, 3_100.0)
    reader, writer = _open_funding_stores(backend, tmp_path, request)
    with reader, writer:
        writer.write_funding("ETHUSDT", [old], first - 8 * HOUR, funding_at - 1)
        if meanwhile == "an event is stored":
            def between() -> None:
                writer.write_funding("ETHUSDT", [new], funding_at, funding_at + 8 * HOUR - 1)
        else:
            def between() -> None:
                writer.prune(first + 1)
        got = funding_history(_Interleaved(reader, between), "ETHUSDT.P", first - 8 * HOUR, funding_at + 8 * HOUR)
    for event in (old, new):
        if got.known_from_ms is not None and got.known_from_ms <= event.funding_ms <= got.known_to_ms:
            assert event.funding_ms in list(got.times_ms), (meanwhile, got)


def test_a_database_that_cannot_be_opened_at_start_is_tried_again_not_given_up(tmp_path):
    """The loader opens its store when its thread starts: a server restarting at that moment (or a
    database briefly locked) ended the thread for good, and the recorder kept no funding until restarted."""
    path = tmp_path / "futures.sqlite3"
    clock = ManualClock(NOW / 1000)
    opened = []

    def open_store():
        opened.append(clock.now_ms())
        if len(opened) == 1:
            raise StorageUnavailable("cannot use database 'futures': the server is restarting")
        return SqliteTickStore(path)

    with FakeRest(futures=True, funding=FakeFunding(PRICES, first_ms=NOW - 100 * HOUR, until_ms=NOW)) as rest:
        loader = FundingLoader(BinanceRest(rest.url, venue=USDM, retry=FAST_RETRY), open_store, 48 * HOUR,
                               clock=clock.now_ms, poll_s=0.01)
        loader.start(["BTCUSDT.P"])
        try:
            eventually(lambda: len(loader.errors) == 1)
            assert "cannot open the database" in loader.errors[0] and "restarting" in loader.errors[0]
            clock.advance(RETRY_MS / 1000)
            eventually(lambda: loader.fetches == 1, timeout=10, message="the loader gave up on its database")
        finally:
            loader.stop()
    assert len(opened) == 2 and opened[1] - opened[0] >= RETRY_MS
    assert coverage(path, "BTCUSDT") is not None
