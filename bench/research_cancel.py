"""How fast a research job's cancel takes effect (research/jobs.py, research/cluster.py), on its own local cluster.

A temporary research store gets ``--symbols`` random walks of ``--days`` days of 1 min bars. Then, for
each phase, a job (:class:`research.jobs.JobRunner`, its default local cluster of ``--workers``
processes) is cancelled by its owner and the seconds are measured from the cancel to the job's
status no longer active (``ended``) and to its worker processes gone (``workers gone``, read from
/proc):

1. ``starting``: the cluster's start held at a gate by a worker preload (testkit/held_start.py),
   as a start is held by a loaded machine for ~25 s;
2. ``blocks running``: cancelled as soon as the blocks are submitted (every worker busy with one).

For reference, ``start`` is the seconds an unheld start of the same cluster took here (to the
blocks submitted). The machine's load is printed beside the numbers.

    OPENBLAS_NUM_THREADS=1 .venv/bin/python bench/research_cancel.py [--workers 2] [--symbols 16] [--days 10]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import dask

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from domain import Market, Timeframe
from research.jobs import JobRunner
from research.request import ResearchRequest, plan
from storage.research import ResearchStore
from testkit.held_start import GATE_ENV, PRELOAD, child_pids, held_pids
from testkit.research import universe_closes, write_universe
from testkit.waiting import eventually

START = 1_704_067_200_000  # 2024-01-01T00:00Z
MINUTE = Timeframe.of("1m")


def load() -> str:
    return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg()) + f" on {os.cpu_count()} cores"


def cancelled(runner: JobRunner, token: str, before: set[int]) -> tuple[float, float]:
    """Cancel, then the seconds until the job ended and until its worker processes were gone."""
    asked = time.monotonic()
    assert runner.cancel(token)
    eventually(lambda: not runner.snapshot().active, timeout=300, interval=0.005)  # type: ignore[union-attr]
    ended = time.monotonic() - asked
    eventually(lambda: child_pids() <= before, timeout=300, interval=0.005)
    state = runner.snapshot()
    assert state is not None and state.state == "cancelled", state
    return ended, time.monotonic() - asked


def main() -> None:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--workers", type=int, default=2)
    args.add_argument("--symbols", type=int, default=16)
    args.add_argument("--days", type=int, default=10)
    opts = args.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        symbols = tuple(f"B{i:03d}USDT" for i in range(opts.symbols))
        bars = opts.days * 1_440
        write_universe(ResearchStore(str(root / "store")), Market.SPOT, MINUTE, symbols, START,
                       universe_closes(symbols, bars, seed=1))
        planned = plan(ResearchRequest("scan", str(root / "store"), Market.SPOT, MINUTE, START,
                                       START + bars * MINUTE.ms, block_size=2))
        print(f"{opts.symbols} symbols × {bars:,} bars, {planned.pairs:,} pairs, {opts.workers} workers; {load()}")

        before = child_pids()
        gate = root / "gate"
        gate.mkdir()
        os.environ[GATE_ENV] = str(gate)
        runner = JobRunner()
        with dask.config.set({"distributed.worker.preload": [PRELOAD]}):
            token = runner.start(planned, root / "runs", workers=opts.workers)
            eventually(lambda: len(held_pids(gate)) == opts.workers, timeout=300, interval=0.01)
        ended, gone = cancelled(runner, token, before)
        print(f"starting:       ended {ended:.2f} s, workers gone {gone:.2f} s after the cancel")

        submitted = threading.Event()
        runner = JobRunner(hook=lambda done, total: submitted.set())
        asked = time.monotonic()
        token = runner.start(planned, root / "runs", workers=opts.workers)
        assert submitted.wait(300)
        start = time.monotonic() - asked
        ended, gone = cancelled(runner, token, before)
        print(f"blocks running: ended {ended:.2f} s, workers gone {gone:.2f} s after the cancel")
        print(f"start (for reference, unheld): {start:.2f} s; {load()}")
        assert not (root / "runs").exists() or not any((root / "runs").iterdir())


if __name__ == "__main__":
    main()
