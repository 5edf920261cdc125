"""The source registry: every feed the engine can run, by name. Adding a feed is one line here.

Settings name a source (``--source``/``QUANT_SOURCE``); :func:`spec_for` turns the name into its
:class:`~ingestion.source.SourceSpec` (how to build it, what it can do, which database it uses),
and :func:`site_of` into the storage site of its data.
"""

from __future__ import annotations

from collections.abc import Iterable

from config import ConfigError, Settings
from domain import Leg, Market
from ingestion import binance, replay, simulated
from ingestion.source import SourceSpec
from storage import Site, site_for

SOURCES: dict[str, SourceSpec] = {
    spec.name: spec for spec in (binance.SPEC, binance.FUTURES_SPEC, simulated.SPEC, replay.SPEC)
}


def spec_for(name: str) -> SourceSpec:
    """The registered source ``name``; ConfigError naming the setting and the choices otherwise."""
    try:
        return SOURCES[name]
    except KeyError:
        raise ConfigError(f"source: {name!r} is not one of {', '.join(SOURCES)}") from None


def source_for(market: Market) -> str:
    """The registered live source whose legs trade on ``market`` (``binance`` spot, ``binance-futures``
    USDⓈ-M): where a page finds the feed of a leg of another venue. ConfigError if none is registered."""
    for name, spec in SOURCES.items():
        if spec.market is market and spec.capabilities.live:
            return name
    raise ConfigError(f"symbols: no registered source trades {market.value} legs")


def resolve(settings: Settings) -> Settings:
    """``settings`` with its watched symbols and its alert rules' pair as its source's leg names
    (:attr:`SourceSpec.legs`): on ``binance-futures`` a plain ``BTCUSDT`` becomes ``BTCUSDT.P``, what
    the feed stores and every reader shows. ValueError naming a leg the source does not carry (a
    perpetual on spot, simulated or replay); ConfigError for an unknown source."""
    spec = spec_for(settings.feed.source)
    symbols = spec.legs(settings.feed.symbols)
    pair = settings.alerts.pair
    legs = None if pair is None else spec.legs(pair)
    if symbols == settings.feed.symbols and (legs is None or legs == pair):
        return settings
    return settings.replace(symbols=symbols, pair=legs)


def same_coins(name: str, symbols: Iterable[str]) -> tuple[str, ...]:
    """``symbols`` (leg names, or anything typed) as the same exchange symbols on source ``name``'s own
    market: ``BTCUSDT`` ↔ ``BTCUSDT.P`` (what the sidebar shows on switching between spot and
    futures); a simulated or replayed source's are plain. Text that is no leg name is kept as typed."""
    spec = spec_for(name)
    market = spec.market or Market.SPOT
    named = []
    for symbol in symbols:
        try:
            named.append(Leg(market, Leg.parse(symbol).symbol).name)
        except ValueError:
            named.append(symbol.strip())
    return tuple(dict.fromkeys(named))


def site_of(settings: Settings) -> Site:
    """Where the data of ``settings.source`` lives (its own database: sources never mix)."""
    return site_for(settings.storage, spec_for(settings.feed.source).database(settings.feed))
