"""The live panel: last prices, β, spread and the open bar's z-score, pushed to the browser on every trade.

A Streamlit fragment can only poll (a rerun every N ms, each costing a script run per tab), so
tick → screen took 365 ms at the median. Here the page registers, under a random per-session
token, what its live panel shows (:class:`LiveBoard`: the service and the page's
:class:`~pairs.shared.ViewQuery`), and a small component in the page opens a Server-Sent Events
stream (:func:`events`) that sends the panel's numbers the moment a trade changes them: no
script run, one small JSON message per change. The stream asks the service itself for the
closed bars' :class:`~pairs.compute.LiveContext` (:class:`ContextTracker`: again only when a bar
closes or history arrives), from the same shared view the page's charts are drawn from.

Routes (:func:`routes`; ``server.py`` mounts them into the Streamlit server, same origin and port):

* ``GET /live/events?token=…`` — the stream; 404 for a token no page registered, 429 beyond
  :data:`MAX_STREAMS_PER_TOKEN` streams of one page;
* ``GET /live/plotly.min.js`` — Plotly's browser bundle from the plotly wheel, for the chart
  component (:mod:`ui.live_chart`), cached by the browser; ``GET /live/chart.js`` — that
  component's browser side.

Without those routes (``streamlit run app.py``, tests under AppTest: see :mod:`ui.appstate`) the
page polls instead, through the same code: :data:`FIELDS`, :func:`snapshot`, :func:`feed_line`,
:func:`funding_line` (perpetual legs' funding, USDⓈ-M only) and :class:`ContextTracker` make both panels.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

import plotly
import streamlit as st
from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from domain import PERP_SUFFIX
from pairs.compute import LiveContext, live_values
from pairs.shared import ViewQuery
from records import FeedStatus, MarkPrice, now_ms
from storage import StorageError
from ui.live_chart import CHART_JS
from ui.status import format_age

if TYPE_CHECKING:
    from service import Service

log = logging.getLogger(__name__)

POLL_S = 0.02  # how often a stream looks for a new trade: the latency it adds is half of this on average
FEED_EVERY_S = 1.0  # the feed line (ticks/s, last tick age, …) at most this often
IDLE_S = 600.0  # a token no page has refreshed for this long is forgotten (its streams end)
MAX_STREAMS_PER_TOKEN = 4
TOKEN_RE = re.compile(r"^[0-9a-f]{32}$")
PLOTLY_JS = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
# The panel's cells: field, label ({y} and {x}: the pair's symbols), decimal places shown (None: by
# the price's magnitude, :func:`cell_decimals`: a coin at 0.002 must not read 0.00).
FIELDS: tuple[tuple[str, str, int | None], ...] = (
    ("y", "{y} last", None), ("x", "{x} last", None), ("beta", "Hedge ratio β", 5), ("spread", "Spread", None),
    ("z", "Z-score", 2))
PRICE_DIGITS = 5  # significant digits a price below 1,000 keeps (above it, cents)
MAX_DECIMALS = 12
SPREAD_EXTRA_DECIMALS = 2  # the spread (in Y's quote units) is shown two decimals finer than Y's price


def labels(y: str, x: str) -> dict[str, str]:
    """Each cell's label for the pair ``y``/``x``."""
    return {name: label.format(y=y, x=x) for name, label, _ in FIELDS}


def snapshot(service: Service, y: str, x: str, context: LiveContext | None) -> dict[str, float | None]:
    """The panel's numbers now, by field (None where undefined): last prices in quote currency, β,
    the spread in the pair's spread units and the open bar's z-score."""
    engine = service.engine
    y_trade, x_trade = engine.last_trade(y), engine.last_trade(x)
    values = live_values(y_trade.price if y_trade else None, x_trade.price if x_trade else None, context)
    return {name: (None if not math.isfinite(value) else value) for name, value in (
        ("y", values.y_price), ("x", values.x_price), ("beta", values.beta), ("spread", values.spread),
        ("z", values.zscore))}


NONE = "—"  # what a value not received yet shows: never a stale or made-up number
# Binance sends each symbol's mark price every second: one older than this (a dropped or silent
# feed) is stale and shows as "—" (by arrival time on this machine, so a skewed clock cannot hide it).
MARK_STALE_MS = 10_000


@dataclass(frozen=True, slots=True)
class Funding:
    """One perpetual leg's funding as shown; None where no mark price update has arrived yet, or
    none for :data:`MARK_STALE_MS`.

    ``rate_pct``: the funding rate in % per funding interval (8 h on most USDⓈ-M perpetuals);
    positive: longs pay shorts, negative: shorts pay longs. ``next_ms``: next funding time, UTC
    epoch ms; ``in_s``: seconds from ``at_ms`` to it (0 once due, until the next update moves it).
    ``mark``, ``index``: prices in quote currency.
    """

    symbol: str
    rate_pct: float | None = None
    next_ms: int | None = None
    in_s: float | None = None
    mark: float | None = None
    index: float | None = None

    @classmethod
    def of(cls, symbol: str, mark: MarkPrice | None, at_ms: int) -> Funding:
        """``symbol``'s funding at ``at_ms`` (UTC epoch ms) from its newest update ``mark``."""
        if mark is None or at_ms - mark.recv_ms > MARK_STALE_MS:
            return cls(symbol)
        return cls(symbol, mark.funding_rate * 100, mark.next_funding_ms, max(0, mark.next_funding_ms - at_ms) / 1000,
                   mark.mark, mark.index)

    @property
    def payer(self) -> str:
        """Who pays whom at the next funding time, by the rate's sign ("—" before the first update)."""
        if self.rate_pct is None:
            return NONE
        return "longs pay shorts" if self.rate_pct > 0 else "shorts pay longs" if self.rate_pct < 0 else "no payment"

    def text(self) -> str:
        """One line, e.g. ``BTCUSDT.P funding +0.0100 % (longs pay shorts) · next in 2 h 05 min ·
        mark 89,806.80 · index 89,811.54``; ``BTCUSDT.P funding —`` before the first update."""
        if self.rate_pct is None or self.in_s is None or self.mark is None or self.index is None:
            return f"{self.symbol} funding {NONE}"
        due = "next now" if self.in_s <= 0 else f"next in {countdown(self.in_s)}"
        return (f"{self.symbol} funding {self.rate_pct:+.4f} % ({self.payer}) · {due} · "
                f"mark {price_text(self.mark)} · index {price_text(self.index)}")


def price_decimals(price: float | None) -> int:
    """Decimals a price in quote currency is shown with: :data:`PRICE_DIGITS` significant digits, at
    least cents, at most :data:`MAX_DECIMALS` (2 for a missing or zero price). ``_JS`` mirrors it."""
    if price is None or not math.isfinite(price) or price == 0:
        return 2
    return min(MAX_DECIMALS, max(2, PRICE_DIGITS - 1 - math.floor(math.log10(abs(price)))))


def cell_decimals(values: dict[str, float | None]) -> dict[str, int]:
    """Each panel cell's decimals for :func:`snapshot`'s ``values``: a last price by its magnitude, the
    spread :data:`SPREAD_EXTRA_DECIMALS` finer than Y's price, the others :data:`FIELDS`' fixed ones."""
    decimals = {name: digits for name, _, digits in FIELDS if digits is not None}
    decimals.update(y=price_decimals(values.get("y")), x=price_decimals(values.get("x")),
                    spread=min(MAX_DECIMALS, price_decimals(values.get("y")) + SPREAD_EXTRA_DECIMALS))
    return decimals


def price_text(price: float) -> str:
    """A price in quote currency as :func:`price_decimals` says: ``89,806.80``, ``12.346``,
    ``0.0023456`` (a perpetual below a cent keeps its digits, not ``0.00``)."""
    return f"{price:,.{price_decimals(price)}f}"


def countdown(seconds: float) -> str:
    """Time left to an event: ``2 h 05 min``, ``7 min 09 s``, ``42 s``; ``now`` once due."""
    whole = int(seconds)
    if whole <= 0:
        return "now"
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    return f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"


def funding(service: Service, symbols: tuple[str, ...], at_ms: int) -> list[Funding]:
    """Each perpetual leg's (``ETHUSDT.P``) funding at ``at_ms`` (UTC epoch ms); empty for a feed of spot,
    simulated or replayed symbols, which have none. A spot leg beside a perpetual (a basis pair) has none."""
    if not service.funding:
        return []
    return [Funding.of(symbol, service.mark_price(symbol), at_ms) for symbol in dict.fromkeys(symbols)
            if symbol.endswith(PERP_SUFFIX)]


FUNDING_NOTE = ("Funding rate per funding interval (8 h on most USDⓈ-M perpetuals, shorter on some), from "
                "Binance's mark price stream: positive, longs pay shorts; negative, shorts pay longs; each pays "
                "its position's notional × rate at the next funding time. — : no update in the last "
                f"{MARK_STALE_MS // 1000} s.")


def funding_table(legs: list[Funding], tz: str) -> list[dict[str, str]]:
    """The Stats tab's rows of :func:`funding`: text cells, "—" where nothing was received;
    the next funding time in the time zone ``tz``."""
    rows = []
    for leg in legs:
        row = {"leg": leg.symbol, "funding % / interval": NONE, "who pays": leg.payer,
               "next funding": NONE, "in": NONE, "mark": NONE, "index": NONE}
        if (leg.rate_pct is not None and leg.next_ms is not None and leg.in_s is not None and leg.mark is not None
                and leg.index is not None):
            row.update({
                "funding % / interval": f"{leg.rate_pct:+.4f}",
                "next funding": datetime.fromtimestamp(leg.next_ms / 1000, ZoneInfo(tz)).strftime("%Y-%m-%d %H:%M %Z"),
                "in": countdown(leg.in_s), "mark": price_text(leg.mark), "index": price_text(leg.index)})
        rows.append(row)
    return rows


def funding_line(service: Service, y: str, x: str, at_ms: int) -> str:
    """The line under the panel on a perpetuals feed: each leg's :meth:`Funding.text`; "" otherwise."""
    return " | ".join(leg.text() for leg in funding(service, (y, x), at_ms))


def feed_lines(service: Service, escape: Callable[[str], str] = str) -> str:
    """:func:`feed_line` of each venue the page reads (two for a pair across venues), `` | ``-separated."""
    return " | ".join(feed_line(status, escape) for status in service.statuses())


def feed_line(status: FeedStatus, escape: Callable[[str], str] = str) -> str:
    """The line under the panel: feed state, ticks/s, last tick age, reconnects, gaps and the source.

    ``escape``: applied to the source's label, text from outside (:func:`ui.plain.plain` where the
    line is shown as Markdown; the pushed panel sets it as text).
    """
    connections = "" if status.connections is None else "{}/{} connections up · ".format(*status.connections)
    return (f"Feed {status.state.value} · {connections}{status.ticks_per_s:.1f} ticks/s · last tick "
            f"{format_age(status.last_tick_age_s)} ago · reconnects {status.reconnects} · gaps {status.gaps} · "
            f"{escape(status.label)}")


class ContextTracker:
    """The :class:`LiveContext` of one service and query, asked of the service again only when the
    query's closed bars change (a bar closed, history arrived: :meth:`pairs.shared.SharedAnalytics.stamp`).

    :meth:`due` is cheap (call it as often as you like); :meth:`refresh` computes (or reads the
    shared view the page computed) and may take a while: the stream runs it in a worker thread.
    """

    def __init__(self, service: Service, query: ViewQuery) -> None:
        self.service = service
        self.query = query
        self.stamp: tuple[int, int] | None = None
        self.context: LiveContext | None = None

    def serves(self, service: Service, query: ViewQuery) -> bool:
        return self.service is service and self.query == query

    def due(self) -> tuple[int, int] | None:
        """The new stamp when the context must be asked for again, else None."""
        stamp = self.service.shared.stamp(self.query.symbols, self.query.interval_ms)
        return stamp if stamp != self.stamp else None

    def refresh(self, stamp: tuple[int, int]) -> None:
        """Ask the service for the context at ``stamp``. A failure keeps the old context, is logged
        once per stamp and asked again only at the next one (the page shows storage trouble itself;
        a stream must not retry every poll)."""
        y, x = self.query.params.y, self.query.params.x
        try:
            self.context = self.service.live_context(self.query)
        except StorageError as exc:
            log.warning("live context of %s/%s: %s", y, x, exc)
        except Exception:  # a bug: the server log keeps the traceback, the panel keeps its last numbers
            log.exception("live context of %s/%s failed", y, x)
        self.stamp = stamp

    def current(self) -> LiveContext | None:
        """The context now, refreshed in this thread if due (the polled panel)."""
        stamp = self.due()
        if stamp is not None:
            self.refresh(stamp)
        return self.context


@dataclass
class _Board:
    service: Service
    query: ViewQuery
    updated: float = field(default_factory=time.monotonic)
    streams: int = 0


class LiveBoard:
    """What each page's live panel shows, by page token. Thread-safe; one per server (:mod:`ui.appstate`)."""

    def __init__(self) -> None:
        self._boards: dict[str, _Board] = {}
        self._lock = threading.Lock()
        self._closed = threading.Event()

    def close(self) -> None:
        """The server is stopping: every stream ends at its next poll and no new one opens (the
        server waits for open responses before it stops, and a stream never ends by itself)."""
        self._closed.set()

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def register(self, token: str, service: Service, query: ViewQuery) -> None:
        """The page ``token`` shows ``query``'s pair from ``service`` (called on every page run)."""
        with self._lock:
            board = self._boards.get(token)
            if board is None:
                self._boards[token] = _Board(service, query)
            else:
                board.service, board.query = service, query
                board.updated = time.monotonic()
            now = time.monotonic()
            for stale in [t for t, b in self._boards.items() if now - b.updated > IDLE_S and not b.streams]:
                del self._boards[stale]

    def get(self, token: str) -> _Board | None:
        """The page ``token``'s board; None if unknown, idle too long, or the server is stopping."""
        if self._closed.is_set():
            return None
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


def events(board: LiveBoard) -> Callable[[Request], Awaitable[Response]]:
    """The endpoint of ``GET /live/events``: Server-Sent Events of one page's live panel (see the module docstring)."""

    async def endpoint(request: Request) -> Response:
        if board.closed:
            return PlainTextResponse("the server is stopping", status_code=503)
        token = request.query_params.get("token", "")
        if not TOKEN_RE.fullmatch(token) or board.get(token) is None:
            return PlainTextResponse("unknown page", status_code=404)
        if not board.open_stream(token):
            return PlainTextResponse("too many streams for this page", status_code=429)
        return StreamingResponse(_stream(board, token, request), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    return endpoint


async def _stream(board: LiveBoard, token: str, request: Request) -> AsyncIterator[str]:
    """The stream's events for the page ``token`` until the browser leaves or the page is forgotten."""
    last: dict[str, float | None] | None = None
    last_line, line_at = "", 0.0
    last_funding = ""
    tracker: ContextTracker | None = None
    asking: asyncio.Future[None] | None = None  # the tracker's refresh, in a worker thread
    try:
        yield "retry: 1000\n\n"
        while not await request.is_disconnected():
            page = board.get(token)
            if page is None:
                break
            service, query = page.service, page.query
            if tracker is None or not tracker.serves(service, query):  # another pair or feed: start afresh
                tracker, asking = ContextTracker(service, query), None
            if asking is not None and asking.done():
                asking = None
            if asking is None and (stamp := tracker.due()) is not None:
                # Prices go on being sent (with the last context) while the closed bars are analysed.
                asking = asyncio.ensure_future(asyncio.to_thread(tracker.refresh, stamp))
            message: dict[str, object] = {}
            values = snapshot(service, query.params.y, query.params.x, tracker.context)
            if values != last:
                message.update(values)
                last = values
            line = funding_line(service, query.params.y, query.params.x, now_ms())
            if line != last_funding:  # changes once a second (the countdown) on a perpetuals feed
                message["funding"] = last_funding = line
            now = time.monotonic()
            if now - line_at >= FEED_EVERY_S:
                line, line_at = feed_lines(service), now
                if line != last_line:
                    message["feed"] = last_line = line
            if message:
                yield f"data: {json.dumps(message)}\n\n"
            await asyncio.sleep(POLL_S)
    finally:
        board.close_stream(token)


async def chart_script(_request: Request) -> Response:
    """The chart component's browser side (:data:`ui.live_chart.CHART_JS`), loaded once per page."""
    return Response(CHART_JS, media_type="application/javascript", headers={"Cache-Control": "no-cache"})


async def plotly_bundle(_request: Request) -> Response:
    """Plotly's browser bundle (gzipped by the server's middleware), cached for a day."""
    return FileResponse(PLOTLY_JS, media_type="application/javascript",
                        headers={"Cache-Control": f"public, max-age=86400, immutable, v={plotly.__version__}"})


def routes(board: LiveBoard) -> list[Route]:
    """The ``/live/*`` routes of a server whose pages register on ``board``."""
    return [Route("/live/events", events(board)), Route("/live/plotly.min.js", plotly_bundle),
            Route("/live/chart.js", chart_script)]

_CSS = """
.live { display: grid; grid-template-columns: repeat(5, 1fr); gap: 1rem; font-family: var(--st-font, sans-serif); }
.live [data-live-label] { display: block; font-size: 0.875rem; opacity: 0.75; }
.live [data-live-value] { display: block; font-size: 2.25rem; line-height: 1.3; font-variant-numeric: tabular-nums; }
.live-feed, .live-funding { font-size: 0.875rem; opacity: 0.6; margin-top: 0.25rem; }
.live-funding:empty { display: none; }
"""
_JS = """
const RETRY_MS = 500;

function fmt(value, digits) {
  if (value === null || value === undefined || !isFinite(value)) return "\\u2014";
  return value.toLocaleString("en-US", {minimumFractionDigits: digits, maximumFractionDigits: digits});
}

// ui.live.price_decimals: significant digits by the price's magnitude, at least cents.
function priceDecimals(price, rule) {
  if (price === null || price === undefined || !isFinite(price) || price === 0) return 2;
  return Math.min(rule.max, Math.max(2, rule.digits - 1 - Math.floor(Math.log10(Math.abs(price)))));
}

export default function (component) {
  const { data, parentElement } = component;
  const FIELDS = data.fields;  // [field, label, digits], from ui.live.FIELDS
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
    const funding = document.createElement("div");
    funding.className = "live-funding";
    const feed = document.createElement("div");
    feed.className = "live-feed";
    parentElement.append(root, funding, feed);
  }
  for (const [field, label] of FIELDS) {
    root.querySelector(`[data-live-field="${field}"] [data-live-label]`).textContent = label;
  }
  const feed = parentElement.querySelector(".live-feed");
  const funding = parentElement.querySelector(".live-funding");
  const url = `/live/events?token=${encodeURIComponent(data.token)}`;
  let source = null, retry = null, closed = false;
  const connect = () => {
    source = new EventSource(url);
    source.onmessage = (event) => {
      const message = JSON.parse(event.data);
      // A message carries every cell when any changed (ui.live.snapshot): Y's price is in it with the spread.
      const rule = data.prices;
      const scaled = {y: priceDecimals(message.y, rule), x: priceDecimals(message.x, rule),
                      spread: Math.min(rule.max, priceDecimals(message.y, rule) + rule.spreadExtra)};
      for (const [field, , digits] of FIELDS) {
        if (field in message) {
          const cell = root.querySelector(`[data-live-field="${field}"] [data-live-value]`);
          cell.textContent = fmt(message[field], digits === null ? scaled[field] : digits);
        }
      }
      if ("funding" in message) funding.textContent = message.funding;
      if ("feed" in message) feed.textContent = message.feed;
    };
    // A refused stream (the page has not registered its token yet) is closed for good: open another.
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
    names = labels(y, x)
    fields = [[name, names[name], digits] for name, _, digits in FIELDS]
    prices = {"digits": PRICE_DIGITS, "max": MAX_DECIMALS, "spreadExtra": SPREAD_EXTRA_DECIMALS}
    _component()(key="live_panel", data={"token": token, "fields": fields, "prices": prices})
