"""Feed status panel: source label, connection state, rates, ages, reconnects, gaps."""

from __future__ import annotations

import math

import streamlit as st

from ingestion.binance.split import split_names
from ingestion.history import HistoryProgress
from records import FeedState, FeedStatus, StorageState
from ui.plain import plain


def format_age(seconds: float | None) -> str:
    """'0.4 s', '3 min', or '—' when nothing has arrived yet."""
    if seconds is None or math.isnan(seconds):
        return "—"
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def feed_is_failing(status: FeedStatus) -> bool:
    """True when a live feed is not delivering: not connected, or connected but silent."""
    if status.state in (FeedState.CONNECTING, FeedState.RECONNECTING):
        return status.last_error is not None
    return status.state is FeedState.STOPPED and status.last_error is not None


def partial_outage(status: FeedStatus) -> str | None:
    """What a page must say when some of a split feed's connections are down after failing while others
    flow (the feed is connected and its last tick recent, yet no trades arrive for their legs): which legs,
    and the error; None otherwise (all up, still connecting for the first time, or all down:
    :func:`feed_is_failing`)."""
    if status.state is not FeedState.CONNECTED or not status.silent or status.connections is None:
        return None
    up, total = status.connections
    return (f"{up}/{total} connections up; no trades arrive for {split_names(status.silent)} until theirs is "
            f"back. {status.last_error or ''}").rstrip()


def render_storage_problem(status: FeedStatus) -> None:
    """A banner when what arrives is not being stored (or only with delay); a note when another process stores it."""
    if status.storage_state is StorageState.FAILED:
        lost = f" {status.lost:,} received items were not stored." if status.lost else ""
        st.error(f"Storage failed: {plain(status.storage_detail)}.{lost} Live views continue; history does not.",
                 icon="💾")
    elif status.storage_state is StorageState.RETRYING:
        st.warning(f"Storage is retrying: {plain(status.storage_detail)} (nothing lost so far).", icon="💾")


def render_history_progress(progress: HistoryProgress | None) -> None:
    """'Loading history: ETHUSDT 1m, 2 of 6' while past bars load; what failed, plainly."""
    if progress is None:
        return
    if progress.loading:
        st.info(plain(progress.describe()), icon="⏳")
    for error in progress.errors:
        st.warning(f"History not loaded: {plain(error)}", icon="📉")


def render_status(status: FeedStatus) -> None:
    """Compact health line of metrics plus the last error, if any."""
    state, rate, age, reconnects, gaps = st.columns(5)
    state.metric("Feed", status.state.value)
    rate.metric("Ticks/s", f"{status.ticks_per_s:.1f}")
    age.metric("Last tick age", format_age(status.last_tick_age_s))
    reconnects.metric("Reconnects", status.reconnects)
    gaps.metric("Gaps (missing trades)", f"{status.gaps} ({status.missing_trades})")
    st.caption(
        f"{plain(status.label)} · trades {status.trades:,} · duplicates dropped {status.duplicates:,} · "
        f"parse errors {status.parse_errors} · unknown messages {status.unknown_messages}"
    )
    stored = f"stored {status.stored:,}" if status.storage_state is not StorageState.FOLLOWING else "read-only"
    st.caption(f"Storage **{status.storage_state.value}** · {stored} · {plain(status.storage_detail)}"
               + (f" · rejected {status.rejected:,}" if status.rejected else "")
               + (f" · lost {status.lost:,}" if status.lost else ""))
    if status.rest_banned_until is not None:
        st.warning(f"Exchange REST banned until {status.rest_banned_until} (HTTP 418/429 Retry-After): no gap "
                   "backfill or history loading before then.", icon="⛔")
    if status.last_error:
        st.caption(f"Last error: {plain(status.last_error)}")
