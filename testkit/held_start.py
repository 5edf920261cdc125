"""A Dask worker preload that holds a local cluster's start, for tests of a cancel while it starts.

Given as ``distributed.worker.preload`` (this file's path) with the environment variable
:data:`GATE_ENV` naming a folder, each worker process writes ``held-<pid>`` there as it starts, then
waits (at most :data:`HOLD_S` seconds) for a file ``open`` there before it joins the cluster: the
cluster's start is held, with its worker processes alive, until the test opens the gate or the
processes are killed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

GATE_ENV = "TESTKIT_WORKER_GATE"
HOLD_S = 120.0  # a bound, so that a worker never outlives a failed test by much
PRELOAD = str(Path(__file__).resolve())


def held_pids(gate: Path) -> list[int]:
    """The worker processes holding at ``gate`` (or that held there)."""
    return sorted(int(p.name.removeprefix("held-")) for p in gate.glob("held-*"))


def dask_setup(worker: Any) -> None:
    """Dask's preload hook, run in the worker process before it joins the scheduler."""
    from testkit.waiting import poll

    gate = Path(os.environ[GATE_ENV])
    (gate / f"held-{os.getpid()}").touch()
    poll(lambda: (gate / "open").exists(), HOLD_S, 0.05)
