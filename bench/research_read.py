"""How a research scan should read the Parquet store: pyarrow (what storage/research.py does) vs DuckDB.

The read a scan makes: the closes of N symbols over one month of 1 min bars (44,640 bars each), as
one wide frame (a column per symbol, indexed by bar start, UTC), from a store of ``--universe``
symbols (default 200). Readers, each given the same symbols:

* ``store.closes``: :meth:`storage.research.ResearchStore.closes`, one ``pq.read_table`` per
  symbol-month with the ``close`` column and the span filter, then aligned by pandas.
* ``arrow dataset``: one ``pyarrow.dataset`` over exactly those files (``symbol`` from the Hive path),
  filtered and pivoted once.
* ``duckdb files``: DuckDB ``read_parquet`` of exactly those files (``hive_partitioning``), the span
  filter in SQL, pivoted by pandas.
* ``duckdb glob``: DuckDB over the whole store's glob, symbol and month filtered in SQL (the partition
  pruning DuckDB offers: it must list every file of the store first).

Every reader's frame is checked equal to ``store.closes``'. DuckDB is not a dependency: the readers
that need it run only where it is installed (a throwaway venv with duckdb, pyarrow and pandas;
``storage/research.py`` needs nothing else). Median wall time of ``--repeats`` calls, warm page cache.

    python3 -m venv /tmp/duck && /tmp/duck/bin/pip install duckdb pyarrow pandas
    OPENBLAS_NUM_THREADS=1 /tmp/duck/bin/python bench/research_read.py [--universe 200] [--repeats 5]
"""

from __future__ import annotations

import argparse
import functools
import importlib
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from domain import ONE_MINUTE, Market
from storage.research import ResearchStore

MONTH = "2024-12"
START = pd.Timestamp(MONTH + "-01", tz="UTC").value // 1_000_000
END = pd.Timestamp("2025-01-01", tz="UTC").value // 1_000_000


def build(root: Path, universe: int, seed: int = 1) -> list[str]:
    """A store of ``universe`` symbols × one whole month of 1 min bars (random walks)."""
    store = ResearchStore(str(root))
    rng = np.random.default_rng(seed)
    times = np.arange(START, END, ONE_MINUTE.ms, dtype=np.int64)
    symbols = [f"S{i:03d}USDT" for i in range(universe)]
    for symbol in symbols:
        close = np.exp(np.log(rng.uniform(1, 1000)) + np.cumsum(rng.normal(0, 1e-3, len(times))))
        volume = rng.uniform(1, 100, len(times))
        store.write_month(Market.SPOT, ONE_MINUTE, symbol, MONTH, pd.DataFrame({
            "open_time": times, "open": close, "high": close * 1.001, "low": close * 0.999, "close": close,
            "volume": volume, "quote_volume": volume * close, "trades": rng.integers(1, 500, len(times))}))
    return symbols


def wide(table: pa.Table, symbols: list[str]) -> pd.DataFrame:
    """(symbol, open_time, close) rows → one column per symbol, indexed by bar start (UTC), built as
    store.closes builds its frame (a Series per symbol, aligned by pandas), so only the read differs."""
    frame = table.to_pandas()
    columns = {}
    for symbol, rows in frame.groupby(frame["symbol"].astype(str), sort=False):
        columns[symbol] = pd.Series(rows["close"].to_numpy(),
                                    index=pd.to_datetime(rows["open_time"].to_numpy(), unit="ms", utc=True))
    return pd.DataFrame({s: columns[s] for s in symbols if s in columns}).sort_index()


def readers(store: ResearchStore) -> dict[str, Callable[[list[str]], pd.DataFrame]]:
    def store_closes(symbols: list[str]) -> pd.DataFrame:
        return store.closes(Market.SPOT, ONE_MINUTE, symbols, START, END)

    def arrow_dataset(symbols: list[str]) -> pd.DataFrame:
        files = [store.path(Market.SPOT, ONE_MINUTE, s, MONTH) for s in symbols]
        dataset = ds.dataset(files, format="parquet", partitioning="hive",
                             partition_base_dir=store.base)
        table = dataset.to_table(columns=["symbol", "open_time", "close"],
                                 filter=(pc.field("open_time") >= START) & (pc.field("open_time") < END))
        return wide(table, symbols)

    found: dict[str, Callable[[list[str]], pd.DataFrame]] = {
        "store.closes (pyarrow, per file)": store_closes, "arrow dataset (one scan)": arrow_dataset}
    try:
        duckdb = importlib.import_module("duckdb")  # not a dependency: only where it is installed
    except ImportError:
        return found

    def duckdb_files(symbols: list[str]) -> pd.DataFrame:
        files = [store.path(Market.SPOT, ONE_MINUTE, s, MONTH) for s in symbols]
        with duckdb.connect() as con:
            table = con.sql("SELECT symbol, open_time, close FROM read_parquet($files, hive_partitioning = true) "
                            "WHERE open_time >= $start AND open_time < $end",
                            params={"files": files, "start": START, "end": END}).to_arrow_table()
        return wide(table, symbols)

    def duckdb_glob(symbols: list[str]) -> pd.DataFrame:
        pattern = f"{store.base}/market=spot/interval=1m/*/*/*.parquet"
        with duckdb.connect() as con:
            table = con.sql("SELECT symbol, open_time, close FROM read_parquet($glob, hive_partitioning = true) "
                            "WHERE list_contains($symbols, symbol) AND month = $month AND open_time >= $start "
                            "AND open_time < $end", params={"glob": pattern, "symbols": symbols, "month": MONTH,
                                                             "start": START, "end": END}).to_arrow_table()
        return wide(table, symbols)

    found["duckdb files"] = duckdb_files
    found["duckdb glob (partition pruning)"] = duckdb_glob
    return found


def timed(function: Callable[[], pd.DataFrame], repeats: int) -> tuple[float, pd.DataFrame]:
    times, result = [], pd.DataFrame()
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--universe", type=int, default=200)
    parser.add_argument("--picks", default="2,20,100", help="symbols read per call, comma-separated")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        symbols = build(Path(folder), args.universe)
        size = sum(p.stat().st_size for p in Path(folder).rglob("*.parquet"))
        print(f"store: {args.universe} symbols × {MONTH} of 1 min bars, {size / 2**20:.1f} MB of Parquet "
              f"(written in {time.perf_counter() - started:.1f} s); pyarrow {pa.__version__}, pandas {pd.__version__}")
        store = ResearchStore(folder)
        rng = np.random.default_rng(7)
        for pick in (int(p) for p in args.picks.split(",")):
            chosen = sorted(rng.choice(symbols, size=pick, replace=False).tolist())
            reference = None
            for name, read in readers(store).items():
                ms, frame = timed(functools.partial(read, chosen), args.repeats)
                if reference is None:
                    reference = frame
                same = frame.shape == reference.shape and np.array_equal(frame.to_numpy(), reference.to_numpy(),
                                                                         equal_nan=True)
                print(f"{pick:4d} symbols  {name:34s} {ms:9.1f} ms  ({ms / pick:6.2f} ms/symbol)"
                      f"{'' if same else '  DIFFERENT FRAME'}")


if __name__ == "__main__":
    main()
