"""Least-squares line fit shared by the hedge-ratio and stationarity modules."""

from __future__ import annotations

import numpy as np


def fit_line(y: np.ndarray, x: np.ndarray, weights: np.ndarray | None = None) -> tuple[float, float]:
    """(Weighted) least-squares ``(slope, intercept)`` of ``y ≈ intercept + slope·x``.

    Computed from centred data: the textbook ``sum(xy) - n·mean(x)·mean(y)`` loses about
    ``2·log10(level / std)`` significant digits, eight for prices near 1e5 moving by tens.
    ``x`` must not be constant (callers check).
    """
    if weights is None:
        x_mean, y_mean = x.mean(), y.mean()
        dx = x - x_mean
        slope = float(dx @ (y - y_mean)) / float(dx @ dx)
    else:
        total = weights.sum()
        x_mean, y_mean = (weights @ x) / total, (weights @ y) / total
        wdx = weights * (x - x_mean)
        slope = float(wdx @ (y - y_mean)) / float(wdx @ (x - x_mean))
    return slope, float(y_mean - slope * x_mean)
