"""The pair scanner around analytics.scan_pairs: universe closes, filters, bars from a database, the command line."""

from __future__ import annotations

import io
import itertools
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.signal import lfilter
from statsmodels.stats.multitest import multipletests
from statsmodels.tools.sm_exceptions import CollinearityWarning
from statsmodels.tsa.stattools import coint

from analytics import align_bars, bars_to_frame, resample_ticks, scan_pairs
from cli.scan import main
from pairs.ranking import ScanFilter, run_scan, universe_closes
from pairs.stored import stored_bars, stored_end_ms
from records import Trade
from storage.csv_import import parse_ohlc_csv
from storage.sqlite.datasets import SqliteDatasetStore
from storage.sqlite.ticks import SqliteTickStore
from tests.shared_data import BTC_KLINES_ZIP, ETH_KLINES_ZIP, require
from ui.export import ranking

ROOT = Path(__file__).resolve().parents[1]
MINUTE = 60_000
START_MS = 1_765_000_000_000 // MINUTE * MINUTE


def bar_frame(starts_min: list[int], closes: list[float], interval_ms: int = MINUTE) -> pd.DataFrame:
    """Bars in the analytics layout at the given minute offsets from START_MS."""
    start_ms = np.array([START_MS + m * interval_ms for m in starts_min], dtype=np.int64)
    ticks = resample_ticks(start_ms, np.array(closes, dtype=float), np.ones(len(closes)), interval_ms)
    assert len(ticks) == len(closes)
    return ticks


def at(minute: int) -> pd.Timestamp:
    return pd.Timestamp(START_MS + minute * MINUTE, unit="ms", tz="UTC")


# ---------------------------------------------------------------------------- universe closes

def test_universe_closes_carry_forward_but_never_before_a_symbols_first_bar():
    by_symbol = {"A": bar_frame([0, 1, 2, 3, 4], [10, 11, 12, 13, 14]), "B": bar_frame([2, 4], [20, 22])}
    # At minute 4 + 30 s the bar of minute 4 is still forming: left out.
    closes = universe_closes(by_symbol, MINUTE, START_MS + 4 * MINUTE + 30_000, carry_to_end=True)
    assert list(closes.index) == [at(0), at(1), at(2), at(3)]
    assert closes["A"].tolist() == [10, 11, 12, 13]
    assert closes["B"].iloc[:2].isna().all()  # before B's first bar: nothing, not a back-filled price
    assert closes["B"].iloc[2:].tolist() == [20, 20]  # minute 3: B's last close carried forward


def test_universe_closes_of_symbols_that_start_together_equal_the_pages_alignment():
    rng = np.random.default_rng(3)
    minutes = {s: sorted(rng.choice(np.arange(1, 200), 150, replace=False).tolist()) for s in "ABC"}
    by_symbol = {s: bar_frame([0, *m], list(100 + rng.random(len(m) + 1))) for s, m in minutes.items()}
    closes = universe_closes(by_symbol, MINUTE, START_MS + 200 * MINUTE, carry_to_end=True)
    pd.testing.assert_frame_equal(closes, align_bars(by_symbol, MINUTE).closes, check_names=False,
                                  check_index_type=False)


def test_a_file_that_ends_earlier_is_not_carried_past_its_end():
    by_symbol = {"A": bar_frame([0, 1, 2], [10, 11, 12]), "B": bar_frame([0, 2, 4], [20, 21, 22])}
    closes = universe_closes(by_symbol, MINUTE, START_MS + 5 * MINUTE, carry_to_end=False)
    assert list(closes.index) == [at(0), at(1), at(2), at(4)]  # rows: bars where some symbol traded
    assert closes["A"].tolist()[:3] == [10, 11, 12] and np.isnan(closes["A"].iloc[3])
    assert closes["B"].tolist() == [20, 20, 21, 22]
    carried = universe_closes(by_symbol, MINUTE, START_MS + 5 * MINUTE, carry_to_end=True)
    assert carried["A"].tolist() == [10, 11, 12, 12]


def test_a_symbol_without_bars_is_an_empty_column():
    by_symbol = {"A": bar_frame([0, 1], [10, 11]), "B": bars_to_frame([])}
    closes = universe_closes(by_symbol, MINUTE, START_MS + 2 * MINUTE, carry_to_end=True)
    assert list(closes.columns) == ["A", "B"] and len(closes) == 2 and closes["B"].isna().all()


# ---------------------------------------------------------------------------- filters and ranking

def planted_universe(n: int = 600, k: int = 6, seed: int = 4) -> pd.DataFrame:
    """Random walks; S1 cointegrated with S0 (AR(1) spread, φ = 0.8) and S3 with S2 (φ = 0.9) when k allows."""
    rng = np.random.default_rng(seed)
    values = 1_000.0 + np.cumsum(rng.normal(size=(n, k)), axis=0)
    for y, x, phi in ((1, 0, 0.8), (3, 2, 0.9))[: k // 2]:
        values[:, y] = 20.0 + 0.8 * values[:, x] + lfilter([1.0], [1.0, -phi], rng.normal(size=n))
    index = pd.date_range(at(0), periods=n, freq="1min")
    return pd.DataFrame(values, index=index, columns=[f"S{i}" for i in range(k)])


def test_run_scan_keeps_the_table_and_the_bars_it_saw():
    closes = planted_universe()
    result = run_scan(closes, MINUTE, trend="ct", window=30)
    pd.testing.assert_frame_equal(result.table, scan_pairs(closes, trend="ct", window=30))
    assert (result.n_bars, result.first_bar, result.last_bar) == (600, closes.index[0], closes.index[-1])
    assert result.symbols == tuple(closes.columns) and len(result.tested) == 15
    assert result.significant() == int((result.table["q_value"] < 0.05).sum()) >= 2


def test_filters_keep_exactly_the_rows_inside_every_bound():
    table = ranking(scan_pairs(planted_universe()), MINUTE)
    assert len(ScanFilter().apply(table)) == 15  # defaults: every tested pair
    half_lives = table["half_life"][np.isfinite(table["half_life"])]
    bounds = ScanFilter(max_q=0.5, min_half_life=float(half_lives.min()) + 0.01,
                        max_half_life=float(half_lives.median()), min_corr=-0.05)
    kept = bounds.apply(table)
    expected = [rank for rank, row in table.iterrows()
                if row["q_value"] <= 0.5 and bounds.min_half_life <= row["half_life"] <= bounds.max_half_life
                and row["corr"] >= -0.05]
    assert list(kept.index) == expected and 0 < len(kept) < 15


def test_untested_pairs_never_pass_a_filter():
    closes = planted_universe()
    closes.iloc[:580, 5] = np.nan  # S5 listed 20 bars before the end: its pairs are not tested
    table = ranking(scan_pairs(closes), MINUTE)
    assert (table["status"] == "insufficient_data").sum() == 5
    assert "S5" not in set(ScanFilter().apply(table)[["y", "x"]].to_numpy().ravel())


def test_ranking_numbers_rows_from_one_and_gives_the_half_life_in_time():
    table = ranking(scan_pairs(planted_universe()), 300_000)
    assert list(table.index) == list(range(1, 16)) and table.index.name == "rank"
    top = table.iloc[0]
    assert {top["y"], top["x"]} == {"S0", "S1"}
    minutes = top["half_life"] * 5
    assert top["half_life_time"] == (f"{minutes * 60:.0f} s" if minutes < 1.5 else f"{minutes:.0f} min")


# ---------------------------------------------------------------------------- bars from a database

def write_universe(db: Path, closes: pd.DataFrame, *, every_s: int = 20, seed: int = 5) -> None:
    """Ticks every ``every_s`` seconds (jittered) around each minute's close, the last one at the close."""
    rng = np.random.default_rng(seed)
    trades = []
    for symbol in closes.columns:
        for row, (start, close) in enumerate(closes[symbol].items()):
            base = int(start.value // 1_000_000)
            offsets = sorted(rng.choice(np.arange(1, 60_000, 1_000), 60 // every_s - 1, replace=False).tolist())
            prices = [close * (1 + 1e-4 * rng.normal()) for _ in offsets] + [close]
            for i, (offset, price) in enumerate(zip([*offsets, 59_999], prices, strict=True)):
                trades.append(Trade(symbol, row * 100 + i, base + offset, base + offset, round(price, 6), 0.5, False))
    with SqliteTickStore(db) as store:
        store.write_batch(trades)


def test_stored_end_and_bars_read_only_the_database(tmp_path):
    closes = planted_universe(n=120, k=3)
    db = tmp_path / "ticks.sqlite3"
    write_universe(db, closes)
    with SqliteTickStore(db) as store:
        end = stored_end_ms(store, list(closes.columns), MINUTE, now_ms=START_MS + 10 * 86_400_000)
        assert end == START_MS + 119 * MINUTE + 59_999 + 1  # just after the last tick
        assert stored_end_ms(store, ["NOPE"], MINUTE, START_MS) is None
        by_symbol = stored_bars(store, list(closes.columns), MINUTE, START_MS, end)
    for symbol in closes.columns:
        assert np.allclose(by_symbol[symbol]["close"], closes[symbol].round(6))
        assert (by_symbol[symbol]["trades"] == 3).all()


# ---------------------------------------------------------------------------- command line

def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUANT_")}
    return subprocess.run([sys.executable, "-m", "cli.scan", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)


def test_cli_ranks_a_database_like_statsmodels_on_its_minute_closes(tmp_path, capsysbinary, monkeypatch):
    for key in [k for k in os.environ if k.startswith("QUANT_")]:
        monkeypatch.delenv(key)
    closes = planted_universe(n=300, k=5, seed=8)
    db = tmp_path / "universe.sqlite3"
    write_universe(db, closes)
    before = db.stat().st_mtime_ns, db.stat().st_size

    # The end defaults to the last stored tick (long before "now"); 300 one-minute bars fit in 5 h.
    assert main(["--db", str(db), "--source", "simulated", "--lookback-hours", "5", "--csv"]) == 0
    out = capsysbinary.readouterr().out.decode()
    table = pd.read_csv(io.StringIO(out), index_col="rank")
    assert len(table) == 10
    assert {frozenset(p) for p in zip(table["y"], table["x"], strict=True)} == {
        frozenset(p) for p in itertools.combinations(closes.columns, 2)}
    assert {table["y"].iloc[0], table["x"].iloc[0]} in ({"S0", "S1"}, {"S2", "S3"})
    # The data ends just after the last minute's last tick (at :59.999), so that bar is closed too:
    # 300 bars. Each row is statsmodels' coint on those minute closes.
    assert (table["n_bars"] == 300).all()
    expected = closes.round(6)
    for _, row in table.iterrows():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CollinearityWarning)
            reference = coint(expected[row["y"]], expected[row["x"]])
        assert row["eg_stat"] == pytest.approx(reference[0], rel=1e-8)
        assert row["eg_pvalue"] == pytest.approx(reference[1], rel=1e-8, abs=1e-300)
        # The tested ordering is the label order; the other ordering is reported, not used.
        assert row["y"] < row["x"]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CollinearityWarning)
            reverse = coint(expected[row["x"]], expected[row["y"]])
        assert row["eg_pvalue_reverse"] == pytest.approx(reverse[1], rel=1e-8, abs=1e-300)
    assert np.allclose(table["q_value"], multipletests(table["eg_pvalue"], method="fdr_bh")[1])
    assert (db.stat().st_mtime_ns, db.stat().st_size) == before  # read only


def test_cli_scans_a_recorded_simulated_database(tmp_path):
    db = tmp_path / "sim.sqlite3"
    symbols = "BTCUSDT,ETHUSDT,SOLUSDT,BNBUSDT"
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUANT_")}
    record = subprocess.run([sys.executable, "-m", "cli.record", "--source", "simulated", "--symbols", symbols,
                             "--speed", "50", "--duration", "4", "--db", str(db), "--status-interval", "60"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert record.returncode == 0, record.stdout + record.stderr
    with SqliteTickStore(db) as store:
        ticks = store.tick_count()
    assert ticks > 500

    done = run_cli("--source", "simulated", "--db", str(db), "--timeframe", "1m", "--top", "3")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    # The simulated market stores a day of its own past at start, then its ticks run ahead of the
    # wall clock (speed 50): the lookback ends at the last stored tick, not at "now".
    assert lines[0].startswith(f"simulated database {db}: 4 symbols, 6 pairs on 1 min bars")
    assert "(1,44" in lines[0] or "(1,43" in lines[0]  # ~1,440 closed one-minute bars
    assert lines[1].startswith("6 pairs tested")
    assert lines[2].startswith("q-value:")
    rows = [line.split() for line in lines[5:8]]
    assert [row[0] for row in rows] == ["1", "2", "3"]
    assert all({row[1], row[2]} <= set(symbols.split(",")) for row in rows)
    assert lines[8] == "… 3 more (--top 0 for all, --csv for a file)"
    with SqliteTickStore(db) as store:
        assert store.tick_count() == ticks


def add_dataset(data_dir: Path, name: str, frame: pd.DataFrame, symbol: str) -> None:
    digest = f"{abs(hash((name, len(frame)))):064x}"[-64:]
    with SqliteDatasetStore(data_dir / "uploads.sqlite3") as store:
        store.add(frame, name=name, symbol=symbol, filename=f"{name}.csv", content_hash=digest, uploaded_ms=0)


def kline_dataset(path: Path) -> pd.DataFrame:
    return parse_ohlc_csv(require(path).read_bytes(), path.name)


def test_cli_datasets_of_different_days_are_refused_naming_both(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("QUANT_DATA_DIR", raising=False)
    add_dataset(tmp_path, "eth-day", kline_dataset(ETH_KLINES_ZIP), "ETHUSDT")
    add_dataset(tmp_path, "btc-day", kline_dataset(BTC_KLINES_ZIP), "BTCUSDT")
    assert main(["--data-dir", str(tmp_path), "--datasets", "eth-day,btc-day"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: datasets: no two of these datasets overlap in time")
    assert "eth-day: 2022-08-14 00:00 UTC → 2022-08-14 23:59 UTC" in err
    assert "btc-day: 2022-09-05 00:00 UTC → 2022-09-05 23:59 UTC" in err


def test_cli_datasets_scan_what_overlaps_and_name_what_does_not(tmp_path, capsysbinary, monkeypatch):
    monkeypatch.delenv("QUANT_DATA_DIR", raising=False)
    eth = kline_dataset(ETH_KLINES_ZIP)
    partner = eth.copy()
    partner_close = eth["close"] * 0.5 + np.random.default_rng(6).normal(0, 0.5, len(eth))
    for column in ("open", "high", "low", "close"):
        partner[column] = partner_close
    add_dataset(tmp_path, "eth-day", eth, "ETHUSDT")
    add_dataset(tmp_path, "btc-day", kline_dataset(BTC_KLINES_ZIP), "BTCUSDT")
    add_dataset(tmp_path, "=HYPERLINK(1)", partner, "ETHHALF")  # a name a spreadsheet would run

    assert main(["--data-dir", str(tmp_path), "--datasets", "eth-day,btc-day,=HYPERLINK(1)", "--csv"]) == 0
    captured = capsysbinary.readouterr()
    err = captured.err.decode()
    assert err.count("do not overlap in time") == 2 and "'eth-day' and 'btc-day' do not overlap" in err
    table = pd.read_csv(io.StringIO(captured.out.decode()), index_col="rank")
    assert table.loc[1, "status"] == "ok" and {table.loc[1, "y"], table.loc[1, "x"]} == {"eth-day", "'=HYPERLINK(1)"}
    assert table.loc[1, "n_bars"] == 1_440 and table.loc[1, "q_value"] < 1e-6
    assert (table.loc[2:, "status"] == "insufficient_data").all() and (table.loc[2:, "n_bars"] == 0).all()


def test_the_scanner_is_run_from_the_cli_package():
    """``python -m cli.scan``: its usage names that command, and a bad argument exits 2 as in-process."""
    done = run_cli("--help")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: python -m cli.scan ")
    bad = run_cli("--source", "simulated", "--window", "5")
    assert (bad.returncode, bad.stderr) == (2, "error: window: 5 must be between 10 and 200 bars\n")


SIM = ["--source", "simulated"]


@pytest.mark.parametrize(("args", "message"), [
    ([*SIM, "--timeframe", "2m"], "error: timeframe: '2m' is not one of 1s, 1m, 5m"),
    ([*SIM, "--window", "5"], "error: window: 5 must be between 10 and 200 bars"),
    ([*SIM, "--trend", "quadratic"], "error: trend: 'quadratic' is not one of c, ct, ctt, n"),
    ([*SIM, "--symbols", "BTCUSDT,ETH;DROP"], "error: invalid symbol 'ETH;DROP'"),
    ([*SIM, "--symbols", "BTCUSDT,btcusdt"], "error: symbols: a scan needs at least two symbols, got BTCUSDT"),
    (["--source", "nasdaq"], "error: source: 'nasdaq' is not one of binance, binance-futures, simulated, replay"),
    (["--source", "replay"], "error: replay_file: required when source is 'replay'"),
    ([*SIM, "--lookback-hours", "-1"], "error: lookback-hours: -1 must be a number of hours > 0"),
    ([*SIM, "--lookback-hours", "48", "--timeframe", "1s"], "error: lookback-hours: 48 h of 1 s bars is 172,800 bars"),
    ([*SIM, "--end", "yesterday-ish"], "error: end: 'yesterday-ish' is not an ISO-8601 time"),
    ([*SIM, "--top", "-3"], "error: top: -3 must be >= 0"),
    (["--datasets", "a,b", "--symbols", "BTCUSDT"], "error: datasets: uploaded datasets are named by --datasets; "
                                                    "--symbols do not apply"),
    (["--datasets", "a"], "error: datasets: name at least two uploaded datasets"),
    (["--datasets", "a,b"], "error: datasets: nothing has been uploaded in data_dir"),
])
def test_bad_arguments_exit_2_naming_the_setting_and_change_nothing(tmp_path, capsys, monkeypatch, args, message):
    for key in [k for k in os.environ if k.startswith("QUANT_")]:
        monkeypatch.delenv(key)
    (tmp_path / "simulated.sqlite3").write_bytes(b"")  # never opened: the arguments fail first
    assert main(["--data-dir", str(tmp_path), *args]) == 2
    assert capsys.readouterr().err.startswith(message)
    assert [(p.name, p.stat().st_size) for p in tmp_path.iterdir()] == [("simulated.sqlite3", 0)]


def test_a_missing_database_or_dataset_is_named(tmp_path, capsys, monkeypatch):
    for key in [k for k in os.environ if k.startswith("QUANT_")]:
        monkeypatch.delenv(key)
    assert main(["--data-dir", str(tmp_path), "--source", "simulated"]) == 2
    assert capsys.readouterr().err.startswith(f"error: source: no simulated database in data_dir '{tmp_path}'")
    assert main(["--db", str(tmp_path / "nope.sqlite3"), "--source", "simulated"]) == 2
    assert capsys.readouterr().err.startswith(f"error: db (--db, QUANT_DB): no database at '{tmp_path}/nope.sqlite3'")
    add_dataset(tmp_path, "eth-day", kline_dataset(ETH_KLINES_ZIP), "ETHUSDT")
    assert main(["--data-dir", str(tmp_path), "--datasets", "eth-day,eth-dya"]) == 2
    assert capsys.readouterr().err == "error: datasets: no uploaded dataset named 'eth-dya'; stored: 'eth-day'\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["uploads.sqlite3"]  # no database was created


def test_a_lookback_without_bars_names_end_and_lookback(tmp_path, capsys, monkeypatch):
    for key in [k for k in os.environ if k.startswith("QUANT_")]:
        monkeypatch.delenv(key)
    db = tmp_path / "universe.sqlite3"
    write_universe(db, planted_universe(n=30, k=2))
    assert main(["--db", str(db), "--source", "simulated", "--end", "2020-01-01T00:00Z"]) == 2
    assert capsys.readouterr().err == ("error: end: no closed 1m bars of S0, S1 in the 24 h before 2020-01-01 00:00 "
                                       "UTC (--end, --lookback-hours)\n")


def test_a_file_that_is_not_a_database_is_a_bad_db_setting(tmp_path, capsys, monkeypatch):
    for key in [k for k in os.environ if k.startswith("QUANT_")]:
        monkeypatch.delenv(key)
    text = tmp_path / "notes.txt"
    text.write_text("not a database\n" * 20)
    assert main(["--db", str(text), "--source", "simulated"]) == 2
    assert capsys.readouterr().err == f"error: db (--db, QUANT_DB): '{text}' is not an SQLite database (it has no " \
                                      "SQLite header)\n"
    assert text.read_text() == "not a database\n" * 20


def test_refreshes_of_a_kept_scan_rank_it_once_and_show_the_same_rows(monkeypatch):
    """Was: every refresh of the Scanner tab ranked the kept scan's whole table again (19,900 pairs
    at 200 symbols: ~30 ms a run) to show the same rows. Now a scan is ranked once; refreshes and
    filters use that ranking, and a new scan is ranked anew."""
    from streamlit.testing.v1 import AppTest

    import ui.scanner

    calls = []
    real = ui.scanner.ranking
    monkeypatch.setattr(ui.scanner, "ranking", lambda table, interval_ms: calls.append(1) or real(table, interval_ms))

    def page() -> None:
        import numpy as np
        import pandas as pd

        from domain import Regression
        from pairs.bars import dataset_pair_bars
        from ui.controls import Controls
        from ui.scanner import render_scanner_tab

        symbols = ("AAAUSDT", "BBBUSDT", "CCCUSDT", "DDDUSDT")
        rng = np.random.default_rng(5)
        common = np.cumsum(rng.normal(0, 1e-3, 300))
        index = pd.date_range("2025-01-01", periods=300, freq="1min", tz="UTC")
        frames = {}
        for j, symbol in enumerate(symbols):
            close = 100 * np.exp(common + (j % 2) * np.cumsum(rng.normal(0, 5e-4, 300)) + rng.normal(0, 2e-4, 300))
            frames[symbol] = pd.DataFrame({"open": close, "high": close, "low": close, "close": close, "volume": 1.0},
                                          index=index)
        controls = Controls("uploaded", None, symbols, symbols[0], symbols[1], "1m", "24 h", 20,
                            Regression.ROLLING_OLS, False, 2.0, "normalised", False, "UTC")
        render_scanner_tab(dataset_pair_bars(frames, 60_000), controls)

    def table(at: AppTest) -> pd.DataFrame:
        (frame,) = [d.value for d in at.dataframe if d.key == "scan_table"]
        return frame

    at = AppTest.from_function(page, default_timeout=60).run()
    at.button(key="scan_run").click().run()
    at.number_input(key="scan_max_q").set_value(1.0).run()
    first = table(at)
    for _ in range(3):
        at.run()
    assert not at.exception, at.exception
    assert len(calls) == 1
    (result,) = at.session_state["scan_results"].values()
    pd.testing.assert_frame_equal(table(at), first)
    expected = ScanFilter(1.0).apply(ranking(result.table, result.interval_ms))
    pd.testing.assert_frame_equal(first, expected[first.columns])
    at.number_input(key="scan_max_q").set_value(0.05).run()  # A and C share one random walk: cointegrated
    assert 1 <= len(table(at)) < len(first) and len(calls) == 1  # a filter re-cuts the kept ranking
    assert list(table(at).index) == list(first.index[first["q_value"] <= 0.05])
    at.button(key="scan_run").click().run()  # a new scan: ranked anew, the old ranking dropped
    assert len(calls) == 2 and len(at.session_state["scan_ranked"]) == 1
