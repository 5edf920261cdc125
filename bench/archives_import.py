"""Importing Binance archive months into the research store: time per symbol-month, from a folder and over HTTP.

A generated archive tree (testkit/archives.py) of ``--symbols`` symbols × one whole month of 1 min
bars (44,640 a month, as Binance publishes them: spot, no header, µs times when the month is from
2025), imported by :func:`ingestion.archives.import_months` from the folder and from the loopback
:class:`testkit.archives.ArchiveServer` into fresh stores; then a re-run over HTTP, which finds
every month stored and only reads the ``.CHECKSUM`` files. Reports wall time per symbol-month,
bars/s and the peak RSS growth of this process (``ru_maxrss``) over each import (the tree is
generated in a child process, so the baseline is the interpreter and its imports).

    OPENBLAS_NUM_THREADS=1 .venv/bin/python bench/archives_import.py [--symbols 10] [--month 2025-01]
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from domain import ONE_MINUTE, Market
from ingestion.archives import FolderArchives, HttpArchives, MonthOutcome, import_months
from records.retry import RetryPolicy
from storage.research import ResearchStore
from testkit.archives import ArchiveServer, write_archive_tree


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=10)
    parser.add_argument("--month", default="2025-01")
    parser.add_argument("--generate", help=argparse.SUPPRESS)  # the child: write the tree there and exit
    args = parser.parse_args()
    symbols = [f"S{i:03d}USDT" for i in range(args.symbols)]
    if args.generate:
        write_archive_tree(args.generate, symbols, [args.month], seed=1)
        return
    today = date(2030, 1, 1)  # every month is over: monthly files
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        started = time.perf_counter()
        subprocess.run([sys.executable, __file__, "--symbols", str(args.symbols), "--month", args.month,
                        "--generate", str(root / "mirror")], check=True)
        zips = sum(p.stat().st_size for p in (root / "mirror").rglob("*.zip"))
        print(f"archive: {len(symbols)} symbols × {args.month} of 1 min bars, {zips / 2**20:.1f} MB of zips "
              f"(generated in {time.perf_counter() - started:.1f} s)")

        def run(label: str, archives: FolderArchives | HttpArchives, store: ResearchStore) -> None:
            before = rss_mb()
            started = time.perf_counter()
            outcomes: list[MonthOutcome] = import_months(archives, store, Market.SPOT, ONE_MINUTE, symbols,
                                                         [args.month], today=today)
            took = time.perf_counter() - started
            bars = sum(o.bars for o in outcomes)
            statuses = sorted({o.status for o in outcomes})
            print(f"{label:24s} {took:7.2f} s  {1e3 * took / len(symbols):7.1f} ms/symbol-month  "
                  f"{bars / took if bars else 0:10,.0f} bars/s  peak RSS +{rss_mb() - before:5.1f} MB  {statuses}")

        run("folder", FolderArchives(root / "mirror"), ResearchStore(str(root / "store-folder")))
        policy = RetryPolicy(base_s=0.01, cap_s=0.1, max_attempts=3)
        with ArchiveServer(root / "mirror") as server:
            store = ResearchStore(str(root / "store-http"))
            run("http (loopback)", HttpArchives(server.url, root / "downloads", policy=policy), store)
            run("http re-run (skips)", HttpArchives(server.url, root / "downloads", policy=policy), store)


if __name__ == "__main__":
    main()
