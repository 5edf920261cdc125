"""The dashboard's application state: one object, built where the server is built.

:class:`AppState` holds what one dashboard server shares between its browser sessions and its
routes: the feeds (:class:`~service.ServiceRegistry`), what each page's live panel shows
(:class:`~ui.live.LiveBoard`, read by the ``/live/events`` stream) and the chart builds every tab
reuses (:class:`~ui.live_chart.SharedBuilds`), the research job the Scanner tab starts
(:class:`~research.jobs.JobRunner`: one at a time per server), plus whether the ``/live`` routes are mounted
(``pushed``: the live panel and charts are pushed to the browser, else the page polls).

How the parts reach it. ``server.py`` (``make run``) builds the state and hands it to
Streamlit 1.67's ``st.App``: the routes close over its board, the app's lifespan stops its feeds
(flushing their writers) when the server stops, and the state is also what ``app.state`` holds.
The page script, though, is run by Streamlit in threads of its own, with nothing but ``st.*``
in reach: no handle on the ``App`` (``st.context`` carries a request's headers and cookies,
not the application). So ``server.py`` also :func:`install`\\ s the state here, at import, before
the server accepts its first session, and the script asks :func:`current` for it. That is the
one hand-over point, in one module; nothing else is process-wide.

Without ``server.py`` (AppTest runs ``app.py``; ``streamlit run app.py`` for debugging),
:func:`current` builds one state per process through ``st.cache_resource`` (released, feeds
stopped, when that cache is cleared or the process exits) with ``pushed=False``: the same
registry rules, and a polled live panel made by the same code as the pushed one (:mod:`ui.live`).
"""

from __future__ import annotations

import atexit
import threading
from dataclasses import dataclass, field

import streamlit as st

from config import ConfigError, ServerSettings, from_env
from research.jobs import JobRunner
from service import ServiceRegistry
from ui.live import LiveBoard
from ui.live_chart import SHARED_ENTRIES, SharedBuilds


@dataclass(frozen=True, slots=True)
class AppState:
    """What one dashboard server shares (see the module docstring)."""

    registry: ServiceRegistry
    board: LiveBoard
    charts: SharedBuilds
    pushed: bool  # the /live routes are mounted: live panel and charts are pushed, not polled
    jobs: JobRunner = field(default_factory=JobRunner)  # the research job started from the Scanner tab

    @classmethod
    def build(cls, *, pushed: bool, max_feeds: int | None = None) -> AppState:
        """A fresh state; ``max_feeds`` defaults to the configured ``QUANT_MAX_FEEDS``."""
        return cls(ServiceRegistry(_max_feeds() if max_feeds is None else max_feeds), LiveBoard(),
                   SharedBuilds(SHARED_ENTRIES), pushed)

    def stop(self) -> None:
        """Stop every feed (each flushes its writer) and cancel a running research job, waiting a bounded
        time for its thread (:data:`research.jobs.STOP_WAIT_S`). Idempotent."""
        self.registry.stop_all()
        self.jobs.stop()


_installed: AppState | None = None
_install_lock = threading.Lock()


def install(state: AppState) -> None:
    """Make ``state`` this process's (``server.py`` does, once, at import); its feeds stop at exit."""
    global _installed
    with _install_lock:
        if _installed is not None and _installed is not state:
            raise RuntimeError("install: this process already serves another application state")
        _installed = state
    # The server's lifespan stops the feeds on a clean shutdown; this covers an exit without it.
    atexit.register(state.stop)


def current() -> AppState:
    """The state installed by ``server.py``, else this process's polled one (see the module docstring)."""
    return _installed if _installed is not None else _standalone()


@st.cache_resource(show_spinner=False, on_release=AppState.stop)
def _standalone() -> AppState:
    state = AppState.build(pushed=False)
    # cache_resource does not promise on_release at interpreter exit; the final flush must not depend on it.
    atexit.register(state.stop)
    return state


def _max_feeds() -> int:
    """The configured feed limit; the default when the configuration is invalid (the page says why)."""
    try:
        return from_env().server.max_feeds
    except ConfigError:
        return ServerSettings().max_feeds
