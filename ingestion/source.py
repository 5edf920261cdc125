"""The contract every tick source fulfils, what it can do, and the counters it keeps for the status panel.

A source turns the outside world (an exchange socket, a simulation, a recorded file) into
:class:`~records.Trade` records and :class:`~records.FeedEvent` notices and hands them to a sink.
It never writes to storage itself: the engine's writer thread does that.

A new feed is one module (or package) with a class fulfilling :class:`Source` and a
:class:`SourceSpec` describing it, plus one line in :mod:`ingestion.sources`. Nothing else
branches on a source's name: the engine, the service and the UI ask the spec's
:class:`Capabilities` instead.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from domain import Leg, Market
from records import FeedEvent, FeedState, MarkPrice, Trade

if TYPE_CHECKING:
    from config import FeedSettings
    from ingestion.backfill import TradeHistory
    from ingestion.binance.universe import UniverseCache
    from ingestion.history import KlineHistory


EXCERPT_CHARS = 16


def excerpt(value: Any, limit: int = EXCERPT_CHARS) -> str:
    """A short, printable rendering of a value a source received, for an error message.

    At most ``limit`` characters of its ``repr`` (then ``…``), non-printable characters replaced
    by ``?``: enough to find the bad row or frame, never a replayed file's contents or a reply's
    whole body.
    """
    text = repr(value)
    shown = "".join(c if c.isprintable() else "?" for c in text[:limit])
    return shown + ("…" if len(text) > limit else "")


class TradeSink(Protocol):
    """Receives what a source produces; called from the source's thread only."""

    def on_trade(self, trade: Trade) -> None: ...

    def on_non_market(self, symbol: str, trade_id: int) -> None:
        """Trade id ``trade_id`` of ``symbol`` went to something that is not a market print (a
        futures insurance-fund, ADL or ``NA`` trade): not a trade for bars or storage, but not a gap."""

    def on_mark_price(self, mark: MarkPrice) -> None:
        """A perpetual's latest mark price and funding (USDⓈ-M only): shown, never stored."""

    def on_event(self, event: FeedEvent) -> None: ...


@dataclass
class SourceStats:
    """Counters written only by the source thread and read (racily but safely) by others.

    ``last_message_mono`` is a ``time.monotonic()`` reading, so ages survive wall-clock jumps.
    """

    state: FeedState = FeedState.IDLE
    connected_since_ms: int | None = None
    reconnects: int = 0
    messages: int = 0
    last_message_mono: float | None = None
    parse_errors: int = 0
    unknown_messages: int = 0
    last_error: str | None = None
    # A feed over several exchange connections: how many it has and how many are up (0: one, not counted).
    connections: int = 0
    connections_up: int = 0
    # Of a feed over several connections: the legs of those down after failing (no trades arrive for them).
    silent: tuple[str, ...] = ()


class Source(Protocol):
    """A producer of trades. ``run`` blocks until ``stop`` is set or a finite source ends."""

    name: str  # the registry key, e.g. "binance"
    label: str  # shown in the UI so simulated/replayed data is never mistaken for live

    @property
    def stats(self) -> SourceStats:
        """Its counters (an attribute, or a snapshot summed over several connections)."""

    @property
    def symbols(self) -> Collection[str] | None:
        """The symbols it emits now; None for every symbol it has (a replay without a filter)."""

    def run(self, sink: TradeSink, stop: threading.Event) -> None: ...

    def set_symbols(self, symbols: tuple[str, ...]) -> None:
        """Watch ``symbols`` from now on (only called when the spec says ``resubscribe``)."""


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a source can do; the engine, the service and the UI branch on these, never on a name.

    Attributes:
        live: market time is the wall clock (an exchange); otherwise it runs at the pace of the
            source's own trade times (simulated, replayed).
        exchange_ids: trade ids are the exchange's, consecutive per symbol and stable across
            restarts, so an id jump is a real gap and a restart continues from the stored ids.
        resubscribe: the watched symbols can change while the source runs (:meth:`Source.set_symbols`).
        backfill: missed trade-id ranges can be fetched again (through :attr:`SourceSpec.rest`).
        history: past bars can be loaded at open (:attr:`SourceSpec.history`).
        funding: its symbols are perpetual contracts whose mark price and funding arrive live
            (:meth:`TradeSink.on_mark_price`), shown per leg; every other source shows none.
    """

    live: bool
    exchange_ids: bool
    resubscribe: bool
    backfill: bool
    history: bool = False
    funding: bool = False


def spot_style_legs(label: str) -> Callable[[Collection[str]], tuple[str, ...]]:
    """:attr:`SourceSpec.legs` of a source whose symbols are its own (a simulated market, a recording):
    names kept as given, a perpetual's (``ETHUSDT.P``) refused, ValueError naming it and ``label``."""

    @functools.lru_cache(maxsize=256)  # every page run asks for the same few lists
    def checked(names: tuple[str, ...]) -> tuple[str, ...]:
        for name in names:
            if Leg.parse(name).market is Market.USDM:
                raise ValueError(f"symbols: {name} is a USDⓈ-M perpetual leg, but the {label} source has no "
                                 "perpetuals: watch it with the binance-futures source")
        return tuple(dict.fromkeys(names))

    def legs(names: Collection[str]) -> tuple[str, ...]:
        return checked(tuple(names))

    return legs


_OWN_SYMBOLS = spot_style_legs("this")


@dataclass(frozen=True, slots=True)
class SourceSpec:
    """One entry of the source registry.

    Attributes:
        name: registry key and ``--source`` value, e.g. ``"binance"``.
        label: what the UI's source picker calls it, e.g. ``"Live Binance"``.
        capabilities: see :class:`Capabilities`.
        create: builds the source from the settings (raises ``ValueError`` naming a bad setting).
        database: the name of the source's database for these settings (``"live"``,
            ``"replay-<file>-<tag>"``): one per source, so different sources never mix.
        rest: builds the exchange's REST client, one per service so that everything it calls
            (gap backfill, history) shares one rate-limit budget and one ban (its
            ``banned_until_ms``, if it has one, is shown as the feed's); for ``backfill`` it is the
            :class:`~ingestion.backfill.TradeHistory`.
        history: gives the :class:`~ingestion.history.KlineHistory` of past bars from the settings,
            the running source and the REST client (an exchange's klines; a simulated market's past).
        universe: gives the cache of the symbols the venue lists (status, quote asset, 24 h quote
            volume) for the settings' endpoints; None for a source with its own fixed symbols
            (simulated, replayed), whose symbols are typed.
        market: the market of an exchange source's symbols (:class:`domain.Market`); None for a
            source whose symbols are its own (simulated, replay).
        legs: the leg names (:class:`domain.Leg`) this source watches for the names a user gave,
            e.g. ``BTCUSDT`` → ``BTCUSDT.P`` on USDⓈ-M; ValueError naming a leg of another market.
    """

    name: str
    label: str
    capabilities: Capabilities
    create: Callable[[FeedSettings], Source]
    database: Callable[[FeedSettings], str]
    rest: Callable[[FeedSettings], TradeHistory] | None = None
    history: Callable[[FeedSettings, Source, TradeHistory | None], KlineHistory | None] | None = None
    universe: Callable[[FeedSettings], UniverseCache] | None = None
    market: Market | None = None
    legs: Callable[[Collection[str]], tuple[str, ...]] = _OWN_SYMBOLS
