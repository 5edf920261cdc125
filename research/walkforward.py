"""Walk-forward: is a pair found cointegrated in one window still a pair in the window after?

A pair is *found* on a formation window (the scanner's Engle–Granger test, Benjamini–Hochberg over
every pair tested in that window) and then watched, untouched, over the trading window that
follows: its spread with the formation's hedge, its half-life, the z-score rule's trades and PnL
after costs, and whether it *stays* cointegrated.

Windows (:func:`walk_forward_windows`) are consecutive (formation, trading) spans of whole bars of
the timeframe: the first formation starts at the span's first bar, a trading window starts where
its formation ends, and each next window starts ``step`` bars (default: the trading length) after
the one before, so with the default the trading windows tile the span. Only complete windows are
used; the bars after the last one are left out.

**Staying.** A pair stays cointegrated out of sample when the ADF test (constant, the scan's
lag selection) on its trading-window spread ``y - β·x``, with the formation's β, rejects a unit
root at ``stay_p`` (default 5 %) with MacKinnon's one-series p-value. Why not an Engle–Granger
re-test: that would re-estimate β on the trading window and test a spread nobody traded; β is
known here (fixed before the window), so the spread is one given series and the plain ADF
distribution is the right one (Engle–Granger's stricter values pay for estimating β). The
constant lets the spread revert to a new level: a relation that shifts but still reverts counts
as staying, and ``oos_mean_shift`` and the PnL show what the shift cost. For two unrelated random
walks the trading spread is a random walk, so about ``stay_p`` of such pairs "stay" by chance:
``base_stay_share`` in the summary is that baseline measured over every pair of the window.

**Trading.** The trading window is traded by :func:`analytics.backtest.backtest_mean_reversion`
with ``hedge="fixed"``: the formation's β and α, and the z-score ``(spread - formation mean) /
formation std``, so nothing about the trading window is known when it starts. ``entries`` and
``exits`` count the rule's crossings (``|z| > entry`` opens, back to ``exit`` closes, fills at the
next close). A position still open at the window's last bar is closed there (its exit cost is
charged) but not counted in ``exits``. Perpetual legs (``ETHUSDT.P``) pay or receive funding at
each funding time held over, from the funding histories given (:class:`analytics.backtest.FundingHistory`,
the backtest's own rule): ``oos_funding``, included in ``oos_pnl``. Funding unknown over a held
span makes both NaN (the note says which leg and when), never a silent zero; with no histories
given at all, perpetual legs' PnL is without funding and the note says so.

**No look-ahead.** Formation numbers use only the formation window's bars and trading numbers
only the trading window's, with the formation's estimates: changing a trading bar changes no
formation number (tests/test_research_walkforward.py checks it on prefixes of the data).

The block kernel :func:`evaluate_window` (closes of a block's symbols + a list of pairs → one row
per pair; :func:`evaluate_windows` for every window at once) is what a distributed runner maps
over blocks; :func:`add_q_values` then adjusts over the whole window's family and
:func:`summarise` reduces to one row per window. :func:`walk_forward` does all three in one process.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any

import numpy as np
import pandas as pd

from analytics._unitroot import NTREND, adf_required
from analytics.backtest import MINUTE_BARS_PER_YEAR, FundingHistory, backtest_mean_reversion
from analytics.errors import InsufficientDataError
from analytics.scan import COLLINEAR, DEFAULT_MIN_BARS, MIN_SCAN_BARS, OK, benjamini_hochberg, scan_pairs
from analytics.stationarity import adf, half_life
from domain import PERP_SUFFIX, Timeframe
from pairs.funding import is_perpetual

# Formation statistics come from the scanner and are adjusted by add_q_values; the oos_* columns
# describe the trading window with the formation's hedge.
WALK_COLUMNS = (
    "window",
    "y",
    "x",
    "beta",
    "alpha",
    "spread_mean",
    "spread_std",
    "eg_stat",
    "eg_pvalue",
    "half_life",
    "n_formation",
    "status",
    "note",
    "oos_adf_stat",
    "oos_adf_pvalue",
    "stays",
    "oos_half_life",
    "oos_mean_shift",
    "entries",
    "exits",
    "oos_pnl",
    "oos_funding",
    "oos_return",
    "n_trading",
    "oos_status",
    "oos_note",
)
SUMMARY_COLUMNS = (
    "window",
    "formation_start",
    "trading_start",
    "trading_end",
    "pairs",
    "found",
    "found_oos",
    "stayed",
    "stay_share",
    "stay_low",
    "stay_high",
    "base_stay_share",
    "mean_return_found",
    "mean_return_all",
)
# Statuses of the trading window: tested, or why not.
NOT_FORMED, OOS_FLAT, OOS_INSUFFICIENT = "not_formed", "flat_leg", "insufficient_data"
# Bars a trading window needs at least: fewer test nothing useful (the scanner's own floor).
MIN_TRADING_BARS = MIN_SCAN_BARS
TRENDS = ("c", "n")
# Two-sided 95 % normal quantile of the Wilson interval (1.959963984540054).
_Z95 = NormalDist().inv_cdf(0.975)

Progress = Callable[[int, int], None]


@dataclass(frozen=True, slots=True)
class WalkForwardSettings:
    """What a walk-forward study does; lengths in bars of its timeframe (see :meth:`of` for durations).

    Attributes
    ----------
    formation, trading : int
        Bars in each formation window (at least the scan's ``min_bars``) and trading window (at
        least ``MIN_TRADING_BARS``, 30).
    step : int
        Bars from one window's start to the next's, >= 1; 0 means "the trading length", so the
        trading windows tile the span. A step shorter than ``trading`` overlaps trading windows.
    trend, maxlag, autolag, min_bars
        The scanner's Engle–Granger settings (:func:`analytics.scan.scan_pairs`); ``trend`` is
        "c" or "n" (a fitted time trend would have to be extrapolated into the trading window).
        ``maxlag``/``autolag`` also drive the trading window's ADF test. ``min_bars`` defaults to
        the scanner's (60, or more when ``maxlag`` needs it).
    entry, exit : float
        The z-score rule's thresholds, in formation standard deviations: ``entry > 0``,
        ``0 <= exit < entry``.
    cost_bps : float
        Cost per leg per side, basis points of traded notional (>= 0), as in the backtest.
    found_q : float
        A pair is found when its formation q-value is below this (0 < found_q < 1).
    stay_p : float
        It stays when the trading window's ADF p-value is below this (0 < stay_p < 1).
    bars_per_year : float
        Passed to the backtest (its Sharpe ratio); the default is for 1-minute bars.
    """

    formation: int
    trading: int
    step: int = 0
    trend: str = "c"
    maxlag: int | None = None
    autolag: str | None = "aic"
    min_bars: int | None = None
    entry: float = 2.0
    exit: float = 0.0
    cost_bps: float = 0.0
    found_q: float = 0.05
    stay_p: float = 0.05
    bars_per_year: float = MINUTE_BARS_PER_YEAR
    scan_min_bars: int = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.trend not in TRENDS:
            raise ValueError(f"trend: {self.trend!r} is not one of {', '.join(TRENDS)} (a walk-forward extrapolates "
                             "no time trend into its trading window)")
        for name in ("formation", "trading", "step"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer):
                raise ValueError(f"{name} must be a whole number of bars, got {value!r}")
        if self.maxlag is not None and (isinstance(self.maxlag, bool) or not isinstance(self.maxlag, int)
                                        or self.maxlag < 0):
            raise ValueError(f"maxlag must be a whole number >= 0 or None, got {self.maxlag!r}")
        # The bars the formation's Engle–Granger test (ADF without deterministic terms on the residual)
        # and the trading window's stay test (ADF with a constant) need with a fixed maxlag; with the
        # default maxlag both adapt to the bars at hand.
        formation_need = adf_required(self.maxlag or 0, 0)
        floor = max(DEFAULT_MIN_BARS, formation_need)
        min_bars = floor if self.min_bars is None else self.min_bars
        if isinstance(min_bars, bool) or not isinstance(min_bars, int) or min_bars < MIN_SCAN_BARS:
            raise ValueError(f"min_bars must be a whole number >= {MIN_SCAN_BARS}, got {self.min_bars!r}")
        if min_bars < formation_need:  # the scanner would refuse it inside the first window
            raise ValueError(f"min_bars must be at least {formation_need} for the Engle–Granger test with maxlag "
                             f"{self.maxlag}, got {min_bars}")
        object.__setattr__(self, "scan_min_bars", min_bars)
        if self.formation < min_bars:
            raise ValueError(f"formation must be at least {min_bars} bars (the scan's min_bars), got {self.formation}")
        if self.trading < MIN_TRADING_BARS:
            raise ValueError(f"trading must be at least {MIN_TRADING_BARS} bars, got {self.trading}")
        stay_need = adf_required(self.maxlag or 0, NTREND["c"])
        if self.maxlag is not None and self.trading < stay_need:
            # Otherwise no pair of any window could be tested out of sample: a study with no stays at all.
            raise ValueError(f"trading must be at least {stay_need} bars for the stay test's ADF with maxlag "
                             f"{self.maxlag}, got {self.trading}")
        if self.step < 0:
            raise ValueError(f"step must be >= 1 bar (or 0 for the trading length), got {self.step}")
        if self.step == 0:
            object.__setattr__(self, "step", int(self.trading))
        for name in ("entry", "exit", "cost_bps", "found_q", "stay_p", "bars_per_year"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
        if not self.entry > 0 or not 0 <= self.exit < self.entry:
            raise ValueError(f"entry must be > 0 and exit in [0, entry), got entry {self.entry!r}, exit {self.exit!r}")
        if self.cost_bps < 0:
            raise ValueError(f"cost_bps must be >= 0, got {self.cost_bps!r}")
        for name in ("found_q", "stay_p"):
            if not 0 < getattr(self, name) < 1:
                raise ValueError(f"{name} must be between 0 and 1, got {getattr(self, name)!r}")
        if not self.bars_per_year > 0:
            raise ValueError(f"bars_per_year must be > 0, got {self.bars_per_year!r}")

    @classmethod
    def of(cls, timeframe: Timeframe | str, formation: int | str | pd.Timedelta, trading: int | str | pd.Timedelta,
           step: int | str | pd.Timedelta | None = None, **options: object) -> WalkForwardSettings:
        """Settings with lengths given as bars (int) or durations (``"30D"``, ``"7D"``, a Timedelta).

        A duration must be a whole number of ``timeframe`` bars: ValueError naming the setting
        otherwise (``formation: '90s' is not a whole number of 1m bars``).
        """
        frame = Timeframe.of(timeframe)
        lengths = {name: bars_of(name, value, frame) for name, value in
                   (("formation", formation), ("trading", trading), ("step", step)) if value is not None}
        return cls(**lengths, **options)  # type: ignore[arg-type]  # options are checked in __post_init__


def bars_of(name: str, value: int | str | pd.Timedelta, timeframe: Timeframe) -> int:
    """``value`` in bars of ``timeframe``: an int is bars already; a duration must be a whole number of bars."""
    if isinstance(value, bool | float):  # pd.Timedelta would read a float as nanoseconds
        raise ValueError(f"{name}: {value!r} is neither a whole number of bars nor a duration such as '30D'")
    if isinstance(value, int | np.integer):
        return int(value)
    try:
        duration = pd.Timedelta(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: {value!r} is neither a number of bars nor a duration such as '30D'") from None
    if pd.isna(duration):
        raise ValueError(f"{name}: {value!r} is not a duration")
    milliseconds = duration.value / 1_000_000
    if milliseconds <= 0 or milliseconds % timeframe.ms:
        raise ValueError(f"{name}: {value!r} is not a whole positive number of {timeframe.name} bars")
    return int(milliseconds // timeframe.ms)


@dataclass(frozen=True, slots=True)
class Window:
    """One (formation, trading) pair of spans; times are bar starts (UTC), ends exclusive.

    Formation bars start in ``[formation_start, trading_start)``, trading bars in
    ``[trading_start, trading_end)``. ``number`` counts from 0; ``bar_ms`` is the bar length (a
    bar's close is taken at its start + ``bar_ms``, when funding is due).
    """

    number: int
    formation_start: pd.Timestamp
    trading_start: pd.Timestamp
    trading_end: pd.Timestamp
    bar_ms: int


def walk_forward_windows(start: pd.Timestamp, end: pd.Timestamp, timeframe: Timeframe | str,
                         settings: WalkForwardSettings) -> list[Window]:
    """The complete windows of the span ``[start, end)`` (bar starts, UTC), in order (see the module docstring).

    ValueError naming the settings when the span holds no complete window.
    """
    frame = Timeframe.of(timeframe)
    start, end = _utc(start), _utc(end)
    bar = pd.Timedelta(milliseconds=frame.ms)
    span_bars = int((end - start) // bar) if end > start else 0
    needed = settings.formation + settings.trading
    if span_bars < needed:
        raise ValueError(f"the span {start} to {end} holds {span_bars} {frame.name} bars; one window needs "
                         f"formation + trading = {settings.formation} + {settings.trading} = {needed}")
    count = (span_bars - needed) // settings.step + 1
    return [Window(number, start + number * settings.step * bar, start + (number * settings.step
                   + settings.formation) * bar, start + (number * settings.step + needed) * bar, frame.ms)
            for number in range(count)]


@dataclass(frozen=True, slots=True)
class WalkForwardResult:
    """A whole study: its settings, windows, one row per (window, pair) and one per window.

    ``rows`` has the columns of ``WALK_COLUMNS`` plus ``q_value`` (:func:`add_q_values`);
    ``summary`` those of ``SUMMARY_COLUMNS`` (:func:`summarise`).
    """

    settings: WalkForwardSettings
    timeframe: Timeframe
    windows: tuple[Window, ...]
    rows: pd.DataFrame
    summary: pd.DataFrame


def walk_forward(closes: pd.DataFrame, timeframe: Timeframe | str, settings: WalkForwardSettings, *,
                 funding: Mapping[str, FundingHistory] | None = None, perpetuals: bool = False,
                 progress: Progress | None = None) -> WalkForwardResult:
    """Every pair of ``closes``' columns over every complete window of its span, in this process.

    ``closes``: bar closes (quote currency, > 0, NaN for a missing bar), one column per leg,
    indexed by bar start (a UTC ``DatetimeIndex`` on the ``timeframe`` grid, increasing), as
    :meth:`storage.research.ResearchStore.closes` returns them. The span runs from the first bar
    to the end of the last. ``funding``, ``perpetuals``: as for :func:`evaluate_window`. ``progress(done, total)``
    is called after each window.
    """
    frame = Timeframe.of(timeframe)
    index = _check_index(closes, frame)
    if progress is not None and not callable(progress):
        raise ValueError(f"progress must be callable, got {progress!r}")
    windows = walk_forward_windows(index[0], index[-1] + pd.Timedelta(milliseconds=frame.ms), frame, settings)
    pairs = list(itertools.combinations(closes.columns, 2))
    parts = []
    for done, window in enumerate(windows, start=1):
        parts.append(evaluate_window(closes, pairs, window, settings, funding=funding, perpetuals=perpetuals))
        if progress is not None:
            progress(done, len(windows))
    rows = add_q_values(pd.concat(parts, ignore_index=True))
    return WalkForwardResult(settings, frame, tuple(windows), rows, summarise(rows, windows, settings))


def evaluate_window(closes: pd.DataFrame, pairs: Iterable[tuple[Hashable, Hashable]], window: Window,
                    settings: WalkForwardSettings, *,
                    funding: Mapping[str, FundingHistory] | None = None, perpetuals: bool = False) -> pd.DataFrame:
    """The block kernel: one row per pair of ``pairs`` over ``window`` (columns ``WALK_COLUMNS``).

    ``closes`` holds (at least) the pairs' symbols over (at least) the window's span, indexed by
    bar start (UTC); only the rows inside the window are read. A pair is tested in the scanner's
    ordering (``y`` the leg whose label sorts first), whichever way it is given. ``eg_pvalue`` is
    raw: :func:`add_q_values` adjusts it over the window's whole family once every block is in.

    ``funding``: the funding history of perpetual legs by leg name (``"ETHUSDT.P"``), covering
    at least the trading window. A perpetual leg missing from it has unknown funding (its pairs'
    PnL is NaN, named in ``oos_note``); ``None`` means no funding data at all: PnL without
    funding, and the note of each pair with a perpetual leg says so. Spot legs never pay funding.

    ``perpetuals``: the columns are exchange symbols of USDⓈ-M perpetuals (a um research store's
    ``ETHUSDT``, whose leg name is ``ETHUSDT.P``): every leg pays funding, looked up in ``funding``
    and named in notes by its leg name. By default a leg is a perpetual when its name says so.

    ValueError naming the problem for a pair whose leg is not a column, a pair of one symbol,
    or closes the scanner refuses (inf, a price <= 0) inside the window.
    """
    _check_index_type(closes)
    wanted = _ordered(pairs, closes.columns)
    symbols = list(dict.fromkeys(symbol for pair in wanted for symbol in pair))
    formation = closes.loc[(closes.index >= window.formation_start) & (closes.index < window.trading_start), symbols]
    trading = closes.loc[(closes.index >= window.trading_start) & (closes.index < window.trading_end), symbols]
    _check_trading(trading)
    by_pair = _formation_scan(formation, wanted, settings)
    # Column access on numpy arrays: a DataFrame's column selection costs ~1 ms a pair.
    position = {symbol: i for i, symbol in enumerate(symbols)}
    formed = formation.to_numpy(dtype=np.float64, na_value=np.nan)
    traded = trading.to_numpy(dtype=np.float64, na_value=np.nan)
    close_ms = np.asarray((trading.index - _EPOCH) // pd.Timedelta(milliseconds=1), dtype=np.int64) + window.bar_ms
    records = [_pair_row(window.number, by_pair[pair], formed[:, [position[pair[0]], position[pair[1]]]],
                         traded[:, [position[pair[0]], position[pair[1]]]],
                         _Funding.of(pair, funding, close_ms, perpetuals), settings) for pair in wanted]
    return pd.DataFrame.from_records(records, columns=list(WALK_COLUMNS)) if records else _empty_rows()


def evaluate_windows(closes: pd.DataFrame, pairs: Iterable[tuple[Hashable, Hashable]], windows: Sequence[Window],
                     settings: WalkForwardSettings, *,
                     funding: Mapping[str, FundingHistory] | None = None, perpetuals: bool = False) -> pd.DataFrame:
    """:func:`evaluate_window` over several windows, rows concatenated in window order.

    One task of a distributed runner: the closes of a block's symbols over the whole span, read
    once, and the block's pairs over every window (``walk_forward_windows`` of the span).
    """
    wanted = list(pairs)
    parts = [evaluate_window(closes, wanted, window, settings, funding=funding, perpetuals=perpetuals)
             for window in windows]
    return pd.concat(parts, ignore_index=True) if parts else _empty_rows()


def _formation_scan(formation: pd.DataFrame, wanted: list[tuple[Hashable, Hashable]],
                    settings: WalkForwardSettings) -> dict[tuple[Hashable, Hashable], Any]:
    """The scanner's row (a namedtuple of ``SCAN_COLUMNS``) of each wanted pair, keyed by (y, x).

    The scanner tests every pair of the columns it is given, sharing work between them. When the
    wanted pairs are at least half of all pairs of their symbols (every pair, or a block of one
    symbol set against another) one scan of those symbols costs least; a sparse list (say
    disjoint pairs of many symbols) is scanned pair by pair instead of testing ~all pairs of the
    union for a few of them. Either way a pair's numbers depend on its two legs only.
    """
    symbols = list(dict.fromkeys(symbol for pair in wanted for symbol in pair))
    if 2 * len(wanted) >= len(symbols) * (len(symbols) - 1) // 2:
        groups = [symbols] if len(symbols) >= 2 else []
    else:
        groups = [list(pair) for pair in wanted]
    by_pair: dict[tuple[Hashable, Hashable], Any] = {}
    for group in groups:
        scan = scan_pairs(formation[group], trend=settings.trend, maxlag=settings.maxlag, autolag=settings.autolag,
                          window=2, min_bars=settings.scan_min_bars)
        by_pair.update((pair, row) for pair, row in zip(zip(scan["y"], scan["x"], strict=True),
                                                        scan.itertuples(index=False), strict=True))
    return by_pair


def add_q_values(rows: pd.DataFrame) -> pd.DataFrame:
    """``rows`` (from :func:`evaluate_window`, any blocks of any windows) with a ``q_value`` column.

    ``q_value`` is Benjamini–Hochberg over every pair tested in the same window (status "ok" or
    "collinear"), as the scanner adjusts; NaN for untested pairs. Every block of a window must
    be in ``rows``: the family is the window's whole set of tested pairs.
    """
    missing = [c for c in ("window", "y", "x", "eg_pvalue", "status") if c not in rows.columns]
    if missing:
        raise ValueError(f"rows lack the column(s) {', '.join(missing)}; pass evaluate_window's rows")
    repeated = rows.duplicated(["window", "y", "x"])
    if repeated.any():  # the same pair from two blocks would count twice in the family
        first = rows.loc[repeated].iloc[0]
        raise ValueError(f"rows hold window {first['window']}'s pair ({first['y']}, {first['x']}) more than once: "
                         "each pair belongs to one block")
    out = rows.copy()
    q_value = np.full(len(out), np.nan)
    tested = out["status"].isin((OK, COLLINEAR)).to_numpy()
    windows = out["window"].to_numpy()
    pvalues = out["eg_pvalue"].to_numpy(dtype=np.float64)
    for number in np.unique(windows[tested]):
        members = np.flatnonzero(tested & (windows == number))
        q_value[members] = benjamini_hochberg(pvalues[members])
    out["q_value"] = q_value
    return out


def summarise(rows: pd.DataFrame, windows: Sequence[Window], settings: WalkForwardSettings) -> pd.DataFrame:
    """One row per window (columns ``SUMMARY_COLUMNS``) from ``rows`` with q-values (:func:`add_q_values`).

    ``pairs`` were tested in formation; ``found`` of them have ``q_value < found_q``;
    ``found_oos`` of those could be tested on the trading window (both legs moving, enough bars)
    and ``stayed`` of those stay cointegrated (module docstring). ``stay_share = stayed /
    found_oos`` with its 95 % Wilson score interval ``[stay_low, stay_high]`` (NaN when nothing
    was found). ``base_stay_share``: the share of every pair tested on the trading window that
    stays, found or not: what chance and the market give without the formation test.
    ``mean_return_found``/``mean_return_all``: mean ``oos_return`` (trading-window PnL after
    costs and funding per unit of gross notional at the window's first bar) over the found pairs
    and over every traded pair; a pair whose return is NaN (funding unknown) is left out.
    """
    if "q_value" not in rows.columns:
        raise ValueError("rows lack q_value; call add_q_values on every block of the windows first")
    records = []
    for window in windows:
        own = rows[rows["window"] == window.number]
        tested = own["status"].isin((OK, COLLINEAR))
        found = tested & (own["q_value"] < settings.found_q)
        judged = own["stays"].notna()
        stays = own["stays"].where(judged, False).astype(bool)
        found_oos = int((found & judged).sum())
        stayed = int((found & judged & stays).sum())
        low, high = wilson_interval(stayed, found_oos)
        records.append({
            "window": window.number,
            "formation_start": window.formation_start,
            "trading_start": window.trading_start,
            "trading_end": window.trading_end,
            "pairs": int(tested.sum()),
            "found": int(found.sum()),
            "found_oos": found_oos,
            "stayed": stayed,
            "stay_share": stayed / found_oos if found_oos else math.nan,
            "stay_low": float(low),
            "stay_high": float(high),
            "base_stay_share": float(stays[judged].mean()) if judged.any() else math.nan,
            "mean_return_found": _mean(own.loc[found, "oos_return"]),
            "mean_return_all": _mean(own["oos_return"]),
        })
    return pd.DataFrame.from_records(records, columns=list(SUMMARY_COLUMNS))


def wilson_interval(successes: int, trials: int, z: float = _Z95) -> tuple[float, float]:
    """Wilson's score interval for a binomial share (95 % by default); (NaN, NaN) with no trials.

    Unlike the normal approximation it stays inside [0, 1] and is not empty at 0 or ``trials``
    successes, where walk-forward shares often sit. Equal to statsmodels'
    ``proportion_confint(method="wilson")`` (whose import pulls in scipy.stats: seconds per worker).
    """
    if trials == 0:
        return math.nan, math.nan
    share = successes / trials
    centre = (share + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z / (1 + z * z / trials) * math.sqrt(share * (1 - share) / trials + z * z / (4 * trials * trials))
    return max(0.0, centre - half), min(1.0, centre + half)


def _mean(values: pd.Series) -> float:
    finite = values.to_numpy(dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    return float(finite.mean()) if len(finite) else math.nan


@dataclass(frozen=True, slots=True)
class _Funding:
    """What a pair's trading window needs for funding: the histories of its perpetual legs (None for
    spot), the close time of every trading bar (UTC epoch ms), and a note when none was given."""

    y: FundingHistory | None
    x: FundingHistory | None
    close_ms: np.ndarray
    note: str

    @classmethod
    def of(cls, pair: tuple[Hashable, Hashable], funding: Mapping[str, FundingHistory] | None,
           close_ms: np.ndarray, perpetuals: bool = False) -> _Funding:
        # A um store's columns are exchange symbols: the leg name (ETHUSDT.P) is what funding is keyed by.
        names = [f"{leg}{PERP_SUFFIX}" if perpetuals and not is_perpetual(str(leg)) else str(leg) for leg in pair]
        perpetual = [name for name in names if perpetuals or is_perpetual(name)]
        if funding is None:
            note = f"funding of {' and '.join(perpetual)} not included (no funding history given)" if perpetual else ""
            return cls(None, None, close_ms, note)
        y, x = (funding.get(name, FundingHistory.none_known(name)) if name in perpetual else None for name in names)
        return cls(y, x, close_ms, "")


def _pair_row(number: int, scanned: Any, formation: np.ndarray, trading: np.ndarray, funding: _Funding,
              settings: WalkForwardSettings) -> dict[str, object]:
    """The row of one pair: the scanner's formation numbers, then the trading window's.

    ``formation`` and ``trading``: the window's closes of (y, x), shape (bars, 2), NaN for a missing bar.
    """
    y, x = scanned.y, scanned.x
    row: dict[str, object] = {name: math.nan for name in WALK_COLUMNS}
    row.update(window=number, y=y, x=x, beta=scanned.beta, alpha=scanned.alpha, eg_stat=scanned.eg_stat,
               eg_pvalue=scanned.eg_pvalue, half_life=scanned.half_life, n_formation=int(scanned.n_bars),
               status=scanned.status, note=scanned.note, stays=pd.NA, entries=0, exits=0, oos_status=NOT_FORMED,
               oos_note="", n_trading=0)
    present = np.isfinite(trading).all(axis=1)
    legs = trading[present]
    row["n_trading"] = len(legs)
    if scanned.status != OK:
        row["oos_note"] = "not tested in formation" if scanned.status != COLLINEAR else "collinear in formation"
        return row
    both = formation[np.isfinite(formation).all(axis=1)]  # the rows the scanner used
    spread = both[:, 0] - scanned.beta * both[:, 1] - scanned.alpha
    mean, std = float(spread.mean()), float(spread.std(ddof=1))
    row.update(spread_mean=mean, spread_std=std)
    if len(legs) < MIN_TRADING_BARS:
        row.update(oos_status=OOS_INSUFFICIENT,
                   oos_note=f"{len(legs)} trading bars where both legs are finite; needs {MIN_TRADING_BARS}")
        return row
    flat = [str(name) for leg, name in enumerate((y, x)) if np.ptp(legs[:, leg]) == 0]
    if flat:
        row.update(oos_status=OOS_FLAT,
                   oos_note="; ".join(f"{name} is constant over the {len(legs)} trading bars" for name in flat))
        return row
    row.update(_trade(legs[:, 0], legs[:, 1], scanned.beta, scanned.alpha, mean, std, settings,
                      funding, funding.close_ms[present]))
    return row


def _trade(y: np.ndarray, x: np.ndarray, beta: float, alpha: float, mean: float, std: float,
           settings: WalkForwardSettings, funding: _Funding, close_ms: np.ndarray) -> dict[str, object]:
    """The trading window of one pair with the formation's hedge: the stay test, half-life and the
    rule's PnL after costs and funding (``close_ms``: each of these bars' close, UTC epoch ms)."""
    spread = y - beta * x - alpha
    out: dict[str, object] = {"oos_status": OK, "oos_note": ""}
    notes = [funding.note] if funding.note else []
    try:
        test = adf(spread, maxlag=settings.maxlag, autolag=settings.autolag, regression="c")
        out.update(oos_adf_stat=test.statistic, oos_adf_pvalue=test.pvalue, stays=bool(test.pvalue < settings.stay_p))
    except ValueError as exc:  # too few bars for maxlag, or a constant spread (collinear legs): no test
        out.update(oos_status=OOS_INSUFFICIENT if isinstance(exc, InsufficientDataError) else OOS_FLAT)
        notes.append(f"no ADF test on the trading spread: {exc}")
    try:
        out["oos_half_life"] = half_life(spread).bars
    except ValueError as exc:
        notes.append(f"no half-life: {exc}")
    out["oos_mean_shift"] = (float(spread.mean()) - mean) / std if std > 0 else math.nan
    if std > 0:
        with_funding = funding.y is not None or funding.x is not None
        result = backtest_mean_reversion(y, x, 2, entry=settings.entry, exit=settings.exit, cost_bps=settings.cost_bps,
                                         hedge="fixed", bars_per_year=settings.bars_per_year, beta=beta,
                                         alpha=alpha + mean, std=std, funding_y=funding.y, funding_x=funding.x,
                                         close_ms=close_ms if with_funding else None)
        notes.extend(result.funding_unknown)
        trades = result.trades
        still_open = trades[trades["open"]]
        # Close what is still open at the window's last close: the exit cost the backtest leaves out.
        closing = float((still_open["exit_y"] + still_open["hedge_ratio"].abs() * still_open["exit_x"]).sum())
        pnl = result.total_pnl - closing * settings.cost_bps / 10_000.0
        out.update(entries=int(result.n_trades), exits=int(result.n_trades - len(still_open)), oos_pnl=pnl,
                   oos_funding=result.total_funding if with_funding else (math.nan if funding.note else 0.0),
                   oos_return=pnl / (y[0] + abs(beta) * x[0]))
    else:
        notes.append("the formation spread is constant; no z-score to trade")
    out["oos_note"] = "; ".join(notes)
    return out


def _ordered(pairs: Iterable[tuple[Hashable, Hashable]], columns: pd.Index) -> list[tuple[Hashable, Hashable]]:
    """Each pair as (y, x) in the scanner's ordering (y's label sorts first as text), checked."""
    known = set(columns)
    if columns.has_duplicates:
        raise ValueError("closes has duplicate columns; give each symbol one column")
    ordered = []
    for pair in pairs:
        if len(pair) != 2:
            raise ValueError(f"a pair has two legs, got {pair!r}")
        a, b = pair
        for leg in (a, b):
            if leg not in known:
                raise ValueError(f"pair {pair!r}: {leg!r} is not a column of closes")
        if a == b:
            raise ValueError(f"pair {pair!r} has the same symbol twice")
        ordered.append((a, b) if str(a) <= str(b) else (b, a))
    if len(set(ordered)) < len(ordered):  # it would count twice in its window's q-values
        twice = next(pair for pair in ordered if ordered.count(pair) > 1)
        raise ValueError(f"pair {twice!r} is listed twice (in either order); list each pair once")
    return ordered


def _check_trading(trading: pd.DataFrame) -> None:
    """The scanner checks the formation's closes; the trading window's get the same two checks."""
    values = trading.to_numpy(dtype=np.float64, na_value=np.nan)
    for position, name in enumerate(trading.columns):
        column = values[:, position]
        if np.isinf(column).any():
            raise ValueError(f"closes column {name} contains inf; use NaN for a missing bar")
        if (column <= 0).any():
            raise ValueError(f"closes column {name} has a price <= 0; closes must be positive prices")


def _check_index_type(closes: pd.DataFrame) -> None:
    if not isinstance(closes, pd.DataFrame):
        raise ValueError(f"closes must be a DataFrame with one column per symbol, got {type(closes).__name__}")
    if not isinstance(closes.index, pd.DatetimeIndex) or closes.index.tz is None:
        raise ValueError("closes must be indexed by bar start times (a tz-aware UTC DatetimeIndex)")


def _check_index(closes: pd.DataFrame, timeframe: Timeframe) -> pd.DatetimeIndex:
    """The closes' index, checked: UTC bar starts on the timeframe's grid, strictly increasing, not empty."""
    _check_index_type(closes)
    index = pd.DatetimeIndex(closes.index).tz_convert("UTC")
    if len(index) == 0:
        raise ValueError("closes has no rows; a walk-forward needs bars")
    if not index.is_monotonic_increasing or index.has_duplicates:
        raise ValueError("closes' index must be strictly increasing bar start times (sorted, no duplicates)")
    offsets = (index - index[0]) // pd.Timedelta(milliseconds=1)
    if (np.asarray(offsets) % timeframe.ms).any():
        raise ValueError(f"closes' index is not on the {timeframe.name} grid: bar starts must be whole bars apart")
    return index


_EPOCH = pd.Timestamp(0, tz="UTC")


def _utc(moment: pd.Timestamp) -> pd.Timestamp:
    stamp = pd.Timestamp(moment)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def _empty_rows() -> pd.DataFrame:
    return pd.DataFrame({name: pd.Series(dtype=object) for name in WALK_COLUMNS})
