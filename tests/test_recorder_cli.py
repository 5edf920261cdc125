"""The headless recorder as a user runs it: a subprocess, signals, exit codes, a real database."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from storage.sqlite.ticks import SqliteTickStore
from testkit.fake_binance import FakeBinance, load_recorded_trades
from testkit.waiting import eventually
from tests.shared_data import TICKS_NDJSON, require

ROOT = Path(__file__).resolve().parents[1]


def recorder(*args: str, env_vars: dict[str, str] | None = None) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUANT_")} | (env_vars or {})
    return subprocess.Popen([sys.executable, "-m", "cli.record", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def count(db: Path) -> int:
    if not db.exists():
        return 0
    with SqliteTickStore(db) as store:
        return store.tick_count()


def test_the_recorder_is_run_from_the_cli_package():
    """``python -m cli.record`` (``make record``): the command line sits above the layers it wires."""
    proc = recorder("--help")
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert out.startswith("usage: python -m cli.record ")
    assert "--alert RULE" in out and "--db-url DB_URL" in out


def test_invalid_symbol_exits_2_naming_it(tmp_path):
    proc = recorder("--symbols", "BTCUSDT,ETH;DROP", "--data-dir", str(tmp_path))
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert "invalid symbol 'ETH;DROP'" in out
    assert not list(tmp_path.iterdir())  # nothing created


@pytest.mark.parametrize(("args", "env_vars", "expected"), [
    (("--flush-ms", "5"), {}, "error: flush_ms (--flush-ms): 5 must be between 10 and 250\n"),
    (("--max-feeds", "0"), {}, "error: max_feeds (--max-feeds): 0 must be between 1 and 32\n"),
    ((), {"QUANT_MAX_BACKLOG": "10"}, "error: max_backlog (QUANT_MAX_BACKLOG): 10 must be at least 10000\n"),
    (("--speed", "0"), {"QUANT_SPEED": "2"}, "error: speed (--speed): 0.0 must be > 0\n"),  # the flag, not the env var
])
def test_a_bad_value_exits_2_naming_the_setting_and_where_it_was_set(tmp_path, args, env_vars, expected):
    proc = recorder(*args, "--data-dir", str(tmp_path), env_vars=env_vars)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2 and out == expected
    assert not list(tmp_path.iterdir())  # nothing created


def test_renamed_flags_and_variables_still_work_with_one_warning_line_each(tmp_path):
    proc = recorder("--source", "simulated", "--history-hours", "0", "--duration", "0.5", "--data-dir", str(tmp_path),
                    "--flush-interval-ms", "50", env_vars={"QUANT_MAX_ENGINES": "2"})
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    lines = out.splitlines()
    assert lines.count("QUANT_MAX_ENGINES is deprecated: use QUANT_MAX_FEEDS (same meaning)") == 1, out
    assert lines.count("--flush-interval-ms is deprecated: use --flush-ms (same meaning)") == 1, out
    assert "Traceback" not in out and count(tmp_path / "simulated.sqlite3") > 0


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
        proc = recorder("--source", "binance", "--ws-url", fake.url, "--db", str(db), "--backfill-max-trades", "0",
                        "--history-hours", "0")
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


def corrupt_database(path: Path) -> Path:
    """A real recorder database whose pages after the first were overwritten."""
    proc = recorder("--source", "simulated", "--speed", "50", "--duration", "1", "--db", str(path))
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    size = path.stat().st_size
    assert size > 8192
    with path.open("r+b") as fh:
        fh.seek(4096)
        fh.write(b"\xa5" * (size - 4096))
    return path


def test_a_damaged_database_is_refused_with_exit_1_naming_it(tmp_path):
    """Was: exit 0 with stored=0 and one ERROR line per rejected row."""
    db = corrupt_database(tmp_path / "corrupt.sqlite3")
    proc = recorder("--source", "simulated", "--duration", "3", "--db", str(db))
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1, out
    assert f"error: cannot record: database '{db}' is damaged" in out
    assert "Traceback" not in out


@pytest.mark.parametrize(("make", "expected"), [
    (lambda d: d, "is a directory, not a database file"),
    (lambda d: d / "missing" / "x.db", "does not exist"),
    (lambda d: (d / "notes.txt", (d / "notes.txt").write_text("hello"))[0], "is not an SQLite database"),
])
def test_a_db_that_cannot_be_a_database_exits_2_naming_the_setting(tmp_path, make, expected):
    proc = recorder("--source", "simulated", "--duration", "3", "--db", str(make(tmp_path)))
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2, out
    assert out.startswith("error: db (--db, QUANT_DB): ") and expected in out and "Traceback" not in out
    assert not (tmp_path / "missing").exists()


def test_a_second_recorder_on_one_database_is_refused(tmp_path):
    """Was: two recorders with different seeds each stored about half their trades into one file."""
    db = tmp_path / "shared.db"
    first = recorder("--source", "simulated", "--speed", "5", "--db", str(db), "--status-interval", "0.5")
    try:
        eventually(lambda: count(db) > 0, timeout=30, message="the first recorder stored nothing")
        second = recorder("--source", "simulated", "--seed", "9", "--duration", "3", "--db", str(db))
        out, _ = second.communicate(timeout=60)
        assert second.returncode == 1, out
        assert f"error: cannot record: database '{db}' is already being written by pid {first.pid}" in out
        assert "SIMULATED market (seed 7)" in out
        first.send_signal(signal.SIGTERM)
        first_out, _ = first.communicate(timeout=30)
    finally:
        first.kill()
    assert first.returncode == 0, first_out
    final = [line for line in first_out.splitlines() if "final:" in line][-1]
    assert count(db) == int(final.split(" trades=")[1].split()[0])  # one market, all of it
