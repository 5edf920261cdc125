"""The live panel, pushed: last prices, β, spread and the open bar's z-score in the browser on every trade.

A Streamlit fragment can only poll (a rerun every N ms, each costing a script run per tab), so
tick → screen took 365 ms at the median. Here the page publishes, under a random per-session
token, what its live panel computes from (:class:`LiveBoard`: the service, the pair and the
closed bars' :class:`~pairs.compute.LiveContext`), and a small component in the page opens a
Server-Sent Events stream (:func:`events`, mounted by ``server.py``) that sends the panel's
numbers the moment a trade changes them: no script run, one small JSON message per change.

Routes (``server.py`` mounts :data:`ROUTES` into the Streamlit server, same origin and port):

* ``GET /live/events?token=…`` — the stream; 404 for a token no page published, 429 beyond
  :data:`MAX_STREAMS_PER_TOKEN` streams of one page;
* ``GET /live/plotly.min.js`` — Plotly's browser bundle from the plotly wheel, for the chart
  component (:mod:`ui.live_chart`), cached by the browser; ``GET /live/chart.js`` — that
  component's browser side.

Without ``server.py`` (``streamlit run app.py``, tests under AppTest) :data:`ROUTES_MOUNTED`
stays false and the page keeps its polling panel.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import plotly
import streamlit as st
from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from pairs.compute import LiveContext, live_values
from ui.live_chart import CHART_JS
from ui.status import format_age

if TYPE_CHECKING:
    from service import Service

POLL_S = 0.02  # how often a stream looks for a new trade: the latency it adds is half of this on average
FEED_EVERY_S = 1.0  # the feed line (ticks/s, last tick age, …) at most this often
IDLE_S = 600.0  # a token no page has refreshed for this long is forgotten (its streams end)
MAX_STREAMS_PER_TOKEN = 4
TOKEN_RE = re.compile(r"^[0-9a-f]{32}$")
PLOTLY_JS = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
ROUTES_MOUNTED = False  # set by server.py


@dataclass
class _Board:
    service: Service
    y: str
    x: str
    context: LiveContext | None
    updated: float = field(default_factory=time.monotonic)
    streams: int = 0


class LiveBoard:
    """What each page's live panel shows, by page token. Thread-safe; one per server process."""

    def __init__(self) -> None:
        self._boards: dict[str, _Board] = {}
        self._lock = threading.Lock()

    def publish(self, token: str, service: Service, y: str, x: str, context: LiveContext | None) -> None:
        with self._lock:
            board = self._boards.get(token)
            if board is None:
                self._boards[token] = _Board(service, y, x, context)
            else:
                board.service, board.y, board.x, board.context = service, y, x, context
                board.updated = time.monotonic()
            now = time.monotonic()
            for stale in [t for t, b in self._boards.items() if now - b.updated > IDLE_S and not b.streams]:
                del self._boards[stale]

    def register(self, token: str, service: Service, y: str, x: str) -> None:
        """Let the page's stream open before its analytics have run (they publish the context).

        A page that shows another pair or feed than it published starts without a context: the
        old one's β would hedge the wrong prices.
        """
        with self._lock:
            board = self._boards.get(token)
            same = board is not None and board.service is service and (board.y, board.x) == (y, x)
        if not same:
            self.publish(token, service, y, x, None)

    def get(self, token: str) -> _Board | None:
        with self._lock:
            board = self._boards.get(token)
            if board is not None and time.monotonic() - board.updated > IDLE_S:
                return None
            return board

    def open_stream(self, token: str) -> bool:
        with self._lock:
            board = self._boards.get(token)
            if board is None or board.streams >= MAX_STREAMS_PER_TOKEN:
                return False
            board.streams += 1
            return True

    def close_stream(self, token: str) -> None:
        with self._lock:
            board = self._boards.get(token)
            if board is not None:
                board.streams -= 1


BOARD = LiveBoard()


def snapshot(board: _Board) -> dict[str, object]:
    """The panel's numbers now, as the stream sends them (null where undefined)."""
    engine = board.service.engine
    y_trade, x_trade = engine.last_trade(board.y), engine.last_trade(board.x)
    values = live_values(y_trade.price if y_trade else None, x_trade.price if x_trade else None, board.context)
    return {name: (None if not math.isfinite(value) else value) for name, value in (
        ("y", values.y_price), ("x", values.x_price), ("beta", values.beta), ("spread", values.spread),
        ("z", values.zscore))}


def feed_line(board: _Board) -> str:
    status = board.service.status()
    return (f"Feed {status.state.value} · {status.ticks_per_s:.1f} ticks/s · last tick "
            f"{format_age(status.last_tick_age_s)} ago · reconnects {status.reconnects} · gaps {status.gaps} · "
            f"{status.label}")


async def events(request: Request) -> Response:
    """Server-Sent Events of one page's live panel (see the module docstring)."""
    token = request.query_params.get("token", "")
    if not TOKEN_RE.fullmatch(token) or BOARD.get(token) is None:
        return PlainTextResponse("unknown page", status_code=404)
    if not BOARD.open_stream(token):
        return PlainTextResponse("too many streams for this page", status_code=429)

    async def stream():
        last: dict[str, object] | None = None
        last_line, line_at = "", 0.0
        try:
            yield "retry: 1000\n\n"
            while not await request.is_disconnected():
                board = BOARD.get(token)
                if board is None:
                    break
                message: dict[str, object] = {}
                values = snapshot(board)
                if values != last:
                    message.update(values)
                    last = values
                now = time.monotonic()
                if now - line_at >= FEED_EVERY_S:
                    line, line_at = feed_line(board), now
                    if line != last_line:
                        message["feed"] = last_line = line
                if message:
                    yield f"data: {json.dumps(message)}\n\n"
                await asyncio.sleep(POLL_S)
        finally:
            BOARD.close_stream(token)

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def chart_script(_request: Request) -> Response:
    """The chart component's browser side (:data:`ui.live_chart.CHART_JS`), loaded once per page."""
    return Response(CHART_JS, media_type="application/javascript", headers={"Cache-Control": "no-cache"})


async def plotly_bundle(_request: Request) -> Response:
    """Plotly's browser bundle (gzipped by the server's middleware), cached for a day."""
    return FileResponse(PLOTLY_JS, media_type="application/javascript",
                        headers={"Cache-Control": f"public, max-age=86400, immutable, v={plotly.__version__}"})


ROUTES = [Route("/live/events", events), Route("/live/plotly.min.js", plotly_bundle),
          Route("/live/chart.js", chart_script)]

_CSS = """
.live { display: grid; grid-template-columns: repeat(5, 1fr); gap: 1rem; font-family: var(--st-font, sans-serif); }
.live [data-live-label] { display: block; font-size: 0.875rem; opacity: 0.75; }
.live [data-live-value] { display: block; font-size: 2.25rem; line-height: 1.3; font-variant-numeric: tabular-nums; }
.live-feed { font-size: 0.875rem; opacity: 0.6; margin-top: 0.25rem; }
"""
_JS = """
const FIELDS = [["y", 2], ["x", 2], ["beta", 5], ["spread", 4], ["z", 2]];
const RETRY_MS = 500;

function fmt(value, digits) {
  if (value === null || value === undefined || !isFinite(value)) return "\\u2014";
  return value.toLocaleString("en-US", {minimumFractionDigits: digits, maximumFractionDigits: digits});
}

export default function (component) {
  const { data, parentElement } = component;
  let root = parentElement.querySelector(".live");
  if (!root) {
    root = document.createElement("div");
    root.className = "live";
    for (const [field] of FIELDS) {
      const cell = document.createElement("div");
      cell.setAttribute("data-live-field", field);
      const label = document.createElement("span");
      label.setAttribute("data-live-label", "");
      const value = document.createElement("span");
      value.setAttribute("data-live-value", "");
      value.textContent = "\\u2014";
      cell.append(label, value);
      root.append(cell);
    }
    const feed = document.createElement("div");
    feed.className = "live-feed";
    parentElement.append(root, feed);
  }
  for (const [field] of FIELDS) {
    root.querySelector(`[data-live-field="${field}"] [data-live-label]`).textContent = data.labels[field];
  }
  const feed = parentElement.querySelector(".live-feed");
  const url = `/live/events?token=${encodeURIComponent(data.token)}`;
  let source = null, retry = null, closed = false;
  const connect = () => {
    source = new EventSource(url);
    source.onmessage = (event) => {
      const message = JSON.parse(event.data);
      for (const [field, digits] of FIELDS) {
        if (field in message) {
          const cell = root.querySelector(`[data-live-field="${field}"] [data-live-value]`);
          cell.textContent = fmt(message[field], digits);
        }
      }
      if ("feed" in message) feed.textContent = message.feed;
    };
    // A refused stream (the page has not published its token yet) is closed for good: open another.
    source.onerror = () => {
      if (source.readyState === EventSource.CLOSED && !closed) retry = setTimeout(connect, RETRY_MS);
    };
  };
  connect();
  return () => { closed = true; clearTimeout(retry); source.close(); };
}
"""


@st.cache_resource(show_spinner=False)
def _component():
    return st.components.v2.component("live_panel", css=_CSS, js=_JS)


def live_panel(token: str, y: str, x: str) -> None:
    """The pushed live panel of this page (its numbers arrive over ``/live/events``)."""
    labels = {"y": f"{y} last", "x": f"{x} last", "beta": "Hedge ratio β", "spread": "Spread", "z": "Z-score"}
    _component()(key="live_panel", data={"token": token, "labels": labels})
