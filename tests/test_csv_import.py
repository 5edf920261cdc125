"""parse_ohlc_csv: the real Binance kline archives, plain layouts, encodings, zips and every rejection."""

from __future__ import annotations

import io
import logging
import re
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from storage import csv_import
from storage.csv_import import CsvImportError, content_hash, ohlc_frame, parse_ohlc_csv
from tests.shared_data import BTC_KLINES_ZIP, ETH_KLINES_ZIP, require

HEADER = "timestamp,open,high,low,close,volume"
ETH_FIRST_MS = 1_660_435_200_000  # 2022-08-14T00:00:00Z
MINUTE_MS = 60_000


def unzip_member(path: Path) -> bytes:
    """The single CSV inside a real archive, read in memory (the samples are never copied here)."""
    with zipfile.ZipFile(require(path)) as archive:
        (name,) = archive.namelist()
        return archive.read(name)


def make_zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, payload in members.items():
            archive.writestr(name, payload)
    return buffer.getvalue()


def csv_bytes(*lines: str, newline: str = "\n") -> bytes:
    return (newline.join(lines) + newline).encode()


def plain(*rows: str) -> bytes:
    """A plain-layout file: the standard header, then ``rows`` (lines 2, 3, ...)."""
    return csv_bytes(HEADER, *rows)


def expected_frame(rows: list[tuple[int, float, float, float, float, float]]) -> pd.DataFrame:
    array = np.array(rows, dtype=object)
    return ohlc_frame(array[:, 0].astype(np.int64), array[:, 1:].astype(np.float64))


def check_layout(frame: pd.DataFrame) -> None:
    assert isinstance(frame.index, pd.DatetimeIndex)
    assert str(frame.index.dtype) == "datetime64[ms, UTC]"
    assert frame.index.name == "time"
    assert list(frame.columns) == ["open", "high", "low", "close", "volume"]
    assert all(dtype == np.float64 for dtype in frame.dtypes)
    assert frame.index.is_monotonic_increasing and frame.index.is_unique


# --- real Binance archives ---------------------------------------------------------------------------


def test_eth_spot_archive_headerless_zipped_and_unzipped():
    zipped = require(ETH_KLINES_ZIP).read_bytes()
    frame = parse_ohlc_csv(zipped, ETH_KLINES_ZIP.name)
    check_layout(frame)
    assert len(frame) == 1440
    assert frame.index[0] == pd.Timestamp("2022-08-14T00:00Z")
    assert frame.index[-1] == pd.Timestamp("2022-08-14T23:59Z")
    assert (np.diff(frame.index.asi8) == MINUTE_MS).all()
    assert frame["close"].min() == 1911.88 and frame["close"].max() == 2025.27
    # First line: 1660435200000,1983.55000000,1983.90000000,1982.14000000,1982.29000000,205.13100000,...
    assert frame.iloc[0].tolist() == [1983.55, 1983.9, 1982.14, 1982.29, 205.131]
    pd.testing.assert_frame_equal(parse_ohlc_csv(unzip_member(ETH_KLINES_ZIP), "ETHUSDT-1m-2022-08-14.csv"), frame)


def test_btc_futures_archive_with_header_zipped_and_unzipped():
    zipped = require(BTC_KLINES_ZIP).read_bytes()
    frame = parse_ohlc_csv(zipped, BTC_KLINES_ZIP.name)
    check_layout(frame)
    assert len(frame) == 1440
    assert frame.index[0] == pd.Timestamp("2022-09-05T00:00Z")
    assert frame.index[-1] == pd.Timestamp("2022-09-05T23:59Z")
    assert frame["close"].min() == 19633.0 and frame["close"].max() == 20017.0
    # Line 2: 1662336000000,19992.70,20000.00,19988.10,19996.80,482.638,...
    assert frame.iloc[0].tolist() == [19992.7, 20000.0, 19988.1, 19996.8, 482.638]
    pd.testing.assert_frame_equal(parse_ohlc_csv(unzip_member(BTC_KLINES_ZIP), "BTCUSDT.csv"), frame)


def test_zip_is_recognised_by_signature_without_zip_filename():
    zipped = require(ETH_KLINES_ZIP).read_bytes()
    assert len(parse_ohlc_csv(zipped, "upload.bin")) == 1440


def to_microseconds(csv_text: bytes, lines: slice = slice(None)) -> bytes:
    """Rewrite open_time and close_time of the chosen lines from ms to µs, as Binance writes since 2025."""
    source = csv_text.decode().splitlines()
    chosen = set(range(len(source))[lines])
    out = []
    for index, line in enumerate(source):
        fields = line.split(",")
        if index in chosen:
            fields[0], fields[6] = str(int(fields[0]) * 1000), str(int(fields[6]) * 1000)
        out.append(",".join(fields))
    return ("\n".join(out) + "\n").encode()


def test_microsecond_times_and_a_file_spanning_the_ms_to_us_switch():
    original = unzip_member(ETH_KLINES_ZIP)
    reference = parse_ohlc_csv(original, "eth.csv")
    micro = to_microseconds(original)
    assert micro.startswith(b"1660435200000000,")
    pd.testing.assert_frame_equal(parse_ohlc_csv(micro, "eth.csv"), reference)
    # Two downloads pasted together: the first half in ms, the second half in µs.
    pd.testing.assert_frame_equal(parse_ohlc_csv(to_microseconds(original, slice(720, None)), "eth.csv"), reference)


# --- plain layouts, times, encodings -----------------------------------------------------------------


def test_plain_layout_epoch_units_and_header_aliases():
    rows = [(ETH_FIRST_MS, 10.0, 12.5, 9.5, 11.0, 3.25), (ETH_FIRST_MS + MINUTE_MS, 11.0, 11.0, 10.0, 10.5, 0.0)]
    expected = expected_frame(rows)
    seconds = csv_bytes("Time,Open,HIGH,low,Close,Vol", "1660435200,10,12.5,9.5,11,3.25", "1660435260,11,11,10,10.5,0")
    millis = csv_bytes("open_time,open,high,low,close,volume", "1660435200000,10,12.5,9.5,11,3.25",
                       "1660435260000.0,11,11,10,10.5,0")
    # Any column order, spaces around names and values, and tolerated Binance extras.
    reordered = csv_bytes(" Volume , close,low,high,open, Open Time ,count",
                          "3.25,11,9.5,12.5,10, 1660435200000000 ,7", "0,10.5,10,11,11,1660435260000000,0")
    for data in (seconds, millis, reordered):
        pd.testing.assert_frame_equal(parse_ohlc_csv(data, "plain.csv"), expected)


def test_iso_times_with_z_offset_naive_and_date_only():
    data = csv_bytes(
        "datetime,open,high,low,close,volume",
        "2022-08-14T00:00:00Z,10,12,9,11,1",
        "2022-08-14T02:01:00+02:00,10,12,9,11,2",  # 00:01Z
        "2022-08-14 00:02:00.250,10,12,9,11,3",  # naive → UTC
        "2022-08-15,10,12,9,11,4",
    )
    frame = parse_ohlc_csv(data, "iso.csv")
    expected = ("2022-08-14T00:00Z", "2022-08-14T00:01Z", "2022-08-14T00:02:00.250Z", "2022-08-15T00:00Z")
    assert list(frame.index) == [pd.Timestamp(t) for t in expected]
    assert frame["volume"].tolist() == [1.0, 2.0, 3.0, 4.0]


@pytest.mark.parametrize("newline", ["\r\n", "\r"])
def test_bom_windows_and_old_mac_line_endings_quotes_and_trailing_blank_lines(newline):
    data = b"\xef\xbb\xbf" + csv_bytes('"timestamp","open","high","low","close","volume"',
                                       '"2022-08-14T00:00:00Z","10","12","9","11","1"', "", "  ", newline=newline)
    frame = parse_ohlc_csv(data, "excel.csv")
    assert frame.index[0] == pd.Timestamp("2022-08-14T00:00Z")
    assert frame.iloc[0].tolist() == [10.0, 12.0, 9.0, 11.0, 1.0]


def test_unsorted_rows_are_sorted():
    frame = parse_ohlc_csv(plain("1660435320000,3,3,3,3,3", "1660435200000,1,1,1,1,1", "1660435260000,2,2,2,2,2"),
                           "shuffled.csv")
    assert list(frame.index.asi8) == [ETH_FIRST_MS, ETH_FIRST_MS + MINUTE_MS, ETH_FIRST_MS + 2 * MINUTE_MS]
    assert frame["close"].tolist() == [1.0, 2.0, 3.0]


def test_exact_duplicates_are_collapsed_and_logged(caplog):
    with caplog.at_level(logging.INFO, logger="storage.csv_import"):
        frame = parse_ohlc_csv(plain("1660435200000,1,2,1,2,5", "1660435260000,2,2,2,2,2",
                                     "1660435200000,1.0,2.00,1,2,5e0", "1660435200000,1,2,1,2,5"), "dup.csv")
    assert len(frame) == 2
    assert frame.iloc[0].tolist() == [1.0, 2.0, 1.0, 2.0, 5.0]
    assert "collapsed 2 exact duplicate row(s)" in caplog.text


def test_zip_ignores_macos_metadata_and_other_members():
    payload = plain("1660435200000,1,2,1,2,5")
    data = make_zip({"__MACOSX/._prices.csv": b"\x00\x05\x16\x07", "readme.txt": b"hello", "data/prices.csv": payload})
    pd.testing.assert_frame_equal(parse_ohlc_csv(data, "prices.zip"), parse_ohlc_csv(payload, "prices.csv"))


def test_content_hash_is_sha256_hex():
    assert content_hash(b"abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert content_hash(b"abc") != content_hash(b"abd")


# --- rejections --------------------------------------------------------------------------------------

GOOD = "1660435200000,10,12,9,11,1"

REJECTIONS = {
    "empty": (b"", r"^the file is empty$"),
    "only blank lines": (b"\n \r\n", r"^the file is empty$"),
    "header only": (csv_bytes(HEADER), r"^no data rows: the file has only a header$"),
    "unknown columns": (csv_bytes(HEADER + ",foo,Bar", GOOD + ",1,2"),
                        r"^line 1: unknown column\(s\) 'foo', 'Bar'; expected a time column \(timestamp, time"),
    "missing column": (csv_bytes("timestamp,open,high,low,close", "1660435200000,10,12,9,11"),
                       r"^line 1: missing column\(s\) volume; expected"),
    "two time columns": (csv_bytes("time,date,open,high,low,close,volume", "1,2,10,12,9,11,1"),
                         r"^line 1: columns 'time' and 'date' both give the time$"),
    "repeated column": (csv_bytes("timestamp,open,OPEN,high,low,close,volume", "1,2,10,12,9,11,1"),
                        r"^line 1: column 'OPEN' repeats 'open'$"),
    "semicolons": (b"timestamp;open;high;low;close;volume\n1;2;3;4;5;6\n",
                   r"^line 1: fields must be separated by commas, this file uses ';'$"),
    "headerless but not binance": (csv_bytes(GOOD), r"^line 1 has 6 fields and no header row: .* add a header"),
    "blank first line": (csv_bytes("", HEADER, GOOD), r"^line 1 is empty$"),
    "non-numeric": (plain(GOOD, "1660435260000,10,abc,9,11,1"), r"^line 3, column 'high': non-numeric value 'abc'$"),
    "long value truncated": (plain("1660435200000,10,12,9,11," + "x" * 100),
                             r"^line 2, column 'volume': non-numeric value '" + "x" * 40 + "…'$"),
    "missing value": (plain(GOOD, GOOD.replace(",11,", ",,")),
                      r"^line 3, column 'close': missing value \(empty cell\)$"),
    "nan": (plain("1660435200000,NaN,12,9,11,1"), r"^line 2, column 'open': infinite or NaN value 'NaN'$"),
    "infinity": (plain("1660435200000,10,inf,9,11,1"), r"^line 2, column 'high': infinite or NaN value 'inf'$"),
    "overflow": (plain("1660435200000,10,12,9,11,1e400"), r"^line 2, column 'volume': infinite or NaN value '1e400'$"),
    "zero price": (plain("1660435200000,10,12,0,11,1"), r"^line 2, column 'low': price must be > 0, got 0.0$"),
    "negative price": (plain("1660435200000,-10,12,9,11,1"), r"^line 2, column 'open': price must be > 0, got -10.0$"),
    "negative volume": (plain(GOOD, "1660435260000,10,12,9,11,-0.5"),
                        r"^line 3, column 'volume': negative volume -0.5$"),
    "high below low": (plain("1660435200000,10,9,12,11,1"), r"^line 2: high 9.0 is below low 12.0$"),
    "open outside": (plain("1660435200000,13,12,9,11,1"), r"^line 2: open 13.0 is outside \[low 9.0, high 12.0\]$"),
    "close outside": (plain("1660435200000,10,12,9,8.5,1"),
                      r"^line 2: close 8.5 is outside \[low 9.0, high 12.0\]$"),
    "conflicting duplicate": (plain(GOOD, "1660435260000,10,12,9,11,1", GOOD.replace(",1", ",2")),
                              r"^line 4: time 2022-08-14T00:00:00\+00:00 repeats line 2 with different values$"),
    "unparseable time": (plain(GOOD, "yesterday,10,12,9,11,1"),
                         r"^line 3, column 'timestamp': unparseable time 'yesterday': expected epoch s/ms/µs or ISO"),
    "us-style date": (plain("08/14/2022,10,12,9,11,1"), r"^line 2, column 'timestamp': unparseable time '08/14/2022'"),
    "missing time": (plain(GOOD, ",10,12,9,11,1"), r"^line 3, column 'timestamp': missing time \(empty cell\)$"),
    "epoch too small": (plain("20220814,10,12,9,11,1"), r"^line 2, column 'timestamp': epoch time '20220814' is out "
                                                        r"of range: expected seconds \(>= 1e8\)"),
    "nanoseconds": (plain("1660435200000000000,10,12,9,11,1"), r"^line 2, column 'timestamp': .* is out of range"),
    "fractional epoch": (plain("1660435200.5,10,12,9,11,1"), r"^line 2, .*'1660435200.5' is not a whole number"),
    "sub-ms microseconds": (plain("1660435200000123,10,12,9,11,1"),
                            r"^line 2, .*'1660435200000123' in microseconds is not a whole millisecond$"),
    "sub-ms iso": (plain("2022-08-14T00:00:00.0001Z,10,12,9,11,1"),
                   r"^line 2, .*time '2022-08-14T00:00:00.0001Z' is not a whole millisecond$"),
    "ragged": (plain(GOOD, "1660435260000,10,12,9,11"), r"^line 3 has 5 fields, expected 6$"),
    "blank line inside": (plain(GOOD, "", GOOD), r"^line 3 is empty$"),
    "unclosed quote": (plain(GOOD, '1660435260000,"10,12,9,11,1', GOOD),
                       r"^line 3: a quoted field is not closed on the same line$"),
    "binary junk": (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", r"^line 3: not a UTF-8 text CSV \(it contains NUL bytes"),
    "latin-1": (plain(GOOD).replace(b"timestamp", b"horodat\xe9"),
                r"^line 1: not a UTF-8 text CSV \(byte 0xe9 at offset 7\)"),
    "utf-16": (plain(GOOD).decode().encode("utf-16"), r"not a UTF-8 text CSV \(it contains NUL bytes: .*UTF-16"),
}


@pytest.mark.parametrize(("data", "message"), list(REJECTIONS.values()), ids=list(REJECTIONS))
def test_rejections_name_the_line_column_and_problem(data, message):
    with pytest.raises(CsvImportError, match=message):
        parse_ohlc_csv(data, "upload.csv")


def test_import_error_is_a_value_error():
    assert issubclass(CsvImportError, ValueError)


def test_the_first_problem_in_file_order_is_reported():
    negative = "1660435260000,10,12,9,11,-1"  # a cell problem
    crossed = "1660435320000,10,9,12,11,1"  # a row problem
    with pytest.raises(CsvImportError, match=r"^line 3, column 'volume'"):
        parse_ohlc_csv(plain(GOOD, negative, crossed, "ragged"), "a.csv")
    with pytest.raises(CsvImportError, match=r"^line 3: high 9.0 is below low 12.0$"):
        parse_ohlc_csv(plain(GOOD, crossed, negative, "ragged"), "a.csv")
    # Before a structural problem further down, and before a duplicate found later.
    with pytest.raises(CsvImportError, match=r"^line 3: time .* repeats line 2"):
        parse_ohlc_csv(plain(GOOD, GOOD.replace(",1", ",3"), negative, crossed, "ragged"), "a.csv")
    # Within one line: the leftmost bad cell, and a bad cell before that line's row checks.
    with pytest.raises(CsvImportError, match=r"^line 2, column 'open': non-numeric"):
        parse_ohlc_csv(plain("1660435200000,x,1,9,11,-1"), "a.csv")
    with pytest.raises(CsvImportError, match=r"^line 2, column 'timestamp'"):
        parse_ohlc_csv(plain("later,x,1,9,11,-1"), "a.csv")


# --- one time range for every format -------------------------------------------------------------

TIME_RANGE = "1973-03-03T09:46:40Z .. 2099-12-31T23:59:59.999Z"
FIRST_MS = 100_000_000_000  # 1e8 s = 1973-03-03T09:46:40Z
LAST_MS = 4_102_444_799_999  # 2099-12-31T23:59:59.999Z

# Per format: (cell, epoch ms) just inside each edge, and cells just outside.
TIME_EDGES = {
    "seconds": ([("100000000", FIRST_MS), ("4102444799", LAST_MS - 999)], ["99999999", "4102444800"]),
    "milliseconds": ([("100000000000", FIRST_MS), ("4102444799999", LAST_MS)], ["99999999999", "4102444800000"]),
    "microseconds": ([("100000000000000", FIRST_MS), ("4102444799999000", LAST_MS)],
                     ["99999999999999", "4102444800000000"]),
    "iso": ([("1973-03-03T09:46:40Z", FIRST_MS), ("2099-12-31T23:59:59.999Z", LAST_MS)],
            ["1973-03-03T09:46:39.999Z", "2100-01-01T00:00:00Z", "1500-01-01", "9999-12-31T23:59:59Z"]),
}


@pytest.mark.parametrize("style", list(TIME_EDGES))
def test_every_time_format_shares_one_range(style):
    inside, outside = TIME_EDGES[style]
    for cell, ts_ms in inside:
        frame = parse_ohlc_csv(plain(GOOD, f"{cell},10,12,9,11,1"), "edge.csv")
        assert ts_ms in frame.index.asi8, cell
    for cell in outside:
        # Line 3 (after a good line) and a time column that is not the first, so both are really read from the file.
        data = csv_bytes("open,high,low,close,volume,Date", "10,12,9,11,1,1660435200000", f"10,12,9,11,1,{cell}")
        with pytest.raises(CsvImportError, match=r"^line 3, column 'Date': .*" + re.escape(TIME_RANGE) + "$"):
            parse_ohlc_csv(data, "edge.csv")


def test_out_of_range_epoch_says_how_it_was_read():
    with pytest.raises(CsvImportError, match=r"^line 2, column 'timestamp': epoch time '99999999999' read as seconds "
                                             r"is 5138-11-16T09:46:39Z, outside the accepted range 1973-"):
        parse_ohlc_csv(plain("99999999999,10,12,9,11,1"), "a.csv")


def test_a_year_1500_date_beside_nanosecond_times_is_reported_as_out_of_range():
    # Parsed together with a nanosecond time, a year-1500 date does not fit pandas' ns range and reads as NaT.
    data = plain("1500-01-01T00:00:00Z,10,12,9,11,1", "2022-08-14T00:00:00.000000001Z,10,12,9,11,1")
    with pytest.raises(CsvImportError, match=r"^line 2, column 'timestamp': time '1500-01-01T00:00:00Z' is outside "
                                             r"the accepted range " + re.escape(TIME_RANGE) + "$"):
        parse_ohlc_csv(data, "a.csv")


# --- early stop and memory -----------------------------------------------------------------------


def count_checked_rows(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record the number of rows of every call to the module's vectorised row check."""
    checked: list[int] = []
    check_rows = csv_import._columns

    def counting(rows, *args):
        checked.append(len(rows))
        return check_rows(rows, *args)

    monkeypatch.setattr(csv_import, "_columns", counting)
    return checked


# (rows per batch, characters per chunk): tiny sizes put batch and chunk edges between every line and inside CRLFs.
SMALL_BATCHES = [(1, 1), (2, 5), (3, 64)]


@pytest.mark.parametrize(("batch_rows", "chunk_chars"), SMALL_BATCHES)
@pytest.mark.parametrize(("data", "message"), list(REJECTIONS.values()), ids=list(REJECTIONS))
def test_batch_and_chunk_edges_do_not_change_the_reported_problem(monkeypatch, batch_rows, chunk_chars, data,
                                                                  message):
    monkeypatch.setattr(csv_import, "_BATCH_ROWS", batch_rows)
    monkeypatch.setattr(csv_import, "_CHUNK_CHARS", chunk_chars)
    with pytest.raises(CsvImportError, match=message):
        parse_ohlc_csv(data, "upload.csv")


@pytest.mark.parametrize(("batch_rows", "chunk_chars"), SMALL_BATCHES)
def test_the_first_problem_in_file_order_across_batches(monkeypatch, batch_rows, chunk_chars):
    monkeypatch.setattr(csv_import, "_BATCH_ROWS", batch_rows)
    monkeypatch.setattr(csv_import, "_CHUNK_CHARS", chunk_chars)
    good = [f"{ETH_FIRST_MS + i * MINUTE_MS},10,12,9,11,1" for i in range(1, 6)]
    # A conflicting duplicate (line 4 repeats line 2) found only at the end wins over a bad cell in a later batch.
    with pytest.raises(CsvImportError, match=r"^line 4: time .* repeats line 2 with different values$"):
        parse_ohlc_csv(plain(GOOD, good[0], GOOD.replace(",1", ",3"), *good[1:], "x,1,1,1,1,1"), "a.csv")
    # A duplicate beyond the first bad cell is not reported: the bad cell comes first in the file.
    with pytest.raises(CsvImportError, match=r"^line 7, column 'open': non-numeric value 'x'$"):
        parse_ohlc_csv(plain(GOOD, *good[:4], "1660435500000,x,1,1,1,1", GOOD.replace(",1", ",3")), "a.csv")
    # A cell problem before a structural one several batches later.
    with pytest.raises(CsvImportError, match=r"^line 5: high 9.0 is below low 12.0$"):
        parse_ohlc_csv(plain(GOOD, *good[:2], "1660435380000,10,9,12,11,1", *good[3:], "ragged"), "a.csv")


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
def test_batch_and_chunk_edges_do_not_change_the_rows_read(monkeypatch, newline):
    rows = [f"{ETH_FIRST_MS + i * MINUTE_MS},{10 + i},{12 + i},{9 + i},{11 + i},{i}" for i in range(40)]
    # Unsorted, with exact duplicates, quoted fields and trailing blank lines.
    lines = [HEADER, *rows[20:], *rows[:20], rows[3], rows[30], '"1660435200000","10","12","9","11","0"', "", " "]
    data = csv_bytes(*lines, newline=newline)
    reference = parse_ohlc_csv(data, "a.csv")
    assert len(reference) == 40 and reference.index.is_monotonic_increasing
    for batch_rows, chunk_chars in [*SMALL_BATCHES, (7, 33), (40, 2)]:
        monkeypatch.setattr(csv_import, "_BATCH_ROWS", batch_rows)
        monkeypatch.setattr(csv_import, "_CHUNK_CHARS", chunk_chars)
        pd.testing.assert_frame_equal(parse_ohlc_csv(data, "a.csv"), reference, check_exact=True)


def test_a_bad_row_stops_the_parse_before_the_rest_of_the_file(monkeypatch):
    validated = count_checked_rows(monkeypatch)
    garbage_rows = 2_000_000
    data = plain(GOOD, "1660435260000,10,12,9,11,-1") + b",,,,,\n" * garbage_rows  # 14 MB after line 3
    with pytest.raises(CsvImportError, match=r"^line 3, column 'volume': negative volume -1.0$"):
        parse_ohlc_csv(data, "bad.csv")
    assert 0 < sum(validated) < garbage_rows / 100


def traced_peak(data: bytes) -> int:
    """Bytes allocated at the peak of one parse (numpy and pandas buffers included), whatever its outcome."""
    tracemalloc.start()
    try:
        parse_ohlc_csv(data, "big.csv")
    except CsvImportError:
        pass
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


def test_refusing_a_big_bad_file_allocates_about_its_size():
    data = csv_bytes(HEADER) + b",,,,,\n" * 2_500_000  # 15 MB
    # The decoded text is one copy of the file; the old parser held every line and row list (> 50x).
    assert traced_peak(data) < 2 * len(data)


def test_a_big_valid_file_is_held_as_python_rows_one_batch_at_a_time(monkeypatch):
    # A row as a list of str costs ~20x its CSV bytes: only a bounded batch of them may exist at once
    # (bench/csv_upload.py measures the resulting peak: about 6x the file size for 1 M rows).
    checked = count_checked_rows(monkeypatch)
    rows = 200_000
    data = csv_bytes(HEADER) + b"".join(b"%d,1,1,1,1,0\n" % (1_660_435_200 + i) for i in range(rows))
    frame = parse_ohlc_csv(data, "big.csv")
    assert len(frame) == rows
    assert frame.index.asi8[-1] == (1_660_435_200 + rows - 1) * 1000
    assert sum(checked) == rows
    assert max(checked) <= rows / 10


def test_size_limit_for_plain_files():
    with pytest.raises(CsvImportError, match=r"^the file is 1 MB \(1,048,577 bytes\), over the 1 MB upload limit$"):
        parse_ohlc_csv(b"1" * (2**20 + 1), "big.csv", max_bytes=2**20)
    with pytest.raises(CsvImportError, match=r"^the file is 25 MB \(26,214,400 bytes\), over the 20 MB upload limit$"):
        parse_ohlc_csv(b"1" * (25 * 2**20), "big.csv")


def test_zip_bomb_is_refused_before_reading():
    # 21 MiB of digits compress to about 20 kB.
    bomb = make_zip({"bomb.csv": b"1" * (21 * 2**20)})
    assert len(bomb) < 100_000
    with pytest.raises(CsvImportError, match=r"^bomb.csv in the zip is 21 MB uncompressed, over the 20 MB upload"):
        parse_ohlc_csv(bomb, "bomb.zip")


ZIP_REJECTIONS = {
    "no csv": (make_zip({"readme.txt": b"hi"}), r"^the zip holds no .csv file \(members: 'readme.txt'\); it must"),
    "two csv": (make_zip({"a.csv": plain(GOOD), "notes.txt": b"", "b.CSV": plain(GOOD)}),
                r"^the zip holds 2 .csv files \(members: 'a.csv', 'b.CSV'\); it must hold exactly one$"),
    "not a zip": (b"timestamp,open\n", r"^'upload.zip' is not a readable zip archive \(File is not a zip file\)$"),
    "truncated": (make_zip({"a.csv": plain(GOOD)})[:60], r"^'upload.zip' is not a readable zip archive"),
    "bad member": (make_zip({"eth.csv": plain(GOOD, "1660435260000,10,12,9,11")}),
                   r"^eth.csv \(in the zip\): line 3 has 5 fields, expected 6$"),
    "binary member": (make_zip({"eth.csv": make_zip({"inner.csv": plain(GOOD)})}),
                      r"^eth.csv \(in the zip\): line 1: not a UTF-8 text CSV"),
}


@pytest.mark.parametrize(("data", "message"), list(ZIP_REJECTIONS.values()), ids=list(ZIP_REJECTIONS))
def test_zip_rejections(data, message):
    with pytest.raises(CsvImportError, match=message):
        parse_ohlc_csv(data, "upload.zip")


# --- property: any valid frame written as CSV reads back exactly ------------------------------------

PRICE = st.floats(min_value=1e-8, max_value=1e9, allow_nan=False, allow_infinity=False)
FRACTION = st.floats(min_value=0.0, max_value=1.0)


@st.composite
def ohlc_rows(draw: st.DrawFn) -> list[tuple[int, float, float, float, float, float]]:
    offsets = draw(st.lists(st.integers(0, 10**9), min_size=1, max_size=40, unique=True))
    rows = []
    for offset in offsets:
        low, high = sorted((draw(PRICE), draw(PRICE)))
        # Clamped because low + f * (high - low) can round past high.
        open_, close = (min(max(low + draw(FRACTION) * (high - low), low), high) for _ in range(2))
        volume = draw(st.floats(min_value=0.0, max_value=1e12))
        rows.append((ETH_FIRST_MS + offset, open_, high, low, close, volume))
    return rows


def render_time(ts_ms: int, style: str) -> str:
    if style == "epoch_ms":
        return str(ts_ms)
    if style == "epoch_us":
        return str(ts_ms * 1000)
    return pd.Timestamp(ts_ms, unit="ms", tz="UTC").isoformat()


@settings(max_examples=150, deadline=None)
@given(rows=ohlc_rows(), style=st.sampled_from(["epoch_ms", "epoch_us", "iso"]), binance=st.booleans(),
       newline=st.sampled_from(["\n", "\r\n"]))
def test_any_valid_frame_round_trips_exactly(rows, style, binance, newline):
    lines = [] if binance else [HEADER]
    for ts_ms, *values in rows:
        fields = [render_time(ts_ms, style), *map(repr, values)]
        lines.append(",".join(fields + ([str(ts_ms + 59_999), "0", "1", "0", "0", "0"] if binance else [])))
    frame = parse_ohlc_csv(csv_bytes(*lines, newline=newline), "generated.csv")
    pd.testing.assert_frame_equal(frame, expected_frame(sorted(rows)), check_exact=True)
