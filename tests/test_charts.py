"""Charts are pure functions data → go.Figure; downsampling keeps every bucket's extremes."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from ui import charts
from ui.downsample import downsample, minmax_indices

START = pd.Timestamp("2024-03-01 00:00", tz="UTC")
KOLKATA_OFFSET = pd.Timedelta(hours=5, minutes=30)


def utc_index(n: int, freq: str = "1s") -> pd.DatetimeIndex:
    return pd.date_range(START, periods=n, freq=freq)


def walk(n: int, seed: int = 0, start: float = 100.0) -> pd.Series:
    rng = np.random.default_rng(seed)
    return pd.Series(start + rng.standard_normal(n).cumsum(), index=utc_index(n))


def closes_frame(n: int = 50) -> pd.DataFrame:
    return pd.DataFrame({"BTCUSDT": walk(n, 1, 60_000.0), "ETHUSDT": walk(n, 2, 3_000.0)})


def volumes_frame(n: int = 50) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    return pd.DataFrame({"BTCUSDT": rng.random(n), "ETHUSDT": rng.random(n) * 20}, index=utc_index(n))


def names(fig: go.Figure) -> list[str]:
    return [trace.name for trace in fig.data]


def shown(x: float, tz: str = "UTC") -> pd.Timestamp:
    """A plotted x value (display-zone wall-clock ms on a date axis) as the instant it stands for."""
    return pd.Timestamp(int(x), unit="ms").tz_localize(tz)


def first_x(fig: go.Figure, tz: str = "UTC") -> pd.Timestamp:
    return shown(fig.data[0].x[0], tz)


def has_no_data_note(fig: go.Figure) -> bool:
    return any(a.text == charts.NO_DATA_TEXT for a in fig.layout.annotations)


# Every time-series chart, built from n bars with given keyword arguments.
def _price(n: int, seed: int, **kw: object) -> go.Figure:
    return charts.price_chart(closes_frame(n) + seed, volumes_frame(n), **kw)


def _spread(n: int, seed: int, **kw: object) -> go.Figure:
    s = walk(n, seed)
    return charts.spread_chart(s, s.rolling(10).mean(), s.rolling(10).std(), window=10, **kw)


def _zscore(n: int, seed: int, **kw: object) -> go.Figure:
    return charts.zscore_chart(walk(n, seed, 0.0) / 10, window=10, **kw)


def _beta(n: int, seed: int, **kw: object) -> go.Figure:
    return charts.hedge_ratio_chart(walk(n, seed, 1.0) / 100, **kw)


def _corr(n: int, seed: int, **kw: object) -> go.Figure:
    return charts.correlation_chart(np.tanh(walk(n, seed, 0.0) / 10), window=10, **kw)


def _equity(n: int, seed: int, **kw: object) -> go.Figure:
    return charts.equity_chart(walk(n, seed, 0.0), **kw)


TIME_SERIES_CHARTS: dict[str, Callable[..., go.Figure]] = {
    "price": _price, "spread": _spread, "zscore": _zscore, "beta": _beta, "corr": _corr, "equity": _equity,
}

EMPTY_SERIES = pd.Series([], index=pd.DatetimeIndex([], tz="UTC"), dtype=float)
EMPTY_CALLS: dict[str, Callable[[], go.Figure]] = {
    "price": lambda: charts.price_chart(closes_frame(0), volumes_frame(0)),
    "price_no_columns": lambda: charts.price_chart(pd.DataFrame(index=pd.DatetimeIndex([], tz="UTC"))),
    "spread": lambda: charts.spread_chart(EMPTY_SERIES, EMPTY_SERIES, EMPTY_SERIES),
    "zscore": lambda: charts.zscore_chart(EMPTY_SERIES, alerts=pd.DataFrame({"value": []})),
    "zscore_all_nan": lambda: charts.zscore_chart(pd.Series(np.nan, index=utc_index(5))),
    "beta": lambda: charts.hedge_ratio_chart(EMPTY_SERIES, static_beta=1.0),
    "beta_frame": lambda: charts.hedge_ratio_chart(pd.DataFrame(index=pd.DatetimeIndex([], tz="UTC"))),
    "corr": lambda: charts.correlation_chart(EMPTY_SERIES),
    "heatmap": lambda: charts.correlation_heatmap(pd.DataFrame()),
    "lead_lag": lambda: charts.lead_lag_chart(np.array([], dtype=int), np.array([])),
    "equity": lambda: charts.equity_chart(EMPTY_SERIES),
}


# ----------------------------------------------------------------------------------------------
# Properties shared by every chart
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", TIME_SERIES_CHARTS)
def test_uirevision_is_the_given_revision_and_survives_new_data(name: str) -> None:
    build = TIME_SERIES_CHARTS[name]
    before = build(40, 0, revision="BTCUSDT/ETHUSDT-1s")
    after = build(60, 7, revision="BTCUSDT/ETHUSDT-1s")
    assert isinstance(before, go.Figure)
    assert before.layout.uirevision == after.layout.uirevision == "BTCUSDT/ETHUSDT-1s"


@pytest.mark.parametrize("name", TIME_SERIES_CHARTS)
def test_default_uirevision_is_stable_per_chart(name: str) -> None:
    build = TIME_SERIES_CHARTS[name]
    assert build(30, 0).layout.uirevision == build(45, 5).layout.uirevision


@pytest.mark.parametrize("name", TIME_SERIES_CHARTS)
def test_x_values_are_in_the_display_time_zone(name: str) -> None:
    fig = TIME_SERIES_CHARTS[name](30, 0, tz="Asia/Kolkata")
    x0 = first_x(fig, "Asia/Kolkata")
    assert (x0.hour, x0.minute) == (5, 30)  # the plotted wall clock is Kolkata's
    assert x0 == START  # same instant, only the display zone changed
    assert all(axis.type == "date" for axis in fig.select_xaxes())
    assert any("Asia/Kolkata" in (axis.title.text or "") for axis in fig.select_xaxes())


@pytest.mark.parametrize("name", TIME_SERIES_CHARTS)
def test_default_zone_is_utc(name: str) -> None:
    assert first_x(TIME_SERIES_CHARTS[name](30, 0)) == START


@pytest.mark.parametrize("name", TIME_SERIES_CHARTS)
def test_time_series_use_unified_hover_and_a_common_height(name: str) -> None:
    fig = TIME_SERIES_CHARTS[name](30, 0)
    assert fig.layout.hovermode == "x unified"
    assert 300 <= fig.layout.height <= 420


@pytest.mark.parametrize("name", [name for name in TIME_SERIES_CHARTS if name != "equity"])
@pytest.mark.parametrize("since", [0, 37, 79, 80])
def test_a_tail_holds_the_whole_figures_points_from_its_first_bar_and_the_same_layout(name: str, since: int) -> None:
    """What a chart update sends (``since``) is the whole figure's points from there on, unthinned,
    with the layout computed over every point (bands, ranges, crossings)."""
    build = TIME_SERIES_CHARTS[name]
    extra = {"threshold": 0.4} if name == "zscore" else {}  # threshold crossings to draw
    start = utc_index(80)[since] if since < 80 else utc_index(81)[80]
    whole = build(80, 4, max_points=10_000, tz="Asia/Kolkata", **extra)
    tail = build(80, 4, since=start, tz="Asia/Kolkata", **extra)
    assert tail.layout == whole.layout
    cut = charts.display_time(start, "Asia/Kolkata")
    parts = {trace.name: trace for trace in tail.data}
    assert len(parts) == len(tail.data) and set(parts) <= set(names(whole))
    for full in whole.data:
        keep = np.asarray(full.x, dtype=float) >= cut
        if full.name not in parts:  # a marker trace with no point in the tail
            assert not keep.any()
            continue
        part = parts[full.name]
        assert np.asarray(part.x).tolist() == np.asarray(full.x)[keep].tolist()
        for key in ("y", "customdata"):
            if getattr(full, key) is not None:
                np.testing.assert_array_equal(np.asarray(getattr(part, key), dtype=float),
                                              np.asarray(getattr(full, key), dtype=float)[keep])


@pytest.mark.parametrize("name", EMPTY_CALLS)
def test_empty_input_gives_a_no_data_figure(name: str) -> None:
    fig = EMPTY_CALLS[name]()
    assert isinstance(fig, go.Figure)
    assert has_no_data_note(fig)
    assert len(fig.data) == 0
    assert fig.layout.uirevision


@pytest.mark.parametrize("name", TIME_SERIES_CHARTS)
def test_long_input_is_downsampled_in_every_trace(name: str) -> None:
    fig = TIME_SERIES_CHARTS[name](20_000, 0, max_points=400)
    for trace in fig.data:
        assert len(trace.x) <= 400, trace.name


def test_the_input_keeps_its_utc_index() -> None:
    z = walk(30, 0, 0.0)
    charts.zscore_chart(z, tz="Asia/Kolkata")
    assert str(z.index.tz) == "UTC"


def test_figure_config() -> None:
    assert charts.FIGURE_CONFIG["scrollZoom"] is True
    assert charts.FIGURE_CONFIG["displaylogo"] is False
    assert {"lasso2d", "select2d"} <= set(charts.FIGURE_CONFIG["modeBarButtonsToRemove"])


# ----------------------------------------------------------------------------------------------
# Price chart
# ----------------------------------------------------------------------------------------------


def test_price_chart_normalised_rebases_to_100_with_volume_row() -> None:
    closes = closes_frame(50)
    closes.iloc[:3, 1] = np.nan  # ETH starts later: rebased at its first valid close
    fig = charts.price_chart(closes, volumes_frame(50))
    assert names(fig) == ["BTCUSDT", "ETHUSDT", "BTCUSDT volume", "ETHUSDT volume"]
    btc, eth, btc_vol, eth_vol = fig.data
    assert btc.y[0] == pytest.approx(100.0)
    assert eth.y[3] == pytest.approx(100.0)
    assert eth.y[10] == pytest.approx(closes["ETHUSDT"].iloc[10] / closes["ETHUSDT"].iloc[3] * 100)
    assert eth.customdata[10] == pytest.approx(closes["ETHUSDT"].iloc[10])  # real price in the hover
    # One filled step path per symbol: a bar per bar would be an SVG element per bar.
    assert all(isinstance(v, go.Scatter) and v.fill == "tozeroy" and v.line.shape == "hv" for v in (btc_vol, eth_vol))
    assert btc.yaxis == eth.yaxis == "y"
    assert btc_vol.yaxis == eth_vol.yaxis == "y2"
    assert btc.xaxis == "x" and btc_vol.xaxis == "x2" and fig.layout.xaxis.matches == "x2"  # shared x
    assert fig.layout.yaxis.title.text == "Price (rebased = 100)"
    assert "rebased" in fig.layout.title.text
    assert fig.layout.yaxis2.title.text.startswith("Volume")


def test_price_chart_dual_puts_the_second_symbol_on_yaxis2_in_quote_currency() -> None:
    closes = closes_frame(50)
    fig = charts.price_chart(closes, volumes_frame(50), mode="dual")
    by_name = {t.name: t for t in fig.data}
    assert by_name["BTCUSDT"].yaxis == "y"
    assert by_name["ETHUSDT"].yaxis == "y2"
    assert fig.layout.yaxis2.overlaying == "y"
    assert by_name["ETHUSDT"].y[0] == pytest.approx(closes["ETHUSDT"].iloc[0])  # not rebased
    assert "USDT" in fig.layout.yaxis.title.text and "USDT" in fig.layout.yaxis2.title.text


def test_price_chart_dual_falls_back_to_normalised_without_exactly_two_symbols() -> None:
    closes = closes_frame(20).assign(SOLUSDT=walk(20, 4, 150.0))
    fig = charts.price_chart(closes, mode="dual")
    assert names(fig) == ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
    assert {t.yaxis for t in fig.data} == {"y"}
    assert all(t.y[0] == pytest.approx(100.0) for t in fig.data)


def test_price_chart_without_volumes_has_one_row() -> None:
    fig = charts.price_chart(closes_frame(20))
    assert names(fig) == ["BTCUSDT", "ETHUSDT"]
    assert len(list(fig.select_xaxes())) == 1


def test_price_chart_marks_the_live_bar_in_the_display_zone() -> None:
    closes = closes_frame(30)
    open_start = closes.index[-1]
    fig = charts.price_chart(closes, volumes_frame(30), open_bar_start=open_start, tz="Asia/Kolkata")
    labels = [a for a in fig.layout.annotations if a.text == "live bar"]
    assert len(labels) == 1
    assert shown(labels[0].x, "Asia/Kolkata") == open_start
    bands = [s for s in fig.layout.shapes if s.type == "rect"]
    assert bands, "the forming bar is shaded"
    assert shown(bands[0].x0, "Asia/Kolkata") == open_start
    assert shown(bands[0].x1, "Asia/Kolkata") == open_start + pd.Timedelta(seconds=1)


def test_price_chart_has_no_live_marker_when_all_bars_are_closed() -> None:
    fig = charts.price_chart(closes_frame(30), volumes_frame(30))
    assert not [a for a in fig.layout.annotations if a.text == "live bar"]
    assert not fig.layout.shapes


# ----------------------------------------------------------------------------------------------
# Spread, z-score, hedge ratio, correlation
# ----------------------------------------------------------------------------------------------


def test_spread_chart_band_mean_and_spread() -> None:
    spread = walk(60, 5, 0.0)
    mean, std = spread.rolling(20).mean(), spread.rolling(20).std()
    fig = charts.spread_chart(spread, mean, std, k=1.5, window=20)
    assert names(fig) == ["upper band (mean + 1.5σ)", "lower band (mean − 1.5σ)", "rolling mean", "spread"]
    upper, lower, mid, line = fig.data
    assert lower.fill == "tonexty"
    assert upper.y[30] == pytest.approx(mean.iloc[30] + 1.5 * std.iloc[30])
    assert lower.y[30] == pytest.approx(mean.iloc[30] - 1.5 * std.iloc[30])
    assert np.isnan(mid.y[0])  # warm-up stays a gap, nothing invented
    assert np.allclose(line.y, spread.to_numpy())
    assert "window 20 bars" in fig.layout.title.text
    assert "quote currency" in fig.layout.yaxis.title.text


def test_zscore_chart_lines_titles_and_symmetric_range() -> None:
    z = pd.Series(np.sin(np.linspace(0, 12, 200)) * 3, index=utc_index(200))
    fig = charts.zscore_chart(z, threshold=2.0, window=60)
    assert fig.layout.title.text == "Z-score of spread (window 60 bars)"
    assert names(fig)[0] == "z-score"
    levels = sorted(s.y0 for s in fig.layout.shapes if s.type == "line")
    assert levels == [-2.0, 0.0, 2.0]
    assert [s for s in fig.layout.shapes if s.type == "rect"]  # regions beyond ±threshold shaded
    low, high = fig.layout.yaxis.range
    assert low == -high and high >= 3.0
    assert "σ" in fig.layout.yaxis.title.text


def test_zscore_threshold_crossings_are_marked_at_the_right_bars() -> None:
    values = [0.0, 1.0, 2.5, 3.0, 1.0, -2.1, -2.5, -1.0, 2.0, 2.01, np.nan, 2.2, 0.0]
    z = pd.Series(values, index=utc_index(len(values), "1min"))
    fig = charts.zscore_chart(z, threshold=2.0, tz="Asia/Kolkata")
    up = next(t for t in fig.data if t.name == "crossed above +2")
    down = next(t for t in fig.data if t.name == "crossed below −2")
    # 2.5 crosses up, -2.1 crosses down, 2.01 crosses (2.0 is not beyond); 2.2 follows a NaN: not a crossing.
    assert [shown(x, "Asia/Kolkata") for x in up.x] == list(z.index[[2, 9]])
    assert [shown(x, "Asia/Kolkata") for x in down.x] == list(z.index[[5]])
    assert list(up.y) == [2.5, 2.01] and list(down.y) == [-2.1]
    assert (up.marker.symbol, down.marker.symbol) == ("triangle-up", "triangle-down")


def test_zscore_without_crossings_has_no_crossing_trace() -> None:
    fig = charts.zscore_chart(pd.Series([0.1, -0.5, 1.9], index=utc_index(3)), threshold=2.0)
    assert names(fig) == ["z-score"]


def test_zscore_alerts_are_markers_with_hover_text() -> None:
    z = pd.Series([0.0, 2.5, 1.0, -2.4], index=utc_index(4))
    alerts = pd.DataFrame({"value": [2.5, -2.4], "message": ["z above 2.0", "z below -2.0"]}, index=z.index[[1, 3]])
    fig = charts.zscore_chart(z, alerts=alerts, tz="Asia/Kolkata")
    trace = next(t for t in fig.data if t.name == "alerts")
    assert trace.mode == "markers"
    assert list(trace.hovertext) == ["z above 2.0", "z below -2.0"]
    assert list(trace.y) == [2.5, -2.4]
    assert shown(trace.x[0], "Asia/Kolkata") == z.index[1]


def test_zscore_alerts_without_message_still_draw() -> None:
    z = pd.Series([0.0, 2.5], index=utc_index(2))
    fig = charts.zscore_chart(z, alerts=pd.DataFrame({"value": [2.5]}, index=z.index[1:]))
    assert "alerts" in names(fig)


def test_hedge_ratio_series_frame_and_static_line() -> None:
    beta = walk(40, 1, 1.0) / 100
    fig = charts.hedge_ratio_chart(beta, static_beta=0.0123, method_label="Rolling OLS", window=60)
    assert names(fig) == ["β (Rolling OLS)"]
    assert "Rolling OLS" in fig.layout.title.text and "window 60 bars" in fig.layout.title.text
    static = [s for s in fig.layout.shapes if s.type == "line"]
    assert len(static) == 1 and static[0].y0 == pytest.approx(0.0123) and static[0].line.dash == "dash"
    assert any("0.0123" in a.text for a in fig.layout.annotations)

    both = charts.hedge_ratio_chart(pd.DataFrame({"rolling OLS": beta, "Kalman": beta * 1.01}))
    assert names(both) == ["rolling OLS", "Kalman"]
    assert not both.layout.shapes


def test_correlation_chart_range_and_title() -> None:
    corr = pd.Series(np.linspace(-0.9, 0.9, 50), index=utc_index(50))
    fig = charts.correlation_chart(corr, window=30, label="BTCUSDT vs ETHUSDT")
    assert names(fig) == ["correlation"]
    assert tuple(fig.layout.yaxis.range) == (-1, 1)
    assert "window 30 bars" in fig.layout.title.text and "returns" in fig.layout.title.text
    assert "BTCUSDT vs ETHUSDT" in fig.layout.title.text


# ----------------------------------------------------------------------------------------------
# Heatmap, lead–lag, equity
# ----------------------------------------------------------------------------------------------


def test_correlation_heatmap() -> None:
    matrix = pd.DataFrame([[1.0, 0.83456, -0.2], [0.83456, 1.0, np.nan], [-0.2, np.nan, 1.0]],
                          index=["BTCUSDT", "ETHUSDT", "SOLUSDT"], columns=["BTCUSDT", "ETHUSDT", "SOLUSDT"])
    fig = charts.correlation_heatmap(matrix, revision="r1")
    (heat,) = fig.data
    assert isinstance(heat, go.Heatmap)
    assert (heat.zmin, heat.zmax) == (-1.0, 1.0)
    assert heat.colorscale == go.Heatmap(colorscale="RdBu").colorscale
    assert heat.text[0][1] == "0.83" and heat.text[0][2] == "-0.20" and heat.text[1][2] == ""
    assert list(heat.x) == list(heat.y) == ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
    assert fig.layout.uirevision == "r1"


def test_lead_lag_chart_highlights_best_lag_and_states_the_sign_convention() -> None:
    lags = np.arange(-3, 4)
    corr = np.array([0.0, 0.1, 0.2, 0.3, 0.5, 0.2, 0.1])
    fig = charts.lead_lag_chart(lags, corr, best_lag=1, bar_seconds=60, y_name="BTCUSDT", x_name="ETHUSDT",
                                revision="r")
    (bars,) = fig.data
    assert bars.name == "correlation by lag" and isinstance(bars, go.Bar)
    colors = list(bars.marker.color)
    assert len(set(colors)) == 2 and colors.count(colors[4]) == 1  # only lag +1 stands out
    assert fig.layout.xaxis.title.text == "lag (bars; positive = BTCUSDT leads ETHUSDT)"
    assert "+1 bars" in fig.layout.title.text and "+60 s" in fig.layout.title.text
    assert list(bars.customdata) == list(lags * 60)
    assert fig.layout.uirevision == "r"

    custom = charts.lead_lag_chart(lags, corr, positive_means="X follows Y")
    assert custom.layout.xaxis.title.text == "lag (bars; positive = X follows Y)"


def test_lead_lag_rejects_mismatched_lengths() -> None:
    with pytest.raises(ValueError, match="equal length"):
        charts.lead_lag_chart(np.arange(3), np.zeros(4))


def test_equity_chart_shades_drawdown() -> None:
    equity = pd.Series([0.0, 10.0, 4.0, 12.0, 12.0], index=utc_index(5))
    fig = charts.equity_chart(equity)
    assert names(fig) == ["running peak", "equity"]
    assert list(fig.data[0].y) == [0.0, 10.0, 10.0, 12.0, 12.0]
    assert fig.data[1].fill == "tonexty"
    assert "max drawdown 6.00" in fig.layout.title.text and "quote currency" in fig.layout.title.text
    assert names(charts.equity_chart(equity, drawdown=False)) == ["equity"]


# ----------------------------------------------------------------------------------------------
# Downsampling
# ----------------------------------------------------------------------------------------------


def test_a_day_of_seconds_is_thinned_with_extremes_kept_exactly() -> None:
    n = 86_400
    z = walk(n, 11, 0.0) / 50
    fig = charts.zscore_chart(z, threshold=100.0)  # no crossings: one trace
    (trace,) = fig.data
    assert len(trace.x) <= 4000
    assert np.nanmax(trace.y) == z.max() and np.nanmin(trace.y) == z.min()
    xs = pd.DatetimeIndex([shown(x) for x in trace.x])
    assert xs.is_monotonic_increasing and xs.is_unique
    assert xs[0] == z.index[0] and xs[-1] == z.index[-1]


def test_minmax_indices_on_a_long_series() -> None:
    values = walk(86_400, 3).to_numpy(copy=True)
    values[1000:1500] = np.nan
    kept = minmax_indices(values, 4000)
    assert kept.size <= 4000
    assert np.all(np.diff(kept) > 0)  # sorted and unique
    assert np.nanargmin(values) in kept and np.nanargmax(values) in kept
    assert kept[0] == 0 and kept[-1] == values.size - 1


def test_short_series_are_untouched() -> None:
    values = np.arange(100.0)
    assert np.array_equal(minmax_indices(values, 100), np.arange(100))
    series = walk(50)
    assert downsample(series, 50) is series


def test_all_nan_bucket_keeps_its_ends() -> None:
    values = np.full(100, np.nan)
    values[:10] = np.arange(10.0)
    kept = minmax_indices(values, 8)  # two buckets of 50
    assert kept.size <= 8
    assert {0, 9, 49, 50, 99} <= set(kept.tolist())


def test_minmax_indices_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="max_points"):
        minmax_indices(np.arange(10.0), 3)
    with pytest.raises(ValueError, match="one-dimensional"):
        minmax_indices(np.zeros((3, 3)), 4)


def test_downsample_frame_keeps_each_columns_extremes_and_the_bound() -> None:
    n = 50_000
    rng = np.random.default_rng(9)
    frame = pd.DataFrame({"a": rng.standard_normal(n), "b": rng.standard_normal(n).cumsum(),
                          "c": rng.standard_normal(n)}, index=utc_index(n))
    thinned = downsample(frame, 1000)
    assert isinstance(thinned, pd.DataFrame) and list(thinned.columns) == ["a", "b", "c"]
    assert len(thinned) <= 1000
    assert thinned.index.is_monotonic_increasing and thinned.index.is_unique
    for column in frame:
        assert thinned[column].max() == frame[column].max()
        assert thinned[column].min() == frame[column].min()
    series = downsample(frame["b"], 1000)
    assert isinstance(series, pd.Series) and len(series) <= 1000


@settings(max_examples=200, deadline=None)
@given(values=hnp.arrays(np.float64, st.integers(1, 600),
                         elements=st.floats(-1e6, 1e6) | st.just(np.nan)),
       max_points=st.integers(4, 200))
def test_minmax_indices_property(values: np.ndarray, max_points: int) -> None:
    kept = minmax_indices(values, max_points)
    assert kept.dtype.kind == "i"
    assert np.all(np.diff(kept) > 0)  # sorted, unique
    assert kept[0] >= 0 and kept[-1] < values.size
    if values.size <= max_points:
        assert np.array_equal(kept, np.arange(values.size))
    else:
        assert kept.size <= max_points
        assert kept[0] == 0 and kept[-1] == values.size - 1
    if not np.isnan(values).all():
        assert np.nanargmin(values) in kept
        assert np.nanargmax(values) in kept
