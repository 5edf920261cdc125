"""Display downsampling that keeps what the eye looks for: the first, last, lowest and highest point.

A day of 1 s bars is 86,400 points; a browser chart needs a few thousand. Plain decimation would
drop exactly the spikes a trader cares about, so we use M4-style bucketing: split the series into
equal-width buckets (by position) and keep, per bucket, its first and last point and the points of
its minimum and maximum. Every bucket's extremes, and therefore the global ones, survive exactly.

Pure numpy/pandas, no streamlit.
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import pandas as pd

__all__ = ["MIN_POINTS", "downsample", "minmax_indices"]

# One bucket keeps up to four points (first, min, max, last), so fewer than four cannot be honoured.
MIN_POINTS = 4

PandasT = TypeVar("PandasT", pd.Series, pd.DataFrame)


def minmax_indices(values: np.ndarray, max_points: int) -> np.ndarray:
    """Positions to keep so that a line through them looks like the line through all of ``values``.

    Parameters
    ----------
    values : ndarray, shape (n,)
        Numeric samples in display order. NaNs are ignored for the min/max; a bucket that is all
        NaN keeps only its first and last position (the gap stays visible).
    max_points : int
        Upper bound on the number of positions returned, at least 4.

    Returns
    -------
    ndarray of int64, shape (m,), m <= max_points
        Sorted, unique positions. ``arange(n)`` when ``n <= max_points``. Otherwise the first,
        last, argmin and argmax of each of at most ``max_points // 4`` equal-width buckets; the
        global ``nanargmin``/``nanargmax`` are always included.
    """
    _check_max_points(max_points)
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"values must be one-dimensional, got shape {arr.shape}")
    if arr.size <= max_points:
        return np.arange(arr.size, dtype=np.int64)
    return _bucket_indices(arr.reshape(-1, 1), max_points // MIN_POINTS)


def downsample(obj: PandasT, max_points: int) -> PandasT:
    """Rows of ``obj`` kept for display: at most ``max_points``, extremes of every column preserved.

    A Series uses :func:`minmax_indices`. For a DataFrame the rows are first the union of each
    numeric column's :func:`minmax_indices`; when that union exceeds ``max_points`` (columns peak
    at different rows), all columns share coarser buckets instead, each keeping its first and last
    row plus every column's argmin and argmax, so ``2 + 2·ncols`` rows per bucket and
    ``max_points // (2 + 2·ncols)`` buckets. Either way each column's global min and max rows are
    kept. Only with more than ``max_points / 4 - 1`` numeric columns (or none) does it fall back
    to evenly spaced rows. Objects no longer than ``max_points`` are returned unchanged.
    """
    _check_max_points(max_points)
    n = len(obj)
    if n <= max_points:
        return obj
    if isinstance(obj, pd.Series):
        return obj.iloc[minmax_indices(_as_float(obj), max_points)]
    numeric = obj.select_dtypes(include=["number", "bool"])
    columns = [_as_float(numeric.iloc[:, j]) for j in range(numeric.shape[1])]
    if not columns:
        return obj.iloc[_evenly_spaced(n, max_points)]
    union = np.unique(np.concatenate([minmax_indices(col, max_points) for col in columns]))
    if union.size <= max_points:
        return obj.iloc[union]
    n_buckets = max_points // (2 + 2 * len(columns))
    if n_buckets < 1:
        return obj.iloc[_evenly_spaced(n, max_points)]
    return obj.iloc[_bucket_indices(np.column_stack(columns), n_buckets)]


def _bucket_indices(values: np.ndarray, n_buckets: int) -> np.ndarray:
    """First, last and each column's nan-argmin/argmax in ``n_buckets`` equal-width row buckets.

    ``values`` has shape (n, k). Returns sorted unique row positions, at most
    ``(2 + 2k) · n_buckets`` of them.
    """
    n, k = values.shape
    size = -(-n // max(1, min(n_buckets, n)))  # ceil: rows per bucket
    n_full = -(-n // size)  # buckets actually used, <= n_buckets
    padded = np.full((n_full * size, k), np.nan)
    padded[:n] = values
    # (bucket, row within bucket, column). Padding is NaN, so it never wins a min or a max.
    cube = padded.reshape(n_full, size, k)
    starts = np.arange(n_full, dtype=np.int64) * size
    keep = [starts, np.minimum(starts + size - 1, n - 1)]
    # fmin/fmax skip NaN without warnings; an all-NaN bucket yields NaN, matches nothing and
    # argmax of an all-False mask is 0, i.e. the bucket's first row, which is kept anyway.
    with np.errstate(invalid="ignore"):
        for reduce in (np.fmin, np.fmax):
            extreme = reduce.reduce(cube, axis=1)  # (bucket, column)
            first_hit = (cube == extreme[:, None, :]).argmax(axis=1)  # first row reaching it
            keep.append((starts[:, None] + first_hit).ravel())
    return np.unique(np.concatenate(keep))


def _as_float(series: pd.Series) -> np.ndarray:
    return series.to_numpy(dtype=np.float64, na_value=np.nan)


def _evenly_spaced(n: int, max_points: int) -> np.ndarray:
    return np.unique(np.linspace(0, n - 1, max_points).round().astype(np.int64))


def _check_max_points(max_points: int) -> None:
    if isinstance(max_points, bool) or not isinstance(max_points, (int, np.integer)) or max_points < MIN_POINTS:
        raise ValueError(f"max_points must be an integer >= {MIN_POINTS}, got {max_points!r}")
