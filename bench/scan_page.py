"""Hundreds of watched symbols on one feed: does ingestion keep up, and does the page stay responsive?

Starts the real dashboard (``app.py`` through ``streamlit.testing.v1.AppTest``, server side, no
browser, as ``bench/dashboard.py`` does) on the simulated market with ``--symbols`` watched symbols
(default the most a page takes, ``service.MAX_SYMBOLS`` = 200: the five it models after real ones
plus others at 2 trades/s, all times ``--speed``) in a fresh data
directory, so the service, its history loader, writer and alert monitor run in this process,
sharing the interpreter with the page exactly as in ``streamlit run``. Then:

(a) ingestion, sampled every 0.2 s throughout (b) and (c): ticks/s handled by the engine against
    the rate the market emits, the age of the last tick, and the emission lag: how late each
    symbol's last trade reached the engine against the time the paced source scheduled it (a
    source thread starved of the interpreter falls behind its schedule);
(b) full page as ``streamlit run app.py`` serves it (polled: whole figures sent every run), median
    server time of whole script runs (wall, and the CPU time of the script's thread, which a busy
    machine inflates less): Charts tab on 1 s bars (1 h lookback) and on
    1 min bars (24 h lookback); Stats & tests; Scanner tab on 1 min bars: the run that scans
    (button press: every symbol's bars over 24 h, k·(k−1)/2 pairs) and later runs that show the
    kept scan. The universe's bars (heatmap, summaries, scanner) are built once per step in the
    background (``pairs.universe``); runs that overlap such a build share the interpreter with it;
(c) live panel: one run of the 0.5 s fragment's function with every symbol watched;
(d) the same tabs as (b) as ``server.py`` serves them (``make run``: the application state pushed,
    as ``bench/dashboard.py`` sets it up): the charts drawn once and then sent only what changed
    (:mod:`ui.live_chart`), the live panel pushed, not polled.

Runs of (b) and (d) come at the tab's own refresh pace (``CHART_REFRESH_S``: every 2 s on 1 s bars,
10 s on 1 min bars), as a browser's do: back to back, most runs would find nothing new to draw.

Besides time, each path's kilobytes of elements per run (what Streamlit sends for that run).
``--symbols 2`` runs the same with the default pair only, as a reference on the same machine.

    .venv/bin/python bench/scan_page.py [--speed 10] [--runs 5] [--symbols 50]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from streamlit.testing.v1 import AppTest  # noqa: E402

from bench.dashboard import PUSHED_SETUP, element_bytes  # noqa: E402
from domain import Timeframe  # noqa: E402
from ingestion.simulated import KNOWN_SYMBOLS, symbol_spec  # noqa: E402
from service import MAX_SYMBOLS, Service  # noqa: E402
from ui.charts_tab import CHART_REFRESH_S  # noqa: E402


def watched(count: int) -> tuple[str, ...]:
    """``count`` symbols: the five the simulation models after real ones first, then SYM000USDT, …"""
    return (*KNOWN_SYMBOLS, *(f"SYM{i:03d}USDT" for i in range(count)))[:count]


# The script thread's CPU time of each run, kept in the app module (the bench reads it after the run).
PAGE_SCRIPT = """
import time
import app
started = time.thread_time()
app.main()
app.BENCH_CPU_MS = (time.thread_time() - started) * 1000
"""

# The 0.5 s fragment alone, as bench/dashboard.py runs it, with every symbol watched.
LIVE_SCRIPT = """
import streamlit as st
from ui import feed
st.session_state["source"] = "simulated"  # as the sidebar radio would have set it
from domain import Regression
from ui.controls import Controls
from config import from_env
settings = from_env().replace(pair=None)  # as app.main() builds it
controls = Controls("simulated", None, settings.feed.symbols, "ETHUSDT", "BTCUSDT", "1s", "1 h", 60,
                    Regression.ROLLING_OLS,
                    False, 2.0, "normalised", True, "UTC")
feed.render_live_panel(lambda: feed.acquire_service(settings, settings), controls)
"""


@dataclass(frozen=True, slots=True)
class Sample:
    ticks_per_s: float
    last_tick_age_s: float
    lag_s: float  # worst emission lag over the symbols' last trades


class Sampler(threading.Thread):
    """Samples the engine of ``service`` every ``every_s`` seconds until stopped."""

    def __init__(self, service: Service, symbols: tuple[str, ...], every_s: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.service, self.symbols, self.every_s = service, symbols, every_s
        self.samples: list[Sample] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        engine = self.service.engine
        source = engine.source
        started_ms = source.stats.connected_since_ms  # wall time of the paced run's market start_ms
        while not self.stopping.wait(self.every_s):
            status = engine.status()
            lags = []
            for symbol in self.symbols:
                trade = engine.last_trade(symbol)
                if trade is not None:  # scheduled at start + (market time since start) / speed
                    lags.append((trade.recv_ms - started_ms - (trade.ts_ms - source.start_ms) / source.speed) / 1000)
            self.samples.append(Sample(status.ticks_per_s, status.last_tick_age_s or 0.0, max(lags, default=0.0)))


CPU_MS: dict[str, list[float]] = {}  # label → the script thread's CPU time of each run
KB: dict[str, float] = {}  # label → kilobytes of elements of the last run


def timed_runs(at: AppTest, runs: int, label: str | None = None, pace_s: float = 0.0) -> list[float]:
    """Server time of ``runs`` script runs (ms), each starting ``pace_s`` after the one before at the
    earliest; with a ``label``, also their script thread's CPU time and the last run's element bytes."""
    times = []
    next_start = time.monotonic()
    for _ in range(runs):
        time.sleep(max(0.0, next_start - time.monotonic()))  # pacing, as a tab's refresh: not waiting for a state
        next_start = time.monotonic() + pace_s
        start = time.perf_counter()
        at.run()
        times.append((time.perf_counter() - start) * 1000)
        assert not at.exception, at.exception
        assert not at.error, [e.value for e in at.error]
        cpu = getattr(sys.modules.get("app"), "BENCH_CPU_MS", None)
        if label is not None and cpu is not None:
            CPU_MS.setdefault(label, []).append(cpu)
    if label is not None:
        KB[label] = element_bytes(at) / 1024
    return times


def median_ms(times: list[float]) -> str:
    return f"{statistics.median(times):,.0f} ms (min {min(times):,.0f}, max {max(times):,.0f})"


PUSHED = "make run: "  # label prefix of the runs as server.py serves the page


def tab_runs(at: AppTest, runs: int, scans: int, prefix: str = "") -> dict[str, list[float]]:
    """Time ``at``'s page (a session opened on the default view) on each tab: ``runs`` runs each, at
    the tab's refresh pace (:data:`ui.charts_tab.CHART_REFRESH_S`, as a browser's refreshes come),
    after one run that settles the change of view; on the Scanner tab ``scans`` runs that scan first."""
    results: dict[str, list[float]] = {}

    def measure(label: str, timeframe: Timeframe) -> None:
        timed_runs(at, 1)  # the change of view: e.g. the first 24 h run reads the stored day of 1 min bars once
        results[prefix + label] = timed_runs(at, runs, prefix + label, CHART_REFRESH_S[timeframe])

    measure("Charts, 1 s bars, 1 h lookback", Timeframe.of("1s"))
    at.radio(key="timeframe").set_value("1m")
    at.selectbox(key="lookback").set_value("24 h")
    measure("Charts, 1 min bars, 24 h lookback", Timeframe.of("1m"))
    at.session_state["view_tab"] = "Stats & tests"
    measure("Stats & tests, 1 min / 24 h", Timeframe.of("1m"))
    at.session_state["view_tab"] = "Scanner"
    timed_runs(at, 1)
    label = prefix + "Scanner, 1 min / 24 h: run with the scan"
    results[label] = []
    for _ in range(scans):
        at.button(key="scan_run").click()
        results[label] += timed_runs(at, 1, label)
    measure("Scanner, later runs (kept scan)", Timeframe.of("1m"))
    return results


def wait_for_history(service: Service, timeout_s: float = 120.0) -> float:
    start = time.monotonic()
    while (progress := service.history_progress) is not None and progress.loading:
        if time.monotonic() - start > timeout_s:
            raise TimeoutError(f"history still loading after {timeout_s:.0f} s: {progress.describe()}")
        time.sleep(0.1)
    return time.monotonic() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--speed", type=float, default=10.0, help="simulated market seconds per wall second")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--symbols", type=int, default=MAX_SYMBOLS, help="watched symbols (2 for a reference run)")
    args = parser.parse_args()
    symbols = watched(args.symbols)
    data_dir = Path(tempfile.mkdtemp(prefix=f"quant-bench-{args.symbols}-"))
    for key in [k for k in os.environ if k.startswith("QUANT_")]:
        del os.environ[key]
    os.environ.update(QUANT_SOURCE="simulated", QUANT_DATA_DIR=str(data_dir), QUANT_SYMBOLS=",".join(symbols),
                      QUANT_SPEED=f"{args.speed:g}")
    os.chdir(ROOT)
    market_rate = sum(symbol_spec(s).rate_per_s for s in symbols) * args.speed

    at = AppTest.from_string(PAGE_SCRIPT, default_timeout=300)
    (first_page,) = timed_runs(at, 1)
    from ui import appstate  # the page's application state: its registry holds the running service

    (service,) = appstate.current().registry.services().values()
    assert service.symbols == symbols, service.symbols
    history_s = wait_for_history(service)
    print(f"{len(symbols)} symbols, simulated market at {args.speed:g}x: {market_rate:,.0f} trades/s expected; "
          f"first page run {first_page:,.0f} ms, history at open loaded {history_s:.1f} s later")

    sampler = Sampler(service, symbols)
    sampler.start()
    timed_runs(at, 1)  # the first run after the history loaded builds the universe's bars once
    results = tab_runs(at, args.runs, args.runs)
    (result, *_) = at.session_state["scan_results"].values()
    live = AppTest.from_string(LIVE_SCRIPT, default_timeout=60)
    live.run()
    results["live panel (0.5 s fragment)"] = timed_runs(live, args.runs * 4)
    # As make run serves the page: a new session (a browser tab) on the same feed, every session pushed from now on.
    pushed = AppTest.from_string(PUSHED_SETUP + PAGE_SCRIPT, default_timeout=300)
    timed_runs(pushed, 1)
    results.update(tab_runs(pushed, args.runs, 1, PUSHED))
    sampler.stopping.set()
    sampler.join()

    for label, times in results.items():
        cpu = CPU_MS.get(label)
        print(f"{label:<52}: {median_ms(times)}" + (f"; script thread CPU {median_ms(cpu)}" if cpu else "")
              + (f"; {KB[label]:,.0f} kB of elements" if label in KB else ""))
    print(f"universe bars built {service.universe.built} times")
    print(f"(scan: {result.n_bars:,} closed 1 min bars x {len(result.symbols)} symbols, {len(result.table):,} "
          f"pair(s), {len(result.tested):,} tested)")
    samples = sampler.samples
    rates = [s.ticks_per_s for s in samples]
    lags = [s.lag_s for s in samples]
    ages = [s.last_tick_age_s for s in samples]
    status = service.status()
    print(f"engine while the page ran ({len(samples)} samples over {sum(map(sum, results.values())) / 1000:.0f} s): "
          f"ticks/s median {statistics.median(rates):,.0f} (min {min(rates):,.0f}) of {market_rate:,.0f} emitted; "
          f"emission lag median {statistics.median(lags) * 1000:,.0f} ms, max {max(lags) * 1000:,.0f} ms; "
          f"last tick age max {max(ages) * 1000:,.0f} ms")
    print(f"trades {status.trades:,}, stored {status.stored:,} (writer {status.storage_state.value}); "
          f"load average at the end {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    appstate.current().stop()


if __name__ == "__main__":
    main()
