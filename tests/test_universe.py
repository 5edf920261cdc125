"""A venue's universe: exchangeInfo and 24 h tickers parsed from real payloads, top N by quote volume,
delisted and halted symbols told apart, and a cache that keeps the last good list when a refresh fails."""

from __future__ import annotations

import json

import pytest

from domain import Leg, Market
from ingestion.binance import SPOT, USDM, BinanceRest
from ingestion.binance.rest import RestError
from ingestion.binance.universe import (
    Listing,
    Universe,
    UniverseCache,
    fetch_universe,
    parse_exchange_info,
    parse_tickers,
)
from testkit.fake_rest import FakeListing, FakeRest

# Real replies, shortened to a few symbols and fields (the parser ignores the rest).
SPOT_INFO = json.loads("""
{"timezone":"UTC","serverTime":1765788195443,"rateLimits":[{"rateLimitType":"REQUEST_WEIGHT","interval":"MINUTE",
 "intervalNum":1,"limit":6000}],"exchangeFilters":[],
 "symbols":[
  {"symbol":"ETHBTC","status":"TRADING","baseAsset":"ETH","baseAssetPrecision":8,"quoteAsset":"BTC",
   "quotePrecision":8,"quoteAssetPrecision":8,"orderTypes":["LIMIT","LIMIT_MAKER","MARKET"],
   "icebergAllowed":true,"ocoAllowed":true,"isSpotTradingAllowed":true,"isMarginTradingAllowed":true,
   "filters":[{"filterType":"PRICE_FILTER","minPrice":"0.00001000","maxPrice":"922327.00000000",
   "tickSize":"0.00001000"}],"permissions":[],"defaultSelfTradePreventionMode":"EXPIRE_MAKER"},
  {"symbol":"BTCUSDT","status":"TRADING","baseAsset":"BTC","baseAssetPrecision":8,"quoteAsset":"USDT",
   "quotePrecision":8,"quoteAssetPrecision":8,"filters":[],"permissions":[]},
  {"symbol":"BCCUSDT","status":"BREAK","baseAsset":"BCC","baseAssetPrecision":8,"quoteAsset":"USDT",
   "quotePrecision":8,"quoteAssetPrecision":8,"filters":[],"permissions":[]},
  {"symbol":"LUNAUSDT","status":"HALT","baseAsset":"LUNA","baseAssetPrecision":8,"quoteAsset":"USDT",
   "quotePrecision":8,"quoteAssetPrecision":8,"filters":[],"permissions":[]},
  {"symbol":"\u5e01\u5b89\u4eba\u751fUSDT","status":"TRADING","baseAsset":"\u5e01\u5b89\u4eba\u751f",
   "quoteAsset":"USDT","filters":[],"permissions":[]}
 ]}""")

FUTURES_INFO = json.loads("""
{"timezone":"UTC","serverTime":1765788195443,"futuresType":"U_MARGINED","rateLimits":[],"exchangeFilters":[],
 "assets":[{"asset":"USDT","marginAvailable":true,"autoAssetExchange":"-10000"}],
 "symbols":[
  {"symbol":"BTCUSDT","pair":"BTCUSDT","contractType":"PERPETUAL","deliveryDate":4133404800000,
   "onboardDate":1569398400000,"status":"TRADING","maintMarginPercent":"2.5000","requiredMarginPercent":"5.0000",
   "baseAsset":"BTC","quoteAsset":"USDT","marginAsset":"USDT","pricePrecision":2,"quantityPrecision":3,
   "baseAssetPrecision":8,"quotePrecision":8,"underlyingType":"COIN","underlyingSubType":["PoW"],
   "settlePlan":0,"triggerProtect":"0.0500","filters":[],"orderTypes":["LIMIT","MARKET"],
   "timeInForce":["GTC"],"liquidationFee":"0.012500","marketTakeBound":"0.05"},
  {"symbol":"BTCUSDT_260327","pair":"BTCUSDT","contractType":"CURRENT_QUARTER","deliveryDate":1774598400000,
   "onboardDate":1766736000000,"status":"TRADING","baseAsset":"BTC","quoteAsset":"USDT","marginAsset":"USDT"},
  {"symbol":"ETHUSDC","pair":"ETHUSDC","contractType":"PERPETUAL","status":"TRADING","baseAsset":"ETH",
   "quoteAsset":"USDC","marginAsset":"USDC"},
  {"symbol":"SRMUSDT","pair":"SRMUSDT","contractType":"PERPETUAL","status":"SETTLING","baseAsset":"SRM",
   "quoteAsset":"USDT","marginAsset":"USDT"},
  {"symbol":"BLZUSDT","pair":"BLZUSDT","contractType":"PERPETUAL","status":"CLOSE","baseAsset":"BLZ",
   "quoteAsset":"USDT","marginAsset":"USDT"},
  {"symbol":"NEWUSDT","pair":"NEWUSDT","contractType":"PERPETUAL","status":"PENDING_TRADING","baseAsset":"NEW",
   "quoteAsset":"USDT","marginAsset":"USDT"}
 ]}""")

SPOT_TICKERS = json.loads("""[
 {"symbol":"ETHBTC","openPrice":"0.03420000","highPrice":"0.03460000","lowPrice":"0.03390000",
  "lastPrice":"0.03441000","volume":"23014.70560000","quoteVolume":"789.21093617","openTime":1765701795443,
  "closeTime":1765788195443,"firstId":510934311,"lastId":511011480,"count":77170},
 {"symbol":"BTCUSDT","openPrice":"89400.00000000","highPrice":"90250.00000000","lowPrice":"88710.01000000",
  "lastPrice":"89806.80000000","volume":"11830.42915000","quoteVolume":"1060112345.12345678",
  "openTime":1765701795443,"closeTime":1765788195443,"firstId":5650000000,"lastId":5652500000,"count":2500001}
]""")

FUTURES_TICKERS = json.loads("""[
 {"symbol":"BTCUSDT","priceChange":"406.80","priceChangePercent":"0.455","weightedAvgPrice":"89512.31",
  "lastPrice":"89806.80","lastQty":"0.002","openPrice":"89400.00","highPrice":"90260.00","lowPrice":"88700.00",
  "volume":"150421.337","quoteVolume":"13464689123.45","openTime":1765701780000,"closeTime":1765788195443,
  "firstId":6869000000,"lastId":6871234567,"count":2234568}
]""")


def test_spot_exchange_info_keeps_every_status_and_leaves_out_names_we_cannot_use():
    listings = parse_exchange_info(SPOT_INFO, Market.SPOT)
    assert [(item.leg.name, item.status, item.base_asset, item.quote_asset) for item in listings] == [
        ("ETHBTC", "TRADING", "ETH", "BTC"), ("BTCUSDT", "TRADING", "BTC", "USDT"),
        ("BCCUSDT", "BREAK", "BCC", "USDT"), ("LUNAUSDT", "HALT", "LUNA", "USDT")]
    assert [item.trading for item in listings] == [True, True, False, False]


def test_futures_exchange_info_keeps_perpetuals_only_named_as_perpetual_legs():
    listings = parse_exchange_info(FUTURES_INFO, Market.USDM)
    assert [(item.leg, item.leg.name, item.status) for item in listings] == [
        (Leg(Market.USDM, "BTCUSDT"), "BTCUSDT.P", "TRADING"), (Leg(Market.USDM, "ETHUSDC"), "ETHUSDC.P", "TRADING"),
        (Leg(Market.USDM, "SRMUSDT"), "SRMUSDT.P", "SETTLING"), (Leg(Market.USDM, "BLZUSDT"), "BLZUSDT.P", "CLOSE"),
        (Leg(Market.USDM, "NEWUSDT"), "NEWUSDT.P", "PENDING_TRADING")]
    assert [item.symbol for item in listings if item.trading] == ["BTCUSDT", "ETHUSDC"]


@pytest.mark.parametrize(("payload", "match"), [
    ({"code": -1000, "msg": "An unknown error occurred"}, "no symbols list"),
    ([], "no symbols list"),
    ({"symbols": ["BTCUSDT"]}, r"symbol #0 is not an object"),
    ({"symbols": [{"symbol": "BTCUSDT", "status": "TRADING", "baseAsset": "BTC"}]},
     r"symbol #0 \('BTCUSDT'\): quoteAsset is None, not a name"),
    ({"symbols": [{"status": "TRADING"}]}, r"symbol #0: symbol is None"),
    ({"symbols": [{"symbol": "BTCUSDT", "status": "TRADING", "baseAsset": "BTC", "quoteAsset": "USDT"},
                  {"symbol": "BTCUSDT", "status": "BREAK", "baseAsset": "BTC", "quoteAsset": "USDT"}]},
     r"symbol #1 \('BTCUSDT'\) is listed twice; reply refused"),
])
def test_a_broken_exchange_info_is_refused_naming_what_is_wrong(payload, match):
    with pytest.raises(RestError, match=match):
        parse_exchange_info(payload, Market.SPOT)


def test_tickers_give_quote_volume_per_symbol_on_both_venues():
    assert parse_tickers(SPOT_TICKERS) == {"ETHBTC": 789.21093617, "BTCUSDT": 1060112345.12345678}
    assert parse_tickers(FUTURES_TICKERS) == {"BTCUSDT": 13464689123.45}


@pytest.mark.parametrize(("payload", "match"), [
    ({"symbol": "BTCUSDT"}, "expected a JSON list"),
    ([{"symbol": "BTCUSDT", "quoteVolume": "nan"}], r"row #0 \('BTCUSDT'\) has quoteVolume 'nan'"),
    ([{"symbol": "BTCUSDT", "quoteVolume": "-1"}], "not a non-negative number"),
    ([{"symbol": "BTCUSDT", "quoteVolume": 12.5}], "quoteVolume 12.5"),  # Binance sends decimal strings
    ([{"symbol": "BTCUSDT"}], "quoteVolume None"),
])
def test_a_broken_ticker_reply_is_refused_naming_the_row(payload, match):
    with pytest.raises(RestError, match=match):
        parse_tickers(payload)


def universe(*items: tuple[str, str, str, float], market: Market = Market.SPOT) -> Universe:
    """(symbol, status, quote, 24 h quote volume) each."""
    listings = tuple(Listing(Leg(market, symbol), status, symbol.removesuffix(quote), quote)
                     for symbol, status, quote, _ in items)
    return Universe(market, listings, {symbol: volume for symbol, _, _, volume in items}, 0)


def test_top_n_is_by_quote_volume_among_trading_symbols_of_one_quote_asset():
    u = universe(("AAAUSDT", "TRADING", "USDT", 5.0), ("BBBUSDT", "TRADING", "USDT", 9.0),
                 ("CCCUSDT", "BREAK", "USDT", 1e12),  # delisted: never picked, however large its last volume
                 ("DDDBTC", "TRADING", "BTC", 1e9),  # another quote asset
                 ("EEEUSDT", "TRADING", "USDT", 5.0), ("FFFUSDT", "TRADING", "USDT", 0.0))
    assert u.top(3) == ("BBBUSDT", "AAAUSDT", "EEEUSDT")  # a tie goes to the symbol first in order
    assert u.top(10) == ("BBBUSDT", "AAAUSDT", "EEEUSDT", "FFFUSDT")  # fewer than asked: all there are
    assert u.top(1, "BTC") == ("DDDBTC",)
    assert u.top(2, None) == ("DDDBTC", "BBBUSDT")
    assert u.quote_assets() == ("USDT", "BTC")
    assert u.trading("USDT") == ("AAAUSDT", "BBBUSDT", "EEEUSDT", "FFFUSDT")
    for bad in (0, -3, 2.5, True, "5"):
        with pytest.raises(ValueError, match=r"top: .* must be a whole number of symbols"):
            u.top(bad)  # type: ignore[arg-type]


def test_problems_name_unlisted_and_halted_symbols_by_their_leg_name():
    u = universe(("BTCUSDT", "TRADING", "USDT", 1.0), ("SRMUSDT", "SETTLING", "USDT", 0.0), market=Market.USDM)
    assert u.problems(["BTCUSDT", "SRMUSDT", "NOPEUSDT"]) == {
        "SRMUSDT": "SRMUSDT.P is not trading (status SETTLING)",
        "NOPEUSDT": "NOPEUSDT.P is not listed on Binance USDⓈ-M futures (perpetuals)"}


@pytest.mark.parametrize("venue", [SPOT, USDM], ids=["spot", "usdm"])
def test_fetch_through_the_rest_client_on_both_venues_with_their_weights(venue):
    futures = venue is USDM
    listings = [FakeListing("BTCUSDT", 3e9), FakeListing("ETHUSDT", 2e9), FakeListing("SOLUSDT", 4e8),
                FakeListing("BCCUSDT", 7e9, status="CLOSE" if futures else "BREAK"),
                FakeListing("BTCUSDT_260327", 1e9, contract_type="CURRENT_QUARTER")]
    with FakeRest(futures=futures, listings=listings if futures else listings[:4]) as fake:
        got = fetch_universe(BinanceRest(fake.url, venue=venue))
    prefix = "/fapi/v1" if futures else "/api/v3"
    assert fake.paths == [f"{prefix}/exchangeInfo", f"{prefix}/ticker/24hr"]
    # Spot: the permission sets are left out and the MINI tickers asked for (smaller replies, same weight).
    assert fake.requests == ([{}, {}] if futures else [{"showPermissionSets": "false"}, {"type": "MINI"}])
    assert fake.used_weight == (1 + 40 if futures else 20 + 80)
    assert got.top(2) == ("BTCUSDT", "ETHUSDT")
    assert got.get("BCCUSDT") is not None and not got.get("BCCUSDT").trading  # type: ignore[union-attr]
    assert got.get("BTCUSDT_260327") is None
    assert {listing.leg.market for listing in got.listings} == {venue.market}


def test_an_exchange_info_larger_than_a_page_is_read_whole():
    """Spot's exchangeInfo runs to megabytes: more than the client's page bound must still arrive."""
    listings = [FakeListing(f"C{i:05d}USDT", float(i)) for i in range(6_000)]
    with FakeRest(listings=listings) as fake:
        rest = BinanceRest(fake.url, max_reply_bytes=64 * 1024)  # far below this reply
        got = fetch_universe(rest)
    assert len(got.listings) == 6_000 and got.top(1) == ("C05999USDT",)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_cache_refetches_after_its_ttl_and_keeps_the_last_good_list_when_a_refresh_fails():
    clock = Clock()
    replies: list[Universe | Exception] = [universe(("BTCUSDT", "TRADING", "USDT", 1.0)),
                                           RestError("HTTP 503 from Binance REST"),
                                           universe(("ETHUSDT", "TRADING", "USDT", 1.0))]

    def fetch() -> Universe:
        reply = replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        return reply

    cache = UniverseCache(fetch, ttl_s=3600, retry_s=60, clock=clock)
    first = cache.get()
    clock.now += 3599
    assert cache.get() is first and cache.fetches == 1  # fresh: no request
    clock.now += 1
    stale = cache.get()  # the refresh fails: the old list, saying why
    assert stale.trading() == ("BTCUSDT",) and stale.stale == "HTTP 503 from Binance REST"
    clock.now += 59
    assert cache.get().stale is not None and cache.fetches == 2  # not retried before retry_s
    clock.now += 1
    fresh = cache.get()
    assert fresh.trading() == ("ETHUSDT",) and fresh.stale is None and cache.fetches == 3


def test_the_cache_raises_naming_the_cause_while_no_fetch_has_succeeded():
    clock = Clock()
    calls = []

    def fetch() -> Universe:
        calls.append(clock.now)
        raise OSError("Connection refused")

    cache = UniverseCache(fetch, clock=clock)
    for _ in range(3):  # every page run asks; only one request goes out per retry interval
        with pytest.raises(RestError, match="cannot fetch the symbol list: Connection refused"):
            cache.get()
    assert len(calls) == 1


def test_a_real_server_error_keeps_the_cached_list():
    listings = [FakeListing("BTCUSDT", 2.0), FakeListing("ETHUSDT", 1.0)]
    clock = Clock()
    with FakeRest(listings=listings) as fake:
        rest = BinanceRest(fake.url, attempts=1)
        cache = UniverseCache(lambda: fetch_universe(rest), ttl_s=10, clock=clock)
        assert cache.get().top(5) == ("BTCUSDT", "ETHUSDT")
        clock.now += 10
        fake.faults.append((500, None))
        kept = cache.get()
    assert kept.top(5) == ("BTCUSDT", "ETHUSDT")
    assert kept.stale is not None and "HTTP 500" in kept.stale


def test_a_ban_refuses_the_symbol_list_at_once_instead_of_holding_the_page_until_it_ends():
    """The picker fetches in the page's own run, holding the cache every session waits on: a 418/429
    with a Retry-After of an hour must not hold the sidebar for that hour (the clock here never moves,
    so waiting the ban out would never end). It fails at once naming the ban, and asks nothing more."""
    import threading

    clock = Clock()
    with FakeRest(listings=[FakeListing("BTCUSDT", 2.0), FakeListing("ETHUSDT", 1.0)]) as fake:
        rest = BinanceRest(fake.url, attempts=2, clock=clock)
        fake.faults.append((418, "3600"))
        outcome: list[BaseException | Universe] = []

        def fetch() -> None:
            try:
                outcome.append(fetch_universe(rest))
            except BaseException as exc:  # handed to the test thread
                outcome.append(exc)

        worker = threading.Thread(target=fetch, daemon=True)
        worker.start()
        worker.join(30)
        assert not worker.is_alive(), "the symbol-list fetch waited out the ban"
        assert isinstance(outcome[0], RestError) and "banned" in str(outcome[0]), outcome
        sent = len(fake.paths)
        with pytest.raises(RestError, match="banned until"):  # still banned: refused without a request
            fetch_universe(rest)
        assert len(fake.paths) == sent == 1


def test_a_refresh_in_flight_never_holds_a_notice_or_a_page_that_has_a_list_already():
    """The hourly refresh runs in one page's run (seconds on a slow exchange, up to the picker's
    deadline): the feed notice redrawn every 0.5 s (``peek``) and every other session's sidebar
    (``get`` with a list held) read the held list meanwhile instead of waiting for the exchange."""
    import threading

    from testkit.waiting import in_thread

    clock = Clock()
    release = threading.Event()
    started = threading.Event()
    replies = [universe(("BTCUSDT", "TRADING", "USDT", 1.0)), universe(("ETHUSDT", "TRADING", "USDT", 1.0))]

    def fetch() -> Universe:
        if cache.fetches > 1:  # the refresh: the exchange answers only when the test says so
            started.set()
            assert release.wait(30)
        return replies.pop(0)

    cache = UniverseCache(fetch, ttl_s=3600, retry_s=60, clock=clock)
    first = cache.get()
    clock.now += 3600
    refreshing, out = in_thread(cache.get)
    try:
        assert started.wait(10)
        peeked, peek_out = in_thread(cache.peek)
        peeked.join(10)
        assert peek_out.get("result") is first, "peek waited for the exchange"
        other, other_out = in_thread(cache.get)
        other.join(10)
        assert other_out.get("result") is first, "a second session waited for the refresh"
        assert cache.fetches == 2  # and it did not start a second one
    finally:
        release.set()
        refreshing.join(10)
    assert out["result"].trading() == ("ETHUSDT",) and cache.get() is out["result"]
