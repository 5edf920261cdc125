import math
import re
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alerts.rules import parse_rule
from analytics import zscore_bound
from records.alerts import DEFAULT_HYSTERESIS, AlertRule, format_number

PAIR = ("ETHUSDT", "BTCUSDT")


def parse(text: str, **kwargs) -> AlertRule:
    return parse_rule(text, pair=kwargs.pop("pair", PAIR), timeframe_ms=kwargs.pop("timeframe_ms", 60_000),
                      window=kwargs.pop("window", 60), **kwargs)


@pytest.mark.parametrize(
    ("text", "metric", "operator", "threshold", "symbol"),
    [
        ("zscore > 2", "zscore", ">", 2.0, None),
        ("zscore < -2", "zscore", "<", -2.0, None),
        ("z > 2.5", "zscore", ">", 2.5, None),
        ("Z-Score>2.5", "zscore", ">", 2.5, None),
        ("z<-1", "zscore", "<", -1.0, None),
        ("corr < 0.5", "corr", "<", 0.5, None),
        ("CORRELATION < 0.5", "corr", "<", 0.5, None),
        ("spread crosses above 12.5", "spread", "crosses_above", 12.5, None),
        ("spread  Crosses   BELOW  -3", "spread", "crosses_below", -3.0, None),
        ("spread crosses_above 1e3", "spread", "crosses_above", 1000.0, None),
        ("beta > 0.04", "beta", ">", 0.04, None),
        ("BTCUSDT price > 90000", "price", ">", 90000.0, "BTCUSDT"),
        ("price ETHUSDT < 3000", "price", "<", 3000.0, "ETHUSDT"),
        ("solusdt PRICE crosses below 150.25", "price", "crosses_below", 150.25, "SOLUSDT"),
    ],
)
def test_parse_accepts(text, metric, operator, threshold, symbol):
    rule = parse(text)
    assert (rule.metric, rule.operator, rule.threshold, rule.symbol) == (metric, operator, threshold, symbol)
    assert rule.pair == (None if metric == "price" else PAIR)
    assert (rule.timeframe_ms, rule.window, rule.enabled, rule.id) == (60_000, 60, True, None)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", r"empty rule: expected zscore, spread, corr, beta or '<SYMBOL> price'"),
        ("foo > 2", r"unknown metric 'foo': expected zscore, spread, corr, beta or '<SYMBOL> price'"),
        # A bare symbol is not a price rule (a misspelt metric would silently become one).
        ("ETHUSDT > 3000", r"unknown metric 'ETHUSDT'.*write 'ETHUSDT price \.\.\.'"),
        ("zscore", r"expected an operator after 'zscore': expected >, <, crosses above or crosses below"),
        ("zscore = 2", r"unknown operator '=': expected >, <, crosses above or crosses below"),
        ("zscore >= 2", r"unknown operator '>=': expected >, <, crosses above or crosses below"),
        ("z<=2", r"unknown operator '<='"),
        ("zscore > abc", r"expected a number after '>', got 'abc'"),
        ("zscore >", r"expected a number after '>', got nothing"),
        ("spread crosses 3", r"expected 'above' or 'below' after 'crosses', got '3'"),
        ("spread crosses", r"expected 'above' or 'below' after 'crosses', got nothing"),
        ("spread crosses above x", r"expected a number after 'crosses above', got 'x'"),
        ("zscore > nan", r"expected a finite number after '>', got 'nan'"),
        ("zscore > inf", r"expected a finite number after '>', got 'inf'"),
        ("zscore > 2 and corr < 0.5", r"unexpected text after the threshold: 'and corr < 0.5'"),
        ("price > 3000", r"expected a symbol after 'price'"),
        ("price >= 3000", r"expected a symbol after 'price'"),
        ("price", r"expected a symbol after 'price'"),
        ("ETH;DROP price > 1", r"invalid symbol 'ETH;DROP'"),
        ("BTCUSDT price", r"expected an operator after 'BTCUSDT price'"),
    ],
)
def test_parse_rejects_with_a_message_saying_what_was_expected(text, match):
    with pytest.raises(ValueError, match=match):
        parse(text)


def test_pair_metrics_need_a_pair_but_price_rules_do_not():
    with pytest.raises(ValueError, match=r"pair: required for a zscore rule"):
        parse("zscore > 2", pair=None)
    assert parse("BTCUSDT price > 1", pair=None).symbol == "BTCUSDT"


def test_default_hysteresis_per_metric_and_explicit_override():
    assert parse("zscore > 2").hysteresis == 0.5
    assert parse("corr < 0.5").hysteresis == 0.05
    for text in ("spread > 1", "beta > 1", "BTCUSDT price > 1"):
        assert parse(text).hysteresis == 0.0
    assert set(DEFAULT_HYSTERESIS) == {"zscore", "spread", "corr", "beta", "price"}
    assert parse("zscore > 2", hysteresis=0.0, cooldown_s=30).hysteresis == 0.0
    assert parse("zscore > 2", cooldown_s=30).cooldown_s == 30.0


@pytest.mark.parametrize(
    "text",
    ["zscore > 2", "zscore < -2.5", "corr < 0.5", "spread crosses above 12.5", "spread crosses below -0.001",
     "beta > 0.04", "BTCUSDT price > 90000", "ETHUSDT price crosses below 3000.75", "zscore > 1e-05",
     "spread > 1e+20", "spread > 0.1"],
)
def test_describe_is_canonical_and_round_trips(text):
    rule = parse(text, timeframe_ms=1_000, window=20, hysteresis=0.25, cooldown_s=5)
    assert rule.describe() == text
    again = parse_rule(rule.describe(), pair=rule.pair, timeframe_ms=rule.timeframe_ms, window=rule.window,
                       hysteresis=rule.hysteresis, cooldown_s=rule.cooldown_s)
    assert again == rule


def test_describe_normalises_aliases_and_spacing():
    assert parse("Z-SCORE>2.50").describe() == "zscore > 2.5"
    assert parse("price btcusdt crosses_above 9e4").describe() == "BTCUSDT price crosses above 90000"


@pytest.mark.parametrize("value", [2.0, -2.5, 0.1, 1 / 3, 1e-5, 123456789.125, 1e300, -0.0])
def test_format_number_reads_back_exactly(value):
    assert float(format_number(value)) == value


def test_labels():
    rule = parse("zscore > 2", timeframe_ms=300_000)
    assert (rule.label, rule.timeframe_label) == ("ETHUSDT/BTCUSDT", "5m")
    assert parse("BTCUSDT price > 1", timeframe_ms=1_000).label == "BTCUSDT"


def test_a_rule_names_the_symbols_it_reads_and_its_stored_id():
    pair_rule = parse("zscore > 2")
    price_rule = parse("BTCUSDT price > 1")
    assert (pair_rule.symbols, price_rule.symbols) == (("ETHUSDT", "BTCUSDT"), ("BTCUSDT",))
    assert replace(pair_rule, id=7).stored_id == 7
    # A rule that was never stored has no id to claim or enable: say which rule, not a TypeError on None.
    with pytest.raises(ValueError, match=r"alert rule 'zscore > 2' has no id: it was never stored"):
        pair_rule.stored_id  # noqa: B018 - the property raises


def test_constructor_normalises_symbols_and_numbers():
    rule = AlertRule("spread", ">", 3, pair=["ethusdt", " btcusdt "], hysteresis=1, cooldown_s=2)
    assert rule.pair == ("ETHUSDT", "BTCUSDT")
    assert isinstance(rule.threshold, float) and isinstance(rule.hysteresis, float)
    # numpy scalars (as UI widgets and pandas hand them out) become plain Python numbers.
    rule = AlertRule("spread", ">", np.float64(3.5), pair=PAIR, timeframe_ms=np.int64(1_000), window=np.int32(20),
                     id=np.int64(4))
    assert [type(v) for v in (rule.threshold, rule.timeframe_ms, rule.window, rule.id)] == [float, int, int, int]
    assert AlertRule("price", "<", 1, symbol="btcusdt").symbol == "BTCUSDT"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"metric": "vol"}, r"metric: 'vol' is not one of zscore, spread, corr, beta, price"),
        ({"operator": ">="}, r"operator: '>=' is not one of >, <, crosses_above, crosses_below"),
        ({"threshold": math.nan}, r"threshold: nan must be a finite number"),
        ({"threshold": "2"}, r"threshold: '2' must be a finite number"),
        ({"pair": None}, r"pair: required for a zscore rule"),
        ({"pair": ("ETHUSDT",)}, r"pair: \('ETHUSDT',\) must be two symbols"),
        ({"pair": ("ETHUSDT", "ethusdt")}, r"pair: y and x are both ETHUSDT"),
        ({"pair": ("ETH-USDT", "BTCUSDT")}, r"pair: invalid symbol 'ETH-USDT'"),
        ({"symbol": "BTCUSDT"}, r"symbol: must be None for a zscore rule"),
        ({"timeframe_ms": 5_000}, r"timeframe_ms: 5000 is not one of 1000, 60000 or 300000"),
        ({"timeframe_ms": 60_000.0}, r"timeframe_ms: 60000.0 is not one of"),
        ({"window": 9}, r"window: 9 must be between 10 and 200 bars"),
        ({"window": 201}, r"window: 201 must be"),
        ({"window": True}, r"window: True must be"),
        ({"hysteresis": -0.1}, r"hysteresis: -0.1 must be >= 0"),
        ({"cooldown_s": math.inf}, r"cooldown_s: inf must be a finite number"),
        ({"enabled": 1}, r"enabled: 1 must be True or False"),
        ({"id": 0}, r"id: 0 must be a positive integer or None"),
    ],
)
def test_constructor_validation_names_the_field(kwargs, match):
    fields = {"metric": "zscore", "operator": ">", "threshold": 2.0, "pair": PAIR} | kwargs
    with pytest.raises(ValueError, match=match):
        AlertRule(**fields)


def test_price_rule_shape_is_checked():
    with pytest.raises(ValueError, match=r"symbol: required for a price rule"):
        AlertRule("price", ">", 1.0)
    with pytest.raises(ValueError, match=r"pair: must be None for a price rule"):
        AlertRule("price", ">", 1.0, pair=PAIR, symbol="BTCUSDT")
    with pytest.raises(ValueError, match=r"symbol: invalid symbol 'B'"):
        AlertRule("price", ">", 1.0, symbol="B")


def test_rule_is_frozen_and_hashable():
    rule = parse("zscore > 2")
    with pytest.raises(AttributeError):
        rule.threshold = 3.0
    assert {rule: 1}[parse("z > 2.0")] == 1


BOUND_10 = 9 / math.sqrt(10)  # |z| <= (window - 1)/sqrt(window) = 2.846 for 10 bars


@pytest.mark.parametrize(
    ("text", "canonical", "advice"),
    [
        ("zscore > 3", "zscore > 3", "lower"),
        ("z>2.85", "zscore > 2.85", "lower"),
        (f"zscore > {BOUND_10!r}", f"zscore > {BOUND_10!r}", "lower"),  # z reaches the bound, never exceeds it
        ("zscore < -3", "zscore < -3", "raise"),
        ("Z-Score < -2.85", "zscore < -2.85", "raise"),
        ("zscore crosses above 2.9", "zscore crosses above 2.9", "lower"),
        ("zscore crosses above -2.85", "zscore crosses above -2.85", "raise"),  # needs a value below -2.85 first
        ("zscore crosses_below -2.9", "zscore crosses below -2.9", "raise"),
        ("z crosses below 2.85", "zscore crosses below 2.85", "lower"),  # needs a value above 2.85 first
        ("zscore > 1e3", "zscore > 1000", "lower"),
    ],
)
def test_a_zscore_threshold_the_window_cannot_reach_is_refused(text, canonical, advice):
    message = (rf"^{re.escape(canonical)} can never fire with a 10-bar window: the z-score includes the current "
               rf"bar, so \|z\| ≤ \(window−1\)/√window = 2\.85; {advice} the threshold or widen the window$")
    with pytest.raises(ValueError, match=message):
        parse(text, window=10)


@pytest.mark.parametrize(
    "text",
    ["zscore > 2.84", "zscore < -2.84", f"zscore crosses above {BOUND_10!r}", f"zscore crosses below {-BOUND_10!r}",
     "zscore crosses above -2.84", "zscore crosses below 2.84", "zscore > -5", "zscore < 5",
     "spread > 3", "beta < -3", "corr crosses above 3", "BTCUSDT price > 3"],
)
def test_reachable_thresholds_and_other_metrics_are_accepted_at_ten_bars(text):
    assert parse(text, window=10).window == 10


def test_a_wider_window_makes_the_threshold_reachable():
    assert parse("zscore > 3", window=11).threshold == 3.0  # 10/√11 = 3.015
    with pytest.raises(ValueError, match=r"zscore > 7\.7 can never fire with a 60-bar window: .* = 7\.62;"):
        parse("zscore > 7.7", window=60)


@settings(max_examples=200, deadline=None)
@given(window=st.integers(10, 200), threshold=st.floats(-20, 20))
def test_greater_than_is_accepted_exactly_below_the_bound(window, threshold):
    text = f"zscore > {threshold!r}"
    if threshold < zscore_bound(window):
        assert parse(text, window=window).threshold == threshold
    else:
        with pytest.raises(ValueError, match="can never fire"):
            parse(text, window=window)
