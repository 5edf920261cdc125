"""Walk-forward on the distributed runner (research/walkrun.py, research/results.py, ``python -m cli.research
walk``): equal to the single-process walk_forward exactly, progress and cancel as the scan, stored whole with
its parameters, bad requests named."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from distributed import Client

import cli.research
from domain import Market, Timeframe
from research.cluster import open_client
from research.request import top_by_quote_volume
from research.results import WALK_FILES, load_walk, save_walk
from research.scan import Block, ScanCancelled, ScanSpec, load_scan, read_closes, run_blocks
from research.walkforward import WalkForwardSettings, add_q_values
from research.walkrun import walk_distributed, walk_forward_kernel, walk_in_process, windows_of
from storage.errors import StorageError
from storage.research import ResearchStore
from testkit.archives import ArchiveServer, write_archive_tree, write_checksum, wrong_checksum
from testkit.research import universe_closes, write_universe
from testkit.waiting import eventually

MINUTE = Timeframe.of("1m")
JAN = 1_704_067_200_000  # 2024-01-01T00:00Z
START = JAN - 1_000 * 60_000  # 2023-12-31T07:20Z: the span crosses a month boundary
BARS = 2_400
SYMBOLS = tuple(f"S{i:02d}USDT" for i in range(7))
SETTINGS = WalkForwardSettings.of("1m", "600min", "200min", cost_bps=2.0)  # 9 windows over the span


@pytest.fixture(scope="module")
def store_root(tmp_path_factory: pytest.TempPathFactory) -> str:
    """7 symbols x 2,400 bars: one planted pair, one symbol listed late."""
    root = str(tmp_path_factory.mktemp("walk-store"))
    closes = universe_closes(SYMBOLS, BARS, seed=11, planted=[("S03USDT", "S00USDT")])
    write_universe(ResearchStore(root), Market.SPOT, MINUTE, SYMBOLS, START, closes, first_bar={"S05USDT": 700})
    return root


@pytest.fixture(scope="module")
def client() -> Iterator[Client]:
    with open_client(workers=2) as c:
        yield c


def spec_of(root: str, **changes: Any) -> ScanSpec:
    values: dict[str, Any] = {"store": root, "market": Market.SPOT, "timeframe": MINUTE, "symbols": SYMBOLS,
                              "start_ms": START, "end_ms": START + BARS * MINUTE.ms, "block_size": 2}
    return ScanSpec(**{**values, **changes})


def test_the_distributed_walk_forward_equals_the_single_process_one_exactly(client, store_root):
    reference = walk_in_process(spec_of(store_root), SETTINGS)
    reports: list[tuple[int, int]] = []
    outcome = walk_distributed(client, spec_of(store_root), SETTINGS,
                               progress=lambda done, total: reports.append((done, total)))
    assert len(outcome.windows) == 9 and len(outcome.rows) == 9 * 21
    pd.testing.assert_frame_equal(outcome.rows, reference.rows, check_exact=True)
    pd.testing.assert_frame_equal(outcome.summary, reference.summary, check_exact=True)
    # Another cut into blocks, symbols given unsorted: the same rows.
    shuffled = spec_of(store_root, block_size=3, symbols=tuple(reversed(SYMBOLS)))
    pd.testing.assert_frame_equal(walk_distributed(client, shuffled, SETTINGS).rows, reference.rows,
                                  check_exact=True)
    done = [d for d, _ in reports]
    assert done[0] == 0 and done == sorted(done) and done[-1] == 21 and {t for _, t in reports} == {21}
    planted = outcome.rows[(outcome.rows["y"] == "S00USDT") & (outcome.rows["x"] == "S03USDT")]
    # Found in every window; 200 trading bars of an AR(0.9) spread reject a unit root most of the time.
    assert (planted["q_value"] < 0.05).all() and planted["stays"].sum() >= 5


def test_a_walk_on_the_um_store_says_every_pnl_leaves_funding_out(client, tmp_path):
    """The um store names perpetuals by their exchange symbol (AUSDT, not AUSDT.P): every leg of a um
    walk is a perpetual whose funding the store does not hold, so no row may show a funding of 0."""
    root = str(tmp_path / "store")
    symbols = ("AUSDT", "BUSDT", "CUSDT")
    write_universe(ResearchStore(root), Market.USDM, MINUTE, symbols, START, universe_closes(symbols, BARS, seed=2))
    spec = spec_of(root, market=Market.USDM, symbols=symbols)
    reference = walk_in_process(spec, SETTINGS)
    traded = reference.rows[reference.rows["oos_status"] == "ok"]
    assert len(traded) > 0 and traded["oos_pnl"].notna().all()
    assert traded["oos_funding"].isna().all()
    pair = traded.iloc[0]
    assert pair["oos_note"].startswith(f"funding of {pair['y']}.P and {pair['x']}.P not included")
    assert traded["oos_note"].str.contains("not included (no funding history given)", regex=False).all()
    # The cluster's blocks say the same, bit for bit.
    pd.testing.assert_frame_equal(walk_distributed(client, spec, SETTINGS).rows, reference.rows, check_exact=True)


def test_a_month_missing_in_the_middle_is_named_in_the_windows_it_falls_in(tmp_path):
    """As in the scan: a stretch of more than a day without bars is left out, not carried flat, and the
    rows of the windows it falls in say so (in the formation's note, in the trading window's oos_note)."""
    five, q1 = Timeframe.of("5m"), (1_704_067_200_000, 1_711_929_600_000)  # 2024-01-01 → 2024-04-01 (UTC)
    symbols = ("AAAUSDT", "BBBUSDT", "CCCUSDT")
    root = str(tmp_path / "store")
    closes = universe_closes(symbols, (q1[1] - q1[0]) // five.ms, seed=1, planted=[("AAAUSDT", "BBBUSDT")])
    write_universe(ResearchStore(root), Market.SPOT, five, symbols, q1[0], closes)
    shutil.rmtree(Path(root) / "market=spot" / "interval=5m" / "symbol=BBBUSDT" / "month=2024-02")
    spec = ScanSpec(root, Market.SPOT, five, symbols, *q1, block_size=2)
    settings = WalkForwardSettings.of("5m", "20D", "10D")
    rows = walk_in_process(spec, settings).rows.set_index(["window", "y", "x"])
    gap = "BBBUSDT has no bars from 2024-02-01 00:00 to 2024-03-01 00:00 UTC (8,352 bars, more than a day: left out)"
    # Window 0 forms Jan 1-21 and trades Jan 21-31; window 1 trades Jan 31-Feb 10; window 2 forms Jan 21-Feb 10.
    assert not rows.loc[0, "note"].str.contains("no bars").any()
    assert not rows.loc[0, "oos_note"].str.contains("no bars").any()
    pair = ("AAAUSDT", "BBBUSDT")
    assert gap not in rows.loc[(1, *pair), "note"] and gap in rows.loc[(1, *pair), "oos_note"]
    assert gap in rows.loc[(2, *pair), "note"]
    assert not rows.xs(("AAAUSDT", "CCCUSDT"), level=["y", "x"])[["note", "oos_note"]].stack().str.contains(
        "no bars").any()
    # The distributed kernel says the same, whatever block the pair is in.
    alone = walk_forward_kernel(read_closes(ResearchStore(root), Market.SPOT, five, pair, *q1), Block(pair),
                                {"settings": settings, "windows": windows_of(spec, settings)})
    alone = alone.set_index(["window", "y", "x"])
    assert alone["note"].equals(rows.xs(pair, level=["y", "x"], drop_level=False)["note"])
    assert alone["oos_note"].equals(rows.xs(pair, level=["y", "x"], drop_level=False)["oos_note"])

def test_interrupting_the_walk_cancels_every_future(client, store_root):
    def interrupt(done: int, total: int) -> None:
        if done:
            raise KeyboardInterrupt

    with pytest.raises(ScanCancelled, match=r"scan cancelled after \d+ of 21 pairs; nothing stored"):
        walk_distributed(client, spec_of(store_root, block_size=1), SETTINGS, progress=interrupt)
    eventually(lambda: not any(client.processing().values()), timeout=30, message="tasks still running")


def test_a_walk_is_stored_whole_and_read_back(store_root, tmp_path):
    outcome = walk_in_process(spec_of(store_root, symbols=SYMBOLS[:4]), SETTINGS)
    folder = save_walk(outcome.rows, outcome.summary, outcome.parameters(), tmp_path / "scans")
    assert folder.name.startswith("walk-") and sorted(p.name for p in folder.iterdir()) == sorted(WALK_FILES)
    assert [p.name for p in (tmp_path / "scans").iterdir()] == [folder.name]  # no temporary folder left
    rows, summary, parameters = load_walk(folder)
    pd.testing.assert_frame_equal(summary, outcome.summary)
    pd.testing.assert_frame_equal(rows, outcome.rows, check_dtype=False)
    assert parameters["kind"] == "walk" and parameters["formation"] == 600 and parameters["trading"] == 200
    assert parameters["formation_duration"] == "0 days 10:00:00" and parameters["cost_bps"] == 2.0
    assert parameters["symbols"] == list(SYMBOLS[:4]) and len(parameters["windows"]) == 9
    assert parameters["windows"][0] == {"window": 0, "formation_start": "2023-12-31T07:20Z",
                                        "trading_start": "2023-12-31T17:20Z", "trading_end": "2023-12-31T20:40Z"}
    (folder / "walk.json").write_text(json.dumps({"kind": "scan"}))
    with pytest.raises(StorageError, match="is not a walk-forward run's parameters"):
        load_walk(folder)
    with pytest.raises(StorageError, match="cannot read the walk-forward run"):
        load_walk(tmp_path / "nowhere")


def test_a_failed_write_leaves_nothing(store_root, tmp_path, monkeypatch):
    outcome = walk_in_process(spec_of(store_root, symbols=SYMBOLS[:3]), SETTINGS)
    with pytest.raises(TypeError):
        save_walk(outcome.rows, outcome.summary, {"not json": object()}, tmp_path)
    assert list(Path(tmp_path).iterdir()) == []


# The command line: python -m cli.research walk / --top / --archives


@pytest.fixture
def shared_cluster(client, monkeypatch):
    """The CLI runs on the module's cluster instead of starting its own."""
    import contextlib

    monkeypatch.setattr(cli.research, "open_client",
                        lambda scheduler=None, workers=None: contextlib.nullcontext(client))
    monkeypatch.delenv("QUANT_SCHEDULER", raising=False)


SPAN = ["--from", "2023-12-31T07:20", "--to", "2024-01-01T23:20"]


def test_walk_on_the_command_line_is_stored_printed_and_exported(shared_cluster, store_root, tmp_path, capsys):
    csv_path, parquet_path = tmp_path / "walk.csv", tmp_path / "walk.parquet"
    code = cli.research.main(["walk", "--store", store_root, *SPAN, "--formation", "10h", "--trading", "200min",
                              "--cost-bps", "2", "--block-size", "2", "--results", str(tmp_path / "scans"),
                              "--csv", str(csv_path), "--parquet", str(parquet_path)])
    out, err = capsys.readouterr()
    assert code == 0, err
    (folder,) = (tmp_path / "scans").iterdir()
    assert folder.name.startswith("walk-") and sorted(p.name for p in folder.iterdir()) == sorted(WALK_FILES)
    rows, summary, parameters = load_walk(folder)
    reference = walk_in_process(spec_of(store_root), SETTINGS)
    pd.testing.assert_frame_equal(summary, reference.summary, check_exact=True)
    pd.testing.assert_frame_equal(rows, reference.rows, check_dtype=False, check_exact=True)
    assert parameters["kind"] == "walk" and parameters["symbols"] == list(SYMBOLS) and parameters["step"] == 200
    lines = [line for line in out.splitlines() if line.startswith("window ")]
    assert len(lines) == 9
    first = summary.iloc[0]
    assert lines[0].startswith(f"window 0: trading 2023-12-31 17:20 – 2023-12-31 20:40 UTC: {first['found']} of "
                               f"{first['pairs']} pairs found at q < 0.05; {first['stayed']} of "
                               f"{first['found_oos']} stayed (")
    assert "95 % interval" in lines[0] and "Traceback" not in err and "stored in" in err
    exported = pd.read_csv(csv_path)
    assert exported["window"].tolist() == rows["window"].tolist() and exported["y"].tolist() == rows["y"].tolist()
    pd.testing.assert_frame_equal(pd.read_parquet(parquet_path)[["window", "y", "x", "q_value"]],
                                  rows[["window", "y", "x", "q_value"]])


def test_ctrl_c_in_the_walk_exits_130_and_stores_nothing(shared_cluster, store_root, tmp_path, monkeypatch, capsys):
    class Interrupting(cli.research.ProgressMeter):
        def __call__(self, done: int, total: int) -> None:
            if done:
                raise KeyboardInterrupt

    monkeypatch.setattr(cli.research, "ProgressMeter", Interrupting)
    results = tmp_path / "scans"
    code = cli.research.main(["walk", "--store", store_root, *SPAN, "--formation", "10h", "--trading", "200min",
                              "--block-size", "1", "--results", str(results)])
    assert code == 130
    assert "cancelled: scan cancelled after" in capsys.readouterr().err
    assert not results.exists() or not any(results.iterdir())


@pytest.mark.parametrize(("args", "message"), [
    (["--formation", "30"], "formation: '30' has no unit; give a duration such as 30D"),
    (["--formation", "90s"], "formation: '90s' is not a whole positive number of 1m bars"),
    (["--trading", "banana"], "trading: 'banana' is neither a number of bars nor a duration"),
    (["--formation", "40h"], "span: the span .* holds 2400 1m bars; one window needs formation \\+ trading"),
    (["--trend", "ct"], "trend: 'ct' is not one of c, n"),
    # 40 trading bars cannot hold the stay test's ADF with 20 lags: every pair would go untested.
    (["--maxlag", "20", "--trading", "40min"], "trading must be at least 44 bars for the stay test's ADF with "
     "maxlag 20, got 40"),
    (["--entry", "two"], "entry: 'two' is not a number"),
    (["--entry", "1", "--exit", "1"], "entry must be > 0 and exit in \\[0, entry\\)"),
    (["--top", "1"], "top: 1 must be >= 2"),
    (["--top", "many"], "top: 'many' is not a whole number"),
    (["--top", "9"], "top: 9 asked, but only 6 of the 7 symbols have 1m bars from 2023-12-31T07:20Z to "
     "2023-12-31T17:20Z \\(the formation span\\)"),
    (["--symbols", "S00USDT.P,S01USDT"], "symbols: S00USDT.P is a USDⓈ-M perpetual"),
    (["--archives", " "], "archives: empty"),
    (["--archives", "/nonexistent/mirror", "--symbols", "S00USDT,S01USDT"],
     "archives: '/nonexistent/mirror' is neither an http\\(s\\) URL nor a folder"),
])
def test_bad_walk_requests_are_named_before_any_cluster_starts(store_root, args, message, capsys, monkeypatch):
    monkeypatch.delenv("QUANT_SCHEDULER", raising=False)
    monkeypatch.setattr(cli.research, "open_client", None)  # never reached
    given = {"--store": store_root, "--from": "2023-12-31T07:20", "--to": "2024-01-01T23:20",
             "--formation": "10h", "--trading": "200min"}
    flags = dict(zip(args[::2], args[1::2], strict=True))
    argv = ["walk", *[x for k, v in {**given, **flags}.items() for x in (k, v)]]
    assert cli.research.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    assert re.search(message, err), err


def test_top_picks_by_quote_volume_over_the_formation_span_only(tmp_path):
    """D trades the most overall, but only after the first formation window: a walk (no look-ahead) leaves it
    out, a scan over the whole span takes it."""
    root = str(tmp_path / "store")
    symbols = ("AUSDT", "BUSDT", "CUSDT", "DUSDT")
    closes = universe_closes(symbols, BARS, seed=5)
    closes[:, 0] = 300.0 + closes[:, 0]   # A: the largest quote volume (quote_volume = close here)
    closes[:, 1] = 200.0 + closes[:, 1]   # B: the second
    closes[:, 2] = 100.0 + closes[:, 2]   # C: the third
    closes[:, 3] = 1.0 + closes[:, 3] / 100.0
    closes[700:, 3] = 10_000.0 + closes[700:, 3]  # D: tiny, then huge after the first formation (600 bars)
    write_universe(ResearchStore(root), Market.SPOT, MINUTE, symbols, START, closes)
    store = ResearchStore(root)
    end = START + BARS * MINUTE.ms
    assert top_by_quote_volume(store, Market.SPOT, MINUTE, symbols, START, end, 2) == ("DUSDT", "AUSDT")
    formation_end = START + 600 * MINUTE.ms
    assert top_by_quote_volume(store, Market.SPOT, MINUTE, symbols, START, formation_end, 3) == (
        "AUSDT", "BUSDT", "CUSDT")
    with pytest.raises(cli.research.ConfigError, match="top: 3 asked, but only 2 of the 2 symbols"):
        top_by_quote_volume(store, Market.SPOT, MINUTE, ("AUSDT", "BUSDT"), START, end, 3)


def test_walk_with_top_runs_on_the_chosen_symbols(shared_cluster, tmp_path, capsys):
    root = str(tmp_path / "store")
    symbols = ("AUSDT", "BUSDT", "CUSDT", "DUSDT")
    closes = universe_closes(symbols, BARS, seed=5)
    closes[:, 3] = 1.0 + closes[:, 3] / 100.0  # D: the smallest quote volume
    write_universe(ResearchStore(root), Market.SPOT, MINUTE, symbols, START, closes)
    code = cli.research.main(["walk", "--store", root, *SPAN, "--formation", "10h", "--trading", "200min",
                              "--top", "3", "--results", str(tmp_path / "scans")])
    assert code == 0, capsys.readouterr().err
    (folder,) = (tmp_path / "scans").iterdir()
    rows, _, parameters = load_walk(folder)
    assert "DUSDT" not in parameters["symbols"] and len(parameters["symbols"]) == 3
    assert set(rows["y"]) | set(rows["x"]) == set(parameters["symbols"])


def test_archives_to_results_in_one_command(shared_cluster, tmp_path, capsys):
    """--archives imports the span's months into --store first (a mirror folder, then over HTTP), a refused
    file stops the run before any scan, and a second run finds the months already stored."""
    tree = write_archive_tree(tmp_path / "mirror", ["AAAUSDT", "BBBUSDT", "CCCUSDT"], ["2024-01", "2024-02"],
                              planted_pairs=[("BBBUSDT", "AAAUSDT")], seed=4, bars_per_day=120)
    store, results = tmp_path / "store", tmp_path / "scans"
    argv = ["scan", "--store", str(store), "--symbols", "AAAUSDT,BBBUSDT,CCCUSDT", "--from", "2024-01-25",
            "--to", "2024-02-05", "--results", str(results), "--show", "0"]
    wrong_checksum(tree.path("CCCUSDT", "2024-02"))
    assert cli.research.main([*argv, "--archives", str(tree.root)]) == 1
    err = capsys.readouterr().err
    assert "CCCUSDT 2024-02: REFUSED, nothing stored" in err and "error: archives: a file was refused" in err
    assert not results.exists()  # nothing scanned
    write_checksum(tree.path("CCCUSDT", "2024-02"))  # the file's right checksum is published
    with ArchiveServer(tree.root) as server:
        assert cli.research.main([*argv, "--archives", server.url]) == 0, capsys.readouterr().err
    err = capsys.readouterr().err
    assert "CCCUSDT 2024-02: imported" in err and err.count(": already stored from") == 5, err
    (folder,) = results.iterdir()
    table, parameters = load_scan(folder)
    assert parameters["symbols"] == ["AAAUSDT", "BBBUSDT", "CCCUSDT"]
    assert (table.iloc[0]["y"], table.iloc[0]["x"]) == ("AAAUSDT", "BBBUSDT")  # the planted pair ranks first


def test_perpetual_leg_names_read_the_um_store(shared_cluster, tmp_path, capsys):
    """On um the store keeps ETHUSDT.P's bars under ETHUSDT: --symbols takes the leg names the dashboard uses."""
    root = str(tmp_path / "store")
    symbols = ("AUSDT", "BUSDT", "CUSDT")
    write_universe(ResearchStore(root), Market.USDM, MINUTE, symbols, START, universe_closes(symbols, BARS, seed=2))
    code = cli.research.main(["walk", "--store", root, "--venue", "um", "--symbols", "AUSDT.P,BUSDT.P,CUSDT", *SPAN,
                              "--formation", "10h", "--trading", "200min", "--results", str(tmp_path / "scans")])
    assert code == 0, capsys.readouterr().err
    (folder,) = (tmp_path / "scans").iterdir()
    rows, _, parameters = load_walk(folder)
    assert parameters["market"] == "um" and parameters["symbols"] == ["AUSDT", "BUSDT", "CUSDT"]
    assert len(rows) == 9 * 3


def dying_walk_kernel(closes: pd.DataFrame, block: Block, params: Mapping[str, Any]) -> pd.DataFrame:
    """The walk-forward kernel, except that the first block to run kills its worker process (kill -9)."""
    marker = Path(params["marker"])
    try:
        marker.touch(exist_ok=False)  # exactly one block, in one process, gets here first
    except FileExistsError:
        return walk_forward_kernel(closes, block, params)
    os.kill(os.getpid(), signal.SIGKILL)
    raise AssertionError("unreachable: the process is gone")


def test_a_worker_killed_mid_walk_costs_only_its_block(client, store_root, tmp_path):
    spec = spec_of(store_root)
    windows = windows_of(spec, SETTINGS)
    marker = tmp_path / "killed"
    parts = run_blocks(client, spec, dying_walk_kernel,
                       {"settings": SETTINGS, "windows": windows, "marker": str(marker)})
    assert marker.exists()  # a worker did die
    rows = add_q_values(pd.concat(parts, ignore_index=True).sort_values(["window", "y", "x"], kind="mergesort")
                        .reset_index(drop=True))
    pd.testing.assert_frame_equal(rows, walk_in_process(spec, SETTINGS).rows, check_exact=True)
    eventually(lambda: len(client.scheduler_info()["workers"]) == 2, timeout=60,
               message="the nanny did not restart the killed worker")
