"""The distributed universe scan (research/scan.py, research/cluster.py, python -m cli.research): equal to the
single-process scan bit for bit, blocks that read only their symbols, a worker killed mid-scan, Ctrl-C,
the scheduler setting, bad requests named, results stored whole."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import numpy as np
import pandas as pd
import pytest
from distributed import Client, KilledWorker

import cli.research
import research.scan
from analytics import scan_pairs
from config import ConfigError, parse_scheduler, scheduler_address
from domain import Market, Timeframe
from research.cluster import open_client
from research.request import ResearchRequest, plan
from research.scan import (
    Block,
    ScanCancelled,
    ScanInputError,
    ScanSpec,
    block_task,
    engle_granger_kernel,
    export_csv,
    load_scan,
    make_blocks,
    read_closes,
    run_blocks,
    scan,
    scan_in_process,
)
from research.walkforward import WalkForwardSettings
from research.walkrun import walk_distributed
from storage.research import ResearchStore
from testkit.research import universe_closes, write_universe
from testkit.waiting import eventually

ROOT = Path(__file__).resolve().parents[1]
MINUTE = Timeframe.of("1m")
JAN = 1_704_067_200_000  # 2024-01-01T00:00Z
START = JAN - 1_000 * 60_000  # the span crosses a month boundary: two files per symbol
BARS = 2_400
SYMBOLS = tuple(f"S{i:02d}USDT" for i in range(9))


@pytest.fixture(scope="module")
def store_root(tmp_path_factory: pytest.TempPathFactory) -> str:
    """9 symbols x 2,400 bars: one planted pair, one symbol listed late, one outside the scans' spans."""
    root = str(tmp_path_factory.mktemp("research-store"))
    closes = universe_closes(SYMBOLS, BARS, seed=11, planted=[("S03USDT", "S00USDT")])
    write_universe(ResearchStore(root), Market.SPOT, MINUTE, SYMBOLS, START, closes, first_bar={"S05USDT": 700})
    return root


@pytest.fixture(scope="module")
def client() -> Iterator[Client]:
    """A local cluster of 2 worker processes, 1 thread each, closed after the module."""
    with open_client(workers=2) as c:
        yield c


def spec_of(root: str, **changes: Any) -> ScanSpec:
    values: dict[str, Any] = {"store": root, "market": Market.SPOT, "timeframe": MINUTE, "symbols": SYMBOLS,
                              "start_ms": START, "end_ms": START + BARS * MINUTE.ms, "block_size": 3}
    return ScanSpec(**{**values, **changes})


def test_the_distributed_scan_equals_the_single_process_scan_bit_for_bit(client, store_root):
    spec = spec_of(store_root)
    reference = scan_in_process(spec).table
    reports: list[tuple[int, int]] = []
    outcome = scan(client, spec, progress=lambda done, total: reports.append((done, total)))
    pd.testing.assert_frame_equal(outcome.table, reference, check_exact=True)  # same p, q, β, everything
    # Any cut into blocks gives the same numbers; the store may be named by URL (what remote workers read).
    other = scan(client, spec_of(f"file://{store_root}", block_size=4)).table
    pd.testing.assert_frame_equal(other, reference, check_exact=True)
    # Progress: 0 at submission, rising, ending at the family's size.
    done = [d for d, _ in reports]
    assert done[0] == 0 and done == sorted(done) and done[-1] == 36 and {t for _, t in reports} == {36}
    # The single-call scanner on the same closes agrees to rounding, and finds the planted pair.
    closes = read_closes(ResearchStore(store_root), Market.SPOT, MINUTE, SYMBOLS, spec.start_ms, spec.end_ms)
    fast = scan_pairs(closes)
    assert fast[["y", "x"]].equals(reference[["y", "x"]])
    np.testing.assert_allclose(fast["eg_pvalue"], reference["eg_pvalue"], rtol=1e-9, atol=1e-15)
    top = reference.iloc[0]
    assert (top["y"], top["x"], top["status"]) == ("S00USDT", "S03USDT", "ok") and top["q_value"] < 1e-6
    late = reference[(reference["y"] == "S05USDT") | (reference["x"] == "S05USDT")]
    assert (late["n_bars"] == BARS - 700).all()  # a symbol listed late: its pairs use the rows it has


def test_a_span_starting_between_two_bars_scans_the_bars_that_start_in_it(store_root):
    """``--from 2023-12-31T07:20:30`` on 1 min bars: the grid was laid from that instant, matched no stored
    bar, and every pair was stored 'insufficient_data' with 0 bars, saying nothing of why."""
    table = scan_in_process(spec_of(store_root, start_ms=START + 30_000)).table
    planted = table[(table["y"] == "S00USDT") & (table["x"] == "S03USDT")].iloc[0]
    assert planted["status"] == "ok" and planted["n_bars"] == BARS - 1  # 07:21 on: the bars starting in the span
    request = ResearchRequest("scan", store_root, Market.SPOT, MINUTE, START + 30_000, START + BARS * 60_000 - 1)
    assert plan(request).spec.start_ms == START + 60_000  # the span's first bar, as stored with the run

class SmallWorkers:
    """A client whose workers each have ``limit`` bytes (what Dask's scheduler reports); nothing may be submitted."""

    def __init__(self, limit: int) -> None:
        self.limit = limit

    def scheduler_info(self, n_workers: int = -1) -> dict[str, Any]:
        return {"workers": {f"tcp://127.0.0.1:{port}": {"memory_limit": self.limit} for port in (40001, 40002)}}

    def submit(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a block was submitted to workers it could only kill")


def test_a_block_that_cannot_fit_a_workers_memory_is_refused_before_any_is_submitted(store_root):
    # A 1 s store scanned over its default two months needs ~26 GB per block: every worker that ran one
    # died (four of them, the machine's memory with them on a local cluster), minutes in, with no reason.
    with pytest.raises(ScanInputError, match=r"memory: a block of 6 symbols × 2,400 1m bars needs at least 2\.0 MB "
                                             r"on a worker .*maxlag 27.*, more than the workers' 1\.0 MB: give a "
                                             r"shorter span, a smaller block size"):
        scan(cast(Client, SmallWorkers(1_000_000)), spec_of(store_root))
    settings = WalkForwardSettings.of("1m", "600min", "200min")
    with pytest.raises(ScanInputError, match=r"memory: a block of 6 symbols × 2,400 1m bars needs at least 0\.5 MB "
                                             r"on a worker .*a 600-bar series at maxlag 19"):
        walk_distributed(cast(Client, SmallWorkers(200_000)), spec_of(store_root), settings)

def test_blocks_cover_every_pair_once():
    blocks = make_blocks([f"A{i:02d}" for i in range(10)], 3)
    pairs = [tuple(sorted((a, b))) for blk in blocks
             for a, b in ([(a, b) for a in blk.left for b in blk.right] if blk.right
                          else [(a, b) for i, a in enumerate(blk.left) for b in blk.left[i + 1:]])]
    assert len(pairs) == len(set(pairs)) == 45 == sum(blk.pairs for blk in blocks)
    assert max(len(blk.symbols) for blk in blocks) == 6


def test_a_block_reads_only_its_own_symbols(store_root, monkeypatch):
    read: list[str] = []
    original = ResearchStore.bars

    def spy(self: ResearchStore, market: Market, timeframe: Timeframe, symbol: str, *args: Any, **kwargs: Any):
        read.append(symbol)
        return original(self, market, timeframe, symbol, *args, **kwargs)

    monkeypatch.setattr(ResearchStore, "bars", spy)
    block = Block(("S01USDT", "S02USDT"), ("S07USDT",))
    spec = spec_of(store_root)
    rows = block_task(store_root, Market.SPOT, MINUTE, spec.start_ms, spec.end_ms, block, engle_granger_kernel,
                      spec.kernel_params())
    assert sorted(read) == ["S01USDT", "S02USDT", "S07USDT"]
    assert sorted(zip(rows["y"], rows["x"], strict=True)) == [("S01USDT", "S07USDT"), ("S02USDT", "S07USDT")]


FIVE = Timeframe.of("5m")
Q1 = 1_704_067_200_000, 1_711_929_600_000  # 2024-01-01 → 2024-04-01 (UTC): January, February, March


def test_a_month_missing_in_the_middle_is_left_out_and_each_of_its_pairs_says_so(tmp_path):
    """A month missing from the store used to be filled with the close before it, carried for 8,352 bars:
    the planted pair was tested on a month of made-up flat prices (p 0.07, lost) and nothing said so."""
    symbols = ("AAAUSDT", "BBBUSDT", "CCCUSDT")
    bars = (Q1[1] - Q1[0]) // FIVE.ms
    root = str(tmp_path / "store")
    closes = universe_closes(symbols, bars, seed=1, planted=[("AAAUSDT", "BBBUSDT")])
    write_universe(ResearchStore(root), Market.SPOT, FIVE, symbols, Q1[0], closes)
    shutil.rmtree(Path(root) / "market=spot" / "interval=5m" / "symbol=BBBUSDT" / "month=2024-02")
    # A gap of at most a day (an exchange outage) is still carried over: CCCUSDT lacks 12 hours of bars.
    march = ResearchStore(root).bars(Market.SPOT, FIVE, "CCCUSDT", 1_709_251_200_000, Q1[1])
    ResearchStore(root).write_month(Market.SPOT, FIVE, "CCCUSDT", "2024-03", march.drop(index=range(1_000, 1_144)))
    spec = ScanSpec(root, Market.SPOT, FIVE, symbols, *Q1, block_size=2)
    table = scan_in_process(spec).table
    february = 29 * 288
    row = table.set_index(["y", "x"])
    planted = row.loc[("AAAUSDT", "BBBUSDT")]
    assert planted["n_bars"] == bars - february  # the rows both legs have, no made-up month
    assert planted["status"] == "ok" and planted["q_value"] < 1e-6  # found again
    gap = "BBBUSDT has no bars from 2024-02-01 00:00 to 2024-03-01 00:00 UTC (8,352 bars, more than a day: left out)"
    for pair in (("AAAUSDT", "BBBUSDT"), ("BBBUSDT", "CCCUSDT")):
        assert gap in row.loc[pair, "note"], row.loc[pair, "note"]
    untouched = row.loc[("AAAUSDT", "CCCUSDT")]
    assert untouched["n_bars"] == bars and "no bars" not in untouched["note"]  # 12 hours carried, as before
    # Block-independent as ever: the pair's row is the same read in a block of its own.
    alone = block_task(root, Market.SPOT, FIVE, *Q1, Block(("AAAUSDT", "BBBUSDT")), engle_granger_kernel,
                       spec.kernel_params())
    assert alone.loc[0, "note"] == planted["note"] and alone.loc[0, "eg_pvalue"] == planted["eg_pvalue"]


def dying_kernel(closes: pd.DataFrame, block: Block, params: Mapping[str, Any]) -> pd.DataFrame:
    """The scan's kernel, except that the first block to run kills its worker process (kill -9)."""
    rest = {k: v for k, v in params.items() if k != "marker"}
    marker = Path(params["marker"])
    try:
        marker.touch(exist_ok=False)  # exactly one block, in one process, gets here first
    except FileExistsError:
        return engle_granger_kernel(closes, block, rest)
    os.kill(os.getpid(), signal.SIGKILL)
    raise AssertionError("unreachable: the process is gone")


def test_a_worker_killed_mid_scan_costs_only_its_block(client, store_root, tmp_path):
    spec = spec_of(store_root)
    marker = tmp_path / "killed"
    rows = run_blocks(client, spec, dying_kernel, {**spec.kernel_params(), "marker": str(marker)})
    assert marker.exists()  # a worker did die
    table = research.scan.rank_pairs(pd.concat(rows, ignore_index=True))
    pd.testing.assert_frame_equal(table, scan_in_process(spec).table, check_exact=True)
    eventually(lambda: len(client.scheduler_info()["workers"]) == 2, timeout=60,
               message="the nanny did not restart the killed worker")


def test_interrupting_the_gather_cancels_every_future(client, store_root):
    def interrupt(done: int, total: int) -> None:
        if done:
            raise KeyboardInterrupt

    with pytest.raises(ScanCancelled, match=r"scan cancelled after \d+ of 36 pairs; nothing stored"):
        scan(client, spec_of(store_root, block_size=2), progress=interrupt)
    eventually(lambda: not any(client.processing().values()), timeout=30, message="tasks still running")


def test_ctrl_c_in_the_cli_exits_130_and_stores_nothing(client, store_root, tmp_path, monkeypatch, capsys):
    def shared_cluster(scheduler: str | None = None, workers: int | None = None) -> Any:
        import contextlib
        return contextlib.nullcontext(client)

    class Interrupting(cli.research.ProgressMeter):
        def __call__(self, done: int, total: int) -> None:
            if done:
                raise KeyboardInterrupt

    monkeypatch.setattr(cli.research, "open_client", shared_cluster)
    monkeypatch.setattr(cli.research, "ProgressMeter", Interrupting)
    results = tmp_path / "scans"
    code = cli.research.main(["scan", "--store", store_root, "--from", "2023-12-31T07:20", "--to",
                              "2024-01-01T23:20", "--block-size", "2", "--results", str(results)])
    assert code == 130
    assert "cancelled: scan cancelled after" in capsys.readouterr().err
    assert not results.exists() or not any(results.iterdir())


def test_a_scan_is_stored_whole_with_its_parameters_and_exports_safe_csv(client, store_root, tmp_path, capsys):
    csv_path, parquet_path = tmp_path / "scan.csv", tmp_path / "scan.parquet"
    code = cli.research.main(["scan", "--store", store_root, "--from", "2023-12-31T07:20", "--to",
                              "2024-01-01T23:20", "--symbols", "S00USDT,S03USDT,S04USDT", "--workers", "1",
                              "--results", str(tmp_path / "scans"), "--csv", str(csv_path), "--parquet",
                              str(parquet_path), "--show", "2"])
    assert code == 0, capsys.readouterr().err
    (folder,) = (tmp_path / "scans").iterdir()
    table, parameters = load_scan(folder)
    assert sorted(p.name for p in folder.iterdir()) == ["pairs.parquet", "scan.json"]
    assert parameters["symbols"] == ["S00USDT", "S03USDT", "S04USDT"] and parameters["market"] == "spot"
    assert parameters["start_utc"] == "2023-12-31T07:20Z" and parameters["bars"] == BARS
    assert parameters["timeframe"] == "1m" and parameters["trend"] == "c" and len(parameters["code_version"]) == 16
    assert json.loads((folder / "scan.json").read_text())["pairs"] == 3
    assert pd.read_csv(csv_path)["y"].tolist() == table["y"].tolist()
    pd.testing.assert_frame_equal(pd.read_parquet(parquet_path)[["y", "x", "eg_pvalue"]],
                                  table[["y", "x", "eg_pvalue"]])
    hostile = table.assign(note="=HYPERLINK(\"http://x\")")
    assert b"'=HYPERLINK" in export_csv(hostile)


def test_without_store_and_results_the_settings_name_them_as_for_the_archives_and_the_scanner_tab(
        client, store_root, tmp_path, monkeypatch, capsys):
    # cli.archives imports into QUANT_RESEARCH_DIR and the Scanner tab opens QUANT_RESULTS_DIR: the scan
    # reads and writes the same places when neither option is given.
    monkeypatch.setenv("QUANT_RESEARCH_DIR", store_root)
    monkeypatch.setenv("QUANT_RESULTS_DIR", str(tmp_path / "runs"))
    code = cli.research.main(["scan", "--from", "2023-12-31T07:20", "--to", "2024-01-01T23:20",
                              "--symbols", "S00USDT,S03USDT", "--workers", "1", "--show", "0"])
    assert code == 0, capsys.readouterr().err
    (folder,) = (tmp_path / "runs").iterdir()
    assert load_scan(folder)[1]["store"] == store_root


@pytest.mark.parametrize(("args", "message"), [
    (["--symbols", "S00USDT,NOPEUSDT"], "symbols: NOPEUSDT not in the store's spot 1m bars"),
    (["--from", "2024-01-02", "--to", "2024-01-01"], "span: from 2024-01-02T00:00Z to 2024-01-01T00:00Z is empty"),
    (["--from", "2025-06-01", "--to", "2025-06-02"], "span: no stored month of any symbol overlaps"),
    # A span far past the history once ran: every worker held its whole bar grid (a typo such as 2205 ran
    # them out of memory). It must lie within the months stored for the symbols, as the Scanner tab's days do.
    (["--to", "2205-01-01"], r"span: 2023-12-31T07:20Z – 2205-01-01T00:00Z reaches beyond the months stored for "
                             r"these symbols \(2023-12 to 2024-01\)"),
    (["--from", "1970-01-01"], r"span: 1970-01-01T00:00Z – 2024-01-01T23:20Z reaches beyond"),
    (["--store", "/nonexistent/research"], "store: no research store at '/nonexistent/research'"),
    (["--symbols", "S00USDT"], "symbols: a scan needs at least two symbols"),
    (["--market", "um"], "store: .* holds no um 1m bars"),
    (["--timeframe", "2m"], "timeframe: '2m' is not one of"),
    (["--from", "yesterday-ish"], "from: 'yesterday-ish' is not an ISO-8601 time"),
    (["--scheduler", "127.0.0.1:8786"], "scheduler: '127.0.0.1:8786' must look like tcp://HOST:PORT"),
    (["--scheduler", "tcp://127.0.0.1:8786", "--workers", "2"], "workers: --workers sizes the local cluster"),
    (["--block-size", "0"], "block-size: 0 must be >= 1"),
])
def test_bad_requests_are_named_before_any_cluster_starts(store_root, args, message, capsys, monkeypatch):
    monkeypatch.delenv("QUANT_SCHEDULER", raising=False)
    given = {"--store": store_root, "--from": "2023-12-31T07:20", "--to": "2024-01-01T23:20"}
    flags = dict(zip(args[::2], args[1::2], strict=True))
    argv = ["scan", *[x for k, v in {**given, **flags}.items() for x in (k, v)]]
    assert cli.research.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    assert re.search(message, err), err


def test_the_scheduler_setting(monkeypatch, store_root, capsys):
    assert parse_scheduler(" tcp://10.0.0.5:8786 ") == "tcp://10.0.0.5:8786"
    assert parse_scheduler("tls://[::1]:8786") == "tls://[::1]:8786"
    assert scheduler_address({}) is None and scheduler_address({"QUANT_SCHEDULER": " "}) is None
    assert scheduler_address({"QUANT_SCHEDULER": "tcp://sched:8786"}) == "tcp://sched:8786"
    for bad in ("sched:8786", "tcp://sched", "tcp://sched:0", "tcp://sched:70000", "http://sched:8786"):
        with pytest.raises(ConfigError, match=r"scheduler: .* must look like tcp://HOST:PORT"):
            parse_scheduler(bad)
    with pytest.raises(ConfigError, match=r"scheduler \(QUANT_SCHEDULER\): 'nope' must look like"):
        scheduler_address({"QUANT_SCHEDULER": "nope"})
    monkeypatch.setenv("QUANT_SCHEDULER", "nope")
    assert cli.research.main(["scan", "--store", store_root, "--from", "2024-01-01", "--to", "2024-01-02"]) == 2
    assert "error: scheduler (QUANT_SCHEDULER): 'nope'" in capsys.readouterr().err


def test_nothing_listening_at_the_scheduler_address_is_named(monkeypatch):
    import socket

    import research.cluster
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # free once closed: nothing listens there
    monkeypatch.setattr(research.cluster, "CONNECT_TIMEOUT_S", 2.0)
    with pytest.raises(OSError, match=rf"scheduler tcp://127.0.0.1:{port}: no Dask scheduler answered"), \
            open_client(f"tcp://127.0.0.1:{port}"):
        pass


def test_separate_scheduler_and_worker_processes_give_bit_identical_results(store_root, tmp_path, monkeypatch):
    """``dask scheduler`` and two ``dask worker`` processes on 127.0.0.1, as on a real cluster."""
    import research.cluster
    monkeypatch.setattr(research.cluster, "CONNECT_TIMEOUT_S", 90.0)  # a loaded machine starts processes slowly
    bin_dir = Path(sys.executable).parent
    scheduler_file = tmp_path / "scheduler.json"
    # As the README starts remote workers: the repository's Dask settings for them.
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OPENBLAS_NUM_THREADS": "1",
           "DASK_CONFIG": str(ROOT / "docs" / "dask-worker.yaml")}
    logs = tmp_path / "logs.txt"
    processes: list[subprocess.Popen[bytes]] = []
    try:
        with logs.open("wb") as log:
            processes.append(subprocess.Popen(
                [str(bin_dir / "dask"), "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                 "--scheduler-file", str(scheduler_file)], env=env, stdout=log, stderr=log))
            # The scheduler writes the file in place: it may exist before it holds the whole JSON.
            eventually(lambda: _written_address(scheduler_file) is not None, timeout=90,
                       message=lambda: logs.read_text())
            address = _written_address(scheduler_file)
            assert address is not None
            for _ in range(2):
                processes.append(subprocess.Popen(
                    [str(bin_dir / "dask"), "worker", address, "--nthreads", "1", "--nworkers", "1",
                     "--host", "127.0.0.1", "--no-dashboard"], env=env, stdout=log, stderr=log, cwd=tmp_path))
            with open_client(address) as remote:
                remote.wait_for_workers(2, timeout=90)
                outcome = scan(remote, spec_of(store_root))
                assert sorted(remote.run(_worker_environment).values()) == [(None, "1"), (None, "1")]
        pd.testing.assert_frame_equal(outcome.table, scan_in_process(spec_of(store_root)).table, check_exact=True)
    finally:
        for process in reversed(processes):
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=30)


def test_local_workers_keep_glibcs_adaptive_allocator_and_one_blas_thread(client):
    # Dask's nanny exports MALLOC_TRIM_THRESHOLD_ by default: every array over 128 kB then is a fresh
    # mmap, and a block ran 1.5-2x slower (research/cluster.py).
    assert sorted(client.run(_worker_environment).values()) == [(None, "1"), (None, "1")]


def _worker_environment() -> tuple[str | None, str | None]:
    return os.environ.get("MALLOC_TRIM_THRESHOLD_"), os.environ.get("OPENBLAS_NUM_THREADS")


def _written_address(scheduler_file: Path) -> str | None:
    """The scheduler's address once its file is whole, else None."""
    try:
        return json.loads(scheduler_file.read_text())["address"]
    except (OSError, ValueError, KeyError):
        return None


def test_ctrl_c_in_a_terminal_stops_the_cli_cleanly(tmp_path):
    """A terminal's Ctrl-C signals the whole process group (client and local workers): exit 130,
    nothing stored, and no worker prints a traceback."""
    root = str(tmp_path / "store")
    symbols = [f"T{i:02d}USDT" for i in range(40)]
    write_universe(ResearchStore(root), Market.SPOT, MINUTE, symbols, JAN, universe_closes(symbols, 6_000, seed=3))
    results, err_path = tmp_path / "scans", tmp_path / "stderr.txt"
    with err_path.open("wb") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "cli.research", "scan", "--store", root, "--from", "2024-01-01", "--to",
             "2024-01-05", "--workers", "2", "--block-size", "2", "--results", str(results)],
            stdout=subprocess.DEVNULL, stderr=err, cwd=ROOT, start_new_session=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # as a foreground job has it
        try:
            eventually(lambda: "pairs 0 / 780" in err_path.read_text(), timeout=120,
                       message=lambda: err_path.read_text())
            os.killpg(process.pid, signal.SIGINT)
            assert process.wait(timeout=120) == 130
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=30)
    text = err_path.read_text()
    assert "cancelled: scan cancelled after" in text and "nothing stored" in text
    assert "Traceback" not in text and "KeyboardInterrupt" not in text, text
    assert not results.exists() or not any(results.iterdir())


def test_workers_dying_on_a_block_are_named_with_what_usually_kills_them(store_root, capsys, monkeypatch):
    def killed(*args: Any, **kwargs: Any) -> Any:
        raise KilledWorker("research-block-0", cast(Any, SimpleNamespace(address="tcp://127.0.0.1:40000")), 3)

    monkeypatch.delenv("QUANT_SCHEDULER", raising=False)
    monkeypatch.setattr(cli.research, "open_client", lambda scheduler=None, workers=None: contextlib.nullcontext())
    monkeypatch.setattr(cli.research, "scan", killed)
    code = cli.research.main(["scan", "--store", store_root, "--from", "2023-12-31T07:20", "--to", "2024-01-01T23:20",
                              "--results", str(Path(store_root).parent / "none")])
    err = capsys.readouterr().err
    assert code == 1
    assert ("error: a block of the scan failed: every worker that ran it died (tried on 4 workers). Most often a "
            "worker runs out of memory") in err and "worker logs" not in err


def test_the_cli_names_a_block_too_big_for_the_workers_with_exit_2(store_root, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("QUANT_SCHEDULER", raising=False)
    monkeypatch.setattr(cli.research, "open_client",
                        lambda scheduler=None, workers=None: contextlib.nullcontext(SmallWorkers(1_000_000)))
    code = cli.research.main(["scan", "--store", store_root, "--from", "2023-12-31T07:20", "--to", "2024-01-01T23:20",
                              "--block-size", "3", "--results", str(tmp_path / "runs")])
    err = capsys.readouterr().err
    assert code == 2 and "error: memory: a block of 6 symbols × 2,400 1m bars needs at least 2.0 MB" in err, err
    assert not (tmp_path / "runs").exists()
