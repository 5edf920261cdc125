"""Binance spot: the combined-stream source, its frame parsers and the REST client, as one package.

Registered in :mod:`ingestion.sources` by :data:`SPEC`; nothing outside this package knows it
is Binance.
"""

from __future__ import annotations

from ingestion.binance.rest import BinanceRest
from ingestion.binance.stream import BinanceSource
from ingestion.source import Capabilities, SourceSpec

SPEC = SourceSpec(
    name="binance",
    label="Live Binance",
    capabilities=Capabilities(live=True, exchange_ids=True, resubscribe=True, backfill=True, history=True),
    create=BinanceSource.from_settings,
    database=lambda _feed: "live",
    rest=lambda feed: BinanceRest(feed.exchange.rest_url),
    history=lambda _feed, _source, rest: rest,  # klines, under the same weight budget as backfill
)

__all__ = ["SPEC", "BinanceRest", "BinanceSource"]
