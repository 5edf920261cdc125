"""Mini mean-reversion backtest on the selected pair: controls, stats, equity curve, trades, CSV.

Perpetual legs pay or receive funding at each funding time they are held over (their stored
funding history, :meth:`service.Service.funding_history`): its own column per trade and total.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import streamlit as st

from analytics import InsufficientDataError
from analytics.backtest import FundingHistory, backtest_mean_reversion
from config import SECONDS_PER_YEAR
from records.safe_csv import to_csv_bytes
from service import Service
from storage.errors import StorageError
from ui import charts
from ui.panels import fmt
from ui.plain import plain

log = logging.getLogger(__name__)

HEDGES = {"Rolling OLS": "rolling_ols", "Kalman filter": "kalman", "OLS on the warm-up bars": "static_ols"}


def close_times(closes: pd.DataFrame, interval_ms: int) -> np.ndarray:
    """When each bar's close was taken, UTC epoch ms: its start (the index) plus ``interval_ms``."""
    return pd.DatetimeIndex(closes.index).as_unit("ms").asi8 + interval_ms


def perpetual_funding(service: Service | None, closes: pd.DataFrame, legs: Sequence[str],
                      interval_ms: int) -> dict[str, FundingHistory]:
    """The stored funding history of each perpetual leg among ``legs`` over the span of ``closes``
    (spot legs and uploaded datasets: none). A database that cannot be read gives a history known
    nowhere, so the backtest says funding is unknown rather than counting zero."""
    if service is None or closes.empty:
        return {}
    close_ms = close_times(closes, interval_ms)
    histories: dict[str, FundingHistory] = {}
    for leg in legs:
        if not service.is_perpetual(leg):
            continue
        try:
            histories[leg] = service.funding_history(leg, int(close_ms[0]), int(close_ms[-1]))
        except StorageError as exc:
            log.warning("funding history of %s unreadable: %s", leg, exc)
            histories[leg] = FundingHistory.none_known(leg)
    return histories


def render_backtest_tab(closes: pd.DataFrame, y: str, x: str, window: int, z_threshold: float, interval_ms: int,
                        tz: str, revision: str, start: int = 0,
                        funding: Mapping[str, FundingHistory] | None = None) -> None:
    """Backtest on closed bars: enter at |z| > entry, exit when z crosses the exit level, next-bar fills.

    ``closes``: the view's analysed closes (:meth:`pairs.shared.PairView.analysed_closes`), warm-up
    included; trading starts at row ``start`` (the lookback's first bar), on the z-score the charts show.
    ``funding``: the funding history of each perpetual leg (:func:`perpetual_funding`); spot legs have none.
    """
    funding = funding or {}
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
                                         start=start, funding_y=funding.get(y), funding_x=funding.get(x),
                                         close_ms=close_times(closes, interval_ms) if funding else None)
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
    gross, costs, paid, _ = st.columns([1, 1, 1, 2])
    gross.metric("Gross PnL", fmt(result.gross_pnl, 2))
    costs.metric("Costs", fmt(result.total_costs, 2))
    paid.metric("Funding", fmt(result.total_funding, 2) if funding else "none (spot)",
                help="Received (+) or paid (−) on perpetual legs at each funding time held over; "
                     "a positive rate: longs pay shorts. Net PnL = gross − costs + funding.")
    for message in result.funding_unknown:
        st.warning(f"{message}: the net PnL of the trades holding it then is unknown (—), not counted as zero.")
    st.plotly_chart(charts.equity_chart(result.equity, tz=tz, revision=f"{revision}|backtest"), key="chart_equity",
                    config=charts.FIGURE_CONFIG)
    shown = result.trades.copy()
    for column in ("entry_time", "exit_time"):
        shown[column] = pd.to_datetime(shown[column], utc=True).dt.tz_convert(tz)
    st.dataframe(shown, hide_index=True, width="stretch", height=260)
    st.caption("Signals on a bar's close fill at the next bar's close; the hedge ratio is fixed at entry; costs are "
               "charged per leg on entry and exit, in basis points of traded notional. Closed bars only."
               + (f" Funding on {' and '.join(sorted(funding))}: notional (the event's mark price, else the bar's "
                  "close) × rate at each funding time held over; a position opened at a funding time does not pay "
                  "it, one closed at a funding time does." if funding else ""))
    st.download_button("Backtest trades (CSV)", lambda: to_csv_bytes(result.trades.set_index("entry_time")),
                       "backtest-trades.csv", "text/csv", key="download_backtest", on_click="ignore")
