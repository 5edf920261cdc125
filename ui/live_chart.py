"""Charts kept in the browser and extended bar by bar, instead of whole figures re-sent on every refresh.

``st.plotly_chart`` sends the whole figure on every refresh: with an hour of 1 s bars, some 700
kB a page every 2 s. :func:`live_chart` draws the figure once and afterwards sends only what
changed since the last refresh: the points from the last bar sent on (that bar may have changed
while it was forming), the figure's layout (bands, ranges and the live-bar mark are computed
over the whole series), and the left edge of the lookback, where the browser trims. A full
figure is sent again when the chart is first shown (or shown again after another tab), when the
view resets (``revision``: pair, timeframe, parameters, newly loaded history), when past values
can change (an in-sample fit, the Kalman filter's prior: ``incremental=False``), when a trace
appears that the browser does not have, when the browser says it missed an update, and after
:data:`REDRAW_SHARE` of the chart's points have been appended (to thin them again).

The browser side (:data:`CHART_JS`) is served at ``/live/chart.js`` next to Plotly's bundle
(``server.py``); each chart element carries only a tiny loader. Updates name their traces, so
the browser matches them by name; a figure with two traces of one name is always sent whole.

Tabs showing the same data share the work: a full figure or a tail built for one session is kept
(:class:`SharedBuilds`, one per server in :mod:`ui.appstate`, keyed by the data's ``scope``, the
revision, the chart's content and anchor) and sent as it is to every other session that needs
the same one. Tails start on a :data:`SPLICE_GRID` boundary at or before the session's last bar,
so tabs a few bars apart ask for the same tail; the browser replaces the points from there on,
so a few bars are sent again.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, replace
from typing import Any, TypeVar, cast

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
import streamlit as st

from ui.charts import FIGURE_CONFIG, display_time

REDRAW_SHARE = 0.25  # appended points, as a share of the figure's points, that trigger a full redraw
SPLICE_GRID = pd.Timedelta(seconds=16)  # tails start on this grid: tabs a few bars apart share one
SHARED_ENTRIES = 128  # figures and tails kept for other sessions (a few per chart and pair)
PER_POINT = ("x", "y", "customdata", "text", "hovertext")
T = TypeVar("T")

CHART_JS = """
let plotlyReady = null;
const TYPED = {f8: Float64Array, f4: Float32Array, i4: Int32Array, u4: Uint32Array, i2: Int16Array,
               u2: Uint16Array, i1: Int8Array, u1: Uint8Array, u1c: Uint8ClampedArray};

function loadPlotly() {
  if (window.Plotly) return Promise.resolve(window.Plotly);
  if (!plotlyReady) {
    plotlyReady = new Promise((resolve, reject) => {
      const script = document.createElement("script");
      script.src = "/live/plotly.min.js";
      script.onload = () => resolve(window.Plotly);
      script.onerror = reject;
      document.head.appendChild(script);
    });
  }
  return plotlyReady;
}

// plotly.py sends numeric arrays as {dtype, bdata}: plain arrays here, so updates can splice them.
function plain(value) {
  if (value && typeof value === "object" && typeof value.bdata === "string" && TYPED[value.dtype]) {
    const bytes = Uint8Array.from(atob(value.bdata), (c) => c.charCodeAt(0));
    return Array.from(new TYPED[value.dtype](bytes.buffer));
  }
  return value;
}

function spliced(trace, from, cut, add) {
  const xs = trace.x || [];
  const keep = [];
  for (let i = 0; i < xs.length; i++) if (xs[i] >= from && xs[i] < cut) keep.push(i);
  for (const key of ["x", "y", "customdata", "text", "hovertext"]) {
    const old = trace[key];
    if (!Array.isArray(old)) continue;
    trace[key] = keep.map((i) => old[i]).concat(add && add[key] ? add[key] : []);
  }
}

function apply(Plotly, div, payload, setTriggerValue) {
  const state = div.__live || {};
  if (state.rev === payload.rev && state.seq === payload.seq) return;  // the same payload again
  if (payload.full) {
    const figure = JSON.parse(payload.full);
    for (const trace of figure.data) {
      for (const key of ["x", "y", "customdata", "text", "hovertext"]) if (key in trace) trace[key] = plain(trace[key]);
    }
    Plotly.react(div, figure.data, figure.layout, payload.config);
    div.__live = { rev: payload.rev, seq: payload.seq };
    return;
  }
  if (state.rev !== payload.rev || state.seq !== payload.base || !div.data) {
    if (!state.asked) {  // missed an update: ask once for the whole figure
      div.__live = { ...state, asked: true };
      setTriggerValue("resync", payload.seq);
    }
    return;
  }
  const splice = payload.splice;
  for (const trace of div.data) spliced(trace, splice.from, splice.cut, splice.traces[trace.name]);
  const layout = JSON.parse(splice.layout);
  layout.template = div.layout.template;
  Plotly.react(div, div.data, layout, payload.config);
  div.__live = { rev: payload.rev, seq: payload.seq };
}

// One chart per task: a page's charts all arrive in one render pass, and drawing them back to
// back (promise callbacks run before anything else) held the main thread for one long task, in
// which the live panel's prices waited. Between two charts the browser handles its events.
const pending = [];
const turn = new MessageChannel();
turn.port1.onmessage = () => {
  const job = pending.shift();
  if (pending.length) turn.port2.postMessage(null);
  job();
};

function later(job) {
  pending.push(job);
  if (pending.length === 1) turn.port2.postMessage(null);
}

export function render(component) {
  const { data, parentElement, setTriggerValue } = component;
  let div = parentElement.querySelector(".live-chart");
  if (!div) {
    div = document.createElement("div");
    div.className = "live-chart";
    parentElement.appendChild(div);
  }
  loadPlotly().then((Plotly) => later(() => apply(Plotly, div, data, setTriggerValue)));
}
"""
_STUB_JS = """
export default function (component) {
  // The component runs from a blob: URL; the page's own origin serves the module.
  import(new URL("/live/chart.js", window.location.href).href).then((module) => module.render(component));
}
"""


@st.cache_resource(show_spinner=False)
def _component() -> Callable[..., Any]:
    # Not in a shadow root: Plotly styles its charts (mode bar, hover) with CSS it adds to the document.
    return st.components.v2.component("live_chart", js=_STUB_JS, isolate_styles=False)


@dataclass(frozen=True, slots=True)
class ChartData:
    """One chart: how to draw it, and what it shows.

    ``build(since, max_points, anchor)``: the figure; ``since=None`` draws every point, thinned to
    ``max_points`` per trace, and ``since`` (UTC) only the points from there on (the layout still
    computed over all of them; see :mod:`ui.charts`). ``anchor()``: what must stay fixed while
    the chart is extended (the price levels rebased to 100), taken at each full drawing and
    handed to ``build``. ``last``: the newest bar drawn (UTC). ``incremental``: past points
    never change, so the chart may be extended. ``content``: what the drawing depends on; while
    it is unchanged (and not None) nothing is sent. ``reanchor(traces, anchor)``: the update's
    traces for a browser drawn with ``anchor``, from traces built with ``anchor=None``; given, one
    tail serves every browser whatever its anchor (rebased prices keep their raw closes).
    """

    key: str
    build: Callable[[pd.Timestamp | None, int, object], go.Figure]
    last: pd.Timestamp | None
    max_points: int
    incremental: bool = True
    content: object = None
    anchor: Callable[[], object] = lambda: None
    reanchor: Callable[[dict[str, dict[str, list]], object], dict[str, dict[str, list]]] | None = None

    def figure(self) -> go.Figure:
        """The whole figure (for ``st.plotly_chart``, where nothing is extended)."""
        return self.build(None, self.max_points, self.anchor())


@dataclass(frozen=True, slots=True)
class _Sent:
    """What the browser holds of one chart."""

    revision: str
    seq: int
    cut: pd.Timestamp  # the newest bar sent: where the next update starts
    names: frozenset[str]  # its traces
    points: int  # points in the last full figure
    appended: int  # points appended since
    run: int  # the analytics run that sent it
    content: object
    anchor: object


@dataclass(frozen=True, slots=True)
class _Full:
    json: str
    names: tuple[str, ...]
    points: int


@dataclass(frozen=True, slots=True)
class _Tail:
    splice: dict[str, object] | None  # None: a figure with two traces of one name (send it whole)
    names: frozenset[str]
    xs: tuple[np.ndarray, ...]  # each trace's x (display ms), to count the bars a session has not seen


class SharedBuilds:
    """Full figures and tails built for one session, reused by every session showing the same data.

    A bounded LRU; thread-safe (sessions run in threads of their own). Two sessions asking for the
    same missing entry at once both build it: cheaper than making one wait for the other.
    """

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[Hashable, object] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable | None, make: Callable[[], T]) -> T:
        """The entry for ``key``, built by ``make`` when missing (and always when ``key`` is None).

        A key names one kind of entry (its parts say whether it is a figure or a tail).
        """
        if key is not None:
            with self._lock:
                if key in self._entries:
                    self._entries.move_to_end(key)
                    return cast(T, self._entries[key])
        value = make()
        if key is not None:
            with self._lock:
                self._entries[key] = value
                while len(self._entries) > self.max_entries:
                    self._entries.popitem(last=False)
        return value


def live_chart(chart: ChartData, *, revision: str, shown_from: pd.Timestamp | None, tz: str, run: int,
               builds: SharedBuilds, scope: Hashable | None = None) -> None:
    """Draw ``chart`` (whole, or what changed since the last refresh; see the module docstring).

    ``shown_from``: the lookback's first bar (UTC), where the browser trims the left edge;
    ``run``: a counter of this session's analytics runs, to tell a chart that was not drawn last
    time (its tab was closed: the browser no longer has it); ``scope``: what identifies the data
    beyond ``revision`` and the chart's content (the feed: its site and service), so that
    sessions showing the same data share builds (kept in ``builds``); None shares nothing (an
    uploaded dataset).
    """
    sent_by_key: dict[str, _Sent] = st.session_state.setdefault("live_charts_sent", {})
    sent = sent_by_key.get(chart.key)
    payload, sent = chart_update(chart, sent, revision=revision, shown_from=shown_from, tz=tz, run=run, scope=scope,
                                 builds=builds)
    sent_by_key[chart.key] = sent
    result = _component()(key=chart.key, data=payload, on_resync_change=lambda: None)
    if result.resync is not None:  # the browser missed an update: the next refresh draws it whole
        del sent_by_key[chart.key]


def chart_update(chart: ChartData, sent: _Sent | None, *, revision: str, shown_from: pd.Timestamp | None, tz: str,
                 run: int, scope: Hashable | None = None,
                 builds: SharedBuilds | None = None) -> tuple[dict[str, object], _Sent]:
    """The payload that brings a browser holding ``sent`` to ``chart``, and what it then holds.

    ``scope``: see :func:`live_chart`; builds are shared through ``builds`` when both are given.
    """
    # What the browser holds of this chart, if it drew it on the last run (else it is drawn whole).
    drawn = sent if sent is not None and sent.revision == revision and sent.run == run - 1 else None
    if drawn is not None and chart.content is not None and drawn.content == chart.content:  # unchanged
        return {"rev": revision, "seq": drawn.seq}, replace(drawn, run=run)
    seq = 0 if sent is None else sent.seq + 1
    payload: dict[str, object] = {"rev": revision, "seq": seq, "config": FIGURE_CONFIG}
    shared = _shared(chart, revision, shown_from, tz, scope, builds)
    if drawn is not None and chart.incremental and chart.last is not None:
        since = drawn.cut.floor(SPLICE_GRID)
        if shown_from is not None:  # never before the lookback's left edge, where the browser trims
            since = max(since, min(shown_from, drawn.cut))
        anchor = None if chart.reanchor is not None else drawn.anchor
        tail = _build(builds, _key(shared, "tail", since, anchor), lambda: _tail(
            chart.build(since, chart.max_points, anchor), since, shown_from, tz))
        if tail.splice is not None and tail.names <= drawn.names:
            cut = display_time(drawn.cut, tz)
            # New bars: those from the grid to the session's last bar are sent again (it may have changed).
            added = sum(int((x > cut).sum()) for x in tail.xs)
            # Appended points are not thinned: past a share of the figure, draw it whole (thinned) again.
            if drawn.appended + added <= REDRAW_SHARE * max(drawn.points, 1):
                payload["base"], payload["splice"] = drawn.seq, tail.splice
                if chart.reanchor is not None:  # the shared tail's traces, for this browser's anchor
                    traces = cast(dict[str, dict[str, list]], tail.splice["traces"])
                    payload["splice"] = {**tail.splice, "traces": chart.reanchor(traces, drawn.anchor)}
                return payload, replace(drawn, seq=seq, cut=chart.last, appended=drawn.appended + added, run=run,
                                        content=chart.content)
    anchor = chart.anchor()
    full = _build(builds, _key(shared, "full", anchor), lambda: _full(chart.build(None, chart.max_points, anchor)))
    payload["full"] = full.json
    names = full.names
    return payload, _Sent(revision, seq, chart.last if chart.last is not None else pd.Timestamp(0, tz="UTC"),
                          frozenset(names) if len(set(names)) == len(names) else frozenset(), full.points, 0, run,
                          chart.content, anchor)


def whole_figure(chart: ChartData, *, revision: str, shown_from: pd.Timestamp | None, tz: str,
                 builds: SharedBuilds | None = None, scope: Hashable | None = None) -> go.Figure:
    """``chart``'s whole figure for a page that sends whole figures (``st.plotly_chart``, polled):
    built once and reused by every run and session while its data is unchanged (same ``scope``,
    ``revision``, lookback start, time zone and content, as :func:`chart_update` shares its builds);
    built afresh every time without ``scope`` or ``builds``."""
    return _build(builds, _key(_shared(chart, revision, shown_from, tz, scope, builds), "figure"), chart.figure)


def _shared(chart: ChartData, revision: str, shown_from: pd.Timestamp | None, tz: str, scope: Hashable | None,
            builds: SharedBuilds | None) -> tuple | None:
    """What names ``chart``'s builds among every session's (None: they are not shared)."""
    return None if scope is None or chart.content is None or builds is None else \
        (scope, revision, chart.key, shown_from, tz, chart.content, chart.max_points)


def _build(builds: SharedBuilds | None, key: Hashable | None, make: Callable[[], T]) -> T:
    """``make()``, or the build kept in ``builds`` for ``key``."""
    return make() if builds is None else builds.get(key, make)


def _key(shared: tuple | None, *parts: object) -> Hashable | None:
    """The shared-build key, or None when some part cannot be one (then nothing is shared)."""
    if shared is None:
        return None
    key = (*shared, *(tuple(sorted(part.items())) if isinstance(part, dict) else part for part in parts))
    try:
        hash(key)
    except TypeError:
        return None
    return key


def _full(figure: go.Figure) -> _Full:
    names = tuple(trace.name for trace in figure.data)
    points = sum(len(trace.x) for trace in figure.data if trace.x is not None)
    return _Full(pio.to_json(figure, validate=False), names, points)


def _tail(tail: go.Figure, since: pd.Timestamp, shown_from: pd.Timestamp | None, tz: str) -> _Tail:
    """The update that replaces a browser's points from ``since`` on with ``tail``'s."""
    names = [trace.name for trace in tail.data]
    if len(set(names)) != len(names):
        return _Tail(None, frozenset(), ())  # traces the browser cannot tell apart
    traces: dict[str, dict[str, list]] = {}
    xs = []
    for trace in tail.data:
        if trace.x is None or not len(trace.x):
            continue
        x = np.asarray(trace.x, dtype=float)
        traces[trace.name] = {key: _plain(np.asarray(value)) for key in PER_POINT
                              if (value := getattr(trace, key, None)) is not None and not isinstance(value, str)
                              and len(np.asarray(value)) == len(x)}
        xs.append(x)
    start = display_time(shown_from, tz) if shown_from is not None else -1e300
    layout = tail.layout.to_plotly_json()
    layout.pop("template", None)  # the browser keeps the one of the full figure (a few kB)
    # As JSON text, like a full figure: plotly's encoder knows numpy scalars.
    splice = {"from": start, "cut": display_time(since, tz), "traces": traces,
              "layout": pio.to_json(layout, validate=False)}
    return _Tail(splice, frozenset(names), tuple(xs))


def _plain(values: np.ndarray) -> list:
    """JSON-ready values: floats with NaN as null, everything else as it is."""
    if values.dtype.kind in "fiu":
        return [None if not math.isfinite(v) else float(v) for v in values.astype(float)]
    return values.tolist()
