"""Dashboard logic without Streamlit: pair analytics, live z-score, bars stitching, exports, tests panel."""

from __future__ import annotations

import io
import math

import numpy as np
import pandas as pd
import pytest

from analytics import adf, align_bars, engle_granger, resample_ticks, rolling_hedge, rolling_zscore
from config import Settings
from domain import Regression
from ingestion.simulated import SimulatedSource
from pairs.bars import BarHistory, load_pair_bars
from pairs.compute import Analytic, Needs, PairParams, compute_pair, live_zscore, pair_spread_now
from pairs.stats import run_tests, symbol_summary
from records.safe_csv import neutralise_text, to_csv_bytes
from service import Service
from storage.sqlite.ticks import SqliteTickStore
from testkit.sources import ListSource
from testkit.waiting import eventually
from ui.export import analytics_table, minute_table, ohlcv_table
from ui.labels import needs_text, verdict

START_MS = 1_765_000_000_000


@pytest.fixture(scope="module")
def sim_closes() -> pd.DataFrame:
    """One simulated hour of BTC/ETH on 1 s bars, aligned."""
    trades = list(SimulatedSource(["BTCUSDT", "ETHUSDT"], seed=11, start_ms=START_MS).generate(3600))
    bars = {}
    for symbol in ("BTCUSDT", "ETHUSDT"):
        mine = [t for t in trades if t.symbol == symbol]
        bars[symbol] = resample_ticks(np.array([t.ts_ms for t in mine]), np.array([t.price for t in mine]),
                                      np.array([t.qty for t in mine]), 1_000)
    return align_bars(bars, 1_000).closes


def test_rolling_ols_pair_equals_the_library(sim_closes):
    pair = compute_pair(sim_closes, PairParams("ETHUSDT", "BTCUSDT", window=60))
    expected = rolling_hedge(sim_closes["ETHUSDT"], sim_closes["BTCUSDT"], 60)
    pd.testing.assert_series_equal(pair.beta, expected.beta, check_names=False)
    spread = sim_closes["ETHUSDT"] - expected.beta * sim_closes["BTCUSDT"] - expected.alpha
    pd.testing.assert_series_equal(pair.zscore, rolling_zscore(spread, 60), check_names=False)
    assert not pair.needs
    assert -1 <= pair.latest["correlation"] <= 1
    assert pair.half_life is not None and pair.half_life.mean_reverting


@pytest.mark.parametrize("regression", [Regression.STATIC_OLS, Regression.HUBER, Regression.THEIL_SEN])
def test_in_sample_fits_give_one_beta(sim_closes, regression):
    pair = compute_pair(sim_closes, PairParams("ETHUSDT", "BTCUSDT", window=60, regression=regression))
    assert pair.beta.nunique() == 1 and pair.zscore is not None
    assert (pair.r_squared is not None) == (regression is Regression.STATIC_OLS)


def test_kalman_has_no_look_ahead(sim_closes):
    params = PairParams("ETHUSDT", "BTCUSDT", window=60, regression=Regression.KALMAN, log_prices=True)
    full = compute_pair(sim_closes, params)
    prefix = compute_pair(sim_closes.iloc[:1000], params)
    np.testing.assert_allclose(prefix.beta.to_numpy(), full.beta.iloc[:1000].to_numpy(), rtol=1e-12)
    np.testing.assert_allclose(prefix.zscore.to_numpy(), full.zscore.iloc[:1000].to_numpy(), rtol=1e-9,
                               equal_nan=True)


def test_short_history_says_how_much_more_is_needed(sim_closes):
    pair = compute_pair(sim_closes.iloc[:30], PairParams("ETHUSDT", "BTCUSDT", window=60))
    messages = [needs_text(n, 1_000) for n in pair.needs]
    assert "Hedge ratio: needs 30 more bars (≈ 30 s)" in messages
    assert any(m.startswith("Rolling correlation: needs 31 more bars") for m in messages)
    assert pair.zscore is None and pair.beta is None
    warming = compute_pair(sim_closes.iloc[:100], PairParams("ETHUSDT", "BTCUSDT", window=60))
    # Rolling β is valid from bar 60, so its spread fills a 60-bar z window at bar 119.
    assert [needs_text(n, 60_000) for n in warming.needs if n.what is Analytic.ZSCORE] == [
        "Z-score: needs 19 more bars (≈ 19 min)"]


def test_bad_params_are_named():
    with pytest.raises(ValueError, match="two different symbols"):
        PairParams("BTCUSDT", "BTCUSDT")
    with pytest.raises(ValueError, match="between 10 and 200"):
        PairParams("A1", "B1", window=5)


def test_live_zscore_matches_the_charted_value_when_the_bar_closes(sim_closes):
    pair = compute_pair(sim_closes, PairParams("ETHUSDT", "BTCUSDT", window=60, regression=Regression.STATIC_OLS))
    beta, alpha = pair.latest["beta"], pair.latest["alpha"]
    now = pair_spread_now(sim_closes["ETHUSDT"].iloc[-1], sim_closes["BTCUSDT"].iloc[-1], beta, alpha, False)
    z = live_zscore(pair.spread.iloc[-60:-1].to_numpy(), now)
    assert z == pytest.approx(pair.zscore.iloc[-1], rel=1e-9)
    assert math.isnan(live_zscore(np.array([1.0, 1.0]), 1.0))


@pytest.mark.parametrize("value", [0.1, 89_766.4, 3_139.77, 1e-8 / 3, 1e12 / 7])
@pytest.mark.parametrize("window", [10, 60])
def test_live_zscore_of_a_window_that_does_not_move_is_nan(value, window):
    # numpy's mean of sixty 3139.77 is not exactly 3139.77: a std of ~1e-13 made z about 1.
    assert math.isnan(live_zscore(np.full(window - 1, value), value))


def flat_stretch_closes() -> pd.DataFrame:
    """1 s bars: BTC ticks up or down every bar except bars 119-179; ETH moves too except bars 139-179."""
    rng = np.random.default_rng(21)
    btc = 89_766.4 + 0.1 * np.cumsum(rng.choice([-1, 1], 240))
    eth = np.round(3_139.77 + 0.035 * (btc - 89_766.4) + 0.01 * np.cumsum(rng.choice([-1, 1], 240)), 2)
    btc[120:180], eth[140:180] = btc[119], eth[139]
    index = pd.date_range("2025-12-15 08:43", periods=240, freq="1s", tz="UTC")
    return pd.DataFrame({"BTCUSDT": btc, "ETHUSDT": eth}, index=index)


def test_pair_analytics_of_flat_stretches_are_nan_or_exact():
    closes, window = flat_stretch_closes(), 10
    rolling = compute_pair(closes, PairParams("ETHUSDT", "BTCUSDT", window=window))
    # BTC's 10-bar window is flat at bars 128-179: no hedge ratio, so no spread or z-score there.
    assert rolling.beta.iloc[128:180].isna().all() and rolling.zscore.iloc[128:180].isna().all()
    assert rolling.beta.iloc[window - 1 : 128].notna().all() and rolling.beta.iloc[180:].notna().all()
    # With one in-sample beta, both legs flat (bars 139-179) is a flat spread at bars 148-179: its
    # band has zero width around the spread itself, and its z-score is undefined.
    static = compute_pair(closes, PairParams("ETHUSDT", "BTCUSDT", window=window, regression=Regression.STATIC_OLS))
    flat = slice(148, 180)
    assert (static.spread_std.iloc[flat] == 0.0).all()
    assert (static.spread_mean.iloc[flat] == static.spread.iloc[flat]).all()
    assert static.zscore.iloc[flat].isna().all()
    moving = slice(window - 1, 148)
    assert (static.spread_std.iloc[moving] > 0).all() and static.zscore.iloc[moving].notna().all()


def test_stitches_database_history_to_live_bars_without_overlap(tmp_path):
    """Ticks stored by an earlier run + live ticks now: one continuous bar series, the open bar marked."""
    source = SimulatedSource(["BTCUSDT", "ETHUSDT"], seed=3, start_ms=START_MS)
    trades = list(source.generate(600))
    history, live = trades[: len(trades) // 2], trades[len(trades) // 2:]
    db = tmp_path / "sim.db"
    with SqliteTickStore(db) as store:
        store.write_batch(history)
    service = Service.start(Settings.of(source="simulated", db=db), source=ListSource(live))
    engine = service.engine
    eventually(lambda: engine.trades == len(live), timeout=20)
    cache = BarHistory(service.site)
    bars = load_pair_bars(engine, cache, ["BTCUSDT", "ETHUSDT"], 1_000, 3_600_000)
    assert service.stop()
    for symbol in ("BTCUSDT", "ETHUSDT"):
        mine = [t for t in trades if t.symbol == symbol]
        expected = resample_ticks(np.array([t.ts_ms for t in mine]), np.array([t.price for t in mine]),
                                  np.array([t.qty for t in mine]), 1_000)
        got = bars.by_symbol[symbol]
        assert got.index.is_unique and got.index.is_monotonic_increasing
        pd.testing.assert_frame_equal(got, expected, check_exact=False, rtol=1e-12)
    assert bars.open_bar_start == bars.aligned.index[-1]
    assert len(bars.closes(closed_only=True)) == len(bars.aligned.closes) - 1
    # Liquidity filter: a bar where either leg traded fewer than 5 times is left out.
    thin = (bars.aligned.trades < 5).any(axis=1)
    assert len(bars.closes(min_trades=5)) == len(bars.aligned.closes) - thin.sum() == \
        len(bars.aligned.closes) - bars.illiquid_bars(5, 0.0)
    assert (bars.aligned.volumes.loc[bars.closes(min_volume=0.5).index] >= 0.5).all().all()
    minute = load_pair_bars(engine, cache, ["BTCUSDT", "ETHUSDT"], 60_000, 3_600_000)
    minutes = {t.ts_ms // 60_000 for t in trades if t.symbol == "BTCUSDT"}
    assert len(minute.by_symbol["BTCUSDT"]) == len(minutes)
    assert cache.loads == 2  # history read once per symbol, not once per refresh


def test_csv_export_neutralises_formulas_and_keeps_numbers():
    frame = pd.DataFrame(
        {"note": ["=HYPERLINK(\"http://x\")", "+1", "-2", "@SUM(A1)", "\tx", "\rx", "plain"],
         "value": [-0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0]},
        index=pd.date_range("2025-12-15 08:43", periods=7, freq="1min", tz="UTC"),
    )
    text = to_csv_bytes(frame).decode()
    back = pd.read_csv(io.StringIO(text), keep_default_na=False)
    assert list(back["note"]) == ["'=HYPERLINK(\"http://x\")", "'+1", "'-2", "'@SUM(A1)", "'\tx", "'\rx", "plain"]
    assert back["value"].tolist() == [-0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0]  # numbers stay numbers
    assert back["time_utc"][0] == "2025-12-15T08:43:00.000Z"
    assert neutralise_text(-1.5) == -1.5
    hostile_header = to_csv_bytes(pd.DataFrame({"=cmd": [1]})).decode().splitlines()[0]
    assert hostile_header == "time_utc,'=cmd"


def test_tables_have_the_promised_columns(sim_closes):
    params = PairParams("ETHUSDT", "BTCUSDT", window=20)
    minute_closes = sim_closes[sim_closes.index.second == 0]
    from pairs.bars import _pair_bars

    frames = {s: pd.DataFrame({"open": minute_closes[s], "high": minute_closes[s], "low": minute_closes[s],
                               "close": minute_closes[s], "volume": 1.0, "trades": np.int64(3),
                               "vwap": minute_closes[s]}).set_axis(minute_closes.index.rename("start"))
              for s in ("ETHUSDT", "BTCUSDT")}
    bars = _pair_bars(frames, 60_000, 0)
    pair = compute_pair(bars.aligned.closes, params)
    table = minute_table(bars, pair)
    assert list(table.columns) == ["ETHUSDT_close", "BTCUSDT_close", "ETHUSDT_return", "BTCUSDT_return", "beta",
                                   "spread", "zscore", "return_correlation", "ETHUSDT_volume", "BTCUSDT_volume",
                                   "ETHUSDT_trades", "BTCUSDT_trades"]
    assert len(table) == len(minute_closes) and table["ETHUSDT_trades"].dtype == np.int64
    assert "spread_std" in analytics_table(pair).columns
    assert "BTCUSDT_vwap" in ohlcv_table(bars).columns


def test_tests_panel_matches_the_library(sim_closes):
    pair = compute_pair(sim_closes, PairParams("ETHUSDT", "BTCUSDT", window=60, regression=Regression.STATIC_OLS))
    report = run_tests(pair)
    reference = adf(pair.spread.dropna())
    assert report.adf.statistic == reference.statistic and report.adf.pvalue == reference.pvalue
    eg = engle_granger(sim_closes["ETHUSDT"], sim_closes["BTCUSDT"])
    assert report.engle_granger.pvalue == eg.pvalue
    assert verdict(0.003, "yes", "no") == "p = 0.0030 < 0.01: yes."
    assert verdict(0.5, "yes", "no") == "p = 0.5000 ≥ 0.10: no."


def test_symbol_summary():
    bars = pd.DataFrame({"open": [100.0, 101.0], "high": [101.0, 102.0], "low": [99.0, 100.0],
                         "close": [101.0, 102.0], "volume": [2.0, 3.0], "trades": [4, 5], "vwap": [100.5, 101.5]})
    summary = symbol_summary("BTCUSDT", bars, 1_000)
    assert summary.last == 102.0 and summary.return_pct == pytest.approx(2.0)
    assert summary.volume == 5.0 and summary.trades == 9 and math.isnan(summary.volatility_ann_pct)
    assert symbol_summary("BTCUSDT", bars.iloc[:0], 1_000) is None


def test_a_need_the_lookback_cannot_hold_says_to_widen_it():
    need = Needs(Analytic.HALF_LIFE, required=20, available=12)
    assert needs_text(need, 300_000) == "Half-life: needs 8 more bars (≈ 40 min)"
    assert needs_text(need, 300_000, capacity=12) == ("Half-life: needs 20 bars, the lookback holds 12 at this "
                                                  "timeframe; widen the lookback")
    assert needs_text(need, 300_000, capacity=48) == "Half-life: needs 8 more bars (≈ 40 min)"


def test_a_fit_that_fails_on_its_bars_says_why_in_the_words_of_the_fit():
    """pairs/ returns the analytic and the fit's reason; the UI writes them as one line."""
    index = pd.date_range("2025-01-01", periods=80, freq="1s", tz="UTC")
    closes = pd.DataFrame({"AAAUSDT": 100 + np.random.default_rng(1).normal(size=80).cumsum(),
                           "BBBUSDT": np.full(80, 5.0)}, index=index)
    pair = compute_pair(closes, PairParams("AAAUSDT", "BBBUSDT", window=20, regression=Regression.STATIC_OLS))
    (need,) = pair.needs
    assert (need.what, need.reason) == (Analytic.HEDGE_RATIO, "x is constant; hedge ratio undefined")
    assert needs_text(need, 1_000) == "Hedge ratio (x is constant; hedge ratio undefined): needs 1 more bar (≈ 1 s)"
