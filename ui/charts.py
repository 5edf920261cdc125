"""Plotly figures for the pair-trading dashboard: data in, ``go.Figure`` out.

Conventions shared by every chart (kept in :func:`_figure` and :func:`_prepare`):

- Each figure is made in one go from plain trace and layout dicts (:func:`_figure`): plotly's
  ``update_layout``/``update_xaxes``/``add_trace`` resolve property paths and subplots on every
  call, which made building a chart three times slower than the figure itself; live charts are
  built every few seconds.

- Inputs are pandas objects indexed by a tz-aware UTC ``DatetimeIndex`` of bar start times (a
  naive index is taken to be UTC). ``tz`` only changes what is displayed: the index is converted
  with ``tz_convert`` on a copy, so the x values carry the display zone's offset.
- Series longer than ``max_points`` are thinned with :func:`ui.downsample.downsample` (first,
  last, min and max per bucket), never sent whole to the browser.
- ``since`` (time-series charts): the traces hold only the points from that bar on, unthinned,
  while everything computed over the series (crossings, the y range, bands) still uses all of
  it: the update of a chart the browser extends (:mod:`ui.live_chart`).
- ``layout.uirevision`` is ``revision`` (default: the chart's name). Pass something that changes
  only when the view should reset, e.g. ``f"{pair}-{timeframe}"``: zoom and pan then survive the
  periodic Streamlit reruns.
- Empty (or all-NaN) input gives a figure with a "No data yet" annotation; charts never raise on
  missing data. Bad arguments (e.g. mismatched lengths) raise ``ValueError``.

Nothing here imports streamlit, so every chart is unit-testable.
"""

from __future__ import annotations

import copy
import functools
import math
from typing import Literal, TypeVar

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from ui.downsample import downsample

__all__ = [
    "FIGURE_CONFIG",
    "NO_DATA_TEXT",
    "correlation_chart",
    "correlation_heatmap",
    "display_time",
    "equity_chart",
    "hedge_ratio_chart",
    "lead_lag_chart",
    "price_chart",
    "rebase_levels",
    "spread_chart",
    "threshold_crossings",
    "zscore_chart",
]

# Passed as st.plotly_chart(config=FIGURE_CONFIG): wheel zoom, no logo, no selection tools (nothing selects).
FIGURE_CONFIG: dict = {
    "scrollZoom": True,
    "displaylogo": False,
    "modeBarButtonsToRemove": ["lasso2d", "select2d"],
}

NO_DATA_TEXT = "No data yet"
DEFAULT_MAX_POINTS = 4000
PRICE_HEIGHT = 420
CHART_HEIGHT = 320
# A heatmap writes ρ in its cells up to this many symbols, and grows to at most this height (px).
HEATMAP_TEXT_MAX = 20
HEATMAP_MAX_HEIGHT = 900
COLORS: tuple[str, ...] = tuple(qualitative.Plotly)
LIVE_BAR_COLOR = "rgba(255, 165, 0, 0.25)"
BAND_FILL = "rgba(99, 110, 250, 0.15)"
STRETCHED_FILL = "rgba(239, 85, 59, 0.08)"
DRAWDOWN_FILL = "rgba(239, 85, 59, 0.25)"

PandasT = TypeVar("PandasT", pd.Series, pd.DataFrame)


# ----------------------------------------------------------------------------------------------
# Shared helpers
# ----------------------------------------------------------------------------------------------


def plotly_text(text: str) -> str:
    """``text`` for a plotly title, legend entry or tick label, shown literally.

    Plotly renders a subset of HTML there (``<a href>`` links, ``<b>``, ``<br>``, entities): ``&``,
    ``<`` and ``>`` become entities, which plotly shows as the characters themselves.
    """
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _figure(traces: list[dict], layout: dict, *, title: str, revision: str, height: int,
            hovermode: str | bool = "x unified", time_axis: bool = True) -> go.Figure:
    """The figure from plain trace and layout dicts, with the look every chart shares: title,
    compact margins, legend on top, uirevision. Validated by plotly as it is made.

    No explicit template: ``st.plotly_chart`` styles every figure with the page's Streamlit theme,
    and assigning a template copies it into each figure (~12 ms a chart, the biggest single cost
    of a page refresh).

    ``time_axis``: x values are display milliseconds (see :func:`_to_display_index`) on a date
    axis (every x axis of the layout, or ``xaxis`` when it names none).
    """
    # Names from outside (a dataset's name is any printable text) shown as plain text; copies, as a
    # caller's dicts may be reused.
    traces = [{**trace, **({"name": plotly_text(trace["name"])} if isinstance(trace.get("name"), str) else {}),
               **({k: [plotly_text(str(v)) for v in trace[k]] for k in ("x", "y")}
                  if trace.get("type") == "heatmap" else {})} for trace in traces]
    layout = {name: ({**axis, "title": {**axis["title"], "text": plotly_text(str(axis["title"].get("text", "")))}}
                     if name.startswith(("xaxis", "yaxis")) and isinstance(axis, dict)
                     and isinstance(axis.get("title"), dict) else axis)
              for name, axis in layout.items()}
    layout = {
        **layout,
        "title": {"text": plotly_text(title), "x": 0.0, "xanchor": "left", "font": {"size": 15}},
        "height": height,
        "margin": {"l": 60, "r": 20, "t": 60, "b": 40},
        "hovermode": hovermode,
        "uirevision": revision,
        "legend": {"orientation": "h", "yanchor": "bottom", "y": 1.0, "xanchor": "right", "x": 1.0},
    }
    if time_axis:
        for axis in [name for name in layout if name.startswith("xaxis")] or ["xaxis"]:
            layout[axis] = {**layout.get(axis, {}), "type": "date"}
    return go.Figure(data=traces, layout=layout)


def _axis(title: str, **kwargs: object) -> dict:
    """An axis of the layout with a title."""
    return {"title": {"text": title}, **kwargs}


def _empty_figure(*, title: str, revision: str, height: int) -> go.Figure:
    note = {"text": NO_DATA_TEXT, "xref": "paper", "yref": "paper", "x": 0.5, "y": 0.5, "showarrow": False,
            "font": {"size": 16, "color": "gray"}}
    return _figure([], {"annotations": [note], "xaxis": {"visible": False}, "yaxis": {"visible": False}},
                   title=title, revision=revision, height=height, time_axis=False)


def _is_empty(obj: pd.Series | pd.DataFrame | None) -> bool:
    """No rows, or nothing but NaN: there is nothing to draw."""
    if obj is None or len(obj) == 0:
        return True
    values = obj.to_numpy()
    if values.dtype.kind in "fc":
        return bool(np.isnan(values).all())
    return bool(pd.isna(obj).to_numpy().all())


def _to_display_index(index: pd.Index, tz: str) -> pd.Index:
    """Times as wall-clock milliseconds in the display zone (float64), for a ``type="date"`` axis.

    Plotly sends numeric numpy arrays as compact base64 typed arrays, while datetimes become one
    ISO string per point: on a day of 1 s bars that is ~5× the bytes and most of the time spent
    building a figure. A date axis reads plain numbers as milliseconds since the epoch and shows
    them as they are (no zone shift), so wall-clock milliseconds display the zone's local time.
    """
    if not isinstance(index, pd.DatetimeIndex):
        return index
    utc = index.tz_localize("UTC") if index.tz is None else index
    return pd.Index(utc.tz_convert(tz).tz_localize(None).as_unit("ms").asi8.astype(np.float64), name=index.name)


def display_time(ts: pd.Timestamp, tz: str) -> float:
    """One time as display-zone wall-clock milliseconds (see :func:`_to_display_index`)."""
    return float(_to_display_index(pd.DatetimeIndex([pd.Timestamp(ts)]), tz)[0])


def _prepare(obj: PandasT, tz: str, max_points: int, since: pd.Timestamp | None = None) -> PandasT:
    """:func:`_thin`, then move the index to the display zone.

    Returns a new object; the caller's data (and its UTC index) is left untouched.
    """
    return _to_display(_thin(obj, max_points, since), tz)


def _thin(obj: PandasT, max_points: int, since: pd.Timestamp | None) -> PandasT:
    """Downsampled for display (min/max preserving); with ``since`` (UTC) only the rows from
    there on, none dropped: the tail of a chart extended in the browser (see :mod:`ui.live_chart`)."""
    if since is not None:
        return _from(obj, since)
    return downsample(obj, max_points)


def _from(obj: PandasT, since: pd.Timestamp | None) -> PandasT:
    """The rows from ``since`` (UTC) on, all for None; found by binary search, a view not a copy.

    A chart update cuts its series here before computing anything per point: its tail is a few
    bars of a day's series.
    """
    return obj if since is None else obj.iloc[int(obj.index.searchsorted(since, side="left")):]


def _to_display(obj: PandasT, tz: str) -> PandasT:
    return obj.set_axis(_to_display_index(obj.index, tz), axis=0)


def _time_axis_title(tz: str) -> str:
    return f"Time ({tz})"


def _window(window: int | None) -> str | None:
    return f"window {window} bars" if window is not None else None


def _title(base: str, *details: str | None) -> str:
    """``base (detail, detail)``, skipping empty details: one place for how titles name unit and window."""
    shown = [d for d in details if d]
    return f"{base} ({', '.join(shown)})" if shown else base


def _line(series: pd.Series, name: str, **kwargs: object) -> dict:
    return {"type": "scatter", "x": series.index.to_numpy(), "y": series.to_numpy(dtype=float, na_value=np.nan),
            "name": name, "mode": "lines", **kwargs}


def _note(y: float, text: str, color: str) -> dict:
    """A small label at the left edge of the plot, just above ``y`` (e.g. a threshold's value)."""
    return {"x": 0, "xref": "paper", "y": y, "yref": "y", "text": text, "showarrow": False, "xanchor": "left",
            "yanchor": "bottom", "font": {"size": 11, "color": color}}


def _fmt_signed(value: float) -> str:
    return f"{value:+g}"


# ----------------------------------------------------------------------------------------------
# Prices
# ----------------------------------------------------------------------------------------------


def rebase_levels(closes: pd.DataFrame) -> dict[str, float]:
    """Each column's first valid close: the level :func:`price_chart` rebases to 100 (NaN if none)."""
    levels = {}
    for column in closes.columns:
        valid = closes[column].astype(float).dropna()
        levels[str(column)] = float(valid.iloc[0]) if len(valid) else np.nan
    return levels


def rebased_traces(traces: dict[str, dict[str, list]], levels: dict[str, float]) -> dict[str, dict[str, list]]:
    """Price-chart traces as JSON lists (a chart update), rebased to ``levels``.

    A rebased price line carries its raw closes as ``customdata``, so ``y = customdata / level ·
    100`` (None where the close or the level is missing, like :func:`_rebase`'s NaN); other traces
    are returned as they are.
    """
    out = dict(traces)
    for name, level in levels.items():
        trace = traces.get(name)
        if trace is None or "customdata" not in trace:
            continue
        valid = math.isfinite(level) and level > 0
        out[name] = {**trace, "y": [None if close is None or not valid else close / level * 100.0
                                    for close in trace["customdata"]]}
    return out


def _rebase(closes: pd.DataFrame, levels: dict[str, float]) -> pd.DataFrame:
    """Each column divided by its level, times 100 (NaN where the level is not a positive number)."""
    rebased = {}
    for column in closes.columns:
        series = closes[column].astype(float)
        base = levels.get(str(column), np.nan)
        rebased[column] = series / base * 100.0 if np.isfinite(base) and base > 0 else series * np.nan
    return pd.DataFrame(rebased, index=closes.index)


def _bar_length(index: pd.DatetimeIndex) -> pd.Timedelta | None:
    """Typical bar length: the most common step of the index, or None with fewer than two bars."""
    if len(index) < 2:
        return None
    steps = pd.Series(np.diff(index.asi8))
    steps = steps[steps > 0]
    if steps.empty:
        return None
    return pd.Timedelta(int(steps.mode().iloc[0]), unit=index.unit)


def _hline(y: float, *, color: str = "gray", dash: str = "solid") -> dict:
    """A horizontal line across the plot at ``y`` as a plain layout shape.

    Plain shapes instead of ``add_hline``/``add_hrect``: those resolve every subplot on each call
    and cost several milliseconds apiece, which adds up on a page that refreshes every 2 s.
    """
    return {"type": "line", "xref": "paper", "x0": 0, "x1": 1, "yref": "y", "y0": y, "y1": y,
            "line": {"color": color, "width": 1, "dash": dash}}


def _hband(y0: float, y1: float, fill: str) -> dict:
    """A horizontal band across the plot between ``y0`` and ``y1`` (layout shape, below the data)."""
    return {"type": "rect", "xref": "paper", "x0": 0, "x1": 1, "yref": "y", "y0": y0, "y1": y1,
            "fillcolor": fill, "line": {"width": 0}, "layer": "below"}


def _live_bar_marks(start: float, length: pd.Timedelta | None) -> tuple[list[dict], dict]:
    """Layout shapes that shade the still-forming bar (if its length is known) with a dotted line at
    its start, and the annotation "live bar".

    ``start`` is in display milliseconds (see :func:`_to_display_index`). The shapes span the
    whole plot height (``yref="paper"``), so they cover the volume row too; plain layout shapes
    are also far cheaper to build than ``add_vrect(row="all")``.
    """
    span = {"xref": "x", "yref": "paper", "y0": 0, "y1": 1}
    shapes = []
    if length is not None:
        shapes.append({"type": "rect", "x0": start, "x1": start + length / pd.Timedelta(1, "ms"),
                       "fillcolor": LIVE_BAR_COLOR, "line": {"width": 0}, "layer": "below", **span})
    # The band can be a pixel wide on a long window; the dotted line keeps the live bar findable.
    shapes.append({"type": "line", "x0": start, "x1": start, "line": {"dash": "dot", "color": "darkorange", "width": 1},
                   **span})
    return shapes, {"x": start, "y": 1.0, "xref": "x", "yref": "paper", "text": "live bar", "showarrow": False,
                    "xanchor": "right", "yanchor": "top", "font": {"size": 11, "color": "darkorange"}}


@functools.cache
def _price_grid(has_volume: bool, dual: bool) -> tuple[dict, dict[tuple[int, bool], dict[str, str]]]:
    """The price chart's subplot layout (prices, optionally a second price axis and a volume row
    sharing x) and each (row, secondary y) cell's trace axes, laid out once by ``make_subplots``."""
    specs: list[list[dict]] = [[{"secondary_y": dual}]] + ([[{}]] if has_volume else [])
    grid = make_subplots(rows=len(specs), cols=1, shared_xaxes=True, specs=specs, vertical_spacing=0.03,
                         row_heights=[0.75, 0.25] if has_volume else None)
    cells = [(1, False)] + ([(1, True)] if dual else []) + ([(2, False)] if has_volume else [])
    for row, secondary in cells:
        grid.add_trace(go.Scatter(), row=row, col=1, secondary_y=secondary if dual and row == 1 else None)
    axes = {cell: {"xaxis": trace.xaxis, "yaxis": trace.yaxis} for cell, trace in zip(cells, grid.data, strict=True)}
    layout = grid.layout.to_plotly_json()
    layout.pop("template", None)  # the default one, applied to every figure anyway: validating a copy costs ~9 ms
    return layout, axes


def price_chart(closes: pd.DataFrame, volumes: pd.DataFrame | None = None, *,
                mode: Literal["normalised", "dual"] = "normalised", open_bar_start: pd.Timestamp | None = None,
                quote: str = "USDT", tz: str = "UTC", max_points: int = DEFAULT_MAX_POINTS,
                revision: str = "price_chart", height: int = PRICE_HEIGHT, title: str | None = None,
                rebase_to: dict[str, float] | None = None, since: pd.Timestamp | None = None) -> go.Figure:
    """Close prices per symbol with volume bars underneath.

    Parameters
    ----------
    closes : DataFrame, one column per symbol, close price in quote currency, UTC bar-start index.
    volumes : DataFrame or None
        Traded base-asset quantity per bar, same columns; drawn as bars in a second row sharing x.
    mode : "normalised" rebases every symbol to 100 at its first valid close; "dual" puts the first
        symbol on the left axis and the second on the right axis (``yaxis2``) in ``quote``
        currency. "dual" needs exactly two symbols and falls back to "normalised" otherwise.
    open_bar_start : start (UTC) of the still-forming last bar, shaded and labelled "live bar".
    rebase_to : per-symbol level that "normalised" shows as 100 (default: :func:`rebase_levels` of
        ``closes``); a chart extended bar by bar keeps the levels of its first drawing.

    Traces: one line per symbol named after it, then one filled step line per symbol named
    ``"<symbol> volume"`` (volume per bar).
    """
    symbols = [str(c) for c in closes.columns] if closes is not None else []
    dual = mode == "dual" and len(symbols) == 2
    if title is None:
        title = (_title("Prices", quote, f"{symbols[0]} left axis, {symbols[1]} right axis") if dual
                 else _title("Prices", "rebased to 100 at the first bar"))
    if _is_empty(closes):
        return _empty_figure(title=title, revision=revision, height=height)
    has_volume = volumes is not None and not _is_empty(volumes)
    grid, axes = _price_grid(has_volume, dual)
    layout = copy.deepcopy(grid)
    traces = []

    levels = None if dual else rebase_to or rebase_levels(closes)  # the first closes of the whole series
    closes_from = _from(closes, since)
    shown = _thin(closes_from if levels is None else _rebase(closes_from, levels), max_points, since)
    # Rebasing is a positive scaling, so the rows chosen for the rebased lines suit the raw closes
    # shown in the hover as well.
    raw_closes = closes_from.reindex(shown.index)
    shown = _to_display(shown, tz)
    for i, symbol in enumerate(closes.columns):
        color = COLORS[i % len(COLORS)]
        y = shown[symbol]
        raw = raw_closes[symbol].to_numpy(dtype=float, na_value=np.nan)
        hover = "%{y:,.6g} " + quote if dual else "%{y:.2f} (%{customdata:,.6g} " + quote + ")"
        traces.append(_line(y, str(symbol), line={"color": color, "width": 1.5}, customdata=raw,
                            legendgroup=str(symbol), hovertemplate=hover, **axes[1, dual and i == 1]))

    if has_volume:
        # A filled step line per symbol, not bars: a bar is an SVG element of its own, and a day of
        # 1 s bars made tens of thousands of them, which the browser re-laid out on every update.
        vol = _prepare(_from(volumes, since).reindex(columns=closes.columns), tz, max_points, since)
        for i, symbol in enumerate(closes.columns):
            color = COLORS[i % len(COLORS)]
            traces.append(_line(vol[symbol], f"{symbol} volume", line={"color": color, "width": 0.5, "shape": "hv"},
                                fill="tozeroy", opacity=0.6, legendgroup=str(symbol), showlegend=False,
                                hovertemplate="%{y:,.6g}", **axes[2, False]))

    def axis(cell: tuple[int, bool], kind: str) -> dict:  # the layout's axis of that cell ("x" or "y")
        name = axes[cell][kind + "axis"]
        return layout.setdefault(kind + "axis" + name[1:], {})

    if has_volume:
        axis((2, False), "y").update(_axis("Volume (base asset)", rangemode="tozero"))
    if dual:
        axis((1, False), "y").update(_axis(f"{symbols[0]} ({quote})"))
        axis((1, True), "y").update(_axis(f"{symbols[1]} ({quote})", showgrid=False))
    else:
        axis((1, False), "y").update(_axis("Price (rebased = 100)"))
    axis((2, False) if has_volume else (1, False), "x").update(_axis(_time_axis_title(tz)))

    if open_bar_start is not None:
        shapes, note = _live_bar_marks(display_time(open_bar_start, tz), _bar_length(closes.index))
        layout.update(shapes=shapes, annotations=[note])
    return _figure(traces, layout, title=title, revision=revision, height=height)


# ----------------------------------------------------------------------------------------------
# Spread, z-score, hedge ratio, correlation
# ----------------------------------------------------------------------------------------------


def spread_chart(spread: pd.Series, mean: pd.Series, std: pd.Series, *, k: float = 2.0, window: int | None = None,
                 unit: str = "quote currency", tz: str = "UTC", max_points: int = DEFAULT_MAX_POINTS,
                 revision: str = "spread_chart", height: int = CHART_HEIGHT, title: str | None = None,
                 since: pd.Timestamp | None = None) -> go.Figure:
    """Spread ``y − βx`` with its rolling mean and a filled ``mean ± k·std`` band.

    ``mean`` and ``std`` are aligned to ``spread``'s index (missing → NaN, e.g. during warm-up).
    ``unit`` names the spread's unit ("quote currency", or "log price" for log spreads).
    Traces: "upper band (mean + kσ)", "lower band (mean − kσ)" (filled to the upper), "rolling
    mean", "spread".
    """
    if title is None:
        title = _title(f"Spread with rolling mean ± {k:g}σ band", unit, _window(window))
    if _is_empty(spread):
        return _empty_figure(title=title, revision=revision, height=height)
    spread = _from(spread, since)
    mean = _from(mean, since).reindex(spread.index).astype(float) if mean is not None else \
        pd.Series(np.nan, index=spread.index)
    std = _from(std, since).reindex(spread.index).astype(float) if std is not None else \
        pd.Series(np.nan, index=spread.index)
    frame = pd.DataFrame({"spread": spread.astype(float), "mean": mean, "upper": mean + k * std,
                          "lower": mean - k * std}, index=spread.index)
    frame = _prepare(frame, tz, max_points, since)
    traces = [
        _line(frame["upper"], f"upper band (mean + {k:g}σ)", line={"width": 0}, showlegend=False,
              hovertemplate="%{y:,.6g}"),
        _line(frame["lower"], f"lower band (mean − {k:g}σ)", line={"width": 0}, fill="tonexty",
              fillcolor=BAND_FILL, showlegend=False, hovertemplate="%{y:,.6g}"),
        _line(frame["mean"], "rolling mean", line={"color": "gray", "dash": "dash", "width": 1},
              hovertemplate="%{y:,.6g}"),
        _line(frame["spread"], "spread", line={"color": COLORS[0], "width": 1.5}, hovertemplate="%{y:,.6g}"),
    ]
    layout = {"xaxis": _axis(_time_axis_title(tz)), "yaxis": _axis(f"Spread ({unit})")}
    return _figure(traces, layout, title=title, revision=revision, height=height)


def threshold_crossings(z: pd.Series, threshold: float) -> pd.Series:
    """Bars where ``|z|`` first exceeds ``threshold``: ``|z_t| > threshold`` and ``|z_{t-1}| <= threshold``.

    A bar right after a NaN (warm-up or gap) is not a crossing: the previous value is unknown.
    Returns the z values at those bars (same index type as ``z``).
    """
    absz = z.astype(float).abs()
    crossed = (absz > threshold) & (absz.shift(1) <= threshold)
    return z[crossed.to_numpy()]


def zscore_chart(z: pd.Series, *, threshold: float = 2.0, alerts: pd.DataFrame | None = None,
                 window: int | None = None, shade: bool = True, tz: str = "UTC",
                 max_points: int = DEFAULT_MAX_POINTS, revision: str = "zscore_chart", height: int = CHART_HEIGHT,
                 title: str | None = None, since: pd.Timestamp | None = None) -> go.Figure:
    """Rolling z-score of the spread with ±threshold lines, threshold crossings and alerts.

    Horizontal lines at 0 and ±``threshold``; with ``shade`` the regions beyond the thresholds
    are tinted. Crossings (see :func:`threshold_crossings`) are computed on the full series before
    downsampling and drawn as marker traces "crossed above +t" (▲) and "crossed below −t" (▼).
    ``alerts`` (index = UTC time, column "value", optional "message") become a marker
    trace "alerts" with the message as hover text. The y range is symmetric around 0.
    """
    if title is None:
        title = _title("Z-score of spread", _window(window))
    if _is_empty(z):
        return _empty_figure(title=title, revision=revision, height=height)
    z = z.astype(float)
    traces = [_line(_prepare(z, tz, max_points, since), "z-score", line={"color": COLORS[0], "width": 1.5},
                    hovertemplate="%{y:.2f}")]

    # Crossings of the whole series; a tail needs only the bar before it to find its own.
    recent = z if since is None else z.iloc[max(int(z.index.searchsorted(since, side="left")) - 1, 0):]
    crossings = _prepare(threshold_crossings(recent, threshold), tz, max_points, since)
    # One trace per direction with a scalar marker style: per-point style arrays are validated
    # element by element and cost more than the rest of the chart on a day of 1 s bars.
    for side, name, symbol, color in ((crossings > 0, f"crossed above +{threshold:g}", "triangle-up", "#EF553B"),
                                      (crossings < 0, f"crossed below −{threshold:g}", "triangle-down", "#00CC96")):
        marks = crossings[side]
        if len(marks):
            traces.append({"type": "scatter", "x": marks.index.to_numpy(), "y": marks.to_numpy(), "name": name,
                           "mode": "markers", "hovertemplate": "crossed at %{y:.2f}",
                           "marker": {"size": 9, "symbol": symbol, "color": color}})

    if alerts is not None and len(alerts) and "value" in alerts.columns:
        shown = _prepare(alerts, tz, max_points, since)
        text = shown["message"].astype(str).to_numpy() if "message" in shown.columns else None
        traces.append({"type": "scatter", "x": shown.index.to_numpy(),
                       "y": shown["value"].to_numpy(dtype=float, na_value=np.nan), "name": "alerts",
                       "mode": "markers", "hovertext": text,
                       "hovertemplate": "%{hovertext}" if text is not None else "alert at %{y:.2f}",
                       "marker": {"size": 11, "symbol": "x", "color": "black"}})

    extent = float(np.nanmax(np.abs(z.to_numpy())))
    if alerts is not None and len(alerts) and "value" in alerts.columns:
        extent = max(extent, float(np.nanmax(np.abs(alerts["value"].to_numpy(dtype=float, na_value=np.nan)),
                                             initial=0.0)))
    ymax = max(extent, abs(threshold) * 1.5, 1.0) * 1.1
    shapes = [_hband(threshold, ymax, STRETCHED_FILL), _hband(-ymax, -threshold, STRETCHED_FILL)] if shade else []
    shapes += [_hline(level, color="#EF553B", dash="dash") for level in (threshold, -threshold)]
    shapes.append(_hline(0.0))
    layout = {"shapes": shapes, "annotations": [_note(level, _fmt_signed(level), "#EF553B")
                                                for level in (threshold, -threshold)],
              "xaxis": _axis(_time_axis_title(tz)), "yaxis": _axis("z (σ from rolling mean)", range=[-ymax, ymax])}
    return _figure(traces, layout, title=title, revision=revision, height=height)


def hedge_ratio_chart(beta: pd.Series | pd.DataFrame, *, static_beta: float | None = None,
                      method_label: str = "rolling OLS", window: int | None = None, tz: str = "UTC",
                      max_points: int = DEFAULT_MAX_POINTS, revision: str = "hedge_ratio_chart",
                      height: int = CHART_HEIGHT, title: str | None = None,
                      since: pd.Timestamp | None = None) -> go.Figure:
    """Hedge ratio β over time: a Series is one trace named ``f"β ({method_label})"``; a DataFrame
    gives one trace per column (e.g. rolling OLS vs Kalman), named after the column. ``static_beta``
    adds a dashed horizontal line labelled with its value. β is units of X per unit of Y
    (dimensionless elasticity for log prices).
    """
    if title is None:
        label = method_label if isinstance(beta, pd.Series) or beta is None else "by method"
        title = _title("Hedge ratio β", label, _window(window))
    if _is_empty(beta):
        return _empty_figure(title=title, revision=revision, height=height)
    frame = beta.to_frame(f"β ({method_label})") if isinstance(beta, pd.Series) else beta
    frame = _prepare(_from(frame, since).astype(float), tz, max_points, since)
    traces = [_line(frame[column], str(column), line={"color": COLORS[i % len(COLORS)], "width": 1.5},
                    hovertemplate="%{y:.6g}") for i, column in enumerate(frame.columns)]
    layout: dict = {"xaxis": _axis(_time_axis_title(tz)), "yaxis": _axis("β (units of X per unit of Y)")}
    if static_beta is not None and np.isfinite(static_beta):
        layout.update(shapes=[_hline(static_beta, dash="dash")],
                      annotations=[_note(static_beta, f"static β = {static_beta:.6g}", "gray")])
    return _figure(traces, layout, title=title, revision=revision, height=height)


def correlation_chart(corr: pd.Series, *, window: int | None = None, label: str | None = None, tz: str = "UTC",
                      max_points: int = DEFAULT_MAX_POINTS, revision: str = "correlation_chart",
                      height: int = CHART_HEIGHT, title: str | None = None,
                      since: pd.Timestamp | None = None) -> go.Figure:
    """Rolling Pearson correlation of returns, y fixed to [-1, 1], one trace "correlation".

    ``label`` (e.g. "BTCUSDT vs ETHUSDT") is added to the title.
    """
    if title is None:
        title = _title("Rolling correlation of returns", label, _window(window))
    if _is_empty(corr):
        return _empty_figure(title=title, revision=revision, height=height)
    trace = _line(_prepare(_from(corr, since).astype(float), tz, max_points, since), "correlation",
                  line={"color": COLORS[0], "width": 1.5}, hovertemplate="%{y:.3f}")
    layout = {"shapes": [_hline(0.0)], "xaxis": _axis(_time_axis_title(tz)),
              "yaxis": _axis("Correlation (ρ)", range=[-1, 1])}
    return _figure([trace], layout, title=title, revision=revision, height=height)


# ----------------------------------------------------------------------------------------------
# Cross-sectional views (no time axis: tz and max_points are accepted for a uniform call shape)
# ----------------------------------------------------------------------------------------------


def correlation_heatmap(matrix: pd.DataFrame, *, subtitle: str | None = None, tz: str = "UTC",
                        max_points: int = DEFAULT_MAX_POINTS, revision: str = "correlation_heatmap",
                        height: int = CHART_HEIGHT, title: str | None = None) -> go.Figure:
    """Correlation matrix of returns as a heatmap: zmin −1, zmax 1, RdBu (blue = +1), 2-decimal cell
    text up to :data:`HEATMAP_TEXT_MAX` symbols (beyond, the hover says the value).

    Rows are drawn top to bottom in ``matrix.index`` order, so the diagonal runs top-left to
    bottom-right. Every symbol is labelled on both axes, the labels smaller and the figure taller
    (up to :data:`HEATMAP_MAX_HEIGHT` px) as symbols are added. ``tz`` and ``max_points`` are
    unused (no time axis).
    """
    del tz, max_points
    if title is None:
        title = "Correlation of returns across symbols" + (f" ({subtitle})" if subtitle else "")
    if matrix is None or matrix.size == 0:
        return _empty_figure(title=title, revision=revision, height=height)
    values = matrix.to_numpy(dtype=float, na_value=np.nan)
    k = len(matrix.index)
    heatmap = {"type": "heatmap", "z": values, "x": [str(c) for c in matrix.columns],
               "y": [str(i) for i in matrix.index], "zmin": -1.0, "zmax": 1.0, "zmid": 0.0, "colorscale": "RdBu",
               "hovertemplate": "%{y} vs %{x}: %{z:.3f}<extra></extra>",
               "colorbar": {"title": {"text": "ρ"}}, "name": "correlation"}
    if k <= HEATMAP_TEXT_MAX:  # beyond, the cells are too small for text: the hover has the value
        heatmap["text"] = np.where(np.isfinite(values), np.char.mod("%.2f", np.nan_to_num(values)), "")
        heatmap["texttemplate"] = "%{text}"
    # Every label drawn (plotly would skip some): a row of text per symbol, at least 9 px high.
    font = {"size": 11 if k <= 20 else 9}
    axis = {"tickmode": "linear", "dtick": 1, "tickfont": font, "automargin": True}
    height = min(max(height, 12 * k + 120), HEATMAP_MAX_HEIGHT)
    return _figure([heatmap], {"yaxis": {"autorange": "reversed", **axis}, "xaxis": {**axis, "tickangle": -90}},
                   title=title, revision=revision, height=height, hovermode="closest", time_axis=False)


def lead_lag_chart(lags: np.ndarray, correlations: np.ndarray, *, best_lag: int | None = None,
                   bar_seconds: float | None = None, y_name: str = "Y", x_name: str = "X",
                   positive_means: str | None = None, tz: str = "UTC", max_points: int = DEFAULT_MAX_POINTS,
                   revision: str = "lead_lag_chart", height: int = CHART_HEIGHT,
                   title: str | None = None) -> go.Figure:
    """Correlation of returns by lag as bars, the best lag highlighted.

    ``lags`` are in bars; ``correlations[i]`` is ``corr(y_t, x_{t+lags[i]})`` as returned by
    :func:`analytics.lead_lag`, so a positive lag means ``y_name`` moves first. ``positive_means``
    (default ``f"{y_name} leads {x_name}"``) is written into the x-axis title. ``bar_seconds``
    adds the lag in seconds to the hover and the title. One Bar trace "correlation by lag".
    """
    del tz, max_points
    lags = np.asarray(lags)
    correlations = np.asarray(correlations, dtype=float)
    if lags.shape != correlations.shape or lags.ndim != 1:
        raise ValueError(f"lags and correlations must be 1-d of equal length, got {lags.shape} and "
                         f"{correlations.shape}")
    if positive_means is None:
        positive_means = f"{y_name} leads {x_name}"
    if title is None:
        title = f"Lead–lag: correlation of {y_name} and {x_name} returns by lag"
        if best_lag is not None:
            secs = f" ≈ {best_lag * bar_seconds:+g} s" if bar_seconds else ""
            title += f" (best {best_lag:+d} bars{secs})"
    if lags.size == 0 or not np.isfinite(correlations).any():
        return _empty_figure(title=title, revision=revision, height=height)
    colors = np.where(lags == best_lag, "#EF553B", COLORS[0]) if best_lag is not None else COLORS[0]
    seconds = lags * bar_seconds if bar_seconds else None
    hover = "lag %{x:+d} bars" + (" (%{customdata:+g} s)" if seconds is not None else "") + ": ρ = %{y:.3f}"
    bars = {"type": "bar", "x": lags, "y": correlations, "name": "correlation by lag", "marker": {"color": colors},
            "customdata": seconds, "hovertemplate": hover + "<extra></extra>"}
    x_axis = _axis(f"lag (bars; positive = {positive_means})", **({"dtick": 1} if lags.size <= 25 else {}))
    layout = {"shapes": [_hline(0.0)], "xaxis": x_axis, "yaxis": _axis("Correlation of returns (ρ)", range=[-1, 1])}
    return _figure([bars], layout, title=title, revision=revision, height=height, hovermode="closest",
                   time_axis=False)


# ----------------------------------------------------------------------------------------------
# Backtest
# ----------------------------------------------------------------------------------------------


def equity_chart(equity: pd.Series, *, drawdown: bool = True, unit: str = "quote currency", tz: str = "UTC",
                 max_points: int = DEFAULT_MAX_POINTS, revision: str = "equity_chart", height: int = CHART_HEIGHT,
                 title: str | None = None) -> go.Figure:
    """Cumulative PnL of a backtest in ``unit``; with ``drawdown`` the gap below the running peak
    is shaded (traces "running peak", then "equity" filled up to it) and the title gives the
    maximum drawdown.
    """
    if title is None:
        title = _title("Backtest equity", f"cumulative PnL, {unit}")
    if _is_empty(equity):
        return _empty_figure(title=title, revision=revision, height=height)
    equity = equity.astype(float)
    line = {"color": COLORS[0], "width": 1.5}
    if drawdown:
        peak = equity.cummax()
        max_dd = float(np.nanmax((peak - equity).to_numpy()))
        title += f" · max drawdown {max_dd:,.2f}"
        frame = _prepare(pd.DataFrame({"equity": equity, "peak": peak}), tz, max_points)
        traces = [_line(frame["peak"], "running peak", line={"color": "gray", "dash": "dot", "width": 1},
                        hovertemplate="%{y:,.2f}"),
                  _line(frame["equity"], "equity", line=line, fill="tonexty", fillcolor=DRAWDOWN_FILL,
                        hovertemplate="%{y:,.2f}")]
    else:
        traces = [_line(_prepare(equity, tz, max_points), "equity", line=line, hovertemplate="%{y:,.2f}")]
    layout = {"shapes": [_hline(0.0)], "xaxis": _axis(_time_axis_title(tz)), "yaxis": _axis(f"PnL ({unit})")}
    return _figure(traces, layout, title=title, revision=revision, height=height)
