"""Hedge ratios for a pair: ``y ≈ alpha + beta·x``.

Static fits (:func:`fit_hedge` with ``"ols"``, ``"huber"``, ``"theil_sen"``), an adaptive Kalman
filter (``"kalman"``, or :class:`KalmanHedge` one observation at a time) and rolling-window OLS
(:func:`rolling_hedge`). ``y`` and ``x`` are prices (or log prices) of the two legs on one bar
grid; ``beta`` is then units of x per unit of y and ``alpha`` is in y's units.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from analytics._ols import fit_line
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

HEDGE_METHODS = ("ols", "huber", "theil_sen", "kalman")
# Two coefficients and at least one residual degree of freedom for the residual std.
MIN_HEDGE_OBS = 3
# Huber's tuning constant: 95 % efficiency under normal errors (statsmodels' HuberT default).
HUBER_T = 1.345
# Median of |N(0, 1)|: turns the median absolute residual into a normal-consistent scale.
_MAD_NORMAL = 0.6744897501960817


@dataclass(frozen=True, slots=True)
class HedgeFit:
    """A fitted hedge ratio ``y ≈ alpha + beta·x``.

    Attributes
    ----------
    method : str
        One of ``HEDGE_METHODS``.
    beta, alpha : float
        Coefficients; for ``"kalman"`` the latest filtered state.
    nobs : int
        Observations used (Theil–Sen above its cap: see :func:`fit_hedge`).
    resid_std : float
        ``sqrt(sum(resid²) / (nobs - 2))`` with ``resid = y - alpha - beta·x``, in y's units; for
        ``"kalman"`` the residuals use the filtered path at each time.
    r_squared : float or None
        ``1 - SSR/SST`` for ``"ols"``; None for the other methods, where it is not a meaningful
        goodness-of-fit measure.
    beta_path, alpha_path : array or Series of shape (nobs,), or None
        ``"kalman"`` only: the filtered state after each observation (pandas in → Series on the
        input's index).
    """

    method: str
    beta: float
    alpha: float
    nobs: int
    resid_std: float
    r_squared: float | None = None
    beta_path: np.ndarray | pd.Series | None = None
    alpha_path: np.ndarray | pd.Series | None = None

    @property
    def paths(self) -> tuple[np.ndarray | pd.Series, np.ndarray | pd.Series]:
        """``(beta_path, alpha_path)``; ValueError naming the method for a fit without paths (not ``"kalman"``)."""
        if self.beta_path is None or self.alpha_path is None:
            raise ValueError(f"a {self.method!r} hedge fit has one beta, not a path per observation; use 'kalman'")
        return self.beta_path, self.alpha_path


@dataclass(frozen=True, slots=True)
class RollingHedge:
    """Rolling-window OLS hedge ratios (see :func:`rolling_hedge`).

    ``beta`` and ``alpha`` have the input's length (and index, for pandas input); the first
    ``window - 1`` values are NaN.
    """

    window: int
    beta: np.ndarray | pd.Series
    alpha: np.ndarray | pd.Series


@dataclass(frozen=True, slots=True)
class KalmanState:
    """The Kalman filter after one update.

    ``innovation`` is ``y - (beta·x + alpha)`` with the state *before* the update (the one-step
    prediction error, y's units); ``innovation_var`` its predicted variance.
    """

    beta: float
    alpha: float
    innovation: float
    innovation_var: float


class KalmanHedge:
    """Streaming Kalman filter for a time-varying hedge ratio, O(1) per observation.

    State-space model, with state ``θ_t = (beta_t, alpha_t)``::

        θ_t = θ_{t-1} + w_t,            w_t ~ N(0, q·I),   q = delta / (1 - delta)
        y_t = beta_t·x_t + alpha_t + v_t,  v_t ~ N(0, obs_var)
        θ_0 ~ N((initial_beta, initial_alpha), initial_var·I)

    ``delta`` sets how fast the hedge ratio may drift (larger: faster tracking, noisier);
    ``obs_var`` is the variance of y around the line, in y's units squared; ``initial_var`` the
    prior variance of both coefficients (make it large when the prior means are guesses). What
    matters is the ratio: ``q·x² / obs_var`` is roughly the weight one bar gets. The defaults
    (delta 1e-4, obs_var 1e-3) are the usual textbook values (Chan, *Algorithmic Trading*, 2013)
    for daily prices of order 10–100; for other data set ``obs_var`` near the variance of the
    OLS residuals, for example ``fit_hedge(y, x).resid_std ** 2``.

    The covariance update uses the Joseph form, which keeps it symmetric positive definite when
    ``x`` is large (raw prices) and the plain update would cancel catastrophically.

    While ``x`` does not move, the observations identify only ``beta·x + alpha``. Nothing divides
    by a variance of x (the innovation variance is at least ``obs_var``), so there is no 0/0 and no
    NaN: each correction is split between beta and alpha by the covariance (mostly into beta for
    large |x|, into alpha for small), the one-step prediction keeps tracking y, and the uncertainty
    along the unidentified direction grows by ``q`` per bar, so the filter re-learns beta quickly
    once x moves again. Over a flat stretch beta is therefore carried forward, not re-estimated:
    read it as the last hedge ratio the data supported. (:func:`rolling_hedge` has no prior to
    carry and gives NaN for such windows.)
    """

    __slots__ = ("_alpha", "_beta", "_nobs", "_obs_var", "_p00", "_p01", "_p11", "_q")

    def __init__(
        self,
        delta: float = 1e-4,
        obs_var: float = 1e-3,
        initial_var: float = 1.0,
        initial_beta: float = 0.0,
        initial_alpha: float = 0.0,
    ) -> None:
        if not 0.0 < delta < 1.0:
            raise ValueError(f"delta must be in (0, 1), got {delta!r}")
        for name, value in (("obs_var", obs_var), ("initial_var", initial_var)):
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
        for name, value in (("initial_beta", initial_beta), ("initial_alpha", initial_alpha)):
            if not math.isfinite(value):
                raise ValueError(f"{name} must be finite, got {value!r}")
        self._q = delta / (1.0 - delta)
        self._obs_var = float(obs_var)
        self._beta, self._alpha = float(initial_beta), float(initial_alpha)
        self._p00, self._p01, self._p11 = float(initial_var), 0.0, float(initial_var)
        self._nobs = 0

    @property
    def beta(self) -> float:
        """Current hedge ratio."""
        return self._beta

    @property
    def alpha(self) -> float:
        """Current intercept, y's units."""
        return self._alpha

    @property
    def nobs(self) -> int:
        """Observations processed so far."""
        return self._nobs

    @property
    def covariance(self) -> np.ndarray:
        """Current 2×2 state covariance, order (beta, alpha)."""
        return np.array([[self._p00, self._p01], [self._p01, self._p11]])

    def update(self, y: float, x: float) -> KalmanState:
        """Predict, then correct with one observation ``(y, x)``; return the new state."""
        if not (math.isfinite(y) and math.isfinite(x)):
            raise ValueError(f"y and x must be finite, got y={y!r} x={x!r}")
        # Scalar arithmetic on Python floats: a 2×2 problem is far faster this way than in numpy.
        p00, p01, p11 = self._p00 + self._q, self._p01, self._p11 + self._q
        r = self._obs_var
        ph0, ph1 = p00 * x + p01, p01 * x + p11  # P·Hᵀ with H = (x, 1)
        s = x * ph0 + ph1 + r
        k0, k1 = ph0 / s, ph1 / s
        innovation = y - (self._beta * x + self._alpha)
        self._beta += k0 * innovation
        self._alpha += k1 * innovation
        # Joseph form: P ← A·P·Aᵀ + r·K·Kᵀ with A = I - K·H.
        a00, a01, a10, a11 = 1.0 - k0 * x, -k0, -k1 * x, 1.0 - k1
        m00, m01 = a00 * p00 + a01 * p01, a00 * p01 + a01 * p11
        m10, m11 = a10 * p00 + a11 * p01, a10 * p01 + a11 * p11
        self._p00 = m00 * a00 + m01 * a01 + r * k0 * k0
        self._p01 = m00 * a10 + m01 * a11 + r * k0 * k1
        self._p11 = m10 * a10 + m11 * a11 + r * k1 * k1
        self._nobs += 1
        return KalmanState(self._beta, self._alpha, innovation, s)


def fit_hedge(y: ArrayLike1D, x: ArrayLike1D, method: str = "ols", **opts: Any) -> HedgeFit:
    """Fit ``y ≈ alpha + beta·x`` by ``method``.

    Parameters
    ----------
    y, x : array or Series of float, shape (n,)
        The two legs on one bar grid (prices or log prices), finite, n >= 3. Series must share
        an index.
    method : {"ols", "huber", "theil_sen", "kalman"}
        * ``"ols"``: least squares; equals statsmodels ``OLS(y, add_constant(x))``.
        * ``"huber"``: Huber M-estimator by iteratively reweighted least squares, scale the MAD
          of the residuals re-estimated every iteration, starting from OLS; equals statsmodels
          ``RLM(y, add_constant(x), M=HuberT()).fit()`` to within the iteration tolerance.
          Options ``t`` (tuning constant, default 1.345), ``maxiter`` (default 50), ``tol``
          (relative change of both coefficients at which to stop, default 1e-8).
        * ``"theil_sen"``: median of pairwise slopes, intercept ``median(y) - beta·median(x)``;
          equals ``scipy.stats.theilslopes``. It needs all n(n-1)/2 slopes, O(n²) time and
          memory, so above ``max_points`` observations (option, default 2000: about 2 million
          slopes, 16 MB) the slope is taken from ``max_points`` evenly spaced observations
          (deterministic), while the intercept still uses all medians.
        * ``"kalman"``: :class:`KalmanHedge` run over the data; options ``delta``, ``obs_var``,
          ``initial_var``, ``initial_beta``, ``initial_alpha``. Reports the final state plus
          the paths.

    Raises
    ------
    InsufficientDataError
        Fewer than 3 observations.
    ValueError
        Unknown method or option, mismatched lengths or indexes, NaN/inf, constant y or x.
    """
    if method not in _FITTERS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(HEDGE_METHODS)}")
    fitter, accepted = _FITTERS[method]
    unknown = sorted(set(opts) - accepted)
    if unknown:
        raise ValueError(
            f"unknown option(s) for method {method!r}: {', '.join(unknown)}; "
            f"accepted: {', '.join(sorted(accepted)) or 'none'}"
        )
    yv, xv = as_1d_float("y", y), as_1d_float("x", x)
    index = index_of(y=y, x=x)
    n = check_same_length(y=yv, x=xv)
    require_observations(n, MIN_HEDGE_OBS, f"fit_hedge({method!r})")
    check_not_constant("x", xv, "hedge ratio undefined")
    check_not_constant("y", yv, "hedge ratio undefined")
    fit = fitter(yv, xv, **opts)
    if index is not None and fit.beta_path is not None and fit.alpha_path is not None:
        fit = replace(
            fit, beta_path=wrap(fit.beta_path, index, "beta"), alpha_path=wrap(fit.alpha_path, index, "alpha")
        )
    return fit


def rolling_hedge(y: ArrayLike1D, x: ArrayLike1D, window: int) -> RollingHedge:
    """OLS hedge ratio over a trailing window of ``window`` bars, in O(n).

    Value ``t`` is the OLS fit of ``y[t-window+1 : t+1]`` on ``x[...]`` with a constant, so it
    uses no data after ``t``; the first ``window - 1`` values are NaN. Where x is constant over a
    window (every value equal, tested exactly), beta and alpha are NaN (undefined) for that window,
    whatever the price level: never 0 or another made-up number.

    Parameters
    ----------
    y, x : array or Series of float, shape (n,)
        Finite; Series must share an index (the output then has it too).
    window : int
        Bars per window, at least 2 and at most n.
    """
    yv, xv = as_1d_float("y", y), as_1d_float("x", x)
    index = index_of(y=y, x=x)
    n = check_same_length(y=yv, x=xv)
    window = check_window(window)
    require_observations(n, window, f"rolling_hedge(window={window})")
    # Each window's moments from its own values only: exact to rounding, whatever left the window
    # (pandas' online updates kept a residue of a far larger value for as long as the series ran).
    moments = window_moments([xv, yv], window, [(0, 0), (0, 1)])
    var_x, cov_xy = moments.comoments[(0, 0)], moments.comoments[(0, 1)]
    beta = np.full(n, np.nan)
    # Undefined where x does not move: tested exactly, not by "variance > 0", which rounding can fake.
    defined = ~flat_windows(xv, window) & (var_x > 0)
    np.divide(cov_xy, var_x, out=beta, where=defined)
    alpha = moments.mean(1) - beta * moments.mean(0)
    return RollingHedge(window, wrap(beta, index, "beta"), wrap(alpha, index, "alpha"))


def _fit_ols(y: np.ndarray, x: np.ndarray) -> HedgeFit:
    beta, alpha = fit_line(y, x)
    resid = y - alpha - beta * x
    centred = y - y.mean()
    ssr = float(resid @ resid)
    r_squared = 1.0 - ssr / float(centred @ centred)
    return HedgeFit("ols", beta, alpha, len(y), _resid_std(ssr, len(y)), r_squared)


def _fit_huber(
    y: np.ndarray,
    x: np.ndarray,
    *,
    t: float = HUBER_T,
    maxiter: int = 50,
    tol: float = 1e-8,
) -> HedgeFit:
    if not t > 0:
        raise ValueError(f"t must be > 0, got {t!r}")
    maxiter = check_int("maxiter", maxiter, minimum=1)
    beta, alpha = fit_line(y, x)
    resid = y - alpha - beta * x
    for _ in range(maxiter):
        scale = float(np.median(np.abs(resid))) / _MAD_NORMAL
        if scale == 0.0:
            break  # over half the points lie exactly on the line: the fit cannot improve
        z = np.abs(resid) / scale
        weights = np.where(z <= t, 1.0, t / np.maximum(z, t))
        new_beta, new_alpha = fit_line(y, x, weights)
        resid = y - new_alpha - new_beta * x
        converged = _settled(beta, new_beta, tol) and _settled(alpha, new_alpha, tol)
        beta, alpha = new_beta, new_alpha
        if converged:
            break
    return HedgeFit("huber", beta, alpha, len(y), _resid_std(float(resid @ resid), len(y)))


def _fit_theil_sen(y: np.ndarray, x: np.ndarray, *, max_points: int = 2000) -> HedgeFit:
    max_points = check_int("max_points", max_points, minimum=MIN_HEDGE_OBS)
    n = len(y)
    ys, xs = y, x
    if n > max_points:
        keep = np.linspace(0, n - 1, max_points).round().astype(np.intp)
        ys, xs = y[keep], x[keep]
    slopes = _pairwise_slopes(ys, xs)
    if slopes.size == 0:
        raise ValueError(f"x is constant over the {max_points} subsampled points; hedge ratio undefined")
    beta = float(np.median(slopes))
    alpha = float(np.median(y) - beta * np.median(x))
    resid = y - alpha - beta * x
    return HedgeFit("theil_sen", beta, alpha, n, _resid_std(float(resid @ resid), n))


def _fit_kalman(y: np.ndarray, x: np.ndarray, **filter_opts: float) -> HedgeFit:
    kalman = KalmanHedge(**filter_opts)
    beta_path, alpha_path = np.empty(len(y)), np.empty(len(y))
    for t, (y_t, x_t) in enumerate(zip(y.tolist(), x.tolist(), strict=True)):
        state = kalman.update(y_t, x_t)
        beta_path[t], alpha_path[t] = state.beta, state.alpha
    resid = y - alpha_path - beta_path * x
    return HedgeFit(
        "kalman",
        kalman.beta,
        kalman.alpha,
        len(y),
        _resid_std(float(resid @ resid), len(y)),
        beta_path=beta_path,
        alpha_path=alpha_path,
    )


def _pairwise_slopes(y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Slopes ``(y_j - y_i) / (x_j - x_i)`` over all pairs with ``x_i != x_j``.

    Walks the pairs by index offset, so memory is the n(n-1)/2 slopes alone rather than scipy's
    n×n difference matrices.
    """
    n = len(y)
    slopes = np.empty(n * (n - 1) // 2)
    filled = 0
    for offset in range(1, n):
        dx = x[offset:] - x[:-offset]
        dy = y[offset:] - y[:-offset]
        distinct = dx != 0
        count = int(distinct.sum())
        # dy/dx equals (-dy)/(-dx) exactly in IEEE arithmetic, so the direction of a pair is moot.
        np.divide(dy[distinct], dx[distinct], out=slopes[filled : filled + count])
        filled += count
    return slopes[:filled]


def _settled(old: float, new: float, tol: float) -> bool:
    """Whether an iterate moved by at most ``tol`` relative to its size (absolute near zero)."""
    return abs(new - old) <= tol * max(1.0, abs(new))


def _resid_std(ssr: float, nobs: int) -> float:
    return math.sqrt(ssr / (nobs - 2))


_FITTERS: dict[str, tuple[Callable[..., HedgeFit], frozenset[str]]] = {
    "ols": (_fit_ols, frozenset()),
    "huber": (_fit_huber, frozenset({"t", "maxiter", "tol"})),
    "theil_sen": (_fit_theil_sen, frozenset({"max_points"})),
    "kalman": (
        _fit_kalman,
        frozenset({"delta", "obs_var", "initial_var", "initial_beta", "initial_alpha"}),
    ),
}
