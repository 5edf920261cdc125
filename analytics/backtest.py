"""Backtest of a z-score mean-reversion rule on a hedged pair, on bar closes.

:func:`backtest_mean_reversion` trades the spread ``s_t = y_t - beta_t·x_t - alpha_t`` on the
rolling z-score of that spread: short the spread above ``+entry``, long below ``-entry``, flat
again once the z-score is back at the exit level. Every signal uses information up to its bar's
close only and fills at the next bar's close, so the equity curve of a prefix of the data is a
prefix of the equity curve of all of it.

Perpetual legs pay or receive **funding** (:class:`FundingHistory`, given as data): at each funding
time ``F`` inside the traded span, the quantity held of that leg pays ``qty · mark_F · rate_F``
(``qty`` > 0 long, < 0 short), so a positive rate is a cost to a long leg and a credit to a short
one (longs pay shorts), a negative rate the reverse. ``mark_F`` is the mark price of the funding
event, or the leg's close of the bar in which ``F`` falls when the event has none. The position
held after a bar's close is held until the next close: it pays the funding times in
``(close_t, close_{t+1}]``. So a position **opened** at a close exactly at a funding time does not
pay that one, and a position **closed** at a close exactly at a funding time does: it was held up
to that instant. Spot legs never pay funding.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

import numpy as np
import pandas as pd

from analytics._validate import (
    ArrayLike1D,
    as_1d_float,
    check_int,
    check_same_length,
    check_window,
    index_of,
    require_observations,
    wrap,
)
from analytics.errors import InsufficientDataError
from analytics.regression import MIN_HEDGE_OBS, fit_hedge, rolling_hedge
from analytics.spread import rolling_zscore, zscore_bound

BACKTEST_HEDGES = ("rolling_ols", "kalman", "static_ols", "fixed")
# The options of hedge="fixed": a hedge and a spread scale known before the first bar.
FIXED_HEDGE_OPTIONS = ("beta", "alpha", "std")
# 365 days × 24 h × 60 min: 1-minute bars of a market that trades around the clock (crypto).
MINUTE_BARS_PER_YEAR = 525_600
TRADE_COLUMNS = (
    "entry_time",
    "exit_time",
    "side",
    "entry_z",
    "exit_z",
    "hedge_ratio",
    "entry_y",
    "entry_x",
    "exit_y",
    "exit_x",
    "pnl",
    "costs",
    "funding",
    "bars_held",
    "open",
)


@dataclass(frozen=True, slots=True)
class FundingHistory:
    """The funding events of one perpetual leg, as the backtest takes them (pure data).

    Attributes
    ----------
    leg : str
        The leg's name, for messages (``"ETHUSDT.P"``).
    times_ms : array of int64, shape (m,)
        Funding times, UTC epoch ms, strictly rising.
    rates : array of float, shape (m,)
        Funding rates as fractions per interval (``0.0001`` = 0.01 %), finite, ``|rate| < 1``;
        positive: longs pay shorts.
    marks : array of float, shape (m,)
        Mark price of each event (quote currency), > 0, or NaN where the exchange gave none.
    known_from_ms, known_to_ms : int or None
        The span (UTC epoch ms, inclusive) in which every funding event is in these arrays. A
        position held outside it has unknown funding; None (both): nothing is known.
    """

    leg: str
    times_ms: np.ndarray
    rates: np.ndarray
    marks: np.ndarray
    known_from_ms: int | None
    known_to_ms: int | None

    def __post_init__(self) -> None:
        times = np.asarray(self.times_ms)
        if not (len(times) == len(self.rates) == len(self.marks)):
            raise ValueError(f"funding of {self.leg}: times_ms, rates and marks differ in length "
                             f"({len(times)}, {len(self.rates)}, {len(self.marks)})")
        if len(times) and (times.dtype.kind not in "iu" or np.any(np.diff(times) <= 0)):
            raise ValueError(f"funding of {self.leg}: times_ms must be integer epoch ms, strictly rising")
        rates, marks = np.asarray(self.rates, dtype=np.float64), np.asarray(self.marks, dtype=np.float64)
        if not np.all(np.isfinite(rates) & (np.abs(rates) < 1)):
            raise ValueError(f"funding of {self.leg}: rates must be finite fractions below 1 in size")
        if np.any(marks[~np.isnan(marks)] <= 0) or np.any(np.isinf(marks)):
            raise ValueError(f"funding of {self.leg}: marks must be > 0 (or NaN where unknown)")
        if (self.known_from_ms is None) != (self.known_to_ms is None) or (
                self.known_from_ms is not None and self.known_to_ms is not None
                and self.known_from_ms > self.known_to_ms):
            raise ValueError(f"funding of {self.leg}: known_from_ms {self.known_from_ms} and known_to_ms "
                             f"{self.known_to_ms} must both be None or a span")

    @classmethod
    def none_known(cls, leg: str) -> FundingHistory:
        """A perpetual leg whose funding history is not known at all."""
        return cls(leg, np.empty(0, np.int64), np.empty(0), np.empty(0), None, None)


@dataclass(frozen=True, slots=True)
class BacktestResult:
    """Outcome of :func:`backtest_mean_reversion`. Money is in the quote currency of the prices.

    Attributes
    ----------
    trades : DataFrame, one row per trade, columns ``TRADE_COLUMNS``
        ``entry_time``/``exit_time``: the fill bars (index labels for pandas input, else bar
        positions). ``side``: ``"long"`` or ``"short"`` spread. ``entry_z``/``exit_z``: the
        z-score at the signal bar, the bar before the fill. ``hedge_ratio``: beta at the entry
        signal, units of x per unit of y, held for the life of the trade. ``entry_y``, ``entry_x``,
        ``exit_y``, ``exit_x``: fill prices (closes). ``pnl``: net of ``costs`` (both sides).
        ``bars_held``: bars from entry fill to exit fill. ``open``: True for a trade still open
        on the last bar; it is marked at the last close (``exit_*`` are that bar's values,
        ``exit_z`` its z-score) and carries its entry cost only, as nothing has been sold yet.
        ``funding``: funding received (> 0) or paid (< 0) on perpetual legs while the trade was
        open (see the module docstring), 0.0 with no perpetual leg, NaN where a perpetual leg was
        held while its funding is unknown (``pnl`` is NaN then too). ``pnl`` is
        ``gross - costs + funding``.
    equity : array or Series of float, shape (n,)
        Cumulative net PnL at each bar's close (funding included); 0 until the first fill; NaN
        from the first bar whose funding is unknown on.
    position : array or Series of int, shape (n,)
        Spread units held after each bar's close: +1 long, -1 short, 0 flat.
    zscore : array or Series of float, shape (n,)
        The signal; NaN during the warm-up (``2·window - 2`` bars) and where undefined.
    total_pnl : float
        ``equity[-1]``, equal to the sum of ``trades.pnl`` and to
        ``gross_pnl - total_costs + total_funding``.
    gross_pnl, total_costs, total_funding : float
        Price PnL before costs and funding, the costs charged, and the funding received (> 0) or
        paid (< 0), over all trades; ``total_funding`` (and so ``total_pnl``) is NaN when it is unknown.
    funding_unknown : tuple of str
        One message per perpetual leg held while its funding is unknown, e.g. ``"funding unknown
        for ETHUSDT.P before 2026-12-05 08:00:00 UTC"``; empty when every funding is known.
    sharpe : float
        Annualised Sharpe ratio of the per-bar net PnL (the increments of ``equity``):
        ``mean / std(ddof=1) · sqrt(bars_per_year)``, over the bars from ``2·window - 1`` on (where
        a position can exist; flat bars count as 0). NaN with fewer than 2 such bars or zero
        variance (no trade).
    max_drawdown : float
        Largest fall of ``equity`` from a previous peak, >= 0.
    n_trades : int
        Rows of ``trades``, the open one included.
    win_rate : float
        Share of *closed* trades with ``pnl > 0``; NaN if none closed, or if a closed trade's
        ``pnl`` is unknown (NaN: its funding is), which is neither a win nor a loss.
    window, entry, exit, cost_bps, hedge, bars_per_year
        The arguments used.
    hedge_opts : mapping
        The hedge options used, defaults filled in (``"kalman"``; ``"fixed"``'s own; empty otherwise).
    """

    trades: pd.DataFrame
    equity: np.ndarray | pd.Series
    position: np.ndarray | pd.Series
    zscore: np.ndarray | pd.Series
    total_pnl: float
    sharpe: float
    max_drawdown: float
    n_trades: int
    win_rate: float
    window: int
    entry: float
    exit: float
    cost_bps: float
    hedge: str
    bars_per_year: float
    hedge_opts: Mapping[str, float]
    gross_pnl: float = 0.0
    total_costs: float = 0.0
    total_funding: float = 0.0
    funding_unknown: tuple[str, ...] = ()


def backtest_mean_reversion(
    y: ArrayLike1D,
    x: ArrayLike1D,
    window: int,
    entry: float = 2.0,
    exit: float = 0.0,
    cost_bps: float = 0.0,
    hedge: str = "rolling_ols",
    *,
    bars_per_year: float = MINUTE_BARS_PER_YEAR,
    start: int = 0,
    funding_y: FundingHistory | None = None,
    funding_x: FundingHistory | None = None,
    close_ms: ArrayLike1D | None = None,
    **opts: Any,
) -> BacktestResult:
    """Backtest the z-score mean-reversion rule on the pair ``(y, x)``.

    Signal: ``z_t = rolling_zscore(y - beta·x - alpha, window)`` with ``(beta, alpha)`` from
    ``hedge``. After bar t's close, with the position at that time:

    * flat: ``z_t > entry`` → go short the spread; ``z_t < -entry`` → go long;
    * short: ``z_t <= exit`` → go flat;  long: ``z_t >= -exit`` → go flat (so with ``exit=0``
      both leave when z crosses 0);
    * otherwise, and whenever ``z_t`` is NaN (a constant window, say), keep the position; and
      never open one while ``beta_t`` is NaN (x constant over its window): that would be y alone.

    A bar either closes or opens a position, never both: a position never flips in one bar. The
    order fills at bar t+1's close. There is no stop-loss.

    One unit of the spread is 1 unit of y and ``beta`` units of x with the opposite sign: long =
    buy 1 y, sell ``beta`` x; short = sell 1 y, buy ``beta`` x. ``beta`` is the hedge ratio known
    at the entry signal and stays fixed until the exit. PnL is marked to market on every close.

    Parameters
    ----------
    y, x : array or Series of float, shape (n,)
        Close prices of the two legs on one bar grid, in the quote currency, finite and > 0.
        Series must share an index; the series results then have it too.
    window : int
        Bars in the hedge window and in the z-score window, >= 2 (>= 3 for ``"static_ols"`` and
        ``"kalman"``, whose warm-up line fit needs a residual).
    entry : float
        Entry threshold in standard deviations, > 0 and below ``zscore_bound(window)``
        (``(window - 1) / sqrt(window)``, 2.85 for 10 bars): |z| never exceeds that bound.
    exit : float
        Exit level in standard deviations, ``0 <= exit < entry``.
    cost_bps : float
        Cost per leg per side in basis points of traded notional (``|qty|·price`` of each leg),
        charged at entry and at exit fills; >= 0. Covers fees and slippage alike.
    hedge : {"rolling_ols", "kalman", "static_ols"}
        * ``"rolling_ols"``: :func:`analytics.regression.rolling_hedge` over ``window`` bars.
        * ``"kalman"``: the filtered path of :class:`analytics.regression.KalmanHedge` (state after
          each bar, so causal). Options (``**opts``): ``delta``, ``obs_var``, ``initial_var``,
          ``initial_beta``, ``initial_alpha``. Unless given, ``initial_beta``/``initial_alpha``
          are the OLS fit on the first ``window`` bars and ``obs_var`` its residual variance: the
          filter's own defaults suit prices of order 10–100 only. The first ``window - 1`` bars
          of the path are dropped as burn-in.
        * ``"static_ols"``: one OLS fit on the first ``window`` bars only, applied from bar
          ``window - 1`` on; fitting on all the data would look ahead.
        * ``"fixed"``: a hedge and a spread scale known before the first bar, e.g. fitted on a
          walk-forward's formation window (:mod:`research.walkforward`). Options (all required):
          ``beta``, ``alpha`` (y units) and ``std`` (> 0, y units). The signal is then
          ``z_t = (y_t - beta·x_t - alpha) / std`` on every bar: no rolling window and no warm-up
          (``window`` is checked but unused; |z| has no bound, so any entry > 0 is allowed).
    bars_per_year : float
        Annualisation of the Sharpe ratio, > 0; the default is for 1-minute bars around the clock
        (525,600). Use 31,536,000 for 1-second bars, 252 for daily bars of a stock.
    start : int
        Position of the first bar traded, ``0 <= start < n``. Bars before it only warm the hedge and
        the z-score up (a view's warm-up before its lookback): no position is opened on their
        signals, and every result (equity, trades, Sharpe, ``zscore``) covers the bars from
        ``start`` on, so the signal on each of them is the z-score computed with that warm-up.
    funding_y, funding_x : FundingHistory or None
        The funding events of a perpetual leg (see the module docstring); None for a spot leg,
        which never pays funding.
    close_ms : array of int, shape (n,), optional
        When each close was taken (the bar's end), UTC epoch ms, strictly rising; needed with funding.

    Returns
    -------
    BacktestResult

    Raises
    ------
    InsufficientDataError
        Fewer than ``2·window`` bars: ``window - 1`` bars of hedge warm-up and ``window`` bars of
        z-score warm-up give the first signal at bar ``2·window - 2``; it fills one bar later.
        ``"fixed"`` has no warm-up: it needs 2 bars (a signal and its fill).
    ValueError
        Bad arguments (an entry the z-score cannot reach among them), unknown hedge or option,
        mismatched lengths or indexes, NaN/inf or non-positive prices, constant prices over the
        first ``window`` bars (static fits).
    """
    if hedge not in BACKTEST_HEDGES:
        raise ValueError(f"unknown hedge {hedge!r}; choose one of {', '.join(BACKTEST_HEDGES)}")
    # Kalman options are checked by fit_hedge, which owns them.
    if opts and hedge not in ("kalman", "fixed"):
        raise ValueError(f"hedge {hedge!r} takes no options, got {', '.join(sorted(opts))}")
    entry = _check_real("entry", entry)
    exit = _check_real("exit", exit)
    cost_bps = _check_real("cost_bps", cost_bps)
    bars_per_year = _check_real("bars_per_year", bars_per_year)
    if not entry > 0:
        raise ValueError(f"entry must be > 0, got {entry!r}")
    if not 0 <= exit < entry:
        raise ValueError(f"exit must be in [0, entry) = [0, {entry!r}), got {exit!r}")
    if cost_bps < 0:
        raise ValueError(f"cost_bps must be >= 0, got {cost_bps!r}")
    if not bars_per_year > 0:
        raise ValueError(f"bars_per_year must be > 0, got {bars_per_year!r}")

    yv, xv = as_1d_float("y", y), as_1d_float("x", x)
    index = index_of(y=y, x=x)
    n = check_same_length(y=yv, x=xv)
    window = check_window(window)
    start = check_int("start", start, minimum=0)
    if start >= n:  # no bar to trade yet (e.g. none of the lookback has closed): a wait, not an error
        raise InsufficientDataError(start + 1, n, "backtest_mean_reversion (a bar from start on to trade)")
    if hedge in ("kalman", "static_ols") and window < MIN_HEDGE_OBS:
        raise ValueError(
            f"window must be at least {MIN_HEDGE_OBS} for hedge={hedge!r} (its warm-up line fit needs a residual), "
            f"got {window}"
        )
    bound = math.inf if hedge == "fixed" else zscore_bound(window)
    if entry >= bound:
        raise ValueError(
            f"entry {entry:g} can never be reached with a {window}-bar window: the z-score includes the current bar, "
            f"so |z| ≤ (window−1)/√window = {bound:.2f}; lower the entry or widen the window"
        )
    warmup = 1 if hedge == "fixed" else 2 * window - 1  # first bar at which a position can exist
    require_observations(n, warmup + 1, f"backtest_mean_reversion(window={window})")
    for name, values in (("y", yv), ("x", xv)):
        if values.min() <= 0:
            raise ValueError(f"{name} must be > 0 (prices), got {float(values.min())!r}")

    closes_at = _close_times(close_ms, n, funding_y, funding_x)
    beta, alpha, hedge_opts = _hedge_path(yv, xv, window, hedge, opts)
    if hedge == "fixed":
        z = (yv - beta * xv - alpha) / hedge_opts["std"]
    else:
        z = rolling_zscore(yv - beta * xv - alpha, window)
    # NaN neither opens nor closes: nothing is held before ``start``.
    position, held_beta = _run_rule(np.where(np.arange(n) < start, np.nan, z), beta, entry, exit)
    if start:  # the results cover the traded bars only
        yv, xv, z, position, held_beta = yv[start:], xv[start:], z[start:], position[start:], held_beta[start:]
        closes_at = None if closes_at is None else closes_at[start:]
        index = None if index is None else index[start:]
        n -= start

    # Leg quantities after each close; a fill trades the whole difference from the bar before.
    qty_y = position.astype(np.float64)
    qty_x = -qty_y * held_beta
    bar_pnl = np.zeros(n)
    bar_pnl[1:] = qty_y[:-1] * np.diff(yv) + qty_x[:-1] * np.diff(xv)
    traded_notional = np.abs(np.diff(qty_y, prepend=0.0)) * yv + np.abs(np.diff(qty_x, prepend=0.0)) * xv
    bar_cost = traded_notional * (cost_bps / 10_000.0)
    bar_funding = np.zeros(n)
    unknown: list[str] = []
    for history, qty, prices in ((funding_y, qty_y, yv), (funding_x, qty_x, xv)):
        if history is not None:
            assert closes_at is not None  # _close_times asks for it with funding
            paid, message = _funding(history, qty, prices, closes_at)
            bar_funding += paid
            if message:
                unknown.append(message)
    net = bar_pnl - bar_cost + bar_funding
    equity = np.cumsum(net)

    trades = _trades(position, held_beta, z, yv, xv, bar_cost, bar_funding, index)
    closed = trades.loc[~trades["open"], "pnl"]
    finite = bool(np.all(np.isfinite(equity)))
    return BacktestResult(
        trades=trades,
        equity=wrap(equity, index, "equity"),
        position=wrap(position, index, "position"),
        zscore=wrap(z, index, "zscore"),
        total_pnl=float(equity[-1]),
        sharpe=_sharpe(net[max(0, warmup - start):], bars_per_year) if finite else math.nan,
        max_drawdown=float(np.max(np.maximum.accumulate(equity) - equity)) if finite else math.nan,
        n_trades=len(trades),
        # An unknown PnL (funding unknown) is no loss: the share is unknown then, as the total is.
        win_rate=float((closed > 0).mean()) if len(closed) and not closed.isna().any() else math.nan,
        window=window,
        entry=entry,
        exit=exit,
        cost_bps=cost_bps,
        hedge=hedge,
        bars_per_year=bars_per_year,
        hedge_opts=MappingProxyType(hedge_opts),
        # Price PnL is known whatever funding is: from the fills, not from the (maybe NaN) net.
        gross_pnl=float(_gross(trades).sum()),
        total_costs=float(trades["costs"].sum()),
        total_funding=float(trades["funding"].sum(skipna=False)),
        funding_unknown=tuple(unknown),
    )


def _check_real(name: str, value: float) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a real number, got {value!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return number


def _close_times(close_ms: ArrayLike1D | None, n: int, *funding: FundingHistory | None) -> np.ndarray | None:
    """``close_ms`` as int64 epoch ms, checked: shape (n,), strictly rising; required with funding."""
    if close_ms is None:
        if any(history is not None for history in funding):
            raise ValueError("close_ms: funding needs the time of each close (UTC epoch ms, the bar's end)")
        return None
    times = np.asarray(close_ms)
    if times.ndim != 1 or len(times) != n:
        raise ValueError(f"close_ms must have one time per bar ({n}), got shape {times.shape}")
    if times.dtype.kind not in "iu":
        raise ValueError(f"close_ms must be integer epoch ms, got dtype {times.dtype}")
    times = times.astype(np.int64)
    if n > 1 and np.any(np.diff(times) <= 0):
        raise ValueError("close_ms must be strictly rising")
    return times


def _utc(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _funding(history: FundingHistory, qty: np.ndarray, prices: np.ndarray,
             closes_at: np.ndarray) -> tuple[np.ndarray, str | None]:
    """Funding received (> 0) or paid (< 0) at each bar's close by the leg held ``qty`` (units after
    each close), and a message if it was held while its funding is unknown (those bars are NaN).

    The event at ``F`` falls in bar ``k`` with ``close_{k-1} < F <= close_k`` and is paid by
    ``qty[k-1]``, the quantity held over that interval: ``-qty[k-1] · mark · rate``.
    """
    n = len(qty)
    paid = np.zeros(n)
    if n < 2:
        return paid, None
    times = np.asarray(history.times_ms, dtype=np.int64)
    inside = (times > closes_at[0]) & (times <= closes_at[-1])
    if inside.any():
        bar = np.searchsorted(closes_at, times[inside], side="left")  # close_{bar-1} < F <= close_bar
        marks = np.asarray(history.marks, dtype=np.float64)[inside]
        notional_price = np.where(np.isnan(marks), prices[bar], marks)
        np.add.at(paid, bar, -qty[bar - 1] * notional_price * np.asarray(history.rates, dtype=np.float64)[inside])
    # A bar k held over (close_{k-1}, close_k] needs all of it inside the known span.
    held = np.r_[False, qty[:-1] != 0]
    if history.known_from_ms is None or history.known_to_ms is None:
        early = late = held
    else:
        early = held & (np.r_[closes_at[0], closes_at[:-1]] + 1 < history.known_from_ms)
        late = held & (closes_at > history.known_to_ms)
    if not (early.any() or late.any()):
        return paid, None
    paid[early | late] = np.nan
    if history.known_from_ms is None or history.known_to_ms is None:
        return paid, f"funding unknown for {history.leg}: no funding history"
    parts = ([f"before {_utc(history.known_from_ms)}"] if early.any() else []) + (
        [f"after {_utc(history.known_to_ms)}"] if late.any() else [])
    return paid, f"funding unknown for {history.leg} {' and '.join(parts)}"


def _hedge_path(
    y: np.ndarray, x: np.ndarray, window: int, hedge: str, opts: dict[str, Any]
) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    """Causal ``(beta, alpha)`` paths of shape (n,), NaN before bar ``window - 1``, and the options used."""
    if hedge == "fixed":
        fixed = _fixed_options(opts)
        return np.full(len(y), fixed["beta"]), np.full(len(y), fixed["alpha"]), fixed
    if hedge == "rolling_ols":
        rolling = rolling_hedge(y, x, window)
        return np.asarray(rolling.beta), np.asarray(rolling.alpha), {}
    # Known at the close of bar window - 1: using it from there on looks no further ahead.
    warm = fit_hedge(y[:window], x[:window], "ols")
    burn_in = np.arange(len(y)) < window - 1
    if hedge == "static_ols":
        beta = np.where(burn_in, np.nan, warm.beta)
        alpha = np.where(burn_in, np.nan, warm.alpha)
        return beta, alpha, {}
    defaults: dict[str, float] = {"initial_beta": warm.beta, "initial_alpha": warm.alpha}
    # A warm-up window lying exactly on a line has no residual variance to offer; the filter's
    # own default obs_var applies then.
    if warm.resid_std > 0:
        defaults["obs_var"] = warm.resid_std**2
    used = {**defaults, **opts}
    beta_path, alpha_path = fit_hedge(y, x, "kalman", **used).paths
    beta = np.where(burn_in, np.nan, beta_path)
    alpha = np.where(burn_in, np.nan, alpha_path)
    return beta, alpha, used


def _fixed_options(opts: dict[str, Any]) -> dict[str, float]:
    """The options of hedge="fixed", checked: exactly beta, alpha and std, finite, std > 0."""
    unknown = sorted(set(opts) - set(FIXED_HEDGE_OPTIONS))
    if unknown:
        raise ValueError(f"unknown option(s) for hedge 'fixed': {', '.join(unknown)}; it takes beta, alpha and std")
    missing = [name for name in FIXED_HEDGE_OPTIONS if name not in opts]
    if missing:
        raise ValueError(f"hedge 'fixed' needs {', '.join(missing)} (the hedge and spread scale known beforehand)")
    fixed = {name: _check_real(name, opts[name]) for name in FIXED_HEDGE_OPTIONS}
    if not fixed["std"] > 0:
        raise ValueError(f"std must be > 0 for hedge 'fixed' (the spread's scale), got {opts['std']!r}")
    return fixed


def _run_rule(z: np.ndarray, beta: np.ndarray, entry: float, exit: float) -> tuple[np.ndarray, np.ndarray]:
    """Position (int, shape (n,)) after each close and the hedge ratio it holds (0 when flat).

    The state is path dependent (hysteresis between entry and exit), so this is a loop; over
    Python floats from ``.tolist()`` it takes about 20 ms for 86,400 bars.
    """
    n = len(z)
    position = [0] * n
    held = [0.0] * n
    state, held_beta = 0, 0.0
    # NaN compares False everywhere below, so an undefined z-score neither opens nor closes. An
    # undefined hedge ratio (x flat over its window) never opens either: that would hold y unhedged.
    for t, (z_t, beta_t) in enumerate(zip(z[:-1].tolist(), beta[:-1].tolist(), strict=True)):
        if state == 0 and math.isfinite(beta_t):
            if z_t > entry:
                state, held_beta = -1, beta_t
            elif z_t < -entry:
                state, held_beta = 1, beta_t
        elif (state == 1 and z_t >= -exit) or (state == -1 and z_t <= exit):
            state, held_beta = 0, 0.0
        position[t + 1], held[t + 1] = state, held_beta  # the signal at t fills at t + 1
    return np.array(position, dtype=np.int64), np.array(held)


def _trades(
    position: np.ndarray,
    held_beta: np.ndarray,
    z: np.ndarray,
    y: np.ndarray,
    x: np.ndarray,
    bar_cost: np.ndarray,
    bar_funding: np.ndarray,
    index: pd.Index | None,
) -> pd.DataFrame:
    """One row per trade (see :class:`BacktestResult`), from the position path."""
    n = len(position)
    previous = np.r_[0, position[:-1]]
    # Positions never flip in one bar, so entry and exit fills alternate.
    entries = np.flatnonzero((position != 0) & (previous == 0))
    exits = np.flatnonzero((position == 0) & (previous != 0))
    is_open = np.arange(len(entries)) >= len(exits)
    exits = np.r_[exits, np.full(int(is_open.sum()), n - 1)].astype(np.intp)
    side = position[entries]
    beta = held_beta[entries]
    costs = bar_cost[entries] + np.where(is_open, 0.0, bar_cost[exits])
    gross = side * ((y[exits] - y[entries]) - beta * (x[exits] - x[entries]))
    # Held after the entry close up to the exit close: the funding of bars entry+1 .. exit, NaN if
    # any of them is unknown (counted apart, so an unknown bar never spills into later trades).
    unknown = np.isnan(bar_funding)
    paid = np.r_[0.0, np.cumsum(np.where(unknown, 0.0, bar_funding))]
    gaps = np.r_[0, np.cumsum(unknown)]
    funding = np.where(gaps[exits + 1] > gaps[entries + 1], np.nan, paid[exits + 1] - paid[entries + 1])
    labels = index if index is not None else pd.RangeIndex(n)
    return pd.DataFrame(
        {
            "entry_time": labels[entries],
            "exit_time": labels[exits],
            "side": np.where(side > 0, "long", "short"),
            "entry_z": z[entries - 1],
            "exit_z": np.where(is_open, z[exits], z[exits - 1]),
            "hedge_ratio": beta,
            "entry_y": y[entries],
            "entry_x": x[entries],
            "exit_y": y[exits],
            "exit_x": x[exits],
            "pnl": gross - costs + funding,
            "costs": costs,
            "funding": funding,
            "bars_held": (exits - entries).astype(np.int64),
            "open": is_open,
        },
        columns=list(TRADE_COLUMNS),
    )


def _gross(trades: pd.DataFrame) -> np.ndarray:
    """Each trade's price PnL before costs and funding, from its fills (quote currency)."""
    side = np.where(trades["side"].to_numpy() == "long", 1.0, -1.0)
    dy = trades["exit_y"].to_numpy(np.float64) - trades["entry_y"].to_numpy(np.float64)
    dx = trades["exit_x"].to_numpy(np.float64) - trades["entry_x"].to_numpy(np.float64)
    return side * (dy - trades["hedge_ratio"].to_numpy(np.float64) * dx)


def _sharpe(pnl: np.ndarray, bars_per_year: float) -> float:
    if len(pnl) < 2:
        return math.nan
    std = float(pnl.std(ddof=1))
    if not std > 0:
        return math.nan
    return float(pnl.mean()) / std * math.sqrt(bars_per_year)
