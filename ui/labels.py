"""What users read for the domain's values: display labels of timeframes and regressions.

Pure (no Streamlit), so the command lines above ``ui/`` print the same words as the dashboard.
Keys are :mod:`domain` values; nothing uses a label as a key.
"""

from __future__ import annotations

from domain import FIVE_MINUTES, ONE_MINUTE, ONE_SECOND, Regression, Timeframe

TIMEFRAME_LABELS = {ONE_SECOND: "1 s", ONE_MINUTE: "1 min", FIVE_MINUTES: "5 min"}
REGRESSION_LABELS = {
    Regression.ROLLING_OLS: "Rolling OLS",
    Regression.STATIC_OLS: "Static OLS (in-sample)",
    Regression.HUBER: "Huber (in-sample)",
    Regression.THEIL_SEN: "Theil–Sen (in-sample)",
    Regression.KALMAN: "Kalman filter",
}


def timeframe_label(timeframe: str | int | Timeframe) -> str:
    """``"1 min"`` for ``"1m"``, ``60000`` or the timeframe itself (ValueError for no timeframe)."""
    return TIMEFRAME_LABELS[Timeframe.of(timeframe)]
