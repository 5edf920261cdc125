"""Bars: batch resampler, incremental BarBuilder (checked against each other on real ticks), alignment."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from analytics.bars import Bar, BarBuilder, align_bars, bars_to_frame, rebar, resample_ticks
from analytics.errors import InsufficientDataError
from tests.shared_data import TICKS_NDJSON, require

T0 = 1_765_788_000_000  # 2025-12-15T08:40:00Z, on every grid used below


@pytest.fixture(scope="module")
def real_ticks() -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Real BTCUSDT/ETHUSDT futures trades by symbol, without the 98 price-0/size-0 placeholders."""
    rows = [json.loads(line) for line in require(TICKS_NDJSON).read_text().splitlines() if line.strip()]
    placeholders = [row for row in rows if row["price"] == 0 or row["size"] == 0]
    assert len(placeholders) == 98
    by_symbol = {}
    for symbol in ("BTCUSDT", "ETHUSDT"):
        trades = [row for row in rows if row["symbol"] == symbol and row["price"] > 0 and row["size"] > 0]
        # "2025-12-15T08:43:15.300Z": numpy parses the naive form as UTC at ms resolution.
        ts = np.array([row["ts"].removesuffix("Z") for row in trades], dtype="datetime64[ms]").astype(np.int64)
        by_symbol[symbol] = (ts, np.array([r["price"] for r in trades]), np.array([r["size"] for r in trades]))
    return by_symbol


@pytest.mark.parametrize("symbol", ["BTCUSDT", "ETHUSDT"])
@pytest.mark.parametrize("interval_ms", [250, 1_000, 5_000, 60_000])
def test_builder_equals_batch_resampler_on_real_ticks(real_ticks, symbol: str, interval_ms: int) -> None:
    ts, price, qty = real_ticks[symbol]
    assert np.all(np.diff(ts) >= 0)  # the file's promise: per symbol, time never goes backwards
    batch = resample_ticks(ts, price, qty, interval_ms)

    builder = BarBuilder(interval_ms)
    closed: list[Bar] = []
    for t, p, q in zip(ts.tolist(), price.tolist(), qty.tolist(), strict=True):
        closed.extend(builder.update(t, p, q))
    last_open = builder.open_bar
    closed.extend(builder.advance(int(ts[-1]) + interval_ms))
    incremental = bars_to_frame(closed)

    assert builder.late_ticks == 0
    assert builder.open_bar is None
    assert closed[-1] == last_open
    assert batch["trades"].sum() == len(ts)
    exact = ["open", "high", "low", "close", "trades"]
    pd.testing.assert_frame_equal(incremental[exact], batch[exact], check_exact=True)
    # Sums of quantities differ only in summation order (numpy's reduceat vs running sums).
    pd.testing.assert_frame_equal(incremental[["volume", "vwap"]], batch[["volume", "vwap"]], rtol=1e-12)


def test_resample_layout_and_values() -> None:
    ts = np.array([T0 + 10, T0 + 400, T0 + 999, T0 + 3_000, T0 + 3_500])
    price = np.array([10.0, 12.0, 9.0, 20.0, 21.0])
    qty = np.array([1.0, 2.0, 1.0, 0.5, 0.5])
    bars = resample_ticks(ts, price, qty, 1_000)

    assert list(bars.columns) == ["open", "high", "low", "close", "volume", "trades", "vwap"]
    assert str(bars.index.dtype) == "datetime64[ms, UTC]"
    assert bars.index.name == "start"
    # Empty intervals (T0+1s, T0+2s) produce no rows.
    assert list(bars.index.asi8) == [T0, T0 + 3_000]
    first = bars.iloc[0]
    assert (first["open"], first["high"], first["low"], first["close"]) == (10.0, 12.0, 9.0, 9.0)
    assert first["volume"] == 4.0 and first["trades"] == 3
    assert first["vwap"] == pytest.approx((10 + 24 + 9) / 4)
    assert bars["trades"].dtype == np.int64


def test_resample_sorts_ticks_stably_by_time() -> None:
    ts = np.array([T0 + 500, T0 + 100, T0 + 100, T0 + 900])
    price = np.array([3.0, 1.0, 2.0, 4.0])
    bars = resample_ticks(ts, price, np.ones(4), 1_000)
    # Sorted: 1.0 (t=100, first seen), 2.0 (t=100), 3.0, 4.0.
    assert (bars["open"].iloc[0], bars["close"].iloc[0]) == (1.0, 4.0)


def test_resample_zero_quantity_bar_has_nan_vwap_and_empty_input_keeps_layout() -> None:
    bars = resample_ticks(np.array([T0]), np.array([5.0]), np.array([0.0]), 1_000)
    assert math.isnan(bars["vwap"].iloc[0])
    empty = resample_ticks(np.array([], dtype=np.int64), np.array([]), np.array([]), 1_000)
    assert empty.empty and list(empty.columns) == list(bars.columns)


@pytest.mark.parametrize(
    ("ts", "price", "qty", "message"),
    [
        (np.array([T0]), np.array([0.0]), np.array([1.0]), "price must be > 0"),
        (np.array([T0]), np.array([1.0]), np.array([-1.0]), "qty must be >= 0"),
        (np.array([T0]), np.array([np.nan]), np.array([1.0]), "price contains NaN"),
        (np.array([T0 + 0.5]), np.array([1.0]), np.array([1.0]), "integer epoch milliseconds"),
        (np.array([T0, T0]), np.array([1.0]), np.array([1.0]), "same length"),
    ],
)
def test_resample_rejects_bad_ticks(ts, price, qty, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        resample_ticks(ts, price, qty, 1_000)


def test_builder_closes_on_next_interval_and_skips_empty_intervals() -> None:
    builder = BarBuilder(1_000)
    assert builder.open_bar is None
    assert builder.update(T0 + 100, 10.0, 1.0) == []
    assert builder.update(T0 + 900, 11.0, 1.0) == []
    assert builder.open_bar == Bar(T0, 10.0, 11.0, 10.0, 11.0, 2.0, 2, 10.5)
    # Next trade three intervals later closes the open bar; nothing for the two empty ones.
    closed = builder.update(T0 + 3_200, 12.0, 2.0)
    assert closed == [Bar(T0, 10.0, 11.0, 10.0, 11.0, 2.0, 2, 10.5)]
    assert builder.open_bar == Bar(T0 + 3_000, 12.0, 12.0, 12.0, 12.0, 2.0, 1, 12.0)


def test_builder_advance_closes_exactly_when_interval_has_passed() -> None:
    builder = BarBuilder(1_000)
    builder.update(T0 + 10, 10.0, 1.0)
    assert builder.advance(T0 + 999) == []
    assert builder.advance(T0 + 1_000) == [Bar(T0, 10.0, 10.0, 10.0, 10.0, 1.0, 1, 10.0)]
    assert builder.open_bar is None
    assert builder.advance(T0 + 5_000) == []


def test_builder_folds_out_of_order_trades_within_open_bar_like_the_batch_sort() -> None:
    ts = [T0 + 500, T0 + 200, T0 + 800, T0 + 700]
    price = [5.0, 4.0, 6.0, 3.0]
    builder = BarBuilder(1_000)
    for t, p in zip(ts, price, strict=True):
        builder.update(t, p, 1.0)
    bar = builder.open_bar
    assert bar is not None
    assert (bar.open, bar.high, bar.low, bar.close) == (4.0, 6.0, 3.0, 6.0)
    batch = resample_ticks(np.array(ts), np.array(price), np.ones(4), 1_000)
    pd.testing.assert_frame_equal(bars_to_frame([bar]), batch)


def test_builder_counts_and_ignores_ticks_older_than_the_open_bar() -> None:
    builder = BarBuilder(1_000)
    builder.update(T0 + 100, 10.0, 1.0)
    [first] = builder.update(T0 + 1_100, 11.0, 1.0)
    assert builder.update(T0 + 999, 99.0, 5.0) == []  # belongs to the emitted bar
    assert builder.late_ticks == 1
    [second] = builder.advance(T0 + 2_000)
    assert builder.update(T0 + 1_500, 99.0, 5.0) == []  # its bar was closed by advance()
    assert builder.late_ticks == 2
    assert first.close == 10.0 and second == Bar(T0 + 1_000, 11.0, 11.0, 11.0, 11.0, 1.0, 1, 11.0)


@pytest.mark.parametrize(("price", "qty"), [(0.0, 1.0), (-1.0, 1.0), (math.nan, 1.0), (1.0, -0.1), (1.0, math.inf)])
def test_builder_rejects_invalid_trades(price: float, qty: float) -> None:
    with pytest.raises(ValueError, match="invalid trade"):
        BarBuilder(1_000).update(T0, price, qty)


def test_builder_rejects_bad_interval() -> None:
    with pytest.raises(ValueError, match="interval_ms must be at least 1"):
        BarBuilder(0)


def frame(starts_ms: list[int], closes: list[float]) -> pd.DataFrame:
    n = len(starts_ms)
    return resample_ticks(np.array(starts_ms), np.array(closes), np.ones(n), 1_000)


def test_align_carries_closes_forward_flags_fills_and_drops_leading_bars() -> None:
    a = frame([T0, T0 + 1_000, T0 + 3_000, T0 + 5_000], [1.0, 2.0, 3.0, 4.0])
    b = frame([T0 + 1_000, T0 + 2_000, T0 + 5_000], [10.0, 20.0, 50.0])
    aligned = align_bars({"A": a, "B": b}, 1_000)

    # Starts when both have traded (T0+1s); T0+4s had no trade at all, so it is absent.
    expected_index = [T0 + 1_000, T0 + 2_000, T0 + 3_000, T0 + 5_000]
    assert list(aligned.index.asi8) == expected_index
    assert aligned.symbols == ("A", "B")
    assert aligned.closes["A"].tolist() == [2.0, 2.0, 3.0, 4.0]
    assert aligned.closes["B"].tolist() == [10.0, 20.0, 20.0, 50.0]
    assert aligned.filled["A"].tolist() == [False, True, False, False]
    assert aligned.filled["B"].tolist() == [False, False, True, False]
    assert aligned.volumes["B"].tolist() == [1.0, 1.0, 0.0, 1.0]
    assert aligned.trades["A"].tolist() == [1, 0, 1, 1]
    assert aligned.trades["A"].dtype == np.int64
    per_symbol = aligned.symbol("B")
    assert list(per_symbol.columns) == ["close", "volume", "trades", "filled"]
    assert per_symbol["close"].tolist() == [10.0, 20.0, 20.0, 50.0]


def test_align_real_ticks_one_second(real_ticks) -> None:
    bars = {symbol: resample_ticks(*ticks, 1_000) for symbol, ticks in real_ticks.items()}
    aligned = align_bars(bars, 1_000)

    assert aligned.index[0] == max(frame.index[0] for frame in bars.values())
    for symbol, own in bars.items():
        traded = own.loc[aligned.index[0] :]
        # Every traded bar is kept with its own close, volume and trade count ...
        assert not aligned.filled.loc[traded.index, symbol].any()
        pd.testing.assert_series_equal(aligned.closes.loc[traded.index, symbol], traded["close"], check_names=False)
        assert aligned.trades.loc[traded.index, symbol].tolist() == traded["trades"].tolist()
        # ... and every other row carries the previous close with nothing traded.
        filled = aligned.filled[symbol]
        assert (aligned.volumes[symbol][filled] == 0).all() and (aligned.trades[symbol][filled] == 0).all()
        carried = aligned.closes[symbol].shift(1)[filled]
        pd.testing.assert_series_equal(aligned.closes[symbol][filled], carried)
    assert not aligned.filled.all(axis=1).any()  # no row where neither traded
    assert aligned.filled["BTCUSDT"].sum() > 0  # BTC trades less often: some seconds are filled


def test_align_rejects_bad_frames() -> None:
    good = frame([T0], [1.0])
    with pytest.raises(ValueError, match="bars_by_symbol is empty"):
        align_bars({}, 1_000)
    with pytest.raises(ValueError, match="not on the 60000 ms grid"):
        align_bars({"A": frame([T0 + 1_000], [1.0])}, 60_000)
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['trades'\]"):
        align_bars({"A": good.drop(columns="trades")}, 1_000)
    with pytest.raises(ValueError, match="UTC DatetimeIndex"):
        align_bars({"A": good.tz_convert(None)}, 1_000)
    with pytest.raises(InsufficientDataError, match="B bars: needs 1 observation, got 0"):
        align_bars({"A": good, "B": good.iloc[:0]}, 1_000)
    with pytest.raises(ValueError, match="unknown symbol 'C'"):
        align_bars({"A": good}, 1_000).symbol("C")


@pytest.mark.parametrize("symbol", ["BTCUSDT", "ETHUSDT"])
@pytest.mark.parametrize("interval_ms", [5_000, 60_000, 300_000])
def test_rebar_of_1s_bars_equals_direct_resampling(real_ticks, symbol: str, interval_ms: int) -> None:
    ts, price, qty = real_ticks[symbol]
    coarse = rebar(resample_ticks(ts, price, qty, 1_000), interval_ms)
    direct = resample_ticks(ts, price, qty, interval_ms)
    pd.testing.assert_frame_equal(coarse, direct, check_exact=False, rtol=1e-12)


def test_rebar_handles_zero_volume_bars_and_empty_input() -> None:
    silent = Bar(0, 10.0, 11.0, 9.0, 10.5, 0.0, 1, math.nan)  # one zero-quantity trade: VWAP undefined
    bars = bars_to_frame([silent, Bar(1_000, 10.5, 12.0, 10.0, 11.0, 2.0, 1, 11.0)])
    out = rebar(bars, 60_000)
    assert len(out) == 1 and out["vwap"].iloc[0] == 11.0 and out["high"].iloc[0] == 12.0 and out["trades"].iloc[0] == 2
    assert rebar(bars.iloc[:0], 60_000).empty
