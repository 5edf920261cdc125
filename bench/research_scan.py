"""The distributed research scan (research/scan.py): wall time, per-pair cost, 1 vs 2 workers, memory per worker.

A temporary research store gets ``--symbols`` geometric random walks (5 planted cointegrated pairs)
of ``--days`` days of 1 min bars (1,440 a day), one Parquet file per symbol and month. Then:

1. per-pair cost, in this process: one cross block of 8 × 8 symbols through ``analytics.scan_block``
   (both orderings' tests, half-life, correlation, z-score), run twice: the second run is a
   column's later blocks in a scan, whose own design sums the process kept from its first; against
   statsmodels' ``coint`` (one ordering) on 3 pairs, both over the whole span;
2. scaling: the scan of the first ``--scale-symbols`` symbols on a local cluster of 1 worker, then
   of 2 workers (one thread each): wall time from submission to the last block, the ratio, and
   whether the two rankings are bit-identical;
3. ``--full``: the scan of every symbol on 2 workers (the issue's figure: 400 × 30 days, ≤ 10 min);
4. memory: the peak resident set of each worker process after the scans (``VmHWM``).

The machine's load (``os.getloadavg``) is printed beside the numbers: on a shared machine the
times and the scaling ratio are those of whatever CPU was left.

    OPENBLAS_NUM_THREADS=1 .venv/bin/python bench/research_scan.py [--symbols 400] [--days 30]
        [--scale-symbols 48] [--block-size 32] [--maxlag N] [--full]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
from statsmodels.tsa.stattools import coint

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analytics import scan_block
from domain import Market, Timeframe
from research.cluster import open_client
from research.scan import ScanSpec, read_closes, scan
from storage.research import ResearchStore
from testkit.research import universe_closes, write_universe

START = 1_704_067_200_000  # 2024-01-01T00:00Z
MINUTE = Timeframe.of("1m")


def peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM), MB. Not ru_maxrss: Linux keeps that across fork and
    exec, so a spawned worker would report its parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0  # kB
    return float("nan")


def load() -> str:
    return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg()) + f" on {os.cpu_count()} cores"


def timed_scan(spec: ScanSpec, workers: int) -> tuple[pd.DataFrame, float, list[float]]:
    with open_client(workers=workers) as client:
        marks: list[float] = []
        outcome = scan(client, spec, progress=lambda done, total: marks.append(time.monotonic()) if done == 0 else None)
        seconds = time.monotonic() - marks[0]
        memory = sorted(client.run(peak_rss_mb).values())
    return outcome.table, seconds, memory


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--symbols", type=int, default=400)
    p.add_argument("--days", type=int, default=30)
    p.add_argument("--scale-symbols", type=int, default=48)
    p.add_argument("--block-size", type=int, default=32)
    p.add_argument("--maxlag", type=int, default=None)
    p.add_argument("--full", action="store_true")
    args = p.parse_args()

    bars = args.days * 1_440
    symbols = [f"S{i:03d}USDT" for i in range(args.symbols)]
    with tempfile.TemporaryDirectory(prefix="research-bench-") as root:
        started = time.monotonic()
        store = ResearchStore(root)
        planted = [(symbols[2 * i + 1], symbols[2 * i]) for i in range(min(5, args.symbols // 2))]
        for first in range(0, len(symbols), 50):  # 50 symbols at a time bounds the generator's memory
            chunk = symbols[first : first + 50]
            closes = universe_closes(chunk, bars, seed=first, planted=[p for p in planted if p[0] in chunk])
            write_universe(store, Market.SPOT, MINUTE, chunk, START, closes)
        print(f"store: {args.symbols} symbols x {bars:,} 1 min bars written in {time.monotonic() - started:.0f} s")
        end = START + bars * MINUTE.ms
        params = {"maxlag": args.maxlag}

        sample = symbols[:16]
        closes = read_closes(store, Market.SPOT, MINUTE, sample, START, end)
        t = time.perf_counter()
        rows = scan_block(closes, sample[:8], sample[8:], **params)
        cold = (time.perf_counter() - t) / len(rows)
        # Again: each column's own design sums are kept now, as for every block after a column's first in a scan.
        t = time.perf_counter()
        rows = scan_block(closes, sample[:8], sample[8:], **params)
        ours = (time.perf_counter() - t) / len(rows)
        t = time.perf_counter()
        for y, x in [(sample[0], sample[8]), (sample[1], sample[9]), (sample[2], sample[10])]:
            coint(closes[y], closes[x], trend="c", maxlag=args.maxlag, autolag="aic")
        theirs = (time.perf_counter() - t) / 3
        print(f"per pair ({bars:,} bars, maxlag {args.maxlag or 'Schwert'}): scan_block {ours * 1e3:.1f} ms "
              f"({cold * 1e3:.1f} ms in a column's first block; both orderings + half-life, corr, z), "
              f"statsmodels coint {theirs * 1e3:.0f} ms (one ordering): {theirs / ours:.0f}x  [{load()}]")

        subset = tuple(symbols[: args.scale_symbols])
        spec = ScanSpec(root, Market.SPOT, MINUTE, subset, START, end, maxlag=args.maxlag, block_size=args.block_size)
        one, t1, m1 = timed_scan(spec, 1)
        print(f"scaling, {len(subset)} symbols ({len(one):,} pairs): 1 worker {t1:.1f} s  [{load()}]")
        two, t2, m2 = timed_scan(spec, 2)
        identical = one.equals(two)
        print(f"scaling: 2 workers {t2:.1f} s, speed-up {t1 / t2:.2f}x, rankings bit-identical: {identical}  "
              f"[{load()}]")
        print(f"peak RSS per worker: 1 worker {m1[0]:.0f} MB; 2 workers {', '.join(f'{m:.0f}' for m in m2)} MB")

        if args.full:
            spec = ScanSpec(root, Market.SPOT, MINUTE, tuple(symbols), START, end, maxlag=args.maxlag,
                            block_size=args.block_size)
            table, seconds, memory = timed_scan(spec, 2)
            print(f"full: {len(symbols)} symbols ({len(table):,} pairs) x {bars:,} bars on 2 workers: "
                  f"{seconds:.0f} s ({seconds / 60:.1f} min), {seconds / len(table) * 2e3:.1f} ms per pair per worker, "
                  f"{int((table['q_value'] < 0.05).sum())} pairs at q < 0.05; peak RSS per worker "
                  f"{', '.join(f'{m:.0f}' for m in memory)} MB  [{load()}]")


if __name__ == "__main__":
    main()
