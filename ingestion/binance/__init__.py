"""Binance spot: the combined-stream source, its frame parsers and the REST client, as one package.

Registered in :mod:`ingestion.sources` by :data:`SPEC`; nothing outside this package knows it
is Binance.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ingestion.binance.rest import BinanceRest
from ingestion.binance.stream import BinanceSource
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


SPEC = SourceSpec(
    name="binance",
    label="Live Binance",
    capabilities=Capabilities(live=True, exchange_ids=True, resubscribe=True, backfill=True, history=True),
    create=BinanceSource.from_settings,
    database=lambda _feed: "live",
    rest=lambda feed: BinanceRest(feed.exchange.rest_url),
    history=_klines,
)

__all__ = ["SPEC", "BinanceRest", "BinanceSource"]
