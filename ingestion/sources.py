"""The source registry: every feed the engine can run, by name. Adding a feed is one line here.

Settings name a source (``--source``/``QUANT_SOURCE``); :func:`spec_for` turns the name into its
:class:`~ingestion.source.SourceSpec` (how to build it, what it can do, which database it uses),
and :func:`site_of` into the storage site of its data.
"""

from __future__ import annotations

from config import ConfigError, Settings
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


def site_of(settings: Settings) -> Site:
    """Where the data of ``settings.source`` lives (its own database: sources never mix)."""
    return site_for(settings.storage, spec_for(settings.feed.source).database(settings.feed))
