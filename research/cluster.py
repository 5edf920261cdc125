"""Where a research scan runs: a local Dask cluster by default, or a running scheduler by address.

Local (no address): one worker process per core, one thread each, on 127.0.0.1 (its HTTP
endpoint on a free loopback port), started and closed with the scan. Remote (``--scheduler
tcp://HOST:8786`` or ``QUANT_SCHEDULER``): the same code on workers started elsewhere
(``dask scheduler``, ``dask worker tcp://HOST:8786``), with this repository importable by the
workers (e.g. ``PYTHONPATH``) and the research store at a path or URL they can all read.

Dask's nanny starts every worker with ``OPENBLAS_NUM_THREADS=1`` (its ``pre-spawn-environ``): one
BLAS thread per worker is also what makes results bit-identical across workers and clusters. The
same setting's ``MALLOC_TRIM_THRESHOLD_`` is left out of a local cluster's workers (see
:func:`open_client`); start remote workers without it as well
(``DASK_CONFIG=docs/dask-worker.yaml dask worker tcp://HOST:8786``).

A cancel (:func:`open_client`'s ``cancel``, or Ctrl-C in the CLI) takes effect at once in every
phase: a local cluster still starting (~25 s on a loaded machine) has its worker processes killed and
the start given up, a connect to a scheduler is dropped, and a cancelled run's local workers are
killed rather than waited for when the cluster closes.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

import dask
from distributed import Client, LocalCluster, WorkerPlugin

from config import ConfigError, parse_scheduler
from research.scan import ScanCancelled

log = logging.getLogger(__name__)
T = TypeVar("T")

# Dask's own logs: a local cluster's routine noise (a worker slow to stop under load, "killing")
# is WARNING; what breaks a scan reaches the caller as an exception anyway.
_QUIET = logging.ERROR
CONNECT_TIMEOUT_S = 20.0
POLL_S = 0.05  # how often a local cluster's start is checked for a cancel, and its cancelled workers killed
ABORT_WAIT_S = 5.0  # how long a cancelled local start may take to give up once its workers are killed
# The nanny's setting that exports MALLOC_TRIM_THRESHOLD_ to its worker (None: not exported).
MALLOC_TRIM = "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_"


def default_workers() -> int:
    """One worker per core this process may use (at least 1)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


class IgnoreInterrupts(WorkerPlugin):
    """Makes a local worker process ignore SIGINT (run in its main thread when it joins the cluster).

    A terminal's Ctrl-C signals the whole process group: the local cluster's worker processes too,
    which would die printing tracebacks while the client cancels the scan and closes the cluster.
    Registered on the cluster, it also reaches the workers the nanny restarts after a crash.
    """

    name = "quant-ignore-sigint"

    def setup(self, worker: Any) -> None:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, signal.SIG_IGN)


@contextlib.contextmanager
def _sigint_blocked() -> Iterator[None]:
    """SIGINT blocked in this thread while it starts another (the one that starts a local cluster): Dask's
    loop thread and the threads that spawn the worker processes inherit the mask, and so do the worker
    processes (a blocked signal stays blocked across fork and exec), which a terminal's Ctrl-C then
    never reaches, even before :class:`IgnoreInterrupts` runs in them. Unlike ignoring SIGINT in the
    whole process, this leaves the caller's own Ctrl-C working while the cluster starts."""
    if not hasattr(signal, "pthread_sigmask"):  # not POSIX: IgnoreInterrupts alone
        yield
        return
    before = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)


@contextlib.contextmanager
def open_client(scheduler: str | None = None, workers: int | None = None, *,
                cancel: threading.Event | None = None) -> Iterator[Client]:
    """A Dask client on the scheduler at ``scheduler`` (``tcp://HOST:PORT``), else on a local cluster of
    ``workers`` processes (default :func:`default_workers`), one thread each. Closed on exit, the local
    cluster with it. ConfigError naming the setting for a bad address or worker count; OSError
    (naming the address) when nothing answers there within :data:`CONNECT_TIMEOUT_S` seconds.

    Cancelled at once: ``cancel`` set (or Ctrl-C in the main thread) while a local cluster starts kills
    its worker processes and raises :class:`research.scan.ScanCancelled`; while connecting to a
    scheduler, the same error at once (the attempt ends in the background). ``cancel`` set when the
    caller's block ends, or the block raising (a cancelled or failed run), kills a local cluster's
    workers before it closes rather than waiting for the blocks they run."""
    cancel = threading.Event() if cancel is None else cancel
    if scheduler is not None:
        address = parse_scheduler(scheduler)
        if workers is not None:
            raise ConfigError("workers: --workers sizes the local cluster; a scheduler's workers are started "
                              "with it (dask worker)")
        client = _Starting(functools.partial(_connect, address), Client.close, "scheduler-connect").wait(cancel)
        if client is None:
            raise ScanCancelled(f"still connecting to the scheduler at {address}: no pair ran, nothing stored")
        with client:
            yield client
        return
    count = default_workers() if workers is None else workers
    if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= 256:
        raise ConfigError(f"workers: {workers!r} must be a whole number of worker processes between 1 and 256")
    cluster = _start_local(count, cancel)
    kill = True  # unless the caller's block ends normally, not cancelled: then the workers are closed gently
    try:
        client = Client(cluster, set_as_default=False)
        try:
            client.register_plugin(IgnoreInterrupts())
            yield client
            kill = cancel.is_set()
        finally:
            with _teardown_quiet():
                client.close()
    finally:
        _close(cluster, kill=kill)


def _connect(address: str) -> Client:
    """A client on the scheduler at ``address``; OSError naming it when nothing answers in time."""
    try:
        return Client(address, timeout=CONNECT_TIMEOUT_S, set_as_default=False)
    except (OSError, TimeoutError) as exc:
        raise OSError(f"scheduler {address}: no Dask scheduler answered within {CONNECT_TIMEOUT_S:g} s "
                      f"({exc})") from None


class _Starting(Generic[T]):
    """``make()`` run in a thread of its own (``name``), so that the caller's thread can watch a cancel,
    and see Ctrl-C, while it waits; SIGINT is blocked in that thread (:func:`_sigint_blocked`). What it
    makes after the caller gave up is handed to ``dispose``."""

    def __init__(self, make: Callable[[], T], dispose: Callable[[T], object], name: str) -> None:
        self._make, self._dispose = make, dispose
        self._lock = threading.Lock()
        self._abandoned = False
        self._made: list[T] = []
        self._error: BaseException | None = None
        self.done = threading.Event()
        with _sigint_blocked():
            threading.Thread(target=self._run, daemon=True, name=name).start()

    def _run(self) -> None:
        try:
            made = self._make()
        except BaseException as exc:  # handed to the waiting thread (a failure after a cancel is of no interest)
            self._error = exc
        else:
            with self._lock:
                abandoned = self._abandoned
                if not abandoned:
                    self._made.append(made)
            if abandoned:
                with contextlib.suppress(Exception):  # nobody is left to tell
                    self._dispose(made)
        finally:
            self.done.set()

    def wait(self, cancel: threading.Event) -> T | None:
        """What was made (or its error raised); None once ``cancel`` is set, or Ctrl-C interrupts this
        (main) thread, first: then ``cancel`` is set and the start is abandoned."""
        try:
            while not self.done.wait(POLL_S) and not cancel.is_set():
                pass
        except KeyboardInterrupt:  # Ctrl-C in the CLI while the cluster starts
            cancel.set()
        with self._lock:
            if cancel.is_set():
                self._abandoned = True
                made, self._made = self._made, []
            else:
                made = self._made
        if cancel.is_set():
            for value in made:  # it was made just as the cancel came
                self._dispose(value)
            return None
        if self._error is not None:
            raise self._error
        return made[0]


def _start_local(count: int, cancel: threading.Event) -> LocalCluster:
    """A started local cluster of ``count`` worker processes; ScanCancelled once ``cancel`` is set (or
    Ctrl-C interrupts the main thread) while it starts (~25 s on a loaded machine): its worker processes
    are killed, so that Dask gives the start up at once (waited for at most :data:`ABORT_WAIT_S` s)."""
    made: list[LocalCluster] = []

    def start() -> LocalCluster:
        # Dask's nannies set MALLOC_TRIM_THRESHOLD_ in their workers to hand freed memory back to the OS; setting
        # it turns off glibc's adaptive mmap threshold, so every array over 128 kB is a fresh mmap, faulted in and
        # zeroed page by page: the scan's blocks ran 1.5-2x slower (bench/research_scan.py). A worker's memory
        # is bounded by its block instead (README: peak RSS per worker).
        with dask.config.set({MALLOC_TRIM: None}):
            return _Cluster(made.append, n_workers=count, threads_per_worker=1, processes=True, host="127.0.0.1",
                            dashboard_address="127.0.0.1:0", silence_logs=_QUIET)

    starting = _Starting(start, functools.partial(_close, kill=True), "local-cluster-start")
    cluster = starting.wait(cancel)
    if cluster is not None:
        return cluster
    with _teardown_quiet():
        reaper = _Reaper(made)
        try:
            # Each nanny's start fails once its worker process is killed; the constructor then closes the rest.
            if not starting.done.wait(ABORT_WAIT_S):
                log.warning("the local cluster's start did not give up within %.0f s of the cancel; it is "
                            "closed when it ends", ABORT_WAIT_S)
        finally:
            reaper.stop()
    raise ScanCancelled("the local cluster was still starting: no pair ran, nothing stored")


class _Cluster(LocalCluster):
    """A LocalCluster that hands itself to ``seen`` before it starts: its constructor returns only once
    every worker has joined, and a cancelled start needs the cluster to kill its worker processes."""

    def __init__(self, seen: Callable[[LocalCluster], None], **options: Any) -> None:
        seen(self)
        super().__init__(**options)


class _Reaper:
    """Kills the worker processes of ``clusters`` every :data:`POLL_S` seconds, in a thread, until stopped:
    a nanny restarts a killed worker, and a cluster starting or closing waits for each worker it has."""

    def __init__(self, clusters: list[LocalCluster]) -> None:
        self._clusters = clusters
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="local-cluster-reaper")
        self._thread.start()

    def _run(self) -> None:
        while True:
            for cluster in list(self._clusters):
                for pid in _worker_pids(cluster):
                    with contextlib.suppress(OSError):  # it has just ended
                        os.kill(pid, signal.SIGKILL)
            if self._stopped.wait(POLL_S):
                return

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(ABORT_WAIT_S)


def _worker_pids(cluster: LocalCluster) -> list[int]:
    """The live worker processes of ``cluster``'s nannies, those still starting included (Dask lists a
    nanny in ``cluster.workers`` only once every worker has joined; its ``_created`` holds each from the
    moment it is made)."""
    try:
        nannies = list(getattr(cluster, "_created", ()))
    except RuntimeError:  # the cluster's loop made another meanwhile: the next round sees it
        return []
    return [pid for nanny in nannies if isinstance(pid := getattr(nanny, "pid", None), int)]


def _close(cluster: LocalCluster, *, kill: bool) -> None:
    """Close a local cluster; ``kill``: its worker processes killed first (a cancelled or failed run
    needs nothing from them, and a gentle close waits seconds for a worker busy with a block)."""
    with _teardown_quiet():
        reaper = _Reaper([cluster]) if kill else None
        try:
            cluster.close()
        finally:
            if reaper is not None:
                reaper.stop()


@contextlib.contextmanager
def _teardown_quiet() -> Iterator[None]:
    """Dask's logs muted while a local cluster closes: closing it in the middle of a cancelled scan
    logs comms closed under pending messages (CRITICAL, with a traceback) and workers killed after
    4 s, which say nothing about the scan; the scan's own errors have reached the caller by then."""
    logger = logging.getLogger("distributed")
    level = logger.level
    logger.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        logger.setLevel(level)
