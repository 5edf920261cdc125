"""The one retry policy (records.retry): schedule, cap, full jitter, attempt and time limits, injected clock."""

from __future__ import annotations

import math
import random

import pytest

from records.retry import Backoff, EndlessBackoff, RetryPolicy
from testkit.randoms import DrawLog


class Clock:
    """Seconds that move only when the test says so."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def test_the_ceiling_grows_by_the_factor_from_the_base_and_stops_at_the_cap():
    policy = RetryPolicy(base_s=0.5, cap_s=10.0, factor=3.0)
    assert [policy.ceiling_s(n) for n in range(6)] == [0.5, 1.5, 4.5, 10.0, 10.0, 10.0]
    assert RetryPolicy(base_s=5.0, cap_s=5.0, factor=1.0).ceiling_s(40) == 5.0  # a constant wait
    # Thousands of failures (an outage of days): capped, no OverflowError, no huge integers.
    assert RetryPolicy(base_s=1, cap_s=30).ceiling_s(10**6) == 30
    assert RetryPolicy(base_s=1.0, cap_s=math.inf).ceiling_s(5) == 32.0  # no cap
    assert RetryPolicy(base_s=math.inf, cap_s=7.0).ceiling_s(0) == 7.0  # "wait as long as allowed"
    with pytest.raises(ValueError, match="n: -1 must be >= 0"):
        policy.ceiling_s(-1)


def test_full_jitter_draws_uniformly_below_each_ceiling():
    rng = DrawLog(7)
    policy = RetryPolicy(base_s=1.0, cap_s=8.0)
    delays = [policy.delay_s(n, rng.uniform) for n in range(200)]
    assert [(a, b) for a, b, _ in rng.draws[:6]] == [(0.0, 1.0), (0.0, 2.0), (0.0, 4.0), (0.0, 8.0), (0.0, 8.0),
                                                     (0.0, 8.0)]
    assert all(0 <= d <= policy.ceiling_s(n) for n, d in enumerate(delays))
    capped = delays[3:]
    assert min(capped) < 1.0 and max(capped) > 7.0  # spread over the whole range, not near the ceiling
    assert len(set(delays)) == len(delays)


def test_without_jitter_the_delay_is_the_ceiling_and_needs_no_random_source():
    policy = RetryPolicy(base_s=1.0, cap_s=300.0, jitter=False)
    assert [policy.delay_s(n) for n in range(10)] == [1, 2, 4, 8, 16, 32, 64, 128, 256, 300]


def test_a_jittered_policy_without_a_random_source_is_refused_by_name():
    with pytest.raises(ValueError, match="jitters: pass a uniform"):
        RetryPolicy(base_s=1.0, cap_s=2.0).delay_s(0)


def test_max_attempts_counts_the_first_attempt():
    policy = RetryPolicy(base_s=1.0, cap_s=4.0, jitter=False, max_attempts=3)
    assert [policy.next_delay_s(attempts, 0.0) for attempts in (1, 2, 3, 4)] == [1.0, 2.0, None, None]
    with pytest.raises(ValueError, match="attempts: 0 must be >= 1"):
        policy.next_delay_s(0, 0.0)


def test_the_deadline_ends_retries_once_it_has_passed_since_the_first_attempt():
    policy = RetryPolicy(base_s=1.0, cap_s=4.0, jitter=False, deadline_s=60.0)
    assert policy.next_delay_s(50, 59.999) == 4.0  # no attempt limit: only time counts
    assert policy.next_delay_s(2, 60.0) is None
    assert policy.gives_up(1, 61.0) and not policy.gives_up(10**9, 0.0)


def test_a_backoff_measures_the_deadline_on_its_injected_clock_from_when_it_started():
    clock = Clock()
    rng = DrawLog(1)
    backoff = Backoff(RetryPolicy(base_s=1.0, cap_s=4.0, deadline_s=30.0), rng=rng, clock=clock)
    clock.now += 29.0
    first = backoff.next_delay()
    assert first is not None and 0 <= first <= 1.0 and rng.draws[-1][:2] == (0.0, 1.0)
    assert backoff.ceiling() == 2.0
    clock.now += 1.0  # 30 s since the run started
    assert backoff.next_delay() is None and len(rng.draws) == 1  # gave up: no draw
    backoff.reset()  # a new run: its own deadline, the schedule from the start
    assert backoff.failures == 0 and backoff.ceiling() == 1.0
    assert backoff.next_delay() is not None


def test_a_failure_without_a_delay_counts_against_the_attempts_but_draws_nothing():
    rng = DrawLog(1)
    backoff = Backoff(RetryPolicy(base_s=1.0, cap_s=4.0, max_attempts=3), rng=rng)
    assert backoff.failed()  # e.g. the server imposed its own wait
    assert rng.draws == []
    assert backoff.next_delay() is not None
    assert not backoff.failed() and backoff.failures == 3


def test_an_endless_backoff_refuses_a_policy_that_gives_up():
    for limits in ({"max_attempts": 5}, {"deadline_s": 60.0}):
        with pytest.raises(ValueError, match="gives up, which this caller must not"):
            EndlessBackoff(RetryPolicy(base_s=1.0, cap_s=2.0, **limits))
    endless = EndlessBackoff(RetryPolicy(base_s=1.0, cap_s=2.0), rng=random.Random(3))
    assert all(0 <= endless.next_delay() <= 2.0 for _ in range(1_000))


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"base_s": -1.0}, r"base_s: -1.0 must be a number of seconds >= 0"),
    ({"base_s": math.nan}, r"base_s: nan must be"),
    ({"base_s": "1"}, r"base_s: '1' must be"),
    ({"cap_s": -0.5}, r"cap_s: -0.5 must be a number of seconds >= 0"),
    ({"cap_s": math.nan}, r"cap_s: nan must be"),
    ({"factor": 0.5}, r"factor: 0.5 must be a finite number >= 1"),
    ({"factor": math.inf}, r"factor: inf must be"),
    ({"max_attempts": 0}, r"max_attempts: 0 must be an integer >= 1 or None"),
    ({"max_attempts": 2.5}, r"max_attempts: 2.5 must be an integer"),
    ({"max_attempts": True}, r"max_attempts: True must be an integer"),
    ({"deadline_s": -1}, r"deadline_s: -1 must be a number of seconds >= 0 or None"),
    ({"deadline_s": math.nan}, r"deadline_s: nan must be"),
])
def test_nonsense_is_refused_naming_the_field(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RetryPolicy(**{"base_s": 1.0, "cap_s": 2.0, **kwargs})


def test_the_policy_is_a_frozen_value():
    policy = RetryPolicy(base_s=1.0, cap_s=2.0)
    with pytest.raises(AttributeError):
        policy.base_s = 3.0
    assert policy == RetryPolicy(base_s=1.0, cap_s=2.0) and hash(policy) == hash(RetryPolicy(base_s=1.0, cap_s=2.0))
