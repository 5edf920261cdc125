"""ADF regression machinery shared by :mod:`analytics.stationarity` (one series) and
:mod:`analytics.scan` (many pairs at once).

Everything here works on a batch of ``B`` upper-triangular factors ``R`` of the ADF design
``[level, deterministic terms, Δy_{t-1..t-maxlag} | Δy_t]`` on the lag-selection sample (rows
``t = maxlag .. n-2``), shape ``(B, P+1, P+1)`` with ``P = 1 + ntrend + maxlag``. ``R`` may come
from a QR factorisation of the design (one series) or from a Cholesky factorisation of its Gram
matrix (a scan); only ``RᵀR`` matters, so the signs of its rows do not.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import cast

import numpy as np
from scipy.special import ndtr

# MacKinnon's coefficients (our own copy, with its source): tests/test_analytics_scan.py checks the
# port below against statsmodels' mackinnonp bit for bit.
from analytics._mackinnon import TAU_LARGE_P, TAU_MAX, TAU_MIN, TAU_SMALL_P, TAU_STAR

# Deterministic terms of a regression, by statsmodels' names: none, constant, + trend, + trend².
TRENDS = ("c", "ct", "ctt", "n")
NTREND = {"n": 0, "c": 1, "ct": 2, "ctt": 3}
AUTOLAG_METHODS = ("AIC", "BIC", "T-STAT")
# statsmodels' coint skips the ADF step above this R² of the cointegrating regression: the
# residuals are then numerically zero and the pair is collinear (statsmodels.tsa.stattools).
COLLINEAR_R2 = 1.0 - 100.0 * math.sqrt(np.finfo(np.float64).eps)
# With a fitted trend, a regressor whose detrended sum of squares is below this share of its
# centred one is a deterministic trend itself (up to rounding): its coefficient is undefined.
_TREND_ONLY = 1e-20
# statsmodels' stopping rule for autolag="t-stat": the longest lag whose own |t| reaches the
# one-sided 5 % normal quantile (statsmodels.tsa.stattools._autolag).
_T_STAT_STOP = 1.6448536269514722


@dataclass(frozen=True, slots=True)
class LagChoice:
    """Chosen lag per batch member, its criterion (None without autolag) and its RSS on the selection sample."""

    lags: np.ndarray
    icbest: np.ndarray | None
    rss: np.ndarray


def default_maxlag(n: int, ntrend: int) -> int:
    """statsmodels' default ``ceil(12·(n/100)^{1/4})`` (Schwert), capped at ``n//2 - ntrend - 1``.

    Further capped so the largest candidate keeps a residual degree of freedom (only binds for
    very short series, where statsmodels would divide by zero).
    """
    schwert = math.ceil(12.0 * (n / 100.0) ** 0.25)
    return min(n // 2 - ntrend - 1, (n - ntrend - 3) // 2, schwert)


def adf_required(maxlag: int, ntrend: int) -> int:
    """Observations an ADF regression with ``maxlag`` lags needs.

    statsmodels' bound (maxlag <= n//2 - ntrend - 1) and one residual degree of freedom.
    """
    return max(2 * (maxlag + ntrend + 1), 2 * maxlag + ntrend + 3)


def check_trend(trend: str, name: str = "trend") -> str:
    if trend not in TRENDS:
        raise ValueError(f"unknown {name} {trend!r}; choose one of {', '.join(TRENDS)}")
    return trend


def check_autolag(autolag: str | None) -> str | None:
    """The upper-cased method, or None; statsmodels accepts any case."""
    if autolag is None:
        return None
    if not isinstance(autolag, str) or autolag.upper() not in AUTOLAG_METHODS:
        raise ValueError(f"unknown autolag {autolag!r}; choose 'AIC', 'BIC', 't-stat' or None")
    return autolag.upper()


def trend_terms(n: int, trend: str) -> np.ndarray:
    """Deterministic regressors ``[1, t, t²][:ntrend]`` with ``t = 1..n``, shape (n, ntrend).

    The same columns as statsmodels' ``add_trend``, so coefficients are comparable with its fits.
    """
    t = np.arange(1.0, n + 1.0)
    return np.column_stack([t**power for power in range(NTREND[trend])]) if NTREND[trend] else np.empty((n, 0))


def detrend(values: np.ndarray, trend: str) -> tuple[np.ndarray, np.ndarray]:
    """``values`` (n, k) minus their least-squares fit on :func:`trend_terms`, and the fit's coefficients.

    By Frisch–Waugh–Lovell, regressing detrended y on detrended x gives the slope of y on
    ``[x, trend terms]``; detrending every column once lets a scan share that work between pairs.
    Coefficients have shape (ntrend, k).
    """
    if trend == "n":
        return values, np.empty((0, values.shape[1]))
    if trend == "c":
        mean = values.mean(axis=0)
        return values - mean, mean[np.newaxis]
    q, r = np.linalg.qr(trend_terms(len(values), trend))
    projection = q.T @ values
    return values - q @ projection, np.linalg.solve(r, projection)


def r_squared_totals(values: np.ndarray, trend: str) -> np.ndarray:
    """Denominators of statsmodels' R² for regressands ``values`` (n, k): centred sums of squares
    when the regression has a constant, uncentred for trend "n"."""
    if trend == "n":
        return np.sum(values**2, axis=0)
    return np.sum((values - values.mean(axis=0)) ** 2, axis=0)


def collinear(ssr: np.ndarray | float, totals: np.ndarray | float) -> np.ndarray | bool:
    """statsmodels' coint rule: skip the ADF step when R² is not below ``COLLINEAR_R2``."""
    return np.logical_not(1.0 - ssr / totals < COLLINEAR_R2)


def trend_only(detrended_ss: np.ndarray | float, values: np.ndarray, trend: str) -> np.ndarray:
    """Whether columns of ``values`` are deterministic trends (``"ct"``, ``"ctt"``), from their
    detrended sums of squares: a bool array of ``detrended_ss``'s shape (0-d for one column)."""
    if trend not in ("ct", "ctt"):
        return np.zeros(np.shape(detrended_ss), dtype=bool)
    return np.asarray(detrended_ss <= _TREND_ONLY * np.sum((values - values.mean(axis=0)) ** 2, axis=0))


def fill_rows(
    out: np.ndarray,
    x: np.ndarray,
    dx: np.ndarray,
    start: int,
    stop: int,
    lags: int,
    ntrend: int,
    maxlag: int,
) -> None:
    """Write ADF regression rows for times ``t = start .. stop-1`` (indexes into dx) into ``out``.

    Columns: ``x_t`` (the lagged level of Δx_t), ``ntrend`` deterministic terms, ``dx_{t-1..t-lags}``,
    then the target ``dx_t``. The trend is ``t - maxlag + 1`` so it runs 1, 2, ... over the
    selection sample as in statsmodels; any polynomial of the same degree in t spans the same space.
    """
    out[:, 0] = x[start:stop]
    if ntrend:
        trend = np.arange(start - maxlag + 1, stop - maxlag + 1, dtype=np.float64)
        for power in range(ntrend):
            out[:, 1 + power] = trend**power
    for j in range(1, lags + 1):
        out[:, ntrend + j] = dx[start - j : stop - j]
    out[:, -1] = dx[start:stop]


def select_lags(r: np.ndarray, m: int, ntrend: int, maxlag: int, autolag: str | None) -> LagChoice:
    """Choose the lag in ``0..maxlag`` for each factor in ``r`` (shape (B, P+1, P+1)) as statsmodels does.

    ``m`` is the number of rows of the selection sample. With ``c = Qᵀ·Δy`` the last column of
    ``R``, a candidate using the first ``p`` columns leaves ``sum(c[p:]²)`` as its residual sum of
    squares, and the t-statistic of its last regressor is ``±c[p-1] / s_p``.
    """
    target = r[:, :, -1]
    tail = np.cumsum(target[:, ::-1] ** 2, axis=1)[:, ::-1]
    n_columns = 1 + ntrend + np.arange(maxlag + 1)
    rss = tail[:, n_columns]
    members = np.arange(len(r))
    if autolag is None:
        return LagChoice(np.full(len(r), maxlag), None, rss[:, maxlag])
    if autolag == "T-STAT":
        t_last = np.abs(target[:, n_columns - 1]) / np.sqrt(rss / (m - n_columns))
        significant = t_last[:, 1:] >= _T_STAT_STOP
        # From maxlag down, the first significant lag; 0 when none is.
        lags = np.where(significant.any(axis=1), maxlag - np.argmax(significant[:, ::-1], axis=1), 0)
        icbest = t_last[members, lags]
        at_zero = np.flatnonzero(lags == 0)
        if ntrend and len(at_zero):
            # statsmodels puts the deterministic terms first, so its zero-lag candidate ends with
            # the level: its criterion is the level's |t| (ours ends with a trend term).
            p = 1 + ntrend
            empty = np.empty((len(at_zero), 0, p + 1))
            icbest[at_zero] = np.abs(level_tstats(r[at_zero], rss[at_zero, 0], p, empty, m))
        return LagChoice(lags, icbest, rss[members, lags])
    # statsmodels' OLS information criteria: -2·llf + penalty·(number of regressors).
    llf = -0.5 * m * (math.log(2.0 * math.pi) + np.log(rss / m) + 1.0)
    penalty = 2.0 if autolag == "AIC" else math.log(m)
    criteria = -2.0 * llf + penalty * n_columns
    lags = np.argmin(criteria, axis=1)  # first minimum: ties go to the shorter lag, as in statsmodels
    return LagChoice(lags, criteria[members, lags], rss[members, lags])


def level_tstats(r: np.ndarray, rss: np.ndarray, p: int, extra: np.ndarray, nobs: int) -> np.ndarray:
    """t-statistics of the level for the candidates using the first ``p`` columns, refitted with ``extra`` rows.

    ``r`` (B, P+1, P+1) factors the selection sample; ``rss`` (B,) is each candidate's residual
    sum of squares there; ``extra`` (B, e, p+1) holds the rows the candidate's shorter lag adds in
    front of that sample (columns: its regressors then Δy), and ``nobs`` the rows in all. The R
    factor of ``[X_p | Δy]`` on the selection sample is the leading block of ``r`` with the
    residual tail folded into one entry; stacking the extra rows under it and re-triangularising
    gives the factor on the full sample. Moving the level column last first lets its t-statistic
    be read off the triangle: with ``R`` and ``c = Qᵀ·Δy``, the last coefficient is
    ``c[-1] / R[-1, -1]`` and its standard error ``s / |R[-1, -1]|``.
    """
    block = np.zeros((len(r), p + 1 + extra.shape[1], p + 1))
    block[:, :p, :p] = r[:, :p, :p]
    block[:, :p, p] = r[:, :p, -1]
    block[:, p, p] = np.sqrt(rss)
    block[:, p + 1 :] = extra
    level_last = [*range(1, p), 0, p]
    r_full = r_factor(block[:, :, level_last])
    resid_std = np.abs(r_full[:, p, p]) / math.sqrt(nobs - p)
    return np.sign(r_full[:, p - 1, p - 1]) * r_full[:, p - 1, p] / resid_std


def r_factor(a: np.ndarray) -> np.ndarray:
    """The upper-triangular ``R`` of ``a``'s QR factorisation (one per matrix of a stacked ``a``).

    numpy's LAPACK only, never scipy's: they are separate OpenBLAS builds with separate thread
    pools, and the threads of one, still spinning after a recent call (any numpy product), slow
    the other several-fold on a two-core machine.
    """
    # numpy's stubs type every mode of qr as the (Q, R) pair; mode "r" returns R alone.
    return cast(np.ndarray, np.linalg.qr(a, mode="r"))


def mackinnon_pvalues(statistics: np.ndarray, regression: str, n_series: int) -> np.ndarray:
    """statsmodels' ``mackinnonp`` for an array of statistics, bit for bit (coefficients: :mod:`analytics._mackinnon`).

    ``mackinnonp`` takes one statistic and spends ~100 µs in ``scipy.stats.norm.cdf``'s argument
    handling; a scan needs thousands. ``norm.cdf`` of a standard normal is ``ndtr``.
    """
    i = n_series - 1
    small = np.asarray(TAU_SMALL_P[regression][i])[::-1]
    large = np.asarray(TAU_LARGE_P[regression][i])[::-1]
    with np.errstate(invalid="ignore", over="ignore"):  # ±inf statistics are clamped below
        polynomial = np.where(
            statistics <= TAU_STAR[regression][i], np.polyval(small, statistics), np.polyval(large, statistics)
        )
        pvalues = ndtr(polynomial)
    pvalues = np.where(statistics < TAU_MIN[regression][i], 0.0, pvalues)
    return np.where(statistics > TAU_MAX[regression][i], 1.0, pvalues)
