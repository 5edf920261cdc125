"""Rolling-window building blocks shared by every rolling estimator: exact detection of windows that
do not move, and moments computed from each window's own values."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


def flat_windows(values: np.ndarray, window: int) -> np.ndarray:
    """Bool array of shape (n,): True at ``t`` when ``values[t-window+1 : t+1]`` are all equal.

    False during the warm-up (``t < window - 1``) and for windows holding a NaN. The test is exact
    (equality of stored values, no arithmetic), unlike a variance: pandas' online rolling variance
    keeps a residue of values that already left the window (about 1e-15 for ten equal BTC prices
    in pandas 3.1), so "variance > 0" is no test for a moving window.
    """
    n = len(values)
    positions = np.arange(n)
    # A window is flat when the run of equal values ending at t is at least `window` long. NaN
    # equals nothing, so a NaN is a run of one and never part of a flat window.
    starts_run = np.r_[True, values[1:] != values[:-1]] if n else np.zeros(0, bool)
    run_start = np.maximum.accumulate(np.where(starts_run, positions, 0))
    return positions - run_start + 1 >= window


@dataclass(frozen=True, slots=True)
class WindowMoments:
    """Moments of one or more series over each trailing window (see :func:`window_moments`).

    Every array has shape (n,) and is NaN during the warm-up (``t < window - 1``); offsets and
    co-moments are also NaN for windows holding a NaN of a series involved.

    Attributes
    ----------
    centres : tuple of arrays
        Per series, a value of that series inside the window at ``t`` (the first value of the block of
        ``window`` values holding ``t``), in the series' units. The mean is given relative to it, so a
        level far above the window's spread costs no digits in ``s_t - mean_t``.
    offsets : tuple of arrays
        Per series, ``mean_t - centre_t``, in the series' units.
    comoments : dict
        ``(k, l)`` → ``sum((s_k - mean_k)·(s_l - mean_l))`` over the window (not divided by a count),
        in the product of the series' units; ``(k, k)`` is >= 0.
    """

    centres: tuple[np.ndarray, ...]
    offsets: tuple[np.ndarray, ...]
    comoments: dict[tuple[int, int], np.ndarray]

    def mean(self, k: int) -> np.ndarray:
        """Mean of series ``k`` over each window, in its units."""
        return self.centres[k] + self.offsets[k]


def window_moments(series: Sequence[np.ndarray], window: int, products: Sequence[tuple[int, int]]) -> WindowMoments:
    """Means and co-moments of ``series`` (each float64 of shape (n,)) over each trailing ``window``.

    Each value is computed from the values inside its own window only, so it equals exact arithmetic on
    that window to rounding of the window's own scale, however large the values that left it (online
    add/remove updates keep a residue of those: with pandas' rolling moments a z-score stayed off by up
    to 4e-3 after one bad print had left the window, ``bench/rolling.py``), and the value at ``t`` uses
    no data after ``t``.

    How, in O(n) vectorised work: cut the data into blocks of ``window`` values. The window ending at
    ``t`` is a prefix of ``t``'s block plus a suffix of the block before (van Herk / Gil–Werman).
    Prefix sums run forwards from each block's first value and suffix sums backwards from its last, so
    no partial sum ever holds a value from outside the window and nothing is subtracted away. Both
    parts are centred on the first value of ``t``'s block, which lies inside the window: by Samuelson's
    inequality it is within ``sqrt(window)`` standard deviations of the window's mean, so
    ``sum(d²) - sum(d)²/window`` loses at most ``log10(window)`` digits, at any price level.

    ``products``: the ``(k, l)`` pairs of :attr:`WindowMoments.comoments` to compute.
    """
    n, w = len(series[0]), window
    blocks = -(-n // w)

    def blocked(values: np.ndarray) -> np.ndarray:
        # Padding reaches only the suffix sums of the last block, which no window uses.
        padded = np.full(blocks * w, np.nan)
        padded[:n] = values
        return padded.reshape(blocks, w)

    grids = [blocked(values) for values in series]
    firsts = [grid[:, :1] for grid in grids]
    # Deviations from the first value of the block itself (prefix parts) and of the next block (suffix
    # parts: every window using a suffix of block b ends in block b + 1, so holds that value).
    heads = [grid - first for grid, first in zip(grids, firsts, strict=True)]
    tails = [grid - np.append(first[1:], np.nan)[:, None] for grid, first in zip(grids, firsts, strict=True)]

    def window_sums(head: np.ndarray, tail: np.ndarray) -> np.ndarray:
        total = np.cumsum(head, axis=1)
        # backwards[b, k]: the last k + 1 values of block b. The window ending at offset o < w - 1 of
        # block j takes the last w - 1 - o values of block j - 1; at o = w - 1 it is block j alone.
        backwards = np.cumsum(tail[:, ::-1], axis=1)
        total[1:, :-1] += backwards[:-1, -2::-1]
        total[0, :-1] = np.nan  # warm-up
        return total.ravel()[:n]

    sums = [window_sums(head, tail) for head, tail in zip(heads, tails, strict=True)]
    comoments = {
        (a, b): window_sums(heads[a] * heads[b], tails[a] * tails[b]) - sums[a] * (sums[b] / w) for a, b in products
    }
    for a, b in products:
        if a == b:  # a sum of squares: rounding may leave -1e-30 on a flat window
            np.maximum(comoments[(a, b)], 0.0, out=comoments[(a, b)])
    warm_up = np.arange(n) < w - 1
    centres = []
    for first in firsts:
        centre = np.repeat(first.ravel(), w)[:n]
        centre[warm_up] = np.nan
        centres.append(centre)
    return WindowMoments(tuple(centres), tuple(total / w for total in sums), comoments)
