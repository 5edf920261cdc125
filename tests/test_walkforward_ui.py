"""The walk-forward summary as a table and a chart: pure functions, display zone, empty and bad input."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from research.walkforward import SUMMARY_COLUMNS, WalkForwardSettings, walk_forward
from ui import charts
from ui.walkforward import TABLE_COLUMNS, walk_forward_chart, walk_forward_table

START = pd.Timestamp("2026-01-01", tz="UTC")


def summary_frame() -> pd.DataFrame:
    """Two windows as research.walkforward.summarise gives them; the second found nothing."""
    week = pd.Timedelta(days=7)
    return pd.DataFrame({
        "window": [0, 1],
        "formation_start": [START, START + week],
        "trading_start": [START + 4 * week, START + 5 * week],
        "trading_end": [START + 5 * week, START + 6 * week],
        "pairs": [190, 190],
        "found": [12, 0],
        "found_oos": [10, 0],
        "stayed": [7, 0],
        "stay_share": [0.7, math.nan],
        "stay_low": [0.397, math.nan],
        "stay_high": [0.892, math.nan],
        "base_stay_share": [0.06, 0.05],
        "mean_return_found": [0.004, math.nan],
        "mean_return_all": [-0.001, 0.0005],
    }, columns=list(SUMMARY_COLUMNS))


def test_table_names_columns_shows_percentages_and_the_display_zone() -> None:
    table = walk_forward_table(summary_frame(), tz="Asia/Kolkata")
    assert list(table.columns) == list(TABLE_COLUMNS.values())
    assert table["share staying"].iloc[0] == pytest.approx(70.0) and math.isnan(table["share staying"].iloc[1])
    assert table["mean return, found"].iloc[0] == pytest.approx(0.4)
    assert table["trading from"].iloc[0] == START + pd.Timedelta(days=28)  # the same instant ...
    assert str(table["trading from"].dt.tz) == "Asia/Kolkata"  # ... shown in the display zone
    assert table["stayed"].tolist() == [7, 0]


def test_chart_draws_shares_with_their_interval_and_returns_per_trading_window() -> None:
    fig = walk_forward_chart(summary_frame(), tz="Asia/Kolkata")
    assert [trace.name for trace in fig.data] == ["found pairs that stayed", "all pairs that stayed",
                                                  "mean return, found", "mean return, all"]
    found = fig.data[0]
    # x is the trading window's start as display-zone wall-clock ms (the ui.charts convention).
    shown = pd.Timestamp(int(found.x[0]), unit="ms").tz_localize("Asia/Kolkata")
    assert shown == START + pd.Timedelta(days=28)
    assert found.y[0] == pytest.approx(70.0) and np.isnan(found.y[1])
    assert found.error_y.array[0] == pytest.approx(89.2 - 70.0)
    assert found.error_y.arrayminus[0] == pytest.approx(70.0 - 39.7)
    assert list(found.customdata[0]) == [7, 10, 190]
    assert fig.data[1].y.tolist() == pytest.approx([6.0, 5.0])
    assert fig.data[2].yaxis == "y2" and fig.data[3].y[1] == pytest.approx(0.05)


def test_an_empty_summary_says_no_data_and_a_wrong_frame_is_named() -> None:
    empty = summary_frame().iloc[:0]
    fig = walk_forward_chart(empty)
    assert not fig.data and any(a.text == charts.NO_DATA_TEXT for a in fig.layout.annotations)
    assert walk_forward_table(empty).empty
    with pytest.raises(ValueError, match=r"summary lacks the column\(s\) stay_share"):
        walk_forward_chart(summary_frame().drop(columns="stay_share"))
    with pytest.raises(ValueError, match=r"summary lacks the column\(s\) pairs"):
        walk_forward_table(summary_frame().drop(columns="pairs"))


def test_a_real_study_goes_through_both() -> None:
    rng = np.random.default_rng(0)
    index = pd.date_range(START, periods=700, freq="1min")
    x = 100 * np.exp(np.cumsum(rng.normal(0, 1e-3, 700)))
    other = 50 * np.exp(np.cumsum(rng.normal(0, 1e-3, 700)))
    closes = pd.DataFrame({"AAA": 2 * x + rng.normal(0, 0.02, 700), "BBB": x, "CCC": other}, index=index)
    result = walk_forward(closes, "1m", WalkForwardSettings(formation=300, trading=200))
    table = walk_forward_table(result.summary)
    assert table["pairs tested"].tolist() == [3, 3]
    assert len(walk_forward_chart(result.summary).data[0].x) == 2
