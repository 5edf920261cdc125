"""The pair spread and its rolling z-score."""

from __future__ import annotations

import numpy as np
import pandas as pd

from analytics._validate import (
    ArrayLike1D,
    as_1d_float,
    check_same_length,
    check_window,
    index_of,
    require_observations,
    wrap,
)


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


def rolling_zscore(s: ArrayLike1D, window: int) -> np.ndarray | pd.Series:
    """Rolling z-score ``(s_t - mean_t) / std_t`` over the trailing ``window`` values, shape (n,).

    ``mean_t`` and ``std_t`` (ddof=1) use ``s[t-window+1 : t+1]`` only, so there is no
    look-ahead: a prefix of ``s`` gives a prefix of the result. The first ``window - 1`` values
    are NaN, as is any value whose window contains a NaN (for example a rolling hedge's warm-up).
    Where the window is constant the standard deviation is zero and the z-score undefined: NaN,
    never ±inf, so alert thresholds cannot fire on it.

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
    # pandas' online rolling moments lose accuracy in proportion to |level| / std. Shifting by
    # the first finite value removes the level without using any later data.
    finite = np.isfinite(values)
    centred = values - (values[finite.argmax()] if finite.any() else 0.0)
    rolling = pd.Series(centred).rolling(window)
    mean = rolling.mean().to_numpy()
    std = rolling.std(ddof=1).to_numpy()
    z = np.full(len(values), np.nan)
    # pandas returns an exact 0.0 for constant windows, so the test needs no tolerance.
    np.divide(centred - mean, std, out=z, where=std > 0)
    return wrap(z, index, "zscore")


def _coefficient(name: str, value: float | ArrayLike1D, n: int) -> float | np.ndarray:
    if np.ndim(value) == 0:
        number = float(value)
        if not np.isfinite(number):
            raise ValueError(f"{name} must be finite, got {number!r}")
        return number
    path = as_1d_float(name, value, allow_nan=True)
    if len(path) != n:
        raise ValueError(f"{name} path has {len(path)} values but y has {n}")
    return path
