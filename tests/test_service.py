"""The service wiring and the dashboard's registry of services: shared feeds, bounds, following a recorder."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import pytest

from config import Settings
from ingestion.follow import DatabaseFollower
from records import FeedState, StorageState, Trade, now_ms
from service import Service, ServiceRegistry, TooManyFeeds
from storage import Site, StorageError, claim_writer
from storage.lock import this_process
from storage.sqlite.ticks import SqliteTickStore
from testkit.sources import RecordingSink
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


def test_a_followed_trade_whose_time_no_page_could_show_is_skipped_and_the_rest_still_arrive(tmp_path):
    """A database written before the parsers refused impossible times (or by another program) may hold
    one: the follower passed it to the live views (the page broke in pandas) and took 2**61 ms as the
    symbol's latest time, so no later trade was ever read again. Now it is skipped and counted."""
    site = Site("live", tmp_path / "live.sqlite3")
    now = now_ms()

    def write(*rows: tuple[int, int]) -> None:
        with SqliteTickStore(site.file) as store:
            store.write_batch([Trade("ETHUSDT", i, ts, now, 3_100.0, 0.1, False) for i, ts in rows])

    write((1, now - 1_000))
    writer = this_process("a recorder", ("ETHUSDT",))
    claim = claim_writer(site, writer)  # a recorder holds the database, as when a dashboard follows one
    follower, sink, stop = DatabaseFollower(site, ("ETHUSDT",), writer, poll_s=0.01), RecordingSink(), threading.Event()
    thread = threading.Thread(target=follower.run, args=(sink, stop), daemon=True)
    thread.start()
    try:
        eventually(lambda: follower.stats.state is FeedState.CONNECTED)
        write((2, 2**61), (3, now + 2 * 86_400_000), (4, now), (5, now + 1))
        eventually(lambda: [t.trade_id for t in sink.trades] == [4, 5])
        assert follower.stats.parse_errors == 2
        # Named by the first of them in time order.
        assert (follower.stats.last_error or "").startswith("ETHUSDT: 2 stored trades skipped, e.g. id 3: time ")
        write((6, now + 2))  # the follower still reads on
        eventually(lambda: [t.trade_id for t in sink.trades] == [4, 5, 6])
    finally:
        stop.set()
        thread.join(10)
        claim.release()


# ---------------------------------------------------------------------------------------------
# Starting feeds outside the registry's lock
# ---------------------------------------------------------------------------------------------

WAIT_S = 30.0  # a bound on every wait below, never a measure of speed


class GatedStarts:
    """A registry's ``start``: a real :meth:`Service.start`, held at a gate for the databases named ``slow``.

    ``entered`` is set when a held start begins; ``release`` lets it go on; ``fail`` makes it raise
    instead. ``calls`` counts the starts of each database (by file name).
    """

    def __init__(self, *slow: Path, fail: BaseException | None = None) -> None:
        self.slow = set(slow)
        self.fail = fail
        self.entered = threading.Event()
        self.release = threading.Event()
        self.calls: Counter[str] = Counter()
        self._lock = threading.Lock()

    def __call__(self, settings: Settings) -> Service:
        with self._lock:
            self.calls[settings.storage.db.name] += 1
        if settings.storage.db in self.slow:
            self.entered.set()
            assert self.release.wait(WAIT_S), "the test never released the gated start"
            if self.fail is not None:
                raise self.fail
        return Service.start(settings, follow=True)


class Asking(threading.Thread):
    """One session's :meth:`ServiceRegistry.acquire` in a thread of its own (as Streamlit runs sessions)."""

    def __init__(self, registry: ServiceRegistry, session: str, settings: Settings) -> None:
        super().__init__(daemon=True)
        self.registry, self.session, self.settings = registry, session, settings
        self.result: Service | None = None
        self.error: BaseException | None = None
        self.start()

    def run(self) -> None:
        try:
            self.result = self.registry.acquire(self.session, self.settings)
        except BaseException as exc:  # handed to the test
            self.error = exc

    def outcome(self) -> Service:
        self.join(WAIT_S)
        assert not self.is_alive(), f"{self.session}: acquire still waiting after {WAIT_S} s"
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result


def test_a_slow_start_does_not_hold_up_sessions_on_a_running_feed(tmp_path):
    """Was: the registry's lock was held for the whole start, so every session waited behind it."""
    a, b = tmp_path / "a.db", tmp_path / "b.db"
    gate = GatedStarts(a)
    registry = ServiceRegistry(max_feeds=2, start=gate)
    try:
        running = registry.acquire("tab-b", simulated(tmp_path, db=b))
        starting = Asking(registry, "tab-a", simulated(tmp_path, db=a))
        assert gate.entered.wait(WAIT_S)
        again = Asking(registry, "tab-c", simulated(tmp_path, "BTCUSDT", "SOLUSDT", db=b))
        again.join(WAIT_S)
        held_up = again.is_alive()
        gate.release.set()
        assert not held_up, "a session on a running feed waited for another feed's start"
        assert again.outcome() is running and "SOLUSDT" in running.symbols
        started = starting.outcome()
        assert started.running and started is not running and started.site.location.endswith("a.db")
    finally:
        gate.release.set()
        registry.stop_all()


def test_two_sessions_asking_for_one_feed_at_once_start_it_once(tmp_path):
    a = tmp_path / "a.db"
    gate = GatedStarts(a)
    registry = ServiceRegistry(max_feeds=2, start=gate)
    try:
        first = Asking(registry, "tab-1", simulated(tmp_path, db=a))
        assert gate.entered.wait(WAIT_S)
        second = Asking(registry, "tab-2", simulated(tmp_path, "BTCUSDT", "SOLUSDT", db=a))
        gate.release.set()
        service = first.outcome()
        assert second.outcome() is service and gate.calls == {"a.db": 1}
        assert {"BTCUSDT", "ETHUSDT", "SOLUSDT"} <= set(service.symbols)  # the waiter's symbols watched too
    finally:
        gate.release.set()
        registry.stop_all()


def test_a_feed_being_started_counts_against_the_limit(tmp_path):
    """A third feed is refused at once while the second is still starting (no wait behind that start)."""
    a, c = tmp_path / "a.db", tmp_path / "c.db"
    gate = GatedStarts(a)
    registry = ServiceRegistry(max_feeds=1, idle_s=0, start=gate)
    try:
        starting = Asking(registry, "tab-a", simulated(tmp_path, db=a))
        assert gate.entered.wait(WAIT_S)
        refused = Asking(registry, "tab-c", simulated(tmp_path, db=c))
        refused.join(WAIT_S)
        held_up = refused.is_alive()
        gate.release.set()
        assert not held_up, "a session asking for another feed waited for a start instead of being told"
        with pytest.raises(TooManyFeeds, match=r"maximum of 1 feeds \(.*a\.db \(starting\)\)"):
            refused.outcome()
        assert starting.outcome().running and gate.calls == {"a.db": 1}
        assert [s.site.location for s in registry.services().values()] == [str(a)]
    finally:
        gate.release.set()
        registry.stop_all()


def test_many_sessions_racing_for_new_feeds_never_exceed_the_limit(tmp_path):
    gate = GatedStarts()  # nobody held: the starts race each other
    registry = ServiceRegistry(max_feeds=2, idle_s=3600, start=gate)
    barrier = threading.Barrier(6)

    class Racing(Asking):
        def run(self) -> None:
            barrier.wait(WAIT_S)
            super().run()

    try:
        askers = [Racing(registry, f"tab-{i}", simulated(tmp_path, db=tmp_path / f"{i % 3}.db")) for i in range(6)]
        for asker in askers:
            asker.join(WAIT_S)
        assert not any(asker.is_alive() for asker in askers)
        got = [asker.result for asker in askers if asker.result is not None]
        refused = [asker.error for asker in askers if asker.error is not None]
        assert all(isinstance(error, TooManyFeeds) for error in refused)
        assert len({id(service) for service in got}) <= 2 and len(got) + len(refused) == 6
        assert all(count == 1 for count in gate.calls.values())  # one start per database at most
        assert sum(gate.calls.values()) <= 2
    finally:
        registry.stop_all()


def test_a_failed_start_frees_its_slot_and_tells_every_session_that_waited(tmp_path):
    a, b = tmp_path / "a.db", tmp_path / "b.db"
    gate = GatedStarts(a, fail=StorageError("a.db: disk I/O error"))
    registry = ServiceRegistry(max_feeds=1, start=gate)
    try:
        first = Asking(registry, "tab-1", simulated(tmp_path, db=a))
        assert gate.entered.wait(WAIT_S)
        second = Asking(registry, "tab-2", simulated(tmp_path, db=a))
        gate.release.set()
        for asker in (first, second):
            with pytest.raises(StorageError, match=r"a\.db: disk I/O error"):
                asker.outcome()
        assert gate.calls == {"a.db": 1} and registry.services() == {}
        assert registry.acquire("tab-3", simulated(tmp_path, db=b)).running  # the slot is free again
    finally:
        gate.release.set()
        registry.stop_all()


def test_a_session_waiting_on_a_start_that_never_ends_is_told_so(tmp_path):
    a = tmp_path / "a.db"
    gate = GatedStarts(a)
    registry = ServiceRegistry(max_feeds=2, start=gate, start_wait_s=0.05)
    try:
        first = Asking(registry, "tab-1", simulated(tmp_path, db=a))
        assert gate.entered.wait(WAIT_S)
        with pytest.raises(TimeoutError, match=r"the simulated feed \(.*a\.db\) is still starting after 0 s"):
            registry.acquire("tab-2", simulated(tmp_path, db=a))
        gate.release.set()
        assert first.outcome().running and gate.calls == {"a.db": 1}
    finally:
        gate.release.set()
        registry.stop_all()


def test_a_feed_whose_start_ends_after_the_server_stopped_is_stopped_too(tmp_path):
    a = tmp_path / "a.db"
    gate = GatedStarts(a)
    started: list[Service] = []

    def keeping(settings: Settings) -> Service:
        started.append(gate(settings))
        return started[-1]

    registry = ServiceRegistry(max_feeds=2, start=keeping)
    try:
        first = Asking(registry, "tab-1", simulated(tmp_path, db=a))
        assert gate.entered.wait(WAIT_S)
        registry.stop_all()  # the server shuts down meanwhile
        gate.release.set()
        with pytest.raises(RuntimeError, match="stopped while it started"):
            first.outcome()
        assert registry.services() == {} and not started[0].running
    finally:
        gate.release.set()
        registry.stop_all()


def test_a_session_whose_start_failed_does_not_count_as_using_that_feed(tmp_path):
    """Else the feed started later for that database could not be stopped to make room for another."""
    a, b = tmp_path / "a.db", tmp_path / "b.db"
    gate = GatedStarts(a, fail=StorageError("a.db: disk I/O error"))
    gate.release.set()
    registry = ServiceRegistry(max_feeds=1, idle_s=0, start=gate)
    try:
        with pytest.raises(StorageError):
            registry.acquire("tab-1", simulated(tmp_path, db=a))
        gate.slow.clear()  # the disk is back
        first = registry.acquire("tab-2", simulated(tmp_path, db=a))
        moved = registry.acquire("tab-2", simulated(tmp_path, db=b))  # tab-2 leaves a: nobody else uses it
        assert moved is not first and not first.running
    finally:
        registry.stop_all()
