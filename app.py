"""Streamlit dashboard, the composition root: read controls, fetch bars, call analytics, draw.

Served by ``server.py`` (``make run``: the Host check and the pushed live routes); ``streamlit run
app.py`` runs it bare, for tests (see README). Feeds belong to the server's application state
(:mod:`ui.appstate`): one :class:`~service.ServiceRegistry` runs at most one service per
database, shared by every browser session; this session's feed, its notices and the live panel
are :mod:`ui.feed`'s.
"""

from __future__ import annotations

from collections.abc import Callable

import streamlit as st

from config import ConfigError, from_env
from domain import Timeframe
from ingestion.live_bars import BASE_INTERVAL_MS
from pairs.bars import with_open_bar
from pairs.compute import PairParams
from pairs.shared import PairView
from pairs.universe import UniverseView
from service import Service
from ui import appstate, live
from ui.charts_tab import ANALYTICS_RUNS, CHART_REFRESH_S
from ui.controls import UPLOADED, Controls, analysis_controls, pair_params, source_controls, view_query
from ui.feed import (
    LIVE_REFRESH_S,
    NOTICES_REFRESH_S,
    acquire_service,
    live_token,
    register_live_panel,
    render_feed_notices,
    render_live_panel,
)
from ui.labels import timeframe_label
from ui.panels import render_needs
from ui.plain import plain
from ui.tabs import PageData, render_tabs
from ui.universe import pick_symbols
from ui.upload import dataset_page_data, render_upload


def render_analytics(data: Callable[[], PageData | None], controls: Controls) -> None:
    """Bars → pair analytics → charts, stats, table and exports (one fragment run)."""
    # Counted on every run, drawn or not: a chart skipped by a run is gone from the browser.
    st.session_state[ANALYTICS_RUNS] = st.session_state.get(ANALYTICS_RUNS, 0) + 1
    page = data()
    if page is None:
        return
    service = page.service
    if service is not None:
        register_live_panel(service, controls)  # every run: a page left open keeps its stream
    params = pair_params(controls)
    view = page.view((controls.y, controls.x), controls.interval_ms, params, controls)  # the pair's legs alone
    if view.bars.aligned is None or view.pair is None:  # both None until every symbol has a bar
        waiting = [s for s, frame in view.bars.by_symbol.items() if frame.empty]
        st.info(f"Waiting for the first trades of {', '.join(waiting)}.", icon="⏳")
        return
    # Computed over the warm-up too, shown over the lookback: every analytic defined from its first bar.
    shown = view.shown()
    pair, bars = shown.pair, shown.bars
    if pair is None:  # a cut of a view with analytics has them too
        return
    if bars.interval_ms > BASE_INTERVAL_MS:
        # The forming bar, shaded on the price chart. Not on 1 s bars: under a second old and narrower
        # than a pixel at any lookback, it is the live panel's; their charts end at a closed bar that
        # every tab shares (chart_span), so each update is built once, not once per tab.
        bars = page.with_open(bars, view.open_start_ms)
    if controls.min_trades or controls.min_volume:
        total = 0 if bars.aligned is None else len(bars.aligned.index)
        st.caption(f"Liquidity filter: {bars.illiquid_bars(controls.min_trades, controls.min_volume):,} of "
                   f"{total:,} bars left out.")
    render_needs(pair, bars.interval_ms, None if service is None else controls.lookback_ms)
    render_tabs(page, view, bars, pair, controls)


def main() -> None:
    st.set_page_config(page_title="Pair-trading analytics", layout="wide")
    try:
        base = from_env()
    except ConfigError as exc:
        st.error(f"Invalid configuration: {plain(exc)}")
        st.stop()
    chosen = source_controls(base)
    render_upload(base.storage)
    if chosen is not None and chosen[0] == UPLOADED:
        controls, page = dataset_page_data(base)  # two uploaded datasets as a pair, no feed
        render_analytics(lambda: page, controls)
        return
    symbols = None if chosen is None else pick_symbols(base.feed, chosen[0])
    if chosen is None or symbols is None:
        st.stop()
    source, replay_file = chosen
    controls = analysis_controls(source, replay_file, symbols)
    # The pair for headless alert flags is irrelevant here; the sidebar chooses the pair.
    settings = base.replace(source=source, replay_file=replay_file, symbols=symbols, pair=None)
    service = acquire_service(base, settings)
    if service is None:
        st.stop()

    def acquire() -> Service | None:
        return acquire_service(base, settings)

    def live_data() -> PageData | None:
        current = acquire()  # every run: never draw from a feed that has been stopped
        if current is None:
            return None

        def view(symbols: tuple[str, ...], interval_ms: int, params: PairParams, controls: Controls) -> PairView:
            return current.shared.ask(view_query(controls, symbols, interval_ms, params))

        def universe(wait: bool) -> UniverseView:
            return current.universe.view(controls.symbols, controls.interval_ms, controls.lookback_ms, wait=wait)

        return PageData(view, lambda bars, open_start_ms: with_open_bar(bars, current.engine, open_start_ms), current,
                        universe)

    st.title(f"{controls.y} / {controls.x} · {timeframe_label(controls.timeframe)} bars")
    state = appstate.current()
    if state.pushed:  # served by server.py: the numbers are pushed on every trade
        st.fragment(run_every=NOTICES_REFRESH_S if controls.auto_refresh else None)(render_feed_notices)(
            acquire, controls)
        register_live_panel(service, controls)
        live.live_panel(live_token(), controls.y, controls.x)
    else:
        st.fragment(run_every=LIVE_REFRESH_S if controls.auto_refresh else None)(render_live_panel)(acquire, controls)
    chart_every = CHART_REFRESH_S[Timeframe.of(controls.timeframe)] if controls.auto_refresh else None
    st.fragment(run_every=chart_every)(render_analytics)(live_data, controls)


# Streamlit runs this file as __main__; importing it (benchmarks) only defines the functions.
if __name__ == "__main__":
    main()
