"""Mini mean-reversion backtest on the selected pair: controls, stats, equity curve, trades, CSV."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from analytics import InsufficientDataError
from analytics.backtest import backtest_mean_reversion
from config import SECONDS_PER_YEAR
from records.safe_csv import to_csv_bytes
from ui import charts
from ui.panels import fmt
from ui.plain import plain

HEDGES = {"Rolling OLS": "rolling_ols", "Kalman filter": "kalman", "OLS on the warm-up bars": "static_ols"}


def render_backtest_tab(closes: pd.DataFrame, y: str, x: str, window: int, z_threshold: float, interval_ms: int,
                        tz: str, revision: str, start: int = 0) -> None:
    """Backtest on closed bars: enter at |z| > entry, exit when z crosses the exit level, next-bar fills.

    ``closes``: the view's analysed closes (:meth:`pairs.shared.PairView.analysed_closes`), warm-up
    included; trading starts at row ``start`` (the lookback's first bar), on the z-score the charts show.
    """
    entry_col, exit_col, cost_col, hedge_col = st.columns(4)
    entry = entry_col.number_input("Entry |z| >", min_value=0.5, max_value=5.0, value=float(z_threshold), step=0.1,
                                   key="bt_entry")
    exit_level = exit_col.number_input("Exit at z crossing", min_value=0.0, max_value=float(entry) - 0.05, value=0.0,
                                       step=0.1, key="bt_exit")
    cost = cost_col.number_input("Cost per leg (bps)", min_value=0.0, max_value=100.0, value=1.0, step=0.5,
                                 key="bt_cost")
    hedge_label = hedge_col.selectbox("Hedge ratio", list(HEDGES), key="bt_hedge")
    try:
        result = backtest_mean_reversion(closes[y], closes[x], window, entry=entry, exit=exit_level, cost_bps=cost,
                                         hedge=HEDGES[hedge_label], bars_per_year=SECONDS_PER_YEAR * 1000 / interval_ms,
                                         start=start)
    except InsufficientDataError as exc:
        st.info(f"Backtest: {plain(exc)}", icon="⏳")
        return
    except ValueError as exc:
        st.warning(f"Backtest not run: {plain(exc)}")
        return
    pnl, sharpe, drawdown, trades, wins = st.columns(5)
    pnl.metric("Total PnL (quote, per 1 unit of Y)", fmt(result.total_pnl, 2))
    sharpe.metric("Sharpe (annualised)", fmt(result.sharpe, 2))
    drawdown.metric("Max drawdown", fmt(result.max_drawdown, 2))
    trades.metric("Trades", result.n_trades)
    wins.metric("Win rate (closed)", "—" if pd.isna(result.win_rate) else f"{result.win_rate:.0%}")
    st.plotly_chart(charts.equity_chart(result.equity, tz=tz, revision=f"{revision}|backtest"), key="chart_equity",
                    config=charts.FIGURE_CONFIG)
    shown = result.trades.copy()
    for column in ("entry_time", "exit_time"):
        shown[column] = pd.to_datetime(shown[column], utc=True).dt.tz_convert(tz)
    st.dataframe(shown, hide_index=True, width="stretch", height=260)
    st.caption("Signals on a bar's close fill at the next bar's close; the hedge ratio is fixed at entry; costs are "
               "charged per leg on entry and exit, in basis points of traded notional. Closed bars only.")
    st.download_button("Backtest trades (CSV)", lambda: to_csv_bytes(result.trades.set_index("entry_time")),
                       "backtest-trades.csv", "text/csv", key="download_backtest", on_click="ignore")
