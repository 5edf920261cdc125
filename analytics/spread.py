"""The pair spread, its rolling z-score (with the moments behind it) and the bound on that z-score."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import overload

import numpy as np
import pandas as pd

from analytics._rolling import flat_windows, window_moments
from analytics._validate import (
    ArrayLike1D,
    as_1d_float,
    check_same_length,
    check_window,
    index_of,
    require_observations,
    wrap,
)


# The output is y's kind: an array (or sequence) gives an array, a Series a Series on its index.
@overload
def spread(y: np.ndarray | Sequence[float], x: ArrayLike1D, beta: float | ArrayLike1D,
           alpha: float | ArrayLike1D = ..., *, log: bool = ...) -> np.ndarray | pd.Series: ...
@overload
def spread(y: pd.Series, x: ArrayLike1D, beta: float | ArrayLike1D, alpha: float | ArrayLike1D = ..., *,
           log: bool = ...) -> pd.Series: ...
def spread(
    y: ArrayLike1D,
    x: ArrayLike1D,
    beta: float | ArrayLike1D,
    alpha: float | ArrayLike1D = 0.0,
    *,
    log: bool = False,
) -> np.ndarray | pd.Series:
    """Spread ``s_t = y_t - beta_t·x_t - alpha_t`` of a hedged pair, shape (n,).

    Parameters
    ----------
    y, x : array or Series of float, shape (n,)
        Prices of the two legs on one bar grid, finite.
    beta, alpha : float, or array/Series of shape (n,)
        Hedge ratio and intercept: constants (from :func:`analytics.regression.fit_hedge`) or
        paths aligned to ``y`` (from ``rolling_hedge`` or the Kalman fit). NaN in a path (a
        rolling warm-up) gives NaN in the spread at the same positions.
    log : bool
        If True use log prices, ``ln y_t - beta_t·ln x_t - alpha_t``; y and x must then be > 0,
        and beta/alpha should come from a fit on ``np.log(y)``, ``np.log(x)``.

    Returns
    -------
    Spread in y's units (log units with ``log=True``); a Series named ``"spread"`` on the shared
    index if any input is a Series.
    """
    yv, xv = as_1d_float("y", y), as_1d_float("x", x)
    index = index_of(y=y, x=x, beta=beta, alpha=alpha)
    n = check_same_length(y=yv, x=xv)
    if log:
        for name, values in (("y", yv), ("x", xv)):
            if np.any(values <= 0):
                raise ValueError(f"{name} must be > 0 for a log-price spread")
        yv, xv = np.log(yv), np.log(xv)
    beta_v = _coefficient("beta", beta, n)
    alpha_v = _coefficient("alpha", alpha, n)
    return wrap(yv - beta_v * xv - alpha_v, index, "spread")


@dataclass(frozen=True, slots=True)
class RollingMoments:
    """Rolling mean and standard deviation (ddof=1) over a trailing window (see :func:`rolling_moments`).

    ``mean`` and ``std`` have the input's length (and index, for pandas input) and its units. They
    are NaN during the warm-up (first ``window - 1`` values) and for windows holding a NaN; over a
    flat window (every value equal) ``mean`` is that value and ``std`` exactly 0.
    """

    window: int
    mean: np.ndarray | pd.Series
    std: np.ndarray | pd.Series


def rolling_moments(s: ArrayLike1D, window: int) -> RollingMoments:
    """Mean and standard deviation (ddof=1) of ``s[t-window+1 : t+1]`` for each t, shape (n,).

    The same moments :func:`rolling_zscore` divides by, for drawing its ``mean ± k·std`` bands.

    Parameters
    ----------
    s : array or Series of float, shape (n,)
        For example a spread; NaN allowed, inf not.
    window : int
        Bars per window, at least 2 and at most n.
    """
    values = as_1d_float("s", s, allow_nan=True)
    index = index_of(s=s)
    window = check_window(window)
    require_observations(len(values), window, f"rolling_moments(window={window})")
    _, mean, std = _moments(values, window)
    return RollingMoments(window, wrap(mean, index, "mean"), wrap(std, index, "std"))


def rolling_zscore(s: ArrayLike1D, window: int) -> np.ndarray | pd.Series:
    """Rolling z-score ``(s_t - mean_t) / std_t`` over the trailing ``window`` values, shape (n,).

    ``mean_t`` and ``std_t`` (ddof=1) use ``s[t-window+1 : t+1]`` only, so there is no
    look-ahead: a prefix of ``s`` gives a prefix of the result. The first ``window - 1`` values
    are NaN, as is any value whose window contains a NaN (for example a rolling hedge's warm-up).
    Where the window is constant (every value equal, tested exactly) the standard deviation is
    zero and the z-score undefined: NaN, never ±inf or 0, so alert thresholds cannot fire on it.

    The current value is part of its own window, so ``|z_t| <= (window - 1) / sqrt(window)``
    (:func:`zscore_bound`): 2.85 for 10 bars. A threshold at or beyond that can never be reached.

    Parameters
    ----------
    s : array or Series of float, shape (n,)
        The spread; NaN allowed, inf not.
    window : int
        Bars per window, at least 2 and at most n.
    """
    values = as_1d_float("s", s, allow_nan=True)
    index = index_of(s=s)
    window = check_window(window)
    require_observations(len(values), window, f"rolling_zscore(window={window})")
    deviation, _, std = _moments(values, window)
    z = np.full(len(values), np.nan)
    np.divide(deviation, std, out=z, where=std > 0)
    # A guard only: the moments are exact to rounding, so z can pass Samuelson's (exact) bound by an
    # ulp or so, never more; clipping moves it towards the exact value, and a threshold at the bound
    # then never fires on rounding.
    bound = zscore_bound(window)
    np.clip(z, -bound, bound, out=z)
    return wrap(z, index, "zscore")


def zscore_bound(window: int) -> float:
    """Largest ``|z|`` that :func:`rolling_zscore` can give over ``window`` bars: ``(window - 1) / sqrt(window)``.

    The z-score includes the current value in its own window (ddof=1), so by Samuelson's
    inequality ``|s_t - mean_t| <= std_t · (window - 1) / sqrt(window)``, with equality when the
    other ``window - 1`` values are equal. 2.846 for 10 bars, 4.249 for 20, 7.62 for 60. A
    threshold at or beyond the bound can never be crossed (``z > bound`` never holds).

    Parameters
    ----------
    window : int
        Bars per z-score window, at least 2.
    """
    window = check_window(window)
    return (window - 1) / math.sqrt(window)


def _moments(values: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(values - mean, mean, std)`` over each trailing window, each of shape (n,).

    Each window's moments come from its own values only (:func:`analytics._rolling.window_moments`),
    so they equal exact arithmetic to rounding of the window's own scale, whatever left the window
    before; the deviation is taken from a value inside the window, not from the mean's absolute level.
    Flat windows are detected exactly: std exactly 0, mean the value.
    """
    moments = window_moments([values], window, [(0, 0)])
    centre, offset = moments.centres[0], moments.offsets[0]
    flat = flat_windows(values, window)
    std = np.where(flat, 0.0, np.sqrt(moments.comoments[(0, 0)] / (window - 1)))
    return (values - centre) - offset, np.where(flat, values, centre + offset), std


def _coefficient(name: str, value: float | ArrayLike1D, n: int) -> float | np.ndarray:
    if np.ndim(value) == 0:
        number = float(np.asarray(value))  # a scalar, or an array of no dimension
        if not np.isfinite(number):
            raise ValueError(f"{name} must be finite, got {number!r}")
        return number
    path = as_1d_float(name, value, allow_nan=True)
    if len(path) != n:
        raise ValueError(f"{name} path has {len(path)} values but y has {n}")
    return path
