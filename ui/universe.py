"""The watched symbols of a live venue, picked from what the exchange lists.

A searchable multiselect over the venue's trading symbols in one quote asset (USDT by default), a
"top N by 24 h quote volume" button, and a box for pasting a list: a pasted symbol the venue does not
list, or lists but does not trade now, is refused with a message naming it. Watched symbols that
stop trading (delisted, halted) stay in the selection, flagged, and the feed notices say that no
trades will arrive for them. The picker holds leg names (:class:`domain.Leg`: ``BTCUSDT.P`` on
USDⓈ-M), taken as written: a leg of the other Binance venue (``ETHUSDT.P`` on the spot page,
``ETHUSDT`` on the futures page) makes a pair across venues, checked against that venue's listing.
Sources without a listing (simulated, replayed) keep their typed symbols (:func:`ui.controls.symbol_controls`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Mapping

import streamlit as st

from config import FeedSettings
from domain import Leg, Market
from ingestion.binance.rest import RestError
from ingestion.binance.split import split_names
from ingestion.binance.universe import DEFAULT_QUOTE, Universe
from ingestion.source import SourceSpec
from ingestion.sources import same_coins, source_for, spec_for
from records import now_ms
from service import MAX_SYMBOLS, Service
from ui.controls import symbol_controls
from ui.plain import plain

log = logging.getLogger(__name__)

TOP_N_DEFAULT = 10
REFUSALS_SHOWN = 10  # refused pasted names told one by one; the rest in one line (a pasted list may hold hundreds)
OVER_CAP_NAMED = 3  # legs over the page's cap named in its one line
VENUE_NAMES = {Market.SPOT: "Binance spot", Market.USDM: "Binance USDⓈ-M futures"}


def venue_universe(spec: SourceSpec, feed: FeedSettings) -> Universe | None:
    """The listing of ``spec``'s venue at ``feed``'s endpoints (cached per venue, refreshed hourly), or
    None when the source has none (simulated, replayed). :class:`RestError` naming the cause when it
    cannot be fetched and none was ever fetched."""
    return None if spec.universe is None else spec.universe(feed).get()


def market_universe(market: Market, feed: FeedSettings, *, fetch: bool = True) -> Universe | None:
    """The listing of the Binance venue trading ``market`` (the other venue's, for a leg of a pair across
    venues), at ``feed``'s endpoints; ``fetch`` False: only one already fetched (None before), for
    notices that must never wait on the exchange. :class:`RestError`/``OSError`` as :func:`venue_universe`."""
    spec = spec_for(source_for(market))
    if spec.universe is None:
        return None
    cache = spec.universe(feed)
    return cache.get() if fetch else cache.peek()


def leg_problems(legs: Iterable[str], universes: Mapping[Market, Universe | None]) -> dict[str, str]:
    """Why each of ``legs`` (leg names) cannot be watched now, by its own venue's listing in
    ``universes`` (not listed, or not trading); legs without a problem, or of a venue whose listing
    is missing, are absent."""
    found: dict[str, str] = {}
    for name in legs:
        leg = Leg.parse(name)
        universe = universes.get(leg.market)
        problem = None if universe is None else universe.problems([leg.symbol]).get(leg.symbol)
        if problem is not None:
            found[name] = problem
    return found


def leg_label(universes: Mapping[Market, Universe | None], name: str) -> str:
    """A watched leg as the picker shows it: its name (``BTCUSDT.P`` for a perpetual), with the reason
    when its venue does not trade it: ``BCCUSDT ⚠ BREAK``, ``NOPEUSDT.P ⚠ not listed``."""
    leg = Leg.parse(name)
    universe = universes.get(leg.market)
    listing = None if universe is None else universe.get(leg.symbol)
    if universe is None or (listing is not None and listing.trading):
        return name
    return f"{name} ⚠ not listed" if listing is None else f"{name} ⚠ {listing.status}"


def _key(source: str, what: str) -> str:
    return f"universe_{what}_{source}"  # each venue keeps its own selection


def watched_key(source: str) -> str:
    """The session-state key of ``source``'s picked legs (a list of leg names), for callbacks that set them."""
    return _key(source, "watched")


def _set_top(source: str, universe: Universe) -> None:
    """The button's callback: the watched legs become the top N of the chosen quote asset."""
    n = int(st.session_state[_key(source, "top_n")])
    top = universe.top(n, st.session_state[_key(source, "quote")])
    st.session_state[_key(source, "watched")] = [Leg(universe.market, symbol).name for symbol in top]


def _add_pasted(source: str, universe: Universe, feed: FeedSettings) -> None:
    """The paste box's callback: add the listed, trading legs; refuse the others by name.

    A leg is taken as written (``ETHUSDT`` spot, ``ETHUSDT.P`` perpetual, on either page): a leg of the
    other Binance venue (a pair across venues, e.g. the basis) is checked against that venue's listing.
    Legs beyond the page's cap (:data:`service.MAX_SYMBOLS`) are refused in one line naming them: the
    selection stays one the page watches, not one it refuses whole."""
    raw = st.session_state.get(_key(source, "paste"), "")
    wanted = list(st.session_state.get(_key(source, "watched"), []))
    refused: list[str] = []
    over: list[str] = []
    for item in raw.replace("\n", ",").split(","):
        if not item.strip():
            continue
        try:
            leg = Leg.parse(item.strip())
        except ValueError as exc:
            refused.append(str(exc))
            continue
        if leg.name in wanted:
            continue
        if len(wanted) >= MAX_SYMBOLS:
            over.append(leg.name)  # not checked against a listing: it would not be watched anyway
            continue
        listing: Universe | None = universe
        if leg.market is not universe.market:
            try:
                listing = market_universe(leg.market, feed)
            except (RestError, OSError) as exc:
                refused.append(f"{leg.name}: cannot fetch the {VENUE_NAMES[leg.market]} symbol list to check it "
                               f"({exc})")
                continue
        problem = None if listing is None else listing.problems([leg.symbol]).get(leg.symbol)
        if problem is not None:
            refused.append(problem)
        else:
            wanted.append(leg.name)
    over = list(dict.fromkeys(over))
    if over:
        refused.insert(0, f"{split_names(over, OVER_CAP_NAMED)}: at most {MAX_SYMBOLS} symbols are watched on one page")
    if len(refused) > REFUSALS_SHOWN + 1:
        refused[REFUSALS_SHOWN:] = [f"{len(refused) - REFUSALS_SHOWN} more (only the first {REFUSALS_SHOWN} are named)"]
    st.session_state[_key(source, "watched")] = wanted
    st.session_state[_key(source, "paste")] = ""
    st.session_state[_key(source, "refused")] = refused


def _other_universes(legs: Iterable[str], home: Universe, feed: FeedSettings) -> dict[Market, Universe | None]:
    """``home`` and the listing of every other venue among ``legs``' (None for one that cannot be
    fetched now: its legs are then shown and watched unflagged, and the sidebar says why)."""
    universes: dict[Market, Universe | None] = {home.market: home}
    for market in {Leg.parse(name).market for name in legs} - {home.market}:
        try:
            universes[market] = other = market_universe(market, feed)
        except (RestError, OSError) as exc:
            universes[market] = None
            st.sidebar.caption(f"Cannot check the {VENUE_NAMES[market]} legs against its symbol list: {plain(exc)}.")
            continue
        if other is not None:  # its legs are flagged by the last good list: say so, as for the page's own
            _say_stale(other, f"{VENUE_NAMES[market]} symbol list")
    return universes


def _say_stale(universe: Universe, what: str) -> None:
    """A sidebar caption when ``universe`` is the last good list because refreshing it failed: how old, and why."""
    if universe.stale is not None:
        age_min = max(0, (now_ms() - universe.fetched_ms) // 60_000)
        st.sidebar.caption(f"{what} from {age_min} min ago: refreshing it failed ({plain(universe.stale)}).")


def _first_legs(source: str, configured: tuple[str, ...]) -> tuple[str, ...]:
    """What the picker of ``source`` opens on: the configured coins as its venue's legs (``BTCUSDT`` is
    ``BTCUSDT.P`` on the futures page, as ``--symbols`` means there), unless they name legs of both
    venues (a configured basis ``ETHUSDT,ETHUSDT.P``): those stay as written."""
    markets = set()
    for name in configured:
        with contextlib.suppress(ValueError):  # config checked them; same_coins keeps anything else as typed
            markets.add(Leg.parse(name).market)
    return configured if len(markets) > 1 else same_coins(source, configured)


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
    _say_stale(universe, "Symbol list")
    watched_key = _key(source, "watched")
    if watched_key not in st.session_state:
        st.session_state[watched_key] = list(_first_legs(source, feed.symbols))
    quotes = list(universe.quote_assets()) or [DEFAULT_QUOTE]
    quote_key = _key(source, "quote")
    if st.session_state.get(quote_key) not in quotes:
        st.session_state[quote_key] = DEFAULT_QUOTE if DEFAULT_QUOTE in quotes else quotes[0]
    quote = st.sidebar.selectbox("Quote asset", quotes, key=quote_key,
                                 help="The picker lists symbols quoted in this asset; top N ranks among them.")
    watched: list[str] = list(st.session_state[watched_key])
    # Legs already watched stay listed whatever their quote asset, status or venue, flagged if they cannot trade.
    options = sorted({Leg(universe.market, symbol).name for symbol in universe.trading(quote)} | set(watched))
    universes = _other_universes(watched, universe, feed)
    top_col, button_col = st.sidebar.columns([1, 2], vertical_alignment="bottom")
    top_col.number_input("N", min_value=2, max_value=MAX_SYMBOLS, value=TOP_N_DEFAULT, step=1,
                         key=_key(source, "top_n"))
    button_col.button("Top N by 24 h quote volume", key=_key(source, "top"), on_click=_set_top,
                      args=(source, universe), use_container_width=True,
                      help=f"The N {quote} symbols that traded the most over the last 24 h (quote volume).")
    picked = st.sidebar.multiselect(
        f"Watched symbols ({len(universe.trading(quote)):,} trading in {quote})", options, key=watched_key,
        format_func=lambda name: leg_label(universes, name),
        help=f"Type to search {VENUE_NAMES[universe.market]}'s listing.")
    other = "ETHUSDT" if universe.market is Market.USDM else "ETHUSDT.P"
    st.sidebar.text_input("Add symbols (paste, comma-separated)", key=_key(source, "paste"),
                          on_change=_add_pasted, args=(source, universe, feed),
                          placeholder=", ".join(Leg(universe.market, s).name for s in ("BTCUSDT", "ETHUSDT")),
                          help=f"Leg names: BTCUSDT is spot, BTCUSDT.P the USDⓈ-M perpetual. A leg of the other "
                               f"Binance venue (e.g. {other}) makes a pair across venues, such as the basis.")
    for message in st.session_state.get(_key(source, "refused"), []):
        st.sidebar.error(f"Refused: {plain(message)}")
    flagged = leg_problems(picked, universes)
    if flagged:
        st.sidebar.warning("No trades will arrive for " + "; ".join(plain(text) for text in flagged.values()) + ".")
    if len(picked) > MAX_SYMBOLS:
        st.sidebar.error(f"watch at most {MAX_SYMBOLS} symbols, got {len(picked)}")
        return None
    if len(picked) < 2:
        st.sidebar.error("watch at least two symbols to form a pair")
        return None
    return tuple(picked)


def render_flagged(service: Service, legs: tuple[str, ...]) -> None:
    """The feed notice for watched ``legs`` their venue no longer trades (delisted, halted): their feed
    stays silent. Each leg by its own venue's listing (a pair across venues has two); nothing for
    sources without a listing, or where it was never fetched."""
    if service.spec.market is None:
        return
    # The sidebar fetched them for this run; a notice redrawn every few seconds never waits on the exchange.
    feed = service.settings.feed
    markets = {Leg.parse(name).market for name in legs}
    universes = {market: market_universe(market, feed, fetch=False) for market in markets}
    flagged = leg_problems(legs, universes)
    for market in sorted(markets, key=lambda m: m.value):
        texts = [text for name, text in flagged.items() if Leg.parse(name).market is market]
        if texts:
            st.warning("Not trading on " + VENUE_NAMES[market] + ": " + "; ".join(plain(text) for text in texts)
                       + ". Their feed stays silent; their pairs show only what was stored before.", icon="⚠️")
