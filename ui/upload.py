"""Sidebar upload of OHLC CSV files into named datasets (stored through :mod:`service`), the dataset pickers
and the dataset page's data: two uploaded datasets analysed as a pair."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from config import ConfigError, Settings, StorageSettings
from domain import TIMEFRAMES
from pairs.bars import dataset_pair_bars
from pairs.compute import PairParams, compute_pair
from pairs.shared import PairView
from service import load_datasets, save_dataset, stored_datasets
from storage.csv_import import MAX_UPLOAD_BYTES, CsvImportError, parse_ohlc_csv
from storage.datasets import DatasetInfo, defaults_from_filename
from ui.controls import UPLOADED, Controls, analysis_controls
from ui.labels import timeframe_label
from ui.plain import plain
from ui.tabs import PageData


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
            result = save_dataset(storage, frame, name=name, symbol=raw_symbol, filename=upload.name)
        except (ConfigError, ValueError) as exc:
            st.error(f"Not saved: {plain(exc)}")
            return
        if result.created:
            st.success(f"Saved {result.dataset.rows:,} bars as “{plain(result.dataset.name)}”.")
        else:
            st.info(f"Already stored as “{plain(result.dataset.name)}”; nothing added.")


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


def dataset_page_data(base: Settings) -> tuple[Controls, PageData]:
    """The dataset page's controls and data: two uploaded OHLC datasets analysed as a pair (no live
    feed). Stops the script run (with a hint) until two overlapping datasets are picked."""
    picked = dataset_controls(stored_datasets(base.storage))
    if picked is None:
        st.stop()
    y, x = picked
    controls = analysis_controls(UPLOADED, None, (y.name, x.name), pair=(y.name, x.name),
                                 timeframes=dataset_timeframes(y, x))
    if max(y.first_ms, x.first_ms) > min(y.last_ms, x.last_ms):
        span = "{0}: {1:%Y-%m-%d %H:%M} → {2:%Y-%m-%d %H:%M} UTC"
        st.error("These datasets do not overlap in time, so they cannot be paired. " + "; ".join(
            span.format(plain(d.name), pd.Timestamp(d.first_ms, unit="ms"), pd.Timestamp(d.last_ms, unit="ms"))
            for d in (y, x)))
        st.stop()
    frames = load_datasets(base.storage, y, x)  # keyed by name: two datasets may share a symbol
    st.title(f"{plain(y.name)} / {plain(x.name)} · {timeframe_label(controls.timeframe)} bars")
    st.info("Uploaded historical datasets: not live market data.", icon="📁")

    def view(symbols: tuple[str, ...], interval_ms: int, params: PairParams, controls: Controls) -> PairView:
        bars = dataset_pair_bars({s: frames[s] for s in symbols}, interval_ms)  # shown whole
        pair = compute_pair(bars.closes(min_trades=controls.min_trades, min_volume=controls.min_volume), params)
        return PairView(bars, pair, bars.market_now_ms)

    return controls, PageData(view, lambda bars, _open_start_ms: bars, None)
