"""Rolling moments, z-score, hedge and correlation equal exact arithmetic on each window, whatever left it.

Online add/remove updates (pandas' rolling moments, which these functions used) keep a residue of
the values that passed through the window: after one bad print a million typical moves away, the std
was off by up to 1e-4 of itself (and z, β and correlation with it) long after the print had left.
Each window is checked here against exact rational arithmetic (``fractions.Fraction`` on the
stored floats) on small cases and against a brute-force float64 two-pass over every window on large
ones, to 1e-9 of the window's own scale: z and correlation absolute, the mean in standard
deviations, the std relative, β relative to ``std(y)/std(x)``, α relative to the intercept's scale
``std(y)·(1 + |mean(x)|/std(x))`` (plus a few ulps of the level for the mean and α).
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analytics import rolling_correlation, rolling_hedge, rolling_moments, rolling_zscore

TOL = 1e-9


def trailing(values: np.ndarray, window: int) -> np.ndarray:
    """Each bar's trailing window from bar ``window - 1`` on, shape (n - window + 1, window)."""
    return np.lib.stride_tricks.sliding_window_view(values, window)


def signed_sqrt(square: Fraction, sign: Fraction) -> float:
    """``sign(sign)·sqrt(square)`` for an exact square: float() rounds once, sqrt once more."""
    return math.copysign(math.sqrt(float(square)), float(sign)) if sign else 0.0


def exact_stats(y: np.ndarray, x: np.ndarray, window: int) -> dict[str, np.ndarray]:
    """Every rolling statistic of every window in rational arithmetic on the stored floats (NaN in warm-up)."""
    n = len(y)
    out = {name: np.full(n, np.nan) for name in ("mean", "std", "z", "beta", "alpha", "corr")}
    ys, xs = [Fraction(v) for v in y.tolist()], [Fraction(v) for v in x.tolist()]
    for t in range(window - 1, n):
        wy, wx = ys[t - window + 1 : t + 1], xs[t - window + 1 : t + 1]
        my, mx = sum(wy) / window, sum(wx) / window
        syy = sum((v - my) ** 2 for v in wy)
        sxx = sum((v - mx) ** 2 for v in wx)
        sxy = sum((a - my) * (b - mx) for a, b in zip(wy, wx, strict=True))
        out["mean"][t] = float(my)
        out["std"][t] = math.sqrt(float(syy / (window - 1)))
        if syy:
            out["z"][t] = signed_sqrt((wy[-1] - my) ** 2 * (window - 1) / syy, wy[-1] - my)
        if sxx:
            beta = sxy / sxx
            out["beta"][t], out["alpha"][t] = float(beta), float(my - beta * mx)
        if sxx and syy:
            out["corr"][t] = signed_sqrt(sxy**2 / (sxx * syy), sxy)
    return out


def brute_stats(y: np.ndarray, x: np.ndarray, window: int) -> dict[str, np.ndarray]:
    """The same statistics by a float64 two-pass over each window on its own: values taken relative to
    the window's last value (so a level far above the spread costs no digits), their mean from a
    correctly rounded sum (``math.fsum``), then the deviations from it."""
    pad = np.full(window - 1, np.nan)
    cy, cx = trailing(y, window), trailing(x, window)
    ry, rx = cy - cy[:, -1:], cx - cx[:, -1:]
    oy = np.array([math.fsum(chunk) for chunk in ry.tolist()]) / window
    ox = np.array([math.fsum(chunk) for chunk in rx.tolist()]) / window
    dy, dx = ry - oy[:, None], rx - ox[:, None]
    my, mx = cy[:, -1] + oy, cx[:, -1] + ox
    syy, sxx, sxy = (dy * dy).sum(axis=1), (dx * dx).sum(axis=1), (dx * dy).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        beta = sxy / sxx
        stats = {"mean": my, "std": np.sqrt(syy / (window - 1)), "z": dy[:, -1] / np.sqrt(syy / (window - 1)),
                 "beta": beta, "alpha": my - beta * mx, "corr": sxy / np.sqrt(sxx * syy)}
    return {name: np.r_[pad, value] for name, value in stats.items()}


def tolerances(y: np.ndarray, x: np.ndarray, window: int, reference: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """What each statistic may be off by over each window: TOL times its scale, plus for the levels (mean,
    α) a few units in the last place of the level itself, the most a float64 can say about it (the mean
    of prices near 1e8 moving by 1e-2 is known to 1.5e-8 at best, a millionth of its std)."""
    pad = np.full(window - 1, np.nan)
    std_y, std_x = trailing(y, window).std(axis=1, ddof=1), trailing(x, window).std(axis=1, ddof=1)
    mean_x = trailing(x, window).mean(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_window = {"mean": std_y, "std": std_y, "z": np.ones_like(std_y), "beta": std_y / std_x,
                      "alpha": std_y * (1 + np.abs(mean_x) / std_x), "corr": np.ones_like(std_y)}
    allowed = {name: TOL * np.r_[pad, value] for name, value in per_window.items()}
    allowed["mean"] += 2 * np.spacing(np.abs(reference["mean"]))
    level_y = np.abs(reference["alpha"] + reference["beta"] * np.r_[pad, mean_x])
    allowed["alpha"] += 4 * np.spacing(np.maximum(level_y, np.abs(reference["beta"] * np.r_[pad, mean_x])))
    return allowed


def ours(y: np.ndarray, x: np.ndarray, window: int) -> dict[str, np.ndarray]:
    moments, hedge = rolling_moments(y, window), rolling_hedge(y, x, window)
    return {"mean": moments.mean, "std": moments.std, "z": rolling_zscore(y, window), "beta": hedge.beta,
            "alpha": hedge.alpha, "corr": rolling_correlation(y, x, window)}


def assert_matches(y: np.ndarray, x: np.ndarray, window: int, reference: dict[str, np.ndarray],
                   only: slice = slice(None)) -> None:
    """Our statistics equal ``reference`` within TOL of each window's scale, NaN where it is NaN."""
    got, allowed = ours(y, x, window), tolerances(y, x, window, reference)
    for name, expected in reference.items():
        e, g, a = expected[only], np.asarray(got[name])[only], allowed[name][only]
        defined = np.isfinite(e)
        np.testing.assert_array_equal(np.isfinite(g), defined, err_msg=f"{name}: NaN pattern")
        excess = np.abs(g[defined] - e[defined]) - a[defined]
        worst = int(np.argmax(excess)) if excess.size else 0
        assert excess.size == 0 or excess[worst] <= 0, (
            f"{name}: off by {abs(g[defined][worst] - e[defined][worst]):.3g}, allowed {a[defined][worst]:.3g}, "
            f"at bar {np.flatnonzero(defined)[worst]}")


def spiked(n: int, seed: int, at: int, level: float = 100.0, move: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """A cointegrated pair of random walks at ``level`` with moves of ``move``; y has one bad print a
    million typical moves away at bar ``at``."""
    rng = np.random.default_rng(seed)
    x = level + move * np.cumsum(rng.normal(size=n))
    y = 0.5 * level + 1.5 * x + move * rng.normal(size=n)
    y[at] += 1e6 * move * math.pi
    return y, x


@pytest.mark.parametrize("window", [10, 20])
def test_small_cases_equal_rational_arithmetic_after_a_spike_left_the_window(window: int) -> None:
    """Was (pandas' online moments): the std off by 5e-5 of itself once the spike had left."""
    y, x = spiked(60, 1, at=12)
    assert_matches(y, x, window, exact_stats(y, x, window))


@pytest.mark.parametrize("window", [10, 60, 200])
def test_a_spike_of_a_million_typical_values_leaves_no_residue(window: int) -> None:
    y, x = spiked(3_000, 2, at=500)
    assert_matches(y, x, window, brute_stats(y, x, window))


@pytest.mark.parametrize("window", [10, 60, 200])
def test_a_volatile_stretch_followed_by_a_calm_one(window: int) -> None:
    rng = np.random.default_rng(3)
    moves = np.where(np.arange(3_000) < 1_000, 1e4, 1e-2)  # a crash, then a quiet market at the same level
    x = 1e5 + np.cumsum(moves * rng.normal(size=3_000))
    y = 2e4 + 0.25 * x + moves * rng.normal(size=3_000)
    assert_matches(y, x, window, brute_stats(y, x, window))


@pytest.mark.parametrize(("level", "move"), [(1e-8, 1e-12), (1e8, 1e2), (1e8, 1e-2)])
@pytest.mark.parametrize("window", [10, 60])
def test_tiny_and_huge_price_levels(level: float, move: float, window: int) -> None:
    y, x = spiked(2_000, 4, at=300, level=level, move=move)
    assert_matches(y, x, window, brute_stats(y, x, window))


# Prices on a 0.001 grid up to 1e3, spikes up to 1e9 and exact repeats: no float trivia like 1e-300,
# whose square underflows (that is not what a price does).
PRICES = st.integers(-10**6, 10**6).map(lambda k: k / 1_000)
SPIKES = st.integers(-10**9, 10**9).map(float)


@settings(max_examples=60, deadline=None)
@given(
    values=st.lists(
        st.tuples(st.one_of(PRICES, SPIKES, st.sampled_from([0.0, 0.1, 89_766.4])), PRICES),
        min_size=12, max_size=40,
    ),
    window=st.integers(2, 12),
)
def test_any_series_equals_rational_arithmetic(values: list[tuple[float, float]], window: int) -> None:
    """Random values with spikes up to 1e9 among values of 1e3 (and exact repeats): exact on every window."""
    y = np.array([v for v, _ in values])
    x = np.array([u for _, u in values]) + 1e-3 * np.arange(len(values))  # x keeps moving: β defined
    exact = exact_stats(y, x, window)
    # A window whose values are all equal has no std: NaN z, β and correlation (tested elsewhere).
    flat = np.r_[np.zeros(window - 1, bool), np.ptp(trailing(y, window), axis=1) == 0]
    for name in ("z", "corr"):
        exact[name][flat] = np.nan
    assert_matches(y, x, window, exact)


def test_nan_in_the_window_gives_nan_and_later_windows_are_exact() -> None:
    y, x = spiked(400, 5, at=50)
    s = y.copy()
    s[100] = np.nan  # e.g. a rolling hedge's undefined bar inside the spread
    z, moments = rolling_zscore(s, 20), rolling_moments(s, 20)
    assert np.isnan(z[100:120]).all() and np.isnan(moments.std[100:120]).all()
    clean = brute_stats(np.nan_to_num(s), x, 20)
    np.testing.assert_allclose(z[120:], clean["z"][120:], rtol=0, atol=TOL)
    np.testing.assert_allclose(moments.std[120:], clean["std"][120:], rtol=TOL)
