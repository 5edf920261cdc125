"""Binance public archives → the research store (ingestion/archives.py, cli/archives.py): a generated
archive tree (testkit/archives.py) read from a folder and from a loopback HTTP server; µs and ms
times; checksums, corrupt zips, malformed rows and huge files refused naming the file; resumed
downloads; idempotent re-runs."""

from __future__ import annotations

import hashlib
import io
import os
import re
import warnings
import zipfile
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analytics import engle_granger
from cli import archives as cli
from domain import ONE_MINUTE, Market
from ingestion.archives import (
    KLINE_COLUMNS,
    ArchiveError,
    ArchiveUnreachable,
    FolderArchives,
    HttpArchives,
    archive_path,
    csv_from_zip,
    import_months,
    max_csv_bytes,
    parse_klines,
)
from records.retry import RetryPolicy
from storage.research import ResearchStore
from testkit.archives import (
    MICROS_FROM_MS,
    ArchiveServer,
    corrupt_zip,
    fill_store,
    kline_csv,
    remove_file,
    replace_csv,
    write_archive_tree,
    write_zip,
    wrong_checksum,
)

SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
MONTHS = ["2024-11", "2024-12", "2025-01"]  # across Binance's switch to µs times in spot files
TODAY = date(2025, 3, 10)  # every month above is over: monthly files
FAST = RetryPolicy(base_s=0.001, cap_s=0.002, max_attempts=4)


def tree_at(root: Path, **kwargs):
    return write_archive_tree(root, kwargs.pop("symbols", SYMBOLS), kwargs.pop("months", MONTHS),
                              planted_pairs=kwargs.pop("planted_pairs", [("ETHUSDT", "BTCUSDT")]), seed=3,
                              bars_per_day=kwargs.pop("bars_per_day", 20), **kwargs)


def all_closes(store: ResearchStore, market: Market, symbols) -> pd.DataFrame:
    return store.closes(market, ONE_MINUTE, symbols, 0, 4_102_444_800_000)


def http_archives(url: str, tmp_path: Path, delays: list[float] | None = None) -> HttpArchives:
    sink = delays if delays is not None else []
    return HttpArchives(url, tmp_path / "downloads", policy=FAST, sleep=sink.append)


# --- reading whole trees --------------------------------------------------------------------------------------


@pytest.mark.parametrize("market", [Market.SPOT, Market.USDM])
def test_a_mirror_folder_imports_every_month_exactly_as_written(tmp_path, market):
    tree = tree_at(tmp_path / "mirror", market=market)
    store = ResearchStore(str(tmp_path / "store"))
    outcomes = import_months(FolderArchives(tree.root), store, market, ONE_MINUTE, SYMBOLS, MONTHS, today=TODAY)
    assert [(o.symbol, o.month, o.status) for o in outcomes] == [(s, m, "imported") for s in SYMBOLS for m in MONTHS]
    assert all(o.bars == 20 * pd.Period(o.month).days_in_month for o in outcomes)
    pd.testing.assert_frame_equal(all_closes(store, market, SYMBOLS), tree.closes, check_freq=False)
    assert store.symbols(market, ONE_MINUTE) == sorted(SYMBOLS)
    other = Market.USDM if market is Market.SPOT else Market.SPOT
    assert store.symbols(other, ONE_MINUTE) == []  # markets never mix


def test_spot_microseconds_and_milliseconds_read_to_the_same_bars(tmp_path):
    """Spot files switch to µs on 2025-01-01: both read as UTC epoch ms, and the bars are those written."""
    tree = tree_at(tmp_path / "mirror", symbols=["BTCUSDT"], planted_pairs=[])
    december, january = (next(iter_lines(tree.path("BTCUSDT", m))) for m in ("2024-12", "2025-01"))
    assert len(december.split(",")[0]) == 13 and len(january.split(",")[0]) == 16  # ms, then µs
    parsed = {}
    for month in ("2024-12", "2025-01"):
        path = tree.path("BTCUSDT", month)
        parsed[month] = parse_klines(csv_from_zip(path.read_bytes(), str(path), 10**7), str(path), ONE_MINUTE, month)
    assert parsed["2024-12"]["open_time"].iloc[0] == pd.Timestamp("2024-12-01", tz="UTC").value // 10**6
    assert parsed["2025-01"]["open_time"].iloc[0] == MICROS_FROM_MS
    both = pd.concat(parsed.values())
    expected = tree.closes.loc["2024-12-01":"2025-01-31", "BTCUSDT"].to_numpy()
    np.testing.assert_array_equal(both["close"].to_numpy(), expected)
    assert both["open_time"].dtype == np.int64 and (both["open_time"] % 60_000 == 0).all()


def test_a_file_mixing_ms_and_us_times_reads_each_by_its_magnitude(tmp_path):
    tree = tree_at(tmp_path / "mirror", symbols=["BTCUSDT"], planted_pairs=[], months=["2025-01"], bars_per_day=3)
    path = tree.path("BTCUSDT", "2025-01")
    first = next(iter_lines(path)).split(",")
    first[0], first[6] = str(int(first[0]) // 1000), str((int(first[6]) + 1) // 1000 - 1)  # line 1 back in ms
    replace_csv(path, {1: ",".join(first)})
    bars = parse_klines(csv_from_zip(path.read_bytes(), "f", 10**7), "f", ONE_MINUTE, "2025-01")
    assert bars["open_time"].iloc[:2].tolist() == [MICROS_FROM_MS, MICROS_FROM_MS + 60_000]


def test_a_rerun_skips_every_month_already_stored_and_rewrites_nothing(tmp_path):
    tree = tree_at(tmp_path / "mirror")
    store = ResearchStore(str(tmp_path / "store"))
    import_months(FolderArchives(tree.root), store, Market.SPOT, ONE_MINUTE, SYMBOLS, MONTHS, today=TODAY)
    files = sorted((tmp_path / "store").rglob("*.parquet"))
    before = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in files}
    again = import_months(FolderArchives(tree.root), store, Market.SPOT, ONE_MINUTE, SYMBOLS, MONTHS, today=TODAY)
    assert {o.status for o in again} == {"skipped"}
    assert "already stored from BTCUSDT-1m-2024-11.zip" in again[0].detail
    assert {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in sorted((tmp_path / "store").rglob("*.parquet"))} \
        == before  # nothing written twice
    pd.testing.assert_frame_equal(all_closes(store, Market.SPOT, SYMBOLS), tree.closes, check_freq=False)


def test_a_republished_file_with_a_new_checksum_replaces_its_month(tmp_path):
    tree = tree_at(tmp_path / "mirror", symbols=["BTCUSDT"], planted_pairs=[])
    store = ResearchStore(str(tmp_path / "store"))
    import_months(FolderArchives(tree.root), store, Market.SPOT, ONE_MINUTE, ["BTCUSDT"], MONTHS, today=TODAY)
    path = tree.path("BTCUSDT", "2024-12")
    frame = parse_klines(csv_from_zip(path.read_bytes(), "f", 10**7), "f", ONE_MINUTE, "2024-12").iloc[:-5]
    write_zip(path, "BTCUSDT-1m-2024-12.csv", kline_csv(frame, Market.SPOT, ONE_MINUTE))  # Binance fixed the file
    again = import_months(FolderArchives(tree.root), store, Market.SPOT, ONE_MINUTE, ["BTCUSDT"], MONTHS, today=TODAY)
    assert [o.status for o in again] == ["skipped", "imported", "skipped"]
    assert again[1].bars == 20 * 31 - 5
    assert len(store.bars(Market.SPOT, ONE_MINUTE, "BTCUSDT", *month_ms("2024-12"))) == 20 * 31 - 5


# --- refusals: the file named, nothing of its month stored, the others imported ----------------------------------


def test_a_corrupt_zip_a_wrong_checksum_and_a_missing_month_spoil_only_their_own_months(tmp_path):
    tree = tree_at(tmp_path / "mirror")
    corrupt_zip(tree.path("BTCUSDT", "2024-12"))  # its .CHECKSUM matches the damaged bytes: the zip's CRC catches it
    wrong_checksum(tree.path("ETHUSDT", "2024-11"))
    remove_file(tree.path("SOLUSDT", "2025-01"))
    store = ResearchStore(str(tmp_path / "store"))
    outcomes = {(o.symbol, o.month): o for o in import_months(FolderArchives(tree.root), store, Market.SPOT,
                                                               ONE_MINUTE, SYMBOLS, MONTHS, today=TODAY)}
    corrupt, mismatch, missing = (outcomes[k] for k in (("BTCUSDT", "2024-12"), ("ETHUSDT", "2024-11"),
                                                         ("SOLUSDT", "2025-01")))
    assert corrupt.status == "refused" and "BTCUSDT-1m-2024-12.zip: not a readable zip archive" in corrupt.detail
    assert mismatch.status == "refused" and "ETHUSDT-1m-2024-11.zip: checksum mismatch" in mismatch.detail
    assert missing.status == "missing" and "SOLUSDT-1m-2025-01.zip: not published" in missing.detail
    assert sum(o.status == "imported" for o in outcomes.values()) == 6
    assert store.months(Market.SPOT, ONE_MINUTE, "BTCUSDT") == ["2024-11", "2025-01"]
    assert store.months(Market.SPOT, ONE_MINUTE, "ETHUSDT") == ["2024-12", "2025-01"]
    assert store.months(Market.SPOT, ONE_MINUTE, "SOLUSDT") == ["2024-11", "2024-12"]


@pytest.mark.parametrize(("line", "text", "expected"), [
    (7, "1733011560000,1.0,2.0,0.5,1.5,3.0,1733011619999,4.5,9,1.0,2.0", "line 7 has 11 fields, expected 12"),
    (7, "", "line 7 is empty, expected 12"),
    (9, "1733011680000,abc,2.0,0.5,1.5,3.0,1733011739999,4.5,9,1.0,2.0,0", "line 9, column 'open': 'abc' is not a"),
    (9, "1733011680000.5,1.0,2.0,0.5,1.5,3.0,1733011739999,4.5,9,1.0,2.0,0", "line 9, column 'open_time'"),
    (4, "1733011200000,1.0,2.0,0.5,1.5,3.0,1733011259999,4.5,9,1.0,2.0,0", "line 4, open_time 2024-12-01T00:00:00Z "
                                                                           "does not follow"),
    (3, "1733011230000,1.0,2.0,0.5,1.5,3.0,1733011259999,4.5,9,1.0,2.0,0", "line 3, open_time 2024-12-01T00:00:30Z "
                                                                           "is not on the 1m grid"),
    (2, "1730419200000,1.0,2.0,0.5,1.5,3.0,1730419259999,4.5,9,1.0,2.0,0", "line 2, open_time 2024-11-01T00:00:00Z "
                                                                           "is outside 2024-12"),
    (2, "1733011260000,1.0,2.0,0.5,1.5,3.0,1733011360000,4.5,9,1.0,2.0,0", "line 2, close_time 1733011360000 is not "
                                                                           "inside the bar"),
    (5, "1733011440000,0,2.0,0.5,1.5,3.0,1733011499999,4.5,9,1.0,2.0,0", "line 5, open 0.0 must be finite and > 0"),
    (5, "1733011440000,nan,2.0,0.5,1.5,3.0,1733011499999,4.5,9,1.0,2.0,0", "line 5, column 'open': 'nan' is not a "
                                                                           "finite number"),
    (5, "1733011440000,1.0,2.0,0.5,1.5,-3.0,1733011499999,4.5,9,1.0,2.0,0", "line 5, volume -3.0 must be finite "
                                                                            "and >= 0"),
    (5, "1733011440000,1.0,2.0,1.2,1.5,3.0,1733011499999,4.5,9,1.0,2.0,0", "line 5, open 1.0 and close 1.5 must lie "
                                                                           "in [low 1.2, high 2.0]"),
    (6, "1733011500000,1.0,2.0,0.5,1.5,3.0,1733011559999,4.5,-1,1.0,2.0,0", "line 6, count -1 must be >= 0"),
    (3, '"1733011320000",1.0,2.0,0.5,1.5,3.0,1733011379999,4.5,9,1.0,2.0,0', "line 3: not a Binance kline row"),
])
def test_a_malformed_row_is_refused_naming_the_file_and_line_and_nothing_of_its_month_is_stored(
        tmp_path, line, text, expected):
    tree = tree_at(tmp_path / "mirror", symbols=["BTCUSDT"], planted_pairs=[], months=["2024-12"])
    path = tree.path("BTCUSDT", "2024-12")
    replace_csv(path, {line: text})
    store = ResearchStore(str(tmp_path / "store"))
    (outcome,) = import_months(FolderArchives(tree.root), store, Market.SPOT, ONE_MINUTE, ["BTCUSDT"], ["2024-12"],
                               today=TODAY)
    assert outcome.status == "refused"
    assert outcome.detail.startswith(f"{path}, ") or outcome.detail.startswith(f"{path}:")
    assert expected in outcome.detail
    assert store.months(Market.SPOT, ONE_MINUTE, "BTCUSDT") == []


def test_a_futures_file_needs_its_exact_header(tmp_path):
    tree = tree_at(tmp_path / "mirror", symbols=["BTCUSDT"], planted_pairs=[], months=["2024-12"], market=Market.USDM)
    path = tree.path("BTCUSDT", "2024-12")
    replace_csv(path, {1: "open_time,open,high,low,close,vol,close_time,quote_volume,count,a,b,ignore"})
    with pytest.raises(ArchiveError, match=r"line 1: unexpected header"):
        parse_klines(csv_from_zip(path.read_bytes(), str(path), 10**7), str(path), ONE_MINUTE, "2024-12")


def test_a_zip_bomb_and_a_zip_of_two_files_are_refused_before_they_are_read(tmp_path):
    bound = max_csv_bytes(ONE_MINUTE, "2024-12-01")
    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("BTCUSDT-1m-2024-12-01.csv", b"0" * (bound + 1))
    assert len(bomb.getvalue()) < 10_000  # tiny on the wire
    with pytest.raises(ArchiveError, match=r"bomb\.zip: BTCUSDT-1m-2024-12-01\.csv is [\d,]+ bytes uncompressed, over"):
        csv_from_zip(bomb.getvalue(), "bomb.zip", bound)
    two = io.BytesIO()
    with zipfile.ZipFile(two, "w") as archive:
        archive.writestr("a.csv", b"1")
        archive.writestr("b.csv", b"2")
    with pytest.raises(ArchiveError, match=r"two\.zip: a kline zip holds exactly one \.csv file, this one: 'a.csv', "):
        csv_from_zip(two.getvalue(), "two.zip", bound)


def test_a_huge_or_special_file_in_a_mirror_is_refused_not_read(tmp_path):
    tree = tree_at(tmp_path / "mirror", symbols=["BTCUSDT"], planted_pairs=[], months=["2024-12"])
    path = tree.path("BTCUSDT", "2024-12")
    with path.open("r+b") as stream:
        stream.truncate(max_csv_bytes(ONE_MINUTE, "2024-12") + 70_000)  # sparse: big, costs no disk
    store = ResearchStore(str(tmp_path / "store"))
    (outcome,) = import_months(FolderArchives(tree.root), store, Market.SPOT, ONE_MINUTE, ["BTCUSDT"], ["2024-12"],
                               today=TODAY)
    assert outcome.status == "refused" and f"{path}: over " in outcome.detail
    path.unlink()
    os.mkfifo(path)  # a FIFO would block a reader for ever
    (outcome,) = import_months(FolderArchives(tree.root), store, Market.SPOT, ONE_MINUTE, ["BTCUSDT"], ["2024-12"],
                               today=TODAY)
    assert outcome.status == "refused" and f"{path}: not a regular file" in outcome.detail


def test_a_malformed_checksum_file_is_refused_naming_it(tmp_path):
    tree = tree_at(tmp_path / "mirror", symbols=["BTCUSDT"], planted_pairs=[], months=["2024-12"])
    checksum = Path(f"{tree.path('BTCUSDT', '2024-12')}.CHECKSUM")
    checksum.write_text(f"{hashlib.sha256(b'x').hexdigest()}  ETHUSDT-1m-2024-12.zip\n")  # another file's
    store = ResearchStore(str(tmp_path / "store"))
    (outcome,) = import_months(FolderArchives(tree.root), store, Market.SPOT, ONE_MINUTE, ["BTCUSDT"], ["2024-12"],
                               today=TODAY)
    assert outcome.status == "refused"
    assert f"{checksum}: not a checksum of BTCUSDT-1m-2024-12.zip" in outcome.detail


# --- the month under way: daily files ------------------------------------------------------------------------


def test_the_month_under_way_is_read_from_its_daily_files_and_grows_as_days_are_published(tmp_path):
    tree = tree_at(tmp_path / "mirror", symbols=["BTCUSDT"], planted_pairs=[], months=["2025-02"], daily={"2025-02": 5})
    store = ResearchStore(str(tmp_path / "store"))
    remove_file(tree.path("BTCUSDT", "2025-02-03"))
    archives = FolderArchives(tree.root)
    (first,) = import_months(archives, store, Market.SPOT, ONE_MINUTE, ["BTCUSDT"], ["2025-02"], today=date(2025, 2, 5))
    assert first.status == "imported" and first.bars == 3 * 20  # days 1, 2 and 4; day 5 is not over
    assert first.notes == ("BTCUSDT 2025-02-03: not published (yet); the month is stored without it",)
    (same,) = import_months(archives, store, Market.SPOT, ONE_MINUTE, ["BTCUSDT"], ["2025-02"], today=date(2025, 2, 5))
    assert same.status == "skipped"
    (later,) = import_months(archives, store, Market.SPOT, ONE_MINUTE, ["BTCUSDT"], ["2025-02"], today=date(2025, 2, 6))
    assert later.status == "imported" and later.bars == 4 * 20  # day 5 ended and is published
    stored = store.bars(Market.SPOT, ONE_MINUTE, "BTCUSDT", *month_ms("2025-02"))
    days = pd.to_datetime(stored["open_time"], unit="ms").dt.day.unique().tolist()
    assert days == [1, 2, 4, 5]


def test_a_month_just_ended_whose_monthly_file_is_not_out_yet_is_read_from_its_days(tmp_path):
    tree = tree_at(tmp_path / "mirror", symbols=["BTCUSDT"], planted_pairs=[], months=["2025-02"],
                   daily={"2025-02": 28})
    store = ResearchStore(str(tmp_path / "store"))
    (outcome,) = import_months(FolderArchives(tree.root), store, Market.SPOT, ONE_MINUTE, ["BTCUSDT"], ["2025-02"],
                               today=date(2025, 3, 2))
    assert outcome.status == "imported" and outcome.bars == 28 * 20 and "28 daily files" in outcome.detail
    (old,) = import_months(FolderArchives(tree.root), store, Market.SPOT, ONE_MINUTE, ["BTCUSDT"], ["2025-02"],
                           today=date(2025, 5, 2))  # months later only the monthly file counts
    assert old.status == "missing" and "BTCUSDT-1m-2025-02.zip: not published" in old.detail


# --- over HTTP ---------------------------------------------------------------------------------------------------


def test_http_imports_the_same_bars_as_the_folder(tmp_path):
    tree = tree_at(tmp_path / "mirror")
    store = ResearchStore(str(tmp_path / "store"))
    with ArchiveServer(tree.root) as server:
        outcomes = import_months(http_archives(server.url, tmp_path), store, Market.SPOT, ONE_MINUTE, SYMBOLS, MONTHS,
                                 today=TODAY)
    assert {o.status for o in outcomes} == {"imported"}
    pd.testing.assert_frame_equal(all_closes(store, Market.SPOT, SYMBOLS), tree.closes, check_freq=False)
    assert not list((tmp_path / "downloads").rglob("*.part"))  # nothing left behind


def test_a_download_cut_mid_file_resumes_with_a_range_request(tmp_path):
    tree = tree_at(tmp_path / "mirror", symbols=["BTCUSDT"], planted_pairs=[], months=["2024-12"])
    relative = tree.files[("BTCUSDT", "2024-12")]
    store = ResearchStore(str(tmp_path / "store"))
    delays: list[float] = []
    with ArchiveServer(tree.root, cut={relative: 1_000}) as server:
        (outcome,) = import_months(http_archives(server.url, tmp_path, delays), store, Market.SPOT, ONE_MINUTE,
                                   ["BTCUSDT"], ["2024-12"], today=TODAY)
        zips = [r for r in server.requests if r[0] == relative]
    assert outcome.status == "imported" and outcome.bars == 20 * 31
    assert zips == [(relative, None), (relative, "bytes=1000-")]  # the rest only, not the whole file again
    assert len(delays) == 1  # one backoff wait between the two attempts
    np.testing.assert_array_equal(all_closes(store, Market.SPOT, ["BTCUSDT"])["BTCUSDT"].to_numpy(),
                                  tree.closes["BTCUSDT"].to_numpy())


def test_a_server_without_range_support_sends_the_whole_file_again_and_that_is_fine(tmp_path):
    tree = tree_at(tmp_path / "mirror", symbols=["BTCUSDT"], planted_pairs=[], months=["2024-12"])
    relative = tree.files[("BTCUSDT", "2024-12")]
    store = ResearchStore(str(tmp_path / "store"))
    with ArchiveServer(tree.root, cut={relative: 1_000}) as server:
        server.ranges = False
        (outcome,) = import_months(http_archives(server.url, tmp_path), store, Market.SPOT, ONE_MINUTE, ["BTCUSDT"],
                                   ["2024-12"], today=TODAY)
        asked = [r for p, r in server.requests if p == relative]
    assert asked == [None, "bytes=1000-"]  # asked for the rest, got 200 and the whole file: written from the start
    assert outcome.status == "imported" and outcome.bars == 20 * 31


def test_an_interrupted_run_resumes_from_its_part_file_and_a_bad_part_is_downloaded_again(tmp_path):
    tree = tree_at(tmp_path / "mirror", symbols=["BTCUSDT", "ETHUSDT"], planted_pairs=[], months=["2024-12"])
    good, bad = (tree.files[(s, "2024-12")] for s in ("BTCUSDT", "ETHUSDT"))
    for relative, head in ((good, (tree.root / good).read_bytes()[:700]), (bad, b"\0" * 700)):
        part = tmp_path / "downloads" / f"{relative}.part"  # what a killed run left behind
        part.parent.mkdir(parents=True, exist_ok=True)
        part.write_bytes(head)
    store = ResearchStore(str(tmp_path / "store"))
    with ArchiveServer(tree.root) as server:
        outcomes = import_months(http_archives(server.url, tmp_path), store, Market.SPOT, ONE_MINUTE,
                                 ["BTCUSDT", "ETHUSDT"], ["2024-12"], today=TODAY)
        ranges = {path: [r for p, r in server.requests if p == path] for path in (good, bad)}
    assert [o.status for o in outcomes] == ["imported", "imported"]
    assert ranges[good] == ["bytes=700-"]
    assert ranges[bad] == ["bytes=700-", None]  # the resumed file failed its checksum: once more, whole
    pd.testing.assert_frame_equal(all_closes(store, Market.SPOT, ["BTCUSDT", "ETHUSDT"]), tree.closes,
                                  check_freq=False)
    assert not list((tmp_path / "downloads").rglob("*.part"))


def test_a_huge_body_is_refused_and_a_404_is_a_missing_month(tmp_path):
    tree = tree_at(tmp_path / "mirror", symbols=["BTCUSDT", "ETHUSDT"], planted_pairs=[], months=["2024-12"])
    huge = tree.path("BTCUSDT", "2024-12")
    huge.write_bytes(os.urandom(max_csv_bytes(ONE_MINUTE, "2024-12") + 70_000))
    Path(f"{huge}.CHECKSUM").write_text(f"{hashlib.sha256(huge.read_bytes()).hexdigest()}  {huge.name}\n")
    remove_file(tree.path("ETHUSDT", "2024-12"))
    store = ResearchStore(str(tmp_path / "store"))
    with ArchiveServer(tree.root) as server:
        big, gone = import_months(http_archives(server.url, tmp_path), store, Market.SPOT, ONE_MINUTE,
                                  ["BTCUSDT", "ETHUSDT"], ["2024-12"], today=TODAY)
    assert big.status == "refused" and f"{server.url}/{tree.files[('BTCUSDT', '2024-12')]}: " in big.detail
    assert "bytes a file of this period can be" in big.detail
    assert gone.status == "missing" and "not published" in gone.detail
    assert store.symbols(Market.SPOT, ONE_MINUTE) == []


def test_a_server_failing_every_attempt_stops_the_run_after_bounded_retries(tmp_path):
    tree = tree_at(tmp_path / "mirror", symbols=["BTCUSDT"], planted_pairs=[], months=["2024-12"])
    relative = tree.files[("BTCUSDT", "2024-12")]
    delays: list[float] = []
    with ArchiveServer(tree.root) as server:
        server.status[relative] = 503
        with pytest.raises(ArchiveUnreachable, match=r"BTCUSDT-1m-2024-12\.zip: HTTP 503 \(gave up after 4 attempts\)"):
            import_months(http_archives(server.url, tmp_path, delays), ResearchStore(str(tmp_path / "store")),
                          Market.SPOT, ONE_MINUTE, ["BTCUSDT"], ["2024-12"], today=TODAY)
        assert sum(r[0] == relative for r in server.requests) == 4
    assert len(delays) == 3 and all(0 <= d <= FAST.cap_s for d in delays)


# --- the command line -------------------------------------------------------------------------------------------


def test_cli_imports_reports_each_month_and_reruns_idempotently(tmp_path, capsys):
    tree = tree_at(tmp_path / "mirror")
    remove_file(tree.path("SOLUSDT", "2024-11"))
    argv = ["--archives", str(tree.root), "--symbols", "btcusdt, ETHUSDT,SOLUSDT", "--from", "2024-11", "--to",
            "2025-01", "--store", str(tmp_path / "store")]
    assert cli.main(argv, today=TODAY) == 0
    out = capsys.readouterr().out
    assert "[1/9] BTCUSDT 2024-11: imported 600 bars from BTCUSDT-1m-2024-11.zip" in out
    assert f"[7/9] SOLUSDT 2024-11: {tree.path('SOLUSDT', '2024-11')}: not published\n" in out
    assert out.rstrip().endswith("done: 8 month(s) imported (4,920 bars), 0 already stored, 1 not published, "
                                 "0 refused")
    assert cli.main(argv, today=TODAY) == 0
    assert "done: 0 month(s) imported (0 bars), 8 already stored, 1 not published" in capsys.readouterr().out


def test_cli_exit_codes_name_the_problem(tmp_path, capsys):
    tree = tree_at(tmp_path / "mirror", symbols=["BTCUSDT"], planted_pairs=[], months=["2024-12"])
    base = ["--archives", str(tree.root), "--store", str(tmp_path / "store")]
    assert cli.main([*base, "--symbols", "XRPUSDT", "--from", "2024-12", "--to", "2024-12"], today=TODAY) == 3
    corrupt_zip(tree.path("BTCUSDT", "2024-12"))
    assert cli.main([*base, "--symbols", "BTCUSDT", "--from", "2024-12", "--to", "2024-12"], today=TODAY) == 1
    assert "BTCUSDT 2024-12: REFUSED, nothing stored: " in capsys.readouterr().out
    for argv, message in [
        (["--symbols", "BTCUSDT", "--from", "2024-13"], "error: from: '2024-13' is not a month such as 2024-03"),
        (["--symbols", "BTCUSDT", "--from", "2025-02", "--to", "2025-01"], "error: from: 2025-02 is after --to"),
        (["--symbols", "BTCUSDT", "--from", "2025-01", "--to", "2025-04"], "error: to: 2025-04 has not begun"),
        (["--symbols", "BTCUSDT", "--from", "2000-01"], "error: from: 2000-01 .. 2025-03 is 303 months; at most 120"),
        (["--symbols", "BTC/USDT", "--from", "2025-01"], "error: symbols: invalid leg 'BTC/USDT'"),
        (["--symbols", "ETHUSDT.P", "--from", "2025-01"], "error: symbols: ETHUSDT.P is a USDⓈ-M perpetual"),
        (["--symbols", "BTCUSDT", "--from", "2025-01", "--venue", "coinm"], "error: venue: 'coinm' is not one of"),
        (["--symbols", "BTCUSDT", "--from", "2025-01", "--timeframe", "2m"], "error: timeframe: '2m' is not one of"),
        (["--symbols", "BTCUSDT", "--from", "2025-01", "--archives", str(tmp_path / "nowhere")],
         "is neither an http(s) URL nor a folder"),
        (["--symbols", "BTCUSDT", "--from", "2025-01", "--archives", "ftp://example.com"],
         "error: archives: 'ftp://example.com' is not an http(s) URL"),
        (["--symbols", "BTCUSDT", "--from", "2025-01", "--download-dir", str(tree.path("BTCUSDT", "2024-12"))],
         "error: download-dir: "),
    ]:
        assert cli.main([*base, *argv], today=TODAY) == 2, argv
        assert message in capsys.readouterr().err, argv


def test_cli_reads_perpetuals_by_leg_name_over_http_into_the_store_setting(tmp_path, capsys, monkeypatch):
    tree = tree_at(tmp_path / "mirror", symbols=["BTCUSDT", "ETHUSDT"], months=["2024-12"], market=Market.USDM)
    monkeypatch.setenv("QUANT_RESEARCH_DIR", str(tmp_path / "research"))
    with ArchiveServer(tree.root) as server:
        code = cli.main(["--archives", server.url, "--venue", "um", "--symbols", "BTCUSDT.P,ETHUSDT.P", "--from",
                         "2024-12", "--to", "2024-12"], today=TODAY)
    assert code == 0, capsys.readouterr()
    store = ResearchStore(str(tmp_path / "research"))
    pd.testing.assert_frame_equal(all_closes(store, Market.USDM, ["BTCUSDT", "ETHUSDT"]), tree.closes,
                                  check_freq=False)
    assert not list((tmp_path / "research" / ".downloads").rglob("*.part"))


def test_the_archive_path_is_binances_layout():
    assert archive_path(Market.SPOT, ONE_MINUTE, "BTCUSDT", "2024-12") == \
        "data/spot/monthly/klines/BTCUSDT/1m/BTCUSDT-1m-2024-12.zip"
    assert archive_path(Market.USDM, ONE_MINUTE, "ETHUSDT", "2025-02-03") == \
        "data/futures/um/daily/klines/ETHUSDT/1m/ETHUSDT-1m-2025-02-03.zip"


def iter_lines(path: Path):
    with zipfile.ZipFile(path) as archive:
        (name,) = archive.namelist()
        yield from archive.read(name).decode().splitlines()


def month_ms(month: str) -> tuple[int, int]:
    period = pd.Period(month, freq="M")
    return period.start_time.value // 10**6, (period + 1).start_time.value // 10**6


def test_crlf_line_endings_and_a_missing_final_line_break_read_the_same(tmp_path):
    tree = tree_at(tmp_path / "mirror", symbols=["BTCUSDT"], planted_pairs=[], months=["2024-12"], bars_per_day=2,
                   market=Market.USDM)
    path = tree.path("BTCUSDT", "2024-12")
    text = "".join(f"{line}\n" for line in iter_lines(path)).encode()
    expected = parse_klines(text, "lf", ONE_MINUTE, "2024-12")
    for variant in (text.replace(b"\n", b"\r\n"), text.rstrip(b"\n")):
        pd.testing.assert_frame_equal(parse_klines(variant, "v", ONE_MINUTE, "2024-12"), expected)
    assert len(expected) == 62 and expected["open_time"].is_monotonic_increasing


def test_a_new_day_of_the_month_under_way_downloads_only_that_day(tmp_path):
    tree = tree_at(tmp_path / "mirror", symbols=["BTCUSDT"], planted_pairs=[], months=["2025-02"], daily={"2025-02": 4})
    store = ResearchStore(str(tmp_path / "store"))
    with ArchiveServer(tree.root) as server:
        archives = http_archives(server.url, tmp_path)
        import_months(archives, store, Market.SPOT, ONE_MINUTE, ["BTCUSDT"], ["2025-02"], today=date(2025, 2, 4))
        server.requests.clear()
        (grown,) = import_months(archives, store, Market.SPOT, ONE_MINUTE, ["BTCUSDT"], ["2025-02"],
                                 today=date(2025, 2, 5))
        zips = [path for path, _ in server.requests if path.endswith(".zip")]
    assert grown.status == "imported" and grown.bars == 4 * 20
    assert zips == [tree.files[("BTCUSDT", "2025-02-04")]]  # days 1-3 come from the store, unchanged
    np.testing.assert_array_equal(all_closes(store, Market.SPOT, ["BTCUSDT"])["BTCUSDT"].to_numpy(),
                                  tree.closes["BTCUSDT"].to_numpy())
    assert store.month_sources(Market.SPOT, ONE_MINUTE, "BTCUSDT", "2025-02") == {
        f"BTCUSDT-1m-2025-02-0{d}.zip": hashlib.sha256(tree.path("BTCUSDT", f"2025-02-0{d}").read_bytes()).hexdigest()
        for d in range(1, 5)}


def test_cli_interrupted_keeps_the_months_stored_and_says_so(tmp_path, capsys, monkeypatch):
    tree = tree_at(tmp_path / "mirror", symbols=["BTCUSDT"], planted_pairs=[], months=["2024-11", "2024-12"])
    real = FolderArchives.fetch

    def interrupt_in_december(self, relative, sha256, max_bytes):
        if "2024-12" in relative:
            raise KeyboardInterrupt
        return real(self, relative, sha256, max_bytes)

    monkeypatch.setattr(FolderArchives, "fetch", interrupt_in_december)
    code = cli.main(["--archives", str(tree.root), "--symbols", "BTCUSDT", "--from", "2024-11", "--to", "2024-12",
                     "--store", str(tmp_path / "store")], today=TODAY)
    captured = capsys.readouterr()
    assert code == 130
    assert "done: 1 month(s) imported" in captured.out
    assert "interrupted: the months above are stored; run again to resume" in captured.err
    assert "Traceback" not in captured.err
    assert ResearchStore(str(tmp_path / "store")).months(Market.SPOT, ONE_MINUTE, "BTCUSDT") == ["2024-11"]


def test_a_generated_tree_filled_into_a_store_holds_its_planted_pair_and_no_other(tmp_path):
    """What the scan and walk-forward tests start from: fill_store imports the tree; the planted pair
    (log ETH = 0.5 + log BTC + AR(1) spread) is cointegrated over the stored closes, an independent one not."""
    tree = tree_at(tmp_path / "mirror", months=["2024-12", "2025-01"], bars_per_day=40)
    store = fill_store(tree, tmp_path / "store")
    closes = np.log(all_closes(store, Market.SPOT, SYMBOLS))
    pd.testing.assert_frame_equal(np.exp(closes), tree.closes, check_freq=False, rtol=1e-12)
    planted = engle_granger(closes["ETHUSDT"].to_numpy(), closes["BTCUSDT"].to_numpy())
    independent = engle_granger(closes["SOLUSDT"].to_numpy(), closes["BTCUSDT"].to_numpy())
    assert planted.pvalue < 1e-6 < 0.05 < independent.pvalue
    with pytest.raises(AssertionError, match="months not imported"):
        fill_store(tree_at(tmp_path / "daily", symbols=["BTCUSDT"], planted_pairs=[], months=["2025-02"],
                           daily={"2025-02": 2}), tmp_path / "store2")  # daily files, but today is long past


@pytest.mark.parametrize(("url", "message"), [
    ("http://127.0.0.1:99999", "error: archives: 'http://127.0.0.1:99999': Port out of range"),
    ("http://127.0.0.1:abc/", "error: archives: 'http://127.0.0.1:abc/': Port could not be cast"),
    ("https://user:s3cret@data.example/", "error: archives: 'https://data.example/' has a user name or password"),
    ("http://127.0.0.1:9/base?x=1", "error: archives: 'http://127.0.0.1:9/base?x=1' has a query or fragment"),
    ("file:///tmp/mirror", "error: archives: 'file:///tmp/mirror' is not an http(s) URL"),
    ("http://127.0.0.1:9/mirrör", "error: archives: 'http://127.0.0.1:9/mirrör' has a space, control or non-ASCII"),
    ("http://127.0.0.1:9/my mirror", "error: archives: 'http://127.0.0.1:9/my mirror' has a space, control or"),
])
def test_cli_refuses_an_archives_url_it_could_not_use_before_any_request(tmp_path, capsys, url, message):
    """A bad port or a non-ASCII path used to escape as a traceback at the first request, a space to
    fail every attempt after the retries' waits; credentials were silently not sent yet printed on
    every line; a query string was glued inside every file's URL."""
    code = cli.main(["--archives", url, "--symbols", "BTCUSDT", "--from", "2024-12", "--to", "2024-12",
                     "--store", str(tmp_path / "store")], today=TODAY)
    captured = capsys.readouterr()
    assert code == 2
    assert message in captured.err
    assert "s3cret" not in captured.err + captured.out
    assert not (tmp_path / "store").exists() or not list((tmp_path / "store").rglob("*.parquet"))


def test_a_part_file_another_import_is_writing_is_left_to_it(tmp_path):
    """Two imports at once (two terminals, a cron job and a hand run) share the download folder: one
    used to resume from, truncate and delete the .part the other was writing, failing both checksums."""
    import fcntl

    tree = tree_at(tmp_path / "mirror", symbols=["BTCUSDT"], planted_pairs=[], months=["2024-12"])
    relative = tree.files[("BTCUSDT", "2024-12")]
    whole = (tree.root / relative).read_bytes()
    part = tmp_path / "downloads" / f"{relative}.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(whole[:700])  # the other import is 700 bytes into it, holding it
    with part.open("r+b") as other, ArchiveServer(tree.root) as server:
        fcntl.flock(other.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        data = http_archives(server.url, tmp_path).fetch(relative, hashlib.sha256(whole).hexdigest(),
                                                          max_csv_bytes(ONE_MINUTE, "2024-12"))
        asked = [r for p, r in server.requests if p == relative]
        assert data == whole
        assert asked == [None]  # downloaded whole into a file of its own, not resumed from the other's
        assert part.read_bytes() == whole[:700]  # the other's bytes untouched
    assert [p.name for p in part.parent.iterdir()] == [part.name]  # its own temporary file is gone


@pytest.mark.parametrize("member", ["ETHUSDT-1m-2024-12.csv", "../BTCUSDT-1m-2024-12.csv", "BTCUSDT-1m-2024-11.csv"])
def test_a_zip_holding_another_files_csv_is_refused_naming_it(tmp_path, member):
    """A mirror that mixed files up (ETHUSDT's month in BTCUSDT's zip, with a checksum made by the
    mirror) used to store ETHUSDT's bars as BTCUSDT's: a scan then finds a perfect pair. Binance's zip
    holds the CSV of its own name; any other member (or a path) is refused."""
    tree = tree_at(tmp_path / "mirror", symbols=["BTCUSDT", "ETHUSDT"], planted_pairs=[], months=["2024-12"])
    with zipfile.ZipFile(tree.path("ETHUSDT", "2024-12")) as archive:
        (name,) = archive.namelist()
        payload = archive.read(name)
    write_zip(tree.path("BTCUSDT", "2024-12"), member, payload)
    store = ResearchStore(str(tmp_path / "store"))
    (outcome,) = import_months(FolderArchives(tree.root), store, Market.SPOT, ONE_MINUTE, ["BTCUSDT"], ["2024-12"],
                               today=TODAY)
    assert outcome.status == "refused"
    assert f"{tree.path('BTCUSDT', '2024-12')}: holds {member!r}, not BTCUSDT-1m-2024-12.csv" in outcome.detail
    assert store.months(Market.SPOT, ONE_MINUTE, "BTCUSDT") == []


def test_a_looping_or_dangling_link_in_a_mirror_is_refused_not_called_unpublished(tmp_path):
    """A symbolic link to itself or to a deleted file used to read as 'not published' (exit 3 when
    every month is so: 'a wrong symbol?'): the mirror is broken, and the message says which link."""
    tree = tree_at(tmp_path / "mirror", symbols=["BTCUSDT", "ETHUSDT"], planted_pairs=[], months=["2024-12"])
    loop = Path(f"{tree.path('BTCUSDT', '2024-12')}.CHECKSUM")
    loop.unlink()
    loop.symlink_to(loop)
    dangling = tree.path("ETHUSDT", "2024-12")
    dangling.unlink()
    dangling.symlink_to(tmp_path / "cache" / "gone.zip")
    store = ResearchStore(str(tmp_path / "store"))
    outcomes = import_months(FolderArchives(tree.root), store, Market.SPOT, ONE_MINUTE, ["BTCUSDT", "ETHUSDT"],
                             ["2024-12"], today=TODAY)
    assert [o.status for o in outcomes] == ["refused", "refused"]
    assert f"{loop}: a symbolic link to nothing readable" in outcomes[0].detail
    assert f"{dangling}: a symbolic link to nothing readable" in outcomes[1].detail


def test_a_download_that_cannot_be_written_is_refused_naming_the_file_not_a_traceback(tmp_path, capsys):
    """An OSError on the .part itself (here: a folder in its place; read-only or full disks alike)
    used to escape import_months and end cli.archives with a traceback."""
    tree = tree_at(tmp_path / "mirror", symbols=["BTCUSDT"], planted_pairs=[], months=["2024-12"])
    relative = tree.files[("BTCUSDT", "2024-12")]
    downloads = tmp_path / "downloads"
    (downloads / f"{relative}.part").mkdir(parents=True)
    with ArchiveServer(tree.root) as server:
        code = cli.main(["--archives", server.url, "--symbols", "BTCUSDT", "--from", "2024-12", "--to", "2024-12",
                         "--store", str(tmp_path / "store"), "--download-dir", str(downloads)], today=TODAY)
    out = capsys.readouterr().out
    assert code == 1
    assert f"BTCUSDT 2024-12: REFUSED, nothing stored: {downloads / relative}.part: cannot write the download (" in out


@pytest.mark.parametrize("answer", [{"short_range": 100}, {"range_start": 10}])
def test_a_resume_answered_with_less_than_the_rest_is_downloaded_again_whole(tmp_path, answer):
    """A 206 whose Content-Range ends before the file does (bytes 1000-1099/N) used to be taken as the
    rest: the file then failed its checksum and the month was refused, blaming a good file. One from
    another start (bytes 10-…/N) was always started over."""
    tree = tree_at(tmp_path / "mirror", symbols=["BTCUSDT"], planted_pairs=[], months=["2024-12"])
    relative = tree.files[("BTCUSDT", "2024-12")]
    store = ResearchStore(str(tmp_path / "store"))
    with ArchiveServer(tree.root, cut={relative: 1_000}) as server:
        for name, value in answer.items():
            setattr(server, name, value)
        (outcome,) = import_months(http_archives(server.url, tmp_path), store, Market.SPOT, ONE_MINUTE, ["BTCUSDT"],
                                   ["2024-12"], today=TODAY)
        asked = [r for p, r in server.requests if p == relative]
    assert outcome.status == "imported", outcome.detail
    assert asked == [None, "bytes=1000-", None]  # cut; a short range refused; the whole file
    np.testing.assert_array_equal(all_closes(store, Market.SPOT, ["BTCUSDT"])["BTCUSDT"].to_numpy(),
                                  tree.closes["BTCUSDT"].to_numpy())


def test_a_part_file_longer_than_the_real_file_is_downloaded_again_whole(tmp_path):
    tree = tree_at(tmp_path / "mirror", symbols=["BTCUSDT", "ETHUSDT"], planted_pairs=[], months=["2024-12"])
    longer, huge = (tree.files[(s, "2024-12")] for s in ("BTCUSDT", "ETHUSDT"))
    sizes = {longer: (tree.root / longer).stat().st_size + 10, huge: max_csv_bytes(ONE_MINUTE, "2024-12") + 70_000}
    for relative, size in sizes.items():
        part = tmp_path / "downloads" / f"{relative}.part"
        part.parent.mkdir(parents=True, exist_ok=True)
        with part.open("wb") as stream:
            stream.truncate(size)
    store = ResearchStore(str(tmp_path / "store"))
    with ArchiveServer(tree.root) as server:
        outcomes = import_months(http_archives(server.url, tmp_path), store, Market.SPOT, ONE_MINUTE,
                                 ["BTCUSDT", "ETHUSDT"], ["2024-12"], today=TODAY)
        asked = {path: [r for p, r in server.requests if p == path] for path in sizes}
    assert [o.status for o in outcomes] == ["imported", "imported"]
    assert asked[longer] == [f"bytes={sizes[longer]}-", None]  # 416, the checksum fails: whole
    assert asked[huge] == [None]  # over any file of the month: not this file's, never asked to resume
    assert not list((tmp_path / "downloads").rglob("*.part*"))


@pytest.mark.parametrize(("cell", "column"), [
    ("99999999999999999999", "close_time"),  # beyond int64: the fast parser's bare 'Overflow'
    ("-99999999999999999999", "count"),
    ("inf", "count"),  # used to print numpy's 'invalid value encountered in cast' on stderr too
])
def test_an_integer_cell_out_of_range_is_named_by_line_and_column_quietly(cell, column):
    rows = ["1733011200000,1,1,1,1,1,1733011259999,1,1,1,1,0", "1733011260000,1,1,1,1,1,1733011319999,1,1,1,1,0"]
    fields = rows[1].split(",")
    fields[KLINE_COLUMNS.index(column)] = cell
    rows[1] = ",".join(fields)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ArchiveError, match=rf"^f\.zip, line 2, column '{column}': '{re.escape(cell)}' is not a "):
            parse_klines("\n".join(rows).encode(), "f.zip", ONE_MINUTE, "2024-12")


def test_a_spot_file_with_a_header_row_and_checksum_files_written_by_hand_read_the_same(tmp_path):
    """Binance added header rows to some spot files in 2025; a mirror's .CHECKSUM may have CRLF,
    upper-case hex, extra spaces or a '*' (binary mode) before the name."""
    tree = tree_at(tmp_path / "mirror", symbols=["BTCUSDT", "ETHUSDT"], planted_pairs=[], months=["2025-01"])
    path = tree.path("BTCUSDT", "2025-01")
    with zipfile.ZipFile(path) as archive:
        (name,) = archive.namelist()
        payload = archive.read(name)
    write_zip(path, name, (",".join(KLINE_COLUMNS) + "\r\n").encode() + payload)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    Path(f"{path}.CHECKSUM").write_text(f"  {digest.upper()}   *{path.name}  \r\n")
    other = tree.path("ETHUSDT", "2025-01")
    Path(f"{other}.CHECKSUM").write_text(f"{hashlib.sha256(other.read_bytes()).hexdigest()}  ETHUSDT-1m-2024-12.zip\n")
    store = ResearchStore(str(tmp_path / "store"))
    outcomes = import_months(FolderArchives(tree.root), store, Market.SPOT, ONE_MINUTE, ["BTCUSDT", "ETHUSDT"],
                             ["2025-01"], today=TODAY)
    assert [o.status for o in outcomes] == ["imported", "refused"]
    assert "not a checksum of ETHUSDT-1m-2025-01.zip" in outcomes[1].detail  # another file's checksum
    np.testing.assert_array_equal(all_closes(store, Market.SPOT, ["BTCUSDT"])["BTCUSDT"].to_numpy(),
                                  tree.closes["BTCUSDT"].to_numpy())


def test_a_redirecting_server_stops_the_run_saying_where_it_points(tmp_path, capsys):
    """http:// given for an https-only host: every file answers 301. Each month used to be refused
    ('HTTP 301 Moved Permanently', a bad file?) one after the other, never saying where to go."""
    tree = tree_at(tmp_path / "mirror", symbols=["BTCUSDT", "ETHUSDT"], planted_pairs=[], months=["2024-12"])
    with ArchiveServer(tree.root) as server:
        for symbol in ("BTCUSDT", "ETHUSDT"):
            server.status[f"{tree.files[(symbol, '2024-12')]}.CHECKSUM"] = 301
        code = cli.main(["--archives", server.url, "--symbols", "BTCUSDT,ETHUSDT", "--from", "2024-12", "--to",
                         "2024-12", "--store", str(tmp_path / "store")], today=TODAY)
        asked = len(server.requests)
    captured = capsys.readouterr()
    assert code == 1
    assert asked == 1  # stopped at the first answer: every other file would be redirected too
    checksum = f"{tree.files[('BTCUSDT', '2024-12')]}.CHECKSUM"
    assert (f"error: cannot download: {server.url}/{checksum}: redirected (HTTP 301) to "
            f"https://mirror.invalid/{checksum}; redirects are not followed: give --archives the base URL "
            "it points to") in captured.err


def test_two_imports_at_once_on_one_store_and_download_folder_both_end_with_every_month_whole(tmp_path):
    """Two runs started together (a cron job and a hand run): each month ends stored once, whole,
    from the right files, whichever run wrote it; neither refuses a good file."""
    import threading

    tree = tree_at(tmp_path / "mirror", symbols=["BTCUSDT", "ETHUSDT"], months=["2024-12", "2025-01"])
    store = ResearchStore(str(tmp_path / "store"))
    results: list[list[str]] = []
    with ArchiveServer(tree.root, cut={tree.files[("BTCUSDT", "2024-12")]: 500}) as server:
        def run() -> None:
            outcomes = import_months(http_archives(server.url, tmp_path), store, Market.SPOT, ONE_MINUTE,
                                     ["BTCUSDT", "ETHUSDT"], ["2024-12", "2025-01"], today=TODAY)
            results.append([o.status for o in outcomes])

        threads = [threading.Thread(target=run) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
    assert len(results) == 2
    assert all(status in ("imported", "skipped") for statuses in results for status in statuses), results
    pd.testing.assert_frame_equal(all_closes(store, Market.SPOT, ["BTCUSDT", "ETHUSDT"]), tree.closes[
        ["BTCUSDT", "ETHUSDT"]], check_freq=False)
    assert not [p for p in (tmp_path / "downloads").rglob("*") if p.is_file()]
    assert not [p for p in (tmp_path / "store").rglob("*.tmp")]


def test_a_part_file_that_is_a_symbolic_link_is_never_written_through(tmp_path):
    """The default download folder of a remote store is under the shared /tmp: another user could
    plant <file>.part as a link to one of yours, and the download used to truncate and overwrite it."""
    tree = tree_at(tmp_path / "mirror", symbols=["BTCUSDT"], planted_pairs=[], months=["2024-12"])
    relative = tree.files[("BTCUSDT", "2024-12")]
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    part = tmp_path / "downloads" / f"{relative}.part"
    part.parent.mkdir(parents=True)
    part.symlink_to(victim)
    store = ResearchStore(str(tmp_path / "store"))
    with ArchiveServer(tree.root) as server:
        (outcome,) = import_months(http_archives(server.url, tmp_path), store, Market.SPOT, ONE_MINUTE, ["BTCUSDT"],
                                   ["2024-12"], today=TODAY)
    assert victim.read_text() == "precious\n"
    assert outcome.status == "refused" and f"{part}: cannot write the download (" in outcome.detail


def test_the_default_download_folder_of_a_remote_store_is_this_users_own(tmp_path, monkeypatch):
    """It was one /tmp/quant-archive-downloads for every user: anyone could create it first and plant files."""
    monkeypatch.setattr(cli.tempfile, "gettempdir", lambda: str(tmp_path))
    folder = cli.default_download_dir("s3://bucket/research")
    assert folder == tmp_path / f"quant-archive-downloads-{os.getuid()}"
    assert folder.is_dir() and folder.stat().st_mode & 0o777 == 0o700
    assert cli.default_download_dir("s3://bucket/research") == folder  # the same next time
    os.chmod(folder, 0o777)  # opened to everyone (or made by someone else): not used
    with pytest.raises(cli.UsageError, match=r"download-dir: .* is not a folder only this user can write"):
        cli.default_download_dir("s3://bucket/research")
    folder.rmdir()
    folder.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(cli.UsageError, match=r"download-dir: .* is not a folder only this user can write"):
        cli.default_download_dir("s3://bucket/research")
    assert cli.default_download_dir(str(tmp_path / "store")) == tmp_path / "store" / ".downloads"
