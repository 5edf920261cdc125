"""Dashboard server time and payload per refresh with 24 h of 1 s bars stored.

Stores a simulated day of BTCUSDT/ETHUSDT trades (≈1.5 M ticks → 86,400 1 s bars per symbol,
cached under the temp directory between runs), then drives the real ``app.py`` with
``streamlit.testing.v1.AppTest`` (server side only, no browser). Both sessions below run the page
from the imported ``app`` module, so they share one service registry and one simulated feed, like
two browser tabs on one server:

* full page: one complete script run, 1 s bars, 24 h lookback (first run, which resamples the
  stored day once, reported separately), as ``streamlit run app.py`` serves it (every chart
  refresh builds and sends whole figures);
* full page as ``server.py`` serves it (``make run``): charts drawn once, then extended with the
  bars that closed since the last run (:mod:`ui.live_chart`); one run a second, so that every run
  sees a new closed bar, as a tab does;
* live panel: one run of the 0.5 s fragment's function (prices, hedge ratio, spread, open-bar
  z-score, feed line);
* bytes: the serialized size of the elements a run sends (protobuf ``ByteSize``), which is
  what goes over the WebSocket to the browser for that refresh.

    .venv/bin/python bench/dashboard.py [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from streamlit.testing.v1 import AppTest  # noqa: E402

from ingestion.simulated import SimulatedSource  # noqa: E402
from records import now_ms  # noqa: E402
from storage.sqlite.ticks import SqliteTickStore  # noqa: E402

DAY_S = 24 * 3600


def stored_day(data_dir: Path) -> int:
    """Fill ``data_dir/simulated.sqlite3`` with the simulated day ending now; return the tick count."""
    db = data_dir / "simulated.sqlite3"
    now = now_ms()
    with SqliteTickStore(db) as store:
        # Two small reads: ticks in the last 10 minutes, and ticks from more than 23 h 45 min ago.
        recent = store.ticks("BTCUSDT", start_ms=now - 600_000)
        oldest = store.ticks("BTCUSDT", end_ms=now - (DAY_S - 900) * 1000)
        if len(recent) and len(oldest):
            return store.tick_count()  # a fresh enough day from an earlier run
    db.unlink(missing_ok=True)
    source = SimulatedSource(["BTCUSDT", "ETHUSDT"], seed=7, start_ms=now_ms() - DAY_S * 1000)
    batch = []
    with SqliteTickStore(db) as store:
        for trade in source.generate(DAY_S):
            batch.append(trade)
            if len(batch) == 50_000:
                store.write_batch(batch)
                batch.clear()
        store.write_batch(batch)
        return store.tick_count()


def element_bytes(at: AppTest) -> int:
    """Serialized size of every element the run produced."""
    return sum(node.proto.ByteSize() for node in at._tree if getattr(node, "proto", None) is not None)


def timed_runs(at: AppTest, runs: int, pace_s: float = 0.0) -> list[float]:
    """Server time of ``runs`` script runs (ms); ``pace_s``: at least this long from one run's start to the next."""
    times = []
    for _ in range(runs):
        time.sleep(max(0.0, pace_s - (times[-1] / 1000 if times else pace_s)))  # pacing, not waiting for a state
        start = time.perf_counter()
        at.run()
        times.append((time.perf_counter() - start) * 1000)
        assert not at.exception, at.exception
        assert not at.error, [e.value for e in at.error]  # e.g. the feed could not start: nothing was measured
    return times


PAGE_SCRIPT = """
import app
app.main()
"""

# Prefixed to a page script: the application state as server.py installs it (pushed: the /live routes
# mounted), keeping the feeds of the sessions run before. From then on every session of the process is pushed.
PUSHED_SETUP = """
from dataclasses import replace
from ui import appstate
if not appstate.current().pushed:  # as server.py installs it (the same feeds as the sessions above)
    appstate.install(replace(appstate.current(), pushed=True))
"""

PUSHED_PAGE_SCRIPT = PUSHED_SETUP + PAGE_SCRIPT

LIVE_SCRIPT = """
import streamlit as st
from ui import feed
st.session_state["source"] = "simulated"  # as the sidebar radio would have set it
from domain import Regression
from ui.controls import Controls
from config import from_env
settings = from_env().replace(pair=None)  # as app.main() builds it
controls = Controls("simulated", None, settings.feed.symbols, "ETHUSDT", "BTCUSDT", "1s", "24 h", 60,
                    Regression.ROLLING_OLS,
                    False, 2.0, "normalised", True, "UTC")
feed.render_live_panel(lambda: feed.acquire_service(settings, settings), controls)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    data_dir = Path(tempfile.gettempdir()) / "quant-bench-day"
    data_dir.mkdir(exist_ok=True)
    started = time.perf_counter()
    ticks = stored_day(data_dir)
    print(f"stored: {ticks:,} simulated ticks over 24 h ({time.perf_counter() - started:.1f} s to prepare)")
    for key in [k for k in os.environ if k.startswith("QUANT_")]:
        del os.environ[key]
    os.environ.update(QUANT_SOURCE="simulated", QUANT_DATA_DIR=str(data_dir))
    os.chdir(ROOT)

    at = AppTest.from_string(PAGE_SCRIPT, default_timeout=120)
    at.run()
    at.selectbox(key="lookback").set_value("24 h")
    first = timed_runs(at, 1)[0]
    full = timed_runs(at, args.runs)
    full_bytes = element_bytes(at)

    live = AppTest.from_string(LIVE_SCRIPT, default_timeout=60)
    live.run()
    live_times = timed_runs(live, args.runs * 4)
    live_bytes = element_bytes(live)
    context = live.session_state["live_context"].context
    bars = len(context.recent_spreads) if context is not None else 0

    pushed = AppTest.from_string(PUSHED_PAGE_SCRIPT, default_timeout=120)
    pushed.run()
    pushed.selectbox(key="lookback").set_value("24 h")
    pushed_first = timed_runs(pushed, 1)[0]
    pushed_times = timed_runs(pushed, args.runs * 2, pace_s=1.0)

    print(f"full page, 1 s bars, 24 h lookback : first run {first:,.0f} ms (resamples the stored day once)")
    print(f"full page, later runs (median of {args.runs})  : {statistics.median(full):,.0f} ms "
          f"(min {min(full):,.0f}), {full_bytes / 1024:,.0f} kB of elements")
    print(f"same, as server.py serves it         : first run {pushed_first:,.0f} ms, later runs (one a second, "
          f"median of {args.runs * 2}) {statistics.median(pushed_times):,.0f} ms (min {min(pushed_times):,.0f})")
    print(f"live panel run (median of {args.runs * 4})      : {statistics.median(live_times):,.1f} ms "
          f"(min {min(live_times):,.1f}), {live_bytes / 1024:,.1f} kB of elements")
    print(f"(live z-score window holds {bars} closed spreads)")


if __name__ == "__main__":
    main()
