"""SqliteDatasetStore: round trip of a real archive, de-duplication, atomic adds, cascade, hostile input, reopen."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from config import ConfigError
from storage.csv_import import content_hash, ohlc_frame, parse_ohlc_csv
from storage.datasets import AddResult, DatasetInfo, UploadDefaults, defaults_from_filename, most_common_interval_ms
from storage.errors import RowRejected
from storage.sqlite.datasets import SCHEMA_VERSION, SqliteDatasetStore
from tests.shared_data import BTC_KLINES_ZIP, ETH_KLINES_ZIP, require

ETH_FIRST_MS = 1_660_435_200_000  # 2022-08-14T00:00:00Z
UPLOADED_MS = 1_764_000_000_000


def upload(path: Path) -> tuple[pd.DataFrame, str]:
    data = require(path).read_bytes()
    return parse_ohlc_csv(data, path.name), content_hash(data)


def small_frame(closes: list[float], first_ms: int = ETH_FIRST_MS, step_ms: int = 60_000) -> pd.DataFrame:
    values = np.array([[c, c + 1, c - 1, c, 2.0] for c in closes])
    return ohlc_frame(first_ms + step_ms * np.arange(len(closes)), values)


def add_small(store: SqliteDatasetStore, name: str, closes: list[float], **overrides: object) -> AddResult:
    fields: dict[str, object] = {"name": name, "symbol": "BTCUSDT", "filename": f"{name}.csv",
                                 "content_hash": content_hash(name.encode() + repr(closes).encode()),
                                 "uploaded_ms": UPLOADED_MS} | overrides
    return store.add(small_frame(closes), **fields)  # type: ignore[arg-type]  # some tests pass bad fields


def ohlc_rows(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT COUNT(*) FROM ohlc").fetchone()[0]


def test_real_archive_round_trip(tmp_path):
    frame, digest = upload(ETH_KLINES_ZIP)
    with SqliteDatasetStore(tmp_path / "uploads.sqlite3") as store:
        result = store.add(frame, name="ETHUSDT-1m-2022-08-14", symbol="ethusdt", filename=ETH_KLINES_ZIP.name,
                           content_hash=digest, uploaded_ms=UPLOADED_MS)
        assert result.created
        info = result.dataset
        assert info == DatasetInfo(
            id=info.id, name="ETHUSDT-1m-2022-08-14", symbol="ETHUSDT", filename="ETHUSDT-1m-2022-08-14.zip",
            content_hash=digest, uploaded_ms=UPLOADED_MS, rows=1440, first_ms=ETH_FIRST_MS,
            last_ms=ETH_FIRST_MS + 1439 * 60_000, interval_ms=60_000,
        )
        assert store.list() == [info]
        assert store.get(info.id) == info
        assert store.get(info.id + 1) is None
        pd.testing.assert_frame_equal(store.load(info.id), frame, check_exact=True)


def test_same_content_twice_is_stored_once(tmp_path):
    frame, digest = upload(BTC_KLINES_ZIP)
    with SqliteDatasetStore(tmp_path / "uploads.sqlite3") as store:
        first = store.add(frame, name="btc", symbol="BTCUSDT", filename="a.zip", content_hash=digest, uploaded_ms=1)
        again = store.add(frame, name="btc again", symbol="BTCUSDT", filename="b.zip", content_hash=digest,
                          uploaded_ms=2)
        assert again == AddResult(first.dataset, created=False)
        assert store.list() == [first.dataset]
    assert ohlc_rows(tmp_path / "uploads.sqlite3") == 1440


def test_name_clash_with_other_content_is_refused_and_changes_nothing(tmp_path):
    with SqliteDatasetStore(tmp_path / "u.sqlite3") as store:
        kept = add_small(store, "pair study", [10.0, 11.0]).dataset
        with pytest.raises(ValueError, match="a dataset named 'pair study' already exists with different content"):
            add_small(store, "pair study", [20.0, 21.0, 22.0], content_hash="f" * 64)
        assert store.list() == [kept]
    assert ohlc_rows(tmp_path / "u.sqlite3") == 2


def test_failure_mid_transaction_changes_nothing(tmp_path):
    path = tmp_path / "u.sqlite3"
    with SqliteDatasetStore(path) as store:
        add_small(store, "before", [5.0])
        # A trigger makes the 3rd bar insert fail after the datasets row and two bars are written.
        with sqlite3.connect(path) as conn:
            conn.execute(f"CREATE TRIGGER fail BEFORE INSERT ON ohlc WHEN NEW.ts_ms = {ETH_FIRST_MS + 120_000} "
                         "BEGIN SELECT RAISE(ABORT, 'disk on fire'); END")
        with pytest.raises(RowRejected, match="disk on fire"):
            add_small(store, "doomed", [1.0, 2.0, 3.0, 4.0])
        assert [d.name for d in store.list()] == ["before"]
        assert ohlc_rows(path) == 1
        with sqlite3.connect(path) as conn:
            conn.execute("DROP TRIGGER fail")
        # The connection is usable afterwards and the same upload now goes through.
        assert add_small(store, "doomed", [1.0, 2.0, 3.0, 4.0]).created
        assert ohlc_rows(path) == 5


def test_delete_cascades_to_bars(tmp_path):
    path = tmp_path / "u.sqlite3"
    with SqliteDatasetStore(path) as store:
        gone = add_small(store, "gone", [1.0, 2.0, 3.0]).dataset
        kept = add_small(store, "kept", [7.0, 8.0]).dataset
        assert store.delete(gone.id) is True
        assert store.delete(gone.id) is False
        assert store.get(gone.id) is None
        with pytest.raises(KeyError, match=f"no dataset with id {gone.id}"):
            store.load(gone.id)
        assert store.list() == [kept]
        assert store.load(kept.id)["close"].tolist() == [7.0, 8.0]
    assert ohlc_rows(path) == 2


def test_hostile_names_are_data_and_bad_symbols_are_rejected(tmp_path):
    hostile = "x'); DROP TABLE datasets; --"
    with SqliteDatasetStore(tmp_path / "u.sqlite3") as store:
        info = add_small(store, hostile, [1.0], filename="../../etc/passwd'.csv").dataset
        assert store.get(info.id) == info
        assert (info.name, info.filename) == (hostile, "../../etc/passwd'.csv")
        for symbol in ("ETH;DROP", "' OR 1=1 --", "E", ""):
            with pytest.raises(ConfigError, match="invalid symbol"):
                add_small(store, "other", [1.0], symbol=symbol)
        for name in ("", "   ", "tab\tname", "x" * 201):
            with pytest.raises(ValueError, match=r"dataset name .* must be 1-200 printable characters"):
                add_small(store, name, [1.0])
        with pytest.raises(ValueError, match="is not a SHA-256 hex digest"):
            add_small(store, "other", [1.0], content_hash="abc' OR 1=1")
        assert store.list() == [info]


def test_frames_of_the_wrong_layout_are_refused(tmp_path):
    good = small_frame([1.0, 2.0])
    bad_frames = {
        "UTC DatetimeIndex": good.tz_convert("Europe/Berlin"),
        "columns must be": good[["open", "high", "low", "close"]],
        "no rows": good.iloc[:0],
        "strictly increasing": good.iloc[::-1],
        "whole milliseconds": good.set_axis(good.index.as_unit("us") + pd.Timedelta(microseconds=1)),
        "finite": good.assign(volume=[1.0, np.nan]),
    }
    with SqliteDatasetStore(tmp_path / "u.sqlite3") as store:
        for message, frame in bad_frames.items():
            with pytest.raises(ValueError, match=message):
                store.add(frame, name="x", symbol="BTCUSDT", filename="x.csv", content_hash="0" * 64, uploaded_ms=0)
        assert store.list() == []


def test_reopen_keeps_data_and_schema(tmp_path):
    path = tmp_path / "uploads.sqlite3"
    with SqliteDatasetStore(path) as store:
        info = add_small(store, "persisted", [3.0, 4.0, 5.0]).dataset
        frame = store.load(info.id)
    with SqliteDatasetStore(path) as store:
        assert store.schema_version == SCHEMA_VERSION
        assert store._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert store._conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        assert store.list() == [info]
        pd.testing.assert_frame_equal(store.load(info.id), frame, check_exact=True)


def test_list_is_newest_first_and_single_row_has_no_interval(tmp_path):
    with SqliteDatasetStore(tmp_path / "u.sqlite3") as store:
        old = add_small(store, "old", [1.0, 2.0], uploaded_ms=100).dataset
        single = add_small(store, "single", [1.0], uploaded_ms=200).dataset
        assert single.interval_ms is None and single.first_ms == single.last_ms
        assert store.list() == [single, old]


@pytest.mark.parametrize(("ts_ms", "expected"), [
    ([0], None),
    ([0, 60_000, 120_000, 300_000, 360_000], 60_000),  # a gap does not change the usual spacing
    ([0, 1_000, 61_000], 1_000),  # a tie goes to the smaller interval
    ([5, 3_600_005], 3_600_000),
])
def test_most_common_interval(ts_ms, expected):
    assert most_common_interval_ms(np.array(ts_ms, dtype=np.int64)) == expected


@pytest.mark.parametrize(("filename", "expected"), [
    ("ETHUSDT-1m-2022-08-14.zip", UploadDefaults("ETHUSDT-1m-2022-08-14", "ETHUSDT")),
    ("BTCUSDT-1m-2022-09-05.csv", UploadDefaults("BTCUSDT-1m-2022-09-05", "BTCUSDT")),
    ("ethusdt-1h-2024-03.zip", UploadDefaults("ethusdt-1h-2024-03", "ETHUSDT")),
    ("1000SHIBUSDT-1mo-2025-01.ZIP", UploadDefaults("1000SHIBUSDT-1mo-2025-01", "1000SHIBUSDT")),
    ("C:\\Users\\me\\Downloads\\SOLUSDT-5m-2025-02-01.csv.zip", UploadDefaults("SOLUSDT-5m-2025-02-01", "SOLUSDT")),
    ("/tmp/x/BTCUSDT-trades-2022-09-05.zip", UploadDefaults("BTCUSDT-trades-2022-09-05", None)),
    ("prices.csv", UploadDefaults("prices", None)),
    ("ETH;DROP-1m-2022-08-14.zip", UploadDefaults("ETH;DROP-1m-2022-08-14", None)),
    (".zip", UploadDefaults("upload", None)),
])
def test_defaults_from_filename(filename, expected):
    assert defaults_from_filename(filename) == expected
