"""MacKinnon's response-surface coefficients for p-values of (A)DF and Engle–Granger τ statistics.

Source: J. G. MacKinnon (1994), "Approximate asymptotic distribution functions for unit-root and
cointegration tests", Journal of Business & Economic Statistics 12(2), 167–176, Table 3, as
transcribed in statsmodels 0.15.0 (``statsmodels/tsa/adfvalues.py``, BSD-3-Clause), whose
``mackinnonp`` our vectorised port in :mod:`analytics._unitroot` reproduces bit for bit. Pinned here
as our own data so that no code depends on statsmodels' private names; tests/test_analytics_scan.py
checks every number against statsmodels.

Keys are the deterministic terms (``n`` none, ``c`` constant, ``ct`` + trend, ``ctt`` + trend²);
row ``i`` is for ``i + 1`` integrated series (1: a unit-root test, 2: a two-series cointegration
test, …). Polynomial coefficients are in ascending powers of τ, already scaled as MacKinnon prints
them (small: 1, 1, 1e-2; large: 1, 1e-1, 1e-1, 1e-2).
"""

from __future__ import annotations

import numpy as np

_INF = float("inf")

# Above TAU_MAX the p-value is 1, below TAU_MIN it is 0; TAU_STAR splits the small-p and large-p fits.
TAU_STAR: dict[str, list[float]] = {
    "n": [-1.04, -1.53, -2.68, -3.09, -3.07, -3.77],
    "c": [-1.61, -2.62, -3.13, -3.47, -3.78, -3.93],
    "ct": [-2.89, -3.19, -3.50, -3.65, -3.80, -4.36],
    "ctt": [-3.21, -3.51, -3.81, -3.83, -4.12, -4.63],
}
TAU_MIN: dict[str, list[float]] = {
    "n": [-19.04, -19.62, -21.21, -23.25, -21.63, -25.74],
    "c": [-18.83, -18.86, -23.48, -28.07, -25.96, -23.27],
    "ct": [-16.18, -21.15, -25.37, -26.63, -26.53, -26.18],
    "ctt": [-17.17, -21.1, -24.33, -24.03, -24.33, -28.22],
}
TAU_MAX: dict[str, list[float]] = {
    "n": [_INF, 1.51, 0.86, 0.88, 1.05, 1.24],
    "c": [2.74, 0.92, 0.55, 0.61, 0.79, 1],
    "ct": [0.7, 0.63, 0.71, 0.93, 1.19, 1.42],
    "ctt": [0.54, 0.79, 1.08, 1.43, 3.49, 1.92],
}

_SMALL_SCALING = np.array([1, 1, 1e-2])
_LARGE_SCALING = np.array([1, 1e-1, 1e-1, 1e-2])

# p = Φ(polynomial(τ)) for τ <= TAU_STAR (small p) …
TAU_SMALL_P: dict[str, np.ndarray] = {
    "n": np.asarray([
        [0.6344, 1.2378, 3.2496],
        [1.9129, 1.3857, 3.5322],
        [2.7648, 1.4502, 3.4186],
        [3.4336, 1.4835, 3.19],
        [4.0999, 1.5533, 3.59],
        [4.5388, 1.5344, 2.9807]]) * _SMALL_SCALING,
    "c": np.asarray([
        [2.1659, 1.4412, 3.8269],
        [2.92, 1.5012, 3.9796],
        [3.4699, 1.4856, 3.164],
        [3.9673, 1.4777, 2.6315],
        [4.5509, 1.5338, 2.9545],
        [5.1399, 1.6036, 3.4445]]) * _SMALL_SCALING,
    "ct": np.asarray([
        [3.2512, 1.6047, 4.9588],
        [3.6646, 1.5419, 3.6448],
        [4.0983, 1.5173, 2.9898],
        [4.5844, 1.5338, 2.8796],
        [5.0722, 1.5634, 2.9472],
        [5.53, 1.5914, 3.0392]]) * _SMALL_SCALING,
    "ctt": np.asarray([
        [4.0003, 1.658, 4.8288],
        [4.3534, 1.6016, 3.7947],
        [4.7343, 1.5768, 3.2396],
        [5.214, 1.6077, 3.3449],
        [5.6481, 1.6274, 3.3455],
        [5.9296, 1.5929, 2.8223]]) * _SMALL_SCALING,
}
# … and for τ > TAU_STAR (large p).
TAU_LARGE_P: dict[str, np.ndarray] = {
    "n": np.asarray([
        [0.4797, 9.3557, -0.6999, 3.3066],
        [1.5578, 8.558, -2.083, -3.3549],
        [2.2268, 6.8093, -3.2362, -5.4448],
        [2.7654, 6.4502, -3.0811, -4.4946],
        [3.2684, 6.8051, -2.6778, -3.4972],
        [3.7268, 7.167, -2.3648, -2.8288]]) * _LARGE_SCALING,
    "c": np.asarray([
        [1.7339, 9.3202, -1.2745, -1.0368],
        [2.1945, 6.4695, -2.9198, -4.2377],
        [2.5893, 4.5168, -3.6529, -5.0074],
        [3.0387, 4.5452, -3.3666, -4.1921],
        [3.5049, 5.2098, -2.9158, -3.3468],
        [3.9489, 5.8933, -2.5359, -2.721]]) * _LARGE_SCALING,
    "ct": np.asarray([
        [2.5261, 6.1654, -3.7956, -6.0285],
        [2.85, 5.272, -3.6622, -5.1695],
        [3.221, 5.255, -3.2685, -4.1501],
        [3.652, 5.9758, -2.7483, -3.2081],
        [4.0712, 6.6428, -2.3464, -2.546],
        [4.4735, 7.1757, -2.0681, -2.1196]]) * _LARGE_SCALING,
    "ctt": np.asarray([
        [3.0778, 4.9529, -4.1477, -5.9359],
        [3.4713, 5.967, -3.2507, -4.2286],
        [3.8637, 6.7852, -2.6286, -3.1381],
        [4.2736, 7.6199, -2.1534, -2.4026],
        [4.6679, 8.2618, -1.822, -1.9147],
        [5.0009, 8.3735, -1.6994, -1.6928]]) * _LARGE_SCALING,
}
