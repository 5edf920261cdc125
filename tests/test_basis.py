"""Pairs across venues (issue 22.3): spot ``ETHUSDT`` against the perpetual ``ETHUSDT.P``, the basis.

Two fake Binance servers on 127.0.0.1, spot and USDⓈ-M, each send their own prices for ETHUSDT.
A page of both legs reads the two venues' services from one registry (each started once, shared):
its charts' bars, stats, live values, funding and feed line carry each leg's own prices and state;
a session never stops a venue another session's page reads; a failing venue shows its state while
the other keeps flowing.
"""

from __future__ import annotations

import asyncio
import math
import socket
import time
from collections.abc import Iterator
from dataclasses import replace

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from config import Settings
from domain import Market
from ingestion.sources import source_for
from pairs.compute import PairParams
from pairs.shared import ViewQuery
from records import FundingRate
from records.alerts import AlertRule
from service import JointService, Service, ServiceRegistry, TooManyFeeds
from storage import open_alerts, open_ticks
from testkit.fake_binance import FakeBinance
from testkit.waiting import eventually
from tests.test_app import APP, app_env  # noqa: F401  (app_env: the fixture, used by name)
from tests.test_binance_source import FAST
from tests.test_live_push import _messages
from ui import live
from ui.backtest_panel import perpetual_funding
from ui.plain import unescaped
from ui.status import feed_is_failing

BARS = 40  # one trade a second on each venue: a 10-bar window has its analytics after 11
SPOT_BASE, PERP_PREMIUM = 3_000.0, 1.5  # the perpetual trades 1.5 above spot (a contango basis)


def spot_price(i: int) -> float:
    return SPOT_BASE + 5 * math.sin(i / 3)


def perp_price(i: int) -> float:
    return spot_price(i) + PERP_PREMIUM + 0.2 * math.cos(i)


@pytest.fixture
def fakes() -> Iterator[dict[str, FakeBinance]]:
    with FakeBinance(ping_interval=None) as spot, FakeBinance(ping_interval=None, futures=True) as futures:
        yield {"binance": spot, "binance-futures": futures}


def registry_for(urls: dict[str, str], max_feeds: int = 4) -> ServiceRegistry:
    """A dashboard's registry whose Binance sources reach their own fake (QUANT_WS_URL is one URL for all)."""
    return ServiceRegistry(max_feeds, start=lambda settings: Service.start(
        settings.replace(ws_url=urls[settings.feed.source]) if settings.feed.source in urls else settings,
        follow=True))


def page_settings(tmp_path, source: str = "binance", symbols: str = "ETHUSDT,ETHUSDT.P") -> Settings:
    return Settings.of(source=source, symbols=symbols, data_dir=tmp_path, **FAST)


def send_basis(fakes: dict[str, FakeBinance], now: int) -> None:
    start = (now - BARS * 1_000) // 1_000 * 1_000  # on whole seconds: both venues' i-th trades share one 1 s bar
    fakes["binance"].send_trades([("ETHUSDT", 1 + i, spot_price(i), 0.5, start + i * 1_000) for i in range(BARS)])
    fakes["binance-futures"].send_trades([("ETHUSDT", 7_000 + i, perp_price(i), 2.0, start + i * 1_000 + 300)
                                          for i in range(BARS)])


QUERY = ViewQuery(("ETHUSDT", "ETHUSDT.P"), 1_000, 3_600_000, PairParams("ETHUSDT.P", "ETHUSDT", window=10))


def test_a_basis_pair_reads_each_leg_from_its_own_venue(fakes, tmp_path):
    registry = registry_for({name: fake.url for name, fake in fakes.items()})
    try:
        page = registry.acquire_legs("tab-1", page_settings(tmp_path))
        assert isinstance(page, JointService)
        assert set(registry.services()) == {"live", "futures"}  # one feed per venue
        spot, futures = page.services["spot"], page.services["um"]
        assert (spot.symbols, futures.symbols) == (("ETHUSDT",), ("ETHUSDT.P",))
        eventually(lambda: fakes["binance"].open_connections == 1 and fakes["binance-futures"].open_connections == 1,
                   timeout=10, message="a venue never connected")
        now = int(futures.engine.market_now_ms() or 0)
        send_basis(fakes, now - 5_000)  # every bar closed before the view is read
        eventually(lambda: futures.writer.committed_trades == BARS and spot.writer.committed_trades == BARS,
                   timeout=15)

        # Live values: each leg's last price from its own venue.
        assert page.engine.last_trade("ETHUSDT").price == pytest.approx(spot_price(BARS - 1))
        assert page.engine.last_trade("ETHUSDT.P").price == pytest.approx(perp_price(BARS - 1))

        def analysed() -> bool:
            return page.shared.ask(QUERY).pair is not None

        eventually(analysed, timeout=15, interval=0.1, message="the basis pair never had its analytics")
        view = page.shared.ask(QUERY)
        closes = view.bars.aligned.closes
        # Bars of both venues on one grid; each leg's closes are its own venue's prices.
        assert list(closes["ETHUSDT"].iloc[-5:]) == pytest.approx([spot_price(i) for i in range(BARS - 5, BARS)])
        assert list(closes["ETHUSDT.P"].iloc[-5:]) == pytest.approx([perp_price(i) for i in range(BARS - 5, BARS)])
        spread = view.pair.spread.dropna()
        assert len(spread) > 0 and math.isfinite(float(view.pair.beta.dropna().iloc[-1]))

        # The live panel agrees with the charts and names both venues' feeds; only the perpetual has funding.
        context = page.live_context(QUERY)
        assert context is not None
        values = live.snapshot(page, "ETHUSDT.P", "ETHUSDT", context)
        assert (values["y"], values["x"]) == pytest.approx((perp_price(BARS - 1), spot_price(BARS - 1)))
        assert values["z"] is not None
        line = live.feed_lines(page)
        assert "LIVE Binance spot" in line and "LIVE Binance USDⓈ-M futures" in line
        assert live.funding_line(page, "ETHUSDT.P", "ETHUSDT", now) == "ETHUSDT.P funding —"

        # The pushed panel (server.py) streams the same values and both venues' feed line.
        board = live.LiveBoard()
        board.register("c" * 32, page, QUERY)
        pushed = asyncio.run(_messages(board, "c" * 32, lambda m: any("feed" in x for x in m) and
                                       any(x.get("z") is not None for x in m)))
        assert next(m["y"] for m in pushed if "y" in m) == pytest.approx(perp_price(BARS - 1))
        assert next(m["x"] for m in pushed if "x" in m) == pytest.approx(spot_price(BARS - 1))
        assert " | " in next(m["feed"] for m in pushed if "feed" in m)
        assert next(m["funding"] for m in pushed if "funding" in m) == "ETHUSDT.P funding —"

        # The same page from another tab: the same joint view and the same two services.
        again = registry.acquire_legs("tab-2", page_settings(tmp_path, source="binance-futures"))
        assert isinstance(again, JointService) and again.services == page.services
        assert again.home is page.services["um"] and page.home is page.services["spot"]  # each page's own source
        assert registry.acquire_legs("tab-1", page_settings(tmp_path)) is page  # its analytics are shared
    finally:
        registry.stop_all()
    with open_ticks(spot.site) as store:
        assert store.symbols() == ["ETHUSDT"]  # each venue stores its own leg, never the other's
    with open_ticks(futures.site) as store:
        assert store.symbols() == ["ETHUSDT.P"]


def test_a_session_cannot_stop_the_venues_another_sessions_page_reads(fakes, tmp_path):
    """Two feeds allowed: a page of both venues holds both; another session's page cannot take one."""
    registry = registry_for({name: fake.url for name, fake in fakes.items()}, max_feeds=2)
    try:
        page = registry.acquire_legs("tab-1", page_settings(tmp_path))
        with pytest.raises(TooManyFeeds, match="maximum of 2 feeds"):
            registry.acquire_legs("tab-2", page_settings(tmp_path, source="simulated", symbols="BTCUSDT,ETHUSDT"))
        assert page.running and all(not s.engine.stopped for s in page.services.values())
        # A page of one venue shares the one already running.
        spot_only = registry.acquire_legs("tab-2", page_settings(tmp_path, symbols="ETHUSDT,BTCUSDT"))
        assert spot_only is page.services["spot"] and set(spot_only.symbols) == {"ETHUSDT", "BTCUSDT"}
    finally:
        registry.stop_all()


def test_a_failing_venue_shows_its_state_and_the_other_keeps_flowing(fakes, tmp_path):
    with socket.socket() as probe:  # a loopback port nobody listens on: the futures feed cannot connect
        probe.bind(("127.0.0.1", 0))
        dead = f"ws://127.0.0.1:{probe.getsockname()[1]}"
    registry = registry_for({"binance": fakes["binance"].url, "binance-futures": dead})
    try:
        page = registry.acquire_legs("tab-1", page_settings(tmp_path))
        assert isinstance(page, JointService)
        eventually(lambda: feed_is_failing(page.statuses()[1]), timeout=15, message="the futures feed never failed")
        spot_status, futures_status = page.statuses()
        assert futures_status.label == "LIVE Binance USDⓈ-M futures" and not feed_is_failing(spot_status)
        eventually(lambda: fakes["binance"].open_connections == 1, timeout=10)
        fakes["binance"].send_trade("ETHUSDT", 1, 3_000.5, 0.1)
        eventually(lambda: page.engine.last_trade("ETHUSDT") is not None, timeout=10)
        assert page.engine.last_trade("ETHUSDT.P") is None
        assert "reconnecting" in live.feed_lines(page).split(" | ")[1]
    finally:
        registry.stop_all()


def test_alert_rules_go_to_their_legs_venue_and_a_pair_across_venues_is_refused(fakes, tmp_path):
    registry = registry_for({name: fake.url for name, fake in fakes.items()})
    try:
        page = registry.acquire_legs("tab-1", page_settings(tmp_path))
        basis = AlertRule(metric="zscore", operator=">", threshold=2.0, pair=("ETHUSDT.P", "ETHUSDT"),
                          timeframe_ms=1_000, window=60)
        with pytest.raises(ValueError, match=r"ETHUSDT\.P/ETHUSDT joins legs of two venues"):
            page.add_rule(basis)
        perp = AlertRule(metric="price", operator=">", threshold=4_000.0, symbol="ETHUSDT.P", timeframe_ms=1_000,
                         window=60)
        stored, added = page.add_rule(perp)
        assert added and stored.id is not None
        with open_alerts(page.services["um"].site) as store:
            assert [r.describe() for r in store.rules()] == ["ETHUSDT.P price > 4000"]
        # The page lists its own (spot) source's rules: a rule there on a leg spot does not watch is marked.
        spot_price = AlertRule(metric="price", operator=">", threshold=1.0, symbol="ETHUSDT", timeframe_ms=1_000)
        assert page.unwatched_legs(spot_price) == ()
        assert page.unwatched_legs(replace(spot_price, symbol="SOLUSDT")) == ("SOLUSDT",)
    finally:
        registry.stop_all()


def test_each_market_has_its_live_source():
    assert (source_for(Market.SPOT), source_for(Market.USDM)) == ("binance", "binance-futures")


@pytest.mark.usefixtures("app_env")
def test_the_spot_page_takes_a_perpetual_leg_and_shows_the_basis(monkeypatch, fakes):
    """A user on the spot page types ``ETHUSDT,ETHUSDT.P``: the page reads both venues (each from its own
    fake), its live panel shows each leg's own price, its feed line both venues, its table the leg names."""
    urls = {name: fake.url for name, fake in fakes.items()}
    start = Service.start
    monkeypatch.setattr(Service, "start", classmethod(
        lambda _cls, settings, **kwargs: start(settings.replace(ws_url=urls[settings.feed.source]), **kwargs)))
    for name, value in {"QUANT_SOURCE": "binance", "QUANT_HISTORY_HOURS": "0",
                        "QUANT_BACKFILL_MAX_TRADES": "0"}.items():
        monkeypatch.setenv(name, value)
    at = AppTest.from_file(APP, default_timeout=30).run()
    at.text_input(key="symbols").input("ETHUSDT,ETHUSDT.P").run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    at.selectbox(key="pair_y").set_value("ETHUSDT.P").run()
    assert (at.selectbox(key="pair_y").value, at.selectbox(key="pair_x").value) == ("ETHUSDT.P", "ETHUSDT")
    eventually(lambda: fakes["binance-futures"].open_connections == 1, timeout=20, message="no futures feed started")
    # Every bar closed by the time the tabs are read, the 1 min bar of the per-minute table too: the
    # trades end 2 s before the current minute began.
    send_basis(fakes, time.time_ns() // 1_000_000 // 60_000 * 60_000 - 2_000)

    def priced() -> bool:
        at.run()
        shown = {m.label: m.value for m in at.metric}
        return shown.get("ETHUSDT.P last") == f"{perp_price(BARS - 1):,.2f}" and \
            shown.get("ETHUSDT last") == f"{spot_price(BARS - 1):,.2f}"

    eventually(priced, timeout=30, interval=0.3,
               message=lambda: f"prices shown: {[(m.label, m.value) for m in at.metric]}")
    assert not at.exception
    feed = next(unescaped(c.value) for c in at.caption if "ticks/s" in c.value)
    assert "LIVE Binance spot" in feed and "LIVE Binance USDⓈ-M futures" in feed
    assert any(unescaped(c.value) == "ETHUSDT.P funding —" for c in at.caption)  # the spot leg has none
    at.session_state["view_tab"] = "Table & export"
    at.run()
    assert not at.exception
    assert any("ETHUSDT.P_return" in d.value.columns and "ETHUSDT_return" in d.value.columns for d in at.dataframe)
    for tab in ("Stats & tests", "Scanner", "Backtest", "Alerts", "Feed"):  # every tab draws over both venues
        at.session_state["view_tab"] = tab
        at.run()
        assert not at.exception and not at.error, (tab, [e.value for e in at.error])
        if tab == "Stats & tests":  # each leg's summary from its own venue's bars
            summary = next(d.value for d in at.dataframe if "volatility % (ann.)" in d.value.columns)
            assert summary.loc["ETHUSDT.P", "last"] == pytest.approx(perp_price(BARS - 1))
            assert summary.loc["ETHUSDT", "last"] == pytest.approx(spot_price(BARS - 1))


def test_a_basis_page_charges_funding_from_the_futures_store_whatever_its_own_source(fakes, tmp_path):
    """The Backtest tab of a spot page with ``ETHUSDT.P`` reads that leg's funding from the futures
    database (through the futures venue's service), not the spot page's own; on the futures page of
    the same pair, the spot ``ETHUSDT`` pays nothing."""
    hour = 3_600_000
    registry = registry_for({name: fake.url for name, fake in fakes.items()})
    try:
        page = registry.acquire_legs("tab-1", page_settings(tmp_path))
        assert isinstance(page, JointService) and page.home is page.services["spot"]
        futures = page.services["um"]
        eventually(futures.site.exists, timeout=10, message="the futures database was never created")
        first = 1_765_000_000_000 // hour * hour
        events = [FundingRate("ETHUSDT", first + k * 8 * hour, 1e-4 * (k + 1), 3_000.0) for k in range(3)]
        with open_ticks(futures.site) as store:  # what the futures venue's funding loader stores
            store.write_funding("ETHUSDT", events, first - hour, first + 20 * hour)
        closes = pd.DataFrame({"ETHUSDT.P": 3_001.0, "ETHUSDT": 3_000.0},
                              index=pd.date_range(pd.Timestamp(first, unit="ms", tz="UTC"), periods=20, freq="1h"))
        tab = perpetual_funding(page, closes, ("ETHUSDT.P", "ETHUSDT"), hour)
        assert set(tab) == {"ETHUSDT.P"}  # the spot leg never pays
        assert list(tab["ETHUSDT.P"].times_ms) == [e.funding_ms for e in events[1:]]  # after the first close
        assert list(tab["ETHUSDT.P"].rates) == pytest.approx([2e-4, 3e-4])
        assert (tab["ETHUSDT.P"].known_from_ms, tab["ETHUSDT.P"].known_to_ms) == (first - hour, first + 20 * hour)
        other = registry.acquire_legs("tab-2", page_settings(tmp_path, source="binance-futures"))
        assert isinstance(other, JointService) and other.home is futures
        assert set(perpetual_funding(other, closes, ("ETHUSDT", "ETHUSDT.P"), hour)) == {"ETHUSDT.P"}
    finally:
        registry.stop_all()
