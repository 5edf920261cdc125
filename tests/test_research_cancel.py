"""A research run cancelled while its local Dask cluster is still starting (research/cluster.py, research/jobs.py,
ui/appstate.py, cli/research.py): the Scanner tab's Cancel, the server's shutdown and the CLI's Ctrl-C end the
run at once, store nothing and leave no worker process behind; the next run starts.

The start is held by a worker preload (testkit/held_start.py): the worker processes exist and wait at a gate
that the tests never open, so without the cancel the start would wait there for minutes."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import dask
import pytest

from domain import Market, Timeframe
from research.cluster import open_client
from research.jobs import CANCELLED, DONE, JobRunner, JobStatus
from research.request import ResearchRequest, plan
from research.scan import ScanCancelled
from storage.research import ResearchStore
from testkit.held_start import GATE_ENV, HOLD_S, PRELOAD, alive, child_pids, held_pids
from testkit.research import universe_closes, write_universe
from testkit.waiting import eventually
from ui import appstate

ROOT = Path(__file__).resolve().parents[1]
MINUTE = Timeframe.of("1m")
JAN = 1_704_067_200_000  # 2024-01-01T00:00Z
BARS = 1_440
SYMBOLS = ("AAAUSDT", "BBBUSDT", "CCCUSDT")
WORKERS = 2
ENDED_S = 60.0  # a bound on waiting for a cancelled run; the held start alone would wait HOLD_S (120 s)


@pytest.fixture(scope="module")
def store_root(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("research-store")
    write_universe(ResearchStore(str(root)), Market.SPOT, MINUTE, SYMBOLS, JAN,
                   universe_closes(SYMBOLS, BARS, seed=5))
    return str(root)


def request_of(root: str) -> ResearchRequest:
    return ResearchRequest("scan", root, Market.SPOT, MINUTE, JAN, JAN + BARS * MINUTE.ms, block_size=1)


@contextlib.contextmanager
def held(gate: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Local clusters started inside hold their start: each worker process waits at ``gate``."""
    gate.mkdir()
    monkeypatch.setenv(GATE_ENV, str(gate))
    with dask.config.set({"distributed.worker.preload": [PRELOAD]}):
        yield


def wait_held(gate: Path) -> list[int]:
    eventually(lambda: len(held_pids(gate)) == WORKERS, timeout=120, interval=0.05,
               message=lambda: f"the workers never reached the gate: {held_pids(gate)}")
    return held_pids(gate)


def ended(runner: JobRunner, timeout: float = ENDED_S) -> JobStatus:
    eventually(lambda: (s := runner.snapshot()) is not None and not s.active, timeout=timeout, interval=0.02,
               message=lambda: f"the job did not end: {runner.snapshot()}")
    status = runner.snapshot()
    assert status is not None
    return status


def gone(pids: list[int], before: set[int]) -> None:
    eventually(lambda: not any(alive(p) for p in pids) and child_pids() <= before, timeout=ENDED_S,
               message=lambda: f"worker processes left: {[p for p in pids if alive(p)]}, {child_pids() - before}")


def test_a_job_cancelled_while_its_local_cluster_starts_ends_at_once_and_the_next_one_runs(
        store_root, tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.INFO)
    before = child_pids()
    runner = JobRunner()
    results = tmp_path / "runs"
    with held(tmp_path / "gate", monkeypatch):
        token = runner.start(plan(request_of(store_root)), results, workers=WORKERS)
        pids = wait_held(tmp_path / "gate")
    status = runner.snapshot()
    assert status is not None and status.state == "running" and not status.submitted and status.done == 0
    assert not runner.cancel("someone else's token")  # only the owner's cancel counts, as at any other time
    assert runner.cancel(token)
    status = ended(runner)
    assert status.state == CANCELLED and status.done == 0 and status.run is None and not status.submitted
    assert status.error == "the local cluster was still starting: no pair ran, nothing stored"
    gone(pids, before)
    assert not results.exists() or not any(results.iterdir())
    assert not runner.cancel(token)  # over: nothing left to cancel
    runner.start(plan(request_of(store_root)), results, workers=1)  # the next start runs whole
    status = ended(runner, timeout=300)
    assert status.state == DONE and status.run is not None, status
    assert [p.name for p in results.iterdir()] == [status.run]
    logged = [f"{r.name}: {r.getMessage()}" for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]
    assert not logged, logged  # the killed start logs nothing: no traceback, no warning


def test_the_servers_shutdown_while_the_local_cluster_starts_returns_without_a_warning(
        store_root, tmp_path, monkeypatch, caplog):
    before = child_pids()
    runner = JobRunner()
    state = replace(appstate.AppState.build(pushed=False, max_feeds=1), jobs=runner)
    threads = set(threading.enumerate())
    with held(tmp_path / "gate", monkeypatch):
        runner.start(plan(request_of(store_root)), tmp_path / "runs", workers=WORKERS)
        pids = wait_held(tmp_path / "gate")
    (thread,) = [t for t in set(threading.enumerate()) - threads if t.name == "research-scan"]
    with caplog.at_level(logging.WARNING):
        state.stop()  # waits at most research.jobs.STOP_WAIT_S, then warns that the job did not stop
    assert not thread.is_alive()
    assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    status = runner.snapshot()
    assert status is not None and status.state == CANCELLED
    gone(pids, before)
    assert not (tmp_path / "runs").exists()


def test_open_client_gives_up_a_cancelled_local_start_and_kills_its_workers(tmp_path, monkeypatch):
    before = child_pids()
    cancel = threading.Event()
    outcome: dict[str, BaseException] = {}

    def start() -> None:
        try:
            with open_client(workers=WORKERS, cancel=cancel):
                pass
        except BaseException as exc:  # handed to the test
            outcome["error"] = exc

    with held(tmp_path / "gate", monkeypatch):
        starter = threading.Thread(target=start, daemon=True)
        starter.start()
        pids = wait_held(tmp_path / "gate")
    cancel.set()
    starter.join(ENDED_S)
    assert not starter.is_alive(), "open_client waited for the held start"
    assert isinstance(outcome.get("error"), ScanCancelled), outcome
    gone(pids, before)
    eventually(lambda: not [t for t in threading.enumerate() if t.name.startswith("local-cluster-")], timeout=ENDED_S,
               message=lambda: f"threads left: {threading.enumerate()}")  # the start's and the killer's


def test_ctrl_c_while_the_local_cluster_starts_exits_130_at_once(store_root, tmp_path):
    """A terminal's Ctrl-C signals the whole process group: the CLI gives the start up, exits 130, stores
    nothing, prints no traceback, and leaves no worker process."""
    gate, results, err_path = tmp_path / "gate", tmp_path / "scans", tmp_path / "stderr.txt"
    gate.mkdir()
    env = {**os.environ, GATE_ENV: str(gate), "DASK_DISTRIBUTED__WORKER__PRELOAD": f"['{PRELOAD}']"}
    with err_path.open("wb") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "cli.research", "scan", "--store", store_root, "--from", "2024-01-01", "--to",
             "2024-01-02", "--workers", str(WORKERS), "--results", str(results)],
            stdout=subprocess.DEVNULL, stderr=err, cwd=ROOT, env=env, start_new_session=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # as a foreground job has it
        try:
            pids = wait_held(gate)
            os.killpg(process.pid, signal.SIGINT)
            assert process.wait(timeout=ENDED_S) == 130
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=30)
    text = err_path.read_text()
    assert "cancelled: the local cluster was still starting: no pair ran, nothing stored" in text, text
    assert "Traceback" not in text and "KeyboardInterrupt" not in text, text
    eventually(lambda: not any(alive(p) for p in pids), timeout=ENDED_S,
               message=lambda: f"worker processes left: {[p for p in pids if alive(p)]}")
    assert not results.exists() or not any(results.iterdir())


def test_a_cancel_while_connecting_to_a_scheduler_that_does_not_answer_ends_at_once(monkeypatch):
    """A scheduler address where something accepts the connection and never answers: the connect would wait
    CONNECT_TIMEOUT_S; the cancel ends it at once."""
    import research.cluster

    monkeypatch.setattr(research.cluster, "CONNECT_TIMEOUT_S", 2 * HOLD_S)
    cancel = threading.Event()
    outcome: dict[str, BaseException] = {}
    with socket.socket() as mute:
        mute.bind(("127.0.0.1", 0))
        mute.listen()
        mute.settimeout(60)
        address = f"tcp://127.0.0.1:{mute.getsockname()[1]}"

        def connect() -> None:
            try:
                with open_client(address, cancel=cancel):
                    pass
            except BaseException as exc:  # handed to the test
                outcome["error"] = exc

        connecting = threading.Thread(target=connect, daemon=True)
        connecting.start()
        accepted, _ = mute.accept()  # the client is waiting for the scheduler's answer
        with accepted:
            cancel.set()
            connecting.join(ENDED_S)
            assert not connecting.is_alive(), "open_client waited for the scheduler's answer"
    error = outcome.get("error")
    assert isinstance(error, ScanCancelled), outcome
    assert str(error) == f"still connecting to the scheduler at {address}: no pair ran, nothing stored"
