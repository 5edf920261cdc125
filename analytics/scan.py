"""Pair scanner: the Engle–Granger test on every pair of a universe, ranked with false-discovery control.

:func:`scan_pairs` gives the same statistics and p-values as statsmodels' ``coint`` run on both
orderings of every pair, at a small fraction of the cost, by sharing work between pairs.

Which ordering counts is fixed before looking at the data: the leg whose label sorts first is y.
Keeping the better of the two orderings instead (as this module once did) makes the kept p-value
invalid: on 50 independent random walks of 1,440 bars it falls below 0.05 for 8.6 % of pairs, and
Benjamini–Hochberg over those minima let 8.5 % of null scans report a discovery.
``bench/scan_fdr.py`` measures that against the alternatives (Bonferroni ``2·min p``, BH over both
orderings as 2n tests, the lower-volatility leg as x); the fixed ordering keeps both error rates
at ~5 % and has the most power of the valid ones.

* **First stage.** Every column is detrended once (Frisch–Waugh–Lovell); one Gram matrix of the
  detrended closes then gives every pair's hedge ratio and R².
* **Second stage.** The ADF design of a pair's residual ``e = y - βx`` is linear in the pair:
  ``D = W_y - β·W_x``, where ``W_s = [s_t, Δs_{t-1..t-maxlag}, Δs_t]`` is built per symbol. One
  Gram matrix of all the ``W_s`` side by side therefore holds every pair's ``DᵀD``; its Cholesky
  factor replaces the QR factor of :func:`analytics.stationarity.adf` in the same lag selection
  and refit (``analytics._unitroot``), batched over pairs.

Forming ``DᵀD`` from the symbols' Grams cancels digits in proportion to ``(std y / std e)²``,
which the collinearity rule bounds (R² < 1 - 100·sqrt(eps) means the ratio is below ~820): at
worst ~1e-10 relative, far below the 1e-8 the tests ask.

A scan cut into blocks (:func:`scan_block` per block, :func:`rank_pairs` over all of them: what
``research.scan`` runs on Dask) forms each pair's sums on their own instead, from the shift
structure of the ADF designs (:class:`_PairwiseSums`), so a pair's numbers are the same bit for bit
in any block; they differ from :func:`scan_pairs`' by rounding (~1e-12 relative).

Memory: the shared Gram matrix holds ``(k·(maxlag + 2))²`` floats for k symbols: 14 MB for 50
symbols at 1,440 bars (maxlag 24), 90 MB at 86,400 bars (maxlag 65).
"""

from __future__ import annotations

import dataclasses
import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from analytics._unitroot import (
    NTREND,
    adf_required,
    check_autolag,
    check_trend,
    collinear,
    default_maxlag,
    detrend,
    fill_rows,
    level_tstats,
    mackinnon_pvalues,
    r_squared_totals,
    select_lags,
    trend_only,
)
from analytics._validate import check_int, check_window
from analytics.correlation import correlation_matrix
from analytics.returns import log_returns
from analytics.spread import rolling_zscore
from analytics.stationarity import half_life

SCAN_COLUMNS = (
    "y",
    "x",
    "beta",
    "alpha",
    "eg_stat",
    "eg_pvalue",
    "eg_pvalue_reverse",
    "q_value",
    "eg_lag",
    "half_life",
    "corr",
    "zscore",
    "n_bars",
    "status",
    "note",
)
# Row statuses. Only "ok" and "collinear" rows were tested and count in the q-values.
OK, COLLINEAR, INSUFFICIENT, FLAT = "ok", "collinear", "insufficient_data", "flat_leg"
# Below this many shared bars no pair is tested, whatever min_bars says. From 21 bars on, the
# default maxlag is statsmodels' own (shorter series hit its zero-degree-of-freedom bound, which
# analytics.stationarity avoids), and fewer than a few dozen bars test nothing useful anyway.
MIN_SCAN_BARS = 30
DEFAULT_MIN_BARS = 60
# Unordered pairs tested per batch (and per progress report); bounds the batch's memory.
_CHUNK = 128
# Rows of the per-symbol ADF designs multiplied at a time when forming their Gram matrix.
_GRAM_ELEMENTS = 4_000_000

Progress = Callable[[int, int], None]
# Pairs sharing one product in scan_block's design sums (a multiple of BLAS kernels' vector width).
_PARTNERS = 16
_windows = np.lib.stride_tricks.sliding_window_view
# Columns whose own design Gram a process keeps (_own_design): ~25 kB each at 43,200 bars.
_OWN_KEPT = 1_024
_own_designs: OrderedDict[tuple[bytes, int, int], np.ndarray] = OrderedDict()
_own_lock = threading.Lock()


def scan_pairs(
    closes: pd.DataFrame,
    *,
    trend: str = "c",
    maxlag: int | None = None,
    autolag: str | None = "aic",
    window: int = 60,
    min_bars: int | None = None,
    progress: Progress | None = None,
) -> pd.DataFrame:
    """Engle–Granger test of every pair of symbols, ranked by Benjamini–Hochberg q-value.

    Parameters
    ----------
    closes : DataFrame, shape (n_bars, k)
        Bar closes on one grid (for example ``AlignedBars.closes``), one column per symbol, in
        price units (> 0). NaN marks a missing bar: each pair uses the rows where both of its
        legs are finite, taken as consecutive bars (as if the pair's series had been
        ``dropna``-ed). Column labels must be unique.
    trend : {"c", "ct", "ctt", "n"}
        Deterministic terms of the cointegrating regression, as in statsmodels' ``coint``.
    maxlag, autolag
        ADF lag selection on the residuals, as in ``coint`` (defaults: Schwert's maxlag for the
        pair's bar count, AIC).
    window : int
        Bars in the rolling z-score of the spread (at least 2).
    min_bars : int, optional
        Pairs with fewer shared finite bars are not tested. At least ``MIN_SCAN_BARS`` (30) and
        what the ADF regression with ``maxlag`` needs; default ``DEFAULT_MIN_BARS`` (60) or
        that need if larger.
    progress : callable, optional
        ``progress(done, total)`` is called as pairs complete (in batches): ``done`` rises
        strictly and its last value is ``total``, the number of unordered pairs.

    Returns
    -------
    DataFrame with one row per unordered pair and the columns of ``SCAN_COLUMNS``:

    ``y``, ``x``
        Symbols, in the ordering that is tested: ``y`` is the leg whose label sorts first as
        text (ties: column order). The Engle–Granger test is not symmetric; the ordering is
        fixed by this rule, which does not look at the data, so that ``eg_pvalue`` stays a
        valid p-value (keeping the better of the two orderings would not be).
    ``beta``, ``alpha``
        OLS hedge ratio (y units per x unit) and constant (y units; 0 with ``trend="n"``) of
        ``y = alpha + beta·x (+ trend terms, t = 1..n_bars)``.
    ``eg_stat``, ``eg_pvalue``, ``eg_lag``
        ADF t-statistic of the residuals, MacKinnon's cointegration p-value, and the ADF lag:
        equal to ``statsmodels.tsa.stattools.coint(y, x, trend=trend, maxlag=maxlag,
        autolag=autolag)`` on the pair's rows. Collinear legs give ``-inf`` and 0, as there.
        ``eg_pvalue`` is the raw p-value of this one pair, not adjusted for the others.
    ``eg_pvalue_reverse``
        The same test's p-value in the other ordering (x on y), for information only: it
        takes no part in ``q_value`` (choosing the smaller of the two would need a correction).
    ``q_value``
        ``eg_pvalue`` adjusted for multiple testing by Benjamini–Hochberg over the family of
        every tested pair of the scan (all unordered pairs of the scanned symbols that were
        tested, one ordering each). Rows with q below 5 % form a set of which at most 5 % are
        expected to be false discoveries, and when no pair is cointegrated about 5 % of
        scans show any q < 0.05 (both measured in ``bench/scan_fdr.py``). With hundreds of
        pairs, p < 0.05 alone passes ~5 % of the unrelated pairs.
    ``half_life``
        Mean-reversion half-life of the spread in bars (:func:`analytics.half_life`); ``inf``
        when the spread does not revert.
    ``corr``
        Pearson correlation of the legs' log returns over the pair's rows.
    ``zscore``
        Last value of :func:`analytics.rolling_zscore` of the spread over ``window`` bars
        (NaN when the pair has fewer bars or the window is flat).
    ``n_bars``
        Rows where both legs are finite.
    ``status``, ``note``
        ``"ok"``, ``"collinear"`` (tested; see ``note``), ``"insufficient_data"`` or
        ``"flat_leg"`` (not tested: numbers are NaN), with a sentence saying why.

    The spread is the residual of the cointegrating regression: ``y - beta·x - alpha`` (also
    minus the fitted trend terms for "ct"/"ctt"), in y's price units. Rows are sorted by
    ``q_value`` then ``eg_pvalue``; untested pairs come last.

    No look-ahead: every number uses only the rows given, so scanning the frame as it stood at
    a past bar gives what a scan at that bar would have given. ``beta`` and the test are
    in-sample over the pair's rows, as the Engle–Granger test requires.

    Raises
    ------
    ValueError
        ``closes`` is not a DataFrame, has duplicate or non-numeric columns, inf or a price
        <= 0; or a parameter is out of range. Too little data in a pair never raises.
    """
    values = _check_closes(closes)
    settings = _checked_settings(trend, maxlag, autolag, window, min_bars, progress)
    return rank_pairs(_scan(values, closes, np.ones(len(closes.columns), dtype=np.int8), settings, progress))


def scan_block(
    closes: pd.DataFrame,
    left: Sequence[Hashable],
    right: Sequence[Hashable] | None = None,
    *,
    trend: str = "c",
    maxlag: int | None = None,
    autolag: str | None = "aic",
    window: int = 60,
    min_bars: int | None = None,
    progress: Progress | None = None,
) -> pd.DataFrame:
    """The rows :func:`scan_pairs` gives the pairs of one block, unranked: a piece of a bigger scan.

    The block's pairs are every pair within ``left`` (``right`` None or equal to ``left``), or
    every pair of a column of ``left`` with a column of ``right`` (the two disjoint). ``closes``
    must hold those columns (others are ignored) on the grid of the whole scan: a pair's numbers
    depend only on its two legs' closes (and the grid's last row, for the z-score's note), never
    on which other columns or pairs share the block, so a scan cut into blocks gives the numbers
    of one ``scan_block`` call over the whole family, bit for bit, given the same number of BLAS
    threads (Dask's workers use one). Each pair's sums are formed on their own
    (:class:`_PairwiseSums`), so the numbers differ from :func:`scan_pairs`' (which shares one
    product among all columns) by rounding only (~1e-12 relative). Parameters as for
    :func:`scan_pairs`.

    Returns the columns of :data:`SCAN_COLUMNS` with ``q_value`` NaN, one row per pair, in no
    particular order: put the blocks of a scan together with :func:`rank_pairs`, which adjusts
    over the whole family.
    """
    values = _check_closes(closes)
    settings = dataclasses.replace(_checked_settings(trend, maxlag, autolag, window, min_bars, progress), exact=True)
    side = _block_sides(closes.columns, left, right)
    return _scan(values, closes, side, settings, progress)


def rank_pairs(table: pd.DataFrame) -> pd.DataFrame:
    """Pairs' rows (:func:`scan_block`'s, of one or more blocks) with q-values over all of them, ranked.

    ``q_value`` is Benjamini–Hochberg over every tested row (status ``ok`` or ``collinear``) of
    ``table``: the whole family, whichever blocks the rows came from. Rows are sorted by
    ``q_value``, ``eg_pvalue``, then the pair's labels (as text), so the result does not depend
    on the order the rows come in; untested pairs come last.
    """
    tested = table["status"].isin((OK, COLLINEAR)).to_numpy()
    q_value = np.full(len(table), np.nan)
    q_value[tested] = benjamini_hochberg(table["eg_pvalue"].to_numpy(dtype=np.float64)[tested])
    ranked = table.assign(q_value=q_value, _y=table["y"].map(str), _x=table["x"].map(str))
    ranked = ranked.sort_values(["q_value", "eg_pvalue", "_y", "_x"], na_position="last", kind="stable")
    return ranked.drop(columns=["_y", "_x"]).reset_index(drop=True)


def _checked_settings(
    trend: str, maxlag: int | None, autolag: str | None, window: int, min_bars: int | None, progress: Progress | None
) -> _Settings:
    trend = check_trend(trend)
    autolag = check_autolag(autolag)
    window = check_window(window)
    if maxlag is not None:
        maxlag = check_int("maxlag", maxlag, minimum=0)
    needed = max(MIN_SCAN_BARS, adf_required(maxlag or 0, 0), NTREND[trend] + 2)
    min_bars = max(DEFAULT_MIN_BARS, needed) if min_bars is None else check_int("min_bars", min_bars, minimum=needed)
    if progress is not None and not callable(progress):
        raise ValueError(f"progress must be callable, got {progress!r}")
    return _Settings(trend, maxlag, autolag, window, min_bars)


def _block_sides(columns: pd.Index, left: Sequence[Hashable], right: Sequence[Hashable] | None) -> np.ndarray:
    """Per column of ``closes``: 0 not in the block, 1 in ``left`` (a within-``left`` block: all), 2 in ``right``."""
    left_set, right_set = set(left), set(left if right is None else right)
    for name, given in (("left", left_set), ("right", right_set)):
        unknown = sorted(map(str, given - set(columns)))
        if unknown:
            raise ValueError(f"scan_block: {name} names {', '.join(unknown)}, not columns of closes")
    side = np.zeros(len(columns), dtype=np.int8)
    if left_set == right_set:
        side[columns.isin(list(left_set))] = 1
    elif left_set & right_set:
        both = ", ".join(sorted(map(str, left_set & right_set)))
        raise ValueError(f"scan_block: left and right must be equal or disjoint; both hold {both}")
    else:
        side[columns.isin(list(left_set))] = 1
        side[columns.isin(list(right_set))] = 2
    return side


def _scan(
    values: np.ndarray, closes: pd.DataFrame, side: np.ndarray, settings: _Settings, progress: Progress | None
) -> pd.DataFrame:
    """Unranked rows of the pairs ``side`` defines (see :func:`_block_pairs`)."""
    pairs = _block_pairs(closes.columns, side)
    table = _Table(len(pairs))
    reporter = _Reporter(len(pairs), progress)
    for group in _pair_groups(np.isfinite(values), pairs, side):
        _scan_group(values[group.rows], closes.index[group.rows], closes.index, closes.columns, pairs, group, settings,
                    table, reporter)
    return table.frame(closes.columns, pairs)


@dataclass(frozen=True, slots=True)
class _Settings:
    trend: str
    maxlag: int | None
    autolag: str | None
    window: int
    min_bars: int
    # Form each pair's sums on its own (scan_block), so that its numbers never depend on the other
    # columns (see _PairwiseSums); scan_pairs shares one product among all columns instead.
    exact: bool = False


class _Reporter:
    """Counts completed pairs and reports them to the caller's progress callback."""

    def __init__(self, total: int, callback: Progress | None) -> None:
        self.total = total
        self.done = 0
        self.callback = callback

    def advance(self, count: int) -> None:
        if count == 0:
            return
        self.done += count
        if self.callback is not None:
            self.callback(self.done, self.total)


class _Table:
    """Per-pair results, filled group by group, then ranked."""

    def __init__(self, size: int) -> None:
        numeric = ("beta", "alpha", "eg_stat", "eg_pvalue", "eg_pvalue_reverse", "half_life", "corr", "zscore")
        self.numbers = {name: np.full(size, np.nan) for name in numeric}
        self.eg_lag = np.full(size, -1, dtype=np.int64)
        self.n_bars = np.zeros(size, dtype=np.int64)
        self.status = np.full(size, INSUFFICIENT, dtype=object)
        self.note = np.full(size, "", dtype=object)

    def frame(self, symbols: pd.Index, pairs: np.ndarray) -> pd.DataFrame:
        """The table, unranked (``q_value`` NaN); ``pairs`` (y, x) column numbers, in the tested ordering."""
        y, x = pairs[:, 0], pairs[:, 1]
        tested = np.isin(self.status, (OK, COLLINEAR))
        q_value = np.full(len(pairs), np.nan)
        eg_lag = pd.array(self.eg_lag, dtype="Int64")
        eg_lag[~tested] = pd.NA
        columns = {
            "y": np.asarray(symbols.take(y), dtype=object),
            "x": np.asarray(symbols.take(x), dtype=object),
            **self.numbers,
            "q_value": q_value,
            "eg_lag": eg_lag,
            "n_bars": self.n_bars,
            "status": self.status,
            "note": self.note,
        }
        return pd.DataFrame({name: columns[name] for name in SCAN_COLUMNS})


def benjamini_hochberg(pvalues: np.ndarray) -> np.ndarray:
    """Benjamini–Hochberg (1995) adjusted p-values (q-values), same order as ``pvalues``.

    ``q_(i) = min_{j >= i} p_(j)·m / j`` over the ascending p-values, capped at 1; equal to
    statsmodels' ``multipletests(method="fdr_bh")``. Rejecting every q < α controls the false
    discovery rate at α for independent (or positively dependent) tests.
    """
    m = len(pvalues)
    if m == 0:
        return np.empty(0)
    order = np.argsort(pvalues, kind="stable")
    scaled = pvalues[order] * m / np.arange(1, m + 1)
    adjusted = np.minimum(np.minimum.accumulate(scaled[::-1])[::-1], 1.0)
    q_values = np.empty(m)
    q_values[order] = adjusted
    return q_values


def _block_pairs(symbols: pd.Index, side: np.ndarray) -> np.ndarray:
    """The block's unordered pairs once each, as (y, x) column numbers, shape (pairs, 2).

    ``side`` (per column, :func:`_block_sides`): all columns 1, every pair among them; 1s and 2s,
    every pair of a 1 with a 2; 0 columns take no part. y is the column whose label sorts first
    as text (ties: column order): a rule fixed before the data is seen, so the one Engle–Granger
    test per pair keeps its nominal size, and a pair is tested the same way whatever order the
    columns come in and whatever block it is in.
    """
    rank = np.empty(len(symbols), dtype=np.intp)
    rank[sorted(range(len(symbols)), key=lambda c: (str(symbols[c]), c))] = np.arange(len(symbols))
    cross = bool((side == 2).any())
    pairs = [(i, j) if rank[i] < rank[j] else (j, i) for i in range(len(symbols)) for j in range(i + 1, len(symbols))
             if side[i] and side[j] and (side[i] != side[j] if cross else True)]
    return np.array(pairs, dtype=np.intp).reshape(-1, 2)


def _check_closes(closes: pd.DataFrame) -> np.ndarray:
    if not isinstance(closes, pd.DataFrame):
        raise ValueError(f"closes must be a DataFrame with one column per symbol, got {type(closes).__name__}")
    duplicated = closes.columns[closes.columns.duplicated()].unique()
    if len(duplicated):
        names = ", ".join(map(str, duplicated))
        raise ValueError(f"closes has duplicate columns ({names}); give each symbol one column")
    for name, dtype in closes.dtypes.items():
        if not pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_bool_dtype(dtype):
            raise ValueError(f"closes column {name} is not numeric (dtype {dtype})")
    values = closes.to_numpy(dtype=np.float64, na_value=np.nan)
    for position, name in enumerate(closes.columns):
        column = values[:, position]
        if np.isinf(column).any():
            raise ValueError(f"closes column {name} contains inf; use NaN for a missing bar")
        if (column <= 0).any():  # NaN compares False
            raise ValueError(f"closes column {name} has a price <= 0; closes must be positive prices")
    return values


@dataclass(frozen=True, slots=True)
class _Group:
    """Pairs whose legs are finite on the same rows.

    ``blocks`` lists the column sets (A, B) of the group's pairs: every pair is a column of A
    with a column of B. Columns with the same NaN pattern form one set, so two sets are either
    equal (pairs within one set) or disjoint; only these blocks of the shared Gram matrix are
    needed.
    """

    rows: np.ndarray  # (n_bars,) bool
    members: np.ndarray  # indexes into the scan's pairs
    blocks: list[tuple[np.ndarray, np.ndarray]]


def _pair_groups(finite: np.ndarray, pairs: np.ndarray, side: np.ndarray) -> list[_Group]:
    """Pairs grouped by the rows where both legs are finite.

    Columns with the same NaN pattern (and the same ``side`` of the block) form one class, so the
    common case (no NaN) is a single group found without per-pair masks; a symbol listed late
    makes a group of its pairs with the symbols listed before it. Splitting by side keeps a
    cross block's Gram products to left × right.
    """
    if len(pairs) == 0:
        return []
    pattern = np.concatenate([np.packbits(finite, axis=0).T, side.astype(np.uint8)[:, None]], axis=1)
    _, column_class = np.unique(pattern, axis=0, return_inverse=True)
    column_class = column_class.ravel()
    classes = [np.flatnonzero(column_class == c) for c in range(column_class.max() + 1)]
    class_pairs = np.sort(column_class[pairs], axis=1)
    groups: dict[bytes, _Group] = {}
    for a, b in np.unique(class_pairs, axis=0):
        rows = finite[:, classes[a][0]] & finite[:, classes[b][0]]
        members = np.flatnonzero((class_pairs[:, 0] == a) & (class_pairs[:, 1] == b))
        key = np.packbits(rows).tobytes()  # different class pairs can share their rows
        if key in groups:
            members = np.union1d(groups[key].members, members)
        blocks = [*groups[key].blocks] if key in groups else []
        groups[key] = _Group(rows, members, [*blocks, (classes[a], classes[b])])
    return list(groups.values())


def _scan_group(
    values: np.ndarray,
    index: pd.Index,
    full_index: pd.Index,
    symbols: pd.Index,
    pairs: np.ndarray,
    group: _Group,
    settings: _Settings,
    table: _Table,
    reporter: _Reporter,
) -> None:
    """Test the pairs of ``group``, whose shared finite rows are ``values``."""
    members = group.members
    n = len(values)
    table.n_bars[members] = n
    if n < settings.min_bars:
        table.status[members] = INSUFFICIENT
        table.note[members] = f"{n} bars where both legs are finite; needs {settings.min_bars}"
        reporter.advance(len(members))
        return

    columns = np.unique(pairs[members])
    local = np.full(len(symbols), -1)
    local[columns] = np.arange(len(columns))
    blocks = [(local[a], local[b]) for a, b in group.blocks]
    if settings.exact:
        shared = _SharedFits.build_pairwise(values[:, columns], settings.trend, settings.maxlag,
                                            local[pairs[members]])
    else:
        shared = _SharedFits.build(values[:, columns], settings.trend, settings.maxlag, blocks)
    degenerate = _degenerate_columns(values[:, columns], shared.gram, settings.trend)
    flat = [m for m in members if degenerate[local[pairs[m, 0]]] or degenerate[local[pairs[m, 1]]]]
    for m in flat:
        reasons = [degenerate[local[c]].format(symbol=symbols[c], n=n) for c in pairs[m] if degenerate[local[c]]]
        table.status[m], table.note[m] = FLAT, "; ".join(reasons)
    reporter.advance(len(flat))
    testable = np.setdiff1d(members, flat)
    if len(testable) == 0:
        return

    if settings.exact:
        corr = _pair_correlations(values[:, columns], degenerate, local[pairs[testable]])
    else:
        corr = _return_correlations(values[:, columns], degenerate)
    # The z-score is then that of an earlier bar: say so.
    stale = None if index[-1] == full_index[-1] else f"last shared bar is {index[-1]}, not the last row"
    for start in range(0, len(testable), _CHUNK):
        chunk = testable[start : start + _CHUNK]
        _test_pairs(shared, corr, local[pairs[chunk, 0]], local[pairs[chunk, 1]], chunk, settings, table)
        if stale:
            table.note[chunk] = [f"{note}; {stale}" if note else stale for note in table.note[chunk]]
        reporter.advance(len(chunk))


@dataclass(frozen=True, slots=True)
class _SharedFits:
    """What every pair of a group shares (columns indexed by the group's local column number)."""

    detrended: np.ndarray  # (n, c) closes minus their deterministic-term fit
    coefficients: np.ndarray  # (ntrend, c) that fit's coefficients
    gram: np.ndarray  # (c, c) detrendedᵀ·detrended
    totals: np.ndarray  # (c,) statsmodels' R² denominators
    designs: np.ndarray  # (L+2, c, L+2, c) Gram of the per-symbol ADF designs
    early: np.ndarray  # (L, L+2, c) their rows t = 0..L-1 (lags before the start are 0, never used)
    maxlag: int

    @classmethod
    def build(
        cls, values: np.ndarray, trend: str, maxlag: int | None, blocks: list[tuple[np.ndarray, np.ndarray]]
    ) -> _SharedFits:
        """Shared fits of the columns of ``values`` (n, c), finite; ``maxlag`` None for the default.

        ``blocks`` as in :class:`_Group`, in local column numbers.
        """
        detrended, coefficients = detrend(values, trend)
        lags = default_maxlag(len(values), 0) if maxlag is None else maxlag
        return cls(
            detrended=detrended,
            coefficients=coefficients,
            gram=detrended.T @ detrended,
            totals=r_squared_totals(values, trend),
            designs=_design_gram(detrended, lags, blocks),
            early=_early_rows(detrended, lags),
            maxlag=lags,
        )


    @classmethod
    def build_pairwise(cls, values: np.ndarray, trend: str, maxlag: int | None, pairs: np.ndarray) -> _SharedFits:
        """As :meth:`build`, for the pairs ``pairs`` (local column numbers, shape (p, 2)) only, each
        pair's sums formed from its own two columns (:class:`_PairwiseSums`); other entries stay 0."""
        fits = [detrend(values[:, [c]], trend) for c in range(values.shape[1])]  # one column: its own sums
        detrended = np.concatenate([f[0] for f in fits], axis=1)
        coefficients = np.concatenate([f[1] for f in fits], axis=1)
        totals = np.concatenate([r_squared_totals(values[:, [c]], trend) for c in range(values.shape[1])])
        lags = default_maxlag(len(values), 0) if maxlag is None else maxlag
        sums = _PairwiseSums(detrended, lags)
        return cls(
            detrended=detrended,
            coefficients=coefficients,
            gram=sums.levels(pairs),
            totals=totals,
            designs=sums.designs(pairs),
            early=_early_rows(detrended, lags),
            maxlag=lags,
        )


class _PairwiseSums:
    """Sums of products of two columns, each formed from those two columns alone.

    A product over many columns at once (BLAS) adds up an entry in an order that depends on the
    matrix shapes and where the entry falls in them, so a pair's numbers would change in the last
    bits with the other columns scanned alongside it. Here every pair's sums come from operations
    of one fixed shape on its own two columns: a level sum is numpy's pairwise sum of the
    elementwise product; a design Gram block is one fixed-shape product of shifted columns plus
    short cumulative sums (:meth:`designs`). Identical inputs then give identical sums in any
    block, in any process (with the same BLAS thread count: one in Dask's workers).
    """

    def __init__(self, detrended: np.ndarray, maxlag: int) -> None:
        self.detrended = detrended
        self.maxlag = maxlag

    def _all_pairs(self, pairs: np.ndarray) -> np.ndarray:
        """``pairs`` (in the tested ordering, each once) and every column with itself, shape (p, 2).

        A pair keeps its tested ordering (y, x), which does not depend on the block: ``Wᵧᵀ·Wₓ``
        and ``Wₓᵀ·Wᵧ`` are transposes in exact arithmetic only.
        """
        columns = np.unique(pairs)
        return np.concatenate([pairs, np.column_stack([columns, columns])])

    def levels(self, pairs: np.ndarray) -> np.ndarray:
        """(c, c) sums of products of the detrended columns for ``pairs`` and the diagonal; 0 elsewhere."""
        c = self.detrended.shape[1]
        rows = np.ascontiguousarray(self.detrended.T)
        wanted = self._all_pairs(pairs)
        gram = np.zeros((c, c))
        for start in range(0, len(wanted), _CHUNK):
            a, b = wanted[start : start + _CHUNK].T
            # A reduction along the contiguous last axis: numpy's pairwise sum of each row on its own.
            sums = np.add.reduce(rows[a] * rows[b], axis=1)
            gram[a, b] = sums
            gram[b, a] = sums
        return gram

    def designs(self, pairs: np.ndarray) -> np.ndarray:
        """The (L+2, c, L+2, c) Gram of the ADF designs (as :func:`_design_gram`) for ``pairs`` and each
        column with itself, rows t = maxlag .. n-2; other blocks stay 0.

        A design's columns are one series shifted by 0..L rows, so a block ``W_aᵀ·W_b`` holds only
        ~3L distinct long sums (:func:`_block`): one (3L+2, n-1-2L) × (n-1-2L, 2) product per pair
        instead of an (L+2, n) × (n, L+2) one, ~L/3 times fewer operations. A column's block with
        itself depends on that column alone: it comes from :func:`_own_design` (computed once per
        column's values in a process), so the products here carry only the pairs.
        """
        c = self.detrended.shape[1]
        width = self.maxlag + 2
        levels = np.ascontiguousarray(self.detrended.T)  # (c, n)
        diffs = np.diff(levels, axis=1)  # (c, n-1)
        gram = np.zeros((width, c, width, c))
        for column in np.unique(pairs):
            gram[:, column, :, column] = _own_design(levels[column], self.maxlag)
        for b in np.unique(pairs[:, 1]):
            partners = pairs[pairs[:, 1] == b, 0]
            for a, block in zip(partners, _design_blocks(levels, diffs, b, partners, self.maxlag), strict=True):
                gram[:, a, :, b] = block
                gram[:, b, :, a] = block.T
        return gram


def _design_blocks(levels: np.ndarray, diffs: np.ndarray, b: int, partners: np.ndarray, maxlag: int
                   ) -> list[np.ndarray]:
    """``W_aᵀ·W_b`` (L+2, L+2) for each ``a`` of ``partners``; ``levels`` (c, n) detrended, ``diffs`` their Δ."""
    core = levels.shape[1] - 1 - 2 * maxlag  # rows u = L .. n-2-L, inside every shifted column's range
    # Rows: Δb shifted by k = -L..L over the core, then b's level shifted by i = 0..L.
    shifted = np.empty((3 * maxlag + 2, core))
    shifted[: 2 * maxlag + 1] = _windows(diffs[b], core)
    shifted[2 * maxlag + 1 :] = _windows(levels[b], core)[maxlag : 2 * maxlag + 1]
    blocks = []
    for first in range(0, len(partners), _PARTNERS):
        group = partners[first : first + _PARTNERS]
        # Always _PARTNERS pairs wide (zero columns pad the last group): one product shape for
        # every pair, and each pair's two columns are whole vector lanes of the BLAS kernel,
        # where a column's sums do not depend on its neighbours (tests hold this bit for bit).
        right = np.zeros((core, 2 * _PARTNERS))
        right[:, 0 : 2 * len(group) : 2] = diffs[group, maxlag : maxlag + core].T
        right[:, 1 : 2 * len(group) : 2] = levels[group, maxlag : maxlag + core].T
        products = shifted @ right
        blocks += [_block(products[:, 2 * q : 2 * q + 2], levels[a], diffs[a], levels[b], diffs[b], maxlag)
                   for q, a in enumerate(group)]
    return blocks


def _own_design(level: np.ndarray, maxlag: int) -> np.ndarray:
    """``W_sᵀ·W_s`` (L+2, L+2) of one detrended column ``level`` (n,), memoised on its bytes.

    Every pair with the column needs it, and in a blocked scan every block with the column: the
    same values give the same sums, so a process forms them once (a few hundred columns' worth of
    (L+2)² floats, bounded by :data:`_OWN_KEPT`).
    """
    key = (hashlib.blake2b(level.tobytes(), digest_size=16).digest(), len(level), maxlag)
    with _own_lock:
        kept = _own_designs.get(key)
        if kept is not None:
            _own_designs.move_to_end(key)
            return kept
    diff = np.diff(level)
    block = _block(_own_products(level, diff, maxlag), level, diff, level, diff, maxlag)
    block.flags.writeable = False
    with _own_lock:
        _own_designs[key] = block
        while len(_own_designs) > _OWN_KEPT:
            _own_designs.popitem(last=False)
    return block


def _own_products(level: np.ndarray, diff: np.ndarray, maxlag: int) -> np.ndarray:
    """The core sums :func:`_design_blocks` forms for a column with itself, shape (3L+2, 2), one row at a time.

    One column's 3L+2 sums do not fill a matrix product (its partner group would be padded with
    fifteen zero pairs), so each is numpy's pairwise sum of one elementwise product, short enough
    to stay in cache: a fixed computation of the column's values alone, ~5× cheaper than the padded
    product. Rows as there: Δ shifted by k = -L..L, then the level shifted by i = 0..L, each
    against Δ and the level over the core rows.
    """
    core = len(level) - 1 - 2 * maxlag
    d_core, e_core = diff[maxlag : maxlag + core], level[maxlag : maxlag + core]
    rows = [diff[k : k + core] for k in range(2 * maxlag + 1)]
    rows += [level[maxlag + i : maxlag + i + core] for i in range(maxlag + 1)]
    products = np.full((len(rows), 2), np.nan)
    for r, row in enumerate(rows):
        products[r, 0] = np.add.reduce(row * d_core)
    for r in [*range(maxlag + 1), 2 * maxlag + 1]:  # the level's sums _block reads; NaN elsewhere
        products[r, 1] = np.add.reduce(rows[r] * e_core)
    return products


def _block(products: np.ndarray, ea: np.ndarray, da: np.ndarray, eb: np.ndarray, db: np.ndarray, lags: int
           ) -> np.ndarray:
    """``W_aᵀ·W_b`` (L+2, L+2) from the core sums ``products`` (3L+2, 2) and the L rows at each end.

    With d = Δe and the design rows t = L..n-2: a lag-i by lag-j entry is
    ``Σ_{u=L-i}^{n-2-i} da_u·db_{u+i-j}``: the core sum for shift k = i-j over u = L..n-2-L,
    plus a head (u < L) and a tail (u > n-2-L) of at most L terms each, taken from cumulative
    sums. Level entries likewise (the level rows t = L..n-2 need only a tail).
    """
    n = len(ea)
    shifts = np.arange(-lags, lags + 1)
    lag = np.arange(lags + 1)
    head = np.arange(lags)  # u = 0..L-1
    tail = n - 1 - lags + head  # u = n-1-L..n-2
    # Δa·Δb: core[k] + Σ head products + Σ tail products, by (i, k).
    index = head[:, None] + shifts
    inside = index >= 0
    heads = np.where(inside, da[head][:, None] * db[np.where(inside, index, 0)], 0.0)
    head_sums = np.concatenate([np.zeros((1, len(shifts))), np.cumsum(heads[::-1], axis=0)])  # [i]: u >= L-i
    index = tail[:, None] + shifts
    inside = index <= n - 2
    tails = np.where(inside, da[tail][:, None] * db[np.where(inside, index, n - 2)], 0.0)
    tail_sums = np.concatenate([np.zeros((1, len(shifts))), np.cumsum(tails, axis=0)])  # [m]: u < n-1-L+m
    i, j = np.meshgrid(lag, lag, indexing="ij")
    k = i - j + lags
    diff_diff = products[: 2 * lags + 1, 0][k] + head_sums[i, k] + tail_sums[lags - i, k]
    # Δa_{t-i}·eb_t = Σ_{u=L-i}^{n-2-i} da_u·eb_{u+i}.
    heads = da[head][:, None] * eb[head[:, None] + lag]
    head_level = np.concatenate([np.zeros((1, lags + 1)), np.cumsum(heads[::-1], axis=0)])
    index = tail[:, None] + lag
    inside = index <= n - 2
    tails = np.where(inside, da[tail][:, None] * eb[np.where(inside, index, n - 2)], 0.0)
    tail_level = np.concatenate([np.zeros((1, lags + 1)), np.cumsum(tails, axis=0)])
    diff_level = products[2 * lags + 1 :, 0] + head_level[lag, lag] + tail_level[lags - lag, lag]
    # ea_t·Δb_{t-j} and ea_t·eb_t over t = L..n-2: the core, then the last L rows.
    level_diff = products[lags - lag, 1] + np.add.reduce(ea[tail][:, None] * db[tail[:, None] - lag], axis=0)
    level_level = products[2 * lags + 1, 1] + np.add.reduce(ea[tail] * eb[tail])
    # Into the design's column order: level, lags 1..L, then Δ_t (lag 0).
    column = np.array([lags + 1, *range(1, lags + 1)])
    block = np.empty((lags + 2, lags + 2))
    block[0, 0] = level_level
    block[0, column] = level_diff
    block[column, 0] = diff_level
    block[np.ix_(column, column)] = diff_diff
    return block


@dataclass(frozen=True, slots=True)
class _Tests:
    """Engle–Granger tests of a batch of orderings."""

    beta: np.ndarray
    statistic: np.ndarray
    pvalue: np.ndarray
    lag: np.ndarray


def _degenerate_columns(values: np.ndarray, gram: np.ndarray, trend: str) -> list[str]:
    """Per column, "" or a note template saying why no pair with it can be tested."""
    flat = np.ptp(values, axis=0) == 0
    trend_like = trend_only(np.diag(gram), values, trend)
    trend_note = f"{{symbol}} is a deterministic trend over the {{n}} shared bars (trend={trend!r})"
    return [
        "{symbol} is constant over the {n} shared bars" if is_flat else trend_note if is_trend else ""
        for is_flat, is_trend in zip(flat, trend_like, strict=True)
    ]


def _design_gram(detrended: np.ndarray, maxlag: int, blocks: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Gram matrix of the symbols' ADF designs on rows t = maxlag .. n-2, shape (L+2, c, L+2, c).

    Each symbol's design is ``[level, Δ lag 1, ..., Δ lag L, Δ]``. Only the blocks pairs use are
    formed: each symbol with itself, and the symbols of A with those of B for every (A, B) in
    ``blocks``; the rest stays 0. Rows are multiplied in slices so memory stays bounded for long
    histories.
    """
    n, c = detrended.shape
    width = maxlag + 2
    diffs = np.diff(detrended, axis=0)
    gram = np.zeros((width, c, width, c))
    covered = np.zeros(c, dtype=bool)
    for a, b in blocks:
        covered[np.intersect1d(a, b)] = True
    alone = np.flatnonzero(~covered)  # symbols whose own block no (A, B) block contains
    everything = np.arange(width)
    step = max(1, _GRAM_ELEMENTS // (width * c))
    for start in range(maxlag, n - 1, step):
        stop = min(start + step, n - 1)
        lagged = (diffs[start - j : stop - j] for j in range(1, maxlag + 1))
        rows = np.stack([detrended[start:stop], *lagged, diffs[start:stop]], axis=1)  # (rows, L+2, c)
        for a, b in blocks:
            within = np.array_equal(a, b)  # else disjoint (see _Group)
            left = rows[:, :, a].reshape(stop - start, -1)
            right = left if within else rows[:, :, b].reshape(stop - start, -1)
            product = (left.T @ right).reshape(width, len(a), width, len(b))  # Aᵀ·A is one symmetric product
            gram[np.ix_(everything, a, everything, b)] += product
            if not within:
                gram[np.ix_(everything, b, everything, a)] += product.transpose(2, 3, 0, 1)
        if len(alone):
            own = rows[:, :, alone].transpose(2, 1, 0)  # (symbols, L+2, rows)
            gram[:, alone, :, alone] += own @ own.transpose(0, 2, 1)
    return gram


def _early_rows(detrended: np.ndarray, maxlag: int) -> np.ndarray:
    """Rows t = 0..maxlag-1 of every symbol's ADF design, shape (L, L+2, c): the refit's extra rows."""
    diffs = np.diff(detrended[: maxlag + 1], axis=0)
    early = np.zeros((maxlag, maxlag + 2, detrended.shape[1]))
    early[:, 0] = detrended[:maxlag]
    for j in range(1, maxlag):  # lag j of row t is Δ_{t-j}, which exists from t = j on
        early[j:, j] = diffs[: maxlag - j]
    early[:, -1] = diffs
    return early


def _return_correlations(values: np.ndarray, degenerate: list[str]) -> np.ndarray:
    """Correlation matrix of the columns' log returns; NaN for columns that cannot be used."""
    returns = log_returns(pd.DataFrame(values)).to_numpy()
    usable = np.array([not reason for reason in degenerate]) & (np.ptp(returns, axis=0) > 0)
    corr = np.full((values.shape[1], values.shape[1]), np.nan)
    if usable.any():
        corr[np.ix_(usable, usable)] = correlation_matrix(pd.DataFrame(returns[:, usable])).to_numpy()
    return corr


def _pair_correlations(values: np.ndarray, degenerate: list[str], pairs: np.ndarray) -> np.ndarray:
    """As :func:`_return_correlations` for ``pairs`` (local column numbers) only, each pair's from its
    own two columns (numpy's pairwise sums; see :class:`_PairwiseSums`); NaN elsewhere."""
    returns = np.ascontiguousarray(np.diff(np.log(values), axis=0).T)  # (c, n-1)
    centred = returns - np.add.reduce(returns, axis=1)[:, None] / returns.shape[1]
    usable = np.array([not reason for reason in degenerate]) & (np.ptp(returns, axis=1) > 0)
    corr = np.full((values.shape[1], values.shape[1]), np.nan)
    pairs = pairs[usable[pairs[:, 0]] & usable[pairs[:, 1]]]
    squares = np.add.reduce(centred * centred, axis=1)
    for start in range(0, len(pairs), _CHUNK):
        a, b = pairs[start : start + _CHUNK].T
        corr[a, b] = np.clip(np.add.reduce(centred[a] * centred[b], axis=1) / np.sqrt(squares[a] * squares[b]), -1, 1)
    return corr


def _test_pairs(
    shared: _SharedFits,
    corr: np.ndarray,
    first: np.ndarray,
    second: np.ndarray,
    rows: np.ndarray,
    settings: _Settings,
    table: _Table,
) -> None:
    """Engle–Granger of first[i] on second[i] (the tested ordering), and of second[i] on first[i] for information."""
    tests = _engle_granger_batch(shared, np.concatenate([first, second]), np.concatenate([second, first]), settings)
    half = len(first)
    y, x = first, second
    beta = tests.beta[:half]

    table.numbers["eg_pvalue_reverse"][rows] = tests.pvalue[half:]
    table.numbers["beta"][rows] = beta
    if NTREND[settings.trend]:
        table.numbers["alpha"][rows] = shared.coefficients[0, y] - beta * shared.coefficients[0, x]
    else:
        table.numbers["alpha"][rows] = 0.0
    table.numbers["eg_stat"][rows] = tests.statistic[:half]
    table.numbers["eg_pvalue"][rows] = tests.pvalue[:half]
    table.eg_lag[rows] = tests.lag[:half]
    table.numbers["corr"][rows] = corr[y, x]
    is_collinear = np.isneginf(tests.statistic[:half])
    table.status[rows] = np.where(is_collinear, COLLINEAR, OK)
    table.note[rows] = np.where(
        is_collinear, "legs are collinear (R² ≥ 1 - 1.5e-6); as in statsmodels, statistic -inf and p-value 0", ""
    )
    columns = np.ascontiguousarray(shared.detrended.T)  # (c, n): each spread from two contiguous rows
    for row, y_column, x_column, b in zip(rows, y, x, beta, strict=True):
        spread = columns[y_column] - b * columns[x_column]
        table.numbers["half_life"][row] = _half_life_bars(spread)
        if len(spread) >= settings.window:
            # Only the last value is wanted, and it depends on the last `window` bars alone.
            table.numbers["zscore"][row] = rolling_zscore(spread[-settings.window :], settings.window)[-1]
        else:
            table.note[row] = f"zscore needs {settings.window} bars, the pair has {len(spread)}"


def _engle_granger_batch(shared: _SharedFits, y: np.ndarray, x: np.ndarray, settings: _Settings) -> _Tests:
    """Engle–Granger test of each ordering y[i] on x[i] (local column numbers), as statsmodels' coint."""
    n = len(shared.detrended)
    beta = shared.gram[y, x] / shared.gram[x, x]
    statistic = np.full(len(y), -np.inf)
    lag = np.zeros(len(y), dtype=np.int64)
    ssr = shared.gram[y, y] - beta * shared.gram[x, y]
    tested = np.flatnonzero(~collinear(ssr, shared.totals[y]))
    if len(tested):
        ty, tx, tb = y[tested], x[tested], beta[tested]
        # DᵀD of D = W_y - β·W_x, from the blocks of the shared Gram matrix.
        g, b3 = shared.designs, tb[:, None, None]
        pair_gram = g[:, ty, :, ty] - b3 * (g[:, ty, :, tx] + g[:, tx, :, ty]) + b3**2 * g[:, tx, :, tx]
        r = _upper_factors(pair_gram, shared, ty, tx, tb)
        maxlag = shared.maxlag
        choice = select_lags(r, n - 1 - maxlag, 0, maxlag, settings.autolag)
        for chosen_lag in np.unique(choice.lags):
            which = np.flatnonzero(choice.lags == chosen_lag)
            columns = [*range(chosen_lag + 1), maxlag + 1]  # level, lags 1..chosen_lag, target
            early = shared.early[chosen_lag:][:, columns]
            extra = early[:, :, ty[which]] - tb[which] * early[:, :, tx[which]]
            statistic[tested[which]] = level_tstats(
                r[which], choice.rss[which], chosen_lag + 1, extra.transpose(2, 0, 1), n - 1 - chosen_lag
            )
        lag[tested] = choice.lags
    return _Tests(beta, statistic, mackinnon_pvalues(statistic, settings.trend, 2), lag)


def _upper_factors(
    pair_gram: np.ndarray, shared: _SharedFits, y: np.ndarray, x: np.ndarray, beta: np.ndarray
) -> np.ndarray:
    """Upper-triangular R with RᵀR = each pair's design Gram; QR of the design where Cholesky fails."""
    try:
        return np.linalg.cholesky(pair_gram).transpose(0, 2, 1)
    except np.linalg.LinAlgError:
        pass  # one rank-deficient pair fails the whole batch: factor them one by one
    maxlag = shared.maxlag
    factors = np.empty_like(pair_gram)
    for i, (y_column, x_column, b) in enumerate(zip(y, x, beta, strict=True)):
        try:
            factors[i] = np.linalg.cholesky(pair_gram[i]).T
        except np.linalg.LinAlgError:
            residuals = shared.detrended[:, y_column] - b * shared.detrended[:, x_column]
            n = len(residuals)
            design = np.empty((n - 1 - maxlag, maxlag + 2), order="F")
            fill_rows(design, residuals, np.diff(residuals), maxlag, n - 1, maxlag, 0, maxlag)
            factors[i] = np.linalg.qr(design, mode="r")
    return factors


def _half_life_bars(spread: np.ndarray) -> float:
    try:
        return half_life(spread).bars
    except ValueError:  # a constant spread (collinear legs): no reversion to measure
        return np.nan
