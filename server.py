"""ASGI entry point: the dashboard (``app.py``) plus the routes that push live numbers to it.

``make run`` starts it with ``streamlit run server.py``, the one supported way to serve: the same
Streamlit server, settings and ``.streamlit/config.toml`` (127.0.0.1, XSRF, upload limit, no
error details), with the ``/live`` routes of :mod:`ui.live` mounted on the same origin and port
(Server-Sent Events of each page's live panel, Plotly's bundle for the chart component).

The application state (:class:`ui.appstate.AppState`: the feeds, the live board, the shared
chart builds) is built here, once: the routes close over its board, the lifespan stops its
feeds when the server stops, and the page script reaches it through :func:`ui.appstate.current`
(why there: see :mod:`ui.appstate`). ``streamlit run app.py`` still serves the page bare, for
debugging, with a polled live panel.

Every request, on every route (page, static files, health, Streamlit's WebSocket, ``/live/*``),
must name the dashboard in its ``Host`` header (``QUANT_ALLOWED_HOSTS``, default localhost,
127.0.0.1 and [::1]): :class:`ui.hosts.AllowedHostsMiddleware` refuses the rest, so a page on
another site that rebinds its own name to 127.0.0.1 gets nothing (see README, Security).
"""

import functools
import signal
import sys
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from types import FrameType
from typing import Any

import streamlit as st
from starlette.middleware import Middleware
from streamlit import config as streamlit_config

from config import ConfigError, allowed_hosts
from ui import appstate, live
from ui.hosts import AllowedHostsMiddleware

try:
    HOSTS = allowed_hosts()
except ConfigError as exc:  # named, at start, without a traceback (uvicorn imports this module)
    print(f"error: {exc}", file=sys.stderr)
    raise SystemExit(2) from None

STATE = appstate.AppState.build(pushed=True)
appstate.install(STATE)


def _end_streams_first(previous: Callable[[int, FrameType | None], Any], signum: int,
                       frame: FrameType | None) -> None:
    STATE.board.close()
    previous(signum, frame)


def _end_streams_on_exit_signals() -> None:
    """On SIGINT/SIGTERM, end the pages' live streams before uvicorn's own handler runs.

    uvicorn shuts down only once every open response has ended, and a page's event stream
    (``/live/events``) never ends by itself: with a browser open, Ctrl-C or SIGTERM left the server
    waiting for it, feeds running, until a second Ctrl-C forced an exit. Installed at startup,
    over uvicorn's handlers (it captures the signals while it serves and restores the process's
    own afterwards, which drops these)."""
    if threading.current_thread() is not threading.main_thread():  # signals are the main thread's
        return
    for signum in (signal.SIGINT, signal.SIGTERM):
        previous = signal.getsignal(signum)
        if callable(previous):
            signal.signal(signum, functools.partial(_end_streams_first, previous))


@asynccontextmanager
async def lifespan(_app: st.App) -> AsyncIterator[dict[str, Any]]:
    """The server's lifetime is the feeds': stopped (writers flushed) when it shuts down."""
    _end_streams_on_exit_signals()
    try:
        yield {"state": STATE}
    finally:
        STATE.board.close()  # however the server stops
        STATE.stop()


# Streamlit's own check of its WebSocket's Host as well (the middleware already covers every route).
streamlit_config.set_option("server.allowedHosts", list(HOSTS))
app = st.App("app.py", routes=live.routes(STATE.board), lifespan=lifespan,
             middleware=[Middleware(AllowedHostsMiddleware, hosts=HOSTS)])
