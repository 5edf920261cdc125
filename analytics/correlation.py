"""Correlation of returns: rolling for a pair, a matrix for a universe, and lead–lag by shift."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from analytics._rolling import flat_windows, window_moments
from analytics._validate import (
    ArrayLike1D,
    as_1d_float,
    check_int,
    check_not_constant,
    check_same_length,
    check_window,
    index_of,
    require_observations,
    wrap,
)

# Fewer points make every Pearson correlation ±1 (two points) or nearly meaningless.
MIN_CORRELATION_OBS = 3


@dataclass(frozen=True, slots=True)
class LeadLag:
    """Cross-correlation of two return series by lag (see :func:`lead_lag`).

    Attributes
    ----------
    lags : ndarray of int, shape (2·max_lag + 1,)
        ``-max_lag .. max_lag`` in bars.
    correlations : ndarray of float, same shape
        ``corr(a_t, b_{t+lag})`` over the overlapping bars; NaN where a side is constant.
    best_lag : int
        Lag with the largest absolute correlation (ties: the smallest ``|lag|``, then the
        negative one). **Positive: a leads b** by that many bars; negative: b leads a.
    best_correlation : float
        The correlation at ``best_lag``.
    """

    lags: np.ndarray
    correlations: np.ndarray
    best_lag: int
    best_correlation: float


def rolling_correlation(a: ArrayLike1D, b: ArrayLike1D, window: int) -> np.ndarray | pd.Series:
    """Pearson correlation of ``a`` and ``b`` over a trailing window, shape (n,).

    Each value is computed from its own window's values only, so it equals exact arithmetic on that
    window to rounding whatever left the window before (pandas' online ``rolling.corr`` keeps a
    residue of a far larger value). Windows where either series is constant (every value equal,
    tested exactly) give NaN (never ±inf or a made-up number) and values are clipped to [-1, 1].
    The first ``window - 1`` values are NaN.
    Pass returns (:func:`analytics.returns.log_returns`), not prices, unless price correlation is
    what you want.
    """
    av, bv = as_1d_float("a", a), as_1d_float("b", b)
    index = index_of(a=a, b=b)
    n = check_same_length(a=av, b=bv)
    window = check_window(window)
    require_observations(n, window, f"rolling_correlation(window={window})")
    # Each window's moments from its own values only (exact to rounding, whatever left the window).
    moments = window_moments([av, bv], window, [(0, 0), (0, 1), (1, 1)])
    var_a, var_b = moments.comoments[(0, 0)], moments.comoments[(1, 1)]
    corr = np.full(n, np.nan)
    # Flatness is tested exactly: a window that does not move has no correlation (NaN, never ±inf).
    defined = ~(flat_windows(av, window) | flat_windows(bv, window)) & (var_a > 0) & (var_b > 0)
    np.divide(moments.comoments[(0, 1)], np.sqrt(var_a * var_b), out=corr, where=defined)
    # Rounding may put a perfectly correlated window a hair past ±1.
    np.clip(corr, -1.0, 1.0, out=corr)
    return wrap(corr, index, "correlation")


def correlation_matrix(returns: pd.DataFrame) -> pd.DataFrame:
    """Pearson correlation matrix of a universe's returns.

    ``returns`` has shape (n, k): one column per symbol (for example
    ``log_returns(aligned.closes)``), finite, n >= 3. Returns a (k, k) DataFrame labelled by the
    columns. A column that never moves has no correlation and raises ``ValueError``.
    """
    if not isinstance(returns, pd.DataFrame):
        raise ValueError("returns must be a DataFrame with one column per symbol")
    if returns.shape[1] == 0:
        raise ValueError("returns has no columns")
    values = returns.to_numpy(dtype=np.float64)
    if not np.all(np.isfinite(values)):
        raise ValueError("returns contains NaN or inf; drop or fill missing values first")
    require_observations(len(values), MIN_CORRELATION_OBS, "correlation_matrix")
    constant = [str(column) for column in returns.columns[np.ptp(values, axis=0) == 0]]
    if constant:
        verb = "is" if len(constant) == 1 else "are"
        raise ValueError(f"{', '.join(constant)} {verb} constant; correlation undefined")
    # numpy, not DataFrame.corr: pandas' pairwise NaN-aware loop took ~180 ms for 200 symbols over a
    # day of minutes; the returns are finite (checked above), so one centred product does it.
    corr = np.corrcoef(values, rowvar=False).reshape(values.shape[1], values.shape[1])
    np.clip(corr, -1.0, 1.0, out=corr)  # rounding may put a perfectly correlated pair a hair past ±1
    np.fill_diagonal(corr, 1.0)
    return pd.DataFrame(corr, index=returns.columns, columns=returns.columns)


def lead_lag(a: ArrayLike1D, b: ArrayLike1D, max_lag: int) -> LeadLag:
    """Cross-correlation ``corr(a_t, b_{t+lag})`` for ``lag`` in ``-max_lag .. max_lag`` bars.

    A positive best lag means moves in ``a`` are followed by moves in ``b``: a leads b. Pass
    returns, shape (n,), finite, not constant, n >= max_lag + 3. Each lag uses its
    ``n - |lag|`` overlapping bars.
    """
    av, bv = as_1d_float("a", a), as_1d_float("b", b)
    index_of(a=a, b=b)  # rejects Series on different indexes
    n = check_same_length(a=av, b=bv)
    max_lag = check_int("max_lag", max_lag, minimum=0)
    require_observations(n, max_lag + MIN_CORRELATION_OBS, f"lead_lag(max_lag={max_lag})")
    check_not_constant("a", av, "correlation undefined")
    check_not_constant("b", bv, "correlation undefined")
    lags = np.arange(-max_lag, max_lag + 1)
    correlations = np.array(
        [_pearson(av[: n - lag], bv[lag:]) if lag >= 0 else _pearson(av[-lag:], bv[: n + lag]) for lag in lags]
    )
    # Rank by |correlation|, breaking ties towards short lags: a stable sort over lags ordered
    # 0, -1, 1, -2, 2, ... keeps the first of equals.
    by_distance = np.argsort(np.abs(lags), kind="stable")
    strength = np.nan_to_num(np.abs(correlations[by_distance]), nan=-1.0)
    best = by_distance[int(np.argmax(strength))]
    return LeadLag(lags, correlations, int(lags[best]), float(correlations[best]))


def _pearson(u: np.ndarray, v: np.ndarray) -> float:
    du, dv = u - u.mean(), v - v.mean()
    denominator = np.sqrt(float(du @ du) * float(dv @ dv))
    return float(du @ dv) / denominator if denominator > 0 else np.nan


def clustered_order(matrix: pd.DataFrame) -> list[str]:
    """The symbols of a correlation matrix in an order that puts correlated ones side by side.

    Average-linkage hierarchical clustering (scipy) of the distance ``1 − ρ`` (0 for identical
    returns, 2 for opposite ones), the dendrogram's leaves read left to right: each cluster of
    co-moving symbols is one block on the heatmap's diagonal. ``matrix``: square, symmetric,
    labelled alike on both axes, values in [-1, 1]; a symbol whose row is all NaN but the
    diagonal (no correlation yet: it never moved) goes last, in its given order. Deterministic:
    the same matrix gives the same order.
    """
    if not isinstance(matrix, pd.DataFrame) or matrix.shape[0] != matrix.shape[1] \
            or list(matrix.index) != list(matrix.columns):
        raise ValueError("clustered_order needs a square DataFrame with the same labels on both axes")
    from scipy.cluster.hierarchy import leaves_list, linkage  # imported on use: a heavy module
    from scipy.spatial.distance import squareform

    values = matrix.to_numpy(dtype=np.float64, na_value=np.nan)
    off_diagonal = ~np.eye(len(values), dtype=bool)
    defined = np.isfinite(np.where(off_diagonal, values, 0.0)).all(axis=1) if len(values) > 1 else \
        np.ones(len(values), dtype=bool)
    labels = [str(label) for label in matrix.index]
    inside = np.flatnonzero(defined)
    if len(inside) < 3:  # one or two symbols have one order (up to mirroring)
        order = [int(i) for i in inside]
    else:
        sub = values[np.ix_(inside, inside)]
        distance = np.clip(1.0 - (sub + sub.T) / 2, 0.0, 2.0)  # symmetric to rounding, as squareform checks
        np.fill_diagonal(distance, 0.0)
        tree = linkage(squareform(distance, checks=False), method="average")
        order = [int(inside[i]) for i in leaves_list(tree)]
    return [labels[i] for i in order] + [labels[i] for i in np.flatnonzero(~defined)]


def strongest_symbols(matrix: pd.DataFrame, n: int, always: tuple[str, ...] = ()) -> list[str]:
    """The ``n`` symbols whose strongest correlation (by absolute value) with any other symbol is
    the largest, ``always`` first where the matrix has them (e.g. the analysed pair's legs), in the
    matrix's order. Symbols without any correlation yet (NaN) come only after every other one.
    ``n`` >= 1; all of them when the matrix has no more than ``n``.
    """
    n = check_int("n", n, minimum=1)
    labels = [str(label) for label in matrix.index]
    if len(labels) <= n:
        return labels
    values = np.abs(matrix.to_numpy(dtype=np.float64, na_value=np.nan))
    np.fill_diagonal(values, np.nan)
    finite = np.isfinite(values)
    strength = np.where(finite.any(axis=1), np.where(finite, values, -1.0).max(axis=1), -np.inf)
    kept = [label for label in dict.fromkeys(always) if label in labels][:n]
    # Stable: among equal strengths the matrix's order decides.
    ranked = sorted(range(len(labels)), key=lambda i: -strength[i])
    for i in ranked:
        if len(kept) == n:
            break
        if labels[i] not in kept:
            kept.append(labels[i])
    chosen = set(kept)
    return [label for label in labels if label in chosen]
