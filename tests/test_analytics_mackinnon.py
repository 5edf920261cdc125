"""Our copy of MacKinnon's coefficients equals the tables statsmodels' mackinnonp uses, number for number."""

from __future__ import annotations

import numpy as np
import pytest
from statsmodels.tsa import adfvalues  # the reference: its private tables are read here only

from analytics import _mackinnon

TABLES = [
    ("TAU_STAR", "_tau_stars"),
    ("TAU_MIN", "_tau_mins"),
    ("TAU_MAX", "_tau_maxs"),
    ("TAU_SMALL_P", "_tau_smallps"),
    ("TAU_LARGE_P", "_tau_largeps"),
]


@pytest.mark.parametrize(("ours", "theirs"), TABLES)
def test_every_coefficient_equals_statsmodels(ours: str, theirs: str):
    mine, reference = getattr(_mackinnon, ours), getattr(adfvalues, theirs)
    assert mine.keys() == reference.keys() == {"n", "c", "ct", "ctt"}
    for regression in reference:
        np.testing.assert_array_equal(np.asarray(mine[regression]), np.asarray(reference[regression]))
