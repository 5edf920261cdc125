"""Sidebar controls → one frozen :class:`Controls` value for the composition root."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from analytics import zscore_bound
from config import ConfigError, Settings, parse_symbols
from domain import TIMEFRAMES, WINDOW_RANGE, Regression, Timeframe
from ingestion.replay import replay_files
from ingestion.sources import SOURCES, same_coins
from pairs.bars import LOOKBACKS_MS
from pairs.compute import PairParams
from pairs.shared import ViewQuery
from ui.labels import REGRESSION_LABELS, timeframe_label
from ui.plain import plain

TIMEFRAME_NAMES = tuple(tf.name for tf in TIMEFRAMES)  # finest first
UPLOADED = "uploaded"  # the page's own data source: two uploaded OHLC datasets, no feed
SOURCE_LABELS = {**{name: spec.label for name, spec in SOURCES.items()}, UPLOADED: "Uploaded dataset"}
TIME_ZONES = ("UTC", "Europe/London", "Europe/Berlin", "America/New_York", "America/Chicago", "Asia/Kolkata",
              "Asia/Singapore", "Asia/Hong_Kong", "Asia/Tokyo", "Australia/Sydney")


@dataclass(frozen=True, slots=True)
class Controls:
    """What the user chose. Symbols are validated; the pair is two different watched symbols."""

    source: str
    replay_file: Path | None
    symbols: tuple[str, ...]
    y: str
    x: str
    timeframe: str  # a domain.Timeframe name: "1s", "1m", "5m"
    lookback: str
    window: int
    regression: Regression
    log_prices: bool
    z_threshold: float
    price_mode: str
    auto_refresh: bool
    tz: str
    min_trades: int = 0
    min_volume: float = 0.0

    @property
    def interval_ms(self) -> int:
        return Timeframe.of(self.timeframe).ms

    @property
    def lookback_ms(self) -> int:
        return LOOKBACKS_MS[self.lookback]

    @property
    def revision(self) -> str:
        """Charts keep their zoom until one of these changes."""
        return f"{self.source}|{self.y}|{self.x}|{self.timeframe}|{self.lookback}"


def source_controls(base: Settings) -> tuple[str, Path | None] | None:
    """Data source radio (and the replay file); None while there is no file to replay.

    Browsers pick a replay file from a list: the regular files of ``base.storage.replay_folder`` (plus
    the operator's own ``QUANT_REPLAY_FILE``). What comes back is one of those paths, never text
    a browser typed, so no session can make the server open any other file.
    """
    st.sidebar.header("Data")
    sources = list(SOURCE_LABELS)
    source = st.sidebar.radio("Source", sources, format_func=SOURCE_LABELS.__getitem__, key="source",
                              index=sources.index(base.feed.source) if base.feed.source in sources else 0,
                              on_change=_same_coins_on_new_source)
    if source != "replay":
        return source, base.feed.replay_file
    folder = base.storage.replay_folder
    choices = replay_files(folder)
    if base.feed.replay_file is not None and base.feed.replay_file not in choices:
        choices.insert(0, base.feed.replay_file)
    if not choices:
        st.info(f"No recorded files to replay: put NDJSON tick files or project databases in the folder "
                f"{plain(repr(str(folder)))} (QUANT_REPLAY_DIR) on the server.")
        return None
    names = [path.name for path in choices]
    picked = st.sidebar.selectbox("Recorded file", range(len(choices)), format_func=names.__getitem__,
                                  key="replay_choice", help=f"Files in {plain(folder)} on the server")
    return source, choices[picked]


def _same_coins_on_new_source() -> None:
    """On a switch of source, the watched symbols become the same coins on its market (``BTCUSDT`` ↔
    ``BTCUSDT.P``): the futures page opens on perpetuals, the spot page on spot symbols."""
    source, raw = st.session_state.get("source"), st.session_state.get("symbols")
    if source in SOURCES and isinstance(raw, str):
        st.session_state["symbols"] = ",".join(same_coins(source, raw.split(",")))


def symbol_controls(default: tuple[str, ...], choices: tuple[str, ...] | None = None, *,
                    source: str | None = None) -> tuple[str, ...] | None:
    """Watched legs (comma-separated leg names, :class:`domain.Leg`), or fixed ``choices`` for datasets.
    ``default`` is shown as ``source``'s own legs (``BTCUSDT.P`` on binance-futures)."""
    if choices is not None:
        return choices
    if source in SOURCES:
        default = same_coins(source, default)
    raw = st.sidebar.text_input("Watched symbols (comma-separated)", value=",".join(default), key="symbols",
                                help="Binance legs: BTCUSDT is spot, BTCUSDT.P the USDⓈ-M perpetual, on "
                                     "either page; legs of both venues make a pair across them, e.g. "
                                     "ETHUSDT,ETHUSDT.P (the basis)")
    try:
        symbols = parse_symbols(raw)
    except ConfigError as exc:
        st.sidebar.error(plain(exc))
        return None
    if len(symbols) < 2:
        st.sidebar.error("watch at least two symbols to form a pair")
        return None
    return symbols


def analysis_controls(source: str, replay_file: Path | None, symbols: tuple[str, ...], *,
                      pair: tuple[str, str] | None = None,
                      timeframes: tuple[str, ...] = TIMEFRAME_NAMES) -> Controls:
    """Pair (unless fixed by ``pair``), timeframe, window, regression, thresholds and display settings."""
    if pair is None:
        st.sidebar.header("Pair")
        y_col, x_col = st.sidebar.columns(2)
        y = y_col.selectbox("Y (dependent)", symbols, index=min(1, len(symbols) - 1), key="pair_y")
        x = x_col.selectbox("X (hedge)", [s for s in symbols if s != y], index=0, key="pair_x")
    else:
        y, x = pair
    st.sidebar.header("Analytics")
    timeframe = st.sidebar.radio("Timeframe", timeframes, horizontal=True, key="timeframe",
                                 format_func=timeframe_label)
    lookback = st.sidebar.selectbox("Lookback", list(LOOKBACKS_MS), index=1, key="lookback",
                                    disabled=source == UPLOADED,
                                    help="Uploaded datasets are always shown whole.")
    window = st.sidebar.slider("Rolling window (bars)", *WINDOW_RANGE, 60, key="window")
    regression = st.sidebar.selectbox("Regression", list(Regression), key="regression",
                                      format_func=REGRESSION_LABELS.__getitem__,
                                      help="In-sample fits use the whole lookback, future bars included.")
    # Options and a default index: never None (Streamlit types it Optional for index=None).
    assert regression is not None
    log_prices = st.sidebar.radio("Spread on", ["price", "log price"], horizontal=True, key="spread_on") == "log price"
    z_threshold = st.sidebar.slider("Z-score threshold", 1.0, 3.0, 2.0, 0.1, key="z_threshold")
    bound = zscore_bound(window)
    if z_threshold >= bound:
        st.sidebar.warning(f"A threshold of {z_threshold:g} can never be reached with a {window}-bar window: the "
                           f"z-score includes the current bar, so |z| ≤ (window−1)/√window = {bound:.2f}. Lower the "
                           "threshold or widen the window.")
    with st.sidebar.expander("Liquidity filter"):
        min_trades = st.number_input("Min trades per bar (each leg)", 0, 10_000, 0, key="min_trades",
                                     help="Bars where a leg traded fewer times are left out of the analytics.")
        min_volume = st.number_input("Min volume per bar (each leg, base units)", 0.0, 1e9, 0.0, key="min_volume")
    st.sidebar.header("Display")
    price_mode = st.sidebar.radio("Prices", ["normalised", "dual"], horizontal=True, key="price_mode",
                                  format_func={"normalised": "rebased to 100", "dual": "two axes"}.__getitem__)
    auto_refresh = st.sidebar.toggle("Auto-refresh", value=True, key="auto_refresh")
    tz = st.sidebar.selectbox("Display time zone", TIME_ZONES, key="tz", help="Data stays in UTC; exports are UTC.")
    return Controls(source, replay_file, symbols, y, x, timeframe, lookback, window, regression, log_prices,
                    z_threshold, price_mode, auto_refresh, tz, int(min_trades), float(min_volume))


def pair_params(controls: Controls) -> PairParams:
    """The pair analytics' parameters the controls ask for."""
    return PairParams(controls.y, controls.x, controls.window, controls.regression, controls.log_prices,
                      controls.z_threshold)


def view_query(controls: Controls, symbols: tuple[str, ...] | None = None, interval_ms: int | None = None,
               params: PairParams | None = None) -> ViewQuery:
    """What the page asks a feed's shared analytics for (by default: its pair's two legs, timeframe
    and parameters), over the lookback plus the parameters' warm-up, with the liquidity filter.

    The pair is aligned on its own legs' bars, never on every watched symbol's: its numbers are
    the alert monitor's and every other tab's on that pair, whatever else they watch, and a page
    watching 200 symbols does not align 200 of them to draw two (the universe is
    :mod:`pairs.universe`'s)."""
    params = pair_params(controls) if params is None else params
    return ViewQuery((controls.y, controls.x) if symbols is None else symbols,
                     controls.interval_ms if interval_ms is None else interval_ms, controls.lookback_ms, params,
                     params.warmup_bars, controls.min_trades, controls.min_volume)
