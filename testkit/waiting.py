"""Polling with a deadline: what tests wait with instead of sleep-and-hope."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any


def eventually(
    predicate: Callable[[], bool],
    timeout: float = 5.0,
    interval: float = 0.005,
    message: str | Callable[[], str] | None = None,
) -> None:
    """Poll ``predicate`` every ``interval`` seconds until it is true or ``timeout`` seconds pass.

    Raises ``AssertionError`` naming the predicate (or ``message``, which may be a callable
    evaluated at failure time to describe the state) when the deadline passes.
    """
    if poll(predicate, timeout, interval):
        return
    if callable(message):
        message = message()
    name = getattr(predicate, "__qualname__", repr(predicate))
    raise AssertionError(message or f"condition {name} not met within {timeout:.2f} s")


def poll(predicate: Callable[[], bool], timeout: float, interval: float) -> bool:
    """True as soon as ``predicate()`` is; False if it is still false after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return bool(predicate())
        time.sleep(min(interval, remaining))


def in_thread(target: Callable[..., Any], *args: Any) -> tuple[threading.Thread, dict[str, Any]]:
    """Run ``target(*args)`` in a daemon thread; its result (``"result"``) or exception (``"error"``)
    lands in the returned dict, for a test that checks on a call while it waits."""
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["result"] = target(*args)
        except Exception as exc:  # handed to the test to assert on
            out["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out
