"""Everything the dashboard shows about one pair, computed in one pass from aligned bars.

Pure: aligned closes in, a frozen :class:`PairAnalytics` out. Each analytic that lacks data is
reported as a :class:`Needs` (which :class:`Analytic`, how many bars it needs and has) instead of
raising, and switches on by itself once enough bars exist. Numbers and enums only: what a user
reads of them ("needs 37 more bars (≈ 37 s)") is written in :mod:`ui.labels`.
"""

from __future__ import annotations

import enum
import functools
import math
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from analytics import (
    HalfLife,
    InsufficientDataError,
    fit_hedge,
    half_life,
    log_returns,
    rolling_correlation,
    rolling_hedge,
    rolling_moments,
    rolling_zscore,
    spread,
)
from domain import Regression, check_window

# The analytics method that fits each regression (analytics.fit_hedge / rolling_hedge names).
_METHODS = {Regression.ROLLING_OLS: "rolling_ols", Regression.STATIC_OLS: "ols", Regression.HUBER: "huber",
            Regression.THEIL_SEN: "theil_sen", Regression.KALMAN: "kalman"}
# The Kalman prior is an OLS fit over the first bars; β is reported from the last of them on, so no value
# depends on a later bar.
KALMAN_PRIOR_BARS = 30
MIN_HALF_LIFE_BARS = 20


class Analytic(enum.Enum):
    """An analytic of a pair that may still be waiting for bars (:class:`Needs`)."""

    HEDGE_RATIO = "hedge_ratio"
    ZSCORE = "zscore"
    CORRELATION = "correlation"
    HALF_LIFE = "half_life"


@dataclass(frozen=True, slots=True)
class Needs:
    """An analytic waiting for data: how many bars it needs and has.

    ``reason``: why the bars it has do not serve (e.g. a constant leg during a quiet minute, in
    the fit's own words), None when it only needs more of them.
    """

    what: Analytic
    required: int
    available: int
    reason: str | None = None

    @property
    def missing(self) -> int:
        return max(self.required - self.available, 0)


@dataclass(frozen=True, slots=True)
class PairParams:
    """Dashboard controls that shape the pair analytics."""

    y: str
    x: str
    window: int = 60
    regression: Regression = Regression.ROLLING_OLS
    log_prices: bool = False
    z_threshold: float = 2.0

    def __post_init__(self) -> None:
        if self.y == self.x:
            raise ValueError(f"pick two different symbols for Y and X (both are {self.y})")
        object.__setattr__(self, "window", check_window(self.window))
        if not isinstance(self.regression, Regression):
            raise ValueError(f"regression: {self.regression!r} is not one of {', '.join(r.value for r in Regression)}")

    @property
    def warmup_bars(self) -> int:
        """Bars to compute on before the first shown one so that β, the z-score and the correlation are
        defined there: a window for β and another for its z-score, or for the Kalman filter the prior's
        bars and then the z-score's window."""
        if self.regression is Regression.KALMAN:
            return max(2 * self.window, KALMAN_PRIOR_BARS + self.window)
        return 2 * self.window

    @property
    def span_free(self) -> bool:
        """Whether past values never change as the span moves (:attr:`domain.Regression.span_free`)."""
        return self.regression.span_free


def span_slice(index: pd.Index, start: pd.Timestamp | None, end: pd.Timestamp | None) -> slice:
    """Positions of a sorted time ``index`` at or after ``start`` and before ``end`` (None: no bound
    on that side).

    A slice, found by binary search: cutting with it makes views, not copies (pandas'
    copy-on-write keeps them safe), so cutting a day of 1 s bars costs microseconds, not the
    milliseconds a boolean mask takes on every refresh.
    """
    first = 0 if start is None else int(index.searchsorted(start, side="left"))
    last = len(index) if end is None else int(index.searchsorted(end, side="left"))
    return slice(first, max(first, last))


@dataclass(frozen=True)  # no slots: the half-life is fitted when first asked for (cached_property)
class PairAnalytics:
    """Aligned series (one value per bar, NaN during warm-up) and latest values for one pair.

    ``waiting``: analytics other than the half-life that still need bars. The half-life, a
    statistic of the whole span, is fitted on first use (:attr:`half_life`, :attr:`needs`): a
    view is cut several times a refresh (lookback, chart step) and most cuts never show it.
    """

    params: PairParams
    index: pd.DatetimeIndex
    y: pd.Series
    x: pd.Series
    beta: pd.Series | None
    alpha: pd.Series | None
    spread: pd.Series | None
    spread_mean: pd.Series | None
    spread_std: pd.Series | None
    zscore: pd.Series | None
    correlation: pd.Series | None
    r_squared: float | None
    waiting: tuple[Needs, ...] = field(default=())

    @functools.cached_property
    def _half_life_fit(self) -> tuple[HalfLife | None, Needs | None]:
        return _half_life(self.spread, len(self.index))

    @property
    def half_life(self) -> HalfLife | None:
        """Mean-reversion half-life of the spread's defined values over this span; None where it
        cannot be fitted yet (too few bars: see :attr:`needs`)."""
        return self._half_life_fit[0]

    @property
    def needs(self) -> tuple[Needs, ...]:
        """Every analytic still waiting for bars, the half-life included."""
        need = self._half_life_fit[1]
        return self.waiting + ((need,) if need is not None else ())

    def since(self, start: pd.Timestamp | None, end: pd.Timestamp | None = None) -> PairAnalytics:
        """These series from ``start`` on (all for None), and before ``end`` if given.

        Per-bar values stay those computed on the whole input (a rolling value depends on its own
        window only); the half-life, a statistic of the whole span, is fitted on the cut (when asked).
        """
        if start is None and end is None:
            return self

        def crop(series: pd.Series | None) -> pd.Series | None:
            # Each on its own index: the correlation of returns starts a bar later than the closes.
            return None if series is None else series.iloc[span_slice(series.index, start, end)]

        return replace(self, index=self.index[span_slice(self.index, start, end)], y=crop(self.y), x=crop(self.x),
                       beta=crop(self.beta), alpha=crop(self.alpha), spread=crop(self.spread),
                       spread_mean=crop(self.spread_mean), spread_std=crop(self.spread_std),
                       zscore=crop(self.zscore), correlation=crop(self.correlation))

    @property
    def latest(self) -> dict[str, float]:
        """Last finite value of each headline series (NaN where none)."""
        return {name: _last(series) for name, series in (
            ("beta", self.beta), ("alpha", self.alpha), ("spread", self.spread), ("zscore", self.zscore),
            ("correlation", self.correlation))}


def compute_pair(closes: pd.DataFrame, params: PairParams) -> PairAnalytics:
    """Hedge ratio, spread, z-score, rolling correlation of returns and half-life for Y vs X.

    ``closes``: aligned close prices (quote currency) with columns including ``params.y`` and
    ``params.x``, one row per bar. The spread is ``y - βx - α`` in price (or log-price) units.
    """
    y_raw, x_raw = closes[params.y].astype(float), closes[params.x].astype(float)
    y, x = (np.log(y_raw), np.log(x_raw)) if params.log_prices else (y_raw, x_raw)
    n, window = len(closes), params.window
    needs: list[Needs] = []

    beta = alpha = None
    r_squared = None
    method, in_sample = _METHODS[params.regression], params.regression.in_sample
    try:
        beta, alpha, r_squared = _hedge(y, x, method, window, in_sample)
    except InsufficientDataError as exc:
        needs.append(Needs(Analytic.HEDGE_RATIO, max(exc.required, window if method == "rolling_ols" else 0), n))
    except ValueError as exc:  # e.g. a constant leg during a quiet minute
        needs.append(Needs(Analytic.HEDGE_RATIO, n + 1, n, str(exc)))

    spread_series = mean = std = z = None
    if beta is not None:
        spread_series = spread(y, x, beta, alpha)
        if n >= window:  # else the band stays None, like every series still warming up
            # The z-score's own moments: exactly 0 wide on a flat window, where pandas' rolling std leaves ~1e-9.
            moments = rolling_moments(spread_series, window)
            mean, std = moments.mean, moments.std
        if spread_series.notna().sum() >= window:
            z = rolling_zscore(spread_series, window)
        else:
            needs.append(Needs(Analytic.ZSCORE, _first_valid(spread_series) + window, n))

    correlation = None
    returns_needed = window + 1
    if n >= returns_needed:
        correlation = rolling_correlation(log_returns(y_raw), log_returns(x_raw), window)
    else:
        needs.append(Needs(Analytic.CORRELATION, returns_needed, n))

    return PairAnalytics(params, closes.index, y_raw, x_raw, beta, alpha, spread_series, mean, std, z,
                         correlation, r_squared, tuple(needs))


def extend_pair(pair: PairAnalytics, closes: pd.DataFrame) -> PairAnalytics | None:
    """``pair`` followed by the analytics of the rows of ``closes`` after its last bar, or None where
    only computing the whole again is right.

    Rolling OLS is the one fit whose every value depends only on its own trailing window, so the
    new bars' β, spread, band, z-score and correlation are computed on them and the last
    ``2 × window`` bars before them (what a z-score's window of spreads reaches back to) instead
    of on the whole span: a closed bar of a day's lookback costs its own bars, not the day. The
    values equal the whole computation's to rounding (each window's moments come from its own
    values; only where the blocks of their sums start differs); the
    half-life, a statistic of the whole span, is fitted on the result. None for in-sample fits (each new
    bar moves every value) and the Kalman filter (its prior is fitted on the span's first bars, which
    move with the span's start), and while any analytic still waits for bars.

    ``closes``: aligned closes as for :func:`compute_pair`, the rows ``pair`` was computed on first.
    """
    p = pair.params
    if not p.span_free or pair.waiting or not len(pair.index):
        return None
    last = pair.index[-1]
    new = closes.iloc[closes.index.searchsorted(last, side="right"):]
    if not len(new):
        return pair
    context = 2 * p.window
    series = (pair.beta, pair.alpha, pair.spread, pair.spread_mean, pair.spread_std, pair.zscore, pair.correlation)
    if len(pair.index) < context or pair.correlation is None or any(s is None for s in series):
        return None
    recent = pd.DataFrame({p.y: pair.y.iloc[-context:], p.x: pair.x.iloc[-context:]})
    part = compute_pair(pd.concat([recent, new[[p.y, p.x]]]), p)
    if part.waiting:
        return None
    index = pair.index.append(new.index)

    def joined(old: pd.Series, fresh: pd.Series, on: pd.Index = index) -> pd.Series:
        # The new bars are the last rows of the part; one index for every series on the bars.
        return pd.Series(np.concatenate([old.to_numpy(), fresh.to_numpy()[-len(new):]]), index=on, name=old.name)

    return replace(pair, index=index, y=joined(pair.y, part.y), x=joined(pair.x, part.x),
                   beta=joined(pair.beta, part.beta), alpha=joined(pair.alpha, part.alpha),
                   spread=joined(pair.spread, part.spread), spread_mean=joined(pair.spread_mean, part.spread_mean),
                   spread_std=joined(pair.spread_std, part.spread_std), zscore=joined(pair.zscore, part.zscore),
                   correlation=joined(pair.correlation, part.correlation, pair.correlation.index.append(new.index)))


def _half_life(spread_series: pd.Series | None, n: int) -> tuple[HalfLife | None, Needs | None]:
    """Half-life of the spread's defined values (a span-wide statistic), or what it still needs."""
    if spread_series is None:
        return None, None
    valid = spread_series.dropna()
    if len(valid) < MIN_HALF_LIFE_BARS:
        return None, Needs(Analytic.HALF_LIFE, _first_valid(spread_series) + MIN_HALF_LIFE_BARS, n)
    try:
        return half_life(valid), None
    except ValueError as exc:
        return None, Needs(Analytic.HALF_LIFE, len(valid) + 1, len(valid), str(exc))


def _hedge(y: pd.Series, x: pd.Series, method: str, window: int,
           in_sample: bool) -> tuple[pd.Series, pd.Series, float | None]:
    """β and α as series on y's index (constant for in-sample fits), plus R² where defined."""
    if method == "rolling_ols":
        rolling = rolling_hedge(y, x, window)
        return rolling.beta, rolling.alpha, None
    if in_sample:
        fit = fit_hedge(y, x, method)
        return (pd.Series(fit.beta, index=y.index, name="beta"), pd.Series(fit.alpha, index=y.index, name="alpha"),
                fit.r_squared)
    if len(y) < KALMAN_PRIOR_BARS:
        raise InsufficientDataError(KALMAN_PRIOR_BARS, len(y), "kalman prior")
    prior = fit_hedge(y.iloc[:KALMAN_PRIOR_BARS], x.iloc[:KALMAN_PRIOR_BARS], "ols")
    kalman = fit_hedge(y, x, "kalman", obs_var=max(prior.resid_std**2, 1e-12), initial_beta=prior.beta,
                       initial_alpha=prior.alpha, initial_var=max(abs(prior.beta), 1.0))
    beta_path, alpha_path = kalman.paths  # on y's index: y is a Series
    # The prior is known at the close of its last bar: a filtered value before that bar would depend on
    # later bars (changing bar 29 moved β at bar 0), so those bars are warming up (NaN), as in the backtest.
    warming = np.arange(len(y)) < KALMAN_PRIOR_BARS - 1
    return pd.Series(beta_path).mask(warming), pd.Series(alpha_path).mask(warming), None


@dataclass(frozen=True, slots=True)
class LiveContext:
    """What the live z-score needs from the last closed bars: β, α and the last window−1 spreads."""

    beta: float
    alpha: float
    recent_spreads: np.ndarray  # oldest first
    log_prices: bool


@dataclass(frozen=True, slots=True)
class LiveValues:
    """The live panel's numbers at the latest trades (NaN where undefined): prices in quote currency,
    β, the spread in the pair's spread units and the open bar's z-score."""

    y_price: float
    x_price: float
    beta: float
    spread: float
    zscore: float


def live_context(pair: PairAnalytics) -> LiveContext | None:
    """β, α and the last window−1 spreads of the closed bars ``pair`` was computed on, or None when
    the last closed bar has no hedge (a flat window, warm-up) or those spreads are not all defined:
    then there is no live z either."""
    if pair.spread is None or pair.beta is None or pair.alpha is None or not len(pair.beta):
        return None
    beta, alpha = pair.beta.iloc[-1], pair.alpha.iloc[-1]
    if not (np.isfinite(beta) and np.isfinite(alpha)):
        return None
    recent = pair.spread.to_numpy()[-(pair.params.window - 1):]
    if len(recent) < pair.params.window - 1 or not np.all(np.isfinite(recent)):
        return None
    return LiveContext(float(beta), float(alpha), recent, pair.params.log_prices)


def live_values(y_price: float | None, x_price: float | None, context: LiveContext | None) -> LiveValues:
    """The live panel's numbers from the last trade prices and the closed bars' context."""
    y = math.nan if y_price is None else y_price
    x = math.nan if x_price is None else x_price
    if context is None or y_price is None or x_price is None:
        return LiveValues(y, x, math.nan if context is None else context.beta, math.nan, math.nan)
    spread_now = pair_spread_now(y_price, x_price, context.beta, context.alpha, context.log_prices)
    return LiveValues(y, x, context.beta, spread_now, live_zscore(context.recent_spreads, spread_now))


def live_zscore(recent_spreads: np.ndarray, spread_now: float) -> float:
    """Z-score of the current (open-bar) spread against the window it completes.

    ``recent_spreads``: the last ``window - 1`` closed-bar spreads, oldest first. Same definition as
    :func:`analytics.rolling_zscore` (ddof=1, the current value inside its own window), so the
    live number becomes the charted one when the bar closes. NaN if undefined (a flat window).
    """
    values = np.append(np.asarray(recent_spreads, dtype=float), spread_now)
    # Flatness is tested exactly: numpy's std of sixty equal prices can be ~1e-13, not 0.
    if len(values) < 2 or not np.all(np.isfinite(values)) or values.max() == values.min():
        return math.nan
    return float((spread_now - values.mean()) / values.std(ddof=1))


def pair_spread_now(y_price: float, x_price: float, beta: float, alpha: float, log_prices: bool) -> float:
    """The spread ``y - βx - α`` at the latest trade prices (log prices when ``log_prices``)."""
    if log_prices:
        return math.log(y_price) - beta * math.log(x_price) - alpha
    return y_price - beta * x_price - alpha


def _first_valid(series: pd.Series) -> int:
    """Position of the first non-NaN value (len if none): warm-up bars before it count as used."""
    valid = np.flatnonzero(series.notna().to_numpy())
    return int(valid[0]) if len(valid) else len(series)


def _last(series: pd.Series | None) -> float:
    if series is None:
        return math.nan
    valid = series.dropna()
    return float(valid.iloc[-1]) if len(valid) else math.nan
