"""The service wiring and the dashboard's registry of services: shared feeds, bounds, following a recorder."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from config import Settings
from records import FeedState, StorageState
from service import Service, ServiceRegistry, TooManyFeeds
from storage import StorageError
from storage.sqlite.ticks import SqliteTickStore
from testkit.waiting import eventually

ROOT = Path(__file__).resolve().parents[1]


def simulated(tmp_path: Path, *symbols: str, **changes: object) -> Settings:
    return Settings.of(**{"source": "simulated", "data_dir": tmp_path, "speed": 20.0,
                       "symbols": symbols or ("BTCUSDT", "ETHUSDT"), **changes})


@pytest.fixture
def registry():
    registry = ServiceRegistry(max_feeds=2, idle_s=3600)
    yield registry
    registry.stop_all()


def test_one_session_changing_symbols_never_stops_the_feed_another_session_watches(tmp_path, registry):
    """Was: three symbol changes in one tab evicted and stopped the engine another tab drew from."""
    watched = registry.acquire("tab-a", simulated(tmp_path))
    eventually(lambda: watched.engine.last_trade("ETHUSDT") is not None, timeout=10)
    for extra in ("SOLUSDT", "BNBUSDT", "XRPUSDT", "ADAUSDT"):
        other = registry.acquire("tab-b", simulated(tmp_path, "BTCUSDT", extra))
        assert other is watched  # one feed per database, shared
    assert watched.running and not watched.engine.stopped
    assert watched.symbols == ("BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT", "XRPUSDT", "ADAUSDT")
    eventually(lambda: watched.engine.last_trade("ADAUSDT") is not None, timeout=10)
    before = watched.engine.last_trade("ETHUSDT").trade_id
    eventually(lambda: watched.engine.last_trade("ETHUSDT").trade_id > before, timeout=10)  # still live
    assert registry.acquire("tab-a", simulated(tmp_path)) is watched
    assert list(registry.services()) == ["simulated"]


def test_the_number_of_feeds_is_bounded_with_a_message_not_by_stopping_one_in_use(tmp_path, registry):
    replay = tmp_path / "r.ndjson"
    replay.write_text('{"symbol":"BTCUSDT","ts":"2025-12-15T08:43:15.300Z","price":1,"size":1}\n')
    live = registry.acquire("tab-a", simulated(tmp_path))
    other = registry.acquire("tab-b", simulated(tmp_path, seed=3, source="replay", replay_file=replay))
    with pytest.raises(TooManyFeeds, match=r"maximum of 2 feeds \(simulated \(BTCUSDT, ETHUSDT\), replay-r-[0-9a-f]+ "
                                           r"\(BTCUSDT, ETHUSDT\)\), all in use by other sessions"):
        registry.acquire("tab-c", simulated(tmp_path, db=tmp_path / "third.db"))
    assert live.running and set(registry.services()) == {"simulated", other.site.name}


def test_a_session_switching_source_frees_its_own_feed_when_nobody_else_uses_it(tmp_path, registry):
    replay = tmp_path / "r.ndjson"
    replay.write_text('{"symbol":"BTCUSDT","ts":"2025-12-15T08:43:15.300Z","price":1,"size":1}\n')
    registry.acquire("tab-a", simulated(tmp_path))
    registry.acquire("tab-b", simulated(tmp_path, source="replay", replay_file=replay))
    first = registry.services()["simulated"]
    registry.acquire("tab-a", simulated(tmp_path, db=tmp_path / "third.db"))  # tab-a leaves "simulated"
    assert not first.running and first not in registry.services().values()


def test_a_pinned_feed_is_never_stopped_for_room(tmp_path):
    registry = ServiceRegistry(max_feeds=1, idle_s=0)
    try:
        pinned = registry.acquire("server", simulated(tmp_path), pin=True)
        with pytest.raises(TooManyFeeds):
            registry.acquire("tab-a", simulated(tmp_path, db=tmp_path / "other.db"))
        assert pinned.running
    finally:
        registry.stop_all()


def test_a_finished_feed_is_replaced_never_drawn_from(tmp_path, registry):
    """A follower whose recorder left is not reused: the next acquire starts a feed that writes."""
    db = tmp_path / "shared.db"
    proc = recorder("--source", "simulated", "--speed", "20", "--db", str(db), "--status-interval", "0.5")
    try:
        eventually(lambda: db.exists() and count(db) > 0, timeout=30)
        following = registry.acquire("tab-a", simulated(tmp_path, db=db))
        assert following.following
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        proc.kill()
    eventually(lambda: following.status().state is FeedState.FINISHED, timeout=10)
    assert "stopped writing" in following.status().last_error
    writing = registry.acquire("tab-a", simulated(tmp_path, db=db))
    assert writing is not following and not writing.following
    assert writing.status().storage_state is StorageState.OK


def recorder(*args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUANT_")}
    return subprocess.Popen([sys.executable, "-m", "cli.record", *args], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True)


def count(db: Path) -> int:
    """Ticks the recorder has stored so far (0 while it is still creating the file)."""
    try:
        with SqliteTickStore(db, readonly=True) as store:
            return store.tick_count()
    except StorageError:
        return 0


def test_a_dashboard_follows_a_running_recorder_instead_of_writing_beside_it(tmp_path):
    """Was: a second writer on the file. Now the dashboard reads what the recorder stores, live."""
    db = tmp_path / "live.db"
    proc = recorder("--source", "simulated", "--speed", "20", "--db", str(db), "--status-interval", "0.5")
    try:
        eventually(lambda: db.exists() and count(db) > 0, timeout=30)
        service = Service.start(simulated(tmp_path, db=db), follow=True)
        try:
            assert service.following and service.writer is None and service.monitor is None
            eventually(lambda: service.engine.last_trade("ETHUSDT") is not None, timeout=10)
            status = service.status()
            assert status.storage_state is StorageState.FOLLOWING
            assert f"pid {proc.pid}" in status.storage_detail and "SIMULATED market (seed 7)" in status.label
            first = service.engine.last_trade("ETHUSDT").trade_id
            eventually(lambda: service.engine.last_trade("ETHUSDT").trade_id > first, timeout=10)
            assert service.engine.bars.closed("ETHUSDT").shape[0] >= 0
            assert status.gaps == 0
        finally:
            service.stop()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        proc.kill()
    # The recorder's flush and counts are unaffected by the reader.
    assert count(db) > 0
