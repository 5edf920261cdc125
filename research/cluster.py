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
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Iterator
from typing import Any

import dask
from distributed import Client, LocalCluster, WorkerPlugin

from config import ConfigError, parse_scheduler

# Dask's own logs: a local cluster's routine noise (a worker slow to stop under load, "killing")
# is WARNING; what breaks a scan reaches the caller as an exception anyway.
_QUIET = logging.ERROR
CONNECT_TIMEOUT_S = 20.0
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
def _sigint_ignored() -> Iterator[None]:
    """SIGINT ignored while the local cluster starts: the spawned workers inherit the disposition,
    which covers them until :class:`IgnoreInterrupts` runs; the previous handler returns after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, before)


@contextlib.contextmanager
def open_client(scheduler: str | None = None, workers: int | None = None) -> Iterator[Client]:
    """A Dask client on the scheduler at ``scheduler`` (``tcp://HOST:PORT``), else on a local cluster of
    ``workers`` processes (default :func:`default_workers`), one thread each. Closed on exit, the local
    cluster with it. ConfigError naming the setting for a bad address or worker count; OSError
    (naming the address) when nothing answers there within :data:`CONNECT_TIMEOUT_S` seconds."""
    if scheduler is not None:
        address = parse_scheduler(scheduler)
        if workers is not None:
            raise ConfigError("workers: --workers sizes the local cluster; a scheduler's workers are started "
                              "with it (dask worker)")
        try:
            client = Client(address, timeout=CONNECT_TIMEOUT_S, set_as_default=False)
        except (OSError, TimeoutError) as exc:
            raise OSError(f"scheduler {address}: no Dask scheduler answered within {CONNECT_TIMEOUT_S:g} s "
                          f"({exc})") from None
        with client:
            yield client
        return
    count = default_workers() if workers is None else workers
    if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= 256:
        raise ConfigError(f"workers: {workers!r} must be a whole number of worker processes between 1 and 256")
    # Dask's nannies set MALLOC_TRIM_THRESHOLD_ in their workers to hand freed memory back to the OS; setting
    # it turns off glibc's adaptive mmap threshold, so every array over 128 kB is a fresh mmap, faulted in and
    # zeroed page by page: the scan's blocks ran 1.5-2x slower (bench/research_scan.py). A worker's memory
    # is bounded by its block instead (README: peak RSS per worker).
    with _sigint_ignored(), dask.config.set({MALLOC_TRIM: None}):
        cluster = LocalCluster(n_workers=count, threads_per_worker=1, processes=True, host="127.0.0.1",
                               dashboard_address="127.0.0.1:0", silence_logs=_QUIET)
    try:
        client = Client(cluster, set_as_default=False)
    except BaseException:
        with _teardown_quiet():
            cluster.close()
        raise
    try:
        client.register_plugin(IgnoreInterrupts())
        yield client
    finally:
        with _teardown_quiet():
            client.close()
            cluster.close()


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
