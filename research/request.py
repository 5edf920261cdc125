"""One check of a research request, shared by ``python -m cli.research`` and the Scanner tab's launcher.

A :class:`ResearchRequest` is what someone asked for, already in types (the command line parses its
text, the tab's form has typed widgets): a scan or a walk-forward study, the store, venue,
timeframe, the symbols (or every symbol of the store), the span, ``top`` N by quote volume and the
settings. :func:`plan` checks it against the store before anything is submitted to a cluster and
returns the :class:`ResearchPlan` to run, or raises :class:`research.scan.ScanInputError` or
:class:`config.ConfigError` with a message naming the setting that was wrong.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from analytics import TRENDS
from config import ConfigError, check_window
from domain import Market, Timeframe
from research.scan import DEFAULT_BLOCK_SIZE, ScanSpec, check_spec, open_store
from research.walkforward import WalkForwardSettings
from research.walkrun import windows_of
from storage.research import ResearchStore

SCAN, WALK = "scan", "walk"
KINDS = (SCAN, WALK)


@dataclass(frozen=True, slots=True)
class ResearchRequest:
    """A research run asked for, before any check against the store.

    ``store``: the research store's root (a folder or URL); ``symbols``: exchange symbols (``ETHUSDT``
    on um too), None for every symbol the store holds for ``market``/``timeframe``; ``start_ms``/
    ``end_ms``: the span, bars starting in ``[start_ms, end_ms)`` (UTC epoch ms); ``top``: only the N
    symbols with the largest quote volume over the formation span. ``trend``/``window`` are the scan's
    (a walk-forward's formation test uses ``trend`` too: c or n); ``formation``, ``trading`` and
    ``step`` are a walk-forward's durations (``"30D"``, ``"7D"``; ``step`` None: the trading length),
    ``entry``/``exit`` its z-scores and ``cost_bps`` its cost per leg per side (basis points).
    """

    kind: str
    store: str
    market: Market
    timeframe: Timeframe
    start_ms: int
    end_ms: int
    symbols: tuple[str, ...] | None = None
    top: int | None = None
    trend: str = "c"
    window: int = 60
    maxlag: int | None = None
    block_size: int = DEFAULT_BLOCK_SIZE
    formation: str | None = None
    trading: str | None = None
    step: str | None = None
    entry: float = 2.0
    exit: float = 0.0
    cost_bps: float = 0.0


@dataclass(frozen=True, slots=True)
class ResearchPlan:
    """A checked request: the scan's spec (its symbols chosen) and, for a walk-forward, its settings."""

    spec: ScanSpec
    settings: WalkForwardSettings | None = None

    @property
    def kind(self) -> str:
        return SCAN if self.settings is None else WALK

    @property
    def pairs(self) -> int:
        """Unordered pairs of the spec's symbols (what the progress counts)."""
        k = len(self.spec.symbols)
        return k * (k - 1) // 2


def plan(request: ResearchRequest) -> ResearchPlan:
    """``request`` checked against its store: the spec to run (the ``top`` symbols picked) and the
    walk-forward settings. ScanInputError or ConfigError naming what was wrong; nothing is submitted."""
    if request.kind not in KINDS:
        raise ConfigError(f"kind: {request.kind!r} is not one of {', '.join(KINDS)}")
    scanning = request.kind == SCAN
    if scanning and request.trend not in TRENDS:
        raise ConfigError(f"trend: {request.trend!r} is not one of {', '.join(TRENDS)}")
    window = check_window(request.window) if scanning else 60
    if request.top is not None and request.top < 2:
        raise ConfigError(f"top: {request.top} must be >= 2")
    store = open_store(request.store)
    symbols = request.symbols if request.symbols is not None else tuple(
        store.symbols(request.market, request.timeframe))
    spec = check_spec(ScanSpec(request.store, request.market, request.timeframe, symbols, request.start_ms,
                               request.end_ms, trend=request.trend if scanning else "c", window=window,
                               maxlag=request.maxlag, block_size=request.block_size))
    settings = None if scanning else walk_settings(request, spec)
    if request.top is not None:
        # The formation span: the scan's span, a walk's first formation window (later windows'
        # volumes would be known only after they formed).
        end = spec.end_ms if settings is None else spec.start_ms + settings.formation * spec.timeframe.ms
        chosen = top_by_quote_volume(store, spec.market, spec.timeframe, spec.symbols, spec.start_ms, end,
                                     request.top)
        spec = check_spec(ScanSpec(spec.store, spec.market, spec.timeframe, chosen, spec.start_ms, spec.end_ms,
                                   trend=spec.trend, window=spec.window, maxlag=spec.maxlag,
                                   block_size=spec.block_size))
    return ResearchPlan(spec, settings)


def walk_settings(request: ResearchRequest, spec: ScanSpec) -> WalkForwardSettings:
    """The walk-forward settings of ``request``; ConfigError naming the setting (also when the span
    holds no complete window, as a ScanInputError naming the span)."""
    if request.formation is None or request.trading is None:
        raise ConfigError("formation and trading: a walk-forward needs both windows, e.g. 30D and 7D")
    options: dict[str, object] = {"trend": request.trend, "entry": request.entry, "exit": request.exit,
                                  "cost_bps": request.cost_bps}
    if request.maxlag is not None:
        options["maxlag"] = request.maxlag
    try:
        settings = WalkForwardSettings.of(spec.timeframe, duration_text("formation", request.formation),
                                          duration_text("trading", request.trading),
                                          None if request.step is None else duration_text("step", request.step),
                                          **options)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    windows_of(spec, settings)  # ScanInputError naming the span when it holds no complete window
    return settings


def duration_text(name: str, raw: str) -> str:
    """A duration as given; ConfigError for a bare number, which pandas would read as nanoseconds."""
    text = raw.strip()
    if text.replace(".", "", 1).isdigit():
        raise ConfigError(f"{name}: {raw!r} has no unit; give a duration such as 30D, 12h or 90min")
    return text


def top_by_quote_volume(store: ResearchStore, market: Market, timeframe: Timeframe, symbols: Sequence[str],
                        start_ms: int, end_ms: int, n: int) -> tuple[str, ...]:
    """The ``n`` of ``symbols`` with the largest quote volume (sum of the bars' ``quote_volume``, quote
    currency) over ``[start_ms, end_ms)``, largest first, ties by name; only symbols with bars there
    count. ConfigError naming ``top`` when fewer than ``n`` have any."""
    volumes = {}
    for symbol in symbols:
        bars = store.bars(market, timeframe, symbol, start_ms, end_ms, columns=("quote_volume",))
        if len(bars):
            volumes[symbol] = float(bars["quote_volume"].sum())
    if len(volumes) < n:
        raise ConfigError(f"top: {n} asked, but only {len(volumes)} of the {len(symbols)} symbols have "
                          f"{timeframe.name} bars from {_iso(start_ms)} to {_iso(end_ms)} (the formation span)")
    ranked = sorted(volumes, key=lambda symbol: (-volumes[symbol], symbol))
    return tuple(ranked[:n])


def _iso(ms: int) -> str:
    return pd.Timestamp(ms, unit="ms", tz="UTC").strftime("%Y-%m-%dT%H:%MZ")
