"""Streamlit dashboard (composition root): pick a source, show live prices and feed health.

Run with ``streamlit run app.py`` (see README). The engine is process-wide, created once per
source by a ``st.cache_resource`` factory; browser tabs only read from it, they never open
connections themselves.
"""

from __future__ import annotations

import atexit
from pathlib import Path

import streamlit as st

from config import ConfigError, Settings, from_env
from ingestion.engine import Engine
from ui.status import feed_is_failing, render_prices, render_status

SOURCE_LABELS = {"binance": "Live Binance", "simulated": "Simulated market", "replay": "Replay file"}


@st.cache_resource(max_entries=3, on_release=lambda engine: engine.stop(), show_spinner=False)
def get_engine(settings: Settings) -> Engine:
    """The one engine for these settings in this server process."""
    engine = Engine(settings)
    engine.start()
    # cache_resource does not promise on_release at interpreter exit; the final flush must not depend on it.
    atexit.register(engine.stop)
    return engine


def choose_settings(base: Settings) -> Settings | None:
    """Sidebar source controls → settings for the engine to show (None if incomplete)."""
    st.sidebar.header("Data source")
    source = st.sidebar.radio(
        "Source", list(SOURCE_LABELS), format_func=SOURCE_LABELS.__getitem__, key="source",
        index=list(SOURCE_LABELS).index(base.source),
    )
    replay_file = base.replay_file
    if source == "replay":
        raw = st.sidebar.text_input("Recorded file (NDJSON or project database)",
                                    value=str(replay_file or ""), key="replay_file")
        if not raw.strip():
            st.info("Enter the path of a recorded tick file to replay.")
            return None
        replay_file = Path(raw.strip())
    try:
        return base.replace(source=source, replay_file=replay_file)
    except ConfigError as exc:
        st.error(f"Invalid setting: {exc}")
        return None


def main() -> None:
    st.set_page_config(page_title="Pair-trading analytics", layout="wide")
    try:
        base = from_env()
    except ConfigError as exc:
        st.error(f"Invalid configuration: {exc}")
        st.stop()
    settings = choose_settings(base)
    if settings is None:
        st.stop()
    try:
        engine = get_engine(settings)
    except (ValueError, OSError) as exc:
        st.error(f"Cannot start the {SOURCE_LABELS[settings.source]} source: {exc}")
        st.stop()

    st.title("Pair-trading analytics")
    auto_refresh = st.sidebar.toggle("Auto-refresh", value=True, key="auto_refresh")

    @st.fragment(run_every=0.5 if auto_refresh else None)
    def live_panel() -> None:
        if st.session_state.get("source") != settings.source:
            st.rerun()  # the source was switched from inside this fragment; redraw the whole page
        status = engine.status()
        if settings.source != "binance":
            st.info(f"Showing {status.label} data: not live market prices.", icon="🧪")
        elif feed_is_failing(status):
            st.error(f"Live Binance is unreachable: {status.last_error}", icon="🚫")
            # A callback may set a widget's state; assigning it after the widget is drawn may not.
            st.button("Switch to the simulated market", key="switch_to_simulated",
                      on_click=st.session_state.update, kwargs={"source": "simulated"})
        render_prices({s: engine.buffer.last(s) for s in settings.symbols})
        render_status(status)

    live_panel()


main()
