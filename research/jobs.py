"""Research runs started from the dashboard: one job at a time per server, run in a thread, watched and
cancelled through a frozen status.

:class:`JobRunner` belongs to the server's shared state (:class:`ui.appstate.AppState`). Its
:meth:`~JobRunner.start` takes a checked :class:`research.request.ResearchPlan` and runs it in a
daemon thread: a Dask client (:func:`research.cluster.open_client`: the scheduler at the configured
address, else a local cluster started for the job and closed after it), the distributed scan or
walk-forward with a progress callback, then the result stored whole in the results folder
(:func:`research.scan.save_scan`, :func:`research.results.save_walk`). A second start while a job
runs is refused (:class:`JobBusy`, naming the running job: kind, symbols, span, start time).

:meth:`~JobRunner.snapshot` returns a :class:`JobStatus` (frozen): the state, pairs done of the
total, elapsed seconds and the ETA (:func:`research.scan.eta_seconds`), the stored run's name, or
the error in plain words (never a traceback).

Cancel: :meth:`~JobRunner.start` returns an owner token; only :meth:`~JobRunner.cancel` with that
token cancels (a browser session keeps it; the others watch read-only). A cancel is a flag the
progress callback turns into :class:`research.scan.ScanCancelled`, and it also cancels the job's
submitted futures at once (:func:`research.scan.run_blocks`'s ``submitted``), so the gather stops
without waiting for the blocks running on the workers (a local cluster's worker processes are
killed with it; a remote worker finishes its block and drops it). A cancel while the local cluster
starts gives the start up at once (:func:`research.cluster.open_client`'s ``cancel``). Nothing is
stored. :meth:`~JobRunner.stop` (the server's shutdown) cancels whatever runs and waits a bounded
time for the thread to end.
"""

from __future__ import annotations

import functools
import logging
import math
import secrets
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from distributed import Client

from config import ConfigError
from research.cluster import open_client
from research.request import ResearchPlan
from research.results import save_walk
from research.scan import (
    Progress,
    ScanCancelled,
    ScanInputError,
    block_failure,
    cancel_futures,
    eta_seconds,
    save_scan,
    scan,
)
from research.walkrun import walk_distributed
from storage.errors import StorageError

log = logging.getLogger(__name__)

RUNNING, SAVING, DONE, FAILED, CANCELLED = "running", "saving", "done", "failed", "cancelled"
ACTIVE = frozenset({RUNNING, SAVING})
STOP_WAIT_S = 10.0  # how long a server's shutdown waits for a cancelled job's thread to end

Connect = Callable[[str | None, int | None], AbstractContextManager[Client]]


class _Failed(Exception):
    """A job's failure, its message in plain words."""


class JobBusy(RuntimeError):
    """A job was asked to start while another runs; the message names the running one."""


@dataclass(frozen=True, slots=True)
class JobStatus:
    """One look at a research job.

    ``state``: running, saving, done, failed or cancelled; ``done``/``total``: pairs; ``submitted``:
    the tasks are on the cluster (before that, the cluster is starting); ``elapsed_s``: seconds
    since the start (wall clock of this process); ``eta_s``: seconds left at the rate since the
    tasks were submitted (inf before the first block is done); ``started_ms``: when the job started
    (UTC epoch ms); ``run``: the stored run's name once done; ``error``: why it failed, in plain
    words; ``cancelling``: a cancel was asked and waits for the running block.
    """

    kind: str
    market: str
    timeframe: str
    symbols: int
    start_ms: int
    end_ms: int
    started_ms: int
    state: str
    done: int
    total: int
    submitted: bool
    elapsed_s: float
    eta_s: float
    cancelling: bool = False
    run: str | None = None
    error: str | None = None

    @property
    def active(self) -> bool:
        """Running or saving: no other job may start."""
        return self.state in ACTIVE

    def describe(self) -> str:
        """Which job this is, for someone who cannot otherwise tell it apart: kind, symbols, span, start."""
        kind = "scan" if self.kind == "scan" else "walk-forward"
        span = f"{_utc(self.start_ms)} → {_utc(self.end_ms)}"
        started = pd.Timestamp(self.started_ms, unit="ms", tz="UTC")
        return (f"a {kind} of {self.symbols:,} {self.market} {self.timeframe} symbols ({self.total:,} pairs), "
                f"{span}, started {started:%Y-%m-%d %H:%M:%S} UTC")


class _Job:
    """A job's mutable progress; every field read and written under ``lock``."""

    def __init__(self, plan: ResearchPlan, token: str, started_ms: int, started: float) -> None:
        self.plan = plan
        self.token = token
        self.started_ms = started_ms
        self.started = started
        self.lock = threading.Lock()
        self.cancel = threading.Event()
        self.state = RUNNING
        self.done = 0
        self.submitted_at: float | None = None
        self.ended_at: float | None = None
        self.run: str | None = None
        self.error: str | None = None
        self.thread: threading.Thread | None = None
        self.client: Client | None = None  # with the futures below once the blocks are submitted
        self.futures: list[Any] = []

    def status(self, now: float) -> JobStatus:
        spec = self.plan.spec
        with self.lock:
            end = self.ended_at if self.ended_at is not None else now
            rate_since = self.submitted_at
            eta = math.inf if rate_since is None else eta_seconds(self.done, self.plan.pairs, end - rate_since)
            return JobStatus(self.plan.kind, spec.market.value, spec.timeframe.name, len(spec.symbols),
                             spec.start_ms, spec.end_ms, self.started_ms, self.state, self.done, self.plan.pairs,
                             self.submitted_at is not None, max(0.0, end - self.started), eta,
                             self.cancel.is_set() and self.state in ACTIVE, self.run, self.error)


class JobRunner:
    """One research job at a time (see the module docstring).

    ``connect(scheduler, workers)``: the Dask client's context manager (default
    :func:`research.cluster.open_client`); ``hook(done, total)``: called on the job's thread at each
    progress report before the cancel flag is read (tests hold a job there); ``clock``: monotonic
    seconds; ``wall``: epoch seconds (the start time shown).
    """

    def __init__(self, *, connect: Connect | None = None, hook: Progress | None = None,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time) -> None:
        self._connect = connect
        self._hook = hook
        self._clock = clock
        self._wall = wall
        self._lock = threading.Lock()
        self._job: _Job | None = None
        self._stopped = False

    def start(self, plan: ResearchPlan, results: Path, *, scheduler: str | None = None,
              workers: int | None = None) -> str:
        """Run ``plan`` in a thread and store its result in ``results``; the owner token that may cancel it.

        JobBusy naming the running job when one runs; RuntimeError once the runner is stopped.
        """
        with self._lock:
            if self._stopped:
                raise RuntimeError("the server is shutting down: no research job can start")
            busy = self.busy()
            if busy is not None:
                raise JobBusy(busy)
            token = secrets.token_urlsafe(16)
            job = _Job(plan, token, int(self._wall() * 1000), self._clock())
            job.thread = threading.Thread(target=self._run, args=(job, results, scheduler, workers), daemon=True,
                                          name=f"research-{plan.kind}")
            self._job = job
            job.thread.start()
        return token

    def busy(self) -> str | None:
        """Why no job can start now, naming the running one; None when one can."""
        status = self.snapshot()
        if status is None or not status.active:
            return None
        return (f"another research job is running: {status.describe()}. One job runs at a time on this server; "
                "wait for it to end (only the session that started it can cancel it)")

    def snapshot(self) -> JobStatus | None:
        """The current (or last) job's status; None when no job has started on this server."""
        job = self._job
        return None if job is None else job.status(self._clock())

    def owns(self, token: object) -> bool:
        """Whether ``token`` is the current job's owner token."""
        job = self._job
        return job is not None and isinstance(token, str) and secrets.compare_digest(token.encode(),
                                                                                     job.token.encode())

    def cancel(self, token: object) -> bool:
        """Ask the running job to stop when ``token`` is its owner's; whether a cancel was asked.
        False for another token, or when the job has already ended or is saving its result."""
        job = self._job
        if job is None or not self.owns(token):
            return False
        with job.lock:
            if job.state != RUNNING:
                return False
            job.cancel.set()
        _cancel_futures(job)
        return True

    def stop(self, timeout: float = STOP_WAIT_S) -> bool:
        """Refuse new jobs, cancel the running one and wait up to ``timeout`` seconds for its thread;
        whether no job thread is left. Idempotent."""
        with self._lock:
            self._stopped = True
            job = self._job
        if job is None or job.thread is None:
            return True
        job.cancel.set()
        _cancel_futures(job)
        job.thread.join(timeout)
        if job.thread.is_alive():
            log.warning("the research job did not stop within %.0f s (a block still runs); it ends with the server",
                        timeout)
            return False
        return True

    def _progress(self, job: _Job) -> Progress:
        def report(done: int, total: int) -> None:
            with job.lock:
                if job.submitted_at is None:
                    job.submitted_at = self._clock()
                job.done = done
            if self._hook is not None:
                self._hook(done, total)
            if job.cancel.is_set():
                raise ScanCancelled(f"{job.plan.kind} cancelled after {done:,} of {total:,} pairs; nothing stored")
        return report

    @staticmethod
    def _submitted(job: _Job, client: Client) -> Callable[[list[Any]], None]:
        def keep(futures: list[Any]) -> None:
            with job.lock:
                job.client, job.futures = client, list(futures)
            if job.cancel.is_set():  # cancelled while the blocks were being submitted
                _cancel_futures(job)
        return keep

    def _run(self, job: _Job, results: Path, scheduler: str | None, workers: int | None) -> None:
        plan = job.plan
        # The default connect watches the job's cancel while a local cluster starts (~25 s on a loaded machine).
        connect = self._connect or functools.partial(open_client, cancel=job.cancel)
        try:
            with connect(scheduler, workers) as client:
                if job.cancel.is_set():  # cancelled while the cluster started
                    raise ScanCancelled("cancelled before any pair ran; nothing stored")
                try:
                    progress, submitted = self._progress(job), self._submitted(job, client)
                    if plan.settings is not None:
                        walked = walk_distributed(client, plan.spec, plan.settings, progress=progress,
                                                  submitted=submitted)
                    else:
                        outcome = scan(client, plan.spec, progress=progress, submitted=submitted)
                except (ScanCancelled, ScanInputError, ConfigError):
                    raise
                except Exception as exc:
                    if job.cancel.is_set():  # the futures were cancelled while blocks ran (Dask's CancelledError)
                        with job.lock:
                            done = job.done
                        raise ScanCancelled(f"{plan.kind} cancelled after {done:,} of {plan.pairs:,} pairs; "
                                            "nothing stored") from None
                    # A block that failed on a worker (after its retries): which error, no traceback.
                    raise _Failed(f"a block of the {plan.kind} failed: {block_failure(exc)}") from None
            with job.lock:  # a cancel asked after the last block still wins: nothing is stored
                cancelled, done = job.cancel.is_set(), job.done
                if not cancelled:
                    job.state = SAVING
            if cancelled:
                raise ScanCancelled(f"{plan.kind} cancelled after {done:,} of {plan.pairs:,} pairs; nothing stored")
            try:
                if plan.settings is not None:
                    folder = save_walk(walked.rows, walked.summary, walked.parameters(), results)
                else:
                    folder = save_scan(outcome, results)
            except (OSError, StorageError, ValueError, TypeError) as exc:
                raise _Failed(f"cannot store the result in the results folder: {exc}") from None
        except ScanCancelled as exc:
            self._end(job, CANCELLED, error=str(exc))
        except (_Failed, ScanInputError, ConfigError) as exc:
            self._end(job, FAILED, error=str(exc))
        except OSError as exc:  # the cluster: no scheduler at the address, a local cluster that cannot start
            self._end(job, FAILED, error=f"cannot start the job on the cluster: {exc}")
        except Exception as exc:  # the thread's last stop: a plain message, the details logged
            log.exception("research %s failed", plan.kind)
            self._end(job, FAILED, error=f"an internal error ({type(exc).__name__}; details in the server log)")
        else:
            self._end(job, DONE, run=folder.name)

    def _end(self, job: _Job, state: str, *, run: str | None = None, error: str | None = None) -> None:
        with job.lock:
            job.state, job.run, job.error = state, run, error
            job.ended_at = self._clock()
        if state == FAILED:
            log.warning("research %s failed: %s", job.plan.kind, error)


def _cancel_futures(job: _Job) -> None:
    """Cancel the job's submitted blocks at once (running ones too: the gather stops waiting for them)."""
    with job.lock:
        client, futures = job.client, list(job.futures)
    if client is not None and futures:
        cancel_futures(client, futures)  # quiet if the cluster is closing: the job's thread reports the outcome


def _utc(ms: int) -> str:
    return f"{pd.Timestamp(ms, unit='ms', tz='UTC'):%Y-%m-%d %H:%M}"
