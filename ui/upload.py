"""Sidebar upload of OHLC CSV files into named datasets, and the dataset pickers."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import streamlit as st

from config import ConfigError, StorageSettings, normalize_symbol
from domain import TIMEFRAMES
from records import now_ms
from storage import has_datasets, open_datasets
from storage.csv_import import MAX_UPLOAD_BYTES, CsvImportError, parse_ohlc_csv
from storage.datasets import DatasetInfo, defaults_from_filename
from ui.plain import plain


def frame_hash(frame: pd.DataFrame) -> str:
    """SHA-256 of the parsed bars, so the same data zipped or not, CRLF or LF, is one dataset."""
    digest = hashlib.sha256(np.ascontiguousarray(frame.index.as_unit("ms").asi8).tobytes())
    digest.update(np.ascontiguousarray(frame.to_numpy(np.float64)).tobytes())
    return digest.hexdigest()


def render_upload(storage: StorageSettings) -> None:
    """Upload form: parse on upload (a bad file shows why and stores nothing), save on click."""
    with st.sidebar.expander("Upload OHLC CSV (optional)"):
        upload = st.file_uploader("Binance kline archive (.zip/.csv) or timestamp,open,high,low,close,volume",
                                  type=["csv", "zip"], key="upload_file")
        if upload is None:
            return
        data = upload.getvalue()
        try:
            frame = parse_ohlc_csv(data, upload.name, max_bytes=MAX_UPLOAD_BYTES)
        except CsvImportError as exc:
            st.error(f"{plain(upload.name)}: {plain(exc)}")
            return
        defaults = defaults_from_filename(upload.name)
        st.caption(f"{len(frame):,} bars, {frame.index[0]:%Y-%m-%d %H:%M} → {frame.index[-1]:%Y-%m-%d %H:%M} UTC")
        # Keyed by the upload, so a new file gets fresh suggestions instead of the previous file's.
        name = st.text_input("Dataset name", value=defaults.name, key=f"upload_name_{upload.file_id}")
        raw_symbol = st.text_input("Symbol", value=defaults.symbol or "", key=f"upload_symbol_{upload.file_id}")
        if not st.button("Save dataset", key="upload_save"):
            return
        try:
            symbol = normalize_symbol(raw_symbol)
            with open_datasets(storage) as store:
                result = store.add(frame, name=name.strip(), symbol=symbol, filename=upload.name,
                                   content_hash=frame_hash(frame), uploaded_ms=now_ms())
        except (ConfigError, ValueError) as exc:
            st.error(f"Not saved: {plain(exc)}")
            return
        if result.created:
            st.success(f"Saved {result.dataset.rows:,} bars as “{plain(result.dataset.name)}”.")
        else:
            st.info(f"Already stored as “{plain(result.dataset.name)}”; nothing added.")


def list_datasets(storage: StorageSettings) -> list[DatasetInfo]:
    if not has_datasets(storage):
        return []
    with open_datasets(storage) as store:
        return store.list()


def dataset_controls(datasets: list[DatasetInfo]) -> tuple[DatasetInfo, DatasetInfo] | None:
    """Pick the Y and X datasets; None (with a hint) until two are stored."""
    if len(datasets) < 2:
        st.info("Upload at least two OHLC datasets (sidebar → Upload OHLC CSV) to analyse them as a pair.")
        return None
    by_id = {d.id: d for d in datasets}
    label = {d.id: f"{d.name} ({d.symbol}, {d.rows:,} bars)" for d in datasets}
    ids = list(by_id)
    y_id = st.sidebar.selectbox("Y dataset", ids, index=min(1, len(ids) - 1), format_func=label.__getitem__,
                                key="dataset_y")
    x_id = st.sidebar.selectbox("X dataset", [i for i in ids if i != y_id], format_func=label.__getitem__,
                                key="dataset_x")
    return by_id[y_id], by_id[x_id]


def dataset_timeframes(y: DatasetInfo, x: DatasetInfo) -> tuple[str, ...]:
    """Timeframes no finer than either dataset's bar spacing."""
    coarsest = max(y.interval_ms or 0, x.interval_ms or 0)
    return tuple(tf.name for tf in TIMEFRAMES if tf.ms >= coarsest) or (TIMEFRAMES[-1].name,)


def load_dataset_frames(storage: StorageSettings, y: DatasetInfo, x: DatasetInfo) -> dict[str, pd.DataFrame]:
    """OHLC frames keyed by dataset name (names are unique; two files may share a symbol)."""
    with open_datasets(storage) as store:
        return {y.name: store.load(y.id), x.name: store.load(x.id)}
