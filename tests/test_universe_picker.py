"""The sidebar's symbol picker on a live Binance source (AppTest): the venue's listing from a fake REST
server, top N by 24 h quote volume in one click, pasted symbols refused by name, delisted or halted
watched symbols flagged, and typed symbols when the listing cannot be had."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from streamlit.testing.v1 import AppTest

from domain import Leg, Market
from ingestion.binance import SPOT, USDM
from ingestion.binance.rest import RestError
from ingestion.binance.universe import _CACHES as universe_caches
from ingestion.binance.universe import Listing, Universe, UniverseCache
from records import now_ms
from testkit.fake_binance import FakeBinance
from testkit.fake_rest import FakeListing, FakeRest
from tests.test_app import APP, app_env  # noqa: F401  (app_env: the fixture, used by name)
from ui.plain import unescaped

LISTINGS = [FakeListing("BTCUSDT", 3e9), FakeListing("ETHUSDT", 2e9), FakeListing("SOLUSDT", 9e8),
            FakeListing("XRPUSDT", 4e8), FakeListing("DOGEUSDT", 8e8), FakeListing("BNBUSDT", 1e8),
            FakeListing("ETHBTC", 5e3, quote="BTC"),
            FakeListing("BCCUSDT", 5e9, status="BREAK"),  # delisted: the largest volume, never a top pick
            FakeListing("LUNAUSDT", 1e3, status="HALT")]


@pytest.fixture
def live(monkeypatch, request) -> Iterator[tuple[FakeBinance, FakeRest]]:
    request.getfixturevalue("app_env")
    futures = getattr(request, "param", False)
    listings = [*LISTINGS, FakeListing("BTCUSDT_260327", 1e9, contract_type="CURRENT_QUARTER")] if futures \
        else LISTINGS
    with FakeBinance(ping_interval=None, futures=futures) as fake, \
            FakeRest(futures=futures, listings=listings) as rest:
        monkeypatch.setenv("QUANT_SOURCE", "binance-futures" if futures else "binance")
        monkeypatch.setenv("QUANT_WS_URL", fake.url)
        monkeypatch.setenv("QUANT_REST_URL", rest.url)
        monkeypatch.setenv("QUANT_HISTORY_HOURS", "0")
        monkeypatch.setenv("QUANT_BACKFILL_MAX_TRADES", "0")
        yield fake, rest


def picker(at: AppTest, source: str = "binance"):
    return at.multiselect(key=f"universe_watched_{source}")


def sidebar_errors(at: AppTest) -> list[str]:
    return [unescaped(e.value) for e in at.sidebar.error]


def test_the_picker_lists_the_venues_trading_symbols_and_top_n_picks_by_quote_volume(live):
    _fake, rest = live
    at = AppTest.from_file(APP, default_timeout=30).run()
    assert not at.exception
    watched = picker(at)
    assert watched.value == ["BTCUSDT", "ETHUSDT"]  # the configured symbols, at first
    # USDT symbols that trade, searchable; neither the delisted, the halted nor the BTC-quoted one.
    assert sorted(watched.options) == ["BNBUSDT", "BTCUSDT", "DOGEUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT"]
    at.number_input(key="universe_top_n_binance").set_value(4).run()
    at.button(key="universe_top_binance").click().run()
    assert picker(at).value == ["BTCUSDT", "ETHUSDT", "SOLUSDT", "DOGEUSDT"]
    assert not at.exception and at.selectbox(key="pair_y").options == ["BTCUSDT", "ETHUSDT", "SOLUSDT", "DOGEUSDT"]
    at.selectbox(key="universe_quote_binance").set_value("BTC").run()
    # The BTC-quoted symbols now, and the watched USDT symbols stay.
    assert sorted(picker(at).options) == ["BTCUSDT", "DOGEUSDT", "ETHBTC", "ETHUSDT", "SOLUSDT"]
    assert picker(at).value == ["BTCUSDT", "ETHUSDT", "SOLUSDT", "DOGEUSDT"]
    # One exchangeInfo and one ticker call for every run and session of this venue: the list is cached.
    assert rest.paths.count("/api/v3/exchangeInfo") == 1 and rest.paths.count("/api/v3/ticker/24hr") == 1


def test_a_pasted_symbol_not_listed_or_not_trading_is_refused_by_name(live):
    at = AppTest.from_file(APP, default_timeout=30).run()
    at.text_input(key="universe_paste_binance").input("solusdt, NOPEUSDT, LUNAUSDT, ETH;DROP, BTCUSDT.P").run()
    assert picker(at).value == ["BTCUSDT", "ETHUSDT", "SOLUSDT"]  # the one listed, trading symbol added
    errors = sidebar_errors(at)
    assert "Refused: NOPEUSDT is not listed on Binance spot" in errors
    assert "Refused: LUNAUSDT is not trading (status HALT)" in errors
    assert any(e.startswith("Refused: invalid leg 'ETH;DROP'") for e in errors)
    # A perpetual is a leg of the other venue, checked against its listing: this fake serves spot's only.
    assert any(e.startswith("Refused: BTCUSDT.P: cannot fetch the Binance USDⓈ-M futures symbol list to check it")
               for e in errors), errors
    assert at.text_input(key="universe_paste_binance").value == ""  # the box is emptied for the next list
    assert not at.exception


def test_a_watched_symbol_that_is_delisted_stays_visible_flagged_and_its_feed_notice_says_so(live, monkeypatch):
    monkeypatch.setenv("QUANT_SYMBOLS", "BTCUSDT,BCCUSDT,ETHUSDT")
    at = AppTest.from_file(APP, default_timeout=30).run()
    assert not at.exception
    watched = picker(at)
    assert watched.value == ["BTCUSDT", "BCCUSDT", "ETHUSDT"]
    assert "BCCUSDT ⚠ BREAK" in watched.options and "BTCUSDT" in watched.options  # options as shown
    assert any("No trades will arrive for BCCUSDT is not trading (status BREAK)" in unescaped(w.value)
               for w in at.sidebar.warning)
    assert any("Not trading on Binance spot: BCCUSDT is not trading (status BREAK)" in unescaped(w.value)
               for w in at.main.warning)


@pytest.mark.parametrize("live", [True], indirect=True, ids=["usdm"])
def test_futures_legs_are_shown_as_perpetuals_and_quarterlies_are_not_offered(live):
    at = AppTest.from_file(APP, default_timeout=30).run()
    assert not at.exception
    watched = picker(at, "binance-futures")
    # As shown: perpetual leg names; no quarterly contract.
    assert sorted(watched.options) == ["BNBUSDT.P", "BTCUSDT.P", "DOGEUSDT.P", "ETHUSDT.P", "SOLUSDT.P", "XRPUSDT.P"]
    assert watched.value == ["BTCUSDT.P", "ETHUSDT.P"]  # the configured BTCUSDT,ETHUSDT as this venue's legs
    at.button(key="universe_top_binance-futures").click().run()  # N = 10: every trading USDT perpetual
    assert picker(at, "binance-futures").value == ["BTCUSDT.P", "ETHUSDT.P", "SOLUSDT.P", "DOGEUSDT.P",
                                                   "XRPUSDT.P", "BNBUSDT.P"]
    at.text_input(key="universe_paste_binance-futures").input("solusdt.p, NOPEUSDT.P, LUNAUSDT.P").run()
    assert picker(at, "binance-futures").value == ["BTCUSDT.P", "ETHUSDT.P", "SOLUSDT.P", "DOGEUSDT.P",
                                                   "XRPUSDT.P", "BNBUSDT.P"]
    assert {"Refused: NOPEUSDT.P is not listed on Binance USDⓈ-M futures (perpetuals)",
            "Refused: LUNAUSDT.P is not trading (status HALT)"} <= set(sidebar_errors(at))
    assert not at.exception and "BNBUSDT.P" in at.selectbox(key="pair_y").options  # the page's legs: perpetuals


def other_venue(monkeypatch, market: Market, rest_url: str, listings: list[FakeListing]) -> None:
    """The other Binance venue's listing, as its cache holds it (one fake REST server serves one venue)."""
    venue = {Market.SPOT: SPOT, Market.USDM: USDM}[market]
    universe = Universe(market, tuple(Listing(Leg(market, x.symbol), x.status, x.symbol.removesuffix(x.quote), x.quote)
                                      for x in listings), {x.symbol: x.quote_volume for x in listings}, now_ms())
    monkeypatch.setitem(universe_caches, (venue.source, rest_url), UniverseCache(lambda: universe))


@pytest.mark.parametrize("live", [False, True], indirect=True, ids=["spot-page", "futures-page"])
def test_a_leg_of_the_other_venue_is_added_by_name_checked_against_that_venues_listing(live, monkeypatch):
    """The basis: ``ETHUSDT.P`` pasted on the spot page, ``ETHUSDT`` on the futures page, each checked
    against the other venue's own listing and refused by name when it does not trade there."""
    _fake, rest = live
    futures_page = rest.futures
    source = "binance-futures" if futures_page else "binance"
    other = Market.SPOT if futures_page else Market.USDM
    other_listings = [FakeListing("ETHUSDT", 2e9), FakeListing("BCCUSDT", 1e3, status="BREAK"),
                      FakeListing("LUNAUSDT", 1e3, status="HALT" if other is Market.SPOT else "SETTLING")]
    other_venue(monkeypatch, other, rest.url, other_listings)
    home, basis = ("ETHUSDT.P", "ETHUSDT") if futures_page else ("ETHUSDT", "ETHUSDT.P")
    at = AppTest.from_file(APP, default_timeout=30).run()
    suffix = "" if other is Market.SPOT else ".P"
    at.text_input(key=f"universe_paste_{source}").input(f"{basis}, NOPEUSDT{suffix}, LUNAUSDT{suffix}").run()
    assert picker(at, source).value == [f"BTCUSDT{'.P' if futures_page else ''}", home, basis]
    venue = "spot" if other is Market.SPOT else "USDⓈ-M futures (perpetuals)"
    status = "HALT" if other is Market.SPOT else "SETTLING"
    assert {f"Refused: NOPEUSDT{suffix} is not listed on Binance {venue}",
            f"Refused: LUNAUSDT{suffix} is not trading (status {status})"} <= set(sidebar_errors(at))
    assert basis in at.selectbox(key="pair_y").options and not at.exception
    # A watched leg the other venue stops trading is flagged by that venue's listing.
    other_listings[0] = FakeListing("ETHUSDT", 2e9, status="BREAK")
    other_venue(monkeypatch, other, rest.url, other_listings)
    at.run()
    assert f"{basis} ⚠ BREAK" in picker(at, source).options
    assert any(f"No trades will arrive for {basis} is not trading (status BREAK)" in unescaped(w.value)
               for w in at.sidebar.warning)
    other_name = "Binance spot" if other is Market.SPOT else "Binance USDⓈ-M futures"
    assert any(f"Not trading on {other_name}: {basis} is not trading (status BREAK)" in unescaped(w.value)
               for w in at.main.warning), [w.value for w in at.main.warning]


@pytest.mark.usefixtures("app_env")
def test_without_the_listing_the_symbols_are_typed_and_the_sidebar_says_why(monkeypatch):
    with FakeBinance(ping_interval=None) as fake:
        monkeypatch.setenv("QUANT_WS_URL", fake.url)  # QUANT_REST_URL: refused (app_env)
        monkeypatch.setenv("QUANT_HISTORY_HOURS", "0")
        at = AppTest.from_file(APP, default_timeout=30).run()
        assert not at.exception
        assert any("Cannot fetch the symbol list" in unescaped(w.value) and "Type the symbols instead" in w.value
                   for w in at.sidebar.warning)
        assert at.text_input(key="symbols").value == "BTCUSDT,ETHUSDT"


@pytest.mark.usefixtures("app_env")
def test_offline_sources_keep_their_typed_symbols(monkeypatch):
    monkeypatch.setenv("QUANT_SOURCE", "simulated")
    at = AppTest.from_file(APP, default_timeout=30).run()
    assert not at.exception and at.text_input(key="symbols").value == "BTCUSDT,ETHUSDT"
    assert not [w for w in at.sidebar.warning if "symbol list" in w.value]


def test_a_pasted_list_longer_than_a_page_watches_adds_up_to_the_cap_and_refuses_the_rest_in_few_lines(
        live, monkeypatch):
    """A whole exchange's list pasted (hundreds of names, duplicates, both cases, commas and newlines):
    the legs fill the page's cap and the rest are refused in one line naming them, not added to a
    selection the page then refuses whole (``watch at most 200``, leaving hundreds of chips to remove
    by hand); hundreds of unknown names are told in a few lines, not one red box each."""
    import ui.universe

    _fake, rest = live
    monkeypatch.setattr(ui.universe, "MAX_SYMBOLS", 10)  # the cap (200) shrunk: each watched leg is a stream
    listed = [FakeListing(f"C{i:02d}USDT", 1e6 - i) for i in range(20)]
    other_venue(monkeypatch, Market.SPOT, rest.url, [*LISTINGS, *listed])
    at = AppTest.from_file(APP, default_timeout=30).run()
    names = [x.symbol for x in listed]
    at.text_input(key="universe_paste_binance").input(",".join(f"NOPE{i}USDT" for i in range(40)) + ",ETH;DROP").run()
    errors = sidebar_errors(at)
    assert errors[:2] == ["Refused: NOPE0USDT is not listed on Binance spot",
                          "Refused: NOPE1USDT is not listed on Binance spot"]
    assert len(errors) == 11 and errors[-1] == "Refused: 31 more (only the first 10 are named)"
    pasted = ",".join(names[:4]) + "\n" + "\n".join(n.lower() for n in names) + ",\nNOPEUSDT"
    at.text_input(key="universe_paste_binance").input(pasted).run()
    assert not at.exception
    assert picker(at).value == ["BTCUSDT", "ETHUSDT", *names[:8]]
    assert sidebar_errors(at) == [
        "Refused: C08USDT, C09USDT, C10USDT and 10 more: at most 10 symbols are watched on one page"]


def stale_cache(market: Market, symbols: tuple[str, ...], age_ms: int) -> UniverseCache:
    """A cache of ``market`` holding a list fetched ``age_ms`` ago whose refresh now fails (HTTP 503)."""
    listings = tuple(Listing(Leg(market, s), "TRADING", s.removesuffix("USDT"), "USDT") for s in symbols)
    listing = Universe(market, listings, dict.fromkeys(symbols, 1.0), now_ms() - age_ms)
    clock = [0.0]

    def fetch() -> Universe:
        if clock[0]:
            raise RestError("HTTP 503 from Binance REST")
        return listing

    cache = UniverseCache(fetch, ttl_s=10, clock=lambda: clock[0])
    cache.get()
    clock[0] += 10  # the next ask refreshes it, and that fails
    return cache


def test_a_stale_list_of_either_venue_is_said_so(live, monkeypatch):
    """A basis leg (``ETHUSDT.P`` on the spot page) is flagged by the futures venue's list: when refreshing
    that list fails, the flags come from the last good one, and the sidebar says how old it is and why,
    as it does for the page's own venue."""
    _fake, rest = live
    monkeypatch.setitem(universe_caches, (USDM.source, rest.url), stale_cache(Market.USDM, ("ETHUSDT",), 3 * 3_600_000))
    monkeypatch.setitem(universe_caches, (SPOT.source, rest.url),
                        stale_cache(Market.SPOT, ("BTCUSDT", "ETHUSDT"), 2 * 3_600_000))
    monkeypatch.setenv("QUANT_SYMBOLS", "BTCUSDT,ETHUSDT,ETHUSDT.P")
    at = AppTest.from_file(APP, default_timeout=30).run()
    assert not at.exception and picker(at).value == ["BTCUSDT", "ETHUSDT", "ETHUSDT.P"]
    captions = [unescaped(c.value) for c in at.sidebar.caption]
    assert "Symbol list from 120 min ago: refreshing it failed (HTTP 503 from Binance REST)." in captions, captions
    assert "Binance USDⓈ-M futures symbol list from 180 min ago: refreshing it failed (HTTP 503 from Binance " \
           "REST)." in captions, captions
