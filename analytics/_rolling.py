"""Exact detection of rolling windows that do not move, shared by every rolling estimator."""

from __future__ import annotations

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
