"""Does a shared view extended bar by bar equal a cold one? Counts the steps at which they differ.

A fake engine (testkit/fake_market.py) receives two legs' trades second by second; after each
second a long-lived :class:`~pairs.shared.SharedAnalytics` (whose view is extended bar by bar) and a
fresh one (a cold computation from the stored bars) are asked for the same view, and the bars
they show are compared: every series (β, α, spread, z, correlation) to 1e-9 relative to its
scale with the same NaN pattern, and the half-life. Two cases of issue 19:

* ``quiet``: X does not trade in the first 200 s and then pauses 15 s in every 53 s, so the span of
  the lookback often starts while it is quiet;
* ``filter``: ``min_trades=2`` (the liquidity filter drops bars in which a leg traded once).

Run: ``OPENBLAS_NUM_THREADS=1 .venv/bin/python bench/shared_views.py [--seeds 3] [--seconds 1500]``
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pairs.compute import PairParams
from pairs.shared import SharedAnalytics
from testkit.fake_market import (
    SYMBOLS,
    T0_MS,
    FakeEngine,
    Scenario,
    arrivals,
    empty_history,
    view_mismatch,
)

WINDOW = 20
LOOKBACK_BARS = 300
WARMUP_STEPS = 30  # the first seconds, before both legs can have a bar


def run(case: str, seed: int, seconds: int) -> tuple[int, int, Counter[str]]:
    """(steps compared, steps that differ, what differed first, counted) for one seed of one case."""
    if case == "quiet":
        scenario, min_trades = Scenario(seconds, seed, quiet_s=200, p_x=0.7, x_pause_every=53, x_pause_len=15), 0
    else:
        scenario, min_trades = Scenario(seconds, seed, p_y=0.95, p_x=0.9, max_trades=3), 2
    params = PairParams(*SYMBOLS, window=WINDOW)
    engine = FakeEngine()
    with tempfile.TemporaryDirectory() as directory:
        history = empty_history(Path(directory))
        # arg-type here and below: a FakeEngine stands in for the Engine (it has what SharedAnalytics reads).
        shared = SharedAnalytics(engine, history)  # type: ignore[arg-type]
        differ, kinds, steps = 0, Counter[str](), 0
        for second, trades in enumerate(arrivals(scenario)[:seconds]):
            engine.feed(trades, T0_MS + (second + 1) * 1_000 + 600)
            if second < WARMUP_STEPS:
                continue
            ask = dict(warmup_bars=2 * WINDOW, min_trades=min_trades)
            cached = shared.view(SYMBOLS, 1_000, LOOKBACK_BARS * 1_000, params, **ask)
            cold = SharedAnalytics(engine, history).view(SYMBOLS, 1_000, LOOKBACK_BARS * 1_000,  # type: ignore[arg-type]
                                                         params, **ask)
            steps += 1
            problem = view_mismatch(cached, cold)
            if problem is not None:
                differ += 1
                kinds[problem.split(":")[0].split(" (")[0]] += 1
        return steps, differ, kinds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=1_500)
    args = parser.parse_args()
    for case in ("quiet", "filter"):
        total_steps = total_differ = 0
        kinds: Counter[str] = Counter()
        for seed in range(args.seeds):
            steps, differ, found = run(case, seed, args.seconds)
            total_steps, total_differ = total_steps + steps, total_differ + differ
            kinds += found
        print(f"{case:>6}: {args.seeds} seeds × {total_steps // args.seeds:,} steps: {total_differ:,} of "
              f"{total_steps:,} steps differ; first difference by kind: {dict(kinds.most_common())}")


if __name__ == "__main__":
    main()
