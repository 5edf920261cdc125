import itertools
import math
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alerts.evaluator import AlertEvaluator, RuleState, evaluate
from alerts.monitor import metric_series
from alerts.rules import parse_rule
from records.alerts import AlertEvent, AlertRule

PAIR = ("ETHUSDT", "BTCUSDT")
T0 = 1_765_788_000_000  # a bar open time, epoch ms
NAN = math.nan


def rule(operator: str = ">", threshold: float = 2.0, hysteresis: float = 0.5, cooldown_s: float = 0.0,
         metric: str = "zscore", **kwargs) -> AlertRule:
    return AlertRule(metric, operator, threshold, pair=PAIR, hysteresis=hysteresis, cooldown_s=cooldown_s, **kwargs)


def fired_at(r: AlertRule, values: list[float], step_ms: int = 1_000) -> list[int]:
    """Indices of ``values`` (one per bar, ``step_ms`` apart) on which ``r`` fired."""
    state, fired = RuleState(), []
    for i, value in enumerate(values):
        state, hit = evaluate(r, state, T0 + i * step_ms, value)
        if hit:
            fired.append(i)
    return fired


def test_greater_than_fires_once_while_the_condition_stays_true():
    assert fired_at(rule(">"), [0.0, 2.1, 2.5, 3.0, 2.2]) == [1]


def test_a_rule_true_on_its_first_observation_fires():
    # '>' is a level condition: z already at 3 when the rule is created is worth telling.
    assert fired_at(rule(">"), [3.0]) == [0]


def test_oscillation_inside_the_band_fires_once():
    # Threshold 2, band 0.5: dips to 1.6 never go below 1.5, so the rule stays disarmed.
    values = [1.0, 2.01, 1.99, 2.02, 1.6, 2.3, 1.51, 2.05]
    assert fired_at(rule(">"), values) == [1]


def test_leaving_the_band_re_arms_and_the_next_crossing_fires_again():
    values = [1.0, 2.1, 1.6, 2.1, 1.4, 1.9, 2.1, 2.4]
    assert fired_at(rule(">"), values) == [1, 6]


def test_the_band_edge_itself_does_not_re_arm():
    # Re-arming needs value < t - h strictly: 1.5 is still inside the band.
    assert fired_at(rule(">"), [2.1, 1.5, 2.1]) == [0]


def test_less_than_is_symmetric():
    r = rule("<", threshold=-2.0)
    assert fired_at(r, [0.0, -2.1, -1.6, -2.2, -1.4, -2.1]) == [1, 5]


def test_zero_hysteresis_re_arms_as_soon_as_the_condition_is_false():
    assert fired_at(rule(">", hysteresis=0.0), [2.1, 2.0, 2.1, 1.99, 2.1]) == [0, 4]


def test_crosses_above_needs_a_previous_value_below():
    r = rule("crosses_above", threshold=12.5, hysteresis=0.0, metric="spread")
    assert fired_at(r, [13.0, 14.0]) == []  # the first observation only primes
    assert fired_at(r, [12.0, 12.5]) == [1]  # reaching the level counts as crossing it
    assert fired_at(r, [12.0, 13.0, 12.4, 12.6]) == [1, 3]
    assert fired_at(r, [12.5, 13.0]) == []  # starting exactly at the level is not below it


def test_crosses_above_re_arms_only_below_the_band():
    r = rule("crosses_above", threshold=12.5, hysteresis=1.0, metric="spread")
    assert fired_at(r, [12.0, 13.0, 12.0, 13.0, 11.4, 13.0]) == [1, 5]


def test_crosses_below_is_symmetric():
    r = rule("crosses_below", threshold=0.5, hysteresis=0.05, metric="corr")
    assert fired_at(r, [0.4, 0.3]) == []
    assert fired_at(r, [0.6, 0.5, 0.52, 0.49, 0.56, 0.45]) == [1, 5]


def test_cooldown_is_measured_in_market_time():
    r = rule(">", hysteresis=0.0, cooldown_s=60.0)
    # One bar per 10 s of market time: the second crossing (at 20 s) falls inside the cooldown,
    # stays armed and fires at 60 s, the first bar after the cooldown where z is still above.
    values = [2.5, 1.0, 2.5, 2.6, 2.7, 2.8, 2.9, 3.0]
    assert fired_at(r, values, step_ms=10_000) == [0, 6]
    # The same values a minute apart are all outside the cooldown.
    assert fired_at(r, values, step_ms=60_000) == [0, 2]


def test_a_crossing_during_the_cooldown_is_not_remembered():
    r = rule("crosses_above", hysteresis=0.0, cooldown_s=60.0)
    values = [1.0, 2.5, 1.0, 2.5, 2.6, 2.7, 2.8, 2.9, 1.0, 2.5]
    assert fired_at(r, values, step_ms=10_000) == [1, 9]


@pytest.mark.parametrize("bad", [NAN, math.inf, -math.inf])
def test_non_finite_values_neither_fire_nor_re_arm(bad):
    r = rule(">")
    assert fired_at(r, [bad, bad, 2.5]) == [2]
    assert fired_at(r, [2.5, bad, bad, 2.5]) == [0]
    state = RuleState(armed=False, previous=2.5, last_fired_ms=T0)
    assert evaluate(r, state, T0 + 1_000, bad) == (state, False)


def test_a_crossing_across_a_nan_gap_still_counts():
    r = rule("crosses_above", hysteresis=0.0)
    assert fired_at(r, [1.0, NAN, NAN, 2.5]) == [3]


def test_evaluate_is_pure():
    r = rule(">")
    state = RuleState()
    assert evaluate(r, state, T0, 2.5) == evaluate(r, state, T0, 2.5) == (RuleState(False, 2.5, T0), True)
    assert state == RuleState()


def test_evaluator_builds_events_with_market_time_and_a_readable_message():
    evaluator = AlertEvaluator()
    r = AlertRule("zscore", ">", 2.0, pair=PAIR, timeframe_ms=60_000, window=60, hysteresis=0.5, id=7)
    assert evaluator.observe(r, T0, 1.0) is None
    event = evaluator.observe(r, T0 + 60_000, 2.3149)
    assert event == AlertEvent(rule_id=7, rule_text="zscore > 2", label="ETHUSDT/BTCUSDT", metric="zscore",
                               ts_ms=T0 + 60_000, value=2.3149, threshold=2.0,
                               message="ETHUSDT/BTCUSDT z-score 2.31 > 2.00 (1m, window 60)")
    assert evaluator.observe(r, T0 + 120_000, 2.5) is None
    assert evaluator.state(r) == RuleState(armed=False, previous=2.5, last_fired_ms=T0 + 60_000)


@pytest.mark.parametrize(
    ("r", "value", "message"),
    [
        (AlertRule("spread", "crosses_above", 12.5, pair=PAIR, timeframe_ms=1_000, window=20), 12.61,
         "ETHUSDT/BTCUSDT spread 12.61 crossed above 12.5 (1s, window 20)"),
        (AlertRule("corr", "<", 0.5, pair=PAIR, timeframe_ms=300_000, window=100), 0.4449,
         "ETHUSDT/BTCUSDT correlation 0.44 < 0.50 (5m, window 100)"),
        (AlertRule("beta", "crosses_below", 0.04, pair=PAIR), 0.0398765,
         "ETHUSDT/BTCUSDT beta 0.0398765 crossed below 0.04 (1m, window 60)"),
        (AlertRule("price", ">", 90_000.0, symbol="BTCUSDT"), 90_012.53,
         "BTCUSDT price 90012.53 > 90000 (1m)"),
    ],
)
def test_messages_per_metric(r, value, message):
    evaluator = AlertEvaluator()
    previous = {"crosses_above": 0.0, "crosses_below": 1.0}.get(r.operator)
    if previous is not None:
        evaluator.observe(r, T0 - 1_000, previous)
    event = evaluator.observe(r, T0, value)
    assert event is not None and event.message == message and event.label == r.label


def test_disabled_rules_are_ignored_and_rules_keep_separate_state():
    evaluator = AlertEvaluator()
    above, below = rule(">", threshold=2.0), rule("<", threshold=-2.0)
    assert evaluator.observe(replace(above, enabled=False), T0, 3.0) is None
    assert evaluator.state(above) == RuleState()
    assert evaluator.observe(above, T0, 3.0) is not None
    assert evaluator.observe(below, T0, 3.0) is None
    assert evaluator.observe(below, T0 + 1_000, -3.0) is not None
    assert evaluator.state(above).armed is False


def test_retain_forgets_rules_that_are_gone_so_a_re_enabled_rule_starts_afresh():
    evaluator = AlertEvaluator()
    kept, toggled = rule(">", threshold=2.0), rule(">", threshold=3.0)
    evaluator.observe(kept, T0, 5.0)
    evaluator.observe(toggled, T0, 5.0)
    # The engine reloads its enabled rules after `toggled` was disabled ...
    evaluator.retain([kept])
    assert evaluator.state(kept).armed is False
    assert evaluator.state(toggled) == RuleState()
    # ... and again after it was re-enabled: armed, it fires on a value still above.
    assert evaluator.observe(toggled, T0 + 1_000, 5.0) is not None


# ----------------------------------------------------------------------------------- properties

values_st = st.lists(st.one_of(st.floats(-5, 5, allow_nan=False), st.just(NAN)), max_size=200)


@settings(max_examples=300, deadline=None)
@given(
    operator=st.sampled_from([">", "<", "crosses_above", "crosses_below"]),
    threshold=st.floats(-3, 3),
    hysteresis=st.floats(0, 2),
    cooldown_s=st.sampled_from([0.0, 5.0, 30.0]),
    values=values_st,
)
def test_no_alert_storm(operator, threshold, hysteresis, cooldown_s, values):
    r = rule(operator, threshold=threshold, hysteresis=hysteresis, cooldown_s=cooldown_s)
    fired = fired_at(r, values, step_ms=1_000)

    # Each firing after the first needs a fresh exit from the band in between.
    def outside_band(v: float) -> bool:
        if operator in (">", "crosses_above"):
            return v < threshold - hysteresis
        return v > threshold + hysteresis

    exits = sum(outside_band(v) and (i == 0 or not outside_band(values[i - 1])) for i, v in enumerate(values))
    assert len(fired) <= exits + 1
    # Firings are never closer than the cooldown, and only on values that satisfy the condition.
    assert all((b - a) >= cooldown_s for a, b in itertools.pairwise(fired))  # bars are 1 s apart
    for i in fired:
        v = values[i]
        assert {">": v > threshold, "<": v < threshold,
                "crosses_above": v >= threshold, "crosses_below": v <= threshold}[operator]


@pytest.mark.parametrize("text", ["zscore > 1", "zscore < -1", "zscore crosses above 0.5", "beta < 0.02",
                                  "beta > 0.05", "spread > 0", "spread crosses below 0", "corr > 0.2", "corr < -0.2"])
def test_a_rule_on_a_pair_whose_x_leg_is_flat_never_fires(text):
    """BTC ticks every bar for a minute, then does not trade again: ETH keeps moving.

    Before, the rolling hedge ratio of a flat BTC window came out as 0 (pandas left a variance of
    ~1e-15), so "beta < 0.02" fired with no hedge ratio to speak of, and so could the z-score.
    """
    rng = np.random.default_rng(9)
    btc = 89_766.4 + 0.1 * np.cumsum(rng.choice([-1, 1], 120))
    btc[60:] = btc[59]
    eth = np.round(3_139.77 + 0.035 * (btc - 89_766.4) + 0.01 * np.cumsum(rng.choice([-1, 1], 120)), 2)
    index = pd.date_range(pd.Timestamp(T0, unit="ms", tz="UTC"), periods=120, freq="1s")
    closes = pd.DataFrame({"ETHUSDT": eth, "BTCUSDT": btc}, index=index)
    r = parse_rule(text, pair=PAIR, timeframe_ms=1_000, window=10)
    values = metric_series(r, closes)
    # From bar 69 every 10-bar window of BTC prices (and of its returns) is flat: nothing is defined.
    flat = values.iloc[69:]
    assert flat.isna().all(), flat.dropna()
    evaluator = AlertEvaluator()  # a rule created while BTC is flat
    events = [evaluator.observe(r, T0 + 1_000 * i, v) for i, v in enumerate(flat.tolist(), start=69)]
    assert events == [None] * len(flat)
