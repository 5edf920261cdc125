"""ASGI entry point: the dashboard (``app.py``) plus the routes that push live numbers to it.

``make run`` starts it with ``streamlit run server.py``: the same Streamlit server, settings and
``.streamlit/config.toml`` (127.0.0.1, XSRF, upload limit, no error details), with
:data:`ui.live.ROUTES` mounted on the same origin and port (Server-Sent Events of each page's
live panel, Plotly's bundle for the chart component). ``streamlit run app.py`` still works; its
live panel then polls.
"""

import streamlit as st

from ui import live

live.ROUTES_MOUNTED = True
app = st.App("app.py", routes=live.ROUTES)
