"""Crash safety of the headless recorder: ``kill -9`` mid-stream, restart on the same file, restarted dashboards.

The recorder runs as a user runs it (``python -m cli.record``, see tests/test_recorder_cli.py) against the
fake Binance on 127.0.0.1, which streams trades continuously from a background thread.

Durability bound used below (``COMMIT_BOUND_S``): the writer thread wakes on the first queued trade and
commits everything queued in one transaction, so a trade is committed at most ``flush_ms``
(250 ms) after it reaches the queue; loopback delivery and parsing add milliseconds. ``synchronous=NORMAL``
in WAL mode loses commits only on an OS crash or power cut, never on a process kill, so "committed" means
"survives kill -9". We allow 1 s (4x the flush interval) for scheduling noise on a loaded 2-core machine:
every trade sent more than 1 s before the kill must be in the database.
"""

from __future__ import annotations

import signal
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from config import Settings
from pairs.bars import LOOKBACKS_MS, BarHistory, load_pair_bars
from pairs.compute import PairParams, compute_pair
from records import EventKind
from service import Service
from storage.sqlite.ticks import SqliteTickStore
from testkit.fake_binance import FakeBinance, load_recorded_trades
from testkit.sources import ScriptedSource
from testkit.waiting import eventually
from tests.shared_data import TICKS_NDJSON, require
from tests.test_recorder_cli import count, recorder

SYMBOLS = ("BTCUSDT", "ETHUSDT")
FIRST_IDS = {"BTCUSDT": 5_000_000_000, "ETHUSDT": 3_000_000_000}
COMMIT_BOUND_S = 1.0


def live_recorder(fake: FakeBinance, db: Path):
    return recorder("--source", "binance", "--ws-url", fake.url, "--db", str(db), "--backfill-max-trades", "0",
                    "--history-hours", "0", "--status-interval", "60")


def stored_ids(db: Path) -> dict[str, list[int]]:
    with SqliteTickStore(db) as store:
        return {s: [int(i) for i in store.ticks(s).trade_id] for s in store.symbols()}


class Streamer(threading.Thread):
    """Sends one trade per symbol (consecutive ids) every ``period`` s until stopped.

    ``log`` holds ``(monotonic time after the send returned, {symbol: id})`` per batch. Sends with no
    open connection go nowhere, as on the real exchange while a client is down.
    """

    def __init__(self, fake: FakeBinance, period: float = 0.01, max_batches: int = 12_000) -> None:
        super().__init__(name="streamer", daemon=True)
        self.fake = fake
        self.period = period
        self.max_batches = max_batches  # bound: 2 minutes at the default period
        self.log: list[tuple[float, dict[str, int]]] = []
        self.halt = threading.Event()

    def run(self) -> None:
        for n in range(self.max_batches):
            ids = {s: FIRST_IDS[s] + n for s in SYMBOLS}
            self.fake.send_trades([(s, i, 90_000.0 if s == "BTCUSDT" else 3_100.0, 0.01) for s, i in ids.items()])
            self.log.append((time.monotonic(), ids))
            if self.halt.wait(self.period):  # the stream's own pace, not a wait for a result
                return

    def stop(self) -> None:
        self.halt.set()
        self.join(10)
        assert not self.is_alive()

    def ids_sent(self, symbol: str, *, before: float | None = None) -> list[int]:
        return [ids[symbol] for t, ids in list(self.log) if before is None or t < before]


@pytest.fixture
def fake() -> Iterator[FakeBinance]:
    with FakeBinance(ping_interval=0.5) as server:
        yield server


@pytest.mark.slow
def test_kill_9_mid_stream_then_restart_resumes_with_a_gap_and_no_duplicates(fake, tmp_path):
    db = tmp_path / "live.sqlite3"
    streamer = Streamer(fake)
    first = live_recorder(fake, db)
    second = None
    try:
        eventually(lambda: fake.open_connections == 1, timeout=30, message="recorder never connected")
        streamer.start()
        eventually(lambda: count(db) >= 400, timeout=30, message="recorder stored nothing")
        killed_at = time.monotonic()
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        assert first.returncode == -signal.SIGKILL

        # The file is intact and holds, per symbol, a contiguous prefix of the stream that includes
        # everything sent more than COMMIT_BOUND_S before the kill.
        with SqliteTickStore(db) as store:
            assert store.integrity_check() == "ok"
        before = stored_ids(db)
        for symbol in SYMBOLS:
            ids = before[symbol]
            assert ids == streamer.ids_sent(symbol)[: len(ids)], f"{symbol}: stored ids are not a prefix of the stream"
            settled = streamer.ids_sent(symbol, before=killed_at - COMMIT_BOUND_S)
            assert len(ids) >= len(settled) > 0, f"{symbol}: lost trades sent > {COMMIT_BOUND_S} s before the kill"

        # Trades keep flowing while no recorder runs.
        sent_at_kill = len(streamer.log)
        eventually(lambda: len(streamer.log) >= sent_at_kill + 50, timeout=10)
        second = live_recorder(fake, db)
        eventually(lambda: fake.connections_accepted == 2, timeout=30, message="restarted recorder never connected")
        eventually(lambda: all(max(ids, default=0) > max(before[s]) + 50 for s, ids in stored_ids(db).items()),
                   timeout=30, message="restarted recorder stores nothing new")
        streamer.stop()
        last = {s: streamer.ids_sent(s)[-1] for s in SYMBOLS}
        eventually(lambda: {s: ids[-1] for s, ids in stored_ids(db).items()} == last, timeout=10)
        second.send_signal(signal.SIGTERM)
        out, _ = second.communicate(timeout=30)
        assert second.returncode == 0, out
    finally:
        streamer.halt.set()
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.communicate(timeout=10)

    after = stored_ids(db)
    with SqliteTickStore(db) as store:
        assert store.integrity_check() == "ok"
        gaps = {e.symbol: e.detail for e in store.feed_events(kinds=[EventKind.GAP])}
        assert len(store.feed_events(kinds=[EventKind.GAP])) == len(SYMBOLS)
        assert len(store.feed_events(kinds=[EventKind.STARTED])) == 2
        assert len(store.feed_events(kinds=[EventKind.STOPPED])) == 1  # the killed process never said goodbye
        total = store.tick_count()
    expected_total = 0
    for symbol in SYMBOLS:
        old_max = before[symbol][-1]
        resumed = min(i for i in after[symbol] if i > old_max)
        missing = resumed - old_max - 1
        assert missing > 0
        # One gap per symbol, naming exactly the ids sent while nobody was listening.
        assert gaps[symbol] == f"first_missing={old_max + 1} count={missing}"
        assert after[symbol] == before[symbol] + list(range(resumed, last[symbol] + 1))
        expected_total += len(after[symbol])
    with sqlite3.connect(db) as conn:
        distinct = conn.execute("SELECT COUNT(*) FROM (SELECT DISTINCT symbol, trade_id FROM ticks)").fetchone()[0]
    assert total == distinct == expected_total


def test_restarted_dashboard_shows_stored_history_at_once(fake, tmp_path):
    """The recorder stored ~7 minutes of real ticks and stopped; a fresh BarHistory and an idle engine on
    the same file give the whole period as bars on the first call, with no live trade."""
    trades = load_recorded_trades(require(TICKS_NDJSON))
    # End the recording in the previous whole minute: history is read up to "now" rounded down to a
    # minute while no live bar exists (pairs.bars.HISTORY_REFRESH_MS).
    boundary = time.time_ns() // 1_000_000 // 60_000 * 60_000
    shift = boundary - 1_000 - max(t.ts_ms for t in trades)
    db = tmp_path / "live.sqlite3"
    proc = live_recorder(fake, db)
    try:
        eventually(lambda: fake.open_connections == 1, timeout=30, message="recorder never connected")
        fake.send_recorded(trades, shift_ms=shift)
        eventually(lambda: count(db) == len(trades), timeout=30)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)
    assert proc.returncode == 0, out

    settings = Settings.of(source="binance", db=db, backfill_max_trades=0, history_hours=0)
    service = Service.start(settings, source=ScriptedSource([], name="binance"))  # the feed is idle
    engine = service.engine
    try:
        history = BarHistory(service.site)
        started = time.monotonic()
        bars = load_pair_bars(engine, history, SYMBOLS, 1_000, LOOKBACKS_MS["15 min"])
        elapsed = time.monotonic() - started
        minute_bars = load_pair_bars(engine, history, SYMBOLS, 60_000, LOOKBACKS_MS["15 min"])
        assert engine.trades == 0 and engine.bars.first_start_ms("BTCUSDT") is None
    finally:
        assert service.stop()
    assert elapsed < 10  # one read per symbol, no waiting for live data
    assert history.loads == len(SYMBOLS)  # the 1 min bars came from the cached 1 s history

    for symbol in SYMBOLS:
        mine = [t for t in trades if t.symbol == symbol]
        by_second: dict[int, list] = {}
        for t in mine:
            by_second.setdefault((t.ts_ms + shift) // 1_000 * 1_000, []).append(t)
        frame = bars.by_symbol[symbol]
        assert [ts.value // 1_000_000 for ts in frame.index] == sorted(by_second)
        assert frame["close"].tolist() == [by_second[s][-1].price for s in sorted(by_second)]
        assert frame["trades"].tolist() == [len(by_second[s]) for s in sorted(by_second)]
        assert np.allclose(frame["volume"], [sum(t.qty for t in by_second[s]) for s in sorted(by_second)])
        minutes = {s // 60_000 for s in by_second}
        assert len(minute_bars.by_symbol[symbol]) == len(minutes)
        assert int(minute_bars.by_symbol[symbol]["trades"].sum()) == len(mine)
    assert bars.aligned is not None and bars.open_bar_start is None  # every bar is closed
    pair = compute_pair(bars.aligned.closes, PairParams("ETHUSDT", "BTCUSDT", window=60))
    assert pair.zscore is not None and np.isfinite(pair.zscore.iloc[-1])
