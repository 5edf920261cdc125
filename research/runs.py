"""Stored research runs, as the dashboard lists and opens them: scans and walk-forward studies.

A run is one folder directly under the results folder (``cli.research --results``, the setting
``QUANT_RESULTS_DIR``): ``scan-<UTC time>-<id>/`` (:func:`research.scan.save_scan`: ``pairs.parquet``
and ``scan.json``) or ``walk-<UTC time>-<id>/`` (``rows.parquet``, ``summary.parquet`` and
``walk.json``). Only names of exactly that form are opened, only as direct children of the folder
and never through a link, so nothing a browser sends becomes another path. A run that cannot be
read (half-written, damaged, a file replaced by a link or a FIFO, parameters that make no sense) is
listed with the reason instead of failing: :class:`RunInfo` ``problem``.
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow
import pyarrow.parquet as pq

from domain import Market, Timeframe
from research.results import WALK_FILES, load_walk
from research.scan import PARAMETERS_FILE, RESULTS_FILE, load_scan
from research.walkforward import SUMMARY_COLUMNS
from storage.errors import StorageError

SCAN, WALK = "scan", "walk"
WALK_PARAMETERS, WALK_ROWS, WALK_SUMMARY = WALK_FILES  # the layout research.results writes
FILES = {SCAN: (PARAMETERS_FILE, RESULTS_FILE), WALK: (WALK_PARAMETERS, WALK_ROWS, WALK_SUMMARY)}
RUN_NAME_RE = re.compile(r"^(?P<kind>scan|walk)-(?P<stamp>\d{8}T\d{6}Z)-(?P<id>[0-9a-f]{8})$")
# save_scan's temporary folder: a save in progress, or one a crash left behind.
_TEMPORARY_RE = re.compile(r"^\.(?P<name>(scan|walk)-\d{8}T\d{6}Z-[0-9a-f]{8})\.tmp$")
MAX_RUNS = 200  # newest runs listed; the older ones are counted, not read
MAX_PARAMETERS_BYTES = 1 << 20  # a sidecar is a few kB (400 symbols: ~8 kB)
MAX_TABLE_BYTES = 512 << 20  # a 400-symbol scan's ranking is ~10 MB
_SYMBOL_RE = re.compile(r"^[A-Z0-9]{2,20}$")
_READ_ERRORS = (OSError, ValueError, KeyError, TypeError, pyarrow.ArrowException, StorageError)


class RunError(ValueError):
    """A stored run that cannot be opened; the message names the run and why."""


@dataclass(frozen=True, slots=True)
class RunInfo:
    """One entry of the results folder, read from its parameters only (cheap to list).

    ``stamp``: when it was stored (UTC, from its name); ``start``/``end``: the span it covers (UTC,
    end excluded); ``significant``: pairs with q < 0.05 (a walk-forward: summed over its windows);
    ``problem``: why it cannot be opened (None when it can), and then the other fields may be None.
    """

    name: str
    kind: str
    stamp: pd.Timestamp
    market: Market | None = None
    timeframe: Timeframe | None = None
    start: pd.Timestamp | None = None
    end: pd.Timestamp | None = None
    symbols: tuple[str, ...] = ()
    significant: int | None = None
    parameters: Mapping[str, Any] = field(default_factory=dict)
    problem: str | None = None


@dataclass(frozen=True, slots=True)
class StoredRun:
    """An opened run: a scan's ranking (``table``, the scanner's columns, ranked by q) or a walk-forward's
    rows (one per pair and window, with ``q_value``) and its per-window ``summary`` (None for a scan)."""

    info: RunInfo
    table: pd.DataFrame
    summary: pd.DataFrame | None = None


def list_runs(folder: str | os.PathLike[str]) -> tuple[list[RunInfo], int]:
    """The runs of ``folder``, newest first (at most :data:`MAX_RUNS`), and how many older ones were left out.

    A missing folder has no runs. Entries whose names are not runs are not listed; a temporary
    folder of a save is listed as unreadable (being written, or left by an interrupted save).
    """
    root = Path(folder)
    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except FileNotFoundError:
        return [], 0
    except OSError as exc:
        raise RunError(f"cannot list the results folder {str(root)!r}: {exc.strerror or exc}") from None
    found: list[tuple[str, str, os.DirEntry[str], bool]] = []
    for entry in entries:
        match = RUN_NAME_RE.fullmatch(entry.name)
        temporary = _TEMPORARY_RE.fullmatch(entry.name)
        stamp = match or temporary
        if stamp is None or _stamp_of(entry.name.lstrip(".").split("-")[1]) is None:
            continue  # not a run's name (no save writes a time that does not exist)
        if match is not None:
            found.append((match["stamp"], entry.name, entry, False))
        elif temporary is not None:  # its name is a run's name: its stamp sorts it among them
            name = temporary["name"]
            found.append((name.split("-")[1], name, entry, True))
    found.sort(key=lambda item: (item[0], item[1]), reverse=True)
    runs = []
    for _stamp, name, entry, half_written in found[:MAX_RUNS]:
        if half_written:
            runs.append(_unreadable(name, "being written, or left half-written by an interrupted save (a temporary "
                                          f"folder {entry.name!r})"))
        else:
            runs.append(run_info(root, name))
    return runs, max(0, len(found) - MAX_RUNS)


def run_info(folder: str | os.PathLike[str], name: str) -> RunInfo:
    """The run ``name`` of ``folder`` from its parameters file; ``problem`` says why it cannot be opened.

    :class:`RunError` when ``name`` is not a run's name at all (nothing else is looked up)."""
    kind = _kind(name)
    try:
        path = _run_folder(Path(folder), name)
        for file_name in FILES[kind]:
            _regular_file(path, file_name, MAX_PARAMETERS_BYTES if file_name.endswith(".json") else MAX_TABLE_BYTES)
        parameters = _parameters(path / FILES[kind][0])
        return _info(name, kind, parameters, path)
    except RunError as exc:
        return _unreadable(name, str(exc))


def open_run(folder: str | os.PathLike[str], name: str) -> StoredRun:
    """The run ``name`` of ``folder``, read whole; :class:`RunError` naming it and what is wrong."""
    info = run_info(folder, name)
    if info.problem is not None:
        raise RunError(f"{name}: {info.problem}")
    path = Path(folder) / name
    try:
        if info.kind == SCAN:
            table, _ = load_scan(path)
            _require(table, ("y", "x", "q_value", "eg_pvalue", "half_life", "status"), RESULTS_FILE)
            table = table.sort_values("q_value", kind="stable", na_position="last").reset_index(drop=True)
            return StoredRun(info, table)
        rows, summary, _ = load_walk_files(path)
    except RunError as exc:
        raise RunError(f"{name}: {exc}") from None
    except _READ_ERRORS as exc:
        raise RunError(f"{name}: {exc}") from None
    return StoredRun(info, rows, summary)


def load_walk_files(folder: str | os.PathLike[str]) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """A stored walk-forward study's rows, summary and parameters (:func:`research.results.load_walk`),
    with every column the tab reads checked; :class:`RunError` naming what is missing or wrong."""
    path = Path(folder)
    try:
        rows, summary, parameters = load_walk(path)
    except _READ_ERRORS as exc:
        raise RunError(f"cannot read the walk-forward study at {path}: {exc}") from None
    _require(rows, ("window", "y", "x", "q_value", "eg_pvalue", "stays", "oos_return"), WALK_ROWS)
    _require(summary, SUMMARY_COLUMNS, WALK_SUMMARY)
    for column in ("formation_start", "trading_start", "trading_end"):
        summary[column] = pd.to_datetime(summary[column], utc=True)
    return rows, summary, parameters


# Columns that must hold numbers wherever they appear (a damaged or foreign file could hold text).
_NUMERIC = ("window", "q_value", "eg_pvalue", "eg_stat", "beta", "alpha", "half_life", "corr", "zscore", "n_bars",
            "oos_return", "oos_pnl", "oos_adf_pvalue", "oos_half_life", "entries", "exits", "pairs", "found",
            "found_oos", "stayed", "stay_share", "stay_low", "stay_high", "base_stay_share", "mean_return_found",
            "mean_return_all")


def _require(table: pd.DataFrame, columns: tuple[str, ...], file_name: str) -> None:
    missing = [column for column in columns if column not in table.columns]
    if missing:
        raise RunError(f"{file_name} lacks the column(s) {', '.join(missing)}")
    wrong = [c for c in _NUMERIC if c in table.columns and not pd.api.types.is_numeric_dtype(table[c])]
    if wrong:
        raise RunError(f"{file_name}: the column(s) {', '.join(wrong)} hold no numbers")


def _kind(name: str) -> str:
    """``scan`` or ``walk`` for a run's name; RunError for anything else (a path, a traversal, another
    name, a time that does not exist such as month 13)."""
    match = RUN_NAME_RE.fullmatch(name) if isinstance(name, str) else None
    if match is None or _stamp_of(match["stamp"]) is None:
        raise RunError(f"{name!r} is not the name of a stored run (scan-<UTC time>-<id> or walk-<UTC time>-<id>)")
    return match["kind"]


def _stamp_of(text: str) -> pd.Timestamp | None:
    """The UTC time of a run name's ``YYYYMMDDTHHMMSSZ``; None when no such time exists."""
    try:
        return pd.Timestamp(datetime.strptime(text, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC))
    except ValueError:
        return None


def _run_folder(root: Path, name: str) -> Path:
    """``root/name`` (``name`` checked by :func:`_kind`) if it is a real folder there (not a link)."""
    path = root / name
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        raise RunError("no such run in the results folder") from None
    except OSError as exc:
        raise RunError(f"cannot read it: {exc.strerror or exc}") from None
    if stat.S_ISLNK(mode):
        raise RunError("a link, not a run folder: runs are opened only inside the results folder")
    if not stat.S_ISDIR(mode):
        raise RunError("not a folder")
    return path


def _regular_file(folder: Path, file_name: str, limit: int) -> None:
    try:
        info = os.lstat(folder / file_name)
    except FileNotFoundError:
        raise RunError(f"{file_name} is missing (half-written or damaged)") from None
    except OSError as exc:
        raise RunError(f"cannot read {file_name}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(info.st_mode):
        raise RunError(f"{file_name} is not a regular file (a link, a folder or a device)")
    if info.st_size > limit:
        raise RunError(f"{file_name} is {info.st_size:,} bytes, more than the {limit:,} a stored run may hold")


def _parameters(path: Path) -> dict[str, Any]:
    try:
        parameters = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RunError(f"{path.name} is not readable JSON ({exc})") from None
    if not isinstance(parameters, dict):
        raise RunError(f"{path.name} holds {type(parameters).__name__}, not the run's parameters")
    return parameters


def _info(name: str, kind: str, parameters: dict[str, Any], path: Path) -> RunInfo:
    """The listing fields from ``parameters``, each checked (they name legs sent to the live page)."""
    file_name = FILES[kind][0]
    try:
        market = Market(parameters.get("market"))
    except ValueError:
        raise RunError(f"{file_name}: market {parameters.get('market')!r} is not spot or um") from None
    try:
        timeframe = Timeframe.of(str(parameters.get("timeframe")))
    except (KeyError, ValueError):
        raise RunError(f"{file_name}: timeframe {parameters.get('timeframe')!r} is not a bar length such as 1m") \
            from None
    symbols = parameters.get("symbols")
    if not isinstance(symbols, list) or not all(isinstance(s, str) and _SYMBOL_RE.fullmatch(s) for s in symbols):
        raise RunError(f"{file_name}: symbols must be a list of exchange symbols such as ETHUSDT")
    start, end = _bound(parameters, "start", file_name), _bound(parameters, "end", file_name)
    if start is not None and end is not None and end <= start:
        raise RunError(f"{file_name}: the span {start:%Y-%m-%d %H:%M} → {end:%Y-%m-%d %H:%M} is empty or reversed")
    if parameters.get("kind", kind) != kind:
        raise RunError(f"{file_name} says it is a {parameters.get('kind')!r} run, not a {kind}")
    significant = parameters.get("significant_q05", parameters.get("found") if kind == WALK else None)
    if kind == WALK and significant is None:
        # A walk-forward's pairs found at q < 0.05, summed over its windows (one small column).
        try:
            significant = int(pq.read_table(path / WALK_SUMMARY, columns=["found"]).column("found").to_numpy().sum())
        except _READ_ERRORS as exc:
            raise RunError(f"{WALK_SUMMARY} is not readable ({exc})") from None
    if isinstance(significant, bool) or not isinstance(significant, int | None) or (significant or 0) < 0:
        raise RunError(f"{file_name}: significant_q05 {significant!r} is not a count")
    return RunInfo(name, kind, _stamp(name), market, timeframe, start, end, tuple(symbols), significant,
                   parameters)


def _bound(parameters: Mapping[str, Any], which: str, file_name: str) -> pd.Timestamp | None:
    """The span's ``which`` bound (UTC) from ``<which>_ms``, else ``<which>_utc``; None when neither is given."""
    ms, text = parameters.get(f"{which}_ms"), parameters.get(f"{which}_utc")
    try:
        if ms is not None:
            if isinstance(ms, bool) or not isinstance(ms, int):
                raise TypeError(ms)
            return pd.Timestamp(ms, unit="ms", tz="UTC")
        if isinstance(text, str):
            moment = pd.Timestamp(text)
            # pandas reads "", "NaT" and "nat" as NaT, which no label can format: not a time either.
            if moment is pd.NaT:
                raise ValueError(text)
            return moment.tz_convert("UTC") if moment.tzinfo else moment.tz_localize("UTC")
    except (TypeError, ValueError, OverflowError):
        raise RunError(f"{file_name}: {which}_ms {ms!r} / {which}_utc {text!r} is not a time") from None
    return None


def _stamp(name: str) -> pd.Timestamp:
    """When the run ``name`` (checked by :func:`_kind`) was stored."""
    stamp = _stamp_of(name.split("-")[1])
    assert stamp is not None  # _kind refused names without a real time
    return stamp


def _unreadable(name: str, problem: str) -> RunInfo:
    return RunInfo(name, _kind(name), _stamp(name), problem=problem)
