"""Exact detection of rolling windows that do not move, shared by every rolling estimator."""

from __future__ import annotations

import numpy as np
import pandas as pd


def flat_windows(values: np.ndarray, window: int) -> np.ndarray:
    """Bool array of shape (n,): True at ``t`` when ``values[t-window+1 : t+1]`` are all equal.

    False during the warm-up (``t < window - 1``) and for windows holding a NaN. The test is exact
    (rolling max == rolling min compares stored values, no arithmetic), unlike a variance: pandas'
    online rolling variance keeps a residue of values that already left the window (about 1e-15
    for ten equal BTC prices in pandas 3.1), so "variance > 0" is no test for a moving window.
    """
    rolling = pd.Series(values).rolling(window)
    return (rolling.max() == rolling.min()).to_numpy()
