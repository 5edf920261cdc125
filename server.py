"""ASGI entry point: the dashboard (``app.py``) plus the routes that push live numbers to it.

``make run`` starts it with ``streamlit run server.py``: the same Streamlit server, settings and
``.streamlit/config.toml`` (127.0.0.1, XSRF, upload limit, no error details), with
:data:`ui.live.ROUTES` mounted on the same origin and port (Server-Sent Events of each page's
live panel, Plotly's bundle for the chart component). ``streamlit run app.py`` still works; its
live panel then polls.

Every request, on every route (page, static files, health, Streamlit's WebSocket, ``/live/*``),
must name the dashboard in its ``Host`` header (``QUANT_ALLOWED_HOSTS``, default localhost,
127.0.0.1 and [::1]): :class:`ui.hosts.AllowedHostsMiddleware` refuses the rest, so a page on
another site that rebinds its own name to 127.0.0.1 gets nothing (see README, Security).
"""

import sys

import streamlit as st
from starlette.middleware import Middleware
from streamlit import config as streamlit_config

from config import ConfigError, allowed_hosts
from ui import live
from ui.hosts import AllowedHostsMiddleware

try:
    HOSTS = allowed_hosts()
except ConfigError as exc:  # named, at start, without a traceback (uvicorn imports this module)
    print(f"error: {exc}", file=sys.stderr)
    raise SystemExit(2) from None

# Streamlit's own check of its WebSocket's Host as well (the middleware already covers every route).
streamlit_config.set_option("server.allowedHosts", list(HOSTS))
live.ROUTES_MOUNTED = True
app = st.App("app.py", routes=live.ROUTES, middleware=[Middleware(AllowedHostsMiddleware, hosts=HOSTS)])
