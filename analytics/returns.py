"""Log returns of bar closes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar, overload

import numpy as np
import pandas as pd

from analytics._validate import ArrayLike1D, as_1d_float, require_observations

_Labelled = TypeVar("_Labelled", pd.Series, pd.DataFrame)


# The output is the input's kind: a Series gives a Series, a frame a frame, anything else an array.
@overload
def log_returns(prices: np.ndarray | Sequence[float]) -> np.ndarray: ...
@overload
def log_returns(prices: _Labelled) -> _Labelled: ...
def log_returns(prices: ArrayLike1D | pd.DataFrame) -> np.ndarray | pd.Series | pd.DataFrame:
    """Log returns ``ln(p_t / p_{t-1})`` of prices, one fewer than the prices.

    Parameters
    ----------
    prices : array or Series of shape (n,), or DataFrame of shape (n, k)
        Closes on one bar grid (for a universe, ``AlignedBars.closes``), finite and > 0, n >= 2.

    Returns
    -------
    Shape (n-1,) or (n-1, k). pandas input gives pandas output indexed by ``index[1:]``: each
    return is labelled with the bar at which it ends, so it never uses data from a later bar.
    """
    if isinstance(prices, pd.DataFrame):
        values = prices.to_numpy(dtype=np.float64)
        _check_positive(values, "prices")
        require_observations(len(values), 2, "log_returns")
        return pd.DataFrame(np.diff(np.log(values), axis=0), index=prices.index[1:], columns=prices.columns)
    values = as_1d_float("prices", prices)
    _check_positive(values, "prices")
    require_observations(len(values), 2, "log_returns")
    returns = np.diff(np.log(values))
    if isinstance(prices, pd.Series):
        return pd.Series(returns, index=prices.index[1:], name=prices.name)
    return returns


def _check_positive(values: np.ndarray, name: str) -> None:
    if not np.all(np.isfinite(values)):
        raise ValueError(f"{name} contains NaN or inf; drop or fill missing values first")
    if np.any(values <= 0):
        raise ValueError(f"{name} must be > 0 for log returns")
