"""The domain's vocabulary (domain.py): timeframes, regressions and the one window check, and their labels."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from domain import FIVE_MINUTES, ONE_MINUTE, ONE_SECOND, TIMEFRAMES, WINDOW_RANGE, Regression, Timeframe, check_window
from ui.labels import REGRESSION_LABELS, TIMEFRAME_LABELS, timeframe_label


def test_a_timeframe_is_found_by_its_name_or_its_length_and_is_the_same_value():
    assert [Timeframe.of(name) for name in ("1s", "1m", "5m")] == [ONE_SECOND, ONE_MINUTE, FIVE_MINUTES]
    assert [Timeframe.of(ms) for ms in (1_000, 60_000, 300_000)] == list(TIMEFRAMES)
    assert Timeframe.of(np.int64(60_000)) is ONE_MINUTE  # a pandas/numpy integer, as a bar length comes out of a frame
    assert Timeframe.of(ONE_MINUTE) is ONE_MINUTE
    assert (ONE_MINUTE.ms, ONE_MINUTE.name, ONE_MINUTE.seconds) == (60_000, "1m", 60.0)


def test_timeframes_are_ordered_by_length_and_frozen():
    assert sorted(reversed(TIMEFRAMES)) == list(TIMEFRAMES) and ONE_SECOND < ONE_MINUTE < FIVE_MINUTES
    assert max(TIMEFRAMES) is FIVE_MINUTES
    with pytest.raises(dataclasses.FrozenInstanceError):
        ONE_MINUTE.ms = 1


@pytest.mark.parametrize(("key", "message"), [
    ("2m", "timeframe: '2m' is not one of 1s, 1m, 5m"),
    ("1M", "timeframe: '1M' is not one of 1s, 1m, 5m"),
    ("", "timeframe: '' is not one of 1s, 1m, 5m"),
    (5_000, "timeframe_ms: 5000 is not one of 1000, 60000 or 300000"),
    (60_000.0, "timeframe_ms: 60000.0 is not one of 1000, 60000 or 300000"),
    (True, "timeframe_ms: True is not one of 1000, 60000 or 300000"),
    (None, "timeframe_ms: None is not one of 1000, 60000 or 300000"),
    (Timeframe(2_000, "2s"), "timeframe_ms: Timeframe(ms=2000, name='2s') is not one of"),
])
def test_no_other_timeframe_exists_and_the_error_names_what_was_asked(key, message):
    with pytest.raises(ValueError, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        Timeframe.of(key)


@pytest.mark.parametrize("window", [WINDOW_RANGE[0], 60, WINDOW_RANGE[1], np.int64(60)])
def test_the_window_check_returns_a_plain_int_inside_the_range(window):
    checked = check_window(window)
    assert checked == window and type(checked) is int


@pytest.mark.parametrize(("window", "message"), [
    (9, "window: 9 must be between 10 and 200 bars"),
    (201, "window: 201 must be between 10 and 200 bars"),
    (-60, "window: -60 must be between 10 and 200 bars"),
    (np.int64(5), "window: 5 must be between 10 and 200 bars"),
    (True, "window: True must be a whole number of bars between 10 and 200"),
    (60.0, "window: 60.0 must be a whole number of bars between 10 and 200"),
    ("60", "window: '60' must be a whole number of bars between 10 and 200"),
    (None, "window: None must be a whole number of bars between 10 and 200"),
])
def test_the_window_check_names_the_setting_and_the_value(window, message):
    with pytest.raises(ValueError) as raised:
        check_window(window)
    assert str(raised.value) == message


def test_the_settings_alert_rules_and_pair_parameters_share_the_window_check():
    from config import ConfigError, Settings
    from pairs.compute import PairParams
    from records.alerts import AlertRule

    expected = "window: 201 must be between 10 and 200 bars"
    for build in (lambda: Settings.of(window=201), lambda: PairParams("ETHUSDT", "BTCUSDT", window=201),
                  lambda: AlertRule("zscore", ">", 2.0, pair=("ETHUSDT", "BTCUSDT"), window=201)):
        with pytest.raises(ValueError) as raised:
            build()
        assert str(raised.value) == expected
    with pytest.raises(ConfigError):
        Settings.of(window=9)


def test_regression_properties():
    assert [r.value for r in Regression] == ["rolling_ols", "static_ols", "huber", "theil_sen", "kalman"]
    assert {r for r in Regression if r.in_sample} == {Regression.STATIC_OLS, Regression.HUBER, Regression.THEIL_SEN}
    assert {r for r in Regression if r.causal} == {Regression.ROLLING_OLS, Regression.KALMAN}
    assert {r for r in Regression if r.span_free} == {Regression.ROLLING_OLS}
    assert Regression("kalman") is Regression.KALMAN


def test_pair_parameters_take_a_regression_not_its_label():
    from pairs.compute import PairParams

    params = PairParams("ETHUSDT", "BTCUSDT", window=20, regression=Regression.KALMAN)
    assert hash(params) == hash(PairParams("ETHUSDT", "BTCUSDT", window=20, regression=Regression.KALMAN))  # cache key
    assert params.warmup_bars == 50 and not params.span_free  # the prior (30) and a window
    with pytest.raises(ValueError, match=r"regression: 'Rolling OLS' is not one of rolling_ols, static_ols, huber, "
                                         r"theil_sen, kalman"):
        PairParams("ETHUSDT", "BTCUSDT", regression="Rolling OLS")


def test_every_value_has_one_label_and_labels_are_what_users_read():
    assert set(TIMEFRAME_LABELS) == set(TIMEFRAMES) and set(REGRESSION_LABELS) == set(Regression)
    assert [timeframe_label(key) for key in ("1s", 60_000, FIVE_MINUTES)] == ["1 s", "1 min", "5 min"]
    assert REGRESSION_LABELS[Regression.ROLLING_OLS] == "Rolling OLS"
    assert len(set(REGRESSION_LABELS.values())) == len(Regression)
