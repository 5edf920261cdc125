"""The page's feed: this session's service from the server's registry, the notices a desk must not
miss about it, and the live panel (pushed by ``server.py``'s routes, or polled without them).

Sessions only read from the shared services (:mod:`ui.appstate`) and never stop one another's feed.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable

import streamlit as st

from config import ConfigError, Settings
from records import now_ms
from service import Service, TooManyFeeds
from storage import StorageError
from ui import appstate, live
from ui.alerts_panel import render_banners
from ui.controls import SOURCE_LABELS, Controls, view_query
from ui.panels import fmt
from ui.plain import plain
from ui.status import feed_is_failing, partial_outage, render_history_progress, render_storage_problem
from ui.universe import render_flagged

LIVE_REFRESH_S = 0.5  # the polled live panel (without server.py); charts: ui.charts_tab.CHART_REFRESH_S
NOTICES_REFRESH_S = 2.0  # feed notices and alert banners beside the pushed live panel
BANNER_ALERTS = 20

log = logging.getLogger(__name__)


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
        # Legs of two venues (ETHUSDT and ETHUSDT.P) read both venues' shared feeds.
        return appstate.current().registry.acquire_legs(session_id(), settings,
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
    for venue_status in service.statuses():  # a split feed with a connection down: whose legs are silent
        outage = partial_outage(venue_status)
        if outage is not None:
            st.warning(f"{plain(venue_status.label)}: {plain(outage)}", icon="🔌")
    render_flagged(service, controls.symbols)
    for other in service.statuses()[1:]:  # the other venue of a page joining two: each shows its own state
        if feed_is_failing(other):
            st.error(f"{plain(other.label)} is unreachable: {plain(other.last_error)}; the other venue's legs "
                     "keep flowing.", icon="🚫")
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
    decimals = live.cell_decimals(values)
    for column, (name, _, _) in zip(st.columns(len(live.FIELDS)), live.FIELDS, strict=True):
        column.metric(names[name], fmt(values[name], decimals[name]), help=helps.get(name))
    funding = live.funding_line(service, controls.y, controls.x, now_ms())
    if funding:  # perpetuals only
        st.caption(plain(funding), help=live.FUNDING_NOTE)
    st.caption(live.feed_lines(service, escape=plain))
