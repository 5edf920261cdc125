"""Alert rules (create, enable, disable, delete), banners, toasts and the alert history.

The engine evaluates the rules; this module only edits them and shows what the engine stored,
both through the feed's :class:`~service.Service`.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from alerts.rules import parse_rule
from domain import Timeframe
from records import now_ms
from records.safe_csv import to_csv_bytes
from service import Service
from storage.base import AlertRecord, Delivery
from ui.plain import plain

# Alerts stored in the last five minutes (wall clock, so a fast replay does not flash them by) stay on a banner.
BANNER_WINDOW_MS = 5 * 60_000
HISTORY_LIMIT = 500


def delivery_text(delivery: Delivery) -> str:
    """One cell of plain text for an alert's webhook delivery: ``delivered``, ``pending (2 attempts)``,
    ``failed: HTTP 404 Not Found``, or ``–`` when no webhook was configured when it fired."""
    if delivery.state == "pending":
        return f"pending ({delivery.attempts} attempt{'' if delivery.attempts == 1 else 's'})"
    if delivery.state == "failed":
        return f"failed: {delivery.error or 'unknown error'}"
    return "delivered" if delivery.state == "delivered" else "–"


def alerts_frame(records: list[AlertRecord], tz: str) -> pd.DataFrame:
    """History as a table: bar time (display zone), pair, rule, value, threshold, message, webhook delivery."""
    rows = [{"time": pd.Timestamp(r.event.ts_ms, unit="ms", tz="UTC").tz_convert(tz), "pair": r.event.label,
             "rule": r.event.rule_text, "value": r.event.value, "threshold": r.event.threshold,
             "message": r.event.message, "webhook": delivery_text(r.delivery)} for r in records]
    return pd.DataFrame(rows, columns=["time", "pair", "rule", "value", "threshold", "message", "webhook"])


def _iso_utc(ms: int) -> str:
    """``2025-12-15T08:40:00.123Z`` for epoch ms ``ms``, the CSV's time format."""
    return pd.Timestamp(ms, unit="ms", tz="UTC").strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def alerts_csv_frame(records: list[AlertRecord]) -> pd.DataFrame:
    """History for the CSV download, indexed by bar time (UTC): the table's columns without the
    display-only ``webhook`` one, plus delivery_state, delivery_attempts, delivery_error and
    delivered_at (ISO-8601 UTC, empty until delivered)."""
    frame = alerts_frame(records, "UTC").drop(columns=["webhook"])
    frame["delivery_state"] = [r.delivery.state for r in records]
    frame["delivery_attempts"] = pd.Series([r.delivery.attempts for r in records], dtype="int64")
    frame["delivery_error"] = [r.delivery.error or "" for r in records]
    frame["delivered_at"] = ["" if r.delivery.delivered_ms is None else _iso_utc(r.delivery.delivered_ms)
                             for r in records]
    return frame.set_index("time")


def zscore_markers(records: list[AlertRecord], pair_label: str) -> pd.DataFrame | None:
    """Z-score alerts of this pair for the chart: index = bar start (UTC), columns value, message."""
    rows = [r.event for r in records if r.event.metric == "zscore" and r.event.label == pair_label]
    if not rows:
        return None
    index = pd.DatetimeIndex([pd.Timestamp(e.ts_ms, unit="ms", tz="UTC") for e in rows])
    return pd.DataFrame({"value": [e.value for e in rows], "message": [e.message for e in rows]}, index=index)


def render_banners(records: list[AlertRecord], tz: str) -> None:
    """A banner per alert stored in the last five minutes, and a toast per alert new to this session."""
    seen = st.session_state.get("alerts_seen_id")
    newest = max((r.id for r in records), default=0)
    if seen is not None:
        for record in sorted((r for r in records if r.id > seen), key=lambda r: r.id):
            st.toast(plain(record.event.message), icon="🔔")
    st.session_state["alerts_seen_id"] = newest
    now = now_ms()
    for record in records:
        if now - record.created_ms <= BANNER_WINDOW_MS:
            when = pd.Timestamp(record.event.ts_ms, unit="ms", tz="UTC").tz_convert(tz)
            st.warning(f"🔔 {plain(record.event.message)} · bar {when:%H:%M:%S}", icon="⚠️")


def _set_enabled(service: Service, rule_id: int, key: str) -> None:
    service.set_rule_enabled(rule_id, bool(st.session_state[key]))


def _delete(service: Service, rule_id: int) -> None:
    service.delete_rule(rule_id)


def render_alerts_tab(service: Service, pair: tuple[str, str], timeframe_ms: int, window: int, tz: str) -> None:
    """Create rules for the selected pair/timeframe/window, manage them, review the history."""
    with st.form("new_rule", clear_on_submit=False, border=True):
        st.markdown(f"**New rule** for {pair[0]}/{pair[1]} · {Timeframe.of(timeframe_ms).name} bars · window {window}")
        text = st.text_input("Condition", key="rule_text",
                             placeholder="zscore > 2   ·   corr < 0.5   ·   BTCUSDT price crosses above 90000")
        hysteresis_col, cooldown_col = st.columns(2)
        hysteresis = hysteresis_col.number_input("Re-arm band (hysteresis, metric units; 0 = default)", min_value=0.0,
                                                 value=0.0, step=0.1, key="rule_hysteresis")
        cooldown = cooldown_col.number_input("Cooldown (s of market time)", min_value=0.0, value=0.0, step=10.0,
                                             key="rule_cooldown")
        if st.form_submit_button("Add rule"):
            try:
                rule = parse_rule(text, pair=pair, timeframe_ms=timeframe_ms, window=window,
                                  hysteresis=hysteresis or None, cooldown_s=cooldown)
                stored, added = service.add_rule(rule)
            except ValueError as exc:
                st.error(f"Rule not added: {plain(exc)}")
            else:
                (st.success if added else st.info)(
                    f"{'Added' if added else 'Already there'}: {plain(stored.describe())} (rule {stored.id})")

    rules = service.alert_rules()
    # Callbacks run before the next script run, so the list below is drawn with the change applied.
    for rule in rules:
        label_col, toggle_col, delete_col = st.columns([6, 1, 1])
        scope = rule.label if rule.metric == "price" else f"{rule.label}, window {rule.window}"
        unwatched = service.unwatched_legs(rule)
        # The monitor skips a rule on a leg its feed does not watch: say so rather than list it as if armed.
        note = (f" · ⚠️ not evaluated: this feed does not watch {', '.join(unwatched)} (add it to the symbols)"
                if unwatched else "")
        label_col.markdown(f"`{rule.describe()}` · {scope} · {rule.timeframe_label} · hysteresis "
                           f"{rule.hysteresis:g} · cooldown {rule.cooldown_s:g} s{note}")
        toggle_col.toggle("on", value=rule.enabled, key=f"rule_on_{rule.id}", on_change=_set_enabled,
                          args=(service, rule.id, f"rule_on_{rule.id}"))
        delete_col.button("Delete", key=f"rule_delete_{rule.id}", on_click=_delete, args=(service, rule.id))
    if not rules:
        st.caption("No rules yet. The engine evaluates rules on every closed bar, also with no browser open.")
    records = service.alert_history(HISTORY_LIMIT)
    history = alerts_frame(records, tz)
    st.markdown(f"**Alert history** ({len(history)} most recent)")
    st.dataframe(history, hide_index=True, width="stretch", height=260)
    st.download_button("Alert history (CSV)", lambda: to_csv_bytes(alerts_csv_frame(records)),
                       "alerts.csv", "text/csv", key="download_alerts", on_click="ignore")
