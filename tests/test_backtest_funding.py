"""Funding in the backtest: perpetual legs pay or receive notional × rate at each funding time they are held
over (positive rate: longs pay shorts), checked against hand-computed amounts on known trades."""

from __future__ import annotations

import math

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from analytics.backtest import FundingHistory, backtest_mean_reversion
from ui.plain import unescaped

MINUTE = 60_000
T0 = 1_796_083_200_000  # 2026-12-01 00:00 UTC, the first bar's start


def market() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """y, x and each bar's close time: a mean-reverting spread on a random walk (seeded). With window
    10, entry 1.5, exit 0 and the static hedge its first trades are short 24→27 and long 40→42."""
    rng = np.random.default_rng(3)
    n = 120
    x = 100 + np.cumsum(rng.normal(0, 0.5, n))
    s = np.zeros(n)
    for i in range(1, n):
        s[i] = 0.6 * s[i - 1] + rng.normal(0, 0.5)
    close_ms = T0 + (np.arange(n, dtype=np.int64) + 1) * MINUTE
    return 50 + 0.5 * x + s, x, close_ms


def run(funding_y: FundingHistory | None = None, funding_x: FundingHistory | None = None, **kwargs):
    y, x, close_ms = market()
    return backtest_mean_reversion(y, x, 10, entry=1.5, exit=0.0, cost_bps=2.0, hedge="static_ols",
                                   funding_y=funding_y, funding_x=funding_x, close_ms=close_ms, **kwargs)


def history(leg: str, events: list[tuple[int, float, float]], known: tuple[int, int] | str | None = "all"
            ) -> FundingHistory:
    """``events``: (time ms, rate, mark or NaN); ``known`` the span known (default: the whole market)."""
    times = np.array([t for t, _, _ in events], dtype=np.int64)
    span = (T0 - 1_000 * MINUTE, T0 + 1_000 * MINUTE) if isinstance(known, str) else known
    return FundingHistory(leg, times, np.array([r for _, r, _ in events]), np.array([m for _, _, m in events]),
                          None if span is None else span[0], None if span is None else span[1])


def test_the_market_has_the_trades_the_examples_are_built_on():
    trades = run().trades
    assert list(trades.loc[:1, "entry_time"]) == [24, 40] and list(trades.loc[:1, "exit_time"]) == [27, 42]
    assert list(trades.loc[:1, "side"]) == ["short", "long"] and (trades["funding"] == 0.0).all()


def test_a_perpetual_y_leg_pays_and_receives_by_the_sign_of_rate_and_position():
    """Hand-computed. Short spread 24→27 holds y at -1; long spread 40→42 holds y at +1.

    * at close 24 exactly (the short's entry fill): opened at that instant, pays nothing;
    * 30 s before close 25, rate +0.01 %, mark 150: the short y receives 1 × 150 × 0.0001 = +0.015;
    * at close 27 exactly (its exit fill), rate −0.02 %, no mark: held up to that instant, so the short
      pays 1 × y[27] × 0.0002 (notional from the bar's close);
    * at close 40 exactly (the long's entry): nothing; at close 41, rate +0.03 %, mark 140: the long
      pays 1 × 140 × 0.0003 = 0.042; 1 ms after close 42 (its exit): nothing, it is flat.
    """
    y, _, close_ms = market()
    events = [(close_ms[24], 0.0005, 150.0), (close_ms[25] - 30_000, 0.0001, 150.0),
              (close_ms[27], -0.0002, math.nan), (close_ms[40], -0.0007, 140.0), (close_ms[41], 0.0003, 140.0),
              (close_ms[42] + 1, 0.0009, 140.0)]
    plain, with_funding = run(), run(history("ETHUSDT.P", events))
    expected = [0.015 - y[27] * 0.0002, -0.042]
    assert list(with_funding.trades.loc[:1, "funding"]) == pytest.approx(expected, abs=1e-12)
    assert (with_funding.trades.loc[2:, "funding"] == 0.0).all()
    assert list(with_funding.trades["pnl"]) == pytest.approx(list(plain.trades["pnl"] + with_funding.trades["funding"]))
    assert with_funding.total_funding == pytest.approx(sum(expected))
    assert with_funding.total_pnl == pytest.approx(plain.total_pnl + sum(expected))
    assert with_funding.funding_unknown == ()


def test_a_perpetual_x_leg_is_held_beta_units_against_the_spread():
    """The short spread holds x at +β: a positive rate in bar 26 (mark 100) costs β × 100 × 0.0001."""
    _, _, close_ms = market()
    plain = run()
    beta = plain.trades.loc[0, "hedge_ratio"]
    result = run(funding_x=history("BTCUSDT.P", [(close_ms[26] - 1, 0.0001, 100.0)]))
    assert result.trades.loc[0, "funding"] == pytest.approx(-beta * 100 * 0.0001)
    assert result.total_funding == pytest.approx(-beta * 100 * 0.0001)


def test_net_is_gross_minus_costs_plus_funding_per_trade_and_in_total():
    _, _, close_ms = market()
    rng = np.random.default_rng(9)
    every_8_bars = [(t, float(rng.uniform(-5e-4, 5e-4)), float(rng.uniform(90, 110))) for t in close_ms[::8]]
    result = run(history("ETHUSDT.P", every_8_bars), history("BTCUSDT.P", every_8_bars[1:]))
    trades = result.trades
    side = np.where(trades["side"] == "long", 1.0, -1.0)
    gross = side * ((trades["exit_y"] - trades["entry_y"])
                    - trades["hedge_ratio"] * (trades["exit_x"] - trades["entry_x"]))
    assert list(trades["pnl"]) == pytest.approx(list(gross - trades["costs"] + trades["funding"]))
    assert result.total_funding != 0 and result.total_costs > 0
    assert result.gross_pnl == pytest.approx(gross.sum())
    assert result.total_pnl == pytest.approx(result.gross_pnl - result.total_costs + result.total_funding)
    assert result.total_pnl == pytest.approx(trades["pnl"].sum())
    assert result.equity[-1] == pytest.approx(result.total_pnl)


def test_a_spot_leg_never_pays_funding():
    """No FundingHistory for a leg: it is spot, whatever the other leg pays."""
    _, _, close_ms = market()
    result = run(funding_y=None, funding_x=None)
    assert result.total_funding == 0.0 and result.funding_unknown == ()
    only_x = run(funding_x=history("BTCUSDT.P", [(close_ms[25], 0.001, 100.0)]))
    only_y = run(funding_y=history("ETHUSDT.P", [(close_ms[25], 0.001, 100.0)]))
    assert only_x.total_funding != only_y.total_funding  # each counts its own leg alone


def test_funding_history_that_starts_after_a_held_position_says_so_instead_of_counting_zero():
    _, _, close_ms = market()
    known = (int(close_ms[26]), int(close_ms[-1]))  # starts in the middle of the short 24→27
    result = run(history("ETHUSDT.P", [(close_ms[41], 0.0003, 140.0)], known=known))
    assert result.funding_unknown == ("funding unknown for ETHUSDT.P before 2026-12-01 00:27:00 UTC",)
    assert math.isnan(result.trades.loc[0, "funding"]) and math.isnan(result.trades.loc[0, "pnl"])
    assert result.trades.loc[1, "funding"] == pytest.approx(-0.042)  # a later trade is known
    assert math.isnan(result.total_funding) and math.isnan(result.total_pnl)
    assert math.isnan(result.sharpe) and math.isnan(result.max_drawdown)
    assert result.gross_pnl == pytest.approx(run().gross_pnl)  # price PnL is still known
    assert not math.isnan(result.total_costs)


def test_funding_history_that_ends_before_a_later_trade_says_so_after():
    _, _, close_ms = market()
    result = run(history("ETHUSDT.P", [], known=(int(close_ms[0]), int(close_ms[42]))))
    assert result.funding_unknown == ("funding unknown for ETHUSDT.P after 2026-12-01 00:43:00 UTC",)
    assert result.trades.loc[:1, "funding"].tolist() == [0.0, 0.0]  # both held inside the known span
    assert math.isnan(result.trades.loc[2, "funding"])
    # Known up to 1 ms before the long's exit close: its last bar (close 41, close 42] is not all known.
    short_of = run(history("ETHUSDT.P", [], known=(int(close_ms[0]), int(close_ms[42]) - 1)))
    assert math.isnan(short_of.trades.loc[1, "funding"]) and short_of.trades.loc[0, "funding"] == 0.0
    nothing = run(history("ETHUSDT.P", [], known=None))
    assert nothing.funding_unknown == ("funding unknown for ETHUSDT.P: no funding history",)


def test_a_closed_trade_whose_funding_is_unknown_makes_the_win_rate_unknown_not_a_loss():
    """A closed trade with NaN net PnL is neither a win nor a loss: the win rate over the closed
    trades is unknown as the total is, not lowered as if that trade had lost."""
    _, _, close_ms = market()
    plain = run()
    assert plain.trades.loc[0, "pnl"] > 0 and not math.isnan(plain.win_rate)  # the short 24→27 won
    result = run(history("ETHUSDT.P", [], known=(int(close_ms[26]), int(close_ms[-1]))))
    assert math.isnan(result.trades.loc[0, "pnl"]) and not result.trades.loc[0, "open"]
    assert math.isnan(result.win_rate)


def test_an_unknown_span_where_nothing_was_held_changes_nothing():
    _, _, close_ms = market()
    known = (int(close_ms[0]) - 10 * MINUTE, int(close_ms[23]))  # unknown from bar 24's close on
    short = run(history("ETHUSDT.P", [], known=known), start=0)
    assert short.funding_unknown  # the short 24→27 is held after it
    # Traded over the first 24 bars only (a prefix): nothing held beyond the known span.
    y, x, close_ms = market()
    prefix = backtest_mean_reversion(y[:25], x[:25], 10, entry=1.5, hedge="static_ols", close_ms=close_ms[:25],
                                     funding_y=history("ETHUSDT.P", [], known=known))
    assert prefix.funding_unknown == () and prefix.total_funding == 0.0


def test_funding_needs_close_times_and_sound_events():
    y, x, close_ms = market()
    with pytest.raises(ValueError, match="close_ms: funding needs the time of each close"):
        backtest_mean_reversion(y, x, 10, hedge="static_ols", funding_y=FundingHistory.none_known("ETHUSDT.P"))
    with pytest.raises(ValueError, match="close_ms must be strictly rising"):
        backtest_mean_reversion(y, x, 10, hedge="static_ols", close_ms=close_ms[::-1])
    with pytest.raises(ValueError, match=r"close_ms must have one time per bar \(120\)"):
        backtest_mean_reversion(y, x, 10, hedge="static_ols", close_ms=close_ms[:-1])
    with pytest.raises(ValueError, match="strictly rising"):
        history("ETHUSDT.P", [(2, 0.0, 1.0), (1, 0.0, 1.0)])
    with pytest.raises(ValueError, match="rates must be finite fractions"):
        history("ETHUSDT.P", [(1, math.nan, 1.0)])
    with pytest.raises(ValueError, match="marks must be > 0"):
        history("ETHUSDT.P", [(1, 0.0, -3.0)])


@pytest.mark.parametrize("known", ["all", "late", "spot"])
def test_the_backtest_tab_shows_the_funding_column_and_total_and_says_when_it_is_unknown(known):
    def page(known: str) -> None:
        import numpy as np
        import pandas as pd

        from analytics.backtest import FundingHistory
        from ui.backtest_panel import render_backtest_tab

        rng = np.random.default_rng(3)
        n = 120
        x = 100 + np.cumsum(rng.normal(0, 0.5, n))
        s = np.zeros(n)
        for i in range(1, n):
            s[i] = 0.6 * s[i - 1] + rng.normal(0, 0.5)
        index = pd.date_range("2026-12-01", periods=n, freq="1min", tz="UTC")
        closes = pd.DataFrame({"ETHUSDT.P": 50 + 0.5 * x + s, "BTCUSDT": x}, index=index)
        close_ms = index.as_unit("ms").asi8 + 60_000
        first = int(close_ms[0]) if known == "all" else int(close_ms[60])
        events = FundingHistory("ETHUSDT.P", close_ms[::8].copy(), np.full(15, 0.0004), np.full(15, np.nan), first,
                                int(close_ms[-1]))
        render_backtest_tab(closes, "ETHUSDT.P", "BTCUSDT", 10, 1.5, 60_000, "UTC", "r", 0,
                            None if known == "spot" else {"ETHUSDT.P": events})

    at = AppTest.from_function(page, args=(known,), default_timeout=30)
    at.session_state["bt_hedge"] = "OLS on the warm-up bars"
    at.run()
    assert not at.exception, at.exception
    metrics = {m.label: m.value for m in at.metric}
    trades = next(d.value for d in at.dataframe if "funding" in d.value.columns)
    assert list(trades.columns).index("funding") == list(trades.columns).index("costs") + 1  # beside costs
    warnings = [unescaped(w.value) for w in at.warning]
    if known == "spot":
        assert metrics["Funding"] == "none (spot)" and (trades["funding"] == 0).all() and not warnings
        return
    caption = " ".join(unescaped(c.value) for c in at.caption)
    assert "Funding on ETHUSDT.P" in caption and "opened at a funding time does not pay it" in caption
    if known == "all":
        # Every trade shorts or longs y across some events at +0.04 %: a real, signed total.
        assert metrics["Funding"] not in ("—", "0.00") and not warnings
        assert trades["funding"].notna().all() and (trades["funding"] != 0).any()
    else:
        assert metrics["Funding"] == "—" and metrics["Total PnL (quote, per 1 unit of Y)"] == "—"
        assert warnings == ["funding unknown for ETHUSDT.P before 2026-12-01 01:01:00 UTC: the net PnL of the trades "
                            "holding it then is unknown (—), not counted as zero."]
        assert trades["funding"].isna().any() and trades["funding"].notna().any()
