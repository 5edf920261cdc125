"""The Scanner tab's launcher: start a research scan or walk-forward study on Dask, watch it, cancel it.

Shown above the stored-run picker (:mod:`ui.research_runs`). The form names the run (scan or
walk-forward), the venue, the timeframe, the symbols (picked from the research store's listing for
that venue and timeframe, leg names such as ``ETHUSDT.P`` on USDⓈ-M, or the top N by quote volume),
the span in UTC days and the walk-forward windows. Start checks it with
:func:`research.request.plan` (the same check as ``python -m cli.research``) and hands it to the
server's one :class:`research.jobs.JobRunner`: a second start while a job runs is refused with a
message naming that job. The research store and the results folder are the server's settings
(``QUANT_RESEARCH_DIR``, ``QUANT_RESULTS_DIR``), the cluster its ``QUANT_SCHEDULER`` (else a local
cluster); nothing a browser types becomes a path.

While a job runs, a fragment refreshed every second shows its progress (pairs done of the total,
ETA) to every session; only the session that started it has a Cancel button (its owner token is
kept in that session's state). When it is stored, that session's picker lists and selects it.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from pathlib import Path

import pandas as pd
import streamlit as st

from config import ConfigError, scheduler_address
from domain import Leg, Market, Timeframe
from research.jobs import CANCELLED, DONE, FAILED, RUNNING, JobBusy, JobRunner, JobStatus
from research.request import SCAN, WALK, ResearchRequest, plan
from research.scan import DEFAULT_BLOCK_SIZE, ScanInputError, open_store
from storage.errors import StorageError
from ui.labels import TREND_LABELS, format_duration
from ui.plain import plain
from ui.research_runs import select_run
from ui.universe import VENUE_NAMES

TOKEN_KEY = "research_job_token"  # this session's owner token of the job it started
_WATCHED = "research_job_watched"  # the start time (ms) of the active job this session last drew
_SELECT = "research_job_select"  # a run stored by this session's job, to select in the picker
_REFUSED = "research_job_refused"  # (the form's values, why Start refused them, whether it was a busy server)
_STORE_LISTED = "research_store_listed"  # (key, listing) of the research store, see _store_listing
STORE_TTL_S = 30.0
REFRESH_S = 1.0
KIND_LABELS = {SCAN: "Scan", WALK: "Walk-forward"}
TIMEFRAMES = ("1m", "5m", "1s")
PICK, TOP = "pick", "top"
# A block's Gram array grows with the square of its symbols: ~106 MB per worker at 32, ~426 MB at 64
# (1 min bars, L = 55; research/scan.py). Larger blocks are the command line's, with --block-size.
MAX_BLOCK_SIZE = 64
WALK_TRENDS = ("c", "n")


def render_launcher(store_root: str, results: Path, jobs: JobRunner) -> None:
    """The job's progress (when one runs or has ended), then the form that starts one.

    ``store_root``: the research store (the server's setting); ``results``: where runs are stored.
    The cluster is ``QUANT_SCHEDULER``'s (:func:`config.scheduler_address`), else a local one; a bad
    address is named here and leaves the stored runs below usable.
    """
    pending = st.session_state.pop(_SELECT, None)
    if isinstance(pending, str):  # before the picker is drawn: it lists the new run and shows it
        select_run(pending)
    status = jobs.snapshot()
    running = status is not None and status.active
    st.fragment(run_every=REFRESH_S if running else None)(_render_job)(jobs)
    with st.container(border=True):
        st.markdown("**Start a research run**")
        try:
            scheduler = scheduler_address()
        except ConfigError as exc:
            st.error(f"Research runs cannot start: {plain(exc)}.")
            return
        _render_form(store_root, results, jobs, scheduler)


def _render_job(jobs: JobRunner) -> None:
    """The job's progress, Cancel for its owner, or how it ended (a fragment while it runs)."""
    status = jobs.snapshot()
    if status is None:
        return
    owner = jobs.owns(st.session_state.get(TOKEN_KEY))
    if status.active:
        st.session_state[_WATCHED] = status.started_ms
        _render_progress(status, jobs, owner)
        return
    if st.session_state.get(_WATCHED) == status.started_ms:  # it ended since this session last drew it
        del st.session_state[_WATCHED]
        if owner and status.state == DONE and status.run is not None:
            st.session_state[_SELECT] = status.run
        st.rerun()  # the whole page: the form opens again and the picker lists the new run
    _render_outcome(status, owner)


def _render_progress(status: JobStatus, jobs: JobRunner, owner: bool) -> None:
    who = "" if owner else " (started by another session: it can be cancelled only there)"
    st.caption(f"Running: {plain(status.describe())}{who}.")
    if not status.submitted:
        st.progress(0.0, text="Starting the cluster…")
    else:
        text = f"{status.done:,} of {status.total:,} pairs · ETA {eta_text(status.eta_s)}"
        if status.state != RUNNING:
            text = f"{status.total:,} pairs done · storing the result…"
        st.progress(status.done / status.total if status.total else 1.0, text=text)
    if status.cancelling:
        st.caption("Cancelling: every task is being cancelled; nothing will be stored.")
    elif owner and status.state == RUNNING:
        st.button("Cancel", key="launch_cancel", on_click=_cancel, args=(jobs,),
                  help="Stop the run: every task on the cluster is cancelled and nothing is stored")


def _cancel(jobs: JobRunner) -> None:
    jobs.cancel(st.session_state.get(TOKEN_KEY))


def _render_outcome(status: JobStatus, owner: bool) -> None:
    which = "This session's" if owner else "The last"
    what = f"{which} research job — {plain(status.describe())} —"
    if status.state == DONE:
        st.success(f"{what} was stored as {plain(status.run)} in {_seconds(status.elapsed_s)}.")
    elif status.state == FAILED:
        st.error(f"{what} failed: {plain(status.error)}.")
    elif status.state == CANCELLED:
        st.info(f"{what} was cancelled after {status.done:,} of {status.total:,} pairs; nothing was stored.")


def eta_text(seconds: float) -> str:
    """:func:`ui.labels.format_duration` (``"35 s"``, ``"4 min"``, ``"2.1 h"``); ``"?"`` before the first
    block is done (no rate yet: infinite or NaN)."""
    return format_duration(seconds) if math.isfinite(seconds) else "?"


def _seconds(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 60 else eta_text(seconds)


def _store_listing(root: str, market: Market, timeframe: Timeframe) -> tuple[list[str], list[str]]:
    """The store's symbols for ``market``/``timeframe`` and the months any of them holds (oldest first),
    kept in the session for at most :data:`STORE_TTL_S` (the tab reruns every few seconds; listing a
    store of 400 symbols reads 400 folders). ScanInputError or StorageError when it cannot be read."""
    key = (root, market.value, timeframe.name, int(time.monotonic() // STORE_TTL_S))
    kept = st.session_state.get(_STORE_LISTED)
    if isinstance(kept, tuple) and kept[0] == key:
        return kept[1]
    store = open_store(root)
    try:
        symbols = store.symbols(market, timeframe)
        months = sorted({m for symbol in symbols for m in store.months(market, timeframe, symbol)})
    except OSError as exc:
        raise StorageError(f"cannot list the research store {root!r}: {exc}") from None
    listing = (symbols, months)
    st.session_state[_STORE_LISTED] = (key, listing)
    return listing


def _render_form(store_root: str, results: Path, jobs: JobRunner, scheduler: str | None) -> None:
    kind_col, venue_col, frame_col = st.columns(3)
    kind = kind_col.radio("Run", list(KIND_LABELS), format_func=KIND_LABELS.__getitem__, horizontal=True,
                          key="launch_kind")
    market = venue_col.selectbox("Venue", [Market.SPOT, Market.USDM], format_func=VENUE_NAMES.__getitem__,
                                 key="launch_venue")
    frame = frame_col.selectbox("Timeframe", TIMEFRAMES, key="launch_timeframe")
    timeframe = Timeframe.of(frame)
    try:
        symbols, months = _store_listing(store_root, market, timeframe)
    except (ScanInputError, StorageError) as exc:
        st.info(f"The research store cannot be read ({plain(exc)}). Fill it with the archive importer on the "
                "server: `python -m cli.archives --symbols BTCUSDT,ETHUSDT --from 2024-11` (QUANT_RESEARCH_DIR).")
        return
    if not symbols:
        suffix = " --venue um" if market is Market.USDM else ""
        st.info(f"The research store {plain(repr(store_root))} holds no {VENUE_NAMES[market]} {frame} bars. Fill "
                f"it with the archive importer on the server: `python -m cli.archives{suffix} --timeframe {frame} "
                "--symbols BTCUSDT,ETHUSDT --from 2024-11`.")
        return
    if len(symbols) < 2:
        st.info(f"The research store holds only {', '.join(symbols)} for {VENUE_NAMES[market]} {frame}: a run "
                "needs at least two symbols. Import more with `python -m cli.archives` on the server.")
        return
    names = {Leg(market, s).name: s for s in symbols}  # leg name shown -> the store's symbol
    how = st.radio("Symbols", [PICK, TOP], horizontal=True, key="launch_how",
                   format_func={PICK: "Pick from the store", TOP: "Top N by quote volume"}.__getitem__,
                   help="Top N: the symbols with the largest quote volume over the formation span")
    picked: list[str] = []
    top: int | None = None
    if how == PICK:
        # Keyed by venue and timeframe: each listing keeps its own pick.
        picked = st.multiselect(f"Symbols ({len(names):,} in the store)", list(names),
                                key=f"launch_symbols_{market.value}_{frame}", placeholder="Choose at least two")
    else:
        top = int(st.number_input(f"Top N of the {len(names):,} symbols", min_value=2, value=min(20, len(names)),
                                  step=1, key="launch_top"))
    # Bounded by the stored months: a span far past the history would only cost workers memory (its bar grid).
    # The month under way is stored up to its last ended day: no day after today (UTC) holds a bar.
    first = pd.Period(months[0], freq="M").start_time.date()
    last_end = max(first + dt.timedelta(days=1), min((pd.Period(months[-1], freq="M") + 1).start_time.date(),
                                                      _today() + dt.timedelta(days=1)))
    from_col, to_col = st.columns(2)
    start = from_col.date_input("From (UTC)", value=min(_default_start(months), last_end - dt.timedelta(days=1)),
                                min_value=first, max_value=last_end,
                                key="launch_from", help=f"Stored months: {months[0]} to {months[-1]}")
    end = to_col.date_input("To (UTC, excluded)", value=last_end, min_value=first, max_value=last_end,
                            key="launch_to")
    formation = trading = None
    if kind == WALK:
        formation_col, trading_col = st.columns(2)
        formation = formation_col.text_input("Formation window", "30D", key="launch_formation",
                                             help="A duration: 30D, 12h, 90min (a whole number of bars)")
        trading = trading_col.text_input("Trading window", "7D", key="launch_trading",
                                         help="After each formation; windows roll forward by this length")
    with st.expander("Settings"):
        trends = list(TREND_LABELS) if kind == SCAN else list(WALK_TRENDS)
        trend = st.selectbox("Deterministic terms", trends, format_func=TREND_LABELS.__getitem__,
                             key=f"launch_trend_{kind}")
        block_size = int(st.number_input("Symbols per block", min_value=1, max_value=MAX_BLOCK_SIZE,
                                         value=DEFAULT_BLOCK_SIZE, step=1, key="launch_block_size",
                                         help="A task is a block of symbols with itself or another; memory per "
                                              "worker grows with it"))
        cost = float(st.number_input("Cost per leg per side (bps)", min_value=0.0, value=0.0, step=0.5,
                                     key="launch_cost")) if kind == WALK else 0.0
    st.caption(f"Stored in {plain(str(results))} on the server; runs on "
               f"{plain(scheduler) if scheduler else 'a local Dask cluster (one worker per core)'}.")
    # What was asked: a refusal stays on the page (the tab reruns every few seconds) until the form changes.
    form = (kind, market.value, frame, how, tuple(picked), top, start, end, formation, trading, trend, block_size,
            cost)
    if st.button(f"Start the {KIND_LABELS[kind].lower()}", key="launch_start", type="primary"):
        busy = jobs.busy()
        if busy is not None:  # said first: no point in fixing the form while another job holds the server
            st.session_state[_REFUSED] = (form, busy, True)
        else:
            refusal: str | None
            if not isinstance(start, dt.date) or not isinstance(end, dt.date):
                refusal = "From and To: pick a day for each."
            elif how == PICK and len(picked) < 2:
                refusal = f"Symbols: pick at least two (picked {len(picked)})."
            else:
                request = ResearchRequest(kind, store_root, market, timeframe, _ms(start), _ms(end),
                                          symbols=tuple(names[p] for p in picked if p in names) if how == PICK
                                          else None, top=top, trend=str(trend), block_size=block_size,
                                          formation=formation, trading=trading, cost_bps=cost)
                refusal = _start(request, results, jobs, scheduler)
            st.session_state[_REFUSED] = (form, refusal, False)
            if refusal is None:
                st.rerun()  # draw the progress (and its refreshing fragment) in place of the form
    kept = st.session_state.get(_REFUSED)
    if isinstance(kept, tuple) and kept[0] == form and kept[1] is not None:
        if kept[2] and jobs.busy() is None:  # the job that refused it has ended since
            del st.session_state[_REFUSED]
        else:
            st.error(plain(kept[1]))


def _start(request: ResearchRequest, results: Path, jobs: JobRunner, scheduler: str | None) -> str | None:
    """Check ``request`` and start it; None once started (the owner token kept in the session), else
    why not, in plain words."""
    try:
        planned = plan(request)
        token = jobs.start(planned, results, scheduler=scheduler)
    except (ScanInputError, ConfigError, JobBusy) as exc:
        return _for_the_form(str(exc))
    except (StorageError, OSError) as exc:
        return f"The research store cannot be read: {exc}"
    st.session_state[TOKEN_KEY] = token
    return None


def _for_the_form(message: str) -> str:
    """A check's message with the command line's option names as the form's fields."""
    return message.replace("--to must be after --from", "To must be after From")


def _today() -> dt.date:
    """Today's date in UTC (the days the form offers end with it)."""
    return dt.datetime.now(dt.UTC).date()


def _default_start(months: list[str]) -> dt.date:
    """The first day of the month before the last stored one (or of the only one): a span a 30D/7D
    walk-forward fits in."""
    begin = max(pd.Period(months[-1], freq="M") - 1, pd.Period(months[0], freq="M"))
    return begin.start_time.date()


def _ms(day: dt.date) -> int:
    """Midnight UTC of ``day`` in epoch ms."""
    return int(pd.Timestamp(day, tz="UTC").value // 1_000_000)
