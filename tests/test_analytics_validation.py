"""Shared entry checks and the domain error, exercised through the public functions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import analytics
from analytics.errors import InsufficientDataError


def test_insufficient_data_error_names_the_shortfall() -> None:
    error = InsufficientDataError(30, 12, "adf")
    assert isinstance(error, ValueError)
    assert (error.required, error.available) == (30, 12)
    assert str(error) == "adf: needs 30 observations, got 12 (18 more)"
    assert str(InsufficientDataError(1, 0)) == "needs 1 observation, got 0 (1 more)"


def test_series_on_different_indexes_are_rejected_not_silently_aligned() -> None:
    y = pd.Series(np.arange(10.0) + np.sin(np.arange(10.0)), index=range(10))
    x = pd.Series(np.arange(10.0), index=range(5, 15))
    with pytest.raises(ValueError, match="y and x have different indexes; align them first"):
        analytics.rolling_hedge(y, x, 3)
    with pytest.raises(ValueError, match="y and beta have different indexes"):
        analytics.spread(y, y, x)


@pytest.mark.parametrize("window", [True, 2.0, "5", None])
def test_window_must_be_a_real_integer(window) -> None:
    with pytest.raises(ValueError, match="window must be an integer"):
        analytics.rolling_zscore(np.arange(10.0), window)


def test_numpy_integers_are_accepted_as_windows() -> None:
    z = analytics.rolling_zscore(np.arange(10.0) ** 2, np.int64(3))
    assert np.isnan(z[:2]).all() and np.isfinite(z[2:]).all()


def test_inputs_must_be_numeric_and_one_dimensional() -> None:
    with pytest.raises(ValueError, match="s must be 1-dimensional, got a DataFrame"):
        analytics.rolling_zscore(pd.DataFrame({"a": [1.0, 2.0, 3.0]}), 2)
    with pytest.raises(ValueError, match="s must be 1-dimensional, got shape \\(2, 2\\)"):
        analytics.rolling_zscore(np.ones((2, 2)), 2)
    with pytest.raises(ValueError, match="series must be numeric"):
        analytics.adf(["a", "b", "c", "d", "e"])


def test_public_names_are_exported() -> None:
    for name in analytics.__all__:
        assert hasattr(analytics, name), name
