"""A walk-forward study for people: its per-window summary as a table and as one chart.

Pure functions from :func:`research.walkforward.summarise`'s frame to a display frame and a plotly
figure (the conventions of :mod:`ui.charts`: display time zone, "No data yet" when empty); nothing
here imports streamlit.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from research.walkforward import SUMMARY_COLUMNS
from ui.charts import CHART_HEIGHT, COLORS, _axis, _empty_figure, _figure, _time_axis_title, _to_display_index

# Display names of the summary's columns, in the table's order (the times are shown in the display zone).
TABLE_COLUMNS = {
    "window": "window",
    "trading_start": "trading from",
    "trading_end": "trading to",
    "pairs": "pairs tested",
    "found": "found (q < level)",
    "found_oos": "found, tested after",
    "stayed": "stayed",
    "stay_share": "share staying",
    "stay_low": "95 % low",
    "stay_high": "95 % high",
    "base_stay_share": "share staying, all pairs",
    "mean_return_found": "mean return, found",
    "mean_return_all": "mean return, all",
}
TITLE = "Walk-forward: do found pairs stay cointegrated?"


def walk_forward_table(summary: pd.DataFrame, *, tz: str = "UTC") -> pd.DataFrame:
    """The summary with readable column names (``TABLE_COLUMNS``), times in ``tz``, shares and returns in %.

    Shares and returns become percentages (0.25 → 25.0); NaN stays NaN (nothing found: no share).
    """
    _check(summary)
    table = summary.loc[:, list(TABLE_COLUMNS)].copy()
    for column in ("trading_start", "trading_end"):
        table[column] = pd.DatetimeIndex(table[column]).tz_convert(tz)
    for column in ("stay_share", "stay_low", "stay_high", "base_stay_share", "mean_return_found", "mean_return_all"):
        table[column] = table[column].astype(float) * 100.0
    return table.rename(columns=TABLE_COLUMNS).reset_index(drop=True)


def walk_forward_chart(summary: pd.DataFrame, *, tz: str = "UTC", revision: str = "walk_forward",
                       height: int = CHART_HEIGHT + 140) -> go.Figure:
    """Per trading window (x: its start, in ``tz``): above, the share of found pairs that stayed
    cointegrated with its 95 % Wilson interval and the share of all pairs that did (the baseline);
    below, the mean trading-window return after costs (%) of the found pairs and of all pairs.

    Hovering a point gives the counts behind it (stayed / found and tested, pairs tested).
    """
    _check(summary)
    if summary.empty:
        return _empty_figure(title=TITLE, revision=revision, height=height)
    x = _to_display_index(pd.DatetimeIndex(summary["trading_start"]), tz).to_numpy()
    share = summary["stay_share"].to_numpy(dtype=float) * 100.0
    low = summary["stay_low"].to_numpy(dtype=float) * 100.0
    high = summary["stay_high"].to_numpy(dtype=float) * 100.0
    counts = np.column_stack([summary["stayed"], summary["found_oos"], summary["pairs"]])
    traces = [
        {"type": "scatter", "x": x, "y": share, "name": "found pairs that stayed", "mode": "lines+markers",
         "line": {"color": COLORS[0]}, "customdata": counts,
         "error_y": {"type": "data", "symmetric": False, "array": high - share, "arrayminus": share - low},
         "hovertemplate": "%{y:.1f} % (%{customdata[0]} of %{customdata[1]}; %{customdata[2]} pairs tested)"},
        {"type": "scatter", "x": x, "y": summary["base_stay_share"].to_numpy(dtype=float) * 100.0,
         "name": "all pairs that stayed", "mode": "lines", "line": {"color": "gray", "dash": "dash"},
         "hovertemplate": "%{y:.1f} %"},
        {"type": "bar", "x": x, "y": summary["mean_return_found"].to_numpy(dtype=float) * 100.0, "xaxis": "x2",
         "yaxis": "y2", "name": "mean return, found", "marker": {"color": COLORS[0]}, "hovertemplate": "%{y:.3f} %"},
        {"type": "bar", "x": x, "y": summary["mean_return_all"].to_numpy(dtype=float) * 100.0, "xaxis": "x2",
         "yaxis": "y2", "name": "mean return, all", "marker": {"color": "gray"}, "hovertemplate": "%{y:.3f} %"},
    ]
    layout = {
        "xaxis": {"anchor": "y", "showticklabels": False, "matches": "x2"},
        "yaxis": _axis("staying (%)", domain=[0.42, 1.0], range=[0, 105]),
        "xaxis2": _axis(_time_axis_title(tz) + ", start of trading window", anchor="y2"),
        "yaxis2": _axis("return (%)", domain=[0.0, 0.32]),
        "barmode": "group",
    }
    return _figure(traces, layout, title=TITLE, revision=revision, height=height)


def _check(summary: pd.DataFrame) -> None:
    missing = [column for column in SUMMARY_COLUMNS if column not in summary.columns]
    if missing:
        raise ValueError(f"summary lacks the column(s) {', '.join(missing)}; pass research.walkforward's summary")
