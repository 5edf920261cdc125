"""The application state: built by server.py, reached by the page and the /live routes, its feeds the server's.

server.py installs its state in the process that imports it, so these run it in a child process;
the test process itself (like AppTest and ``streamlit run app.py``) has the polled standalone state.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from ui import appstate

ROOT = Path(__file__).resolve().parents[1]

SERVED = """
import asyncio
from dataclasses import replace
from pathlib import Path

import server
from config import Settings
from ui import appstate

state = appstate.current()
assert state is server.STATE and state.pushed, "the page must see the state server.py built"
try:
    appstate.install(replace(state, pushed=False))
except RuntimeError as exc:
    print("second install:", exc)


async def serve_and_stop() -> None:
    async with server.lifespan(server.app) as held:
        assert held == {"state": state}
        feed = state.registry.acquire("tab", Settings.of(source="simulated", data_dir=Path({data!r}), speed=20.0))
        assert feed.running
    print("after shutdown:", state.registry.services(), feed.running, feed.engine.stopped)

asyncio.run(serve_and_stop())
"""


def test_server_py_builds_the_state_the_page_reaches_and_its_shutdown_stops_the_feeds(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUANT_")}
    proc = subprocess.run([sys.executable, "-c", SERVED.replace("{data!r}", repr(str(tmp_path)))], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "second install: install: this process already serves another application state" in proc.stdout
    assert "after shutdown: {} False True" in proc.stdout


def test_without_server_py_the_page_polls_through_its_own_state():
    state = appstate.current()
    assert not state.pushed and appstate.current() is state  # one per process, not one per call


def test_a_page_served_with_pushed_routes_registers_its_query_and_draws_no_polled_panel(tmp_path, monkeypatch):
    """The page reads only the state it is given: with server.py's (pushed), its live panel is the
    stream's, registered under its token with the very query its charts are computed from."""
    from streamlit.testing.v1 import AppTest

    from pairs.shared import ViewQuery

    for key in [k for k in os.environ if k.startswith("QUANT_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("QUANT_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("QUANT_SOURCE", "simulated")
    state = appstate.AppState.build(pushed=True, max_feeds=2)
    monkeypatch.setattr(appstate, "_installed", state)
    try:
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=30).run()
        assert not at.exception
        assert not [m for m in at.metric if m.label == "Z-score"]  # no polled panel beside the pushed one
        page = state.board.get(at.session_state["live_token"])
        assert page is not None and isinstance(page.query, ViewQuery)
        assert (page.query.params.y, page.query.params.x) == (at.selectbox(key="pair_y").value,
                                                             at.selectbox(key="pair_x").value)
        (service,) = state.registry.services().values()
        assert page.service is service
    finally:
        state.stop()
