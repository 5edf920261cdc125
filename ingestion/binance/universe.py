"""The universe of a Binance venue: which symbols exist, which trade now, and their 24 h quote volume.

Two public calls per venue, through the venue's :class:`~ingestion.binance.rest.BinanceRest` (its
weight budget and ban):

- ``exchangeInfo`` (spot ``GET /api/v3/exchangeInfo``, weight 20; USDⓈ-M ``GET /fapi/v1/exchangeInfo``,
  weight 1): every symbol with its status and quote asset (:func:`parse_exchange_info`);
- the 24 h tickers of every symbol (spot ``GET /api/v3/ticker/24hr?type=MINI``, weight 80; USDⓈ-M
  ``GET /fapi/v1/ticker/24hr``, weight 40): ``quoteVolume`` per symbol (:func:`parse_tickers`).

:class:`UniverseCache` keeps the last good :class:`Universe` of a venue for :data:`UNIVERSE_TTL_S`
and, when a refresh fails, keeps serving it with a note saying why it is stale (retrying no more
often than every :data:`RETRY_AFTER_FAILURE_S`), so the picker never empties because the exchange
hiccupped. Legs are named by :class:`domain.Leg` (``BTCUSDT`` spot, ``BTCUSDT.P`` perpetual).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from config import SYMBOL_RE
from domain import Leg, Market
from ingestion.binance.rest import BinanceRest, RestError, json_list
from ingestion.binance.venue import Venue
from ingestion.source import excerpt
from records import now_ms

log = logging.getLogger(__name__)

TRADING = "TRADING"  # the one status (both venues) in which a symbol trades and its stream carries trades
PERPETUAL = "PERPETUAL"  # USDⓈ-M contract type kept: delivery contracts (quarterlies) are not legs here
UNIVERSE_TTL_S = 3600.0  # a venue's listing changes a few times a week; an hour old is fresh enough
RETRY_AFTER_FAILURE_S = 60.0  # after a failed refresh, serve the old list this long before trying again
# Whole-venue replies: spot exchangeInfo is ~3,500 symbols with their filters (several MB even without
# permission sets), far more than one klines page; bounded all the same.
MAX_UNIVERSE_BYTES = 32 * 1024 * 1024
DEFAULT_QUOTE = "USDT"


@dataclass(frozen=True, slots=True)
class Listing:
    """One symbol of a venue's ``exchangeInfo``.

    Attributes:
        leg: the market and the exchange's symbol; ``leg.name`` is what users read (``BTCUSDT.P``).
        status: the exchange's status: ``TRADING``; spot also ``BREAK`` (delisted or suspended),
            ``HALT``, ``PRE_TRADING``, ``POST_TRADING``, ``END_OF_DAY``, ``AUCTION_MATCH``; USDⓈ-M also
            ``PENDING_TRADING``, ``PRE_SETTLE``, ``SETTLING``, ``CLOSE`` (delisted), ``PRE_DELIVERING``,
            ``DELIVERING``, ``DELIVERED``.
        base_asset, quote_asset: ``BTC`` and ``USDT`` for ``BTCUSDT``.
    """

    leg: Leg
    status: str
    base_asset: str
    quote_asset: str

    @property
    def symbol(self) -> str:
        return self.leg.symbol

    @property
    def trading(self) -> bool:
        return self.status == TRADING


def _text(entry: Mapping[str, object], key: str, where: str) -> str:
    value = entry.get(key)
    if not isinstance(value, str) or not value:
        raise RestError(f"{where}: {key} is {excerpt(value)}, not a name")
    return value


def parse_exchange_info(payload: object, market: Market) -> tuple[Listing, ...]:
    """The listings of an ``exchangeInfo`` reply of ``market``, in the reply's order.

    Spot (``GET /api/v3/exchangeInfo``), shortened::

        {"timezone":"UTC","serverTime":1765788195443,"rateLimits":[…],"exchangeFilters":[],
         "symbols":[{"symbol":"ETHBTC","status":"TRADING","baseAsset":"ETH","baseAssetPrecision":8,
                     "quoteAsset":"BTC","quotePrecision":8,"quoteAssetPrecision":8,
                     "orderTypes":["LIMIT","LIMIT_MAKER","MARKET","STOP_LOSS_LIMIT","TAKE_PROFIT_LIMIT"],
                     "icebergAllowed":true,"ocoAllowed":true,"isSpotTradingAllowed":true,
                     "isMarginTradingAllowed":true,"filters":[…],"permissions":[],
                     "defaultSelfTradePreventionMode":"EXPIRE_MAKER"}, …]}

    USDⓈ-M (``GET /fapi/v1/exchangeInfo``), shortened::

        {"timezone":"UTC","serverTime":1765788195443,"futuresType":"U_MARGINED","rateLimits":[…],
         "assets":[…],"symbols":[{"symbol":"BTCUSDT","pair":"BTCUSDT","contractType":"PERPETUAL",
                     "deliveryDate":4133404800000,"onboardDate":1569398400000,"status":"TRADING",
                     "baseAsset":"BTC","quoteAsset":"USDT","marginAsset":"USDT","pricePrecision":2,
                     "quantityPrecision":3,"underlyingType":"COIN","filters":[…]},
                    {"symbol":"BTCUSDT_260327","pair":"BTCUSDT","contractType":"CURRENT_QUARTER", …}, …]}

    On USDⓈ-M only ``contractType`` ``PERPETUAL`` is kept (quarterlies such as ``BTCUSDT_260327``
    are not perpetual legs). A symbol our symbol rule refuses (``^[A-Z0-9]{2,20}$``: Binance also
    lists names such as ``币安人生USDT``) is left out and logged, never passed on to a URL. A reply
    without a ``symbols`` list, an entry without a symbol, status or assets, or a symbol listed twice raises
    :class:`RestError` naming it, so a broken reply never replaces a good list.
    """
    if not isinstance(payload, dict) or not isinstance(payload.get("symbols"), list):
        raise RestError(f"exchangeInfo reply has no symbols list: {excerpt(payload, 80)}")
    listings: list[Listing] = []
    skipped: list[str] = []
    seen: set[str] = set()
    for index, entry in enumerate(payload["symbols"]):
        where = f"exchangeInfo symbol #{index}"
        if not isinstance(entry, dict):
            raise RestError(f"{where} is not an object: {excerpt(entry, 80)}")
        symbol = _text(entry, "symbol", where)
        where = f"exchangeInfo symbol #{index} ({excerpt(symbol, 24)})"
        status, base, quote = (_text(entry, key, where) for key in ("status", "baseAsset", "quoteAsset"))
        if market is Market.USDM and entry.get("contractType") != PERPETUAL:
            continue
        if not SYMBOL_RE.fullmatch(symbol):
            skipped.append(symbol)
            continue
        if symbol in seen:  # one symbol listed twice: which status holds? Keep the good list instead
            raise RestError(f"{where} is listed twice; reply refused")
        seen.add(symbol)
        listings.append(Listing(Leg(market, symbol), status, base, quote))
    if skipped:
        log.info("exchangeInfo: left out %d symbols that are not 2-20 letters or digits, e.g. %s",
                 len(skipped), excerpt(skipped[0], 24))
    return tuple(listings)


def parse_tickers(payload: object) -> dict[str, float]:
    """24 h quote volume (quote-asset units, e.g. USDT) per symbol from a ``ticker/24hr`` reply of
    every symbol.

    Spot (``GET /api/v3/ticker/24hr?type=MINI``)::

        [{"symbol":"BNBBTC","openPrice":"99.00000000","highPrice":"100.00000000","lowPrice":"0.10000000",
          "lastPrice":"4.00000200","volume":"8913.30000000","quoteVolume":"15.30000000",
          "openTime":1499783499040,"closeTime":1499869899040,"firstId":28385,"lastId":28460,"count":76}, …]

    USDⓈ-M (``GET /fapi/v1/ticker/24hr``)::

        [{"symbol":"BTCUSDT","priceChange":"-94.99999800","priceChangePercent":"-95.960",
          "weightedAvgPrice":"0.29628482","lastPrice":"4.00000200","lastQty":"200.00000000",
          "openPrice":"99.00000000","highPrice":"100.00000000","lowPrice":"0.10000000",
          "volume":"8913.30000000","quoteVolume":"15.30000000","openTime":1499783499040,
          "closeTime":1499869899040,"firstId":28385,"lastId":28460,"count":76}, …]

    Rows of symbols our symbol rule refuses are left out; a row without a symbol or with a
    ``quoteVolume`` that is not a finite, non-negative number raises :class:`RestError` naming it.
    """
    volumes: dict[str, float] = {}
    for index, row in enumerate(json_list(payload, "ticker/24hr")):
        where = f"ticker/24hr row #{index}"
        if not isinstance(row, dict):
            raise RestError(f"{where} is not an object: {excerpt(row, 80)}")
        symbol = _text(row, "symbol", where)
        raw = row.get("quoteVolume")
        try:
            volume = float(raw) if isinstance(raw, str) else math.nan
        except ValueError:
            volume = math.nan
        if not (math.isfinite(volume) and volume >= 0):
            raise RestError(f"{where} ({excerpt(symbol, 24)}) has quoteVolume {excerpt(raw)}, "
                            "not a non-negative number")
        if SYMBOL_RE.fullmatch(symbol):
            volumes[symbol] = volume
    return volumes


@dataclass(frozen=True, slots=True)
class Universe:
    """What a venue lists, as fetched at ``fetched_ms`` (epoch ms).

    ``volumes``: 24 h quote volume per symbol (quote-asset units); a listed symbol without a ticker
    counts as 0. ``stale``: None when this is the latest fetch; otherwise why a newer one failed
    (the list is the last good one).
    """

    market: Market
    listings: tuple[Listing, ...]
    volumes: Mapping[str, float]
    fetched_ms: int
    stale: str | None = None
    _by_symbol: dict[str, Listing] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_symbol", {listing.symbol: listing for listing in self.listings})

    def get(self, symbol: str) -> Listing | None:
        """The listing of the exchange symbol ``symbol`` (``BTCUSDT``), or None if the venue has none."""
        return self._by_symbol.get(symbol)

    def quote_assets(self) -> tuple[str, ...]:
        """The quote assets of trading symbols, most symbols first (USDT, USDC, FDUSD, BTC, … on spot)."""
        counts: dict[str, int] = {}
        for listing in self.listings:
            if listing.trading:
                counts[listing.quote_asset] = counts.get(listing.quote_asset, 0) + 1
        return tuple(sorted(counts, key=lambda quote: (-counts[quote], quote)))

    def trading(self, quote: str | None = None) -> tuple[str, ...]:
        """The exchange symbols that trade now (quoted in ``quote`` if given), alphabetical."""
        return tuple(sorted(listing.symbol for listing in self.listings
                            if listing.trading and (quote is None or listing.quote_asset == quote)))

    def top(self, n: int, quote: str | None = DEFAULT_QUOTE) -> tuple[str, ...]:
        """The ``n`` trading symbols (quoted in ``quote``; None: any) with the largest 24 h quote
        volume, largest first; ties by symbol. ValueError for ``n`` below 1.

        Volumes in different quote assets are not comparable: pass a quote unless you mean it.
        """
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"top: {n!r} must be a whole number of symbols, at least 1")
        chosen = self.trading(quote)
        return tuple(sorted(chosen, key=lambda symbol: (-self.volumes.get(symbol, 0.0), symbol))[:n])

    def problems(self, symbols: Iterable[str]) -> dict[str, str]:
        """Why each of ``symbols`` (exchange symbols) cannot be watched as a live leg now: not listed
        at all, or listed with a status other than ``TRADING``. Symbols without a problem are absent."""
        found: dict[str, str] = {}
        for symbol in symbols:
            listing = self.get(symbol)
            name = Leg(self.market, symbol).name
            if listing is None:
                found[symbol] = f"{name} is not listed on Binance {_MARKET_NAMES[self.market]}"
            elif not listing.trading:
                found[symbol] = f"{name} is not trading (status {listing.status})"
        return found


_MARKET_NAMES = {Market.SPOT: "spot", Market.USDM: "USDⓈ-M futures (perpetuals)"}


def fetch_universe(rest: BinanceRest, stop: threading.Event | None = None) -> Universe:
    """The universe of ``rest``'s venue now: its ``exchangeInfo`` and its 24 h tickers (two calls,
    weights 100 on spot and 41 on USDⓈ-M). :class:`RestError` if either fails or is malformed, or
    at once while Binance bans the IP (a page waits on this call: it never waits a ban out)."""
    venue = rest.venue
    stop = threading.Event() if stop is None else stop
    info_path, info_weight = venue.exchange_info
    ticker_path, ticker_weight = venue.ticker_24h
    # Spot only: permission sets are most of the reply and of no use here; MINI tickers carry quoteVolume.
    info_params = {"showPermissionSets": "false"} if venue.market is Market.SPOT else {}
    ticker_params = {"type": "MINI"} if venue.market is Market.SPOT else {}
    info = rest.get(info_path, info_params, weight=info_weight, stop=stop, max_bytes=MAX_UNIVERSE_BYTES,
                    wait_ban=False)
    tickers = None if info is None else rest.get(ticker_path, ticker_params, weight=ticker_weight, stop=stop,
                                                 max_bytes=MAX_UNIVERSE_BYTES, wait_ban=False)
    if info is None or tickers is None:
        raise RestError("stopped before the symbol list arrived")
    return Universe(venue.market, parse_exchange_info(info, venue.market), parse_tickers(tickers), now_ms())


class UniverseCache:
    """The last good :class:`Universe` of one venue, fetched again when older than ``ttl_s``.

    ``fetch`` builds a fresh one (raising :class:`RestError` or ``OSError`` when it cannot);
    ``clock`` gives seconds (monotonic). One fetch at a time. While a refresh is in flight (seconds on
    a slow exchange, up to the picker's deadline), callers that have a list to read get the held one
    at once — :meth:`peek` always, :meth:`get` once a list was ever fetched — and only callers with
    nothing to show yet wait for the fetch and share its result. Thread-safe.
    """

    def __init__(self, fetch: Callable[[], Universe], *, ttl_s: float = UNIVERSE_TTL_S,
                 retry_s: float = RETRY_AFTER_FAILURE_S, clock: Callable[[], float] = time.monotonic) -> None:
        if not (ttl_s > 0 and retry_s > 0):
            raise ValueError(f"ttl_s and retry_s must be positive seconds, got {ttl_s}, {retry_s}")
        self._fetch = fetch
        self.ttl_s = ttl_s
        self.retry_s = retry_s
        self._clock = clock
        # Two locks: ``_lock`` guards the fields below and is never held over a request, so peek() and a
        # get() with a list held never wait on the exchange; ``_fetching`` lets one fetch out at a time.
        self._lock = threading.Lock()
        self._fetching = threading.Lock()
        self._good: Universe | None = None
        self._good_at = -math.inf  # clock reading of the last good fetch
        self._error: str | None = None  # why the last fetch failed (None: it did not)
        self._next_try = -math.inf  # no fetch before this after a failure
        self.fetches = 0

    def peek(self) -> Universe | None:
        """The last good universe, however old, without fetching (None before the first): for notices
        redrawn every few seconds, which must never wait on the exchange."""
        with self._lock:
            return self._good

    def get(self) -> Universe:
        """The venue's universe: the cached one while fresh, else a new fetch; if that fails, the last
        good one marked :attr:`Universe.stale` with the reason. While another caller's refresh is in
        flight, the last good one as it is (the refresh's result is for the next ask). :class:`RestError`
        naming the cause when no fetch has ever succeeded (and it is not yet time to retry, the same
        error again)."""
        with self._lock:
            answer = self._held(self._clock())
            held = self._good if self._good is None or self._error is None \
                else dataclasses.replace(self._good, stale=self._error)
        if answer is not None:
            return self._answer(answer)
        # A refresh is due. With a list held, only if nobody is fetching already (else the held list, as it
        # is: the page never waits for the exchange); with none, wait for the fetch in flight and share it.
        if not self._fetching.acquire(blocking=held is None):
            assert held is not None
            return held
        try:
            with self._lock:
                now = self._clock()
                answer = self._held(now)  # a fetch that ended while this caller waited may have answered
                if answer is None:
                    self.fetches += 1
            if answer is not None:
                return self._answer(answer)
            try:
                fresh = self._fetch()
            except (RestError, OSError) as exc:
                error = str(exc) or type(exc).__name__
                log.warning("symbol list refresh failed: %s", error)
                with self._lock:
                    self._error, self._next_try = error, now + self.retry_s
                    good = self._good
                if good is None:
                    raise RestError(f"cannot fetch the symbol list: {error}") from None
                return dataclasses.replace(good, stale=error)
            with self._lock:
                self._good, self._good_at, self._error = fresh, now, None
            return fresh
        finally:
            self._fetching.release()

    def _held(self, now: float) -> Universe | RestError | None:
        """What :meth:`get` answers at ``now`` without fetching (the caller holds ``_lock``): the fresh
        list, the last good one marked stale, or the last failure, while it is not time to retry; None
        when a fetch is due."""
        if self._good is not None and now - self._good_at < self.ttl_s:
            return self._good
        if now < self._next_try:
            if self._good is None:
                return RestError(f"cannot fetch the symbol list: {self._error}")
            return dataclasses.replace(self._good, stale=self._error)
        return None

    @staticmethod
    def _answer(answer: Universe | RestError) -> Universe:
        if isinstance(answer, RestError):
            raise answer
        return answer


_CACHES: dict[tuple[str, str], UniverseCache] = {}
_CACHES_LOCK = threading.Lock()
# The picker's fetches: one quick retry at most, so a page waits seconds, not the backfill's minute.
PICKER_ATTEMPTS = 2
PICKER_DEADLINE_S = 10.0


def universe_cache(venue: Venue, rest_url: str | None = None) -> UniverseCache:
    """The process's cache of ``venue``'s universe at ``rest_url`` (None: the venue's own base), made
    on first use; every session and the recorder share it and its one REST client."""
    key = (venue.source, rest_url or venue.rest_url)
    with _CACHES_LOCK:
        cache = _CACHES.get(key)
        if cache is None:
            rest = BinanceRest(rest_url, venue=venue, attempts=PICKER_ATTEMPTS, deadline_s=PICKER_DEADLINE_S)
            cache = _CACHES[key] = UniverseCache(lambda: fetch_universe(rest))
        return cache
