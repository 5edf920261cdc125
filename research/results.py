"""Stored walk-forward runs: ``walk-<UTC time>-<id>/`` folders under a results folder.

A run is stored whole or not at all (written into a hidden temporary folder, then renamed), with
exactly three files, which the Scanner tab reads:

- ``walk.json``: the parameters that produced it (``"kind": "walk"``, the store, market, timeframe,
  symbols, span, the walk-forward settings, the windows, a digest of the code) and its counts;
- ``rows.parquet``: one row per pair and window (:data:`research.walkforward.WALK_COLUMNS` plus
  ``q_value``);
- ``summary.parquet``: :func:`research.walkforward.summarise`'s table, one row per window.

No Dask here: the page imports this module.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from storage.errors import StorageError

WALK_PARAMETERS_FILE = "walk.json"
WALK_ROWS_FILE = "rows.parquet"
WALK_SUMMARY_FILE = "summary.parquet"
WALK_FILES = (WALK_PARAMETERS_FILE, WALK_ROWS_FILE, WALK_SUMMARY_FILE)
# Columns stored as text: object columns mixing str and NaN would not round-trip through Parquet.
_TEXT_COLUMNS = ("y", "x", "status", "note", "oos_status", "oos_note")


def save_walk(rows: pd.DataFrame, summary: pd.DataFrame, parameters: dict[str, Any],
              results_dir: str | os.PathLike[str]) -> Path:
    """Store a finished walk-forward run as ``<results_dir>/walk-<UTC time>-<id>/`` and return that folder.

    ``parameters`` must be JSON-ready; ``"kind": "walk"`` is added. Whole or not at all: nothing is
    left behind when a write fails.
    """
    def files(folder: Path) -> None:
        _rows_for_parquet(rows).to_parquet(folder / WALK_ROWS_FILE, index=False)
        summary.to_parquet(folder / WALK_SUMMARY_FILE, index=False)
        sidecar = {**parameters, "kind": "walk"}
        (folder / WALK_PARAMETERS_FILE).write_text(json.dumps(sidecar, indent=2) + "\n")

    return write_run(results_dir, "walk", files)


def write_run(results_dir: str | os.PathLike[str], kind: str, write: Callable[[Path], None]) -> Path:
    """Store a run as ``<results_dir>/<kind>-<UTC time>-<id>/``, whole or not at all: ``write`` fills a
    hidden temporary folder, renamed into place once it is complete (a reader never sees half a run;
    a failed write leaves nothing). Returns the run's folder."""
    root = Path(results_dir)
    root.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    name = f"{kind}-{stamp}-{uuid.uuid4().hex[:8]}"
    temporary = root / f".{name}.tmp"
    temporary.mkdir()
    try:
        write(temporary)
        final = root / name
        temporary.rename(final)
    except BaseException:
        for child in temporary.glob("*"):
            child.unlink(missing_ok=True)
        temporary.rmdir()
        raise
    return final


def load_walk(folder: str | os.PathLike[str]) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """A stored walk-forward run's rows, summary and parameters; StorageError naming what is wrong
    (a missing or unreadable file, or a folder that holds another kind of result)."""
    path = Path(folder)
    try:
        parameters = json.loads((path / WALK_PARAMETERS_FILE).read_text())
        rows = pd.read_parquet(path / WALK_ROWS_FILE)
        summary = pd.read_parquet(path / WALK_SUMMARY_FILE)
    except (OSError, ValueError) as exc:
        raise StorageError(f"cannot read the walk-forward run at {path}: {exc}") from exc
    if not isinstance(parameters, dict) or parameters.get("kind") != "walk":
        raise StorageError(f"{path / WALK_PARAMETERS_FILE} is not a walk-forward run's parameters (no \"kind\": "
                           "\"walk\")")
    # Parquet keeps the nullable integer and boolean columns' types; "stays" is NA where untested.
    rows["stays"] = rows["stays"].astype("boolean")
    return rows, summary, parameters


def _rows_for_parquet(rows: pd.DataFrame) -> pd.DataFrame:
    out = rows.copy()
    for column in _TEXT_COLUMNS:
        if column in out.columns:
            out[column] = out[column].astype(str)
    out["stays"] = out["stays"].astype("boolean")
    for column in ("entries", "exits", "n_formation", "n_trading", "window"):
        if column in out.columns:
            out[column] = out[column].astype("int64")
    return out
