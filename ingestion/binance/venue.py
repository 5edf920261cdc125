"""What differs between Binance's spot and USDⓈ-M futures market data, as data.

The stream client (:mod:`ingestion.binance.stream`), the parsers (:mod:`ingestion.binance.parse`)
and the REST client (:mod:`ingestion.binance.rest`) are shared; a :class:`Venue` gives them the
endpoints, paths, page sizes and request weights of one market. Nothing else branches on the venue.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass

from domain import PERP_SUFFIX, Leg, Market

#: USDⓈ-M's mark price, index price and funding stream of a symbol, one update a second.
MARK_PRICE_STREAM = "markPrice@1s"


@dataclass(frozen=True, slots=True)
class Venue:
    """One Binance market's public market-data API.

    Attributes:
        market: what its symbols are: spot, or USDⓈ-M perpetuals, whose leg names (what the stream's
            trades, storage and every reader carry) are the exchange's symbol plus ``.P``
            (:class:`domain.Leg`); the exchange's own symbol is used only on the wire.
        source: the registry name and ``--source`` value (``"binance"``, ``"binance-futures"``).
        label: how the status line and the UI name the live feed.
        database: the source's own database (SQLite file ``<name>.sqlite3`` or PostgreSQL schema),
            so spot and futures ticks never mix (their trade ids are separate sequences).
        ws_url: default WebSocket base (``--ws-url``/``QUANT_WS_URL`` override it).
        stream_path: the combined stream's path on that base: ``<ws_url><stream_path>?streams=
            <sym>@trade/...``. USDⓈ-M routes streams by path (``/public`` high-frequency book data,
            ``/market`` regular market data such as trades and mark prices, ``/private`` user data),
            and a connection on the wrong route receives nothing, silently.
        rest_url: default REST base (``--rest-url``/``QUANT_REST_URL`` override it).
        klines_path: the klines endpoint; ``klines_page``: most klines per request (Binance's cap).
        klines_weights: ``(limit below which, weight)`` steps, last one catching everything else:
            the request weight of a klines call of a given ``limit``.
        trades_path: the endpoint gap backfill reads trades from.
        trades_by_id: True if it pages from a trade id (``fromId``, spot ``historicalTrades``);
            False if it only returns the most recent trades (futures ``/fapi/v1/trades``).
        trades_weight: request weight of one such call (with ``limit=1000``).
        server_ping_s: how often the server pings us (seconds); documentation of the venue, our own
            pings every ``ping_interval`` keep a quiet connection observably alive on both.
        max_streams: most streams one connection may carry.
        symbol_streams: the streams each watched symbol takes on the connection (``<sym>@<name>``):
            trades, plus on USDⓈ-M the mark price and funding (``markPrice@1s``), so a USDⓈ-M
            connection carries at most ``max_streams // 2`` = 100 symbols.
        funding_path: the funding-rate history endpoint (USDⓈ-M ``/fapi/v1/fundingRate``), None
            where the market has no funding (spot).
        exchange_info: ``(path, weight)`` of the venue's symbol list (``exchangeInfo``, every symbol).
        ticker_24h: ``(path, weight)`` of the 24 h tickers of every symbol (no ``symbol`` parameter).
    """

    market: Market
    source: str
    label: str
    database: str
    ws_url: str
    stream_path: str
    rest_url: str
    klines_path: str
    klines_page: int
    klines_weights: tuple[tuple[int, int], ...]
    trades_path: str
    trades_by_id: bool
    trades_weight: int
    server_ping_s: float
    max_streams: int
    symbol_streams: tuple[str, ...] = ("trade",)
    funding_path: str | None = None
    exchange_info: tuple[str, int] = ("/api/v3/exchangeInfo", 20)
    ticker_24h: tuple[str, int] = ("/api/v3/ticker/24hr", 80)  # 80 for all symbols, whatever the type

    @property
    def funding(self) -> bool:
        """True if each symbol's mark price and funding stream rides along its trades (USDⓈ-M)."""
        return MARK_PRICE_STREAM in self.symbol_streams

    @property
    def max_symbols(self) -> int:
        """Most symbols one connection carries (each takes ``len(symbol_streams)`` streams)."""
        return self.max_streams // len(self.symbol_streams)

    def leg(self, symbol: str) -> str:
        """The leg name of the exchange's ``symbol`` on this venue: ``ETHUSDT`` on spot, ``ETHUSDT.P`` on USDⓈ-M."""
        return Leg(self.market, symbol).name

    def exchange_symbol(self, leg: str) -> str:
        """The exchange's own symbol of one of this venue's legs (``ETHUSDT.P`` → ``ETHUSDT`` on USDⓈ-M):
        what stream names and REST ``symbol=`` parameters carry."""
        return leg.removesuffix(PERP_SUFFIX) if self.market is Market.USDM else leg

    def legs(self, names: Iterable[str]) -> tuple[str, ...]:
        """``names`` as this venue's leg names, order kept, duplicates dropped.

        A plain symbol on USDⓈ-M is that venue's perpetual (``BTCUSDT`` → ``BTCUSDT.P``: what the
        recorder's ``--symbols`` of ``binance-futures`` always meant). A perpetual on spot is refused,
        ValueError naming the leg and the venue, never watched as something it is not.
        """
        return _venue_legs(self, tuple(names))

    def klines_weight(self, limit: int) -> int:
        """The request weight of a klines call asking for ``limit`` rows."""
        for below, weight in self.klines_weights[:-1]:
            if limit < below:
                return weight
        return self.klines_weights[-1][1]


@functools.lru_cache(maxsize=1024)
def _venue_legs(venue: Venue, names: tuple[str, ...]) -> tuple[str, ...]:
    """:meth:`Venue.legs`, cached: every page run asks it for the same few lists (a miss parses each name)."""
    found: dict[str, None] = {}
    for name in names:
        leg = Leg.parse(name)
        if leg.market is not venue.market and not (venue.market is Market.USDM and leg.market is Market.SPOT):
            raise ValueError(f"symbols: {leg.name} is a USDⓈ-M perpetual, but {venue.label.removeprefix('LIVE ')} "
                             f"({venue.source}) has spot symbols only: watch it with --source binance-futures "
                             f"(or {leg.symbol} for the spot symbol)")
        found[Leg(venue.market, leg.symbol).name] = None
    return tuple(found)


SPOT = Venue(
    market=Market.SPOT,
    source="binance",
    label="LIVE Binance spot",
    database="live",
    ws_url="wss://stream.binance.com:9443",
    stream_path="/stream",
    rest_url="https://api.binance.com",
    klines_path="/api/v3/klines",
    klines_page=1_000,
    klines_weights=((1_001, 2), (0, 2)),  # spot: 2 for any limit up to 1000
    trades_path="/api/v3/historicalTrades",
    trades_by_id=True,
    trades_weight=25,
    server_ping_s=20.0,
    max_streams=1_024,
)

#: Binance USDⓈ-M perpetual futures. Klines weigh 1 below limit 100, 2 below 500, 5 up to 1000 and 10
#: above (up to 1,500 a page). ``/fapi/v1/historicalTrades`` needs an API key, so gap backfill reads
#: ``/fapi/v1/trades`` (weight 5), which returns only the latest market trades: see
#: :meth:`ingestion.binance.rest.BinanceRest.historical_trades`. The server pings every 3 minutes
#: and drops a connection that has not answered for 10; connections last at most 24 h, as on spot.
USDM = Venue(
    market=Market.USDM,
    source="binance-futures",
    label="LIVE Binance USDⓈ-M futures",
    database="futures",
    ws_url="wss://fstream.binance.com",
    stream_path="/market/stream",  # trades are regular market data: the /market route
    rest_url="https://fapi.binance.com",
    klines_path="/fapi/v1/klines",
    klines_page=1_500,
    klines_weights=((100, 1), (500, 2), (1_001, 5), (0, 10)),
    trades_path="/fapi/v1/trades",
    trades_by_id=False,
    trades_weight=5,
    server_ping_s=180.0,
    max_streams=200,
    symbol_streams=("trade", MARK_PRICE_STREAM),  # same /market route: one connection carries both
    funding_path="/fapi/v1/fundingRate",
    exchange_info=("/fapi/v1/exchangeInfo", 1),
    ticker_24h=("/fapi/v1/ticker/24hr", 40),  # 40 for all symbols
)
