"""Walk-forward over the research history on Dask's distributed scheduler (:mod:`research.scan`'s runner).

The symbols are cut into the scan's blocks (:func:`research.scan.make_blocks`); each block is one
task that reads only its own symbols' closes over the whole span ``[start, end)`` once
(:func:`research.scan.read_closes`) and runs :func:`walk_forward_kernel`, i.e.
:func:`research.walkforward.evaluate_windows`, on its pairs over every window. The client gathers
the rows, adjusts the q-values over each window's whole family (:func:`add_q_values`) and reduces
them per window (:func:`summarise`).

Exact: a pair's numbers depend only on its two legs' closes (the walk-forward's formation scan and
trading window), and every block reads a symbol's closes on the span's full grid, so the rows equal
:func:`research.walkforward.walk_forward` on the closes of every symbol at once, bit for bit (with one
BLAS thread, as Dask's workers have), whatever the block size or the cluster.

Funding: the research store holds no funding history, so a perpetual leg's PnL leaves funding out
and each such row's ``oos_note`` says so (:func:`research.walkforward.evaluate_window` with no
``funding``). The um store names its perpetuals by exchange symbol (``ETHUSDT``), so a um walk passes
``perpetuals=True``: without it every leg would pass for spot and show a funding of 0.
"""

from __future__ import annotations

import hashlib
import itertools
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from distributed import Client

import research.walkforward
from domain import Market
from research.scan import (
    Block,
    Progress,
    ScanInputError,
    ScanSpec,
    Submitted,
    check_memory,
    check_spec,
    code_version,
    long_gaps,
    open_store,
    read_closes,
    run_blocks,
    with_notes,
)
from research.walkforward import (
    WalkForwardSettings,
    Window,
    add_q_values,
    evaluate_windows,
    summarise,
    walk_forward,
    walk_forward_windows,
)


@dataclass(frozen=True, slots=True)
class WalkOutcome:
    """A finished distributed walk-forward: rows (one per pair and window, with ``q_value``), the
    per-window summary, the windows, what produced them, and the seconds it took (wall clock)."""

    rows: pd.DataFrame
    summary: pd.DataFrame
    windows: tuple[Window, ...]
    spec: ScanSpec
    settings: WalkForwardSettings
    seconds: float

    def parameters(self) -> dict[str, Any]:
        """Everything that produced the run, JSON-ready (``walk.json``; ``"kind"`` is added on saving)."""
        scan_parameters = self.spec.parameters()
        for unused in ("window", "trend", "maxlag", "min_bars", "code_version"):  # the scan's, not the walk's
            scan_parameters.pop(unused, None)
        settings = {name: value for name, value in asdict(self.settings).items() if name != "scan_min_bars"}
        return {
            **scan_parameters,
            **settings,
            "min_bars": self.settings.scan_min_bars,
            "formation_duration": _duration(self.settings.formation, self.spec.timeframe.ms),
            "trading_duration": _duration(self.settings.trading, self.spec.timeframe.ms),
            "step_duration": _duration(self.settings.step, self.spec.timeframe.ms),
            "windows": [{"window": w.number, "formation_start": _iso(w.formation_start),
                         "trading_start": _iso(w.trading_start), "trading_end": _iso(w.trading_end)}
                        for w in self.windows],
            "rows": len(self.rows),
            "found": int(self.summary["found"].sum()),
            "seconds": round(self.seconds, 3),
            "code_version": walk_code_version(),
        }


def windows_of(spec: ScanSpec, settings: WalkForwardSettings) -> list[Window]:
    """The complete windows of the spec's span; ScanInputError naming the span when it holds none."""
    try:
        return walk_forward_windows(pd.Timestamp(spec.start_ms, unit="ms", tz="UTC"),
                                    pd.Timestamp(spec.end_ms, unit="ms", tz="UTC"), spec.timeframe, settings)
    except ValueError as exc:
        raise ScanInputError(f"span: {exc}") from None


def walk_forward_kernel(closes: pd.DataFrame, block: Block, params: Mapping[str, Any]) -> pd.DataFrame:
    """The block kernel: the block's pairs over every window (``params``: ``settings``, ``windows``)."""
    pairs = (itertools.product(block.left, block.right) if block.right
             else itertools.combinations(block.left, 2))
    rows = evaluate_windows(closes, list(pairs), params["windows"], params["settings"],
                            perpetuals=params.get("perpetuals", False))
    return with_gap_notes(rows, closes, params["windows"])


def with_gap_notes(rows: pd.DataFrame, closes: pd.DataFrame, windows: Sequence[Window]) -> pd.DataFrame:
    """``rows`` naming, in each window, the stretches without bars of its legs that :func:`read_closes` left
    out (:func:`research.scan.long_gaps`): in ``note`` when one falls in the formation span, in ``oos_note``
    when in the trading span. A pair's notes depend only on its legs' closes, as its numbers do."""
    gaps = long_gaps(closes)
    if not gaps:
        return rows
    numbers = rows["window"].to_numpy()
    for window in windows:
        here = numbers == window.number
        for column, low, high in (("note", window.formation_start, window.trading_start),
                                  ("oos_note", window.trading_start, window.trading_end)):
            notes = {symbol: "; ".join(gap.note() for gap in found if gap.start < high and gap.end > low)
                     for symbol, found in gaps.items()}
            rows = with_notes(rows, column, {symbol: text for symbol, text in notes.items() if text}, here)
    return rows


def walk_distributed(client: Client, spec: ScanSpec, settings: WalkForwardSettings, *,
                     progress: Progress | None = None, submitted: Submitted | None = None) -> WalkOutcome:
    """Every pair of ``spec.symbols`` over every complete window of the span, on ``client``'s cluster.

    ``progress(pairs_done, pairs_total)`` and ``submitted`` as in :func:`research.scan.run_blocks` (a
    pair is done when its block has run every window). Ctrl-C raises :class:`research.scan.ScanCancelled`
    after cancelling every task; a failed block's exception is raised.
    """
    spec = check_spec(spec)
    windows = windows_of(spec, settings)
    check_memory(client, spec, settings.formation, settings.maxlag)
    started = time.monotonic()
    # A um store names its perpetuals by exchange symbol: say so, or their PnL would show no funding as 0.
    params = {"settings": settings, "windows": windows, "perpetuals": spec.market is Market.USDM}
    parts = run_blocks(client, spec, walk_forward_kernel, params,
                       progress=progress, submitted=submitted)
    rows = add_q_values(_in_order(pd.concat(parts, ignore_index=True)))
    return WalkOutcome(rows, summarise(rows, windows, settings), tuple(windows), spec, settings,
                       time.monotonic() - started)


def walk_in_process(spec: ScanSpec, settings: WalkForwardSettings) -> WalkOutcome:
    """The same run in this process: :func:`research.walkforward.walk_forward` on every symbol's closes
    (for comparison and small universes)."""
    spec = check_spec(spec)
    windows_of(spec, settings)
    started = time.monotonic()
    symbols = sorted(spec.symbols)
    closes = read_closes(open_store(spec.store), spec.market, spec.timeframe, symbols, spec.start_ms, spec.end_ms)
    result = walk_forward(closes, spec.timeframe, settings, perpetuals=spec.market is Market.USDM)
    rows = with_gap_notes(result.rows, closes, result.windows)
    return WalkOutcome(rows, result.summary, result.windows, spec, settings, time.monotonic() - started)


def _in_order(rows: pd.DataFrame) -> pd.DataFrame:
    """Rows by window, then pair (y, x): the order of one process over sorted symbols, whatever the blocks."""
    return rows.sort_values(["window", "y", "x"], kind="mergesort").reset_index(drop=True)


def walk_code_version() -> str:
    """A digest of the code behind a walk-forward's numbers: the scan's, the walk-forward's and this runner."""
    digest = hashlib.sha256(code_version().encode())
    for module in (research.walkforward,):
        digest.update(Path(module.__file__ or "").read_bytes())
    digest.update(Path(__file__).read_bytes())
    return digest.hexdigest()[:16]


def _duration(bars: int, bar_ms: int) -> str:
    return str(pd.Timedelta(milliseconds=bars * bar_ms))


def _iso(moment: pd.Timestamp) -> str:
    return pd.Timestamp(moment).strftime("%Y-%m-%dT%H:%MZ")
