"""The Scanner tab starts a research run (ui/research_launch.py) through AppTest: progress to the total, the
run stored equal to the in-process scan, listed and selected; cancel by the starting session only; a second
start refused naming the running job; bad input named with no job; a failing block named without a
traceback; an empty research store saying how to fill it."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
from distributed import Client
from streamlit.testing.v1 import AppTest

from domain import Market
from research.cluster import open_client
from research.jobs import CANCELLED, FAILED, JobRunner
from research.request import plan
from research.results import load_walk
from research.scan import load_scan, scan_in_process
from research.walkrun import walk_in_process
from storage.research import ResearchStore
from testkit.research import universe_closes, write_universe
from testkit.waiting import eventually
from tests.test_app_dashboard import APP, ready, sim_env  # noqa: F401  (fixtures by name)
from tests.test_app_research_runs import stored_tab
from tests.test_research_jobs import JAN, MINUTE, SYMBOLS, Gate, make_store, on, request_of
from ui import appstate, research_launch
from ui.plain import unescaped

JAN1, JAN3 = dt.date(2024, 1, 1), dt.date(2024, 1, 3)


@pytest.fixture(scope="module")
def client() -> Iterator[Client]:
    """A local cluster of 1 worker process, closed after the module."""
    with open_client(workers=1) as c:
        yield c


class Launch:
    """The test's server: a research store, a results folder, and a job runner on the module's cluster
    whose progress hook the test holds (:class:`tests.test_research_jobs.Gate`)."""

    def __init__(self, store: str, results: Path, runner: JobRunner, gate: Gate) -> None:
        self.store, self.results, self.runner, self.gate = store, results, runner, gate

    def stored(self) -> list[Path]:
        return sorted(self.results.iterdir()) if self.results.exists() else []


@pytest.fixture
def launch(request, client, monkeypatch) -> Iterator[Launch]:
    data = request.getfixturevalue("sim_env")
    store = make_store(data / "research-store")
    results = data / "runs"
    monkeypatch.setenv("QUANT_RESEARCH_DIR", store)
    monkeypatch.setenv("QUANT_RESULTS_DIR", str(results))
    gate = Gate()
    runner = JobRunner(connect=on(client), hook=gate)
    gate.runner = runner
    state = replace(appstate.AppState.build(pushed=False), jobs=runner)
    monkeypatch.setattr(appstate, "_installed", state)  # the server's state, as server.py installs it
    yield Launch(store, results, runner, gate)
    gate.opened.set()
    state.stop()


def session() -> AppTest:
    return stored_tab(ready(AppTest.from_file(APP, default_timeout=60).run()))


def fill(at: AppTest, symbols: list[str], start: dt.date = JAN1, end: dt.date = JAN3, block: int = 1) -> AppTest:
    at.multiselect(key="launch_symbols_spot_1m").set_value(symbols)
    at.date_input(key="launch_from").set_value(start)
    at.date_input(key="launch_to").set_value(end)
    at.number_input(key="launch_block_size").set_value(block)
    return at.run()


def start(at: AppTest) -> AppTest:
    at.button(key="launch_start").click().run()
    assert not at.exception, at.exception
    return at


def texts(at: AppTest) -> str:
    """Everything the page says in messages, captions and progress bars, unescaped."""
    shown = [e.value for kind in (at.error, at.warning, at.info, at.success, at.caption, at.markdown)
             for e in kind]
    shown += [p.proto.text for p in at.get("progress")]
    return "\n".join(unescaped(str(s)) for s in shown)


def progress_texts(at: AppTest) -> list[str]:
    return [p.proto.text for p in at.get("progress")]


def test_a_scan_started_from_the_tab_is_stored_listed_and_selected(launch):
    at = session()
    assert not launch.stored() and any("No stored research runs" in i.value for i in at.info)
    assert at.multiselect(key="launch_symbols_spot_1m").options == list(SYMBOLS)
    # The span's days are bounded by the stored months (2024-01), defaulting to all of them.
    for key in ("launch_from", "launch_to"):
        shown = at.date_input(key=key).proto
        assert (shown.min, shown.max) == ("2024-01-01", "2024-02-01"), key
    assert (at.date_input(key="launch_from").value, at.date_input(key="launch_to").value) == (
        JAN1, dt.date(2024, 2, 1))
    assert at.number_input(key="launch_block_size").max == 64  # a block's memory grows with its square
    start(fill(at, ["AAAUSDT", "BBBUSDT", "CCCUSDT"]))
    assert launch.gate.held.wait(60)
    at.run()
    assert any(text.startswith("1 of 3 pairs · ETA ") for text in progress_texts(at)), progress_texts(at)
    assert "Running: a scan of 3 spot 1m symbols (3 pairs), 2024-01-01 00:00 → 2024-01-03 00:00" in texts(at)
    assert at.button(key="launch_cancel")  # the owner's
    launch.gate.opened.set()

    def stored() -> bool:
        at.run()
        assert not at.exception, at.exception
        return any("stored as scan-" in unescaped(s.value) for s in at.success)

    eventually(stored, timeout=120, interval=0.2, message=lambda: texts(at))
    (folder,) = launch.stored()
    assert f"stored as {folder.name}" in texts(at)
    assert launch.gate.reports[-1] == (3, 3)
    assert at.selectbox(key="research_run").value == folder.name  # listed, and selected for its owner
    table, parameters = load_scan(folder)
    reference = scan_in_process(plan(request_of(launch.store, symbols=("AAAUSDT", "BBBUSDT", "CCCUSDT"))).spec)
    columns = ["y", "x", "eg_pvalue", "q_value", "beta"]
    pd.testing.assert_frame_equal(table[columns], reference.table[columns], check_exact=True)
    assert parameters["store"] == launch.store and parameters["block_size"] == 1


def test_only_the_starting_session_cancels_and_a_second_start_is_refused_naming_the_job(launch):
    owner, other = session(), session()
    start(fill(owner, ["AAAUSDT", "BBBUSDT", "CCCUSDT", "DDDUSDT"]))
    assert launch.gate.held.wait(60)
    other.run()
    assert "started by another session: it can be cancelled only there" in texts(other)
    assert not [b for b in other.button if b.key == "launch_cancel"]  # read-only
    start(other)  # nothing picked yet: the running job is named first
    refused = [unescaped(e.value) for e in other.error]
    assert any("another research job is running: a scan of 4 spot 1m symbols (6 pairs), 2024-01-01 00:00 → "
               "2024-01-03 00:00, started " in e for e in refused), refused
    owner.run()
    owner.button(key="launch_cancel").click().run()
    assert not owner.exception, owner.exception

    def cancelled() -> bool:
        owner.run()
        return any("was cancelled after" in unescaped(i.value) for i in owner.info)

    eventually(cancelled, timeout=60, interval=0.2, message=lambda: texts(owner))
    status = launch.runner.snapshot()
    assert status is not None and status.state == CANCELLED and status.total == 6
    assert not launch.stored()


def test_bad_input_is_named_and_starts_no_job(launch):
    at = session()
    start(fill(at, ["AAAUSDT", "BBBUSDT"], start=JAN3, end=JAN1))
    span = "span: from 2024-01-03T00:00Z to 2024-01-01T00:00Z is empty; To must be after From"
    assert any(span in unescaped(e.value) for e in at.error), texts(at)
    at.run()  # the page's own refresh: the refusal stays until the form changes
    assert any(span in unescaped(e.value) for e in at.error), texts(at)
    start(fill(at, []))
    assert any("Symbols: pick at least two (picked 0)" in unescaped(e.value) for e in at.error), texts(at)
    at.radio(key="launch_how").set_value("top").run()
    at.number_input(key="launch_top").set_value(9).run()
    start(at)
    assert any("top: 9 asked, but only 5 of the 5 symbols have 1m bars" in unescaped(e.value) for e in at.error)
    at.radio(key="launch_kind").set_value("walk").run()
    at.text_input(key="launch_formation").set_value("30").run()
    start(at)
    assert any("formation: '30' has no unit" in unescaped(e.value) for e in at.error), texts(at)
    assert launch.runner.snapshot() is None and not launch.stored()


def test_a_block_failing_on_a_worker_fails_the_job_named_without_a_traceback(launch):
    damaged = Path(ResearchStore(launch.store).path(Market.SPOT, MINUTE, "BBBUSDT", "2024-01"))
    damaged.write_bytes(b"not parquet")  # listed, so the check passes; the worker's read fails
    at = session()
    launch.gate.opened.set()
    start(fill(at, ["AAAUSDT", "BBBUSDT", "CCCUSDT"]))

    def failed() -> bool:
        at.run()
        assert not at.exception, at.exception
        return any("failed: a block of the scan failed: cannot read " in unescaped(e.value) for e in at.error)

    eventually(failed, timeout=120, interval=0.2, message=lambda: texts(at))
    assert "BBBUSDT" in texts(at) and "Traceback" not in texts(at)
    status = launch.runner.snapshot()
    assert status is not None and status.state == FAILED and not launch.stored()


def test_an_empty_research_store_says_how_to_fill_it(launch, monkeypatch):
    monkeypatch.setenv("QUANT_RESEARCH_DIR", str(Path(launch.store).parent / "empty-store"))
    at = session()
    assert any("python -m cli.archives" in i.value and "research store cannot be read" in i.value
               for i in at.info), texts(at)
    (Path(launch.store).parent / "empty-store").mkdir()
    at.run()
    assert any("holds no Binance spot 1m bars" in unescaped(i.value) and "python -m cli.archives" in i.value
               for i in at.info), texts(at)
    assert not [b for b in at.button if b.key == "launch_start"]
    assert launch.runner.snapshot() is None


def test_a_walk_forward_of_the_top_perpetuals_started_from_the_tab(launch):
    um = ("AAAUSDT", "BBBUSDT", "CCCUSDT", "DDDUSDT")
    write_universe(ResearchStore(launch.store), Market.USDM, MINUTE, um, JAN, universe_closes(um, 2 * 1_440, seed=3))
    at = session()
    at.selectbox(key="launch_venue").set_value(Market.USDM).run()
    assert at.multiselect(key="launch_symbols_um_1m").options == [f"{s}.P" for s in um]  # leg names
    at.radio(key="launch_kind").set_value("walk").run()
    at.radio(key="launch_how").set_value("top").run()
    at.number_input(key="launch_top").set_value(3)
    at.date_input(key="launch_from").set_value(JAN1)
    at.date_input(key="launch_to").set_value(JAN3)
    at.text_input(key="launch_formation").set_value("12h")
    at.text_input(key="launch_trading").set_value("6h")
    launch.gate.opened.set()
    start(at.run())

    def stored() -> bool:
        at.run()
        assert not at.exception, at.exception
        return any("stored as walk-" in unescaped(s.value) for s in at.success)

    eventually(stored, timeout=120, interval=0.2, message=lambda: texts(at))
    (folder,) = launch.stored()
    assert at.selectbox(key="research_run").value == folder.name
    rows, summary, parameters = load_walk(folder)
    expected = plan(request_of(launch.store, kind="walk", market=Market.USDM, top=3, formation="12h",
                               trading="6h"))
    assert parameters["market"] == "um" and parameters["symbols"] == list(expected.spec.symbols)
    assert expected.settings is not None
    reference = walk_in_process(expected.spec, expected.settings)
    pd.testing.assert_frame_equal(summary, reference.summary, check_exact=True)
    assert len(rows) == len(reference.rows) == 3 * len(summary)


def test_a_bad_scheduler_setting_is_named_and_the_stored_runs_stay_usable(launch, monkeypatch):
    monkeypatch.setenv("QUANT_SCHEDULER", "nope")
    at = session()
    assert any("Research runs cannot start: scheduler (QUANT_SCHEDULER): 'nope' must look like tcp://HOST:PORT"
               in unescaped(e.value) for e in at.error), texts(at)
    assert not [b for b in at.button if b.key == "launch_start"]
    assert any("No stored research runs" in i.value for i in at.info)  # the picker is still there


def test_the_month_under_way_offers_no_day_that_has_not_begun(launch, monkeypatch):
    # The store's last month is the one under way (cli.archives builds it from the days that have ended): To
    # used to default to the next month's first day, so a run's span ran weeks into the future (a walk
    # stored windows with no bars at all, every scanned pair a stale z-score).
    monkeypatch.setattr(research_launch, "_today", lambda: dt.date(2024, 1, 2))
    at = session()
    for key in ("launch_from", "launch_to"):
        shown = at.date_input(key=key).proto
        assert (shown.min, shown.max) == ("2024-01-01", "2024-01-03"), key
    assert at.date_input(key="launch_to").value == JAN3  # to the end of today (UTC), excluded
