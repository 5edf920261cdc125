
import pytest

from config import Settings
from ingestion.backoff import AttemptBudget, Backoff
from ingestion.engine import Gap, TradeSequencer
from ingestion.sources import site_of
from records import EventKind, FeedState, StorageState
from service import Service
from storage.sqlite.ticks import SqliteTickStore
from testkit.sources import ScriptedSource, make_trades
from testkit.waiting import eventually


def settings_for(tmp_path, **changes) -> Settings:
    return Settings.of(**{"source": "simulated", "data_dir": tmp_path, **changes})


def test_sequencer_drops_resends_and_reports_gaps():
    seq = TradeSequencer()
    assert seq.advance("BTCUSDT", 10) == (True, None)
    assert seq.advance("BTCUSDT", 11) == (True, None)
    assert seq.advance("BTCUSDT", 11)[0] is False  # re-sent after a reconnect
    is_new, gap = seq.advance("BTCUSDT", 15)
    assert is_new and gap == Gap("BTCUSDT", 12, 3)
    event = gap.event(5)
    assert event.kind is EventKind.GAP and event.symbol == "BTCUSDT" and event.detail == "first_missing=12 count=3"
    assert (seq.duplicates, seq.gaps, seq.missing) == (1, 1, 3)
    # Symbols are independent.
    assert seq.advance("ETHUSDT", 1) == (True, None)


def test_engine_stores_every_trade_once_and_records_gaps(tmp_path):
    script = [*make_trades(100), *make_trades(20, first_id=81), *make_trades(50, first_id=201),
              *make_trades(30, symbol="ETHUSDT")]
    service = Service.start(settings_for(tmp_path), source=ScriptedSource(script))
    eventually(lambda: service.writer.committed_trades == 180, timeout=10)
    status = service.status()
    assert (status.trades, status.duplicates, status.gaps, status.missing_trades) == (180, 20, 1, 100)
    assert (status.stored, status.storage_state) == (180, StorageState.OK)
    assert service.engine.last_trade("BTCUSDT").trade_id == 250
    assert service.stop()
    with SqliteTickStore(service.site.ticks_path) as store:
        assert store.tick_count("BTCUSDT") == 150 and store.tick_count("ETHUSDT") == 30
        gaps = store.feed_events(kinds=[EventKind.GAP])
        assert [g.detail for g in gaps] == ["first_missing=101 count=100"]
        kinds = {e.kind for e in store.feed_events()}
        assert {EventKind.STARTED, EventKind.STOPPED} <= kinds


def test_stop_flushes_a_burst_without_loss(tmp_path):
    service = Service.start(settings_for(tmp_path), source=ScriptedSource(make_trades(60_000)))
    eventually(lambda: service.engine.trades == 60_000, timeout=20)
    assert service.stop()
    with SqliteTickStore(service.site.ticks_path) as store:
        assert store.tick_count() == 60_000


def test_live_restart_resumes_gap_detection_from_the_database(tmp_path):
    settings = settings_for(tmp_path, source="binance", db=tmp_path / "live.db", backfill_max_trades=0,
                            history_hours=0)
    first = Service.start(settings, source=ScriptedSource(make_trades(10), name="binance"))
    eventually(lambda: first.writer.committed_trades == 10)
    first.stop()
    second = Service.start(settings, source=ScriptedSource(make_trades(10, first_id=8), name="binance"))
    eventually(lambda: second.engine.trades == 7)  # 8..10 already stored → dropped; 11..17 new
    assert second.status().duplicates == 3 and second.status().gaps == 0
    second.stop()


def test_simulated_restart_does_not_resume_ids_from_the_database(tmp_path):
    """Simulated ids restart at the market's start time: not exchange ids, so no false gap on restart."""
    settings = settings_for(tmp_path)
    first = Service.start(settings, source=ScriptedSource(make_trades(10, first_id=1_000)))
    eventually(lambda: first.writer.committed_trades == 10)
    first.stop()
    second = Service.start(settings, source=ScriptedSource(make_trades(10, first_id=5_000)))
    eventually(lambda: second.engine.trades == 10)
    assert second.status().gaps == 0 and second.status().duplicates == 0
    second.stop()


def test_source_crash_is_visible_in_status_and_events(tmp_path):
    service = Service.start(settings_for(tmp_path), source=ScriptedSource(make_trades(3), crash=True))
    eventually(lambda: not service.running)
    status = service.status()
    assert status.state is FeedState.STOPPED and "boom" in status.last_error
    service.stop()
    with SqliteTickStore(site_of(service.settings).ticks_path) as store:
        assert any("boom" in e.detail for e in store.feed_events(kinds=[EventKind.ERROR]))


def test_status_rates_and_ages(tmp_path):
    service = Service.start(settings_for(tmp_path), source=ScriptedSource(make_trades(500)))
    eventually(lambda: service.engine.trades == 500)
    status = service.status()
    assert status.ticks_per_s > 0 and status.last_tick_age_s is not None and status.last_tick_age_s < 5
    assert status.label == "SCRIPTED simulated" and status.symbols == ("BTCUSDT", "ETHUSDT")
    service.stop()


def test_backoff_grows_is_capped_and_jittered():
    import random

    backoff = Backoff(0.5, 8.0, random.Random(1))
    ceilings = []
    delays = []
    for _ in range(10):
        ceilings.append(backoff.ceiling())
        delays.append(backoff.next_delay())
    assert ceilings == [0.5, 1, 2, 4, 8, 8, 8, 8, 8, 8]
    assert all(0 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    assert len(set(delays)) == len(delays)  # full jitter: no two the same
    backoff.reset()
    assert backoff.ceiling() == 0.5
    with pytest.raises(ValueError):
        Backoff(0, 1)


def test_attempt_budget_caps_attempts_per_window():
    now = [0.0]
    budget = AttemptBudget(limit=3, window_s=300, clock=lambda: now[0])
    for _ in range(3):
        assert budget.wait_needed() == 0
        budget.record()
        now[0] += 1
    assert budget.wait_needed() == pytest.approx(297)
    now[0] = 300.5
    assert budget.wait_needed() == 0
