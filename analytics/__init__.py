"""Pure analytics for pair trading on bar data: no I/O, no UI, no global state.

Modules
-------
bars          ticks → OHLCV bars (batch and incremental), alignment of symbols on one grid
regression    hedge ratios: OLS, Huber, Theil–Sen, Kalman (batch and streaming), rolling OLS
spread        spread of a hedged pair, its rolling z-score and moments, the z-score's bound
stationarity  ADF, Engle–Granger cointegration, half-life of mean reversion
scan          Engle–Granger scan of every pair of a universe, ranked by Benjamini–Hochberg q-value;
              a scan cut into blocks (scan_block, rank_pairs) for a distributed run
correlation   rolling correlation, correlation matrix, lead–lag
returns       log returns
backtest      z-score mean-reversion backtest of a hedged pair (next-bar fills, costs, perpetuals' funding)

Conventions: inputs are numpy arrays or pandas Series (pandas in → pandas out on the same
index), checked on entry; too little data raises :class:`InsufficientDataError`, other bad
input ``ValueError``; results are frozen dataclasses.
"""

from analytics._unitroot import TRENDS
from analytics.backtest import BacktestResult, FundingHistory, backtest_mean_reversion
from analytics.bars import AlignedBars, Bar, BarBuilder, align_bars, bars_to_frame, rebar, resample_ticks
from analytics.correlation import (
    LeadLag,
    clustered_order,
    correlation_matrix,
    lead_lag,
    rolling_correlation,
    strongest_symbols,
)
from analytics.errors import InsufficientDataError
from analytics.regression import (
    HedgeFit,
    KalmanHedge,
    KalmanState,
    RollingHedge,
    fit_hedge,
    rolling_hedge,
)
from analytics.returns import log_returns
from analytics.scan import rank_pairs, scan_block, scan_pairs
from analytics.spread import RollingMoments, rolling_moments, rolling_zscore, spread, zscore_bound
from analytics.stationarity import AdfResult, EngleGrangerResult, HalfLife, adf, engle_granger, half_life

__all__ = [
    "TRENDS",
    "AdfResult",
    "AlignedBars",
    "BacktestResult",
    "Bar",
    "BarBuilder",
    "EngleGrangerResult",
    "FundingHistory",
    "HalfLife",
    "HedgeFit",
    "InsufficientDataError",
    "KalmanHedge",
    "KalmanState",
    "LeadLag",
    "RollingHedge",
    "RollingMoments",
    "adf",
    "align_bars",
    "backtest_mean_reversion",
    "bars_to_frame",
    "clustered_order",
    "correlation_matrix",
    "engle_granger",
    "fit_hedge",
    "half_life",
    "lead_lag",
    "log_returns",
    "rank_pairs",
    "rebar",
    "resample_ticks",
    "rolling_correlation",
    "rolling_hedge",
    "rolling_moments",
    "rolling_zscore",
    "scan_block",
    "scan_pairs",
    "spread",
    "strongest_symbols",
    "zscore_bound",
]
