"""Binance spot and USDⓈ-M futures: the combined-stream source, its frame parsers and the REST client,
as one package parametrised by a :class:`~ingestion.binance.venue.Venue`.

Registered in :mod:`ingestion.sources` by :data:`SPEC` (spot) and :data:`FUTURES_SPEC`; nothing
outside this package knows it is Binance.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from ingestion.binance.rest import BinanceRest
from ingestion.binance.split import BinanceFeed
from ingestion.binance.stream import BinanceSource
from ingestion.binance.universe import UniverseCache, universe_cache
from ingestion.binance.venue import SPOT, USDM, Venue
from ingestion.source import Capabilities, SourceSpec

if TYPE_CHECKING:
    from config import FeedSettings
    from ingestion.backfill import TradeHistory
    from ingestion.history import KlineHistory
    from ingestion.source import Source


def _klines(_feed: FeedSettings, _source: Source, rest: TradeHistory | None) -> KlineHistory | None:
    """Past bars from the exchange's klines, through the REST client ``SPEC.rest`` built (a
    :class:`BinanceRest`), so that they share one weight budget with gap backfill."""
    return rest if isinstance(rest, BinanceRest) else None


def _rest(venue: Venue, feed: FeedSettings) -> BinanceRest:
    """The venue's REST client at ``--rest-url`` if set, else at the venue's own base."""
    return BinanceRest(feed.exchange.rest_url, venue=venue)


def _universe(venue: Venue, feed: FeedSettings) -> UniverseCache:
    """The process's cache of the venue's symbol list, read at ``--rest-url`` if set."""
    return universe_cache(venue, feed.exchange.rest_url)


def spec(venue: Venue, label: str) -> SourceSpec:
    """The registry entry of a Binance venue; ``label`` is what the source picker shows."""
    return SourceSpec(
        name=venue.source,
        label=label,
        capabilities=Capabilities(live=True, exchange_ids=True, resubscribe=True, backfill=True, history=True,
                                  funding=venue.funding),
        create=functools.partial(BinanceFeed.from_settings, venue=venue),
        database=lambda _feed: venue.database,
        rest=functools.partial(_rest, venue),
        history=_klines,
        universe=functools.partial(_universe, venue),
        market=venue.market,
        legs=venue.legs,
    )


SPEC = spec(SPOT, "Live Binance")
FUTURES_SPEC = spec(USDM, "Binance USDⓈ-M futures")

__all__ = ["FUTURES_SPEC", "SPEC", "SPOT", "USDM", "BinanceFeed", "BinanceRest", "BinanceSource", "Venue"]
