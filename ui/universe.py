"""The watched symbols of a live venue, picked from what the exchange lists.

A searchable multiselect over the venue's trading symbols in one quote asset (USDT by default), a
"top N by 24 h quote volume" button, and a box for pasting a list: a pasted symbol the venue does not
list, or lists but does not trade now, is refused with a message naming it. Watched symbols that
stop trading (delisted, halted) stay in the selection, flagged, and the feed notices say that no
trades will arrive for them. Legs are shown by their :class:`domain.Leg` name (``BTCUSDT.P`` on
USDⓈ-M). Sources without a listing (simulated, replayed) keep their typed symbols
(:func:`ui.controls.symbol_controls`).
"""

from __future__ import annotations

import logging

import streamlit as st

from config import FeedSettings
from domain import Leg, Market
from ingestion.binance.rest import RestError
from ingestion.binance.universe import DEFAULT_QUOTE, Universe
from ingestion.source import SourceSpec
from ingestion.sources import spec_for
from records import now_ms
from service import MAX_SYMBOLS, Service
from ui.controls import symbol_controls
from ui.plain import plain

log = logging.getLogger(__name__)

TOP_N_DEFAULT = 10
VENUE_NAMES = {Market.SPOT: "Binance spot", Market.USDM: "Binance USDⓈ-M futures"}


def venue_universe(spec: SourceSpec, feed: FeedSettings) -> Universe | None:
    """The listing of ``spec``'s venue at ``feed``'s endpoints (cached per venue, refreshed hourly), or
    None when the source has none (simulated, replayed). :class:`RestError` naming the cause when it
    cannot be fetched and none was ever fetched."""
    return None if spec.universe is None else spec.universe(feed).get()


def leg_label(universe: Universe, symbol: str) -> str:
    """``BTCUSDT.P`` for a perpetual; with the reason when it cannot trade: ``BCCUSDT ⚠ BREAK``."""
    name = Leg(universe.market, symbol).name
    listing = universe.get(symbol)
    if listing is None:
        return f"{name} ⚠ not listed"
    return name if listing.trading else f"{name} ⚠ {listing.status}"


def _key(source: str, what: str) -> str:
    return f"universe_{what}_{source}"  # each venue keeps its own selection


def _set_top(source: str, universe: Universe) -> None:
    """The button's callback: the watched symbols become the top N of the chosen quote asset."""
    n = int(st.session_state[_key(source, "top_n")])
    st.session_state[_key(source, "watched")] = list(universe.top(n, st.session_state[_key(source, "quote")]))


def _add_pasted(source: str, universe: Universe) -> None:
    """The paste box's callback: add the listed, trading symbols; refuse the others by name."""
    raw = st.session_state.get(_key(source, "paste"), "")
    wanted = list(st.session_state.get(_key(source, "watched"), []))
    refused: list[str] = []
    for item in raw.replace("\n", ",").split(","):
        if not item.strip():
            continue
        try:
            leg = Leg.parse(item.strip())
        except ValueError as exc:
            refused.append(str(exc))
            continue
        if leg.market is not universe.market and universe.market is Market.SPOT:
            refused.append(f"{leg.name} is a USDⓈ-M perpetual, not a {VENUE_NAMES[universe.market]} symbol")
            continue
        problem = universe.problems([leg.symbol]).get(leg.symbol)
        if problem is not None:
            refused.append(problem)
        elif leg.symbol not in wanted:
            wanted.append(leg.symbol)
    st.session_state[_key(source, "watched")] = wanted
    st.session_state[_key(source, "paste")] = ""
    st.session_state[_key(source, "refused")] = refused


def pick_symbols(feed: FeedSettings, source: str) -> tuple[str, ...] | None:
    """The watched symbols of ``source``, picked from its venue's listing in the sidebar (the first
    time: ``feed``'s symbols); None (after saying why) while fewer than two are picked. Typed instead
    for a source without a listing, and when the listing cannot be fetched."""
    spec = spec_for(source)
    try:
        universe = venue_universe(spec, feed)
    except (RestError, OSError) as exc:
        st.sidebar.warning(f"Cannot fetch the symbol list: {plain(exc)}. Type the symbols instead.")
        return symbol_controls(feed.symbols, source=spec.name)
    if universe is None:
        return symbol_controls(feed.symbols, source=spec.name)
    if universe.stale is not None:
        age_min = max(0, (now_ms() - universe.fetched_ms) // 60_000)
        st.sidebar.caption(f"Symbol list from {age_min} min ago: refreshing it failed ({plain(universe.stale)}).")
    watched_key = _key(source, "watched")
    if watched_key not in st.session_state:
        st.session_state[watched_key] = list(feed.symbols)
    quotes = list(universe.quote_assets()) or [DEFAULT_QUOTE]
    quote_key = _key(source, "quote")
    if st.session_state.get(quote_key) not in quotes:
        st.session_state[quote_key] = DEFAULT_QUOTE if DEFAULT_QUOTE in quotes else quotes[0]
    quote = st.sidebar.selectbox("Quote asset", quotes, key=quote_key,
                                 help="The picker lists symbols quoted in this asset; top N ranks among them.")
    watched: list[str] = list(st.session_state[watched_key])
    # Symbols already watched stay listed whatever their quote asset or status, flagged if they cannot trade.
    options = sorted(set(universe.trading(quote)) | set(watched))
    top_col, button_col = st.sidebar.columns([1, 2], vertical_alignment="bottom")
    top_col.number_input("N", min_value=2, max_value=MAX_SYMBOLS, value=TOP_N_DEFAULT, step=1,
                         key=_key(source, "top_n"))
    button_col.button("Top N by 24 h quote volume", key=_key(source, "top"), on_click=_set_top,
                      args=(source, universe), use_container_width=True,
                      help=f"The N {quote} symbols that traded the most over the last 24 h (quote volume).")
    picked = st.sidebar.multiselect(
        f"Watched symbols ({len(universe.trading(quote)):,} trading in {quote})", options, key=watched_key,
        format_func=lambda symbol: leg_label(universe, symbol),
        help=f"Type to search {VENUE_NAMES[universe.market]}'s listing.")
    st.sidebar.text_input("Add symbols (paste, comma-separated)", key=_key(source, "paste"),
                          on_change=_add_pasted, args=(source, universe), placeholder="e.g. BTCUSDT, ETHUSDT")
    for message in st.session_state.get(_key(source, "refused"), []):
        st.sidebar.error(f"Refused: {plain(message)}")
    flagged = universe.problems(picked)
    if flagged:
        st.sidebar.warning("No trades will arrive for " + "; ".join(plain(text) for text in flagged.values()) + ".")
    if len(picked) > MAX_SYMBOLS:
        st.sidebar.error(f"watch at most {MAX_SYMBOLS} symbols, got {len(picked)}")
        return None
    if len(picked) < 2:
        st.sidebar.error("watch at least two symbols to form a pair")
        return None
    return tuple(picked)


def render_flagged(service: Service, symbols: tuple[str, ...]) -> None:
    """The feed notice for watched ``symbols`` the service's venue no longer trades (delisted, halted):
    their feed stays silent. Nothing for sources without a listing, or when it cannot be fetched."""
    spec = service.spec
    # The sidebar fetched it for this run; a notice redrawn every few seconds never waits on the exchange.
    universe = None if spec.universe is None else spec.universe(service.settings.feed).peek()
    if universe is None:
        return
    flagged = universe.problems(symbols)
    if flagged:
        st.warning("Not trading on " + VENUE_NAMES[universe.market] + ": "
                   + "; ".join(plain(text) for text in flagged.values())
                   + ". Their feed stays silent; their pairs show only what was stored before.", icon="⚠️")
