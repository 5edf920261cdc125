"""Streamlit dashboard, the composition root: read controls, fetch bars, call analytics, draw.

Served by ``server.py`` (``make run``: the Host check and the pushed live routes); ``streamlit run
app.py`` runs it bare, for tests (see README). Feeds belong to the server's application state
(:mod:`ui.appstate`): one :class:`~service.ServiceRegistry` runs at most one service per
database, shared by every browser session; sessions only read from them and never stop one
another's feed.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable

import streamlit as st

from config import ConfigError, Settings, from_env
from domain import Timeframe
from ingestion.live_bars import BASE_INTERVAL_MS
from pairs.bars import with_open_bar
from pairs.compute import PairParams
from pairs.shared import PairView, ViewQuery
from records import now_ms
from service import Service, TooManyFeeds
from storage import StorageError
from ui import appstate, live
from ui.alerts_panel import render_banners
from ui.charts_tab import ANALYTICS_RUNS, CHART_REFRESH_S
from ui.controls import SOURCE_LABELS, UPLOADED, Controls, analysis_controls, source_controls, symbol_controls
from ui.labels import timeframe_label
from ui.panels import fmt, render_needs
from ui.plain import plain
from ui.status import feed_is_failing, render_history_progress, render_storage_problem
from ui.tabs import PageData, render_tabs
from ui.upload import dataset_page_data, render_upload

LIVE_REFRESH_S = 0.5  # the polled live panel (without server.py); charts: ui.charts_tab.CHART_REFRESH_S
NOTICES_REFRESH_S = 2.0  # feed notices and alert banners beside the pushed live panel
BANNER_ALERTS = 20

log = logging.getLogger("app")


def register_live_panel(service: Service, controls: Controls) -> None:
    """What this page's pushed live panel shows (nothing to do when the page polls): its stream asks
    ``service`` for this very query's analytics, shared with the charts (:mod:`ui.live`)."""
    state = appstate.current()
    if state.pushed:
        state.board.register(live_token(), service, view_query(controls))


def session_id() -> str:
    """A random id for this browser session (kept in its session state)."""
    return st.session_state.setdefault("session_id", uuid.uuid4().hex)


def live_token() -> str:
    """This page's token for its pushed live panel (random, apart from the session id)."""
    return st.session_state.setdefault("live_token", uuid.uuid4().hex)


def acquire_service(base: Settings, settings: Settings) -> Service | None:
    """This session's service for ``settings`` (started or shared), or None after showing why not."""
    try:
        return appstate.current().registry.acquire(session_id(), settings,
                                                   pin=settings.feed.source == base.feed.source)
    except (TooManyFeeds, ConfigError, ValueError, OSError, StorageError) as exc:
        st.error(f"Cannot start the {SOURCE_LABELS.get(settings.feed.source, settings.feed.source)} feed: {plain(exc)}")
    except Exception:  # the browser sees a plain message; the server log keeps the traceback
        log.exception("starting the %s feed failed", settings.feed.source)
        st.error(f"Cannot start the {SOURCE_LABELS.get(settings.feed.source, settings.feed.source)} feed: "
                 "an internal error (details in the server log).")
    return None


def render_feed_notices(acquire: Callable[[], Service | None], controls: Controls) -> Service | None:
    """What the desk must not miss about the feed: not live, unreachable, storage trouble, history
    loading, alert banners and toasts. Returns the service (None when the feed cannot run)."""
    if st.session_state.get("source") != controls.source:
        st.rerun()  # the source was switched from inside this fragment; redraw the whole page
    service = acquire()  # every run: never draw from a feed that has been stopped
    if service is None:
        return None
    status = service.status()
    if not service.spec.capabilities.live:
        st.info(f"Showing {plain(status.label)} data: not live market prices.", icon="🧪")
    elif feed_is_failing(status):
        st.error(f"{SOURCE_LABELS[controls.source]} is unreachable: {plain(status.last_error)}", icon="🚫")
        # A callback may set a widget's state; assigning it after the widget is drawn may not.
        st.button("Switch to the simulated market", key="switch_to_simulated",
                  on_click=st.session_state.update, kwargs={"source": "simulated"})
    render_storage_problem(status)
    render_history_progress(service.history_progress)
    render_banners(service.recent_alerts(BANNER_ALERTS), controls.tz)
    return service


def render_live_panel(acquire: Callable[[], Service | None], controls: Controls) -> None:
    """Feed notices, last prices, hedge ratio, spread, live z-score, perpetual legs' funding and feed
    health, polled (every 0.5 s).

    The page served by server.py pushes the same numbers instead (:func:`ui.live.live_panel`).
    """
    service = render_feed_notices(acquire, controls)
    if service is None:
        return
    query = view_query(controls)
    tracker = st.session_state.get("live_context")
    if not isinstance(tracker, live.ContextTracker) or not tracker.serves(service, query):
        tracker = st.session_state["live_context"] = live.ContextTracker(service, query)
    values = live.snapshot(service, controls.y, controls.x, tracker.current())
    names = live.labels(controls.y, controls.x)
    helps = {"z": f"Open bar vs the last {controls.window} bars; |z| > {controls.z_threshold} is stretched"}
    for column, (name, _, digits) in zip(st.columns(len(live.FIELDS)), live.FIELDS, strict=True):
        column.metric(names[name], fmt(values[name], digits), help=helps.get(name))
    funding = live.funding_line(service, controls.y, controls.x, now_ms())
    if funding:  # perpetuals only
        st.caption(plain(funding), help=live.FUNDING_NOTE)
    st.caption(live.feed_line(service.status(), escape=plain))


def pair_params(controls: Controls) -> PairParams:
    """The pair analytics' parameters the controls ask for."""
    return PairParams(controls.y, controls.x, controls.window, controls.regression, controls.log_prices,
                      controls.z_threshold)


def view_query(controls: Controls, symbols: tuple[str, ...] | None = None, interval_ms: int | None = None,
               params: PairParams | None = None) -> ViewQuery:
    """What the page asks a feed's shared analytics for (by default: its symbols, timeframe and pair),
    over the lookback plus the parameters' warm-up, with the liquidity filter."""
    params = pair_params(controls) if params is None else params
    return ViewQuery(controls.symbols if symbols is None else symbols,
                     controls.interval_ms if interval_ms is None else interval_ms, controls.lookback_ms, params,
                     params.warmup_bars, controls.min_trades, controls.min_volume)


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
    view = page.view(controls.symbols, controls.interval_ms, params, controls)
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
    symbols = symbol_controls(base.feed.symbols)
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

        return PageData(view, lambda bars, open_start_ms: with_open_bar(bars, current.engine, open_start_ms), current)

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
