"""The heatmap of 200 watched symbols: what it costs to compute and draw, and whether it groups.

One day of 1 min log returns (1,440 × ``--symbols``) of symbols in ``--clusters`` planted groups
(each a common factor plus noise), columns shuffled. Timed, median of ``--repeats``: the
correlation matrix (:func:`analytics.correlation_matrix`), the shown part
(:func:`ui.charts_tab.heatmap_matrix`: top 30 by |ρ|, clustered) with its figure
(:func:`ui.charts.correlation_heatmap`), and all symbols clustered with the figure; plus
``DataFrame.corr`` (what the matrix used before) for reference. Checks that the clustered order
puts every planted group in one block.

    OPENBLAS_NUM_THREADS=1 .venv/bin/python bench/heatmap.py [--symbols 200] [--repeats 20]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analytics import clustered_order, correlation_matrix
from ui import charts
from ui.charts_tab import HEATMAP_TOP_N, HeatmapChoice, heatmap_matrix

CPU_MS: list[float] = []  # the CPU time (this process) of each timed part, in the order timed


def timed(work, repeats: int) -> tuple[float, object]:
    """Median wall ms of ``repeats`` calls (and their median CPU ms into :data:`CPU_MS`: a busy
    machine stretches wall time, much less CPU time) and the last result."""
    times, cpu, result = [], [], None
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        result = work()
        times.append((time.perf_counter() - start) * 1000)
        cpu.append((time.process_time() - start_cpu) * 1000)
    CPU_MS.append(statistics.median(cpu))
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=200)
    parser.add_argument("--clusters", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    rng = np.random.default_rng(7)
    k = args.symbols
    group = rng.permutation(np.arange(k) % args.clusters)
    returns = pd.DataFrame(rng.normal(0, 1e-3, (1_440, args.clusters))[:, group] + rng.normal(0, 6e-4, (1_440, k)),
                           columns=[f"S{i:03d}USDT" for i in range(k)])
    legs = (returns.columns[0], returns.columns[1])
    corr_ms, matrix = timed(lambda: correlation_matrix(returns), args.repeats)
    pandas_ms, _ = timed(lambda: returns.corr(), max(3, args.repeats // 4))
    top_ms, _ = timed(lambda: charts.correlation_heatmap(heatmap_matrix(matrix, HeatmapChoice(), legs)), args.repeats)
    all_ms, figure = timed(lambda: charts.correlation_heatmap(heatmap_matrix(matrix, HeatmapChoice(k), legs)),
                           args.repeats)
    order = clustered_order(matrix)
    blocks = all(np.ptp([order.index(s) for s in returns.columns[group == g]]) == (group == g).sum() - 1
                 for g in range(args.clusters))
    corr_cpu, _, top_cpu, all_cpu = CPU_MS
    print(f"{k} symbols x 1,440 one-minute returns, {args.clusters} planted groups; median of {args.repeats} "
          f"(wall; CPU in brackets):")
    print(f"correlation matrix                   : {corr_ms:6.1f} ms [{corr_cpu:.1f}] "
          f"(DataFrame.corr: {pandas_ms:.1f} ms)")
    print(f"top {HEATMAP_TOP_N}, clustered, figure            : {top_ms:6.1f} ms [{top_cpu:.1f}] -> heatmap total "
          f"{corr_ms + top_ms:.1f} ms [{corr_cpu + top_cpu:.1f}]")
    print(f"all {k}, clustered, figure           : {all_ms:6.1f} ms [{all_cpu:.1f}] -> heatmap total "
          f"{corr_ms + all_ms:.1f} ms [{corr_cpu + all_cpu:.1f}] (height {figure.layout.height} px)")
    print(f"clustered order puts every planted group in one block: {blocks}")


if __name__ == "__main__":
    main()
