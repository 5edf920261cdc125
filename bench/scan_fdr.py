"""Scanner q-values: family-wise error under the null, false-discovery proportion and power with planted pairs.

``scan_pairs`` runs the Engle–Granger test in both orderings of every pair. Which p-value goes
into Benjamini–Hochberg decides whether its q-values keep their promise. Each method below is
computed from the same scans (the tested ordering's ``eg_pvalue`` and ``eg_pvalue_reverse``):

* ``min p (old)``: the smaller of the two orderings' p-values, BH over the pairs (what the
  scanner did before: not a valid p-value);
* ``2·min p``: Bonferroni for the choice of ordering, min(1, 2·min p), BH over the pairs;
* ``BH 2n``: BH over both orderings as 2n tests; a pair's q is the smaller of its two;
* ``fixed: label``: one ordering, y = the label that sorts first (the scanner's rule: its
  ``q_value`` column);
* ``fixed: low-vol X``: one ordering, x = the leg with the lower volatility of log returns.

Universes: ``--symbols`` independent random walks of ``--bars`` bars (price 1,000 + N(0, 1)
steps). Null runs have nothing else; planted runs make ``--planted`` disjoint pairs of randomly
chosen symbols cointegrated: y = 500 + β·x + s, β ~ U(0.5, 2), s an AR(1) with half-life
``--half-life`` bars and innovations of ``--spread-sd`` times a leg's step. Seed i gives the
same universes in every run.

Reported per method: null FWER = share of null scans with any q < 0.05 (Wilson 95 % CI);
planted FDP = mean over planted scans of (false pairs with q < 0.05) / (pairs with q < 0.05),
0 when there are none (95 % CI of the mean); power = planted pairs with q < 0.05 / planted.
Also: pairs with raw p < 0.05 per null scan, and in the planted scans the raw (fixed-ordering)
rejection rate of null pairs that share a leg with a planted pair versus the others: the
Engle–Granger test itself over-rejects when a leg is a random walk plus a large stationary
term, which no multiple-testing correction can undo.

The scans use ``window`` > bars, which skips the last z-score (it does not enter any p-value).

    OPENBLAS_NUM_THREADS=1 .venv/bin/python bench/scan_fdr.py [--seeds 800] [--planted-seeds 400]
        [--symbols 50] [--bars 1440]
        [--planted 5] [--half-life 15] [--spread-sd 0.5] [--processes 2]
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from dataclasses import dataclass
from multiprocessing import Pool
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy loads: one thread per process

import numpy as np
import pandas as pd
from scipy.signal import lfilter

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analytics.scan import benjamini_hochberg, scan_pairs

LEVEL = 0.05
METHODS = ("min p (old)", "2·min p", "BH 2n", "fixed: label", "fixed: low-vol X")


@dataclass(frozen=True, slots=True)
class Config:
    symbols: int
    bars: int
    planted: int
    half_life: float  # bars
    spread_sd: float  # spread innovation sd / random-walk step sd


@dataclass(frozen=True, slots=True)
class Outcome:
    """One scan: per method (false discoveries, true discoveries); raw counts of null pairs."""

    found: dict[str, tuple[int, int]]
    raw_min: int  # null pairs with min(p, p_reverse) < 0.05
    raw_fixed: int  # null pairs with eg_pvalue < 0.05
    touching: tuple[int, int]  # null pairs sharing a leg with a planted pair: (raw p < 0.05, count)
    apart: tuple[int, int]  # the other null pairs: (raw p < 0.05, count)


def universe(config: Config, seed: int, planted: int) -> tuple[pd.DataFrame, set[frozenset[str]]]:
    """Closes (bars × symbols) and the planted pairs, as sets of two symbols."""
    rng = np.random.default_rng(seed)
    values = 1_000.0 + np.cumsum(rng.normal(size=(config.bars, config.symbols)), axis=0)
    legs = rng.permutation(config.symbols)[: 2 * planted].reshape(-1, 2)
    phi = 0.5 ** (1.0 / config.half_life)
    for y, x in legs:
        beta = rng.uniform(0.5, 2.0)
        spread = lfilter([1.0], [1.0, -phi], config.spread_sd * rng.normal(size=config.bars))
        values[:, y] = 500.0 + beta * values[:, x] + spread
    names = [f"S{i:02d}" for i in range(config.symbols)]
    truth = {frozenset((names[y], names[x])) for y, x in legs}
    return pd.DataFrame(values, columns=names), truth


def q_values(table: pd.DataFrame, closes: pd.DataFrame) -> dict[str, np.ndarray]:
    """Each method's q-value per row of the scan's table."""
    p, reverse = table["eg_pvalue"].to_numpy(), table["eg_pvalue_reverse"].to_numpy()
    low = np.minimum(p, reverse)
    both = benjamini_hochberg(np.concatenate([p, reverse]))
    volatility = np.log(closes).diff().std()
    y_is_x = volatility[table["y"]].to_numpy() < volatility[table["x"]].to_numpy()
    return {
        "min p (old)": benjamini_hochberg(low),
        "2·min p": benjamini_hochberg(np.minimum(1.0, 2.0 * low)),
        "BH 2n": np.minimum(both[: len(p)], both[len(p):]),
        "fixed: label": table["q_value"].to_numpy(),
        "fixed: low-vol X": benjamini_hochberg(np.where(y_is_x, reverse, p)),
    }


def run(job: tuple[Config, int, int]) -> Outcome:
    config, seed, planted = job
    closes, truth = universe(config, seed, planted)
    table = scan_pairs(closes, window=config.bars + 1)
    assert (table["status"] == "ok").all(), table["status"].value_counts()
    pairs = [frozenset(pair) for pair in zip(table["y"], table["x"], strict=True)]
    true = np.array([pair in truth for pair in pairs])
    legs = set().union(*truth) if truth else set()
    touching = np.array([bool(pair & legs) for pair in pairs]) & ~true
    apart = ~true & ~touching
    found = {}
    for method, q in q_values(table, closes).items():
        found[method] = (int((q[~true] < LEVEL).sum()), int((q[true] < LEVEL).sum()))
    p, reverse = table["eg_pvalue"].to_numpy(), table["eg_pvalue_reverse"].to_numpy()
    return Outcome(found, int((np.minimum(p, reverse)[~true] < LEVEL).sum()), int((p[~true] < LEVEL).sum()),
                   (int((p[touching] < LEVEL).sum()), int(touching.sum())),
                   (int((p[apart] < LEVEL).sum()), int(apart.sum())))


def wilson(successes: int, n: int) -> tuple[float, float]:
    """Wilson score 95 % interval of a binomial proportion."""
    z = 1.959963984540054
    centre = (successes + z * z / 2) / (n + z * z)
    half = z * math.sqrt(successes * (n - successes) / n + z * z / 4) / (n + z * z)
    return centre - half, centre + half


def mean_ci(values: np.ndarray) -> str:
    half = 1.959963984540054 * values.std(ddof=1) / math.sqrt(len(values)) if len(values) > 1 else math.nan
    return f"{100 * values.mean():5.2f} % ± {100 * half:4.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=800, help="null scans")
    parser.add_argument("--planted-seeds", type=int, default=400, help="scans with planted pairs")
    parser.add_argument("--symbols", type=int, default=50)
    parser.add_argument("--bars", type=int, default=1_440)
    parser.add_argument("--planted", type=int, default=5, help="cointegrated pairs planted (0: null only)")
    parser.add_argument("--half-life", type=float, default=15.0, help="planted spreads' half-life in bars")
    parser.add_argument("--spread-sd", type=float, default=0.5, help="spread innovation sd / leg step sd")
    parser.add_argument("--processes", type=int, default=2)
    args = parser.parse_args()
    if args.symbols < 2 or args.seeds < 2 or args.planted_seeds < 2 or not 0 <= 2 * args.planted <= args.symbols:
        parser.error("need --symbols >= 2, --seeds >= 2, --planted-seeds >= 2 and 0 <= 2·--planted <= --symbols")
    config = Config(args.symbols, args.bars, args.planted, args.half_life, args.spread_sd)
    pairs = args.symbols * (args.symbols - 1) // 2

    start = time.perf_counter()
    settings = {0: args.seeds, **({args.planted: args.planted_seeds} if args.planted else {})}
    with Pool(args.processes) as pool:
        outcomes = {planted: pool.map(run, [(config, seed, planted) for seed in range(seeds)], chunksize=4)
                    for planted, seeds in settings.items()}
    elapsed = time.perf_counter() - start

    print(f"{args.seeds} null and {args.planted_seeds} planted scans of {args.symbols} symbols x {args.bars} bars "
          f"({pairs:,} pairs each); planted: {args.planted} pairs, half-life {args.half_life:g} bars, spread sd "
          f"{args.spread_sd:g}; "
          f"{elapsed:.0f} s on {args.processes} processes")
    null = outcomes[0]
    raw_min = np.mean([o.raw_min for o in null])
    raw_fixed = np.mean([o.raw_fixed for o in null])
    print(f"null: pairs with raw p < 0.05 per scan: {raw_fixed:.1f} of {pairs:,} one fixed ordering "
          f"({100 * raw_fixed / pairs:.2f} %), {raw_min:.1f} the smaller of both ({100 * raw_min / pairs:.2f} %)")
    print()
    print(f"{'method':<18} {'null FWER (95 % CI)':>26} {'planted FDP (95 % CI)':>24} {'power (95 % CI)':>24}")
    for method in METHODS:
        hits = sum(o.found[method][0] > 0 for o in null)
        low, high = wilson(hits, len(null))
        fwer = f"{100 * hits / len(null):5.2f} % [{100 * low:4.2f}, {100 * high:4.2f}]"
        fdp = power = "–"
        if args.planted:
            found = np.array([o.found[method] for o in outcomes[args.planted]], dtype=float)
            total = found.sum(axis=1)
            fdp = mean_ci(np.divide(found[:, 0], total, out=np.zeros(len(found)), where=total > 0))
            power = mean_ci(found[:, 1] / args.planted)
        print(f"{method:<18} {fwer:>26} {fdp:>24} {power:>24}")
    if args.planted:
        planted = outcomes[args.planted]
        touching = np.sum([o.touching for o in planted], axis=0)
        apart = np.sum([o.apart for o in planted], axis=0)
        print()
        print(f"planted scans, null pairs with raw p < 0.05 (fixed ordering): sharing a leg with a planted pair "
              f"{100 * touching[0] / touching[1]:.2f} % of {touching[1]:,}, others {100 * apart[0] / apart[1]:.2f} % "
              f"of {apart[1]:,}")


if __name__ == "__main__":
    main()
