"""The headless recorder as a user runs it: a subprocess, signals, exit codes, a real database."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from storage.sqlite import SqliteStore
from tests.fake_binance import FakeBinance, eventually, load_recorded_trades
from tests.shared_data import TICKS_NDJSON, require

ROOT = Path(__file__).resolve().parents[1]


def recorder(*args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUANT_")}
    return subprocess.Popen([sys.executable, "-m", "ingestion", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def count(db: Path) -> int:
    if not db.exists():
        return 0
    with SqliteStore(db) as store:
        return store.tick_count()


def test_invalid_symbol_exits_2_naming_it(tmp_path):
    proc = recorder("--symbols", "BTCUSDT,ETH;DROP", "--data-dir", str(tmp_path))
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert "invalid symbol 'ETH;DROP'" in out
    assert not list(tmp_path.iterdir())  # nothing created


def test_missing_replay_file_exits_2(tmp_path):
    proc = recorder("--source", "replay", "--replay-file", str(tmp_path / "nope.ndjson"), "--data-dir", str(tmp_path))
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "nope.ndjson" in out


def test_sigterm_flushes_and_exits_0(tmp_path):
    db = tmp_path / "sim.db"
    proc = recorder("--source", "simulated", "--speed", "20", "--db", str(db), "--status-interval", "0.5")
    try:
        eventually(lambda: count(db) > 500, timeout=30, message="simulated recorder stored nothing")
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, out
    assert "SIMULATED" in out and "state=" in out  # periodic status lines
    final = [line for line in out.splitlines() if "final:" in line][-1]
    trades = int(final.split(" trades=")[1].split()[0])
    assert count(db) == trades  # everything received was committed before exit


def test_replay_to_the_end_stores_every_recorded_trade(tmp_path):
    path = require(TICKS_NDJSON)
    db = tmp_path / "replay.db"
    proc = recorder("--source", "replay", "--replay-file", str(path), "--speed", "100000", "--db", str(db))
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    assert count(db) == 19_182


def test_live_recorder_against_fake_binance(tmp_path):
    trades = load_recorded_trades(require(TICKS_NDJSON))[:3000]
    with FakeBinance(ping_interval=0.5) as fake:
        db = tmp_path / "live.db"
        proc = recorder("--source", "binance", "--ws-url", fake.url, "--db", str(db), "--backfill-max-trades", "0")
        try:
            eventually(lambda: fake.open_connections == 1, timeout=30)
            fake.send_recorded(trades)
            eventually(lambda: count(db) == 3000, timeout=30)
            proc.send_signal(signal.SIGINT)
            out, _ = proc.communicate(timeout=30)
        finally:
            proc.kill()
    assert proc.returncode == 0, out
    assert fake.paths == ["/stream?streams=btcusdt@trade/ethusdt@trade"]
