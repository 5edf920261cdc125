"""Input checks shared by every public function (the ``ensure1d`` of this package).

Every public entry point converts its inputs here, so all of them accept the same things
(numpy arrays, pandas Series, plain sequences) and fail with the same messages.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import SupportsIndex, TypeAlias

import numpy as np
import pandas as pd

from analytics.errors import InsufficientDataError

ArrayLike1D: TypeAlias = np.ndarray | pd.Series | Sequence[float]


def as_1d_float(name: str, values: ArrayLike1D, *, allow_nan: bool = False) -> np.ndarray:
    """Return ``values`` as a 1-D float64 array, rejecting inf always and NaN unless allowed.

    The result may share memory with the input; callers must not write to it.
    """
    if isinstance(values, pd.DataFrame):
        raise ValueError(f"{name} must be 1-dimensional, got a DataFrame; pass one column")
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be numeric: {exc}") from None
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-dimensional, got shape {array.shape}")
    finite = np.isfinite(array)
    if not finite.all():
        if np.isinf(array).any():
            raise ValueError(f"{name} contains inf at position {int(np.flatnonzero(np.isinf(array))[0])}")
        if not allow_nan:
            position = int(np.flatnonzero(~finite)[0])
            raise ValueError(f"{name} contains NaN at position {position}; drop or fill missing values first")
    return array


def index_of(**named: object) -> pd.Index | None:
    """The index shared by the pandas inputs among ``named`` (None if there are none).

    Two Series with different indexes are almost always a misalignment bug (for example closes
    of two symbols taken from different bar grids), so they are rejected rather than aligned.
    """
    found: tuple[str, pd.Index] | None = None
    for name, values in named.items():
        if not isinstance(values, pd.Series):
            continue
        if found is None:
            found = (name, values.index)
        elif not values.index.equals(found[1]):
            raise ValueError(
                f"{found[0]} and {name} have different indexes; align them first "
                "(for example with analytics.bars.align_bars)"
            )
    return None if found is None else found[1]


def check_same_length(**named: np.ndarray) -> int:
    """Return the common length of the arrays in ``named`` or raise ``ValueError``."""
    lengths = {name: len(values) for name, values in named.items()}
    if len(set(lengths.values())) > 1:
        described = ", ".join(f"{name} has {length}" for name, length in lengths.items())
        raise ValueError(f"inputs must have the same length: {described}")
    return next(iter(lengths.values()))


def check_int(name: str, value: object, *, minimum: int) -> int:
    """Return ``value`` as an ``int`` that is at least ``minimum``; bools are rejected."""
    # An int, a numpy integer: what has __index__ (2.5 has not); bool has, but True is no count.
    if isinstance(value, bool) or not isinstance(value, SupportsIndex):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    number = operator.index(value)
    if number < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {number}")
    return number


def check_window(window: object, *, minimum: int = 2) -> int:
    """Return a validated rolling-window length (in observations)."""
    return check_int("window", window, minimum=minimum)


def require_observations(available: int, required: int, what: str) -> None:
    """Raise :class:`InsufficientDataError` when fewer than ``required`` observations are given."""
    if available < required:
        raise InsufficientDataError(required, available, what)


def check_not_constant(name: str, values: np.ndarray, consequence: str) -> None:
    """Raise ``ValueError`` naming ``consequence`` when ``values`` (finite, non-empty) is constant."""
    if values.max() == values.min():
        raise ValueError(f"{name} is constant; {consequence}")


def wrap(values: np.ndarray, index: pd.Index | None, name: str) -> np.ndarray | pd.Series:
    """Return ``values`` as a Series on ``index`` when the caller passed pandas, else unchanged."""
    if index is None:
        return values
    return pd.Series(values, index=index, name=name, copy=False)
