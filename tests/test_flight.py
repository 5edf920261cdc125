"""records.flight.SingleFlightCache: one computation per group at a time, LRU bound, versions replace each other."""

from __future__ import annotations

import threading

import pytest

from records.flight import SingleFlightCache


def by_name(key: tuple[str, int]) -> str:
    """Keys are (series, version): the group is the series."""
    return key[0]


def same(value: str) -> str:
    return value


def test_a_held_value_is_served_and_a_missing_one_computed_once():
    cache: SingleFlightCache[tuple[str, int], str] = SingleFlightCache(4, by_name)
    calls = []

    def compute() -> tuple[str, str]:
        calls.append(1)
        return "v", "v"

    assert cache.get_or_compute(("a", 1), same, compute) == ("v", True)
    assert cache.get_or_compute(("a", 1), same, compute) == ("v", False)
    assert len(calls) == 1


def test_a_value_the_request_cannot_use_is_computed_again_and_replaced():
    cache: SingleFlightCache[tuple[str, int], int] = SingleFlightCache(4, by_name)
    cache.put(("a", 1), 10)

    def at_least_20(value: int) -> int | None:
        return value if value >= 20 else None

    assert cache.get_or_compute(("a", 1), at_least_20, lambda: (25, 25)) == (25, True)
    assert cache.find(("a", 1), same) == 25


def test_a_new_version_of_a_group_drops_the_older_ones_and_the_least_recently_used_goes_first():
    cache: SingleFlightCache[tuple[str, int], str] = SingleFlightCache(2, by_name)
    cache.put(("a", 1), "a1")
    cache.put(("a", 2), "a2")
    assert cache.find(("a", 1), same) is None and len(cache) == 1
    assert cache.newest(lambda key: key[0] == "a") == "a2"
    cache.put(("b", 1), "b1")
    assert cache.find(("a", 2), same) == "a2"  # used: now b is the least recent
    cache.put(("c", 1), "c1")
    assert cache.find(("b", 1), same) is None and cache.find(("a", 2), same) == "a2" and len(cache) == 2
    assert cache.newest(lambda key: True) == "a2" and cache.newest(lambda key: key[0] == "z") is None


def test_concurrent_askers_of_one_group_compute_once_while_another_group_goes_on():
    cache: SingleFlightCache[tuple[str, int], str] = SingleFlightCache(4, by_name)
    release = threading.Event()
    started = threading.Event()
    computed: list[str] = []

    def slow() -> tuple[str, str]:
        computed.append("slow")
        started.set()
        assert release.wait(10)
        return "a", "a"

    answers: list[tuple[str, bool]] = []
    askers = [threading.Thread(target=lambda: answers.append(cache.get_or_compute(("a", 1), same, slow)))
              for _ in range(4)]
    askers[0].start()
    assert started.wait(10)
    for asker in askers[1:]:
        asker.start()
    # Another group is not held up by the computation in flight.
    assert cache.get_or_compute(("b", 1), same, lambda: ("b", "b")) == ("b", True)
    release.set()
    for asker in askers:
        asker.join(10)
    assert computed == ["slow"]
    assert sorted(answers) == [("a", False), ("a", False), ("a", False), ("a", True)]


def test_a_failed_computation_holds_nothing_and_the_next_asker_computes_again():
    cache: SingleFlightCache[tuple[str, int], str] = SingleFlightCache(4, by_name)

    def broken() -> tuple[str, str]:
        raise RuntimeError("database away")

    with pytest.raises(RuntimeError, match="database away"):
        cache.get_or_compute(("a", 1), same, broken)
    assert len(cache) == 0
    assert cache.get_or_compute(("a", 1), same, lambda: ("a", "a")) == ("a", True)


def test_the_group_locks_stay_bounded_by_what_is_held():
    cache: SingleFlightCache[tuple[str, int], str] = SingleFlightCache(2, by_name)
    for i in range(50):
        cache.get_or_compute((f"s{i}", 1), same, lambda i=i: (f"v{i}", f"v{i}"))
    assert len(cache._flights) <= 2 * cache.max_entries  # not one lock per group ever asked
    assert len(cache) == 2


@pytest.mark.parametrize("bad", [0, -1, 2.5, None])
def test_a_nonsense_size_is_refused_by_name(bad):
    with pytest.raises(ValueError, match=r"max_entries: .* must be an integer >= 1"):
        SingleFlightCache(bad, by_name)
