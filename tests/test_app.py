"""The Streamlit page through streamlit.testing.v1.AppTest (no browser)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from testkit.waiting import eventually
from ui.plain import unescaped

APP = str(Path(__file__).resolve().parents[1] / "app.py")


@pytest.fixture
def app_env(tmp_path, monkeypatch) -> Iterator[None]:
    for key in [k for k in os.environ if k.startswith("QUANT_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("QUANT_DATA_DIR", str(tmp_path))
    # No test reaches the internet: Binance's REST (history, the symbol picker's list) is refused on
    # loopback unless a test points it at a fake.
    monkeypatch.setenv("QUANT_REST_URL", "http://127.0.0.1:9")
    yield
    st.cache_resource.clear()  # on_release stops every engine the tests started


def metric_labels(at: AppTest) -> list[str]:
    return [m.label for m in at.metric]


def test_simulated_source_shows_prices_and_feed_health(app_env, monkeypatch):
    monkeypatch.setenv("QUANT_SOURCE", "simulated")
    monkeypatch.setenv("QUANT_SPEED", "5")
    at = AppTest.from_file(APP, default_timeout=30).run()
    assert not at.exception
    assert {"BTCUSDT last", "ETHUSDT last", "Hedge ratio β", "Spread", "Z-score"} <= set(metric_labels(at))
    assert any("ticks/s" in c.value and "Feed" in c.value for c in at.caption)
    assert any("SIMULATED" in info.value for info in at.info)  # never mistaken for live data

    def priced() -> bool:
        at.run()
        return all(m.value != "—" for m in at.metric if m.label.endswith(" last"))

    eventually(priced, timeout=20, interval=0.2, message="no simulated prices reached the page")


def test_unreachable_binance_says_why_and_offers_simulated(app_env, monkeypatch):
    monkeypatch.setenv("QUANT_WS_URL", "ws://127.0.0.1:9")  # discard port: connection refused
    monkeypatch.setenv("QUANT_BACKOFF_INITIAL", "0.05")
    monkeypatch.setenv("QUANT_BACKOFF_MAX", "0.2")
    at = AppTest.from_file(APP, default_timeout=30).run()

    def banner() -> bool:
        at.run()
        return any("unreachable" in e.value for e in at.error)

    eventually(banner, timeout=20, interval=0.2, message="no 'unreachable' banner")
    assert any("refused" in e.value.lower() for e in at.error)
    at.button(key="switch_to_simulated").click().run()
    assert at.radio(key="source").value == "simulated"
    assert any("SIMULATED" in info.value for info in at.info)


def test_invalid_configuration_is_reported_not_crashing(app_env, monkeypatch):
    monkeypatch.setenv("QUANT_SYMBOLS", "BTCUSDT,ETH;DROP")
    at = AppTest.from_file(APP, default_timeout=30).run()
    assert not at.exception
    assert any("invalid symbol 'ETH;DROP'" in unescaped(e.value) for e in at.error)


def test_replay_offers_the_files_of_its_folder_and_reports_a_bad_one(app_env, tmp_path):
    at = AppTest.from_file(APP, default_timeout=30).run()
    at.radio(key="source").set_value("replay").run()
    folder = tmp_path / "replays"  # settings.storage.replay_folder: <data_dir>/replays
    assert any("No recorded files to replay" in i.value and str(folder) in unescaped(i.value) for i in at.info)
    folder.mkdir()
    (folder / "notes.txt").write_text("not a tick file\n")
    at.run()
    picker = at.selectbox(key="replay_choice")
    assert picker.options == ["notes.txt"]  # shown by name; the value is an index into the folder listing
    picker.set_value(0).run()
    assert not at.exception
    assert any("notes.txt" in unescaped(e.value) and "unrecognised format" in e.value for e in at.error)
