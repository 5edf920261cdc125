"""A Dask worker preload that holds a local cluster's start, for tests of a cancel while it starts, and
what tells whether its worker processes are gone (read from /proc).

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


def alive(pid: int) -> bool:
    """Whether process ``pid`` still runs (a zombie does not), read from /proc."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"  # the state follows the parenthesised command name


def child_pids() -> set[int]:
    """This process's live child processes, multiprocessing's resource tracker aside (it outlives every
    cluster); Dask's local worker processes are children of the process that starts the cluster."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes()
        except OSError:  # it ended meanwhile
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[1]) == os.getpid() and fields[0] != "Z" and b"resource_tracker" not in command:
            found.add(int(entry.name))
    return found


def dask_setup(worker: Any) -> None:
    """Dask's preload hook, run in the worker process before it joins the scheduler."""
    from testkit.waiting import poll

    gate = Path(os.environ[GATE_ENV])
    (gate / f"held-{os.getpid()}").touch()
    poll(lambda: (gate / "open").exists(), HOLD_S, 0.05)
