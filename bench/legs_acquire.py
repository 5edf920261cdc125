"""What leg names cost a page of one venue: the registry call every page run makes for its feed.

Each page run (every fragment refresh, every tab) asks the server's registry for its feed. With leg
names that call splits the page's legs by venue (``ETHUSDT`` spot, ``ETHUSDT.P`` perpetual) and
resolves them to the source's names before it finds the running service. This times that call for a
page of one venue (``ServiceRegistry.acquire_legs`` where it exists, else ``acquire``: run it on an
older checkout for the baseline) with 2 and 50 watched legs on the spot and futures sources, over
a stand-in service (no feed is started: the registry's own work is what is measured).

    .venv/bin/python bench/legs_acquire.py [--calls 20000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from config import Settings  # noqa: E402
from service import ServiceRegistry  # noqa: E402


class _StandIn:
    """What the registry reads of a running service."""

    def __init__(self, settings: Settings) -> None:
        self.symbols = settings.feed.symbols
        self.failed = self.following = self.finished = False
        self.running = True

    def watch(self, symbols: tuple[str, ...]) -> None:
        self.symbols = tuple(dict.fromkeys((*self.symbols, *symbols)))


def time_calls(source: str, symbols: tuple[str, ...], calls: int, repeats: int = 5) -> float:
    """Median µs per registry call for a page of ``symbols`` on ``source``."""
    registry = ServiceRegistry(4, start=_StandIn)  # type: ignore[arg-type]
    settings = Settings.of(source=source, symbols=symbols)
    call = getattr(registry, "acquire_legs", registry.acquire)
    call("tab", settings)
    samples = []
    for _ in range(repeats):
        began = time.perf_counter()
        for _ in range(calls):
            call("tab", settings)
        samples.append((time.perf_counter() - began) / calls * 1e6)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000)
    args = parser.parse_args()
    print(f"registry call per page run ({'acquire_legs' if hasattr(ServiceRegistry, 'acquire_legs') else 'acquire'}),"
          f" median of 5 × {args.calls:,} calls")
    legs = hasattr(ServiceRegistry, "acquire_legs")  # before leg names, futures symbols were plain
    for source, suffix in (("binance", ""), ("binance-futures", ".P" if legs else "")):
        for count in (2, 50):
            symbols = tuple(f"C{i:03d}USDT{suffix}" for i in range(count))
            print(f"  {source:16s} {count:3d} legs: {time_calls(source, symbols, args.calls):7.1f} µs")


if __name__ == "__main__":
    main()
