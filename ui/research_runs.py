"""The Scanner tab's stored research runs: open a scan or a walk-forward study from the results folder,
see its parameters and ranking (or its walk-forward table and chart), export it, and send a pair to the
live page.

The runs are those :func:`research.runs.list_runs` finds in the one folder the server is configured
with (``QUANT_RESULTS_DIR``, default ``<data_dir>/research/scans``); a browser picks a name from that
list, never types a path.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from config import ConfigError
from domain import Leg, Market
from ingestion.sources import same_coins, source_for
from records.safe_csv import to_csv_bytes
from research.runs import SCAN, RunError, RunInfo, StoredRun, list_runs, open_run
from service import MAX_SYMBOLS
from ui.controls import SOURCE_LABELS, Controls
from ui.export import ranking
from ui.labels import Q_VALUE_NOTE
from ui.plain import plain
from ui.universe import VENUE_NAMES, watched_key
from ui.walkforward import walk_forward_chart, walk_forward_table

log = logging.getLogger(__name__)
RUN_KEY = "research_run"  # the selectbox's value: a run's name from the listing
_OPENED = "research_run_opened"  # (name, opened run or the reason it cannot be): read once per pick
_LISTED = "research_runs_listed"  # ((folder, its mtime, TTL period), listing)
LISTING_TTL_S = 30.0
RUN_COLUMNS = ["y", "x", "q_value", "eg_pvalue", "eg_stat", "beta", "half_life", "half_life_time", "corr", "zscore",
               "n_bars", "note"]
WALK_ROW_COLUMNS = ["y", "x", "q_value", "eg_pvalue", "beta", "half_life", "stays", "oos_adf_pvalue",
                    "oos_half_life", "entries", "exits", "oos_return", "oos_pnl", "oos_status", "oos_note"]


def run_label(run: RunInfo, tz: str) -> str:
    """One line of the picker: kind, stored time, market, span, symbols, q < 0.05 — or why it is unreadable."""
    stored = run.stamp.tz_convert(tz)
    head = f"{'Scan' if run.kind == SCAN else 'Walk-forward'} {stored:%Y-%m-%d %H:%M:%S}"
    if run.problem is not None:
        return f"{head} ⚠ unreadable ({run.name})"
    span = "span ?" if run.start is None or run.end is None else f"{run.start:%Y-%m-%d} → {run.end:%Y-%m-%d}"
    significant = "?" if run.significant is None else f"{run.significant:,}"
    market = "" if run.market is None else f"{run.market.value} "
    frame = "" if run.timeframe is None else f"{run.timeframe.name} "
    return f"{head} · {market}{frame}{span} · {len(run.symbols):,} symbols · {significant} q < 0.05"


def with_pair(watched: list[str] | tuple[str, ...], legs: tuple[str, str], limit: int = MAX_SYMBOLS) -> list[str]:
    """``watched`` plus the pair's ``legs`` (kept in their order, each once); the oldest other legs make
    room when that would pass ``limit``."""
    others = [leg for leg in dict.fromkeys(watched) if leg not in legs]
    return [*others[: max(0, limit - 2)], *legs]


def live_page_updates(state: Callable[[str], object], controls: Controls, market: Market, y: str,
                      x: str) -> dict[str, Any]:
    """The session-state changes that put the pair ``y``/``x`` (exchange symbols of ``market``) on the live page.

    ``state``: the session's values by key (``st.session_state.get``). The legs get their leg names
    (``ETHUSDT.P`` on um). The page's source becomes the pair's own venue (``binance`` for spot,
    ``binance-futures`` for um) when it is another one: both legs trade there, so its page checks
    them against its listing and charges funding on perpetuals, and each venue keeps its own
    watched legs, so switching back restores the other page. The pair's legs are added to that
    venue's watched legs (the others stay) and become Y and X.
    """
    legs = (Leg(market, y).name, Leg(market, x).name)
    target = source_for(market)
    key = watched_key(target)
    if target == controls.source:
        current: list[str] | tuple[str, ...] = controls.symbols
    else:
        kept = state(key)
        # Else the page's coins on that venue; an uploaded page's dataset names are no legs and stay behind.
        current = list(kept) if isinstance(kept, list) else [
            name for name in same_coins(target, controls.symbols) if _is_leg(name)]
    watched = with_pair(current, legs)
    # "symbols" is the typed list a page uses when its venue's listing cannot be fetched.
    return {"source": target, key: watched, "symbols": ",".join(watched), "pair_y": legs[0], "pair_x": legs[1]}


def _is_leg(name: str) -> bool:
    try:
        Leg.parse(name)
    except ValueError:
        return False
    return True


def _send(controls: Controls, market: Market, y: str, x: str) -> None:
    # A callback may set widgets' state; assigning it after they are drawn may not.
    for key, value in live_page_updates(st.session_state.get, controls, market, y, x).items():
        st.session_state[key] = value


def render_stored_runs(folder: Path, controls: Controls) -> None:
    """The picker over ``folder``'s runs (newest first), then the picked run."""
    try:
        runs, omitted = _listing(folder)
    except RunError as exc:
        st.error(plain(exc))
        return
    if not runs:
        st.info(f"No stored research runs in {plain(repr(str(folder)))} (QUANT_RESULTS_DIR) on the server: run "
                "`python -m cli.research scan …` with `--results` there.")
        return
    by_name = {run.name: run for run in runs}
    if st.session_state.get(RUN_KEY) not in by_name:
        st.session_state.pop(RUN_KEY, None)  # a run deleted since: back to the newest
    name = st.selectbox("Stored research run", list(by_name), key=RUN_KEY,
                        format_func=lambda n: run_label(by_name[n], controls.tz),
                        help=f"Runs in {plain(folder)} on the server, newest first")
    unreadable = sum(run.problem is not None for run in runs)
    notes = []
    if unreadable:
        notes.append(f"{unreadable} unreadable")
    if omitted:
        notes.append(f"{omitted:,} older runs not listed")
    if notes:
        st.caption(f"{len(runs):,} runs listed ({', '.join(notes)}).")
    run = by_name[str(name)]
    if run.problem is not None:
        st.warning(f"{plain(run.name)} cannot be opened: {plain(run.problem)}.", icon="⚠️")
        return
    opened = _opened(folder, run)
    if isinstance(opened, str):
        st.warning(f"{plain(opened)}.", icon="⚠️")
        return
    _render_parameters(opened.info)
    try:
        if opened.info.kind == SCAN:
            _render_scan(opened, controls)
        else:
            _render_walk(opened, controls)
    except st.errors.StreamlitAPIException:
        raise  # a misuse of Streamlit is this code's bug, not the run's (st.rerun is no Exception)
    except Exception:  # a run no check foresaw: a plain message here, the traceback in the server log
        log.exception("showing the stored research run %s failed", opened.info.name)
        st.error(f"{plain(opened.info.name)} cannot be shown: an internal error (details in the server log).")


def select_run(name: str) -> None:
    """Make the picker list the results folder afresh and show the run ``name`` (a run just stored);
    call before the picker is drawn."""
    st.session_state.pop(_LISTED, None)
    st.session_state[RUN_KEY] = name


def _listing(folder: Path) -> tuple[list[RunInfo], int]:
    """:func:`list_runs`, kept in the session while the folder's entries stay the same (its mtime) and at
    most :data:`LISTING_TTL_S`: the tab reruns every few seconds, and reading 200 runs' parameters costs
    tens of ms. A run damaged since it was listed is still named when opened (:func:`open_run` checks again)."""
    try:
        version = os.stat(folder).st_mtime_ns
    except OSError:
        version = None  # missing (no runs) or unreadable: list_runs says which
    key = (str(folder), version, int(time.monotonic() // LISTING_TTL_S))
    kept = st.session_state.get(_LISTED)
    if isinstance(kept, tuple) and kept[0] == key:
        return kept[1]
    listed = list_runs(folder)
    st.session_state[_LISTED] = (key, listed)
    return listed


def _opened(folder: Path, run: RunInfo) -> StoredRun | str:
    """The run, read once per pick and kept in the session (reruns every few seconds never re-read it)."""
    kept = st.session_state.get(_OPENED)
    if isinstance(kept, tuple) and kept[0] == run.name:  # a run's name is unique (time + random id)
        return kept[1]
    try:
        opened: StoredRun | str = open_run(folder, run.name)
    except RunError as exc:
        opened = f"{run.name} cannot be opened: {exc}".replace(f": {run.name}: ", ": ")
    st.session_state[_OPENED] = (run.name, opened)
    return opened


def _render_parameters(info: RunInfo) -> None:
    with st.expander("Parameters"):
        rows = [{"parameter": str(k), "value": ", ".join(map(str, v)) if isinstance(v, list) else str(v)}
                for k, v in info.parameters.items()]
        st.dataframe(pd.DataFrame(rows, columns=["parameter", "value"]), hide_index=True, width="stretch")


def _render_scan(run: StoredRun, controls: Controls) -> None:
    info = run.info
    assert info.timeframe is not None and info.market is not None  # a readable run has both
    st.caption(Q_VALUE_NOTE)
    max_q = st.number_input("Max q-value", 0.0, 1.0, 0.05, 0.01, format="%.3f", key="run_max_q")
    table = ranking(run.table, info.timeframe.ms)
    shown = table[table["q_value"] <= max_q]
    tested = int(run.table["q_value"].notna().sum())
    st.caption(f"{len(shown):,} of {tested:,} tested pairs with q ≤ {max_q:g}; rank is the place in the whole scan. "
               "Select a row to send that pair to the live page.")
    columns = [c for c in RUN_COLUMNS if c in shown.columns]
    event = st.dataframe(shown[columns], key="run_table", on_select="rerun", selection_mode="single-row",
                         width="stretch")
    rows = [row for row in event.selection.rows if row < len(shown)]
    st.download_button("Stored scan (CSV)", lambda: to_csv_bytes(shown, index_label="rank"), f"{info.name}.csv",
                       "text/csv", key="download_run", on_click="ignore")
    if rows:
        _render_send(str(shown["y"].iloc[rows[0]]), str(shown["x"].iloc[rows[0]]), info.market, controls)


def _render_walk(run: StoredRun, controls: Controls) -> None:
    info = run.info
    assert run.summary is not None and info.market is not None  # a readable walk-forward has both
    st.dataframe(walk_forward_table(run.summary, tz=controls.tz), hide_index=True, width="stretch",
                 key="run_walk_summary")
    st.plotly_chart(walk_forward_chart(run.summary, tz=controls.tz, revision=info.name), key="run_walk_chart",
                    width="stretch")
    windows = sorted(int(w) for w in run.table["window"].unique())
    if not windows:
        st.info("The study holds no pair rows.")
        return
    window = st.selectbox("Window", windows, index=len(windows) - 1, key="run_window",
                          help="Its pairs, ranked by their formation q-value")
    rows_of = run.table[run.table["window"] == window].sort_values("q_value", kind="stable", na_position="last")
    rows_of = rows_of.reset_index(drop=True)
    rows_of.index = pd.RangeIndex(1, len(rows_of) + 1, name="rank")
    columns = [c for c in WALK_ROW_COLUMNS if c in rows_of.columns]
    st.caption(f"Window {window}: {len(rows_of):,} pairs. Select a row to send that pair to the live page.")
    event = st.dataframe(rows_of[columns], key="run_table", on_select="rerun", selection_mode="single-row",
                         width="stretch")
    st.download_button("Walk-forward rows (CSV)", lambda: to_csv_bytes(run.table, index_label="row"),
                       f"{info.name}.csv", "text/csv", key="download_run", on_click="ignore")
    picked = [row for row in event.selection.rows if row < len(rows_of)]
    if picked:
        _render_send(str(rows_of["y"].iloc[picked[0]]), str(rows_of["x"].iloc[picked[0]]), info.market, controls)


def _render_send(y: str, x: str, market: Market, controls: Controls) -> None:
    try:
        legs = (Leg(market, y).name, Leg(market, x).name)
        target = source_for(market)
    except (ValueError, ConfigError) as exc:  # a symbol no leg can carry, a venue without a live source
        st.warning(f"This pair cannot be shown live: {plain(exc)}.")
        return
    if legs == (controls.y, controls.x) and target == controls.source:
        st.caption(f"{legs[0]} / {legs[1]} is the analysed pair.")
        return
    switch = "" if target == controls.source else (
        f" (switches the page from {SOURCE_LABELS.get(controls.source, controls.source)} to {VENUE_NAMES[market]}, "
        "where both legs trade)")
    if st.button(f"Send {legs[0]} / {legs[1]} to the live page", key="run_send", type="primary", on_click=_send,
                 args=(controls, market, y, x), help=f"Watch both legs and analyse them as Y / X{switch}"):
        st.rerun()  # the sidebar and the title are drawn outside this tab's fragment
    if switch:
        st.caption(f"Sending{switch}.")
