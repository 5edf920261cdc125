"""Stored research runs as the dashboard lists and opens them (research.runs), and where "Send to the live
page" puts a pair (ui.research_runs.live_page_updates): only run folders of the results folder, by name;
a damaged, half-written or hostile entry is listed with its reason, never raised."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

from config import from_env
from domain import Market
from research.runs import MAX_RUNS, RunError, list_runs, open_run
from testkit.research import stored_scan, stored_walk
from ui.controls import Controls
from ui.research_runs import live_page_updates, run_label, with_pair

SYMBOLS = ["AAAUSDT", "BBBUSDT", "CCCUSDT", "DDDUSDT"]


@pytest.fixture
def results(tmp_path: Path) -> Path:
    return tmp_path / "scans"


def problems(folder: Path) -> dict[str, str | None]:
    runs, _ = list_runs(folder)
    return {run.name: run.problem for run in runs}


def test_runs_are_listed_newest_first_with_market_span_symbols_and_significant_count(results):
    walk = stored_walk(results, Market.SPOT, SYMBOLS[:3], planted=[("AAAUSDT", "BBBUSDT")])  # stored 2024-03-01
    scan = stored_scan(results, Market.USDM, SYMBOLS, planted=[("AAAUSDT", "BBBUSDT")])  # stored now
    (results / "notes.txt").write_text("not a run")
    (results / "scan-latest").mkdir()  # not a run's name: not listed
    runs, omitted = list_runs(results)
    assert [run.name for run in runs] == [scan.name, walk.name] and omitted == 0
    first, second = runs
    parameters = json.loads((scan / "scan.json").read_text())
    assert (first.kind, first.market, first.timeframe.name if first.timeframe else None) == ("scan", Market.USDM, "1m")
    assert first.symbols == tuple(SYMBOLS) and first.significant == parameters["significant_q05"]
    assert first.start == pd.Timestamp("2024-01-01", tz="UTC") and first.end == first.start + pd.Timedelta(minutes=400)
    summary = pd.read_parquet(walk / "summary.parquet")
    assert (second.kind, second.market, second.significant) == ("walk", Market.SPOT, int(summary["found"].sum()))
    assert first.problem is None and second.problem is None


def test_opened_runs_hold_the_ranking_or_the_walk_forward_rows_and_summary(results):
    scan = stored_scan(results, Market.SPOT, SYMBOLS)
    walk = stored_walk(results, Market.SPOT, SYMBOLS[:3])
    opened = open_run(results, scan.name)
    assert len(opened.table) == 6 and opened.table["q_value"].is_monotonic_increasing and opened.summary is None
    study = open_run(results, walk.name)
    assert study.summary is not None and len(study.summary) == 4 and set(study.table["window"]) == {0, 1, 2, 3}
    assert str(study.summary["trading_start"].dt.tz) == "UTC"


def test_a_missing_folder_has_no_runs_and_a_file_in_its_place_is_named(tmp_path):
    assert list_runs(tmp_path / "nowhere") == ([], 0)
    (tmp_path / "file").write_text("x")
    with pytest.raises(RunError, match=r"cannot list the results folder .*file"):
        list_runs(tmp_path / "file")


def test_damaged_and_half_written_runs_are_listed_with_their_reason(results):
    good = stored_scan(results, Market.SPOT, SYMBOLS)
    stamp = 20240101000000

    def copy(suffix: str) -> Path:
        nonlocal stamp
        stamp += 1
        text = str(stamp)
        target = results / f"scan-{text[:8]}T{text[8:]}Z-{suffix}"
        shutil.copytree(good, target)
        return target

    (copy("0000000a") / "pairs.parquet").unlink()
    (copy("0000000b") / "pairs.parquet").write_bytes(b"PAR1 not really")
    (copy("0000000c") / "scan.json").write_text("{not json")
    (copy("0000000d") / "scan.json").write_text("[1, 2]")
    bad_market = copy("0000000e")
    (bad_market / "scan.json").write_text(json.dumps({**json.loads((good / "scan.json").read_text()),
                                                      "market": "mars"}))
    wrong_kind = copy("00000012")
    (wrong_kind / "scan.json").write_text(json.dumps({**json.loads((good / "scan.json").read_text()),
                                                      "kind": "walk"}))
    bad_symbols = copy("0000000f")
    (bad_symbols / "scan.json").write_text(json.dumps({**json.loads((good / "scan.json").read_text()),
                                                       "symbols": ["../../etc", "BTCUSDT"]}))
    fifo = copy("00000010")
    (fifo / "pairs.parquet").unlink()
    os.mkfifo(fifo / "pairs.parquet")  # reading it would block the page for ever
    shutil.copytree(good, results / ".scan-20240102000000Z-00000011.tmp".replace("20240102000000Z",
                                                                                  "20240102T000000Z"))
    found = problems(results)
    assert found[good.name] is None
    assert "pairs.parquet is missing" in found["scan-20240101T000001Z-0000000a"]
    assert "scan.json is not readable JSON" in found["scan-20240101T000003Z-0000000c"]
    assert "scan.json holds list" in found["scan-20240101T000004Z-0000000d"]
    assert "market 'mars' is not spot or um" in found["scan-20240101T000005Z-0000000e"]
    assert "symbols must be a list of exchange symbols" in found["scan-20240101T000007Z-0000000f"]
    assert "says it is a 'walk' run, not a scan" in found["scan-20240101T000006Z-00000012"]
    assert "pairs.parquet is not a regular file" in found["scan-20240101T000008Z-00000010"]
    assert "half-written by an interrupted save" in found["scan-20240102T000000Z-00000011"]
    # Its parameters read fine; the table itself is damaged: named when it is opened, never a traceback.
    assert found["scan-20240101T000002Z-0000000b"] is None
    with pytest.raises(RunError, match=r"scan-20240101T000002Z-0000000b: .*pairs.parquet"):
        open_run(results, "scan-20240101T000002Z-0000000b")
    with pytest.raises(RunError, match=r"pairs.parquet is missing"):
        open_run(results, "scan-20240101T000001Z-0000000a")


def test_a_walk_forward_run_counts_the_found_pairs_its_parameters_give(results):
    walk = stored_walk(results, Market.SPOT, SYMBOLS[:3])
    parameters = json.loads((walk / "walk.json").read_text())
    (walk / "walk.json").write_text(json.dumps({**parameters, "found": 17}))  # as research.results.save_walk stores
    (run,), _ = list_runs(results)
    assert run.significant == 17 and run.problem is None


def test_a_walk_forward_run_lacking_a_file_or_a_column_is_named(results):
    walk = stored_walk(results, Market.SPOT, SYMBOLS[:3])
    (walk / "summary.parquet").unlink()
    assert "summary.parquet is missing" in problems(results)[walk.name]
    other = stored_walk(results, Market.SPOT, SYMBOLS[:3], name="walk-20240302T000000Z-0123abce")
    pd.read_parquet(other / "rows.parquet").drop(columns=["q_value"]).to_parquet(other / "rows.parquet")
    with pytest.raises(RunError, match=r"rows.parquet lacks the column.s. q_value"):
        open_run(results, other.name)


def test_a_table_holding_text_where_numbers_belong_is_named(results):
    scan = stored_scan(results, Market.SPOT, SYMBOLS)
    table = pd.read_parquet(scan / "pairs.parquet")
    table["half_life"] = "soon"
    table.to_parquet(scan / "pairs.parquet", index=False)
    with pytest.raises(RunError, match=r"pairs.parquet: the column.s. half_life hold no numbers"):
        open_run(results, scan.name)


@pytest.mark.parametrize("name", ["../scans", "/etc", "scan-20240101T000000Z-0000000a/../../x", "", ".",
                                  "scan-20240101T000000Z-0000000A", "SCAN-20240101T000000Z-0000000a"])
def test_only_run_names_are_opened(results, name):
    stored_scan(results, Market.SPOT, SYMBOLS)
    with pytest.raises(RunError, match="is not the name of a stored run"):
        open_run(results, name)


def test_a_run_name_with_a_time_that_does_not_exist_is_no_run(results):
    good = stored_scan(results, Market.SPOT, SYMBOLS)
    for name in ("scan-20241301T000000Z-0000000a", "scan-20240101T000099Z-0000000b",
                 ".walk-20241301T000000Z-0000000c.tmp"):
        shutil.copytree(good, results / name)
    assert problems(results) == {good.name: None}
    with pytest.raises(RunError, match="is not the name of a stored run"):
        open_run(results, "scan-20241301T000000Z-0000000a")


def test_a_link_in_the_results_folder_is_not_followed(results, tmp_path):
    outside = stored_scan(tmp_path / "elsewhere", Market.SPOT, SYMBOLS)
    results.mkdir()
    (results / outside.name).symlink_to(outside, target_is_directory=True)
    linked_file = stored_scan(results, Market.SPOT, SYMBOLS)
    (linked_file / "pairs.parquet").unlink()
    (linked_file / "pairs.parquet").symlink_to(outside / "pairs.parquet")
    found = problems(results)
    assert "a link, not a run folder" in found[outside.name]
    assert "pairs.parquet is not a regular file" in found[linked_file.name]
    with pytest.raises(RunError, match="a link"):
        open_run(results, outside.name)


def test_only_the_newest_runs_are_read_and_the_others_counted(results, monkeypatch):
    monkeypatch.setattr("research.runs.MAX_RUNS", 2)
    for i in range(3):
        (results / f"scan-2024010{i + 1}T000000Z-0000000{i}").mkdir(parents=True)
    runs, omitted = list_runs(results)
    assert [run.name[:13] for run in runs] == ["scan-20240103", "scan-20240102"] and omitted == 1
    assert MAX_RUNS >= 100


def test_the_results_folder_is_a_setting_defaulting_under_the_data_folder(tmp_path):
    assert from_env({"QUANT_DATA_DIR": str(tmp_path)}).storage.results_folder == tmp_path / "research" / "scans"
    assert from_env({"QUANT_RESULTS_DIR": str(tmp_path / "r")}).storage.results_folder == tmp_path / "r"


def controls(source: str, symbols: tuple[str, ...]) -> Controls:
    from domain import Regression
    return Controls(source, None, symbols, symbols[1], symbols[0], "1m", "1 h", 60, Regression.ROLLING_OLS, False, 2.0,
                    "normalised", True, "UTC")


def test_a_perpetual_pair_sent_from_the_spot_page_switches_to_the_futures_page_with_leg_names():
    state = {"universe_watched_binance-futures": ["BTCUSDT.P", "SOLUSDT.P"]}
    updates = live_page_updates(state.get, controls("binance", ("BTCUSDT", "ETHUSDT")), Market.USDM, "AAAUSDT",
                                "BBBUSDT")
    assert updates == {"source": "binance-futures",
                       "universe_watched_binance-futures": ["BTCUSDT.P", "SOLUSDT.P", "AAAUSDT.P", "BBBUSDT.P"],
                       "symbols": "BTCUSDT.P,SOLUSDT.P,AAAUSDT.P,BBBUSDT.P", "pair_y": "AAAUSDT.P",
                       "pair_x": "BBBUSDT.P"}
    # A venue never opened in this session starts from the page's coins on that venue.
    fresh = live_page_updates({}.get, controls("simulated", ("BTCUSDT", "ETHUSDT")), Market.USDM, "ETHUSDT",
                              "BTCUSDT")
    assert fresh["universe_watched_binance-futures"] == ["ETHUSDT.P", "BTCUSDT.P"]  # the pair, Y then X
    assert (fresh["pair_y"], fresh["pair_x"]) == ("ETHUSDT.P", "BTCUSDT.P")


def test_a_pair_sent_from_uploaded_datasets_leaves_their_names_behind():
    updates = live_page_updates({}.get, controls("uploaded", ("eth-day", "=HYPERLINK(1)", "BTCUSDT")), Market.SPOT,
                                "AAAUSDT", "BBBUSDT")
    assert updates["source"] == "binance" and updates["universe_watched_binance"] == ["BTCUSDT", "AAAUSDT", "BBBUSDT"]
    assert updates["symbols"] == "BTCUSDT,AAAUSDT,BBBUSDT"


def test_a_spot_pair_sent_from_its_own_venue_is_added_to_the_watched_legs():
    updates = live_page_updates({}.get, controls("binance", ("BTCUSDT", "ETHUSDT", "AAAUSDT")), Market.SPOT,
                                "AAAUSDT", "BBBUSDT")
    assert updates["source"] == "binance"
    assert updates["universe_watched_binance"] == ["BTCUSDT", "ETHUSDT", "AAAUSDT", "BBBUSDT"]


def test_a_full_watch_list_makes_room_for_the_pair():
    assert with_pair(["A1", "B1", "C1", "D1"], ("D1", "E1"), limit=3) == ["A1", "D1", "E1"]
    assert with_pair([], ("A1", "B1"), limit=2) == ["A1", "B1"]


@pytest.mark.parametrize(("change", "problem"), [
    ({"start_utc": "", "start_ms": None}, r"start_ms None / start_utc '' is not a time"),
    ({"start_utc": "NaT", "start_ms": None}, r"start_ms None / start_utc 'NaT' is not a time"),
    ({"end_utc": "nat", "end_ms": None}, r"end_ms None / end_utc 'nat' is not a time"),
    ({"start_ms": 1_706_745_600_000, "end_ms": 1_704_067_200_000}, r"span 2024-02-01 00:00 → 2024-01-01 00:00 "
                                                                   r"is empty or reversed"),
    ({"significant_q05": -5}, r"significant_q05 -5 is not a count"),
])
def test_a_crafted_span_or_count_is_named_and_every_run_still_gets_a_label(results, change, problem):
    # A NaT bound once passed as a time and made the picker's label raise: the whole tab lost its listing.
    good = stored_scan(results, Market.SPOT, SYMBOLS)
    crafted = results / "scan-20240101T000000Z-0000000a"
    shutil.copytree(good, crafted)
    parameters = {**json.loads((good / "scan.json").read_text()), **change}
    (crafted / "scan.json").write_text(json.dumps({k: v for k, v in parameters.items() if v is not None}))
    runs, _ = list_runs(results)
    assert [run_label(run, "Europe/Paris") for run in runs]  # none raises
    found = {run.name: run.problem for run in runs}
    assert found[good.name] is None
    assert re.search(problem, found[crafted.name] or ""), found[crafted.name]
