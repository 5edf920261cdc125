"""The universe scan over the research history, on Dask's distributed scheduler.

The family of pairs of ``symbols`` is cut into blocks (:func:`make_blocks`): the symbols, sorted,
are split into groups of ``block_size``; a block is the pairs within one group or the pairs of one
group with another. Each block is one Dask task that reads from the research store (a folder or a
URL every worker can read, :class:`storage.research.ResearchStore`) only the closes of its own
symbols (at most ``2·block_size``) over the formation span, and runs a kernel on them. The
client gathers the blocks' rows and ranks them over the whole family (q-values by
Benjamini–Hochberg over every tested pair, :func:`analytics.rank_pairs`).

The runner is generic (:func:`run_blocks`): a kernel is ``kernel(closes, block, params) -> rows``,
a picklable module-level function taking the block's closes (one column per symbol of the block,
on the span's full bar grid, see :func:`read_closes`), the :class:`Block` and a dict of keyword
parameters, and returning one row per pair. :func:`engle_granger_kernel` is the scan's
(:func:`analytics.scan_block`); a walk-forward kernel plugs in the same way.

Exact: a pair's numbers depend only on its two legs' closes, never on the block it is in
(:func:`analytics.scan_block`), so a scan gives bit-identical numbers on a local cluster, on a
remote one, with one worker or many, with any ``block_size``, and equals one in-process
:func:`analytics.scan_block` call over the whole family (with one BLAS thread, as Dask's workers
have).

Robust: a worker that dies mid-scan costs only the block it was running (the scheduler runs it
again on another worker; a block that raises is retried ``retries`` times); interrupting the
gather (Ctrl-C) cancels every future and stores nothing (:class:`ScanCancelled`). Results are
stored only whole (:func:`save_scan`: written to a temporary folder, then renamed).

Memory per worker: one block at a time (one thread per worker), so it is set by ``block_size``,
never by the universe: the closes of ≤ 2·block_size symbols (8 bytes × bars each, and a few
working copies), the block's Gram array (``(L+2)² × (2·block_size)² × 8`` bytes, L the ADF
maxlag: 106 MB at the defaults) and one shifted copy of a symbol's series (``(3L+2) × bars × 8``
bytes, 57 MB). Measured (``bench/research_scan.py --full``): 613–624 MB peak per worker at the
defaults (32 symbols per group, 43,200 one-minute bars, L = 55) for a universe of 400 symbols;
431–435 MB with 16 per group.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from distributed import Client, KilledWorker, as_completed

import analytics._unitroot
import analytics.scan
from analytics import TRENDS, rank_pairs, scan_block
from domain import Market, Timeframe
from records.safe_csv import to_csv_bytes
from research.results import write_run
from storage.errors import StorageError
from storage.research import ResearchStore, months_between

DEFAULT_BLOCK_SIZE = 32
# The longest stretch without bars a close is carried over (ms): an exchange outage of minutes or hours.
# A longer one (a month missing from the store, a trading halt) is left out rather than filled with a
# flat made-up price, and every pair of the symbol says so in its note (:func:`gap_notes`).
MAX_CARRY_MS = 86_400_000
RESULTS_FILE = "pairs.parquet"
PARAMETERS_FILE = "scan.json"

Kernel = Callable[[pd.DataFrame, "Block", Mapping[str, Any]], pd.DataFrame]
Progress = Callable[[int, int], None]
Submitted = Callable[[list[Any]], None]  # receives a run's Dask futures once they are submitted


class ScanCancelled(RuntimeError):
    """The scan was interrupted; its futures were cancelled and nothing was stored."""


class ScanInputError(ValueError):
    """A bad scan request (unknown symbol, empty span, missing store, ...); the message names it."""


@dataclass(frozen=True, slots=True)
class Block:
    """Pairs within ``left`` (``right`` empty), or of ``left`` with ``right`` (disjoint)."""

    left: tuple[str, ...]
    right: tuple[str, ...] = ()

    @property
    def symbols(self) -> tuple[str, ...]:
        """The symbols whose closes the block reads."""
        return self.left + self.right

    @property
    def pairs(self) -> int:
        """Unordered pairs in the block."""
        return len(self.left) * len(self.right) if self.right else len(self.left) * (len(self.left) - 1) // 2


def make_blocks(symbols: Sequence[str], block_size: int) -> list[Block]:
    """Every unordered pair of ``symbols`` in exactly one block: sorted symbols in groups of
    ``block_size``; each group with itself, then each group with every later one."""
    if not isinstance(block_size, int) or isinstance(block_size, bool) or block_size < 1:
        raise ScanInputError(f"block_size: {block_size!r} must be a whole number of symbols >= 1")
    ordered = sorted(symbols)
    groups = [tuple(ordered[i : i + block_size]) for i in range(0, len(ordered), block_size)]
    blocks = [Block(group) for group in groups if len(group) > 1]
    blocks += [Block(a, b) for i, a in enumerate(groups) for b in groups[i + 1 :]]
    return blocks


@dataclass(frozen=True, slots=True)
class ScanSpec:
    """What a research scan reads and computes.

    ``store``: the research store's root (path or URL, as workers see it); ``start_ms``/``end_ms``:
    the formation span, bars starting in ``[start_ms, end_ms)`` (UTC epoch ms); ``trend``,
    ``window`` (bars), ``maxlag`` (None: Schwert's default for the bar count) and ``min_bars`` as
    in :func:`analytics.scan_pairs`.
    """

    store: str
    market: Market
    timeframe: Timeframe
    symbols: tuple[str, ...]
    start_ms: int
    end_ms: int
    trend: str = "c"
    window: int = 60
    maxlag: int | None = None
    min_bars: int | None = None
    block_size: int = DEFAULT_BLOCK_SIZE

    def kernel_params(self) -> dict[str, Any]:
        """The keyword parameters of :func:`analytics.scan_block`."""
        return {"trend": self.trend, "window": self.window, "maxlag": self.maxlag, "min_bars": self.min_bars}

    def parameters(self) -> dict[str, Any]:
        """Everything that produced a result, as JSON-ready values (the scan's sidecar)."""
        return {
            "store": self.store,
            "market": self.market.value,
            "timeframe": self.timeframe.name,
            "symbols": list(self.symbols),
            "start_utc": _iso(self.start_ms),
            "end_utc": _iso(self.end_ms),
            "start_ms": self.start_ms,
            "end_ms": self.end_ms,
            "bars": (self.end_ms - self.start_ms) // self.timeframe.ms,
            "trend": self.trend,
            "window": self.window,
            "maxlag": self.maxlag,
            "min_bars": self.min_bars,
            "block_size": self.block_size,
            "code_version": code_version(),
        }


@dataclass(frozen=True, slots=True)
class ScanOutcome:
    """A finished scan: the ranked table (:data:`analytics.scan.SCAN_COLUMNS`) and its spec."""

    table: pd.DataFrame
    spec: ScanSpec
    seconds: float

    def significant(self, level: float = 0.05) -> int:
        return int((self.table["q_value"] < level).sum())


def check_spec(spec: ScanSpec) -> ScanSpec:
    """``spec`` if the store, its symbols and the span can be scanned; ScanInputError naming the problem.

    Runs on the client before anything is submitted, so a bad request fails in a second. The span's ends
    are moved up to the timeframe's grid (bars starting in ``[start_ms, end_ms)`` are the same ones), so
    the returned spec names the span's first bar.
    """
    spec = dataclasses.replace(spec, start_ms=_on_grid(spec.start_ms, spec.timeframe),
                               end_ms=_on_grid(spec.end_ms, spec.timeframe))
    if spec.trend not in TRENDS:
        raise ScanInputError(f"trend: {spec.trend!r} is not one of {', '.join(TRENDS)}")
    if spec.end_ms <= spec.start_ms:
        raise ScanInputError(f"span: from {_iso(spec.start_ms)} to {_iso(spec.end_ms)} is empty; --to must be "
                             "after --from")
    bars = (spec.end_ms - spec.start_ms) // spec.timeframe.ms
    if bars < analytics.scan.MIN_SCAN_BARS:
        raise ScanInputError(f"span: {bars} {spec.timeframe.name} bars from {_iso(spec.start_ms)} to "
                             f"{_iso(spec.end_ms)}; a scan needs at least {analytics.scan.MIN_SCAN_BARS}")
    store = open_store(spec.store)
    stored = set(store.symbols(spec.market, spec.timeframe))
    if not stored:
        raise ScanInputError(f"store: {spec.store!r} holds no {spec.market.value} {spec.timeframe.name} bars "
                             "(import archives into it first)")
    if len(set(spec.symbols)) < 2:
        raise ScanInputError(f"symbols: a scan needs at least two symbols, got {', '.join(spec.symbols) or 'none'}")
    if len(set(spec.symbols)) != len(spec.symbols):
        duplicated = sorted({s for s in spec.symbols if spec.symbols.count(s) > 1})
        raise ScanInputError(f"symbols: {', '.join(duplicated)} given more than once")
    make_blocks(spec.symbols, spec.block_size)
    unknown = [s for s in spec.symbols if s not in stored]
    if unknown:
        raise ScanInputError(f"symbols: {', '.join(unknown)} not in the store's {spec.market.value} "
                             f"{spec.timeframe.name} bars ({len(stored)} symbols stored)")
    months = set(months_between(spec.start_ms, spec.end_ms))
    held = {s: store.months(spec.market, spec.timeframe, s) for s in spec.symbols}
    if not any(months & set(held[s]) for s in spec.symbols):
        raise ScanInputError(f"span: no stored month of any symbol overlaps {_iso(spec.start_ms)} – "
                             f"{_iso(spec.end_ms)}")
    # Every worker holds the whole span's bar grid: a span far past the history (a typo such as 2205) would
    # only exhaust their memory. Within the months stored for these symbols, as the Scanner tab's days are.
    stored_months = sorted({m for listed in held.values() for m in listed})
    first, last = pd.Period(stored_months[0], freq="M"), pd.Period(stored_months[-1], freq="M")
    if spec.start_ms < first.start_time.value // 1_000_000 or spec.end_ms > (last + 1).start_time.value // 1_000_000:
        raise ScanInputError(f"span: {_iso(spec.start_ms)} – {_iso(spec.end_ms)} reaches beyond the months stored "
                             f"for these symbols ({first} to {last}); every worker would hold the whole span's bar "
                             "grid: choose a span within them")
    return spec


def _on_grid(ms: int, timeframe: Timeframe) -> int:
    """The first bar start of ``timeframe`` at or after ``ms`` (UTC epoch ms)."""
    return -(-ms // timeframe.ms) * timeframe.ms


def open_store(root: str) -> ResearchStore:
    """The research store at ``root``; ScanInputError when it is a local path that does not exist."""
    if "://" not in root and not Path(root).is_dir():
        raise ScanInputError(f"store: no research store at {root!r} (not a folder)")
    try:
        return ResearchStore(root)
    except (OSError, ValueError) as exc:
        raise ScanInputError(f"store: cannot open {root!r}: {exc}") from None


def read_closes(store: ResearchStore, market: Market, timeframe: Timeframe, symbols: Sequence[str], start_ms: int,
                end_ms: int) -> pd.DataFrame:
    """Closes of ``symbols`` (only those are read) on the full grid of ``[start_ms, end_ms)``.

    One row per bar start of the span whatever the symbols hold, so a pair's rows never depend on
    which other symbols are read with it. A close is carried forward over bars without one for at
    most :data:`MAX_CARRY_MS`, never before a symbol's first bar or after its last (a symbol listed
    or delisted inside the span leaves NaN there; each pair is tested on the rows both legs have).
    A longer stretch without bars stays NaN (:func:`gap_notes` names it).
    """
    raw = store.closes(market, timeframe, list(symbols), start_ms, end_ms)
    # From the first bar start in the span: a grid laid from an instant between two bars matches none.
    first = _on_grid(start_ms, timeframe)
    grid = pd.DatetimeIndex(pd.to_datetime(np.arange(first, end_ms, timeframe.ms, dtype=np.int64), unit="ms",
                                           utc=True), name="start")
    closes = raw.reindex(grid).reindex(columns=list(symbols))
    filled = closes.ffill().where(closes.notna()[::-1].cummax()[::-1])  # blank after each column's last bar
    limit = max(1, MAX_CARRY_MS // timeframe.ms)  # bars
    for column, (gap_start, gap_end) in _gaps(closes, lambda missing: missing > limit):
        filled.iloc[gap_start:gap_end, column] = np.nan
    return filled


def _gaps(closes: pd.DataFrame, keep: Callable[[int], bool]) -> list[tuple[int, tuple[int, int]]]:
    """``(column, (first, end))`` of each run of rows without a close strictly between two closes of that
    column (``[first, end)``, row positions) whose length ``keep`` accepts."""
    found = []
    for column in range(closes.shape[1]):
        rows = np.flatnonzero(np.isfinite(closes.iloc[:, column].to_numpy(dtype=np.float64, na_value=np.nan)))
        missing = np.diff(rows) - 1  # rows without a close between consecutive closes
        found += [(column, (int(rows[i] + 1), int(rows[i + 1]))) for i in np.flatnonzero(missing)
                  if keep(int(missing[i]))]
    return found


@dataclass(frozen=True, slots=True)
class Gap:
    """A stretch of a symbol without bars that :func:`read_closes` left out: bars starting in ``[start, end)``
    (UTC; ``end`` is the start of the bar after it), ``bars`` of them."""

    symbol: str
    start: pd.Timestamp
    end: pd.Timestamp
    bars: int

    def note(self) -> str:
        return (f"{self.symbol} has no bars from {self.start:%Y-%m-%d %H:%M} to {self.end:%Y-%m-%d %H:%M} UTC "
                f"({self.bars:,} bars, more than a day: left out)")


def long_gaps(closes: pd.DataFrame) -> dict[str, list[Gap]]:
    """Per symbol of :func:`read_closes`' ``closes`` (indexed by bar start, UTC), the stretches without bars
    it left out (longer than :data:`MAX_CARRY_MS`: the only ones left NaN between two bars); symbols
    without one are absent."""
    found: dict[str, list[Gap]] = {}
    for column, (first, end) in _gaps(closes, lambda missing: True):
        symbol = str(closes.columns[column])
        found.setdefault(symbol, []).append(Gap(symbol, closes.index[first], closes.index[end], end - first))
    return found


def gap_notes(closes: pd.DataFrame) -> dict[str, str]:
    """Per symbol with stretches left out (:func:`long_gaps`), a sentence naming the longest and how many
    more there are."""
    notes = {}
    for symbol, gaps in long_gaps(closes).items():
        text = max(gaps, key=lambda gap: gap.bars).note()
        notes[symbol] = text if len(gaps) == 1 else f"{text} and {len(gaps) - 1:,} more such gap(s)"
    return notes


def with_notes(rows: pd.DataFrame, column: str, notes: Mapping[str, str],
               where: np.ndarray | None = None) -> pd.DataFrame:
    """``rows`` with each row's ``column`` followed by the notes of its legs ``y`` and ``x`` (``; ``-joined),
    only on the rows ``where`` (a boolean mask; None: all)."""
    if not notes:
        return rows
    chosen = np.ones(len(rows), dtype=bool) if where is None else np.asarray(where, dtype=bool)
    rows[column] = [
        "; ".join(text for text in (note, notes.get(str(y), ""), notes.get(str(x), "")) if text) if keep else note
        for note, y, x, keep in zip(rows[column], rows["y"], rows["x"], chosen, strict=True)]
    return rows


def engle_granger_kernel(closes: pd.DataFrame, block: Block, params: Mapping[str, Any]) -> pd.DataFrame:
    """The scan's kernel: :func:`analytics.scan_block` of the block's pairs (unranked rows), each pair's
    note naming its legs' stretches without bars that were left out (:func:`gap_notes`)."""
    return with_notes(scan_block(closes, list(block.left), list(block.right) or None, **params), "note",
                      gap_notes(closes))


def block_task(store_root: str, market: Market, timeframe: Timeframe, start_ms: int, end_ms: int, block: Block,
               kernel: Kernel, params: Mapping[str, Any]) -> pd.DataFrame:
    """One Dask task: read the block's closes from the store, run the kernel."""
    closes = read_closes(ResearchStore(store_root), market, timeframe, block.symbols, start_ms, end_ms)
    return kernel(closes, block, params)


def run_blocks(client: Client, spec: ScanSpec, kernel: Kernel, params: Mapping[str, Any], *,
               progress: Progress | None = None, retries: int = 2,
               submitted: Submitted | None = None) -> list[pd.DataFrame]:
    """Run ``kernel`` on every block of ``spec`` on ``client``'s cluster; the blocks' rows, in block order.

    ``progress(pairs_done, pairs_total)`` is called on the client once the blocks are submitted
    (0 done) and after each block. ``submitted(futures)`` is called once with the blocks' futures,
    before any progress: a caller in another thread may cancel them (``client.cancel``) to stop at
    once, while blocks run; the gather then raises Dask's CancelledError. An exception
    from a block (after ``retries`` retries) cancels the rest and is raised; KeyboardInterrupt
    (Ctrl-C) or an exception from ``progress`` cancels every future and raises
    :class:`ScanCancelled` (from KeyboardInterrupt) or the exception.
    """
    blocks = make_blocks(spec.symbols, spec.block_size)
    total = sum(block.pairs for block in blocks)
    futures = [client.submit(block_task, spec.store, spec.market, spec.timeframe, spec.start_ms, spec.end_ms, block,
                             kernel, dict(params), key=f"research-block-{uuid.uuid4().hex}", retries=retries,
                             pure=False)
               for block in blocks]
    position = {future.key: i for i, future in enumerate(futures)}
    results: list[pd.DataFrame | None] = [None] * len(blocks)
    done = 0
    try:
        if submitted is not None:
            submitted(futures)
        if progress is not None:
            progress(0, total)
        for future in as_completed(futures, loop=client.loop):
            i = position[future.key]
            results[i] = future.result()
            done += blocks[i].pairs
            if progress is not None:
                progress(done, total)
    except KeyboardInterrupt:
        cancel_futures(client, futures)
        raise ScanCancelled(f"scan cancelled after {done:,} of {total:,} pairs; nothing stored") from None
    except BaseException:
        cancel_futures(client, futures)
        raise
    return [r for r in results if r is not None]


def block_failure(exc: BaseException) -> str:
    """Why a block failed on the cluster, in plain words: a store's error as it is; workers that kept dying
    on it (Dask's KilledWorker, whose text points at worker logs) as what usually kills them; else the
    error's type and message."""
    if isinstance(exc, StorageError):
        return str(exc)
    if isinstance(exc, KilledWorker):
        tries = getattr(exc, "allowed_failures", None)
        tried = f" (tried on {tries + 1} workers)" if isinstance(tries, int) else ""
        return (f"every worker that ran it died{tried}. Most often a worker runs out of memory: a smaller block "
                "size, a shorter span or a longer timeframe needs less (README: memory per worker)")
    return f"{type(exc).__name__}: {exc}"


def cancel_futures(client: Client, futures: list[Any]) -> None:
    """Cancel ``futures`` at once, running ones too; quietly when the cluster is going away."""
    with contextlib.suppress(Exception):  # the cluster may be going away too; the caller's error matters
        client.cancel(futures, force=True)


def check_memory(client: Client, spec: ScanSpec, test_bars: int, maxlag: int | None) -> None:
    """ScanInputError when a block of ``spec`` surely cannot fit a worker's memory (Dask's ``memory_limit``;
    none set: no check): before anything is submitted, rather than every worker that runs it dying.

    ``test_bars``: the bars of each Engle–Granger test (the span for a scan, a walk's formation window),
    ``maxlag`` its ADF lags (None: Schwert's default for ``test_bars``). The bytes counted are a floor,
    the terms the module docstring names: the block's closes (``2·block_size`` symbols × the span's
    bars), its Gram array and one shifted copy of a series; a block's measured peak is about 3× that.
    """
    limits = [worker.get("memory_limit") for worker in client.scheduler_info(n_workers=-1).get("workers", {}).values()]
    sized = [int(limit) for limit in limits if isinstance(limit, int | float) and limit > 0]
    if not sized:
        return
    width = min(2 * spec.block_size, len(spec.symbols))
    bars = (spec.end_ms - spec.start_ms) // spec.timeframe.ms
    lags = maxlag if maxlag is not None else analytics._unitroot.default_maxlag(test_bars, 0)
    floor = 8 * (width * bars + (lags + 2) ** 2 * width**2 + (3 * lags + 2) * test_bars)
    if floor > min(sized):
        raise ScanInputError(
            f"memory: a block of {width} symbols × {bars:,} {spec.timeframe.name} bars needs at least "
            f"{_size(floor)} on a worker (its closes, the ADF Gram array and a shifted copy of a {test_bars:,}-bar "
            f"series at maxlag {lags}), more than the workers' {_size(min(sized))}: give a shorter span, a smaller "
            "block size, a longer timeframe or a smaller maxlag")


def _size(count: int) -> str:
    return f"{count / 1e9:.1f} GB" if count >= 1e9 else f"{count / 1e6:.1f} MB"


def scan(client: Client, spec: ScanSpec, *, progress: Progress | None = None,
         submitted: Submitted | None = None) -> ScanOutcome:
    """The Engle–Granger scan of every pair of ``spec.symbols`` on ``client``'s cluster, ranked over the
    family; ``progress`` and ``submitted`` as in :func:`run_blocks`. ScanInputError when a block cannot
    fit a worker (:func:`check_memory`)."""
    spec = check_spec(spec)
    check_memory(client, spec, (spec.end_ms - spec.start_ms) // spec.timeframe.ms, spec.maxlag)
    started = time.monotonic()
    rows = run_blocks(client, spec, engle_granger_kernel, spec.kernel_params(), progress=progress,
                      submitted=submitted)
    return ScanOutcome(rank_pairs(pd.concat(rows, ignore_index=True)), spec, time.monotonic() - started)


def scan_in_process(spec: ScanSpec) -> ScanOutcome:
    """The same scan in this process, the whole family as one block (for comparison and small universes).

    Bit-identical to :func:`scan` when this process runs BLAS on one thread (``OPENBLAS_NUM_THREADS=1``,
    as Dask's workers do): a product split over threads adds its entries in another order.
    """
    spec = check_spec(spec)
    started = time.monotonic()
    closes = read_closes(open_store(spec.store), spec.market, spec.timeframe, spec.symbols, spec.start_ms,
                         spec.end_ms)
    table = rank_pairs(engle_granger_kernel(closes, Block(tuple(spec.symbols)), spec.kernel_params()))
    return ScanOutcome(table, spec, time.monotonic() - started)


def save_scan(outcome: ScanOutcome, results_dir: str | os.PathLike[str]) -> Path:
    """Store a finished scan as ``<results_dir>/<id>/`` (``pairs.parquet`` and ``scan.json``, the
    parameters that produced it); whole or not at all (a temporary folder renamed into place).
    Returns the scan's folder."""
    def files(folder: Path) -> None:
        _table_for_parquet(outcome.table).to_parquet(folder / RESULTS_FILE, index=False)
        sidecar = {**outcome.spec.parameters(), "pairs": len(outcome.table), "tested": int(
            outcome.table["status"].isin((analytics.scan.OK, analytics.scan.COLLINEAR)).sum()),
            "significant_q05": outcome.significant(), "seconds": round(outcome.seconds, 3)}
        (folder / PARAMETERS_FILE).write_text(json.dumps(sidecar, indent=2) + "\n")

    return write_run(results_dir, "scan", files)


def load_scan(folder: str | os.PathLike[str]) -> tuple[pd.DataFrame, dict[str, Any]]:
    """A stored scan's table and parameters; StorageError naming what is missing."""
    path = Path(folder)
    try:
        table = pd.read_parquet(path / RESULTS_FILE)
        parameters = json.loads((path / PARAMETERS_FILE).read_text())
    except (OSError, ValueError) as exc:
        raise StorageError(f"cannot read the scan at {path}: {exc}") from exc
    table["eg_lag"] = table["eg_lag"].astype("Int64")
    return table, parameters


def export_csv(table: pd.DataFrame) -> bytes:
    """The table as CSV, text cells formula-neutralised (:func:`records.safe_csv.to_csv_bytes`), ranked from 1."""
    ranked = table.copy()
    ranked.index = pd.RangeIndex(1, len(ranked) + 1)
    return to_csv_bytes(ranked, index_label="rank")


def export_parquet(table: pd.DataFrame, path: str | os.PathLike[str]) -> None:
    _table_for_parquet(table).to_parquet(path, index=False)


def code_version() -> str:
    """A digest of the code that computes a scan's numbers (the scanner and this runner)."""
    digest = hashlib.sha256()
    for module in (analytics.scan, analytics._unitroot):
        digest.update(Path(module.__file__ or "").read_bytes())
    digest.update(Path(__file__).read_bytes())
    return digest.hexdigest()[:16]


def _table_for_parquet(table: pd.DataFrame) -> pd.DataFrame:
    out = table.copy()
    for column in ("y", "x", "status", "note"):
        out[column] = out[column].astype(str)
    return out


def _iso(ms: int) -> str:
    return pd.Timestamp(ms, unit="ms", tz="UTC").strftime("%Y-%m-%dT%H:%MZ")


def eta_seconds(done: int, total: int, elapsed: float) -> float:
    """Seconds left at the rate so far (inf before the first block is done)."""
    if done <= 0:
        return math.inf
    return max(0.0, elapsed * (total - done) / done)

