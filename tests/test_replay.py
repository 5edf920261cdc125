"""ReplaySource: the real collector recording, Binance frame files, SQLite files, pacing, bad input."""

from __future__ import annotations

import itertools
import json
import os
import sqlite3
import threading
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ingestion.replay import SEQ_BITS, ReplayFormat, ReplaySource, file_tag, parse_iso_ms, replay_files
from records import EventKind, FeedState
from testkit.clocks import ManualClock
from testkit.sources import RecordingSink, assert_connected_then_stops_promptly, key
from testkit.waiting import eventually
from tests.shared_data import TICKS_NDJSON as TICKS_FILE

FILE_SPAN_S = 407.25  # 08:43:15.300Z → 08:50:02.550Z
START_S = 1_800_000_000.0  # where the replays' manual clock starts, epoch seconds
needs_recording = pytest.mark.skipif(not TICKS_FILE.exists(), reason=f"recorded sample {TICKS_FILE} not present")


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def run_to_end(source: ReplaySource, timeout: float = 10.0) -> RecordingSink:
    """Run in a thread until the source finishes (``timeout`` only bounds a hang); returns the sink."""
    sink, stop = RecordingSink(), threading.Event()
    thread = threading.Thread(target=source.run, args=(sink, stop), daemon=True)
    thread.start()
    thread.join(timeout)
    stop.set()
    thread.join(1.0)
    assert not thread.is_alive()
    return sink


# ------------------------------------------------------------------------ the real recording
@needs_recording
def test_real_recording_counts_ids_and_skips() -> None:
    source = ReplaySource(TICKS_FILE)
    assert source.format is ReplayFormat.TICKS_NDJSON
    assert source.name == "replay"
    assert source.label == f"REPLAY {TICKS_FILE.name}"
    trades = list(source.iter_trades())
    assert len(trades) == 19_182  # 19,280 lines minus 98 zero-price placeholders
    assert source.skipped_rows == 98
    assert source.trades == 19_182
    assert source.stats.messages == 19_280
    assert source.stats.parse_errors == 0 and source.stats.unknown_messages == 0
    assert Counter(t.symbol for t in trades) == {"ETHUSDT": 14_978, "BTCUSDT": 4_204}
    base = file_tag(TICKS_FILE) << SEQ_BITS
    assert base > 0
    for symbol, count in (("ETHUSDT", 14_978), ("BTCUSDT", 4_204)):
        own = [t for t in trades if t.symbol == symbol]
        assert [t.trade_id for t in own] == [base | n for n in range(1, count + 1)]
        assert all(a.ts_ms <= b.ts_ms for a, b in itertools.pairwise(own))  # per symbol: in order
    first = trades[0]
    assert key(first) == ("ETHUSDT", base | 1, 1_765_788_195_300, 3139.77, 0.054, False)
    assert first.recv_ms == first.ts_ms
    assert all(t.price > 0 for t in trades)
    # File order is kept: the merged sockets go backwards in time here and there.
    assert sum(b.ts_ms < a.ts_ms for a, b in itertools.pairwise(trades)) > 100
    # Deterministic: a second pass (counters reset) gives the same trades.
    assert [key(t) for t in source.iter_trades()] == [key(t) for t in trades]
    assert source.skipped_rows == 98


@needs_recording
def test_real_recording_symbol_filter_keeps_ids() -> None:
    everything = [key(t) for t in ReplaySource(TICKS_FILE).iter_trades()]
    source = ReplaySource(TICKS_FILE, symbols=["btcusdt"])
    btc = [key(t) for t in source.iter_trades()]
    assert len(btc) == 4_204
    # Same ids as in the unfiltered replay, so filtered and full replays dedupe against each other.
    assert btc == [k for k in everything if k[0] == "BTCUSDT"]
    assert source.skipped_rows == 53  # only BTC's zero rows are looked at
    assert list(ReplaySource(TICKS_FILE, symbols=["SOLUSDT"]).iter_trades()) == []


@needs_recording
def test_real_recording_paced_run_takes_the_scaled_time() -> None:
    target_s = 0.4
    clock = ManualClock(START_S)
    source = ReplaySource(TICKS_FILE, speed=FILE_SPAN_S / target_s, clock=clock)
    sink = run_to_end(source)
    # The run waited, on its clock, the recording's span scaled by the speed: no more, no less.
    assert sum(clock.waits) == pytest.approx(target_s)
    assert clock.monotonic() - START_S == pytest.approx(target_s)
    assert len(sink.trades) == 19_182
    assert [key(t) for t in sink.trades] == [key(t) for t in ReplaySource(TICKS_FILE).iter_trades()]
    assert source.stats.state is FeedState.FINISHED
    assert source.stats.last_message_mono is not None
    assert [e.kind for e in sink.events] == [EventKind.STARTED, EventKind.STOPPED]
    assert "finished: 19182 trades" in sink.events[-1].detail
    assert "98 non-market rows skipped" in sink.events[-1].detail
    # recv_ms is the clock at emission: it spans the paced duration...
    assert sink.trades[-1].recv_ms - sink.trades[0].recv_ms == 400
    # ...and each trade went out at its own scaled time (the pacing clock never rewinds), to the millisecond.
    first = sink.trades[0]
    pacing = first.ts_ms
    for trade in sink.trades:
        pacing = max(pacing, trade.ts_ms)
        assert abs((trade.recv_ms - first.recv_ms) - (pacing - first.ts_ms) * target_s / FILE_SPAN_S) <= 1


@needs_recording
def test_real_recording_run_stops_promptly() -> None:
    source = ReplaySource(TICKS_FILE, speed=10.0)  # would take ~41 s
    sink, stop = RecordingSink(), threading.Event()
    thread = threading.Thread(target=source.run, args=(sink, stop), daemon=True)
    thread.start()
    eventually(lambda: len(sink.trades) >= 50)
    assert_connected_then_stops_promptly(source, thread, stop)
    assert 50 <= len(sink.trades) < 19_182
    assert sink.events[-1].kind is EventKind.STOPPED and sink.events[-1].detail.startswith("stopped")


def test_a_long_gap_in_the_data_does_not_delay_stopping(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "gap.ndjson", [  # an hour apart: at speed 1 the second waits an hour
        '{"symbol":"ETHUSDT","ts":"2025-12-15T08:00:00.000Z","price":1,"size":1}',
        '{"symbol":"ETHUSDT","ts":"2025-12-15T09:00:00.000Z","price":1,"size":1}',
    ])
    source = ReplaySource(path, speed=1.0)
    sink, stop = RecordingSink(), threading.Event()
    thread = threading.Thread(target=source.run, args=(sink, stop), daemon=True)
    thread.start()
    eventually(lambda: len(sink.trades) == 1)
    assert_connected_then_stops_promptly(source, thread, stop)  # stopped inside the hour's wait
    assert len(sink.trades) == 1 and sink.events[-1].detail.startswith("stopped: 1 trades")


# ------------------------------------------------------------------------ collector NDJSON edge cases
def test_collector_lines_with_errors_are_counted_not_raised(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "ticks.ndjson", [
        '{"symbol":"ETHUSDT","ts":"2025-12-15T08:43:15.300Z","price":3139.77,"size":0.054}',
        '{"symbol":"ETHUSDT","ts":"2025-12-15T08:43:15.301Z","price":0,"size":0}',  # skipped
        "{not json",  # line 3
        '{"symbol":"ETHUSDT","ts":"2025-12-15T08:43:15.302Z","size":1}',  # no price
        '{"symbol":"ETHUSDT","ts":"2025-12-15T08:43:15","price":1,"size":1}',  # naive time
        '{"symbol":"ETH;DROP","ts":"2025-12-15T08:43:15.303Z","price":1,"size":1}',  # bad symbol
        '{"symbol":"ETHUSDT","ts":"2025-12-15T08:43:15.304Z","price":-1,"size":1}',  # negative
        "",
        '{"symbol":"btcusdt","ts":"2025-12-15T09:43:15.305+01:00","price":"89800.5","size":0.002}',
        '{"symbol":"ETHUSDT","ts":"2025-12-15T08:43:15.306Z","price":true,"size":1}',  # line 10
        '{"symbol":"ETHUSDT","ts":"2025-12-15T08:43:15.307Z","price":3139.8,"size":0.1}',
    ])
    source = ReplaySource(path)
    assert source.format is ReplayFormat.TICKS_NDJSON
    trades = list(source.iter_trades())
    base = source.id_base
    assert [key(t) for t in trades] == [
        ("ETHUSDT", base | 1, 1_765_788_195_300, 3139.77, 0.054, False),
        ("BTCUSDT", base | 1, 1_765_788_195_305, 89800.5, 0.002, False),
        ("ETHUSDT", base | 2, 1_765_788_195_307, 3139.8, 0.1, False),
    ]
    assert source.skipped_rows == 1
    assert source.stats.parse_errors == 6
    assert source.stats.last_error is not None and source.stats.last_error.startswith("ticks.ndjson:10:")
    sink = run_to_end(ReplaySource(path, speed=1e9))
    errors = [e for e in sink.events if e.kind is EventKind.ERROR]
    assert len(errors) == 6 and errors[0].detail.startswith("ticks.ndjson:3: invalid JSON")
    assert len(sink.trades) == 3


def test_pacing_uses_a_non_decreasing_clock(tmp_path: Path) -> None:
    # A late, older trade (merged sockets) must not rewind the pacing clock.
    path = write_lines(tmp_path / "merged.ndjson", [
        '{"symbol":"ETHUSDT","ts":"2025-12-15T08:00:00.000Z","price":1,"size":1}',
        '{"symbol":"ETHUSDT","ts":"2025-12-15T08:00:02.000Z","price":1,"size":1}',
        '{"symbol":"BTCUSDT","ts":"2025-12-15T08:00:01.000Z","price":1,"size":1}',
        '{"symbol":"ETHUSDT","ts":"2025-12-15T08:00:03.000Z","price":1,"size":1}',
    ])
    clock = ManualClock(START_S)
    sink = run_to_end(ReplaySource(path, speed=5.0, clock=clock))  # 3 s of recording → 0.6 s
    assert [t.symbol for t in sink.trades] == ["ETHUSDT", "ETHUSDT", "BTCUSDT", "ETHUSDT"]  # file order
    assert sum(clock.waits) == pytest.approx(0.6)
    recv = [t.recv_ms - sink.trades[0].recv_ms for t in sink.trades]
    # The older trade goes out at once, no waiting "back in time"... and the clock stays at 2 s: the
    # next trade (3 s) follows 1 s / 5 = 200 ms later, not the 400 ms that pacing on the gap from
    # the older trade (1 s → 3 s) would give.
    assert recv == [0, 400, 400, 600]
    assert clock.waits == pytest.approx([0.4, 0.2])


# ------------------------------------------------------------------------ Binance frame NDJSON
def trade_payload(symbol: str, trade_id: int, ts_ms: int, price: str, qty: str, maker: bool) -> dict[str, object]:
    return {"e": "trade", "E": ts_ms + 1, "s": symbol, "t": trade_id, "p": price, "q": qty, "T": ts_ms,
            "m": maker, "M": True}


def test_raw_and_combined_binance_frames(tmp_path: Path) -> None:
    base = 1_765_788_195_000
    lines = [
        json.dumps({"result": None, "id": 1}),  # subscription reply: unknown
        json.dumps(trade_payload("BTCUSDT", 5_612_345_678, base, "89806.80000000", "0.00200000", True)),
        json.dumps({"stream": "ethusdt@trade",
                    "data": trade_payload("ETHUSDT", 2_100_000_001, base + 5, "3139.77000000", "0.05400000",
                                          False)}),
        '{"e":"trade","s":"BTCUSDT"',  # line 4: truncated
        json.dumps({"stream": "btcusdt@aggTrade", "data": {"e": "aggTrade", "s": "BTCUSDT"}}),  # unknown
        json.dumps(trade_payload("BTCUSDT", 5_612_345_679, base + 7, "0", "0", False) | {"X": "NA"}),  # skipped
        json.dumps(trade_payload("BTCUSDT", 5_612_345_680, base + 9, "89806.90000000", "0.10000000", False)),
        json.dumps({"e": "trade", "s": "BTCUSDT", "t": 1}),  # line 8: lacks fields
        "[1, 2]",  # line 9: not an object
    ]
    path = write_lines(tmp_path / "frames.ndjson", lines)
    source = ReplaySource(path)
    assert source.format is ReplayFormat.BINANCE_NDJSON
    trades = list(source.iter_trades())
    assert [key(t) for t in trades] == [
        ("BTCUSDT", 5_612_345_678, base, 89806.8, 0.002, True),
        ("ETHUSDT", 2_100_000_001, base + 5, 3139.77, 0.054, False),
        ("BTCUSDT", 5_612_345_680, base + 9, 89806.9, 0.1, False),
    ]
    assert all(t.recv_ms == t.ts_ms for t in trades)
    assert source.stats.unknown_messages == 2
    assert source.skipped_rows == 1
    assert source.stats.parse_errors == 3
    assert source.stats.last_error is not None and source.stats.last_error.startswith("frames.ndjson:9:")
    assert [t.trade_id for t in ReplaySource(path, symbols=["ETHUSDT"]).iter_trades()] == [2_100_000_001]
    sink = run_to_end(ReplaySource(path, speed=1e9))
    assert [key(t) for t in sink.trades] == [key(t) for t in trades]
    assert "3 parse errors, 2 unknown messages" in sink.events[-1].detail


def test_futures_prints_that_are_not_market_trades_are_skipped_as_live(tmp_path: Path) -> None:
    """An insurance-fund or ADL print has a real price but is no market trade: left out, as the
    live futures feed leaves it out, and counted with the skipped rows (not as unknown messages)."""
    base = 1_765_788_195_000
    market = trade_payload("BTCUSDT", 10, base, "89806.80", "0.002", True) | {"X": "MARKET"}
    fund = trade_payload("BTCUSDT", 11, base + 1, "88000.00", "1.500", False) | {"X": "INSURANCE_FUND"}
    adl = {"stream": "btcusdt@trade", "data": trade_payload("BTCUSDT", 12, base + 2, "88100.0", "0.7", False)
           | {"X": "ADL"}}
    source = ReplaySource(write_lines(tmp_path / "futures.ndjson", [json.dumps(m) for m in (market, fund, adl)]))
    assert [t.trade_id for t in source.iter_trades()] == [10]
    assert (source.skipped_rows, source.stats.unknown_messages, source.stats.parse_errors) == (2, 0, 0)


def test_malformed_first_line_does_not_hide_the_format(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "frames.ndjson", [
        "garbage",
        json.dumps(trade_payload("BTCUSDT", 7, 1_765_788_195_000, "1.5", "2", False)),
    ])
    source = ReplaySource(path)
    assert [t.trade_id for t in source.iter_trades()] == [7]
    assert source.stats.parse_errors == 1
    assert source.stats.last_error is not None and source.stats.last_error.startswith("frames.ndjson:1:")


# ------------------------------------------------------------------------ SQLite
SCHEMA = """CREATE TABLE ticks(symbol TEXT, trade_id INTEGER, ts_ms INTEGER, price REAL, qty REAL,
            buyer_is_maker INTEGER, recv_ms INTEGER, PRIMARY KEY(symbol, trade_id))"""


def make_db(path: Path, rows: list[tuple[str, int, int, float, float, int, int]]) -> Path:
    conn = sqlite3.connect(path)
    with conn:
        conn.execute(SCHEMA)
        conn.executemany("INSERT INTO ticks VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
    conn.close()
    return path


def test_sqlite_replays_in_time_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("ingestion.replay.SQLITE_CHUNK_ROWS", 3)  # exercise several fetchmany rounds
    t0 = 1_765_788_195_000
    rows = [  # inserted out of order; recv_ms is whatever the recorder saw
        ("ETHUSDT", 11, t0 + 30, 3140.0, 0.5, 0, t0 + 40),
        ("BTCUSDT", 2, t0 + 10, 89_800.1, 0.01, 1, t0 + 12),
        ("ETHUSDT", 10, t0 + 10, 3139.9, 0.2, 1, t0 + 11),
        ("BTCUSDT", 1, t0 + 10, 89_800.0, 0.02, 0, t0 + 11),
        ("BTCUSDT", 3, t0 + 50, 89_800.2, 0.03, 0, t0 + 51),
        ("ETHUSDT", 12, t0 + 50, 0.0, 0.0, 0, t0 + 51),  # zero price: skipped
        ("ETHUSDT", 13, t0 + 60, 3140.1, 0.1, 0, t0 + 61),
        ("ETHUSDT", 9, t0 + 5, 3139.8, 0.3, 0, t0 + 6),
    ]
    path = make_db(tmp_path / "ticks.sqlite3", rows)
    source = ReplaySource(path)
    assert source.format is ReplayFormat.SQLITE
    assert source.label == "REPLAY ticks.sqlite3"
    trades = list(source.iter_trades())
    assert [(t.ts_ms - t0, t.symbol, t.trade_id) for t in trades] == [
        (5, "ETHUSDT", 9), (10, "BTCUSDT", 1), (10, "BTCUSDT", 2), (10, "ETHUSDT", 10),
        (30, "ETHUSDT", 11), (50, "BTCUSDT", 3), (60, "ETHUSDT", 13),
    ]
    assert key(trades[1]) == ("BTCUSDT", 1, t0 + 10, 89_800.0, 0.02, False)
    assert trades[2].buyer_is_maker is True
    assert source.skipped_rows == 1
    assert source.stats.messages == 8
    btc = ReplaySource(path, symbols=["BTCUSDT"])
    assert [t.trade_id for t in btc.iter_trades()] == [1, 2, 3]
    sink = run_to_end(ReplaySource(path, speed=1e9))
    assert [key(t) for t in sink.trades] == [key(t) for t in trades]
    # The replay opened the file read-only and left it unchanged.
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT COUNT(*) FROM ticks").fetchone() == (8,)
    conn.close()


def test_sqlite_without_ticks_table_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "other.sqlite3"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE alerts(x INTEGER)")
    conn.commit()
    conn.close()
    with pytest.raises(ValueError, match=r"other\.sqlite3.*no 'ticks' table"):
        ReplaySource(path)


# ------------------------------------------------------------------------ bad files and arguments
def test_missing_file_is_rejected_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"nope\.ndjson.*does not exist"):
        ReplaySource(tmp_path / "nope.ndjson")


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"", "is empty"),
        (b"\n\n  \n", "is empty"),
        (b"time,price\n1,2\n", "unrecognised format"),
        (b'{"foo": 1}\n', "unrecognised format"),
        (b"\x00\x01\x02\xff" * 100, "unrecognised format"),
        (b"SQLite format 3\x00" + b"\x00" * 200, "cannot replay it: .*not a database|no 'ticks' table"),
    ],
)
def test_unrecognised_files_are_rejected_naming_them(tmp_path: Path, content: bytes, match: str) -> None:
    path = tmp_path / "bad.dat"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=r"bad\.dat") as info:
        ReplaySource(path)
    assert info.match(match)



def test_directory_and_bad_speed_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="is a directory"):
        ReplaySource(tmp_path)
    path = write_lines(tmp_path / "ok.ndjson", ['{"symbol":"ETHUSDT","ts":"2025-12-15T08:43:15.300Z",'
                                                '"price":1,"size":1}'])
    with pytest.raises(ValueError, match="speed"):
        ReplaySource(path, speed=0)
    with pytest.raises(ValueError, match="invalid symbol"):
        ReplaySource(path, symbols=["ETH USDT"])


# ------------------------------------------------------------------------ timestamps
@given(st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1)))
def test_parse_iso_ms_matches_datetime(moment: datetime) -> None:
    moment = moment.replace(microsecond=moment.microsecond // 1000 * 1000, tzinfo=timezone.utc)
    expected = round(moment.timestamp() * 1000)
    collector_style = moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    assert parse_iso_ms(collector_style) == expected
    offset = moment.astimezone(timezone(timedelta(hours=5, minutes=30))).isoformat()
    assert parse_iso_ms(offset) == expected


# ------------------------------------------------------------------------ id spaces (issue 9, item 3)
def collector_lines(start_second: int, n: int) -> list[str]:
    return [json.dumps({"symbol": "ETHUSDT", "ts": f"2025-12-15T08:{start_second // 60:02d}:{start_second % 60:02d}."
                        f"{i:03d}Z", "price": 3100 + i, "size": 0.01}) for i in range(n)]


def test_each_collector_file_has_its_own_id_space_and_a_rerun_adds_nothing(tmp_path: Path) -> None:
    """Ids restart per file; without a per-file id space the second file's trades collided with the first's."""
    from service import Service
    from storage.sqlite.ticks import SqliteTickStore

    first = write_lines(tmp_path / "morning.ndjson", collector_lines(0, 400))
    second = write_lines(tmp_path / "evening.ndjson", collector_lines(600, 300))
    db = tmp_path / "replay.db"
    for path, stored in ((first, 400), (second, 300), (first, 0), (second, 0)):
        from config import Settings

        service = Service.start(Settings.of(source="replay", replay_file=path, speed=1e9, db=db))
        eventually(lambda svc=service: not svc.running, timeout=30)
        assert service.stop()
        assert service.writer.committed_trades == stored, path
    with SqliteTickStore(db) as store:
        assert store.tick_count("ETHUSDT") == 700
    assert file_tag(first) != file_tag(second)


# ------------------------------------------------------------------------ what a browser may replay (item 7)
def test_browsers_are_offered_only_regular_files_inside_the_replay_folder(tmp_path: Path) -> None:
    folder = tmp_path / "replays"
    folder.mkdir()
    good = write_lines(folder / "b-ticks.ndjson", collector_lines(0, 3))
    write_lines(folder / "a-ticks.ndjson", collector_lines(0, 2))
    secret = tmp_path / "secret.txt"
    secret.write_text("db_password=hunter2\n")
    (folder / "link-out.ndjson").symlink_to(secret)  # points outside the folder
    (folder / "link-in.ndjson").symlink_to(good)  # points inside: offered once, under its target
    os.mkfifo(folder / "pipe.ndjson")  # would block a reader for ever
    (folder / "sub").mkdir()
    (folder / ".hidden.ndjson").write_text("x")
    assert [p.name for p in replay_files(folder)] == ["a-ticks.ndjson", "b-ticks.ndjson", "b-ticks.ndjson"]
    assert replay_files(tmp_path / "missing") == []


def test_a_fifo_or_device_is_refused_before_it_is_opened(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.ndjson"
    os.mkfifo(fifo)
    started = time.monotonic()
    with pytest.raises(ValueError, match=r"pipe\.ndjson.*not a regular file"):
        ReplaySource(fifo)
    assert time.monotonic() - started < 5  # refused, not blocked waiting for a writer
    with pytest.raises(ValueError, match="not a regular file"):
        ReplaySource(Path("/dev/null"))


def test_errors_quote_only_a_short_sanitised_excerpt_of_a_field(tmp_path: Path) -> None:
    """A replayed file's contents must not reach the shared feed tab through error messages."""
    path = write_lines(tmp_path / "leaky.ndjson", [
        '{"symbol":"ETHUSDT","ts":"2025-12-15T08:43:15.300Z","price":3139.77,"size":0.054}',
        json.dumps({"symbol": "ETHUSDT", "ts": "2025-12-15T08:43:15.301Z", "size": 1,
                    "price": "db_password=hunter2\u0007and the rest of the line"}),
        json.dumps({"symbol": "root:x:0:0:root:/root:/bin/bash", "ts": "x", "price": 1, "size": 1}),
        json.dumps({"symbol": "ETHUSDT", "ts": "secret-token-0123456789abcdef", "price": 1, "size": 1}),
    ])
    sink = run_to_end(ReplaySource(path, speed=1e9))
    details = [e.detail for e in sink.events if e.kind is EventKind.ERROR]
    assert len(details) == 3
    for detail in details:
        assert "hunter2" not in detail and "/bin/bash" not in detail and "0123456789abcdef" not in detail
        assert detail.isprintable() and len(detail) < 120
    assert "'db_password=hun…" in details[0]


# ------------------------------------------------------------------------ absurd times (issue 22)
ABSURD_MS = [2**63 - 1, 2**62, 5, 99_999_999_999, 4_102_444_800_000]  # int64's end, 2262+, 1970, 1973-, 2100


def test_a_frame_whose_trade_time_no_page_could_show_is_a_parse_error(tmp_path: Path) -> None:
    """A recording's trade at 2**63 - 1 ms (or 1970, or 2100) was replayed, stored and then broke every
    page of the symbol (pandas cannot hold it): now it is a counted, named parse error."""
    base = 1_765_788_195_000
    lines = [json.dumps(trade_payload("BTCUSDT", 1, base, "89806.8", "0.002", True))]
    lines += [json.dumps(trade_payload("BTCUSDT", 2 + i, t, "89806.8", "0.002", True)) for i, t in enumerate(ABSURD_MS)]
    lines.append(json.dumps(trade_payload("BTCUSDT", 9, base + 9, "89806.9", "0.1", False)))
    source = ReplaySource(write_lines(tmp_path / "frames.ndjson", lines))
    assert [t.trade_id for t in source.iter_trades()] == [1, 9]
    assert source.stats.parse_errors == len(ABSURD_MS)
    assert "impossible trade time 'T': time 4102444800000 is outside 1973-03-03" in (source.stats.last_error or "")


@pytest.mark.parametrize("ts", ["9999-12-31T23:59:59.999Z", "2262-04-12T00:00:00.000Z", "2100-01-01T00:00:00.000Z",
                                "0001-01-01T00:00:00.000Z", "1969-12-31T23:59:59.000Z"])
def test_a_collector_line_whose_time_no_page_could_show_is_a_parse_error(tmp_path: Path, ts: str) -> None:
    path = write_lines(tmp_path / "ticks.ndjson", [
        '{"symbol":"ETHUSDT","ts":"2025-12-15T08:43:15.300Z","price":3139.77,"size":0.054}',
        json.dumps({"symbol": "ETHUSDT", "ts": ts, "price": 3139.78, "size": 0.01}),
        '{"symbol":"ETHUSDT","ts":"2025-12-15T08:43:15.307Z","price":3139.8,"size":0.1}',
    ])
    source = ReplaySource(path)
    assert [t.ts_ms for t in source.iter_trades()] == [1_765_788_195_300, 1_765_788_195_307]
    assert source.stats.parse_errors == 1
    assert (source.stats.last_error or "").startswith(f"ticks.ndjson:2: impossible ts '{ts[:15]}")
    assert "is outside 1973-03-03T09:46:40Z .. 2099-12-31T23:59:59.999Z" in (source.stats.last_error or "")


def test_a_stored_row_whose_time_no_page_could_show_is_not_replayed(tmp_path: Path) -> None:
    t0 = 1_765_788_195_000
    rows = [("ETHUSDT", 1, t0, 3140.0, 0.5, 0, t0)]
    rows += [("ETHUSDT", 2 + i, t, 3140.0, 0.5, 0, t0) for i, t in enumerate(ABSURD_MS)]
    source = ReplaySource(make_db(tmp_path / "ticks.sqlite3", rows))
    assert [t.trade_id for t in source.iter_trades()] == [1]
    assert source.stats.parse_errors == len(ABSURD_MS)
    assert "time (1973 to 2099)" in (source.stats.last_error or "")
