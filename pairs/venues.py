"""Pairs across venues: one engine and one bar history over the legs of several feeds.

A basis pair joins spot ``ETHUSDT`` and the perpetual ``ETHUSDT.P``; each leg's trades arrive on its
own venue's feed (its own engine, database and history). :class:`RoutedEngine` and
:class:`RoutedHistory` route every per-leg read to the feed that carries the leg, and answer the
few whole-feed questions (has a bar closed, what time is it in the market) for all of them, so that
:class:`~pairs.shared.SharedAnalytics` and :mod:`pairs.bars` run unchanged over a pair of two
venues. They read only what those modules read of an :class:`~ingestion.engine.Engine` (``bars``,
``close_due_bars``, ``market_now_ms``, plus ``last_trade`` and ``symbols`` for the live panel)
and of a :class:`~pairs.bars.BarHistory` (``stored``, ``bars``, ``version_of``, ``loader.version_of``).
A page of one venue never builds these: it reads its feed's own engine, as before.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import pandas as pd

from ingestion.engine import Engine
from ingestion.history import HistoryLoader
from ingestion.live_bars import Bar
from pairs.bars import BarHistory
from records import MarkPrice, Trade


class RoutedBars:
    """The live 1 s bars of every routed engine, read per leg (what ``engine.bars`` is to pairs)."""

    def __init__(self, engines: Mapping[str, Engine], route: Callable[[str], str]) -> None:
        self._engines = engines
        self._route = route

    @property
    def version(self) -> int:
        """Grows whenever a bar closes on any venue (each engine's count only grows)."""
        return sum(engine.bars.version for engine in self._engines.values())

    def first_start_ms(self, symbol: str) -> int | None:
        return self._engines[self._route(symbol)].bars.first_start_ms(symbol)

    def open_bar(self, symbol: str) -> Bar | None:
        return self._engines[self._route(symbol)].bars.open_bar(symbol)

    def closed(self, symbol: str, since_ms: int | None = None) -> pd.DataFrame:
        return self._engines[self._route(symbol)].bars.closed(symbol, since_ms=since_ms)


class RoutedEngine:
    """The engines of several venues as one, for pair analytics over legs of all of them.

    ``engines``: each venue's engine by key; ``route(leg)``: the key of the venue carrying ``leg``
    (KeyError for a leg none carries). Market time is the newest of the engines' (they are all
    live exchange feeds on the wall clock, so they agree).
    """

    def __init__(self, engines: Mapping[str, Engine], route: Callable[[str], str]) -> None:
        self.engines = dict(engines)
        self.route = route
        self.bars = RoutedBars(self.engines, route)

    @property
    def symbols(self) -> tuple[str, ...]:
        return tuple(symbol for engine in self.engines.values() for symbol in engine.symbols)

    def close_due_bars(self) -> None:
        for engine in self.engines.values():
            engine.close_due_bars()

    def market_now_ms(self) -> int | None:
        times = [t for engine in self.engines.values() if (t := engine.market_now_ms()) is not None]
        return max(times) if times else None

    def last_trade(self, symbol: str) -> Trade | None:
        return self.engines[self.route(symbol)].last_trade(symbol)

    def mark_price(self, symbol: str) -> MarkPrice | None:
        return self.engines[self.route(symbol)].mark_price(symbol)


class _RoutedLoader:
    """``loader.version_of`` over every venue's history loader: grows whenever any stores bars."""

    def __init__(self, loaders: list[HistoryLoader]) -> None:
        self._loaders = loaders

    def version_of(self, interval_ms: int) -> int:
        return sum(loader.version_of(interval_ms) for loader in self._loaders)


class RoutedHistory:
    """The stored bars of several venues' databases, read per leg (what a :class:`BarHistory` is to pairs)."""

    def __init__(self, histories: Mapping[str, BarHistory], route: Callable[[str], str]) -> None:
        self.histories = dict(histories)
        self.route = route
        loaders = [h.loader for h in self.histories.values() if h.loader is not None]
        # Without a loader a history re-reads stored bars once a minute; with one, on its version: a
        # mix is read on the loaders' versions, and the other's new bars show on its next load.
        self.loader = _RoutedLoader(loaders) if loaders else None

    def stored(self, symbol: str, interval_ms: int, since_ms: int) -> pd.DataFrame:
        return self.histories[self.route(symbol)].stored(symbol, interval_ms, since_ms)

    def version_of(self, interval_ms: int, symbols: Sequence[str]) -> int:
        """:meth:`BarHistory.version_of` over every venue: grows whenever any venue's does for its legs."""
        return sum(history.version_of(interval_ms, [s for s in symbols if self.route(s) == key])
                   for key, history in self.histories.items())

    def bars(self, symbol: str, boundary_ms: int) -> pd.DataFrame:
        return self.histories[self.route(symbol)].bars(symbol, boundary_ms)
