"""Uploaded OHLC datasets, backend-neutral: the stored records and the checks every backend applies.

A dataset is one parsed upload (layout of :func:`storage.csv_import.parse_ohlc_csv`) stored under
a unique name with its symbol and a content hash that spots re-uploads. The stores themselves are
:class:`storage.sqlite.datasets.SqliteDatasetStore` and its PostgreSQL sibling.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePosixPath, PureWindowsPath

import numpy as np
import pandas as pd

from config import normalize_symbol
from storage.csv_import import OHLC_COLUMNS

MAX_NAME_CHARS = 200
_HASH_RE = re.compile(r"^[0-9a-f]{64}$")
# data.binance.vision kline archives: <SYMBOL>-<interval>-<YYYY-MM[-DD]>.zip (monthly or daily files).
_BINANCE_KLINE_NAME = re.compile(r"^([A-Za-z0-9]{2,20})-\d+(?:s|m|h|d|w|mo)-\d{4}-\d{2}(?:-\d{2})?$")


@dataclass(frozen=True, slots=True)
class DatasetInfo:
    """One stored upload. Times are UTC epoch ms; ``interval_ms`` is the usual bar spacing (None: one row)."""

    id: int
    name: str
    symbol: str
    filename: str
    content_hash: str
    uploaded_ms: int
    rows: int
    first_ms: int
    last_ms: int
    interval_ms: int | None


@dataclass(frozen=True, slots=True)
class AddResult:
    """Outcome of :meth:`DatasetStore.add`: the stored dataset, and False if that content was already there."""

    dataset: DatasetInfo
    created: bool


@dataclass(frozen=True, slots=True)
class UploadDefaults:
    """Suggested dataset name and symbol for an uploaded file; ``symbol`` is None when the name does not say."""

    name: str
    symbol: str | None


def defaults_from_filename(filename: str) -> UploadDefaults:
    """Default name and symbol for an upload, e.g. ``ETHUSDT-1m-2022-08-14.zip`` → ``ETHUSDT-1m-2022-08-14``, ETHUSDT.

    The symbol is only taken from the data.binance.vision kline naming scheme; for any other
    name it is None, so the UI asks instead of guessing from an arbitrary word.
    """
    # Browsers send a bare name, but old ones sent the client's full path (either separator).
    base = PureWindowsPath(PurePosixPath(filename).name).name.strip()
    stem = re.sub(r"(\.csv)?(\.zip)?$", "", base, flags=re.IGNORECASE).strip() or "upload"
    match = _BINANCE_KLINE_NAME.fullmatch(stem)
    # The pattern admits exactly what config.normalize_symbol accepts once upper-cased.
    return UploadDefaults(name=stem[:MAX_NAME_CHARS], symbol=match.group(1).upper() if match else None)


def most_common_interval_ms(ts_ms: np.ndarray) -> int | None:
    """Most frequent gap between consecutive sorted times in ms (ties: the smallest); None for < 2 times."""
    if len(ts_ms) < 2:
        return None
    gaps, counts = np.unique(np.diff(ts_ms), return_counts=True)
    # np.unique sorts the gaps, so argmax picks the smallest of equally frequent ones.
    return int(gaps[np.argmax(counts)])


@dataclass(frozen=True, slots=True)
class ValidUpload:
    """A dataset ready to store: cleaned name, normalised symbol, epoch-ms times (n,), OHLCV values (n, 5)."""

    name: str
    symbol: str
    ts_ms: np.ndarray
    values: np.ndarray


def validate_upload(df: pd.DataFrame, *, name: str, symbol: str, content_hash: str) -> ValidUpload:
    """Check one upload before any backend stores it.

    Raises
    ------
    config.ConfigError
        ``symbol`` is not 2-20 letters/digits (it is upper-cased otherwise).
    ValueError
        ``name`` is empty, too long or has control characters; ``content_hash`` is not 64
        lower-case hex digits; ``df`` is not the expected layout (UTC times strictly increasing in
        whole ms, finite float values).
    """
    symbol = normalize_symbol(symbol)
    name = name.strip()
    if not name or len(name) > MAX_NAME_CHARS or not name.isprintable():
        raise ValueError(f"dataset name {name!r} must be 1-{MAX_NAME_CHARS} printable characters")
    if not _HASH_RE.fullmatch(content_hash):
        raise ValueError(f"content_hash {content_hash!r} is not a SHA-256 hex digest")
    ts_ms, values = _frame_arrays(df)
    return ValidUpload(name, symbol, ts_ms, values)


def _frame_arrays(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Epoch-ms times (n,) and OHLCV values (n, 5) of a frame, after checking its layout."""
    index = df.index
    if not isinstance(index, pd.DatetimeIndex) or str(index.tz) != "UTC":
        raise ValueError("dataset frame must have a UTC DatetimeIndex")
    if tuple(df.columns) != OHLC_COLUMNS:
        raise ValueError(f"dataset frame columns must be {list(OHLC_COLUMNS)}, got {list(df.columns)}")
    if len(df) == 0:
        raise ValueError("dataset frame has no rows")
    if not index.is_monotonic_increasing or not index.is_unique:
        raise ValueError("dataset frame times must be strictly increasing")
    # as_unit truncates silently, so compare back to catch sub-millisecond times.
    in_ms = index.as_unit("ms")
    if not in_ms.equals(index):
        raise ValueError("dataset frame times must be whole milliseconds")
    ts_ms = in_ms.asi8
    values = df.to_numpy(dtype=np.float64)
    if not np.isfinite(values).all():
        raise ValueError("dataset frame values must be finite")
    return ts_ms, values
