"""A fake engine fed second by second, for comparing shared pair views with cold computations.

:class:`FakeEngine` has what :class:`pairs.shared.SharedAnalytics` asks of an engine (``bars``,
``market_now_ms``, ``close_due_bars``, ``symbols``) over the real :class:`~ingestion.live_bars.LiveBars`,
with a market clock the caller moves. :class:`Scenario` describes an arrival sequence of two legs
(one quiet for a while at the start, trades arriving late, flat stretches, thin bars) and
:func:`arrivals` turns it into the trades that reach the engine in each second.
:func:`view_mismatch` says how a view extended bar by bar differs from a cold one on the bars it shows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ingestion.engine import BAR_CLOSE_GRACE_MS
from ingestion.live_bars import LiveBars
from pairs.bars import BarHistory
from pairs.shared import PairView
from records import Trade
from storage import Site

SYMBOLS = ("ETHUSDT", "BTCUSDT")  # (Y, X)
T0_MS = 1_767_225_600_000  # 2026-01-01 00:00 UTC
SERIES = ("beta", "alpha", "spread", "zscore", "correlation")


class FakeEngine:
    """Live 1 s bars of ``symbols`` and a market clock (UTC epoch ms) moved by :meth:`feed`."""

    def __init__(self, symbols: tuple[str, ...] = SYMBOLS) -> None:
        self.symbols = symbols
        self.bars = LiveBars()
        self.now: int | None = None

    def market_now_ms(self) -> int | None:
        return self.now

    def close_due_bars(self) -> None:
        if self.now is not None:
            self.bars.advance(self.now - BAR_CLOSE_GRACE_MS)

    def feed(self, trades: list[Trade], now_ms: int) -> None:
        """Deliver ``trades`` (in order) and move the clock to ``now_ms``."""
        for trade in trades:
            self.bars.update(trade)
        self.now = now_ms


def empty_history(directory: Path) -> BarHistory:
    """A site without a database: every bar comes from the engine."""
    return BarHistory(Site("fake", directory / "absent.sqlite3"))


@dataclass(frozen=True, slots=True)
class Scenario:
    """Two legs' trades second by second.

    ``quiet_s``: seconds at the start in which X (and ``y_quiet_s`` for Y) does not trade.
    ``p_y``/``p_x``: chance that a leg trades in a second; ``max_trades``: 1 to this many trades
    then. ``lag_s``: X's trades of second t reach the engine in second ``t + lag`` (late bars).
    ``flat_every``: every that many seconds a stretch of ``flat_len`` seconds with unchanged prices.
    ``gap_at``/``gap_len``: a stretch where neither leg trades. ``x_pause_every``/``x_pause_len``: X
    stops trading for ``x_pause_len`` seconds every ``x_pause_every`` seconds (Y goes on).
    """

    seconds: int
    seed: int
    quiet_s: int = 0
    y_quiet_s: int = 0
    p_y: float = 0.9
    p_x: float = 0.9
    max_trades: int = 3
    lag_s: int = 0
    flat_every: int = 0
    flat_len: int = 0
    gap_at: int = -1
    gap_len: int = 0
    x_pause_every: int = 0
    x_pause_len: int = 0


def arrivals(s: Scenario) -> list[list[Trade]]:
    """The trades reaching the engine in each second of ``s`` (a list per second)."""
    rng = np.random.default_rng(s.seed)
    n = s.seconds
    steps = rng.normal(0, 1e-3, n)
    if s.flat_every:
        for start in range(s.flat_every, n, s.flat_every):
            steps[start:start + s.flat_len] = 0.0
    x = 100 * np.exp(np.cumsum(steps))
    y = 2 * x + 5 + np.cumsum(rng.normal(0, 0.02, n)) * (steps != 0)
    delivered: list[list[Trade]] = [[] for _ in range(n + s.lag_s + 1)]
    ids = {symbol: 0 for symbol in SYMBOLS}
    for t in range(n):
        if s.gap_at <= t < s.gap_at + s.gap_len:
            continue
        for symbol, price, p, quiet, lag in ((SYMBOLS[0], y[t], s.p_y, s.y_quiet_s, 0),
                                              (SYMBOLS[1], x[t], s.p_x, s.quiet_s, s.lag_s)):
            paused = symbol == SYMBOLS[1] and s.x_pause_every > 0 and t % s.x_pause_every < s.x_pause_len
            if t < quiet or paused or rng.random() >= p:
                continue
            for k in range(int(rng.integers(1, s.max_trades + 1))):
                ids[symbol] += 1
                jitter = float(rng.normal(0, 1e-4)) if price != 0 else 0.0
                traded = float(price) * (1 + (0.0 if s.flat_every and steps[t] == 0 else jitter))
                delivered[t + lag].append(Trade(symbol, ids[symbol], T0_MS + t * 1_000 + 10 * k + (5 if lag else 0),
                                                0, traded, 0.1 + 0.05 * k, False))
    return delivered


def _scale(series: pd.Series) -> float:
    values = np.abs(series.to_numpy(dtype=float))
    values = values[np.isfinite(values)]
    return max(1.0, float(values.max())) if len(values) else 1.0


def view_mismatch(cached: PairView, cold: PairView, tolerance: float = 1e-9) -> str | None:
    """What differs between two views on the bars they show (their lookback), or None when they
    agree: the same bars, and every series (β, α, spread, z-score, correlation, half-life) equal to
    ``tolerance`` relative to the series' scale, with NaN in the same places."""
    a, b = cached.shown(), cold.shown()
    if (a.pair is None) != (b.pair is None):
        return f"pair computed in one view only (cached {a.pair is not None}, cold {b.pair is not None})"
    if a.pair is None or b.pair is None:
        return None
    if not a.pair.index.equals(b.pair.index):
        return (f"different bars: cached {len(a.pair.index)} from {a.pair.index[:1].tolist()}, "
                f"cold {len(b.pair.index)} from {b.pair.index[:1].tolist()}")
    for name in SERIES:
        left, right = getattr(a.pair, name), getattr(b.pair, name)
        if left is None or right is None:
            if (left is None) != (right is None):
                return f"{name}: None in one view only"
            continue
        if not left.index.equals(right.index):
            return f"{name}: different index"
        lv, rv = left.to_numpy(dtype=float), right.to_numpy(dtype=float)
        if not np.array_equal(np.isnan(lv), np.isnan(rv)):
            where = int(np.flatnonzero(np.isnan(lv) != np.isnan(rv))[0])
            return f"{name}: NaN pattern differs first at {left.index[where]} (cached {lv[where]}, cold {rv[where]})"
        both = ~np.isnan(lv)
        worst = float(np.max(np.abs(lv[both] - rv[both]), initial=0.0))
        if worst > tolerance * _scale(right):
            return f"{name}: differs by {worst:.3g}"
    left_hl, right_hl = a.pair.half_life, b.pair.half_life
    if (left_hl is None) != (right_hl is None):
        return "half-life fitted in one view only"
    if left_hl is not None and right_hl is not None:
        lb, rb = left_hl.lambda_, right_hl.lambda_
        if not (math.isclose(lb, rb, rel_tol=tolerance, abs_tol=tolerance) and left_hl.nobs == right_hl.nobs):
            return f"half-life differs (λ {lb} vs {rb}, nobs {left_hl.nobs} vs {right_hl.nobs})"
    return None
