"""The dashboard's research job runner (research/jobs.py) and the one request check (research/request.py):
one job at a time, its progress and ETA, cancel by its owner only, a failed block named, the server's
shutdown cancelling it; the stored result equal to the in-process scan."""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pandas as pd
import pytest
from distributed import Client, Event, KilledWorker

import research.jobs
from config import ConfigError
from domain import Market, Timeframe
from research.cluster import open_client
from research.jobs import CANCELLED, DONE, FAILED, JobBusy, JobRunner, JobStatus
from research.request import ResearchRequest, plan
from research.results import load_walk
from research.scan import ScanInputError, load_scan, scan_in_process
from research.walkrun import walk_in_process
from storage.research import ResearchStore
from testkit.research import universe_closes, write_universe
from testkit.waiting import eventually
from tests.test_research_scan import SmallWorkers
from ui import appstate

MINUTE = Timeframe.of("1m")
JAN = 1_704_067_200_000  # 2024-01-01T00:00Z
BARS = 2 * 1_440  # two days
SYMBOLS = ("AAAUSDT", "BBBUSDT", "CCCUSDT", "DDDUSDT", "EEEUSDT")


def make_store(root: Path) -> str:
    closes = universe_closes(SYMBOLS, BARS, seed=7, planted=[("BBBUSDT", "AAAUSDT")])
    write_universe(ResearchStore(str(root)), Market.SPOT, MINUTE, SYMBOLS, JAN, closes)
    return str(root)


@pytest.fixture(scope="module")
def store_root(tmp_path_factory: pytest.TempPathFactory) -> str:
    return make_store(tmp_path_factory.mktemp("research-store"))


@pytest.fixture(scope="module")
def client() -> Iterator[Client]:
    """A local cluster of 1 worker process, closed after the module."""
    with open_client(workers=1) as c:
        yield c


def request_of(root: str, **changes: Any) -> ResearchRequest:
    values: dict[str, Any] = {"kind": "scan", "store": root, "market": Market.SPOT, "timeframe": MINUTE,
                              "start_ms": JAN, "end_ms": JAN + BARS * MINUTE.ms, "block_size": 1}
    return ResearchRequest(**{**values, **changes})


class Gate:
    """A progress hook that holds the job after its first finished block until a cancel is asked
    (the job's status says ``cancelling``) or the test opens it: the job is mid-run, deterministically."""

    def __init__(self) -> None:
        self.runner: JobRunner | None = None
        self.reports: list[tuple[int, int]] = []
        self.held = threading.Event()
        self.opened = threading.Event()

    def __call__(self, done: int, total: int) -> None:
        self.reports.append((done, total))
        if done and not self.held.is_set():
            self.held.set()
            assert self.runner is not None

            def released() -> bool:
                status = self.runner.snapshot() if self.runner is not None else None
                return self.opened.is_set() or (status is not None and status.cancelling)

            eventually(released, timeout=60, interval=0.01, message="the test never released the job")


def on(client: Client) -> Any:
    return lambda scheduler=None, workers=None: contextlib.nullcontext(client)


@pytest.fixture
def gated(client) -> Iterator[tuple[JobRunner, Gate]]:
    gate = Gate()
    runner = JobRunner(connect=on(client), hook=gate)
    gate.runner = runner
    yield runner, gate
    gate.opened.set()  # a test that failed while holding its job lets it go
    runner.stop()


def ended(runner: JobRunner) -> JobStatus:
    eventually(lambda: (s := runner.snapshot()) is not None and not s.active, timeout=120, interval=0.02,
               message=lambda: f"the job did not end: {runner.snapshot()}")
    status = runner.snapshot()
    assert status is not None
    return status


def test_a_job_on_its_own_local_cluster_is_stored_equal_to_the_in_process_scan(store_root, tmp_path):
    reports: list[tuple[int, int]] = []
    runner = JobRunner(hook=lambda done, total: reports.append((done, total)))
    planned = plan(request_of(store_root, block_size=2))
    runner.start(planned, tmp_path / "runs", workers=1)
    status = ended(runner)
    assert status.state == DONE and status.error is None, status
    assert status.done == status.total == 10 and reports[0] == (0, 10) and reports[-1] == (10, 10)
    assert status.eta_s == 0.0 and status.run is not None and status.run.startswith("scan-")
    table, parameters = load_scan(tmp_path / "runs" / status.run)
    reference = scan_in_process(planned.spec).table
    pd.testing.assert_frame_equal(table[["y", "x", "eg_pvalue", "q_value", "beta"]],
                                  reference[["y", "x", "eg_pvalue", "q_value", "beta"]], check_exact=True)
    assert parameters["symbols"] == list(SYMBOLS)


def test_a_walk_forward_job_is_stored_equal_to_the_in_process_one(client, store_root, tmp_path):
    runner = JobRunner(connect=on(client))
    planned = plan(request_of(store_root, kind="walk", symbols=SYMBOLS[:3], formation="12h", trading="6h"))
    runner.start(planned, tmp_path / "runs")
    status = ended(runner)
    assert status.state == DONE and status.run is not None and status.run.startswith("walk-"), status
    rows, summary, _ = load_walk(tmp_path / "runs" / status.run)
    assert planned.settings is not None
    reference = walk_in_process(planned.spec, planned.settings)
    pd.testing.assert_frame_equal(summary, reference.summary, check_exact=True)
    pd.testing.assert_frame_equal(rows, reference.rows, check_dtype=False, check_exact=True)


def test_only_the_owner_cancels_and_then_nothing_is_stored(gated, client, store_root, tmp_path):
    runner, gate = gated
    token = runner.start(plan(request_of(store_root)), tmp_path / "runs")
    assert gate.held.wait(60)
    status = runner.snapshot()
    assert status is not None and status.state == "running" and 0 < status.done < status.total == 10
    assert status.submitted and status.eta_s > 0 and not status.cancelling
    assert not runner.cancel("someone else's token") and not runner.cancel(None)
    assert not runner.snapshot().cancelling  # type: ignore[union-attr]
    assert runner.cancel(token)
    status = ended(runner)
    assert status.state == CANCELLED and status.run is None
    assert status.error is not None and "cancelled after" in status.error and "nothing stored" in status.error
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
    eventually(lambda: not any(client.processing().values()), timeout=30, message="tasks still running")
    assert not runner.cancel(token)  # over: nothing left to cancel


def test_a_cancel_after_the_last_block_still_stores_nothing(client, store_root, tmp_path, monkeypatch):
    import research.jobs

    runner = JobRunner(connect=on(client))
    token: list[str] = []
    started = threading.Event()
    real = research.jobs.scan

    def scan_then_cancel(*args: Any, **kwargs: Any) -> Any:
        outcome = real(*args, **kwargs)  # every block done, the table ranked
        assert started.wait(30)
        assert runner.cancel(token[0])  # the owner presses Cancel now, before the result is saved
        return outcome

    monkeypatch.setattr(research.jobs, "scan", scan_then_cancel)
    token.append(runner.start(plan(request_of(store_root)), tmp_path / "runs"))
    started.set()
    status = ended(runner)
    assert status.state == CANCELLED and status.error == "scan cancelled after 10 of 10 pairs; nothing stored"
    assert not (tmp_path / "runs").exists()


def occupy(name: str) -> str:
    """A task that holds its worker until the test sets the cluster-wide event ``name`` (at most 120 s)."""
    from distributed import Event

    Event(name).wait(120)
    return name


def test_a_cancel_stops_at_once_while_a_block_runs(client, store_root, tmp_path):
    hold = f"hold-{uuid.uuid4().hex}"
    blocker = client.submit(occupy, hold, pure=False)
    eventually(lambda: any(client.processing().values()), timeout=30, message="the worker never got busy")
    runner = JobRunner(connect=on(client))
    token = runner.start(plan(request_of(store_root)), tmp_path / "runs")
    try:
        eventually(lambda: runner.snapshot().submitted, timeout=30)  # type: ignore[union-attr]
        assert runner.snapshot().done == 0  # type: ignore[union-attr]  # the one worker is held: no block ran
        assert runner.cancel(token)
        eventually(lambda: not runner.snapshot().active, timeout=30,  # type: ignore[union-attr]
                   message="the cancel waited for a block to finish")
        status = runner.snapshot()
        assert status is not None and status.state == CANCELLED and status.done == 0
        assert status.error == "scan cancelled after 0 of 10 pairs; nothing stored"
    finally:
        Event(hold, client=client).set()
    assert blocker.result(timeout=60) == hold
    assert not (tmp_path / "runs").exists()


def test_a_second_start_while_one_runs_is_refused_naming_the_running_job(gated, store_root, tmp_path):
    runner, gate = gated
    token = runner.start(plan(request_of(store_root)), tmp_path / "runs")
    assert gate.held.wait(60)
    busy = (r"another research job is running: a scan of 5 spot 1m symbols \(10 pairs\), 2024-01-01 00:00 → "
            r"2024-01-03 00:00, started \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC")
    with pytest.raises(JobBusy, match=busy):
        runner.start(plan(request_of(store_root, symbols=SYMBOLS[:2])), tmp_path / "runs")
    gate.opened.set()
    assert ended(runner).state == DONE
    assert not runner.cancel(token)
    runner.start(plan(request_of(store_root, symbols=SYMBOLS[:2])), tmp_path / "runs")  # free again
    assert ended(runner).state == DONE and len(list((tmp_path / "runs").iterdir())) == 2


def test_a_block_failing_on_a_worker_fails_the_job_naming_the_error(client, tmp_path):
    root = make_store(tmp_path / "store")
    planned = plan(request_of(root))
    damaged = Path(ResearchStore(root).path(Market.SPOT, MINUTE, "CCCUSDT", "2024-01"))
    damaged.write_bytes(b"not parquet")  # after the check: the worker's read fails
    runner = JobRunner(connect=on(client))
    runner.start(planned, tmp_path / "runs")
    status = ended(runner)
    assert status.state == FAILED and status.run is None
    assert status.error is not None and status.error.startswith("a block of the scan failed: cannot read ")
    assert "CCCUSDT" in status.error and "Traceback" not in status.error
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_the_servers_shutdown_cancels_a_running_job_and_ends_its_thread(gated, store_root, tmp_path):
    runner, gate = gated
    state = replace(appstate.AppState.build(pushed=False, max_feeds=1), jobs=runner)
    runner.start(plan(request_of(store_root)), tmp_path / "runs")
    assert gate.held.wait(60)
    threads = [t for t in threading.enumerate() if t.name == "research-scan"]
    assert len(threads) == 1
    state.stop()
    assert not threads[0].is_alive()
    status = runner.snapshot()
    assert status is not None and status.state == CANCELLED
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
    with pytest.raises(RuntimeError, match="shutting down"):
        runner.start(plan(request_of(store_root)), tmp_path / "runs")
    state.stop()  # idempotent


@pytest.mark.parametrize(("changes", "error", "message"), [
    ({"start_ms": JAN + BARS * 60_000, "end_ms": JAN}, ScanInputError, "span: from .* is empty"),
    ({"symbols": ()}, ScanInputError, "symbols: a scan needs at least two symbols, got none"),
    ({"symbols": ("AAAUSDT", "../../etc")}, ScanInputError, r"symbols: \.\./\.\./etc not in the store"),
    ({"top": 6}, ConfigError, "top: 6 asked, but only 5 of the 5 symbols have 1m bars"),
    ({"top": 1}, ConfigError, "top: 1 must be >= 2"),
    ({"kind": "walk", "formation": "3D", "trading": "1D"}, ScanInputError, "span: the span .* holds 2880 1m bars"),
    ({"kind": "walk", "formation": "30", "trading": "1D"}, ConfigError, "formation: '30' has no unit"),
    ({"kind": "walk"}, ConfigError, "formation and trading: a walk-forward needs both"),
    ({"kind": "cluster"}, ConfigError, "kind: 'cluster' is not one of scan, walk"),
    ({"store": "/nonexistent/research"}, ScanInputError, "store: no research store at '/nonexistent/research'"),
])
def test_bad_requests_are_named_by_the_one_check(store_root, changes, error, message):
    with pytest.raises(error, match=message):
        plan(request_of(store_root, **changes))


def test_top_n_picks_by_quote_volume_through_the_one_check(store_root):
    store = ResearchStore(store_root)
    volumes = {s: float(store.bars(Market.SPOT, MINUTE, s, JAN, JAN + BARS * 60_000,
                                   columns=("quote_volume",))["quote_volume"].sum()) for s in SYMBOLS}
    expected = tuple(sorted(volumes, key=lambda s: (-volumes[s], s))[:3])
    assert plan(request_of(store_root, top=3)).spec.symbols == expected


def killed_worker(*args: Any, **kwargs: Any) -> Any:
    """What Dask raises when every worker that ran a block died (here without any worker dying)."""
    raise KilledWorker("research-block-0", cast(Any, SimpleNamespace(address="tcp://127.0.0.1:40000")), 3)


def test_workers_dying_on_a_block_fail_the_job_saying_what_usually_kills_them(store_root, tmp_path, monkeypatch):
    # Dask's own text sent the browser to worker logs it cannot see and to a URL; the likely cause is memory.
    monkeypatch.setattr(research.jobs, "scan", killed_worker)
    runner = JobRunner(connect=lambda scheduler=None, workers=None: contextlib.nullcontext(None))
    runner.start(plan(request_of(store_root)), tmp_path / "runs")
    status = ended(runner)
    assert status.state == FAILED and status.error is not None
    assert status.error.startswith("a block of the scan failed: every worker that ran it died")
    assert "memory" in status.error and "smaller block size" in status.error
    assert "worker logs" not in status.error and "http" not in status.error


def test_a_block_too_big_for_the_workers_fails_the_job_before_any_is_submitted(store_root, tmp_path):
    runner = JobRunner(connect=lambda scheduler=None, workers=None: contextlib.nullcontext(SmallWorkers(1_000_000)))
    runner.start(plan(request_of(store_root, block_size=2)), tmp_path / "runs")
    status = ended(runner)
    assert status.state == FAILED and status.error is not None
    assert status.error.startswith("memory: a block of 4 symbols × 2,880 1m bars needs at least "), status.error
    assert not (tmp_path / "runs").exists()
